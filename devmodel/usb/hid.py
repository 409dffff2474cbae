"""USB HID devices as QEMU offers them (hw/usb/dev-hid.c, hw/input/hid.c): usb-tablet,
usb-kbd and usb-mouse. Descriptors, report descriptors and report layouts are QEMU's, so a
guest driver sees the same device it sees under QEMU/Xen:

- tablet: buttons byte, X (16 bit LE), Y (16 bit LE), wheel (signed byte); X/Y 0..0x7FFF;
- mouse:  buttons, dx, dy, dz (signed bytes; a guest in boot protocol reads the first three);
- keyboard: the 8-byte boot report (modifiers, reserved, six key usages) in both protocols;
  LEDs arrive as a 1-byte output report through SET_REPORT.

Input API (what the display/QMP side calls): `tablet.event(x, y, buttons, wheel)`,
`keyboard.key(qcode, down)`, `mouse.event(dx, dy, dz, buttons)`. Each queues reports in a
bounded queue (HID_QUEUE_LEN, QEMU's QUEUE_LENGTH); the interrupt IN endpoint NAKs while the
queue is empty and the idle period (SET_IDLE, 4 ms units) has not run out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from devmodel.bios.ps2 import qnum_of

from .core import ACK, NAK, RECIP_INTERFACE, Endpoint, UsbDevice
from .desc import DT_HID, DT_REPORT, EP_INTERRUPT, DeviceDesc, EndpointDesc, InterfaceDesc

# HID class requests (HID 1.11 section 7.2)
GET_REPORT = 0x01
GET_IDLE = 0x02
GET_PROTOCOL = 0x03
SET_REPORT = 0x09
SET_IDLE = 0x0A
SET_PROTOCOL = 0x0B

REPORT_INPUT = 1
REPORT_OUTPUT = 2

PROTOCOL_BOOT = 0
PROTOCOL_REPORT = 1

HID_QUEUE_LEN = 16  # QEMU hw/input/hid.c QUEUE_LENGTH
MAX_REPORTS_PER_EVENT = 8  # a huge relative motion is cut into at most this many reports
IDLE_UNIT_NS = 4_000_000  # SET_IDLE duration unit: 4 ms
TABLET_MAX = 0x7FFF

# Report descriptors: byte for byte QEMU's (hw/usb/dev-hid.c).
MOUSE_REPORT_DESCRIPTOR = bytes([
    0x05, 0x01, 0x09, 0x02, 0xA1, 0x01, 0x09, 0x01, 0xA1, 0x00, 0x05, 0x09, 0x19, 0x01,
    0x29, 0x03, 0x15, 0x00, 0x25, 0x01, 0x95, 0x03, 0x75, 0x01, 0x81, 0x02, 0x95, 0x01,
    0x75, 0x05, 0x81, 0x01, 0x05, 0x01, 0x09, 0x30, 0x09, 0x31, 0x09, 0x38, 0x15, 0x81,
    0x25, 0x7F, 0x75, 0x08, 0x95, 0x03, 0x81, 0x06, 0xC0, 0xC0,
])
TABLET_REPORT_DESCRIPTOR = bytes([
    0x05, 0x01, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x01, 0xA1, 0x00, 0x05, 0x09, 0x19, 0x01,
    0x29, 0x03, 0x15, 0x00, 0x25, 0x01, 0x95, 0x03, 0x75, 0x01, 0x81, 0x02, 0x95, 0x01,
    0x75, 0x05, 0x81, 0x01, 0x05, 0x01, 0x09, 0x30, 0x09, 0x31, 0x15, 0x00, 0x26, 0xFF,
    0x7F, 0x35, 0x00, 0x46, 0xFF, 0x7F, 0x75, 0x10, 0x95, 0x02, 0x81, 0x02, 0x05, 0x01,
    0x09, 0x38, 0x15, 0x81, 0x25, 0x7F, 0x35, 0x00, 0x45, 0x00, 0x75, 0x08, 0x95, 0x01,
    0x81, 0x06, 0xC0, 0xC0,
])
KEYBOARD_REPORT_DESCRIPTOR = bytes([
    0x05, 0x01, 0x09, 0x06, 0xA1, 0x01, 0x75, 0x01, 0x95, 0x08, 0x05, 0x07, 0x19, 0xE0,
    0x29, 0xE7, 0x15, 0x00, 0x25, 0x01, 0x81, 0x02, 0x95, 0x01, 0x75, 0x08, 0x81, 0x01,
    0x95, 0x05, 0x75, 0x01, 0x05, 0x08, 0x19, 0x01, 0x29, 0x05, 0x91, 0x02, 0x95, 0x01,
    0x75, 0x03, 0x91, 0x01, 0x95, 0x06, 0x75, 0x08, 0x15, 0x00, 0x25, 0xFF, 0x05, 0x07,
    0x19, 0x00, 0x29, 0xFF, 0x81, 0x00, 0xC0,
])

# qnum (set-1 make code, +0x80 for E0 keys; devmodel.bios.ps2) -> HID usage (HID Usage Tables
# 1.12 chapter 10), the mapping of QEMU's hid_usage_keys[].
_SET1_ROW = {
    0x01: 0x29, 0x02: 0x1E, 0x03: 0x1F, 0x04: 0x20, 0x05: 0x21, 0x06: 0x22, 0x07: 0x23,
    0x08: 0x24, 0x09: 0x25, 0x0A: 0x26, 0x0B: 0x27, 0x0C: 0x2D, 0x0D: 0x2E, 0x0E: 0x2A,
    0x0F: 0x2B, 0x10: 0x14, 0x11: 0x1A, 0x12: 0x08, 0x13: 0x15, 0x14: 0x17, 0x15: 0x1C,
    0x16: 0x18, 0x17: 0x0C, 0x18: 0x12, 0x19: 0x13, 0x1A: 0x2F, 0x1B: 0x30, 0x1C: 0x28,
    0x1D: 0xE0, 0x1E: 0x04, 0x1F: 0x16, 0x20: 0x07, 0x21: 0x09, 0x22: 0x0A, 0x23: 0x0B,
    0x24: 0x0D, 0x25: 0x0E, 0x26: 0x0F, 0x27: 0x33, 0x28: 0x34, 0x29: 0x35, 0x2A: 0xE1,
    0x2B: 0x31, 0x2C: 0x1D, 0x2D: 0x1B, 0x2E: 0x06, 0x2F: 0x19, 0x30: 0x05, 0x31: 0x11,
    0x32: 0x10, 0x33: 0x36, 0x34: 0x37, 0x35: 0x38, 0x36: 0xE5, 0x37: 0x55, 0x38: 0xE2,
    0x39: 0x2C, 0x3A: 0x39, 0x3B: 0x3A, 0x3C: 0x3B, 0x3D: 0x3C, 0x3E: 0x3D, 0x3F: 0x3E,
    0x40: 0x3F, 0x41: 0x40, 0x42: 0x41, 0x43: 0x42, 0x44: 0x43, 0x45: 0x53, 0x46: 0x47,
    0x47: 0x5F, 0x48: 0x60, 0x49: 0x61, 0x4A: 0x56, 0x4B: 0x5C, 0x4C: 0x5D, 0x4D: 0x5E,
    0x4E: 0x57, 0x4F: 0x59, 0x50: 0x5A, 0x51: 0x5B, 0x52: 0x62, 0x53: 0x63, 0x56: 0x64,
    0x57: 0x44, 0x58: 0x45,
    # E0 keys
    0x9C: 0x58, 0x9D: 0xE4, 0xB5: 0x54, 0xB7: 0x46, 0xB8: 0xE6, 0xC5: 0x48, 0xC7: 0x4A,
    0xC8: 0x52, 0xC9: 0x4B, 0xCB: 0x50, 0xCD: 0x4F, 0xCF: 0x4D, 0xD0: 0x51, 0xD1: 0x4E,
    0xD2: 0x49, 0xD3: 0x4C, 0xDB: 0xE3, 0xDC: 0xE7, 0xDD: 0x65,
}
QNUM_TO_USAGE: dict[int, int] = dict(_SET1_ROW)
USAGE_ERROR_ROLLOVER = 0x01


def hid_usage(key: str | int) -> int | None:
    qnum = qnum_of(key)
    return None if qnum is None else QNUM_TO_USAGE.get(qnum)


class HidDevice(UsbDevice):
    REPORT_DESCRIPTOR = b""
    REPORT_LEN = 0

    def __init__(self, name: str, desc: DeviceDesc) -> None:
        self.queue: deque[bytes] = deque(maxlen=HID_QUEUE_LEN)
        self.protocol = PROTOCOL_REPORT
        self.idle = 0
        self.next_idle_ns = 0
        self.dropped = 0
        super().__init__(name, desc)

    def device_reset(self) -> None:
        # QEMU hid_reset: queue emptied, report protocol, idle 0
        self.queue.clear()
        self.protocol = PROTOCOL_REPORT
        self.idle = 0
        self.next_idle_ns = 0
        self.reset_input()

    def reset_input(self) -> None:
        pass

    def current_report(self) -> bytes:
        raise NotImplementedError

    def _push(self, report: bytes) -> bool:
        if len(self.queue) >= HID_QUEUE_LEN:
            self.dropped += 1
            self.count("input dropped: report queue full")
            return False
        self.queue.append(report)
        if self.remote_wakeup:
            self.wakeup()
        return True

    # ---- interrupt IN ---------------------------------------------------------------------
    def data_in(self, ep: Endpoint, max_len: int) -> tuple[int, bytes]:
        now = self.now()
        if self.queue:
            report = self.queue.popleft()
        elif self.idle and now >= self.next_idle_ns:
            report = self.current_report()
        else:
            return NAK, b""
        if self.idle:
            self.next_idle_ns = now + self.idle * IDLE_UNIT_NS
        return ACK, report[:max_len]

    # ---- class requests -------------------------------------------------------------------
    def class_descriptor(self, recip: int, dtype: int, dindex: int, index: int) -> bytes | None:
        if recip != RECIP_INTERFACE or index != 0:
            return None
        if dtype == DT_REPORT:
            return self.REPORT_DESCRIPTOR
        if dtype == DT_HID:
            return self.desc.interfaces[0].hid_descriptor()
        return None

    def class_request(self, rtype: int, req: int, value: int, index: int, length: int,
                      data: bytes | None) -> bytes | None:
        if rtype & 0x1F != RECIP_INTERFACE or index != 0:
            return None
        if rtype == 0xA1:
            if req == GET_REPORT:
                if value >> 8 == REPORT_INPUT:
                    return self.current_report()
                if value >> 8 == REPORT_OUTPUT:
                    return self.output_report()
                return None
            if req == GET_IDLE:
                return bytes((self.idle,))
            if req == GET_PROTOCOL:
                return bytes((self.protocol,))
            return None
        if rtype == 0x21:
            if req == SET_IDLE:
                self.idle = value >> 8
                self.next_idle_ns = self.now() + self.idle * IDLE_UNIT_NS
                return b""
            if req == SET_PROTOCOL:
                if value not in (PROTOCOL_BOOT, PROTOCOL_REPORT):
                    return None
                self.protocol = value
                return b""
            if req == SET_REPORT and data is not None:
                return self.set_report(value, data)
        return None

    def output_report(self) -> bytes | None:
        return None

    def set_report(self, value: int, data: bytes) -> bytes | None:
        return None  # QEMU: only the keyboard takes output reports

    # ---- snapshot -------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"queue": [bytes(r) for r in self.queue], "protocol": self.protocol,
                "idle": self.idle, "next_idle_ns": self.next_idle_ns, "input": self.input_state()}

    def restore_extra(self, st: dict[str, Any]) -> None:
        q = [bytes(r) for r in st["queue"]]
        if len(q) > HID_QUEUE_LEN or any(len(r) != self.REPORT_LEN for r in q):
            raise ValueError(f"{self.name}: bad report queue in snapshot")
        self.queue = deque(q, maxlen=HID_QUEUE_LEN)
        self.protocol = int(st["protocol"]) & 1
        self.idle = int(st["idle"]) & 0xFF
        self.next_idle_ns = int(st["next_idle_ns"])
        self.restore_input(st["input"])

    def input_state(self) -> dict[str, Any]:
        return {}

    def restore_input(self, st: dict[str, Any]) -> None:
        pass


def _pointer_desc(product: str, config: str, report: bytes, boot: bool, max_packet: int) -> DeviceDesc:
    iface = InterfaceDesc(0, 3, 1 if boot else 0, 2,
                          (EndpointDesc(0x81, EP_INTERRUPT, max_packet, 0x0A),),
                          hid=(0x0001, len(report)))
    return DeviceDesc(vendor=0x0627, product=0x0001, product_name=product, serial="42",
                      config_name=config, interfaces=(iface,), attributes=0xA0, max_power=50)


class UsbTablet(HidDevice):
    """QEMU usb-tablet: absolute pointer, the device Xen HVM guests get with usbdevice=tablet."""

    REPORT_DESCRIPTOR = TABLET_REPORT_DESCRIPTOR
    REPORT_LEN = 6

    def __init__(self, name: str = "usb-tablet") -> None:
        super().__init__(name, _pointer_desc("QEMU USB Tablet", "HID Tablet", TABLET_REPORT_DESCRIPTOR,
                                             False, 8))

    def reset_input(self) -> None:
        self.x = self.y = self.buttons = 0

    def current_report(self) -> bytes:
        return _tablet_report(self.x, self.y, self.buttons, 0)

    def event(self, x: int, y: int, buttons: int = 0, wheel: int = 0) -> bool:
        """Absolute position in 0..0x7FFF (clamped), buttons bit 0 left, 1 right, 2 middle;
        wheel is relative (positive = away from the user)."""
        self.x = max(0, min(TABLET_MAX, int(x)))
        self.y = max(0, min(TABLET_MAX, int(y)))
        self.buttons = int(buttons) & 7
        report = _tablet_report(self.x, self.y, self.buttons, max(-127, min(127, int(wheel))))
        if len(self.queue) >= HID_QUEUE_LEN and not wheel:
            # Absolute positions coalesce: the newest position replaces the oldest pending one
            # with the same buttons, so a flood of motion never loses the final position.
            last = self.queue[-1]
            if last[0] == report[0] and last[5] == 0:
                self.queue[-1] = report
                return True
        return self._push(report)

    def input_state(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "buttons": self.buttons}

    def restore_input(self, st: dict[str, Any]) -> None:
        self.x = max(0, min(TABLET_MAX, int(st["x"])))
        self.y = max(0, min(TABLET_MAX, int(st["y"])))
        self.buttons = int(st["buttons"]) & 7


def _tablet_report(x: int, y: int, buttons: int, wheel: int) -> bytes:
    return bytes((buttons, x & 0xFF, x >> 8, y & 0xFF, y >> 8, wheel & 0xFF))


class UsbMouse(HidDevice):
    """QEMU usb-mouse: relative motion, boot-protocol capable."""

    REPORT_DESCRIPTOR = MOUSE_REPORT_DESCRIPTOR
    REPORT_LEN = 4

    def __init__(self, name: str = "usb-mouse") -> None:
        super().__init__(name, _pointer_desc("QEMU USB Mouse", "HID Mouse", MOUSE_REPORT_DESCRIPTOR,
                                             True, 4))

    def reset_input(self) -> None:
        self.buttons = 0

    def current_report(self) -> bytes:
        return bytes((self.buttons, 0, 0, 0))

    def event(self, dx: int, dy: int, dz: int = 0, buttons: int = 0) -> bool:
        """Relative motion (positive dy = down, dz = wheel); cut into reports of at most
        +-127 per axis, at most MAX_REPORTS_PER_EVENT of them (the rest is dropped, counted)."""
        self.buttons = int(buttons) & 7
        dx, dy, dz = int(dx), int(dy), int(dz)
        ok = True
        for i in range(MAX_REPORTS_PER_EVENT):
            sx, sy, sz = (max(-127, min(127, v)) for v in (dx, dy, dz))
            ok = self._push(bytes((self.buttons, sx & 0xFF, sy & 0xFF, sz & 0xFF))) and ok
            dx, dy, dz = dx - sx, dy - sy, dz - sz
            if not (dx or dy or dz):
                break
            if i == MAX_REPORTS_PER_EVENT - 1:
                self.count("motion beyond MAX_REPORTS_PER_EVENT dropped")
                ok = False
        return ok

    def input_state(self) -> dict[str, Any]:
        return {"buttons": self.buttons}

    def restore_input(self, st: dict[str, Any]) -> None:
        self.buttons = int(st["buttons"]) & 7


class UsbKeyboard(HidDevice):
    """QEMU usb-kbd: boot keyboard; `key(qcode, down)` takes QEMU qcode names or qnums."""

    REPORT_DESCRIPTOR = KEYBOARD_REPORT_DESCRIPTOR
    REPORT_LEN = 8

    def __init__(self, name: str = "usb-kbd", on_leds: Callable[[int], None] | None = None) -> None:
        iface = InterfaceDesc(0, 3, 1, 1, (EndpointDesc(0x81, EP_INTERRUPT, 8, 0x0A),),
                              hid=(0x0111, len(KEYBOARD_REPORT_DESCRIPTOR)))
        super().__init__(name, DeviceDesc(vendor=0x0627, product=0x0001,
                                          product_name="QEMU USB Keyboard", serial="42",
                                          config_name="HID Keyboard", interfaces=(iface,),
                                          attributes=0xA0, max_power=50))
        self.on_leds = on_leds

    def reset_input(self) -> None:
        self.modifiers = 0
        self.keys: list[int] = []
        self.leds = 0

    def current_report(self) -> bytes:
        if len(self.keys) > 6:
            keys = [USAGE_ERROR_ROLLOVER] * 6  # phantom state (HID 1.11 appendix C)
        else:
            keys = self.keys + [0] * (6 - len(self.keys))
        return bytes([self.modifiers, 0, *keys])

    def key(self, qcode: str | int, down: bool) -> bool:
        usage = hid_usage(qcode)
        if usage is None:
            self.count("unknown key")
            return False
        if 0xE0 <= usage <= 0xE7:
            bit = 1 << (usage - 0xE0)
            new = self.modifiers | bit if down else self.modifiers & ~bit
            if new == self.modifiers:
                return True
            self.modifiers = new
        elif down:
            if usage in self.keys:
                return True  # typematic repeat: USB keyboards report state, not repeats
            if len(self.keys) >= 16:
                self.count("too many keys held")
                return False
            self.keys.append(usage)
        else:
            if usage not in self.keys:
                return True
            self.keys.remove(usage)
        return self._push(self.current_report())

    def output_report(self) -> bytes | None:
        return bytes((self.leds,))

    def set_report(self, value: int, data: bytes) -> bytes | None:
        if value >> 8 not in (0, REPORT_OUTPUT) or not data:
            return None
        self.leds = data[0] & 0x1F
        if self.on_leds is not None:
            self.on_leds(self.leds)
        return b""

    def input_state(self) -> dict[str, Any]:
        return {"modifiers": self.modifiers, "keys": list(self.keys), "leds": self.leds}

    def restore_input(self, st: dict[str, Any]) -> None:
        keys = [int(k) & 0xFF for k in st["keys"]]
        if len(keys) > 16:
            raise ValueError(f"{self.name}: too many keys in snapshot")
        self.modifiers = int(st["modifiers"]) & 0xFF
        self.keys = keys
        self.leds = int(st["leds"]) & 0x1F
