"""A guest's view of the Xen platform device and the IDE disk, over either a Machine (unit
tests, ioreqs straight into handle_ioreq) or a Hypervisor on a real socket. The same driver
code (Linux's unplug handshake, ata_bmdma DMA, PIO writes) runs on both."""

from __future__ import annotations

import struct
from pathlib import Path

from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.ide import ata

PIO, COPY, PCI_CONFIG = 0, 1, 2
READY, DIR_READ, PTR = 0x01, 0x20, 0x10
IDE_DEVFN = 1 << 3 | 1
XEN_DEVFN = 2 << 3
BMIBA = 0xC000
XEN_IO = 0xC100
XEN_MMIO = 0xF0000000
CMD0, CTL0, CMD1 = 0x1F0, 0x3F6, 0x170
TABLE = 0x1000
BUF = 0x20000

# Linux include/xen/platform_pci.h
XEN_IOPORT_MAGIC = 0x10
XEN_IOPORT_PROTOVER = 0x12
XEN_IOPORT_PRODNUM = 0x12
XEN_IOPORT_DRVVER = 0x10
XEN_IOPORT_UNPLUG = 0x10
XEN_IOPORT_SYSLOG = 0x12
XEN_IOPORT_MAGIC_VAL = 0x49D2
XEN_IOPORT_LINUX_PRODNUM = 0x0003
XEN_IOPORT_LINUX_DRVVER = 0x0001


def pattern(nsectors: int, seed: int = 0) -> bytes:
    out = bytearray()
    for s in range(nsectors):
        out += struct.pack("<II", s, seed) + bytes((s * 7 + seed + i) & 0xFF for i in range(504))
    return bytes(out)


def make_image(path: Path, nsectors: int = 64) -> Path:
    path.write_bytes(pattern(nsectors))
    return path


class MachinePort:
    """Ioreqs straight into a Machine."""

    def __init__(self, m: Machine) -> None:
        self.m = m

    def inp(self, port: int, size: int = 1) -> int:
        return self.m.handle_ioreq(PIO, port, 0, 1, size, READY | DIR_READ)

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.m.handle_ioreq(PIO, port, value, 1, size, READY)

    def cfg_read(self, devfn: int, reg: int, size: int) -> int:
        return self.m.handle_ioreq(PCI_CONFIG, devfn << 32 | reg, 0, 1, size, READY | DIR_READ)

    def cfg_write(self, devfn: int, reg: int, size: int, value: int) -> None:
        self.m.handle_ioreq(PCI_CONFIG, devfn << 32 | reg, value, 1, size, READY)

    def mmio_read(self, gpa: int, size: int) -> int:
        return self.m.handle_ioreq(COPY, gpa, 0, 1, size, READY | DIR_READ)

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        self.m.handle_ioreq(COPY, gpa, value, 1, size, READY)

    def rep_outs(self, port: int, gpa: int, count: int, size: int = 2) -> None:
        self.m.handle_ioreq(PIO, port, gpa, count, size, READY | PTR)

    def poke(self, gpa: int, data: bytes) -> None:
        assert self.m.memory.write(gpa, data)

    def peek(self, gpa: int, n: int) -> bytes:
        data = self.m.memory.read(gpa, n)
        assert data is not None
        return data


class HvPort:
    """The same through devmodel.client.Hypervisor on the daemon's socket. Accesses go out
    whether or not Xen would route them (a test of what the daemon does with stale ones)."""

    def __init__(self, hv) -> None:
        self.hv = hv

    def inp(self, port: int, size: int = 1) -> int:
        return self.hv.pio_read(port, size)

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.hv.pio_write(port, size, value)

    def cfg_read(self, devfn: int, reg: int, size: int) -> int:
        return self.hv.pci_cfg_read(devfn, reg, size)

    def cfg_write(self, devfn: int, reg: int, size: int, value: int) -> None:
        self.hv.pci_cfg_write(devfn, reg, size, value)

    def mmio_read(self, gpa: int, size: int) -> int:
        return self.hv.mmio_read(gpa, size)

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        self.hv.mmio_write(gpa, size, value)

    def rep_outs(self, port: int, gpa: int, count: int, size: int = 2) -> None:
        self.hv.outs(port, size, count, gpa)

    def poke(self, gpa: int, data: bytes) -> None:
        self.hv.ram.write(gpa, data)

    def peek(self, gpa: int, n: int) -> bytes:
        return self.hv.ram.read(gpa, n)


