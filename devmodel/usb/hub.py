"""QEMU's usb-hub (hw/usb/dev-hub.c): a full-speed hub with 8 downstream ports, used when more
devices are attached than the UHCI root has ports (QEMU chains one in the same way).

Port status and change bits, the hub class requests (GetHubStatus, GetPortStatus,
Set/ClearPortFeature, GetHubDescriptor) and the status-change interrupt endpoint (a bitmap, bit
n = port n changed; NAK while nothing changed, USB 1.1 11.13.1) are QEMU's. A port reset resets
the device, enables the port and sets C_PORT_RESET at once (no 10 ms reset signalling).
"""

from __future__ import annotations

from typing import Any

from .core import ACK, BABBLE, NAK, STALL, Endpoint, UsbDevice
from .desc import (
    CFG_ATT_ONE,
    CFG_ATT_SELFPOWER,
    CFG_ATT_WAKEUP,
    DT_HUB,
    EP_INTERRUPT,
    DeviceDesc,
    EndpointDesc,
    InterfaceDesc,
)

NUM_PORTS = 8
MAX_HUB_DEPTH = 5  # QEMU refuses a sixth chained hub ("usb hub chain too deep")

PORT_STAT_CONNECTION = 0x0001
PORT_STAT_ENABLE = 0x0002
PORT_STAT_SUSPEND = 0x0004
PORT_STAT_RESET = 0x0010
PORT_STAT_POWER = 0x0100
PORT_STAT_LOW_SPEED = 0x0200

PORT_STAT_C_CONNECTION = 0x0001
PORT_STAT_C_ENABLE = 0x0002
PORT_STAT_C_SUSPEND = 0x0004
PORT_STAT_C_OVERCURRENT = 0x0008
PORT_STAT_C_RESET = 0x0010

PORT_ENABLE = 1
PORT_SUSPEND = 2
PORT_RESET = 4
PORT_POWER = 8
PORT_C_CONNECTION = 16
PORT_C_ENABLE = 17
PORT_C_SUSPEND = 18
PORT_C_OVERCURRENT = 19
PORT_C_RESET = 20

_CLEAR_STATUS = {PORT_ENABLE: PORT_STAT_ENABLE, PORT_SUSPEND: PORT_STAT_SUSPEND}
_CLEAR_CHANGE = {PORT_C_ENABLE: PORT_STAT_C_ENABLE, PORT_C_SUSPEND: PORT_STAT_C_SUSPEND,
                 PORT_C_CONNECTION: PORT_STAT_C_CONNECTION,
                 PORT_C_OVERCURRENT: PORT_STAT_C_OVERCURRENT, PORT_C_RESET: PORT_STAT_C_RESET}

STATUS_BYTES = (NUM_PORTS + 1 + 7) // 8


