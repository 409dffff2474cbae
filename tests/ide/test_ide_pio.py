"""PIO commands through the task file and `rep insw/outsw` as single data_is_ptr ioreqs."""

from __future__ import annotations

from ide_helpers import FailingDisk, Rig, file_bytes, make_image, pattern

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import ata

OK = ata.READY_STAT | ata.SEEK_STAT
BUF = 0x20000


def test_read_sectors_rep_insw(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.taskfile(5, 3)
    r.command(ata.CMD_READ)
    assert r.irqs() == [(14, 1)]
    assert r.altstatus() == OK | ata.DRQ_STAT
    assert r.irqs() == []  # the alternate status does not acknowledge
    got = b""
    for i in range(3):
        assert r.status() == OK | ata.DRQ_STAT
        assert r.irqs() == [(14, 0)]
        got += r.read_block(BUF + 512 * i, 512)
        # Every block but the last raises the next interrupt; the last one ends quietly.
        assert r.irqs() == ([(14, 1)] if i < 2 else [])
    assert got == pattern(64)[5 * 512 : 8 * 512]
    assert r.status() == OK
    # The task file now points past the transfer (QEMU ide_set_sector), count exhausted.
    assert (r.inp(0x1F3), r.inp(0x1F2)) == (8, 0)


def test_write_sectors_rep_outsw(tmp_path):
    img = make_image(tmp_path / "w.img", 32)
    r = Rig({(0, 0): RawFileDisk(img)})
    data = bytes(range(256)) * 4
    r.poke(BUF, data)
    r.taskfile(10, 2)
    r.command(ata.CMD_WRITE)
    assert r.irqs() == []  # the first block is requested without an interrupt
    assert r.status() == OK | ata.DRQ_STAT
    r.rep_outs(0x1F0, BUF, 256)
    assert r.irqs() == [(14, 1)]
    assert r.status() == OK | ata.DRQ_STAT
    r.rep_outs(0x1F0, BUF + 512, 256)
    assert r.status() == OK
    assert file_bytes(img, 10 * 512, 1024) == data
    assert file_bytes(img, 9 * 512, 512) == pattern(32)[9 * 512 : 10 * 512]


def test_rep_spanning_two_sectors_in_one_ioreq(tmp_path):
    r = Rig.with_file(tmp_path, 16)
    r.taskfile(0, 4)
    r.command(ata.CMD_READ)
    r.rep_ins(0x1F0, BUF, 1024)  # 2 KiB in one ioreq: each sector boundary fetches the next
    assert r.ram(BUF, 2048) == pattern(16)[:2048]
    assert r.status() == OK


def test_read_write_multiple(tmp_path):
    img = make_image(tmp_path / "m.img", 64)
    r = Rig({(0, 0): RawFileDisk(img)})
    r.out(0x1F2, 4)
    r.command(ata.CMD_SET_MULTIPLE)
    assert r.status() == OK
    r.taskfile(8, 10)
    r.command(ata.CMD_READ_MULTIPLE)
    blocks = []
    for size in (4, 4, 2):  # blocks of the multiple count, then the remainder
        assert r.status() & ata.DRQ_STAT
        blocks.append(r.read_block(BUF, size * 512))
    assert b"".join(blocks) == pattern(64)[8 * 512 : 18 * 512]
    assert r.status() == OK
    payload = bytes((i * 13) & 0xFF for i in range(6 * 512))
    r.poke(BUF, payload)
    r.taskfile(40, 6)
    r.command(ata.CMD_WRITE_MULTIPLE)
    r.rep_outs(0x1F0, BUF, 4 * 256)
    assert r.irqs()[-1] == (14, 1)
    r.status()
    r.rep_outs(0x1F0, BUF + 4 * 512, 2 * 256)
    assert r.status() == OK
    assert file_bytes(img, 40 * 512, 6 * 512) == payload


def test_set_multiple_rejects_bad_counts_and_zero_disables(tmp_path):
    r = Rig.with_file(tmp_path)
    for bad in (3, 32):
        r.out(0x1F2, bad)
        r.command(ata.CMD_SET_MULTIPLE)
        assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR
    r.out(0x1F2, 0)
    r.command(ata.CMD_SET_MULTIPLE)
    assert r.status() == OK
    r.taskfile(0, 1)
    r.command(ata.CMD_READ_MULTIPLE)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR


def test_lba48_read_and_write(tmp_path):
    img = make_image(tmp_path / "l.img", 300)
    r = Rig({(0, 0): RawFileDisk(img)})
    r.taskfile48(260, 2)
    r.command(ata.CMD_READ_EXT)
    got = r.read_block(BUF, 512) + r.read_block(BUF, 512)
    assert got == pattern(300)[260 * 512 : 262 * 512]
    r.devctl(ata.CTRL_HOB)  # HOB: read the high-order bytes of the advanced address
    assert (r.inp(0x1F3), r.inp(0x1F4)) == (0, 0)
    r.devctl(0)
    assert (r.inp(0x1F3), r.inp(0x1F4)) == (262 & 0xFF, 262 >> 8)
    r.poke(BUF, b"\x5a" * 512)
    r.taskfile48(299, 1)
    r.command(ata.CMD_WRITE_EXT)
    r.rep_outs(0x1F0, BUF, 256)
    assert r.status() == OK
    assert file_bytes(img, 299 * 512, 512) == b"\x5a" * 512


def test_lba48_count_zero_means_65536(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.taskfile48(0, 0)
    r.command(ata.CMD_READ_EXT)
    # 65536 sectors from 0 run off a 64-sector disk only at sector 64: reading works first.
    assert r.status() == OK | ata.DRQ_STAT
    assert r.dev.drive(0, 0).nsector == 65535


def test_chs_addressing(tmp_path):
    r = Rig.with_file(tmp_path, 2016 * 2)  # 2 cylinders of 16 heads x 63 sectors
    # cylinder 1, head 2, sector 5 -> LBA (1*16 + 2)*63 + 4
    r.select(0, lba=False, head=2)
    r.out(0x1F2, 1)
    r.out(0x1F3, 5)
    r.out(0x1F4, 1)
    r.out(0x1F5, 0)
    r.command(ata.CMD_READ)
    lba = (1 * 16 + 2) * 63 + 4
    assert r.read_block(BUF, 512) == pattern(4032)[lba * 512 : (lba + 1) * 512]
    r.select(0, lba=False)
    r.out(0x1F2, 1)
    r.out(0x1F3, 0)  # sector numbers start at 1: C/H/S 0/0/0 does not exist
    r.out(0x1F4, 0)
    r.command(ata.CMD_READ)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT


def test_beyond_the_end_sets_idnf_with_interrupt(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.taskfile(63, 2)  # the second sector is past the end
    r.command(ata.CMD_READ_MULTIPLE)
    assert r.irqs() == [(14, 1)]
    assert r.status() == ata.READY_STAT | ata.ERR_STAT
    assert r.error() == ata.IDNF_ERR  # ID not found (QEMU's ide_rw_error says ABRT)
    assert r.inp(0x1F0, 2) == 0xFFFF
    r.taskfile(64, 1)
    r.command(ata.CMD_WRITE)  # a write is checked once its data has arrived
    r.rep_outs(0x1F0, BUF, 256)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.IDNF_ERR
    r.taskfile(63, 1)
    r.command(ata.CMD_READ)  # the device works on afterwards
    assert r.read_block(BUF, 512) == pattern(64)[63 * 512 :]


def test_backend_eio_reports_unc_and_device_lives(tmp_path):
    img = make_image(tmp_path / "bad.img", 16)
    r = Rig({(0, 0): FailingDisk(img, fail_writes=True)})
    r.taskfile(1, 1)
    r.command(ata.CMD_READ)
    assert r.irqs() == [(14, 1)]
    assert r.status() == ata.READY_STAT | ata.ERR_STAT
    assert r.error() == ata.UNC_ERR
    assert r.inp(0x1F0, 2) == 0xFFFF  # no data phase was opened
    r.taskfile(1, 1)
    r.command(ata.CMD_WRITE)
    r.rep_outs(0x1F0, BUF, 256)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR
    r.command(ata.CMD_IDENTIFY)
    assert r.status() == OK | ata.DRQ_STAT  # still answering
    assert not r.dev.failed and r.m.counters["device_failure"] == 0
    assert r.dev.counters["backend_read_error"] == 1


def test_unsupported_commands_abort(tmp_path):
    r = Rig.with_file(tmp_path)
    for cmd in (ata.CMD_NOP, ata.CMD_SMART, ata.CMD_PACKET, ata.CMD_IDENTIFY_PACKET,
                ata.CMD_DEVICE_RESET, ata.CMD_DSM, 0x57, 0xFF):
        r.command(cmd)
        assert r.irqs() == [(14, 1)], hex(cmd)
        assert r.status() == ata.READY_STAT | ata.ERR_STAT, hex(cmd)
        assert r.error() == ata.ABRT_ERR
        r.irqs()


def test_housekeeping_commands(tmp_path):
    img = make_image(tmp_path / "h.img", 100)
    r = Rig({(0, 0): RawFileDisk(img)})
    for cmd in (ata.CMD_FLUSH_CACHE, ata.CMD_FLUSH_CACHE_EXT, ata.CMD_IDLE_IMMEDIATE,
                ata.CMD_STANDBY_NOW1, ata.CMD_STANDBY, ata.CMD_SET_IDLE1, ata.CMD_SLEEP_NOW1,
                ata.CMD_IDLE_IMMEDIATE2, ata.CMD_SEEK, ata.CMD_RECALIBRATE, ata.CMD_SPECIFY,
                ata.CMD_VERIFY, ata.CMD_VERIFY_EXT):
        r.taskfile(0, 1)
        r.command(cmd)
        assert r.irqs() == [(14, 1)], hex(cmd)
        assert r.status() & ~ata.SEEK_STAT == ata.READY_STAT, hex(cmd)
        assert r.irqs() == [(14, 0)]
    r.command(ata.CMD_CHECK_POWER_MODE1)
    assert r.inp(0x1F2) == 0xFF and r.status() == OK
    r.taskfile(0, 1)
    r.command(ata.CMD_READ_NATIVE_MAX)
    assert r.status() == OK
    assert (r.inp(0x1F3), r.inp(0x1F4), r.inp(0x1F5), r.inp(0x1F6) & 0xF) == (99, 0, 0, 0)
    r.taskfile48(0, 1)
    r.command(ata.CMD_READ_NATIVE_MAX_EXT)
    assert r.inp(0x1F3) == 99


def test_commands_are_ignored_while_drq(tmp_path):
    r = Rig.with_file(tmp_path)
    r.taskfile(0, 2)
    r.command(ata.CMD_READ)
    r.out(0x1F3, 0x33)  # task-file writes are dropped while DRQ is set
    r.command(ata.CMD_IDENTIFY)
    assert r.status() == OK | ata.DRQ_STAT
    assert r.read_block(BUF, 512) == pattern(64)[:512]
    assert r.dev.counters["task file write while BSY/DRQ"] == 1


def test_nien_masks_the_interrupt_until_cleared(tmp_path):
    r = Rig.with_file(tmp_path)
    r.devctl(ata.CTRL_NIEN)
    r.command(ata.CMD_CHECK_POWER_MODE1)
    assert r.irqs() == [] and r.irq_level(14) == 0
    assert not r.bm_status() & ata.BM_STATUS_INT
    r.devctl(0)  # the pending interrupt is presented once the mask goes
    assert r.irqs() == [(14, 1)]
    assert r.bm_status() & ata.BM_STATUS_INT
    r.devctl(ata.CTRL_NIEN)
    assert r.irqs() == [(14, 0)]
    r.status()  # acknowledged while masked: nothing left when unmasked
    r.devctl(0)
    assert r.irqs() == []


def test_srst_signature_and_device_selection(tmp_path):
    img0 = make_image(tmp_path / "a.img", 8)
    img1 = make_image(tmp_path / "b.img", 8)
    r = Rig({(0, 0): RawFileDisk(img0), (0, 1): RawFileDisk(img1)})
    r.taskfile(0x123456, 7, unit=1)
    r.devctl(ata.CTRL_SRST | ata.CTRL_NIEN)
    assert r.altstatus() & ata.BUSY_STAT
    r.devctl(ata.CTRL_NIEN)
    for unit in (0, 1):
        r.select(unit, lba=False)
        assert r.status() == OK
        assert r.inp(0x1F1) == 0x01  # diagnostic code: passed
        assert [r.inp(0x1F0 + i) for i in (2, 3, 4, 5)] == [1, 1, 0x00, 0x00]
    assert r.irqs() == []  # nIEN held the diagnostic interrupt back


def test_srst_signature_of_absent_slave(tmp_path):
    r = Rig.with_file(tmp_path)
    r.devctl(ata.CTRL_SRST)
    r.devctl(0)
    assert r.irqs() == [(14, 1)]  # QEMU raises the diagnostic interrupt after SRST
    r.select(1)
    # libata's device check: count/LBA low latch on the bus, status of device 1 reads 0.
    r.out(0x1F2, 0x55)
    r.out(0x1F3, 0xAA)
    assert (r.inp(0x1F2), r.inp(0x1F3)) == (0x55, 0xAA)
    assert r.status() == 0 and r.error() == 0


def test_srst_cancels_a_data_phase(tmp_path):
    r = Rig.with_file(tmp_path)
    r.taskfile(0, 4)
    r.command(ata.CMD_READ)
    r.devctl(ata.CTRL_SRST)
    r.devctl(0)
    assert r.status() == OK
    assert r.inp(0x1F0, 2) == 0xFFFF


def test_byte_and_odd_accesses_are_harmless(tmp_path):
    r = Rig.with_file(tmp_path)
    r.command(ata.CMD_IDENTIFY)
    assert r.inp(0x1F0, 1) == 0xFF  # a byte read of the data port moves nothing
    r.out(0x1F0, 0x12, 1)
    assert r.inp(0x1F0, 2) == 0x0040  # word 0 is still the first word
    assert r.inp(0x1F2, 2) == r.inp(0x1F2) | r.inp(0x1F3) << 8  # wide register reads split
    r.rep_ins(0x1F0, BUF, 255)
    assert not r.status() & ata.DRQ_STAT
    for _ in range(5):
        assert r.inp(0x1F0, 4) == 0xFFFFFFFF


def test_rep_hooks_match_single_accesses(tmp_path):
    """The whole-string hooks offered to the dispatcher return exactly what `count` single
    accesses would, across block boundaries and past the end of the data phase."""
    img = make_image(tmp_path / "x.img", 16)
    a = Rig({(0, 0): RawFileDisk(img)})
    b = Rig({(0, 0): RawFileDisk(img)})
    rng = a.m.pio.find(0x1F0)
    for rig in (a, b):
        rig.taskfile(2, 3)
        rig.command(ata.CMD_READ)
    blob = rng.read_rep(0, 2, 800)  # 1600 bytes: 3 sectors, then 64 words of nothing
    singles = b"".join(b.inp(0x1F0, 2).to_bytes(2, "little") for _ in range(800))
    assert blob == singles
    assert blob[:1536] == pattern(16)[1024:2560] and blob[1536:] == b"\xff" * 64
    for rig in (a, b):
        rig.taskfile(4, 2)
        rig.command(ata.CMD_WRITE)
    data = bytes((i * 5) & 0xFF for i in range(1024))
    rng.write_rep(0, 4, data)
    b.poke(BUF, data)
    b.rep_outs(0x1F0, BUF, 256, size=4)
    assert a.status() == b.status() == OK
    assert file_bytes(img, 4 * 512, 1024) == data


def test_pio_on_the_secondary_channel_both_units(tmp_path):
    """ATA disks on 0x170/0x376 (IRQ 15), master and slave, by 16-bit rep insw/outsw and by
    32-bit data-port accesses; the primary channel's interrupt line stays quiet."""
    imgs = {u: make_image(tmp_path / f"s{u}.img", 32, seed=u + 1) for u in (0, 1)}
    r = Rig({(1, u): RawFileDisk(imgs[u]) for u in (0, 1)})
    for unit in (0, 1):
        r.irqs()
        r.taskfile(4, 2, ch=1, unit=unit)
        r.command(ata.CMD_READ, ch=1)
        assert r.irqs() == [(15, 1)]
        assert r.status(1) == OK | ata.DRQ_STAT
        first = r.read_block(BUF, 512, ch=1)
        assert r.status(1) == OK | ata.DRQ_STAT
        second = b"".join(r.inp(0x170, 4).to_bytes(4, "little") for _ in range(128))  # dword PIO
        assert first + second == pattern(32, seed=unit + 1)[4 * 512 : 6 * 512]
        assert r.status(1) == OK
        data = bytes((unit * 50 + i) & 0xFF for i in range(512))
        r.poke(BUF, data)
        r.taskfile(20, 1, ch=1, unit=unit)
        r.command(ata.CMD_WRITE, ch=1)
        assert r.status(1) == OK | ata.DRQ_STAT
        r.rep_outs(0x170, BUF, 256)
        assert r.status(1) == OK
        assert file_bytes(imgs[unit], 20 * 512, 512) == data
    assert all(irq == 15 for irq, _ in r.irqs())
    assert r.status(0) == 0  # an empty primary channel reads 0