class Guest:
    """What firmware and drivers do: BAR programming, ATA commands, the unplug handshake."""

    def __init__(self, port) -> None:
        self.p = port

    # ---- set-up as SeaBIOS/hvmloader leave it -----------------------------------------
    def program_bars(self) -> None:
        p = self.p
        p.cfg_write(IDE_DEVFN, 0x20, 4, BMIBA | 1)
        p.cfg_write(IDE_DEVFN, 0x04, 2, 0x0005)
        p.cfg_write(IDE_DEVFN, 0x40, 2, 0x8000)
        p.cfg_write(IDE_DEVFN, 0x42, 2, 0x8000)
        p.cfg_write(XEN_DEVFN, 0x10, 4, XEN_IO | 1)
        p.cfg_write(XEN_DEVFN, 0x14, 4, XEN_MMIO | 8)
        p.cfg_write(XEN_DEVFN, 0x04, 2, 0x0003)

    # ---- Linux arch/x86/xen/platform-pci-unplug.c --------------------------------------
    def linux_unplug(self, mask: int, *, product: int = XEN_IOPORT_LINUX_PRODNUM,
                     build: int = XEN_IOPORT_LINUX_DRVVER) -> str:
        """check_platform_magic, then outw(mask, XEN_IOPORT_UNPLUG). Returns the outcome."""
        p = self.p
        if p.inp(XEN_IOPORT_MAGIC, 2) != XEN_IOPORT_MAGIC_VAL:
            return "magic"
        protocol = p.inp(XEN_IOPORT_PROTOVER, 1)
        if protocol != 1:
            return "protocol"
        p.out(XEN_IOPORT_PRODNUM, product, 2)
        p.out(XEN_IOPORT_DRVVER, build, 4)
        if p.inp(XEN_IOPORT_MAGIC, 2) != XEN_IOPORT_MAGIC_VAL:
            return "blacklist"
        p.out(XEN_IOPORT_UNPLUG, mask, 2)
        return "unplugged"

    # ---- ATA --------------------------------------------------------------------------
    def status(self, ch: int = 0) -> int:
        return self.p.inp((CMD1 if ch else CMD0) + 7)

    def wait_not_busy(self, ch: int = 0, polls: int = 100_000) -> int:
        """Poll the alternate status until BSY drops (disk I/O completes asynchronously on
        a real daemon); bounded, as a driver's timeout."""
        for _ in range(polls):
            st = self.p.inp(CTL0 if ch == 0 else 0x376)
            if not st & ata.BUSY_STAT:
                return st
        raise AssertionError("drive stayed BSY")

    def taskfile(self, lba: int, count: int, unit: int = 0, ch: int = 0) -> None:
        b = CMD1 if ch else CMD0
        self.p.out(b + 6, 0xE0 | (unit << 4) | ((lba >> 24) & 0xF))
        self.p.out(b + 2, count & 0xFF)
        self.p.out(b + 3, lba & 0xFF)
        self.p.out(b + 4, (lba >> 8) & 0xFF)
        self.p.out(b + 5, (lba >> 16) & 0xFF)

    def pio_write(self, lba: int, data: bytes) -> None:
        """WRITE SECTORS, one sector per DRQ block, as rep outsw (one data_is_ptr ioreq)."""
        n = len(data) // 512
        self.taskfile(lba, n)
        self.p.out(CMD0 + 7, ata.CMD_WRITE)
        for i in range(n):
            assert self.wait_not_busy() & ata.DRQ_STAT
            self.p.poke(BUF, data[i * 512 : (i + 1) * 512])
            self.p.rep_outs(CMD0, BUF, 256)
        self.wait_not_busy()
        assert not self.status() & (ata.DRQ_STAT | ata.ERR_STAT)

    def dma_write_issue(self, lba: int, data: bytes) -> None:
        """ata_bmdma_setup + the WRITE DMA command, without starting the bus master."""
        self.p.poke(BUF, data)
        self.p.poke(TABLE, struct.pack("<II", BUF, len(data) | ata.PRD_EOT))
        self.p.out(BMIBA + 4, TABLE, 4)
        self.p.out(BMIBA, 0)
        self.taskfile(lba, len(data) // 512)
        self.p.out(CMD0 + 7, ata.CMD_WRITE_DMA)

    def dma_write(self, lba: int, data: bytes) -> None:
        """The whole ata_bmdma sequence; returns when the command is acknowledged."""
        self.dma_write_issue(lba, data)
        self.p.out(BMIBA, ata.BM_CMD_START)
        for _ in range(100_000):  # ata_bmdma: wait for the interrupt (Active drops with it)
            st = self.p.inp(BMIBA + 2)
            if st & ata.BM_STATUS_INT:
                break
        assert st & ata.BM_STATUS_INT and not st & ata.BM_STATUS_ERROR, hex(st)
        self.p.out(BMIBA, 0)
        self.p.out(BMIBA + 2, st)
        assert self.status() == ata.READY_STAT | ata.SEEK_STAT


def ide_machine(disks, *, ram: int = 4 << 20, platform_kw=None) -> tuple[Machine, object, object]:
    """A strict machine with fake RAM, the PIIX IDE function with `disks` and the platform
    device at 00:02.0."""
    from devmodel.ide import build_ide
    from devmodel.xen import build_xen_platform

    m = Machine(GuestMemory.fake(ram), Clock(virtual=True), strict=True)
    ide = build_ide(m, disks)
    plat = build_xen_platform(m, **(platform_kw or {}))
    return m, ide, plat