class UsbHub(UsbDevice):
    def __init__(self, name: str = "usb-hub", depth: int = 1) -> None:
        if depth > MAX_HUB_DEPTH:
            raise ValueError("usb hub chain too deep")
        iface = InterfaceDesc(0, 9, 0, 0, (EndpointDesc(0x81, EP_INTERRUPT, 1 + (NUM_PORTS + 7) // 8, 0xFF),))
        desc = DeviceDesc(vendor=0x0409, product=0x55AA, bcd_usb=0x0110, bcd_device=0x0101,
                          device_class=9, product_name="QEMU USB Hub", serial="314159",
                          interfaces=(iface,),
                          attributes=CFG_ATT_ONE | CFG_ATT_SELFPOWER | CFG_ATT_WAKEUP, max_power=0)
        self.depth = depth
        self.ports: list[UsbDevice | None] = [None] * NUM_PORTS
        self.port_status = [PORT_STAT_POWER] * NUM_PORTS
        self.port_change = [0] * NUM_PORTS
        super().__init__(name, desc)

    # ---- topology -------------------------------------------------------------------------
    def plug(self, n: int, dev: UsbDevice) -> None:
        if self.ports[n] is not None:
            raise ValueError(f"{self.name}: port {n + 1} is taken")
        self.ports[n] = dev
        dev.bind(self.now, lambda n=n: self._child_wakeup(n))
        self._connect(n)

    def unplug(self, n: int) -> UsbDevice | None:
        """Disconnect the device on port n (QEMU usb_hub_detach): the connection goes with
        C_PORT_CONNECTION set, an enabled port is disabled with C_PORT_ENABLE set, and the
        status change endpoint reports it (a remote wakeup if the hub is suspended). The device
        gets `detached()`; for a hub, its own devices go with it."""
        dev = self.ports[n]
        if dev is None:
            return None
        self.ports[n] = None
        self.port_status[n] &= ~(PORT_STAT_CONNECTION | PORT_STAT_LOW_SPEED)
        self.port_change[n] |= PORT_STAT_C_CONNECTION
        if self.port_status[n] & PORT_STAT_ENABLE:
            self.port_status[n] &= ~PORT_STAT_ENABLE
            self.port_change[n] |= PORT_STAT_C_ENABLE
        dev.detached()
        self.wakeup()
        return dev

    def detached(self) -> None:
        for n in range(NUM_PORTS):
            if self.ports[n] is not None:
                self.unplug(n)
        super().detached()

    def bind(self, now, wakeup) -> None:
        super().bind(now, wakeup)
        for n, d in enumerate(self.ports):
            if d is not None:
                d.bind(now, lambda n=n: self._child_wakeup(n))

    def _connect(self, n: int) -> None:
        dev = self.ports[n]
        if dev is None:
            return
        self.port_status[n] |= PORT_STAT_CONNECTION
        self.port_change[n] |= PORT_STAT_C_CONNECTION
        if dev.speed_low:
            self.port_status[n] |= PORT_STAT_LOW_SPEED

    def _child_wakeup(self, n: int) -> None:
        if self.port_status[n] & PORT_STAT_SUSPEND:
            self.port_change[n] |= PORT_STAT_C_SUSPEND
        self.wakeup()

    def children(self) -> list[UsbDevice]:
        return [d for d in self.ports if d is not None]

    def find(self, addr: int) -> UsbDevice | None:
        if self.addr == addr:
            return self
        for n, d in enumerate(self.ports):
            if d is not None and self.port_status[n] & PORT_STAT_ENABLE:
                found = d.find(addr)
                if found is not None:
                    return found
        return None

    def device_reset(self) -> None:
        # QEMU usb_hub_handle_reset: ports powered, connections reported again
        for n in range(NUM_PORTS):
            self.port_status[n] = PORT_STAT_POWER
            self.port_change[n] = 0
            self._connect(n)

    # ---- status change endpoint -----------------------------------------------------------
    def data_in(self, ep: Endpoint, max_len: int) -> tuple[int, bytes]:
        n = STATUS_BYTES
        if max_len == 1:
            n = 1  # QEMU: FreeBSD reads one byte
        elif max_len < n:
            return BABBLE, b""
        bitmap = 0
        for i in range(NUM_PORTS):
            if self.port_change[i]:
                bitmap |= 1 << (i + 1)
        if not bitmap:
            return NAK, b""
        return ACK, bitmap.to_bytes(STATUS_BYTES, "little")[:n]

    # ---- hub class requests ---------------------------------------------------------------
    def class_request(self, rtype: int, req: int, value: int, index: int, length: int,
                      data: bytes | None) -> bytes | None:
        if rtype == 0xA0 and req == 6:  # GetHubDescriptor
            body = bytes([DT_HUB, NUM_PORTS, 0x0A, 0x00, 0x01, 0x00])
            body += bytes((NUM_PORTS + 1 + 7) // 8)  # DeviceRemovable
            body += b"\xff" * ((NUM_PORTS + 7) // 8)  # PortPwrCtrlMask
            return bytes([len(body) + 1]) + body
        if rtype == 0xA0 and req == 0:  # GetHubStatus
            return bytes(4)
        if rtype == 0x20 and req in (1, 3):  # Clear/SetHubFeature
            return b"" if value in (0, 1) else None
        n = index - 1
        if not 0 <= n < NUM_PORTS:
            return None
        if rtype == 0xA3 and req == 0:  # GetPortStatus
            return (self.port_status[n].to_bytes(2, "little")
                    + self.port_change[n].to_bytes(2, "little"))
        if rtype == 0x23 and req == 3:  # SetPortFeature
            if value == PORT_SUSPEND:
                self.port_status[n] |= PORT_STAT_SUSPEND
            elif value == PORT_RESET:
                dev = self.ports[n]
                if dev is not None:
                    dev.usb_reset()
                    self.port_change[n] |= PORT_STAT_C_RESET
                    self.port_status[n] |= PORT_STAT_ENABLE
            elif value != PORT_POWER:
                return None
            return b""
        if rtype == 0x23 and req == 1:  # ClearPortFeature
            if value in _CLEAR_STATUS:
                self.port_status[n] &= ~_CLEAR_STATUS[value]
            elif value in _CLEAR_CHANGE:
                self.port_change[n] &= ~_CLEAR_CHANGE[value]
            else:
                return None
            return b""
        return None

    # ---- snapshot -------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"port_status": list(self.port_status), "port_change": list(self.port_change),
                "children": [None if d is None else d.snapshot_state() for d in self.ports]}

    def restore_extra(self, st: dict[str, Any]) -> None:
        if len(st["port_status"]) != NUM_PORTS or len(st["children"]) != NUM_PORTS:
            raise ValueError(f"{self.name}: snapshot has the wrong number of ports")
        self.port_status = [int(v) & 0xFFFF for v in st["port_status"]]
        self.port_change = [int(v) & 0xFFFF for v in st["port_change"]]
        for d, cst in zip(self.ports, st["children"], strict=True):
            if (d is None) != (cst is None):
                raise ValueError(f"{self.name}: snapshot topology differs")
            if d is not None:
                d.restore_state(cst)


__all__ = ["UsbHub", "NUM_PORTS", "STALL"]
