"""The issue's proof cases at the edges: LBA28/LBA48 address boundaries on a (sparse) 2 TiB
disk, PRD byte counts that do not divide into sectors, and PRD entries and transfers that
cross 64 KiB boundaries."""

from __future__ import annotations

import os
import struct

from ide_helpers import Rig, make_image, pattern

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import ata

OK = ata.READY_STAT | ata.SEEK_STAT
TABLE = 0x1000
BUF = 0x30000
INT = ata.BM_STATUS_INT
LBA28_LAST = (1 << 28) - 1
NB = (1 << 32) + 64  # 2 TiB + 32 KiB: LBA48 addresses above 32 bits


def marked(lba: int) -> bytes:
    return struct.pack("<Q", lba) + bytes((lba * 13 + i) & 0xFF for i in range(504))


def big_rig(tmp_path):
    """A sparse image of NB sectors with a distinct sector at every boundary tested."""
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(NB * 512)
        for lba in (LBA28_LAST - 1, LBA28_LAST, 1 << 28, (1 << 28) + 1, (1 << 32) - 1, 1 << 32, NB - 1):
            f.seek(lba * 512)
            f.write(marked(lba))
    return Rig({(0, 0): RawFileDisk(img)})


def pio_read(r: Rig, nsect: int) -> bytes:
    out = b""
    for _ in range(nsect):
        assert r.status() & ata.DRQ_STAT, hex(r.altstatus())
        out += r.read_block(BUF, 512)
    return out


def dma_read(r: Rig, entries, cmd: int) -> None:
    r.prd_table(TABLE, entries)
    r.bm_setup(TABLE, to_memory=True)
    r.command(cmd)
    r.bm_start(to_memory=True)


def test_identify_capacities_of_a_2tib_disk(tmp_path):
    ident = big_rig(tmp_path).identify()
    words = struct.unpack("<256H", ident)
    assert words[60] | words[61] << 16 == LBA28_LAST  # LBA28 capacity saturates
    assert sum(words[100 + i] << (16 * i) for i in range(4)) == NB
    assert words[83] & (1 << 10) and words[86] & (1 << 10)  # 48-bit address feature set


def test_lba28_reaches_its_last_sector(tmp_path):
    r = big_rig(tmp_path)
    r.taskfile(LBA28_LAST - 1, 2)  # device register bits 3-0 carry LBA 27:24 (0xF)
    r.command(ata.CMD_READ)
    assert pio_read(r, 2) == marked(LBA28_LAST - 1) + marked(LBA28_LAST)
    assert r.status() == OK
    # the task file reports the address after the last sector, in the LBA28 layout
    assert r.inp(0x1F6) & 0x0F == 0 and (r.inp(0x1F5), r.inp(0x1F4), r.inp(0x1F3)) == (0, 0, 0)
    r.taskfile(LBA28_LAST, 1)
    dma_read(r, [(0x40000, 512)], ata.CMD_READ_DMA)
    assert r.bm_status() == INT and r.status() == OK
    assert r.ram(0x40000, 512) == marked(LBA28_LAST)


def test_lba48_across_the_28_and_32_bit_boundaries(tmp_path):
    r = big_rig(tmp_path)
    r.taskfile48((1 << 28) - 1, 3)  # crosses from the LBA28 range into LBA48-only sectors
    r.command(ata.CMD_READ_EXT)
    assert pio_read(r, 3) == marked(LBA28_LAST) + marked(1 << 28) + marked((1 << 28) + 1)
    assert r.status() == OK
    nxt = (1 << 28) + 2
    assert (r.inp(0x1F5), r.inp(0x1F4), r.inp(0x1F3)) == (nxt >> 16 & 0xFF, nxt >> 8 & 0xFF, nxt & 0xFF)
    r.devctl(ata.CTRL_HOB)
    assert (r.inp(0x1F5), r.inp(0x1F4), r.inp(0x1F3)) == (0, 0, nxt >> 24)
    r.devctl(0)

    r.taskfile48((1 << 32) - 1, 2)  # across 2^32: bits 39:32 in the HOB LBA mid register
    dma_read(r, [(0x40000, 1024)], ata.CMD_READ_DMA_EXT)
    assert r.bm_status() == INT and r.status() == OK
    assert r.ram(0x40000, 1024) == marked((1 << 32) - 1) + marked(1 << 32)
    r.devctl(ata.CTRL_HOB)
    assert (r.inp(0x1F4), r.inp(0x1F3)) == (1, 0)  # next LBA 2^32 + 1: LBA 39:32 = 1
    r.devctl(0)
    r.bm_stop()


