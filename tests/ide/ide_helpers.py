"""A test rig for the PIIX3 IDE function: a strict Machine with fake RAM, real image files in
tmp_path, and the register dance a driver does (PCI config ioreqs, port I/O, rep ins/outs as
data_is_ptr ioreqs, PRD tables in RAM)."""

from __future__ import annotations

import struct
from pathlib import Path

from devmodel.backends.disk import DiskBackend, RawFileDisk
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.ide import ata, build_ide
from devmodel.wire.constants import DmOp

PIO, COPY, PCI_CONFIG = 0, 1, 2
READY = 0x01
DIR_READ = 0x20
PTR = 0x10
DEVFN = 1 << 3 | 1
BMIBA = 0xC000
RAM_SIZE = 4 << 20
CMD0, CTL0 = 0x1F0, 0x3F6
CMD1, CTL1 = 0x170, 0x376


def pattern(nsectors: int, seed: int = 0) -> bytes:
    """Distinct content per sector: the sector number and a byte ramp."""
    out = bytearray()
    for s in range(nsectors):
        out += struct.pack("<II", s, seed) + bytes((s * 7 + seed + i) & 0xFF for i in range(504))
    return bytes(out)


def make_image(path: Path, nsectors: int, seed: int = 0) -> Path:
    path.write_bytes(pattern(nsectors, seed))
    return path


