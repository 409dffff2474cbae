"""The USB device side: device states, endpoints with data toggles, and the control pipe with
the chapter 9 standard requests. Host controllers (devmodel.usb.uhci) hand each transaction to
`UsbDevice.handle_packet`; devices are synchronous state machines (no async packets, unlike
QEMU's USB_RET_ASYNC), so every transaction completes, NAKs or STALLs on the spot.

Behaviour follows the USB 2.0 spec chapter 8/9 and QEMU's hw/usb/core.c and desc.c:
- a SETUP is always 8 bytes and always DATA0; wLength is checked against the 4 KiB control
  buffer before anything changes (CVE-2020-14364: QEMU stored it first): an oversized setup is
  STALLed and the control state stays as it was;
- a request the device does not support is answered with a STALL in the data or status stage
  (a "request error"); the endpoint-0 STALL goes away with the next SETUP;
- SET_ADDRESS takes effect after its status stage, as the spec says (the status IN still goes
  to address 0);
- data toggles: the device keeps one per endpoint. An OUT whose toggle does not match is a
  retransmission and is ACKed and dropped; an IN carries the device's toggle and the host
  controller compares it. SET_CONFIGURATION, SET_INTERFACE and CLEAR_FEATURE(ENDPOINT_HALT)
  reset toggles to DATA0;
- SET_DESCRIPTOR is optional in the spec and QEMU does not implement it: a request error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .desc import (
    DT_CONFIG,
    DT_DEVICE,
    DT_STRING,
    EP_CONTROL,
    LANGID_DESCRIPTOR,
    DeviceDesc,
    string_descriptor,
)

PID_SETUP = 0x2D
PID_IN = 0x69
PID_OUT = 0xE1

# Transaction results (what the device answers; the host controller maps them to TD status).
ACK = 0
NAK = 1
STALL = 2
BABBLE = 3
NODEV = 4  # nobody answered: the host sees a timeout

# QEMU's USBDevice data_buf: the most a control transfer may move (CVE-2020-14364).
MAX_CONTROL_DATA = 4096

STATE_DEFAULT = 1
STATE_ADDRESS = 2
STATE_CONFIGURED = 3

# bRequest
GET_STATUS = 0
CLEAR_FEATURE = 1
SET_FEATURE = 3
SET_ADDRESS = 5
GET_DESCRIPTOR = 6
SET_DESCRIPTOR = 7
GET_CONFIGURATION = 8
SET_CONFIGURATION = 9
GET_INTERFACE = 10
SET_INTERFACE = 11

FEATURE_ENDPOINT_HALT = 0
FEATURE_REMOTE_WAKEUP = 1

RECIP_DEVICE = 0
RECIP_INTERFACE = 1
RECIP_ENDPOINT = 2
TYPE_STANDARD = 0
TYPE_CLASS = 1

# Control pipe stages
CTL_IDLE = "idle"
CTL_DATA_IN = "in"
CTL_DATA_OUT = "out"
CTL_STATUS_IN = "status_in"  # host-to-device request done, waiting for the zero-length IN
CTL_STALL = "stall"


def _no_clock() -> int:
    return 0


def _no_wakeup() -> None:
    return None


class Endpoint:
    __slots__ = ("address", "type", "max_packet", "halted", "toggle")

    def __init__(self, address: int, type_: int, max_packet: int) -> None:
        self.address = address
        self.type = type_
        self.max_packet = max_packet
        self.halted = False
        self.toggle = 0

    @property
    def is_in(self) -> bool:
        return bool(self.address & 0x80)


class UsbDevice:
    """One USB function on a port. Subclasses provide descriptors and the class behaviour:
    `class_request`, `data_in`, `data_out`, `device_reset`, `extra_state`/`restore_extra`."""

    speed_low = False

    # Built at the guest's first GET_DESCRIPTOR, not at construction (daemon start-up).
    @functools.cached_property
    def device_descriptor(self) -> bytes:
        return self.desc.device_blob()

    @functools.cached_property
    def config_descriptor(self) -> bytes:
        return self.desc.config_blob()

    def __init__(self, name: str, desc: DeviceDesc) -> None:
        self.name = name
        self.desc = desc
        self.strings = desc.string_table()
        self.endpoints: dict[int, Endpoint] = {}
        for iface in desc.interfaces:
            for e in iface.endpoints:
                self.endpoints[e.address] = Endpoint(e.address, e.attributes & 3, e.max_packet)
        self.counters: dict[str, int] = {}
        # Injected by the port the device is plugged into (the host controller's clock and a
        # way to signal remote wakeup); never a wall clock (design rule 1).
        self.now: Callable[[], int] = _no_clock
        self.wakeup: Callable[[], None] = _no_wakeup
        # Set by the port the device is plugged into (Uhci.plug, UsbHub.plug): disconnects it
        # from there. None while the device is on no port.
        self.port_unplug: Callable[[], None] | None = None
        self.usb_reset()

    # ---- wiring ---------------------------------------------------------------------------
    def bind(self, now: Callable[[], int], wakeup: Callable[[], None]) -> None:
        self.now = now
        self.wakeup = wakeup

    def unplug_request(self) -> None:
        """QMP device_del: disconnect from the port (see devmodel.usb.unplug_usb)."""
        if self.port_unplug is None:
            raise ValueError(f"{self.name} is not plugged in")
        self.port_unplug()

    def detached(self) -> None:
        """Called by the port that has just disconnected the device (hostile-guest-catalog
        28: nothing may survive a detach). Transactions complete synchronously, so no packet
        is in flight; what a transfer left half done (a control stage, a CBW's data stage and
        its buffered write data, queued HID reports) goes with the bus reset, as QEMU's
        uhci_async_cancel_device drops the device's queued packets. The port's clock and
        wakeup hooks are dropped too, so nothing refers back to the controller."""
        self.usb_reset()
        self.bind(_no_clock, _no_wakeup)
        self.port_unplug = None

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def find(self, addr: int) -> UsbDevice | None:
        """The device answering `addr` at or below this one (hubs look downstream)."""
        return self if self.addr == addr else None

    def children(self) -> list[UsbDevice]:
        return []

    def subtree(self) -> list[UsbDevice]:
        """This device and everything plugged in behind it (hub ports), depth first; bounded
        by the devices plugged in (MAX_USB_DEVICES and the hubs: host-built, never guest data)."""
        return walk([self])

    # ---- reset ----------------------------------------------------------------------------
    def usb_reset(self) -> None:
        """Bus reset (port reset): back to the default state at address 0."""
        self.state = STATE_DEFAULT
        self.addr = 0
        self.config = 0
        self.remote_wakeup = 0
        self.pending_address = -1
        self.ctl_stage = CTL_IDLE
        self.ctl_setup = b""
        self.ctl_buf = bytearray()
        self.ctl_pos = 0
        self.ctl_len = 0
        self.ep0_toggle = 0
        for ep in self.endpoints.values():
            ep.halted = False
            ep.toggle = 0
        self.device_reset()

    def device_reset(self) -> None:
        """Class state back to power-on (subclasses)."""

    # ---- transactions ---------------------------------------------------------------------
    def handle_packet(self, pid: int, epnum: int, toggle: int, data: bytes,
                      max_len: int) -> tuple[int, bytes, int]:
        """One transaction. Returns (result, IN payload, the DATA toggle the device sent)."""
        if epnum == 0:
            return self._control(pid, toggle, data, max_len)
        if self.state != STATE_CONFIGURED:
            self.count("endpoint access while not configured")
            return STALL, b"", 0
        if pid == PID_IN:
            ep = self.endpoints.get(0x80 | epnum)
            if ep is None:
                self.count("IN to a missing endpoint")
                return STALL, b"", 0
            if ep.halted:
                return STALL, b"", 0
            res, payload = self.data_in(ep, min(max_len, ep.max_packet))
            if res == ACK:
                sent = ep.toggle
                ep.toggle ^= 1
                return ACK, payload, sent
            return res, b"", 0
        if pid == PID_OUT:
            ep = self.endpoints.get(epnum)
            if ep is None:
                self.count("OUT to a missing endpoint")
                return STALL, b"", 0
            if ep.halted:
                return STALL, b"", 0
            if toggle != ep.toggle:
                # The host did not see our ACK and sent the packet again: ACK, drop it.
                self.count("OUT toggle mismatch (retransmission dropped)")
                return ACK, b"", 0
            res = self.data_out(ep, data)
            if res == ACK:
                ep.toggle ^= 1
            return res, b"", 0
        self.count("SETUP to a non-control endpoint")
        return STALL, b"", 0

    def data_in(self, ep: Endpoint, max_len: int) -> tuple[int, bytes]:
        return NAK, b""

    def data_out(self, ep: Endpoint, data: bytes) -> int:
        return STALL

    # ---- the control pipe -----------------------------------------------------------------
    def _control(self, pid: int, toggle: int, data: bytes, max_len: int) -> tuple[int, bytes, int]:
        if pid == PID_SETUP:
            return self._setup(data), b"", 0
        stage = self.ctl_stage
        if stage == CTL_STALL:
            return STALL, b"", 0
        if pid == PID_IN:
            if stage == CTL_DATA_IN:
                n = min(max_len, self.desc.max_packet0, self.ctl_len - self.ctl_pos)
                chunk = bytes(self.ctl_buf[self.ctl_pos : self.ctl_pos + n])
                self.ctl_pos += n
                sent = self.ep0_toggle
                self.ep0_toggle ^= 1
                return ACK, chunk, sent
            if stage == CTL_STATUS_IN:
                self.ctl_stage = CTL_IDLE
                if self.pending_address >= 0:
                    self.addr = self.pending_address
                    self.state = STATE_ADDRESS if self.addr else STATE_DEFAULT
                    self.pending_address = -1
                return ACK, b"", 1
            if stage == CTL_DATA_OUT:
                # Status stage before all the data arrived: the request is incomplete.
                self.count("control status stage before the data stage ended")
                self.ctl_stage = CTL_STALL
                return STALL, b"", 0
            self.count("control IN without a SETUP")
            return STALL, b"", 0
        if pid == PID_OUT:
            if stage == CTL_DATA_IN:
                # Status stage of a device-to-host request (the host may end the data stage
                # early: that is allowed).
                self.ctl_stage = CTL_IDLE
                return ACK, b"", 0
            if stage == CTL_DATA_OUT:
                if toggle != self.ep0_toggle:
                    self.count("control OUT toggle mismatch (retransmission dropped)")
                    return ACK, b"", 0
                self.ep0_toggle ^= 1
                room = self.ctl_len - len(self.ctl_buf)
                if len(data) > room:
                    self.count("control OUT data beyond wLength")
                self.ctl_buf += data[:room]
                if len(self.ctl_buf) >= self.ctl_len:
                    self._finish_out_request()
                return ACK, b"", 0
            self.count("control OUT without a SETUP")
            return STALL, b"", 0
        return STALL, b"", 0

    def _setup(self, data: bytes) -> int:
        if len(data) != 8:
            self.count("SETUP not 8 bytes")
            return STALL
        length = int.from_bytes(data[6:8], "little")
        if length > MAX_CONTROL_DATA:
            # CVE-2020-14364: refuse before any state changes.
            self.count("SETUP wLength larger than the control buffer")
            return STALL
        rtype = data[0]
        self.ctl_setup = bytes(data)
        self.ctl_len = length
        self.ctl_pos = 0
        self.ctl_buf = bytearray()
        self.ep0_toggle = 1
        if rtype & 0x80:
            reply = self._request(None)
            if reply is None:
                self.ctl_stage = CTL_STALL
            else:
                self.ctl_buf = bytearray(reply[:length])
                self.ctl_len = len(self.ctl_buf)
                self.ctl_stage = CTL_DATA_IN
        elif length == 0:
            self._finish_out_request()
        else:
            self.ctl_stage = CTL_DATA_OUT
        return ACK

    def _finish_out_request(self) -> None:
        reply = self._request(bytes(self.ctl_buf))
        self.ctl_stage = CTL_STALL if reply is None else CTL_STATUS_IN

    def _request(self, data: bytes | None) -> bytes | None:
        s = self.ctl_setup
        rtype, req = s[0], s[1]
        value = int.from_bytes(s[2:4], "little")
        index = int.from_bytes(s[4:6], "little")
        length = int.from_bytes(s[6:8], "little")
        kind = (rtype >> 5) & 3
        if kind == TYPE_STANDARD:
            reply = self.standard_request(rtype, req, value, index, length, data)
        else:
            reply = self.class_request(rtype, req, value, index, length, data)
        if reply is None:
            self.count(f"request error {rtype:#04x}/{req:#04x}")
        return reply

    def standard_request(self, rtype: int, req: int, value: int, index: int, length: int,
                         data: bytes | None) -> bytes | None:
        recip = rtype & 0x1F
        to_host = bool(rtype & 0x80)
        if req == GET_DESCRIPTOR and to_host:
            return self.get_descriptor(recip, value >> 8, value & 0xFF, index)
        if req == SET_DESCRIPTOR:
            return None
        if req == SET_ADDRESS and not to_host and recip == RECIP_DEVICE:
            if value > 127 or self.state == STATE_CONFIGURED:
                return None
            self.pending_address = value
            return b""
        if req == GET_CONFIGURATION and to_host and recip == RECIP_DEVICE:
            return bytes((self.config,))
        if req == SET_CONFIGURATION and not to_host and recip == RECIP_DEVICE:
            if self.state == STATE_DEFAULT:
                return None
            if value == 0:
                self.config = 0
                self.state = STATE_ADDRESS
            elif value == self.desc.config_value:
                self.config = value
                self.state = STATE_CONFIGURED
                self._reset_endpoints()
                self.configured()
            else:
                return None
            return b""
        if req == GET_STATUS and to_host:
            if recip == RECIP_DEVICE:
                self_powered = 1 if self.desc.attributes & 0x40 else 0
                return bytes((self_powered | self.remote_wakeup << 1, 0))
            if recip == RECIP_INTERFACE:
                return b"\0\0" if self._iface_ok(index) else None
            if recip == RECIP_ENDPOINT:
                if index & 0x7F == 0:
                    return b"\0\0"
                ep = self._ep_for(index)
                return None if ep is None else bytes((int(ep.halted), 0))
            return None
        if req in (SET_FEATURE, CLEAR_FEATURE) and not to_host:
            on = req == SET_FEATURE
            if recip == RECIP_DEVICE and value == FEATURE_REMOTE_WAKEUP:
                self.remote_wakeup = int(on)
                return b""
            if recip == RECIP_ENDPOINT and value == FEATURE_ENDPOINT_HALT:
                if index & 0x7F == 0:
                    return b""  # endpoint 0 halts only as a protocol STALL
                ep = self._ep_for(index)
                if ep is None:
                    return None
                if on:
                    ep.halted = True
                elif self.may_clear_halt(ep):
                    ep.halted = False
                    ep.toggle = 0
                else:
                    ep.toggle = 0
                return b""
            return None
        if req == GET_INTERFACE and to_host and recip == RECIP_INTERFACE:
            return b"\0" if self._iface_ok(index) else None
        if req == SET_INTERFACE and not to_host and recip == RECIP_INTERFACE:
            if not self._iface_ok(index) or value != 0:
                return None
            self._reset_endpoints()
            return b""
        return None

    def _iface_ok(self, index: int) -> bool:
        return self.state == STATE_CONFIGURED and any(i.number == index for i in self.desc.interfaces)

    def _ep_for(self, index: int) -> Endpoint | None:
        if self.state != STATE_CONFIGURED:
            return None
        return self.endpoints.get(index & 0x8F)

    def _reset_endpoints(self) -> None:
        for ep in self.endpoints.values():
            ep.halted = False
            ep.toggle = 0

    def get_descriptor(self, recip: int, dtype: int, dindex: int, index: int) -> bytes | None:
        if recip != RECIP_DEVICE:
            return self.class_descriptor(recip, dtype, dindex, index)
        if dtype == DT_DEVICE:
            return self.device_descriptor
        if dtype == DT_CONFIG and dindex == 0:
            return self.config_descriptor
        if dtype == DT_STRING:
            if dindex == 0:
                return LANGID_DESCRIPTOR
            text = self.strings.get(dindex)
            return None if text is None else string_descriptor(text)
        return None  # device qualifier etc.: a full-speed-only device STALLs (USB 2.0 9.6.2)

    def class_descriptor(self, recip: int, dtype: int, dindex: int, index: int) -> bytes | None:
        return None

    def class_request(self, rtype: int, req: int, value: int, index: int, length: int,
                      data: bytes | None) -> bytes | None:
        return None

    def may_clear_halt(self, ep: Endpoint) -> bool:
        """CLEAR_FEATURE(ENDPOINT_HALT) may leave the endpoint halted (mass storage before its
        reset recovery, BOT 6.6.1)."""
        return True

    def configured(self) -> None:
        """SET_CONFIGURATION selected the configuration (subclasses)."""

    # ---- snapshot -------------------------------------------------------------------------
    def snapshot_state(self) -> dict[str, Any]:
        return {
            "state": self.state, "addr": self.addr, "config": self.config,
            "remote_wakeup": self.remote_wakeup, "pending_address": self.pending_address,
            "ctl_stage": self.ctl_stage, "ctl_setup": bytes(self.ctl_setup),
            "ctl_buf": bytes(self.ctl_buf), "ctl_pos": self.ctl_pos, "ctl_len": self.ctl_len,
            "ep0_toggle": self.ep0_toggle,
            "endpoints": {str(a): [int(e.halted), e.toggle] for a, e in self.endpoints.items()},
            "extra": self.extra_state(),
        }

    def restore_state(self, st: dict[str, Any]) -> None:
        if st["ctl_stage"] not in (CTL_IDLE, CTL_DATA_IN, CTL_DATA_OUT, CTL_STATUS_IN, CTL_STALL):
            raise ValueError(f"{self.name}: bad control stage {st['ctl_stage']!r}")
        buf = bytes(st["ctl_buf"])
        if len(buf) > MAX_CONTROL_DATA or not 0 <= int(st["ctl_len"]) <= MAX_CONTROL_DATA:
            raise ValueError(f"{self.name}: control buffer too large")
        if not 0 <= int(st["addr"]) <= 127:
            raise ValueError(f"{self.name}: bad address")
        self.state = int(st["state"])
        self.addr = int(st["addr"])
        self.config = int(st["config"])
        self.remote_wakeup = int(st["remote_wakeup"])
        self.pending_address = int(st["pending_address"])
        self.ctl_stage = st["ctl_stage"]
        self.ctl_setup = bytes(st["ctl_setup"])
        self.ctl_buf = bytearray(buf)
        self.ctl_pos = min(int(st["ctl_pos"]), len(buf))
        self.ctl_len = int(st["ctl_len"])
        self.ep0_toggle = int(st["ep0_toggle"]) & 1
        for a, (halted, tog) in st["endpoints"].items():
            ep = self.endpoints.get(int(a))
            if ep is None:
                raise ValueError(f"{self.name}: snapshot has unknown endpoint {a}")
            ep.halted = bool(halted)
            ep.toggle = int(tog) & 1
        self.restore_extra(st["extra"])

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, st: dict[str, Any]) -> None:
        pass


__all__ = ["EP_CONTROL", "UsbDevice", "Endpoint"]


def walk(roots: list[UsbDevice]) -> list[UsbDevice]:
    """`roots` and every device behind them, depth first (last root first): the one walk of
    a USB tree for Uhci.all_devices/detach and unplug_usb."""
    out: list[UsbDevice] = []
    stack = list(roots)
    while stack:
        d = stack.pop()
        out.append(d)
        stack.extend(d.children())
    return out