def test_lba48_end_of_disk(tmp_path):
    r = big_rig(tmp_path)
    r.taskfile48(NB - 1, 1)  # the last sector
    dma_read(r, [(0x40000, 512)], ata.CMD_READ_DMA_EXT)
    assert r.status() == OK and r.ram(0x40000, 512) == marked(NB - 1)
    r.bm_stop()
    # DMA checks the whole range before anything moves: one sector too many is IDNF
    r.poke(0x40000, bytes(1024))
    r.irqs()
    r.taskfile48(NB - 1, 2)
    dma_read(r, [(0x40000, 1024)], ata.CMD_READ_DMA_EXT)
    assert r.irqs() == [(14, 1)] and r.bm_status() == INT
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.IDNF_ERR
    assert r.ram(0x40000, 1024) == bytes(1024)
    r.bm_stop()
    # PIO checks each block as it is fetched (QEMU ide_sector_read): the last sector comes,
    # then the next block is IDNF
    r.taskfile48(NB - 1, 2)
    r.command(ata.CMD_READ_EXT)
    assert pio_read(r, 1) == marked(NB - 1)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.IDNF_ERR
    for lba in (NB, (1 << 48) - 1):  # just past the end, and the largest 48-bit address
        r.irqs()
        r.taskfile48(lba, 1)
        r.command(ata.CMD_READ_EXT)
        assert r.irqs() == [(14, 1)]
        assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.IDNF_ERR, lba


def test_prd_byte_counts_that_do_not_divide_into_sectors(tmp_path):
    """Sectors split across entries of 510, 514, 1000 and 1048 bytes (6 sectors in all),
    both directions; bit 0 of a byte count is reserved (QEMU masks it: 0x201 is 0x200)."""
    img = make_image(tmp_path / "d.img", 64)
    r = Rig({(0, 0): RawFileDisk(img)})
    entries = [(0x20000, 510), (0x20400, 514), (0x21001 & ~1, 1000), (0x22002, 1048)]
    r.taskfile(5, 6)
    dma_read(r, entries, ata.CMD_READ_DMA)
    assert r.bm_status() == INT and r.status() == OK
    got = b"".join(r.ram(a, n) for a, n in entries)
    assert got == pattern(64)[5 * 512 : 11 * 512]
    r.bm_stop()

    payload = bytes((i * 7 + 1) & 0xFF for i in range(3072))
    pos = 0
    for a, n in entries:
        r.poke(a, payload[pos : pos + n])
        pos += n
    r.prd_table(TABLE, entries)
    r.bm_setup(TABLE, to_memory=False)
    r.taskfile(40, 6)
    r.command(ata.CMD_WRITE_DMA)
    r.bm_start(to_memory=False)
    assert r.bm_status() == INT and r.status() == OK
    with open(img, "rb") as f:
        assert os.pread(f.fileno(), 3072, 40 * 512) == payload
    r.bm_stop()

    r.poke(0x50000, b"\xee" * 0x210)
    r.taskfile(2, 1)
    r.prd_table(TABLE, [(0x50000, 0x201)])  # odd: the reserved bit 0 is ignored
    r.bm_setup(TABLE, to_memory=True)
    r.command(ata.CMD_READ_DMA)
    r.bm_start(to_memory=True)
    assert r.bm_status() == INT and r.status() == OK
    assert r.ram(0x50000, 512) == pattern(64)[2 * 512 : 3 * 512]
    assert r.ram(0x50200, 16) == b"\xee" * 16  # not one byte more


def test_transfers_and_entries_crossing_64k(tmp_path):
    """A 96 KiB READ DMA (more than one 64 KiB entry can carry) whose entries cross 64 KiB
    boundaries of guest memory. The PIIX datasheet forbids an entry that crosses one and
    drivers split there (Linux ata_bmdma_fill_sg), but QEMU's bmdma walk does not check
    and neither do we: the bytes land contiguously, as QEMU's would."""
    r = Rig.with_file(tmp_path, 512)
    entries = [(0x1F000, 0x3000), (0x2FF00, 0x10000), (0x60000, 0x18000 - 0x13000)]
    assert sum(n for _, n in entries) == 0x18000
    r.taskfile48(100, 0x18000 // 512)
    dma_read(r, entries, ata.CMD_READ_DMA_EXT)
    assert r.bm_status() == INT and r.status() == OK
    data = pattern(512)[100 * 512 : 100 * 512 + 0x18000]
    assert b"".join(r.ram(a, n) for a, n in entries) == data
    r.bm_stop()
    # and by PIO: READ MULTIPLE EXT blocks into a buffer that straddles 64 KiB (one rep
    # insw per page, as Xen splits a rep string at page boundaries)
    r.out(0x1F2, 16)
    r.command(ata.CMD_SET_MULTIPLE)
    assert r.status() == OK
    r.taskfile48(200, 32)
    r.command(ata.CMD_READ_MULTIPLE_EXT)
    got = b""
    for _ in range(2):
        assert r.status() & ata.DRQ_STAT
        base = 0xF000 + len(got)  # 0xF000 .. 0x16FFF: crosses 0x10000
        for off in range(0, 16 * 512, 4096):
            r.rep_ins(0x1F0, base + off, 2048)
        got += r.ram(base, 16 * 512)
    assert r.status() == OK
    assert got == pattern(512)[200 * 512 : 232 * 512]
