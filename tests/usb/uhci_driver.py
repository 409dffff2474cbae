"""An independent UHCI driver for the tests: it programs the controller only through PCI config
and port I/O ioreqs, builds frame lists, QHs and TDs in fake guest RAM (the UHCI 1.1 layouts,
written here from the spec, not taken from the model) and moves the virtual clock.

Schedule: every frame-list entry points at one QH (`self.qh`); a transfer puts its TD chain
(depth first) in that QH's element pointer and runs frames until the chain is done.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.usb import build_usb
from devmodel.wire.constants import DmOp

PIO, PCI_CONFIG = 0, 2
READY = 0x01
DIR_READ = 0x20
DEVFN = 1 << 3 | 2
IOBASE = 0xC040
RAM = 1 << 20
FRAME_LIST = 0x10000
QH_ADDR = 0x11000
HEAP = 0x12000

USBCMD, USBSTS, USBINTR, FRNUM, FLBASEADD, SOFMOD, PORTSC1, PORTSC2 = 0, 2, 4, 6, 8, 0x0C, 0x10, 0x12
SETUP, IN, OUT = 0x2D, 0x69, 0xE1
T, Q, VF = 1, 2, 4
ACTIVE = 1 << 23
STALLED = 1 << 22
DBE = 1 << 21
BABBLE = 1 << 20
NAKBIT = 1 << 19
CRC_TO = 1 << 18
IOC = 1 << 24
SPD = 1 << 29
ERRMASK = STALLED | DBE | BABBLE | CRC_TO
MS = 1_000_000


@dataclass
class Td:
    addr: int
    pid: int
    maxlen: int
    buf: int


class TransferError(Exception):
    def __init__(self, what: str, ctrl: int) -> None:
        super().__init__(f"{what}: ctrl={ctrl:#010x}")
        self.ctrl = ctrl


class UhciDriver:
    def __init__(self, devices, ram: int = RAM, start: bool = True) -> None:
        self.m = Machine(GuestMemory.fake(ram), Clock(virtual=True), strict=True)
        self.uhci = build_usb(self.m, devices)
        self.mem = self.m.memory
        self.now = 0
        self.heap = HEAP
        self.toggles: dict[tuple[int, int], int] = {}
        self.cfg_write(0x20, 4, IOBASE | 1)
        self.cfg_write(0x04, 2, 0x0005)  # I/O decode + bus master
        if start:
            self.start()

    # ---- ioreqs ---------------------------------------------------------------------------
    def cfg_read(self, reg: int, size: int) -> int:
        return self.m.handle_ioreq(PCI_CONFIG, DEVFN << 32 | reg, 0, 1, size, READY | DIR_READ)

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        self.m.handle_ioreq(PCI_CONFIG, DEVFN << 32 | reg, value, 1, size, READY)

    def inp(self, off: int, size: int = 2) -> int:
        return self.m.handle_ioreq(PIO, IOBASE + off, 0, 1, size, READY | DIR_READ)

    def out(self, off: int, value: int, size: int = 2) -> None:
        self.m.handle_ioreq(PIO, IOBASE + off, value, 1, size, READY)

    def irq_level(self) -> int | None:
        """Last INTx level sent for the UHCI (slot 1, pin D), or None."""
        level = None
        for op, fields, _ in self.m.outbox:
            if op == DmOp.SET_PCI_INTX_LEVEL and fields[2] == 1 and fields[3] == 3:
                level = fields[4]
        return level

    # ---- time -----------------------------------------------------------------------------
    def step(self, ms: float = 1) -> None:
        self.now += int(ms * MS)
        self.m.clock.set_virtual(self.now)
        self.m.clock.run_due()

    # ---- memory ---------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 16) -> int:
        self.heap = (self.heap + align - 1) & ~(align - 1)
        a = self.heap
        self.heap += max(size, 1)
        assert self.heap < len(self.mem.regions[0].view)
        return a

    def w32(self, addr: int, v: int) -> None:
        assert self.mem.write_int(addr, 4, v)

    def r32(self, addr: int) -> int:
        v = self.mem.read_int(addr, 4)
        assert v is not None
        return v

    # ---- controller bring-up --------------------------------------------------------------
    def start(self) -> None:
        self.out(USBCMD, 0x0002)  # HCRESET
        assert self.inp(USBCMD) & 0x0002 == 0
        for i in range(1024):
            self.w32(FRAME_LIST + 4 * i, QH_ADDR | Q)
        self.w32(QH_ADDR, T)
        self.w32(QH_ADDR + 4, T)
        self.out(FLBASEADD, FRAME_LIST, 4)
        self.out(FRNUM, 0)
        self.out(USBCMD, 0x00C1)  # RS | CF | MAXP

    def reset_port(self, n: int) -> int:
        off = PORTSC1 + 2 * n
        self.out(off, 0x0200)  # PR
        self.step(10)
        self.out(off, 0x0000)
        self.step(1)
        self.out(off, 0x0004 | 0x000A)  # PE, clear CSC/PEC
        return self.inp(off)

    # ---- TDs ------------------------------------------------------------------------------
    def make_td(self, pid: int, addr: int, ep: int, toggle: int, maxlen: int, data: bytes = b"",
                ioc: bool = False, spd: bool = False, cerr: int = 3) -> Td:
        td = self.alloc(16)
        buf = self.alloc(max(maxlen, 1)) if maxlen else 0
        if data:
            assert self.mem.write(buf, data)
        field = (maxlen - 1) & 0x7FF
        ctrl = ACTIVE | (cerr << 27) | (IOC if ioc else 0) | (SPD if spd else 0)
        token = field << 21 | toggle << 19 | ep << 15 | addr << 8 | pid
        self.w32(td, T)
        self.w32(td + 4, ctrl)
        self.w32(td + 8, token)
        self.w32(td + 12, buf)
        return Td(td, pid, maxlen, buf)

    def ctrl_of(self, td: Td) -> int:
        return self.r32(td.addr + 4)

    def actual(self, td: Td) -> int:
        return (self.ctrl_of(td) + 1) & 0x7FF

    def chain(self, tds: list[Td]) -> None:
        for a, b in zip(tds, tds[1:], strict=False):
            self.w32(a.addr, b.addr | VF)

    def run(self, tds: list[Td], max_frames: int = 200) -> None:
        """Put the chain in the schedule QH and run frames until the last TD completes or one
        of them ends with an error. Raises TransferError on an error or a timeout."""
        self.chain(tds)
        self.w32(QH_ADDR + 4, tds[0].addr)
        try:
            for _ in range(max_frames):
                self.step(1)
                for td in tds:
                    c = self.ctrl_of(td)
                    if c & ERRMASK and not c & ACTIVE:
                        raise TransferError("TD failed", c)
                if not self.ctrl_of(tds[-1]) & ACTIVE:
                    return
            raise TransferError("timeout", self.ctrl_of(tds[-1]))
        finally:
            self.w32(QH_ADDR + 4, T)

    # ---- transfers ------------------------------------------------------------------------
    def control(self, addr: int, rtype: int, req: int, value: int = 0, index: int = 0,
                length: int = 0, data: bytes = b"", mps: int = 8) -> bytes:
        self.heap = HEAP
        setup = struct.pack("<BBHHH", rtype, req, value, index, length if rtype & 0x80 else len(data))
        tds = [self.make_td(SETUP, addr, 0, 0, 8, setup)]
        toggle = 1
        ins: list[Td] = []
        if rtype & 0x80:
            left = length
            while left > 0:
                n = min(mps, left)
                td = self.make_td(IN, addr, 0, toggle, n)
                tds.append(td)
                ins.append(td)
                toggle ^= 1
                left -= n
            tds.append(self.make_td(OUT, addr, 0, 1, 0, ioc=True))
        else:
            for i in range(0, len(data), mps):
                tds.append(self.make_td(OUT, addr, 0, toggle, len(data[i : i + mps]), data[i : i + mps]))
                toggle ^= 1
            tds.append(self.make_td(IN, addr, 0, 1, 0, ioc=True))
        self.run(tds)
        out = b""
        for td in ins:
            n = self.actual(td)
            out += bytes(self.mem.read(td.buf, n) or b"")
        return out

    def get_descriptor(self, addr: int, dtype: int, length: int, index: int = 0, rtype: int = 0x80,
                       windex: int = 0) -> bytes:
        return self.control(addr, rtype, 6, dtype << 8 | index, windex, length)

    def set_address(self, new: int) -> None:
        self.control(0, 0x00, 5, new)

    def set_configuration(self, addr: int, value: int = 1) -> None:
        self.control(addr, 0x00, 9, value)
        for k in list(self.toggles):
            if k[0] == addr:
                self.toggles[k] = 0

    def enumerate(self, new_addr: int) -> dict[str, bytes]:
        """What every host does with a fresh device at address 0."""
        dev8 = self.get_descriptor(0, 1, 8)
        mps = dev8[7]
        self.set_address(new_addr)
        dev = self.get_descriptor(new_addr, 1, 18)
        cfg9 = self.get_descriptor(new_addr, 2, 9)
        total = int.from_bytes(cfg9[2:4], "little")
        cfg = self.get_descriptor(new_addr, 2, total)
        self.set_configuration(new_addr, cfg[5])
        return {"device": dev, "config": cfg, "mps": bytes([mps])}

    def interrupt_in(self, addr: int, ep: int, maxlen: int, frames: int = 5) -> bytes | None:
        """One interrupt IN TD; None if it was still NAKing after `frames` frames."""
        key = (addr, 0x80 | ep)
        tog = self.toggles.get(key, 0)
        self.heap = HEAP
        td = self.make_td(IN, addr, ep, tog, maxlen, ioc=True)
        self.w32(QH_ADDR + 4, td.addr)
        try:
            for _ in range(frames):
                self.step(1)
                c = self.ctrl_of(td)
                if not c & ACTIVE:
                    if c & ERRMASK:
                        raise TransferError("interrupt IN failed", c)
                    self.toggles[key] = tog ^ 1
                    return bytes(self.mem.read(td.buf, self.actual(td)) or b"")
            return None
        finally:
            self.w32(QH_ADDR + 4, T)

    def bulk(self, addr: int, ep: int, direction: int, data: bytes = b"", length: int = 0,
             mps: int = 64) -> bytes:
        key = (addr, ep | (0x80 if direction == IN else 0))
        tog = self.toggles.get(key, 0)
        self.heap = HEAP
        tds: list[Td] = []
        if direction == OUT:
            for i in range(0, len(data), mps):
                chunk = data[i : i + mps]
                tds.append(self.make_td(OUT, addr, ep, tog, len(chunk), chunk))
                tog ^= 1
        else:
            left = length
            while left > 0:
                n = min(mps, left)
                tds.append(self.make_td(IN, addr, ep, tog, n))
                tog ^= 1
                left -= n
        try:
            self.run(tds, max_frames=2000)
        except TransferError:
            # toggles advance only for completed TDs
            done = sum(1 for td in tds if not self.ctrl_of(td) & (ACTIVE | ERRMASK))
            self.toggles[key] = self.toggles.get(key, 0) ^ (done & 1)
            raise
        self.toggles[key] = tog
        if direction == IN:
            return b"".join(bytes(self.mem.read(td.buf, self.actual(td)) or b"") for td in tds)
        return b""