class Rig:
    def __init__(self, disks: dict[tuple[int, int], DiskBackend], ram: int = RAM_SIZE,
                 enable: bool = True) -> None:
        self.m = Machine(GuestMemory.fake(ram), Clock(virtual=True), strict=True)
        self.dev = build_ide(self.m, disks)
        self.mem = self.m.memory
        if enable:
            self.cfg_write(0x20, 4, BMIBA | 1)
            self.cfg_write(0x04, 2, 0x0005)  # I/O decode + bus master
            self.cfg_write(0x40, 2, 0x8000)  # IDETIM decode enable, as SeaBIOS does
            self.cfg_write(0x42, 2, 0x8000)
        self.m.outbox.clear()

    @classmethod
    def with_file(cls, tmp_path: Path, nsectors: int = 64, pos=(0, 0), **kw) -> Rig:
        img = make_image(tmp_path / "disk.img", nsectors)
        return cls({pos: RawFileDisk(img)}, **kw)

    # ---- raw ioreqs -----------------------------------------------------------------------
    def cfg_read(self, reg: int, size: int) -> int:
        return self.m.handle_ioreq(PCI_CONFIG, DEVFN << 32 | reg, 0, 1, size, READY | DIR_READ)

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        self.m.handle_ioreq(PCI_CONFIG, DEVFN << 32 | reg, value, 1, size, READY)

    def inp(self, port: int, size: int = 1) -> int:
        return self.m.handle_ioreq(PIO, port, 0, 1, size, READY | DIR_READ)

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.m.handle_ioreq(PIO, port, value, 1, size, READY)

    def rep_ins(self, port: int, gpa: int, count: int, size: int = 2) -> None:
        """rep insw/insd into guest RAM: ONE data_is_ptr ioreq, as Xen sends it."""
        self.m.handle_ioreq(PIO, port, gpa, count, size, READY | DIR_READ | PTR)

    def rep_outs(self, port: int, gpa: int, count: int, size: int = 2) -> None:
        self.m.handle_ioreq(PIO, port, gpa, count, size, READY | PTR)

    # ---- a driver's view ------------------------------------------------------------------
    def base(self, ch: int) -> int:
        return CMD1 if ch else CMD0

    def status(self, ch: int = 0) -> int:
        return self.inp(self.base(ch) + 7)

    def altstatus(self, ch: int = 0) -> int:
        return self.inp(CTL1 if ch else CTL0)

    def error(self, ch: int = 0) -> int:
        return self.inp(self.base(ch) + 1)

    def devctl(self, value: int, ch: int = 0) -> None:
        self.out(CTL1 if ch else CTL0, value)

    def select(self, unit: int, ch: int = 0, lba: bool = True, head: int = 0) -> None:
        self.out(self.base(ch) + 6, 0xA0 | (0x40 if lba else 0) | (unit << 4) | head)

    def taskfile(self, lba: int, count: int, ch: int = 0, unit: int = 0) -> None:
        """LBA28 registers."""
        b = self.base(ch)
        self.out(b + 6, 0xE0 | (unit << 4) | ((lba >> 24) & 0xF))
        self.out(b + 2, count & 0xFF)
        self.out(b + 3, lba & 0xFF)
        self.out(b + 4, (lba >> 8) & 0xFF)
        self.out(b + 5, (lba >> 16) & 0xFF)

    def taskfile48(self, lba: int, count: int, ch: int = 0, unit: int = 0) -> None:
        """LBA48: high-order bytes first into the two-deep FIFO of each register."""
        b = self.base(ch)
        self.out(b + 6, 0xE0 | (unit << 4))
        self.out(b + 2, (count >> 8) & 0xFF)
        self.out(b + 3, (lba >> 24) & 0xFF)
        self.out(b + 4, (lba >> 32) & 0xFF)
        self.out(b + 5, (lba >> 40) & 0xFF)
        self.out(b + 2, count & 0xFF)
        self.out(b + 3, lba & 0xFF)
        self.out(b + 4, (lba >> 8) & 0xFF)
        self.out(b + 5, (lba >> 16) & 0xFF)

    def command(self, cmd: int, ch: int = 0) -> None:
        self.out(self.base(ch) + 7, cmd)

    def read_block(self, gpa: int, nbytes: int, ch: int = 0) -> bytes:
        self.rep_ins(self.base(ch), gpa, nbytes // 2)
        return self.ram(gpa, nbytes)

    def identify(self, ch: int = 0, unit: int = 0, gpa: int = 0x10000) -> bytes:
        self.select(unit, ch)
        self.command(ata.CMD_IDENTIFY, ch)
        assert self.status(ch) & ata.DRQ_STAT
        return self.read_block(gpa, 512, ch)

    def ram(self, gpa: int, n: int) -> bytes:
        data = self.mem.read(gpa, n)
        assert data is not None
        return data

    def poke(self, gpa: int, data: bytes) -> None:
        assert self.mem.write(gpa, data)

    # ---- bus master ------------------------------------------------------------------------
    def bm(self, ch: int = 0) -> int:
        return BMIBA + 8 * ch

    def bm_status(self, ch: int = 0) -> int:
        return self.inp(self.bm(ch) + 2)

    def prd_table(self, table: int, entries: list[tuple[int, int]], eot: bool = True) -> None:
        """Entries of (address, byte count); 0x10000 is written as 0."""
        raw = bytearray()
        for i, (addr, count) in enumerate(entries):
            flag = ata.PRD_EOT if eot and i == len(entries) - 1 else 0
            raw += struct.pack("<II", addr, (count & 0xFFFF) | flag)
        self.poke(table, bytes(raw))

    def bm_setup(self, table: int, to_memory: bool, ch: int = 0) -> None:
        """Linux ata_bmdma_setup: PRD pointer, direction, start bit clear."""
        self.out(self.bm(ch) + 4, table, 4)
        self.out(self.bm(ch), ata.BM_CMD_READ if to_memory else 0)

    def bm_start(self, to_memory: bool, ch: int = 0) -> None:
        self.out(self.bm(ch), (ata.BM_CMD_READ if to_memory else 0) | ata.BM_CMD_START)

    def bm_stop(self, ch: int = 0) -> None:
        self.out(self.bm(ch), self.inp(self.bm(ch)) & ~ata.BM_CMD_START)

    # ---- interrupts ------------------------------------------------------------------------
    def irqs(self) -> list[tuple[int, int]]:
        """(irq, level) of every ISA IRQ dm_op since the last call."""
        out = [tuple(f) for op, f, _ in self.m.outbox if op == DmOp.SET_ISA_IRQ_LEVEL]
        self.m.outbox.clear()
        return out  # type: ignore[return-value]

    def irq_level(self, irq: int) -> int:
        return self.m.irqs.levels().get(f"isa{irq}", 0)


class FailingDisk(RawFileDisk):
    """A real file whose reads (and optionally writes) fail with EIO: an injected fault."""

    def __init__(self, path: Path, fail_writes: bool = False) -> None:
        super().__init__(path)
        self.fail_writes = fail_writes

    def read_into(self, offset, bufs):
        raise OSError(5, "injected EIO")

    def write_from(self, offset, bufs):
        if self.fail_writes:
            raise OSError(5, "injected EIO")
        super().write_from(offset, bufs)


def file_bytes(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def words(page: bytes) -> list[int]:
    return list(struct.unpack("<256H", page))


def ata_string(page: bytes, first: int, last: int) -> str:
    raw = page[2 * first : 2 * (last + 1)]
    swapped = bytearray(len(raw))
    swapped[0::2] = raw[1::2]
    swapped[1::2] = raw[0::2]
    return swapped.decode("ascii").rstrip()


__all__ = ["Rig", "FailingDisk", "make_image", "pattern", "file_bytes", "words", "ata_string",
           "make_iso", "iso_bytes", "cdb", "send_packet", "atapi_pio", "request_sense",
           "AtapiResult", "CD_BLOCK"]


# ---- ATAPI ------------------------------------------------------------------------------
CD_BLOCK = 2048
MAX_DRQ_BLOCKS = 4096  # a driver's bound on one command's data phase, for these tests


def iso_bytes(nblocks: int, seed: int = 0) -> bytes:
    """Distinct content per 2048-byte block: block number, seed, byte ramp."""
    out = bytearray()
    for b in range(nblocks):
        out += struct.pack("<II", b, seed) + bytes((b * 13 + seed + i) & 0xFF for i in range(2040))
    return bytes(out)


def make_iso(path: Path, nblocks: int, seed: int = 0) -> Path:
    path.write_bytes(iso_bytes(nblocks, seed))
    return path


class AtapiResult:
    def __init__(self, data: bytes, blocks: list[int], status: int, error: int, reason: int,
                 irqs: list[tuple[int, int]]) -> None:
        self.data = data
        self.blocks = blocks  # the byte count of each DRQ block
        self.status = status
        self.error = error
        self.reason = reason  # interrupt reason (sector count) at the end
        self.irqs = irqs

    @property
    def ok(self) -> bool:
        return not self.status & ata.ERR_STAT

    @property
    def sense_key(self) -> int:
        return self.error >> 4


def cdb(*parts: int, length: int = 12) -> bytes:
    return bytes(parts).ljust(length, b"\0")


def send_packet(r: Rig, packet: bytes, ch: int = 1, unit: int = 0, bcl: int = 0xFFFE,
                dma: bool = False) -> None:
    """PACKET with the byte-count limit in LBA mid/high, then the 12-byte packet by
    16-bit data-port writes (as SeaBIOS and Linux send it)."""
    b = r.base(ch)
    r.out(b + 6, 0xA0 | (unit << 4))
    r.out(b + 1, 1 if dma else 0)
    r.out(b + 4, bcl & 0xFF)
    r.out(b + 5, (bcl >> 8) & 0xFF)
    r.command(ata.CMD_PACKET, ch)
    st = r.altstatus(ch)
    assert st & ata.DRQ_STAT, f"no DRQ for the packet: {st:#x}"
    assert r.inp(b + 2) & 3 == ata.ATAPI_INT_REASON_CD  # CoD=1 IO=0
    for i in range(0, 12, 2):
        r.out(b, int.from_bytes(packet[i : i + 2], "little"), 2)


def atapi_pio(r: Rig, packet: bytes, ch: int = 1, unit: int = 0, bcl: int = 0xFFFE,
              gpa: int = 0x40000) -> AtapiResult:
    """Send a packet and read every DRQ block it produces, as a polling driver does."""
    r.irqs()
    send_packet(r, packet, ch, unit, bcl)
    b = r.base(ch)
    data = bytearray()
    blocks = []
    for _ in range(MAX_DRQ_BLOCKS):
        st = r.altstatus(ch)
        if not st & ata.DRQ_STAT:
            break
        assert r.inp(b + 2) & 3 == ata.ATAPI_INT_REASON_IO  # data to the host
        n = r.inp(b + 4) | r.inp(b + 5) << 8
        blocks.append(n)
        nwords = (n + 1) // 2
        for off in range(0, nwords, 2048):  # one rep per page, as Xen splits them
            r.rep_ins(b, gpa + 2 * off, min(2048, nwords - off))
        data += r.ram(gpa, n)
    else:
        raise AssertionError("data phase did not end")
    irqs = r.irqs()
    reason = r.inp(b + 2)
    error = r.inp(b + 1)
    status = r.status(ch)
    return AtapiResult(bytes(data), blocks, status, error, reason, irqs)


def request_sense(r: Rig, ch: int = 1) -> tuple[int, int, int]:
    res = atapi_pio(r, cdb(0x03, 0, 0, 0, 18), ch)
    assert res.ok and len(res.data) == 18
    return res.data[2] & 0x0F, res.data[12], res.data[13]
