"""Bus-master DMA: the sequence Linux ata_bmdma_setup/start/stop and the IRQ handler use."""

from __future__ import annotations

import struct

from ide_helpers import RAM_SIZE, FailingDisk, Rig, file_bytes, make_image, pattern

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import ata
from devmodel.ide.bmdma import PRD_MAX_ENTRIES

OK = ata.READY_STAT | ata.SEEK_STAT
TABLE = 0x1000
INT = ata.BM_STATUS_INT
ACTIVE = ata.BM_STATUS_ACTIVE
ERROR = ata.BM_STATUS_ERROR


def dma_read(r: Rig, lba: int, count: int, entries, eot: bool = True, cmd=ata.CMD_READ_DMA):
    r.prd_table(TABLE, entries, eot)
    r.bm_setup(TABLE, to_memory=True)
    r.taskfile(lba, count)
    r.command(cmd)
    r.bm_start(to_memory=True)


def test_dma_read_scatter_gather(tmp_path):
    r = Rig.with_file(tmp_path, 128)
    r.mem.dirty_log = set()
    dma_read(r, 10, 8, [(0x20000, 1024), (0x30C00, 2048), (0x40000, 1024)])
    assert r.irqs() == [(14, 1)]
    # Linux ata_bmdma_port_intr: Interrupt set, Active clear (the table was used up exactly).
    assert r.bm_status() == INT
    assert r.status() == OK
    data = pattern(128)[10 * 512 : 18 * 512]
    assert r.ram(0x20000, 1024) == data[:1024]
    assert r.ram(0x30C00, 2048) == data[1024:3072]  # crosses a page
    assert r.ram(0x40000, 1024) == data[3072:]
    assert {0x20, 0x30, 0x31, 0x40} <= r.mem.dirty_log
    r.bm_stop()
    r.out(r.bm() + 2, r.bm_status())  # ata_bmdma_irq_clear: write the bits back
    assert r.bm_status() == 0
    assert (r.inp(0x1F3), r.inp(0x1F2)) == (18, 0)


def test_dma_write(tmp_path):
    img = make_image(tmp_path / "w.img", 64)
    r = Rig({(0, 0): RawFileDisk(img)})
    payload = bytes((i * 3) & 0xFF for i in range(1536))
    r.poke(0x50000, payload[:512])
    r.poke(0x60000, payload[512:])
    r.prd_table(TABLE, [(0x50000, 512), (0x60000, 1024)])
    r.bm_setup(TABLE, to_memory=False)
    r.taskfile48(20, 3)
    r.command(ata.CMD_WRITE_DMA_EXT)
    assert r.altstatus() == OK | ata.DRQ_STAT  # waiting for the bus master
    assert r.irqs() == []
    r.bm_start(to_memory=False)
    assert r.irqs() == [(14, 1)]
    assert r.bm_status() == INT and r.status() == OK
    assert file_bytes(img, 20 * 512, 1536) == payload


def test_start_before_command_runs_at_command(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.prd_table(TABLE, [(0x20000, 512)])
    r.bm_setup(TABLE, to_memory=True)
    r.bm_start(to_memory=True)
    assert r.bm_status() == ACTIVE
    r.taskfile(3, 1)
    r.command(ata.CMD_READ_DMA)
    assert r.bm_status() == INT
    assert r.ram(0x20000, 512) == pattern(64)[3 * 512 : 4 * 512]


def test_longer_table_keeps_active(tmp_path):
    """PIIX: Interrupt=1 Active=1 when the PRDs describe more than the drive transferred."""
    r = Rig.with_file(tmp_path, 64)
    dma_read(r, 0, 1, [(0x20000, 4096)])
    assert r.bm_status() == INT | ACTIVE
    r.bm_stop()
    assert r.bm_status() == INT
    dma_read(r, 0, 1, [(0x20000, 512), (0x30000, 512)])  # more entries after the last needed
    assert r.bm_status() == INT | ACTIVE


def test_64k_entry_and_lba28_count_256(tmp_path):
    r = Rig.with_file(tmp_path, 512)
    dma_read(r, 0, 0, [(0x100000, 0x10000), (0x200000, 0x10000)])  # count 0 = 256 sectors
    assert r.bm_status() == INT and r.status() == OK
    assert r.ram(0x100000, 0x10000) + r.ram(0x200000, 0x10000) == pattern(512)[: 256 * 512]


def test_short_prd_table_errors_without_interrupt(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    dma_read(r, 0, 4, [(0x20000, 1024)])  # 2 KiB needed, 1 KiB described
    assert r.irqs() == []
    assert r.bm_status() == ERROR  # Active dropped, no Interrupt, Error set
    assert r.status() == OK  # drive no longer in the data phase
    assert r.ram(0x20000, 16) == bytes(16)  # nothing was transferred
    assert r.dev.counters["PRD table shorter than the transfer"] == 1


def test_table_without_eot_is_bounded_to_one_page(tmp_path):
    """A table that never sets EOT (or is 'cyclic' through garbage) is walked for one page
    (512 entries) and no further."""
    r = Rig.with_file(tmp_path, 2048)
    r.prd_table(TABLE, [(0x20000, 2)] * PRD_MAX_ENTRIES + [(0x30000, 0)] * 8, eot=False)
    r.bm_setup(TABLE, to_memory=True)
    r.taskfile(0, 4)  # 2048 bytes wanted, 512 x 2 bytes = 1024 in the first page
    r.command(ata.CMD_READ_DMA)
    r.bm_start(to_memory=True)
    assert r.bm_status() == ERROR and r.irqs() == []
    assert r.ram(0x30000, 16) == bytes(16)
    # The same table satisfies a transfer that fits in it.
    r.bm_stop()
    r.out(r.bm() + 2, ERROR)
    dma_read(r, 0, 2, [(0x20000 + 2 * i, 2) for i in range(PRD_MAX_ENTRIES)], eot=False)
    assert r.bm_status() == INT  # used up exactly at the page bound: Active clear
    assert r.ram(0x20000, 1024) == pattern(2048)[:1024]


def test_prd_table_outside_ram(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.bm_setup(RAM_SIZE - 8, to_memory=True)  # one entry fits, the next is beyond RAM
    r.poke(RAM_SIZE - 8, struct.pack("<II", 0x20000, 512))  # no EOT
    r.taskfile(0, 2)
    r.command(ata.CMD_READ_DMA)
    r.bm_start(to_memory=True)
    assert r.bm_status() == ERROR | INT
    assert r.irqs() == [(14, 1)]
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR
    assert r.cfg_read(0x06, 2) & 0x2000  # received master abort


def test_dma_to_non_ram_is_a_bus_error(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    dma_read(r, 0, 2, [(0x20000, 512), (0xFEC00000, 512)])
    assert r.bm_status() == ERROR | INT
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR
    assert r.ram(0x20000, 16) == bytes(16)  # validated before anything moved
    r.cfg_write(0x06, 2, 0x2000)  # write-1-to-clear
    assert not r.cfg_read(0x06, 2) & 0x2000
    r.bm_stop()
    r.out(r.bm() + 2, ERROR | INT)
    dma_read(r, 0, 1, [(RAM_SIZE - 256, 512)])  # straddles the end of RAM
    assert r.bm_status() == ERROR | INT and not r.dev.failed


def test_dma_needs_pci_bus_master(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.cfg_write(0x04, 2, 0x0001)  # I/O only
    dma_read(r, 0, 1, [(0x20000, 512)])
    assert r.bm_status() == ERROR | INT
    assert r.ram(0x20000, 16) == bytes(16)
    assert not r.cfg_read(0x06, 2) & 0x2000


def test_dma_beyond_the_end(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    dma_read(r, 60, 8, [(0x20000, 4096)])
    assert r.irqs() == [(14, 1)]
    assert r.bm_status() == INT
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.IDNF_ERR


def test_dma_backend_error(tmp_path):
    img = make_image(tmp_path / "bad.img", 64)
    r = Rig({(0, 0): FailingDisk(img, fail_writes=True)})
    dma_read(r, 0, 1, [(0x20000, 512)])
    assert r.irqs() == [(14, 1)]
    assert r.bm_status() == INT
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.UNC_ERR
    r.bm_stop()
    r.prd_table(TABLE, [(0x20000, 512)])
    r.bm_setup(TABLE, to_memory=False)
    r.taskfile(0, 1)
    r.command(ata.CMD_WRITE_DMA)
    r.bm_start(to_memory=False)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR
    assert not r.dev.failed


def test_dma_on_secondary_slave(tmp_path):
    img = make_image(tmp_path / "d.img", 32, seed=9)
    r = Rig({(1, 1): RawFileDisk(img)})
    r.prd_table(TABLE, [(0x20000, 1024)])
    r.bm_setup(TABLE, to_memory=True, ch=1)
    r.taskfile(4, 2, ch=1, unit=1)
    r.command(ata.CMD_READ_DMA, ch=1)
    r.bm_start(to_memory=True, ch=1)
    assert r.irqs() == [(15, 1)]
    assert r.bm_status(1) == INT and r.bm_status(0) == 0
    assert r.ram(0x20000, 1024) == pattern(32, seed=9)[4 * 512 : 6 * 512]


def test_stop_while_command_waits_then_restart(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.prd_table(TABLE, [(0x20000, 512)])
    r.bm_setup(TABLE, to_memory=True)
    r.taskfile(7, 1)
    r.command(ata.CMD_READ_DMA)
    r.bm_stop()  # nothing started: only bits change
    assert r.bm_status() == 0 and r.altstatus() == OK | ata.DRQ_STAT
    r.bm_start(to_memory=True)
    assert r.bm_status() == INT
    assert r.ram(0x20000, 512) == pattern(64)[7 * 512 : 8 * 512]


def test_prd_walk_merges_contiguous_entries_and_reads_the_table_in_batches():
    """Entries that continue the previous one (a driver's 64 KiB split of one buffer) become
    one scatter element; a gap starts a new one. A batched table read that would run past
    the end of RAM falls back to one entry at a time: a table that ends at the end of RAM
    is walked to its EOT entry, not reported as a bus error."""
    from devmodel.core.memory import GuestMemory
    from devmodel.ide.bmdma import BusMaster

    mem = GuestMemory.fake(RAM_SIZE)
    bm = BusMaster()
    bm.addr = TABLE
    entries = [(0x100000, 0), (0x110000, 0), (0x120000, 0x8000), (0x130000, 0x8000 | ata.PRD_EOT)]
    mem.write(TABLE, b"".join(struct.pack("<II", a, c) for a, c in entries))
    walk = bm.walk_prd(mem, 0x30000)
    assert walk is not None and walk.got == 0x30000 and not walk.more
    assert walk.sg == [(0x100000, 0x28000), (0x130000, 0x8000)]
    bm.addr = RAM_SIZE - 16  # two 64 KiB entries, the last bytes of RAM
    mem.write(RAM_SIZE - 16, struct.pack("<IIII", 0x200000, 0, 0x210000, ata.PRD_EOT))
    walk = bm.walk_prd(mem, 0x30000)  # asks for 3 entries' worth: the batch would not fit
    assert walk is not None and walk.got == 0x20000 and walk.sg == [(0x200000, 0x20000)]
    bm.addr = RAM_SIZE - 8  # one entry without EOT, the next one would be outside RAM
    mem.write(RAM_SIZE - 8, struct.pack("<II", 0x200000, 0))
    assert bm.walk_prd(mem, 0x20000) is None
