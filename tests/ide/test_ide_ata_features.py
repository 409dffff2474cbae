"""The ATA remainder: DATA SET MANAGEMENT (TRIM) by DMA and PIO, SMART basics, INITIALIZE
DEVICE PARAMETERS with CHS translation, and the geometry handed to the CMOS."""

from __future__ import annotations

import struct

import pytest
from ide_helpers import Rig, file_bytes, make_image, pattern, words

from devmodel.backends.disk import RawFileDisk
from devmodel.bios.rtc import CmosConfig, Rtc
from devmodel.ide import ata
from devmodel.ide.drive import SMART_ATTRIBUTES

OK = ata.READY_STAT | ata.SEEK_STAT
BUF = 0x20000
ERR = ata.READY_STAT | ata.ERR_STAT


def dsm_entries(*ranges: tuple[int, int]) -> bytes:
    raw = b"".join(struct.pack("<Q", lba | count << 48) for lba, count in ranges)
    return raw.ljust(512, b"\0")


def dsm_dma(r: Rig, payload: bytes, blocks: int = 1) -> None:
    r.poke(0x30000, payload)
    r.prd_table(0x1000, [(0x30000, len(payload))])
    r.bm_setup(0x1000, to_memory=False)
    r.taskfile48(0, blocks)
    r.out(0x1F1, 0)
    r.out(0x1F1, ata.DSM_TRIM)
    r.command(ata.CMD_DSM)
    r.bm_start(to_memory=False)


# ---- TRIM ---------------------------------------------------------------------------------
def test_trim_by_dma_punches_holes(tmp_path):
    img = make_image(tmp_path / "t.img", 256)
    r = Rig({(0, 0): RawFileDisk(img)})
    dsm_dma(r, dsm_entries((16, 8), (0, 0), (100, 20)))
    assert r.irqs()[-1] == (14, 1)
    assert r.status() == OK and r.bm_status() & ata.BM_STATUS_INT
    assert file_bytes(img, 16 * 512, 8 * 512) == bytes(8 * 512)
    assert file_bytes(img, 100 * 512, 20 * 512) == bytes(20 * 512)
    assert file_bytes(img, 15 * 512, 512) == pattern(256)[15 * 512 : 16 * 512]
    assert file_bytes(img, 24 * 512, 76 * 512) == pattern(256)[24 * 512 : 100 * 512]
    assert file_bytes(img, 120 * 512, 512) == pattern(256)[120 * 512 : 121 * 512]


def test_trim_by_pio(tmp_path):
    img = make_image(tmp_path / "t.img", 64)
    r = Rig({(0, 0): RawFileDisk(img)})
    r.poke(BUF, dsm_entries((8, 4)))
    r.taskfile48(0, 1)
    r.out(0x1F1, ata.DSM_TRIM)
    r.command(ata.CMD_DSM)
    assert r.altstatus() & ata.DRQ_STAT
    r.rep_outs(0x1F0, BUF, 256)
    assert r.status() == OK
    assert file_bytes(img, 8 * 512, 4 * 512) == bytes(4 * 512)
    assert file_bytes(img, 12 * 512, 512) == pattern(64)[12 * 512 : 13 * 512]
    r.bm_start(to_memory=False)  # the DMA path closed when the PIO data arrived
    assert r.status() == OK and file_bytes(img, 0, 512) == pattern(64)[:512]


@pytest.mark.parametrize("setup", ["out_of_range", "zero_blocks", "too_many", "no_trim_bit",
                                   "read_only"])
def test_bad_dsm_aborts(tmp_path, setup):
    img = make_image(tmp_path / "t.img", 64)
    r = Rig({(0, 0): RawFileDisk(img, readonly=setup == "read_only")})
    entries = dsm_entries((60, 8)) if setup == "out_of_range" else dsm_entries((1, 1))
    blocks = {"zero_blocks": 0, "too_many": 9}.get(setup, 1)
    r.poke(0x30000, entries)
    r.prd_table(0x1000, [(0x30000, 512)])
    r.bm_setup(0x1000, to_memory=False)
    r.taskfile48(0, blocks)
    r.out(0x1F1, 0 if setup == "no_trim_bit" else ata.DSM_TRIM)
    r.command(ata.CMD_DSM)
    r.bm_start(to_memory=False)
    assert r.status() == ERR and r.error() == ata.ABRT_ERR
    assert file_bytes(img, 0, 64 * 512) == pattern(64)  # nothing was discarded


def test_trim_is_advertised_only_when_writable(tmp_path):
    img = make_image(tmp_path / "t.img", 64)
    w = words(Rig({(0, 0): RawFileDisk(img)}).identify())
    assert w[169] == 1 and w[105] == 8
    w = words(Rig({(0, 0): RawFileDisk(img, readonly=True)}).identify())
    assert w[169] == 0 and w[105] == 0


# ---- SMART --------------------------------------------------------------------------------
def smart(r: Rig, feature: int, key: bool = True, sector: int = 0) -> None:
    r.select(0)
    r.out(0x1F1, feature)
    r.out(0x1F3, sector)
    r.out(0x1F4, ata.SMART_LCYL if key else 0)
    r.out(0x1F5, ata.SMART_HCYL if key else 0)
    r.command(ata.CMD_SMART)


def test_smart_status_data_and_thresholds(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    smart(r, ata.SMART_STATUS)
    assert r.status() == OK and (r.inp(0x1F4), r.inp(0x1F5)) == (0x4F, 0xC2)
    for feature, threshold in ((ata.SMART_READ_DATA, False), (ata.SMART_READ_THRESH, True)):
        smart(r, feature)
        assert r.status() == OK | ata.DRQ_STAT
        page = r.read_block(BUF, 512)
        assert sum(page) & 0xFF == 0 and page[0] == 1
        for n, attr in enumerate(SMART_ATTRIBUTES):
            entry = page[2 + 12 * n : 2 + 12 * n + 12]
            if threshold:
                assert entry[:2] == bytes((attr[0], attr[11]))
            else:
                assert entry[:11] == bytes(attr[:11])
        assert r.status() == OK


def test_smart_enable_disable_and_identify(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    smart(r, ata.SMART_DISABLE)
    assert r.status() == OK and not words(r.identify())[85] & 1
    smart(r, ata.SMART_STATUS)
    assert r.status() == ERR and r.error() == ata.ABRT_ERR  # disabled: only ENABLE works
    smart(r, ata.SMART_ENABLE)
    assert r.status() == OK and words(r.identify())[85] & 1
    smart(r, ata.SMART_ATTR_AUTOSAVE, sector=0x00)
    smart(r, ata.SMART_READ_DATA)
    assert r.read_block(BUF, 512)[362] == 0x02
    smart(r, ata.SMART_ATTR_AUTOSAVE, sector=0x17)
    assert r.status() == ERR


def test_smart_without_key_or_with_logs_aborts(tmp_path):
    """hostile-guest-catalog entry 6 (CVE-2014-2894): no self-test log to overflow; the
    offline/self-test and log subcommands abort, however often they are issued."""
    r = Rig.with_file(tmp_path, 64)
    smart(r, ata.SMART_STATUS, key=False)
    assert r.status() == ERR and r.error() == ata.ABRT_ERR
    for _ in range(100):
        for f in (ata.SMART_EXECUTE_OFFLINE, ata.SMART_READ_LOG, ata.SMART_SAVE_ATTR, 0x00, 0xFF):
            smart(r, f)
            assert r.status() == ERR and r.error() == ata.ABRT_ERR
    assert r.inp(0x1F0, 2) == 0xFFFF and not r.dev.failed


# ---- CHS translation ----------------------------------------------------------------------
def chs_read(r: Rig, c: int, h: int, s: int) -> None:
    r.select(0, lba=False, head=h)
    r.out(0x1F2, 1)
    r.out(0x1F3, s)
    r.out(0x1F4, c & 0xFF)
    r.out(0x1F5, c >> 8)
    r.command(ata.CMD_READ)


def specify(r: Rig, heads: int, sectors: int) -> None:
    r.select(0, lba=False, head=heads - 1)
    r.out(0x1F2, sectors)
    r.command(ata.CMD_SPECIFY)


def test_initialize_device_parameters_changes_chs_reads(tmp_path):
    r = Rig.with_file(tmp_path, 512)
    chs_read(r, 0, 1, 1)  # default 16/63: head 1 sector 1 = LBA 63
    assert r.read_block(BUF, 512) == pattern(512)[63 * 512 : 64 * 512]
    specify(r, 4, 32)
    assert r.status() == OK
    chs_read(r, 1, 2, 5)  # (1 * 4 + 2) * 32 + 4 = LBA 196
    assert r.read_block(BUF, 512) == pattern(512)[196 * 512 : 197 * 512]
    # The next address in the registers follows the new translation: C/H/S 1/2/6.
    assert (r.inp(0x1F3), r.inp(0x1F4), r.inp(0x1F6) & 0xF) == (6, 1, 2)
    w = words(r.identify())
    assert (w[54], w[55], w[56]) == (512 // 128, 4, 32) and w[57] == 512 and w[53] & 1
    chs_read(r, 0, 4, 1)  # head 4 does not exist under 4 heads
    assert r.status() == ERR and r.error() == ata.IDNF_ERR


def test_zero_sectors_per_track_is_an_invalid_translation(tmp_path):
    """Never divide by a guest-chosen geometry (hostile-guest-catalog entry 5)."""
    r = Rig.with_file(tmp_path, 64)
    specify(r, 16, 0)
    assert r.status() == OK
    chs_read(r, 0, 0, 1)
    assert r.status() == ERR and r.error() == ata.IDNF_ERR
    w = words(r.identify())
    assert not w[53] & 1 and w[54:59] == [0] * 5
    r.taskfile(3, 1)
    r.command(ata.CMD_READ)  # LBA still works
    assert r.read_block(BUF, 512) == pattern(64)[3 * 512 : 4 * 512]
    r.select(0, lba=False)
    r.out(0x1F2, 1)
    r.command(ata.CMD_READ_NATIVE_MAX)  # set_sector under no translation: no division
    assert r.status() == OK and not r.dev.failed


def test_revert_to_defaults_at_reset(tmp_path):
    r = Rig.with_file(tmp_path, 512)
    specify(r, 4, 32)
    r.devctl(ata.CTRL_SRST)
    r.devctl(0)
    chs_read(r, 1, 2, 5)
    assert r.read_block(BUF, 512) == pattern(512)[196 * 512 : 197 * 512]  # kept over SRST
    r.out(0x1F1, ata.FEAT_REVERT_ON)
    r.command(ata.CMD_SET_FEATURES)
    r.devctl(ata.CTRL_SRST)
    r.devctl(0)
    chs_read(r, 0, 1, 1)
    assert r.read_block(BUF, 512) == pattern(512)[63 * 512 : 64 * 512]  # back to 16/63


# ---- CMOS ---------------------------------------------------------------------------------
def test_cmos_geometry_for_the_rtc(tmp_path):
    small = make_image(tmp_path / "a.img", 64)
    big = tmp_path / "b.img"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # 2 GiB: 4161 cylinders of 16/63, more than INT 13h's 1024
    r = Rig({(0, 0): RawFileDisk(small), (1, 1): RawFileDisk(big)})
    geo = r.dev.cmos_hd_geometry()
    assert geo == [(0, 2, 16, 63, 0), (3, 4161, 16, 63, 1)]
    rtc = Rtc(0, CmosConfig(ram_size=128 << 20, boot_order="c", nr_cpus=1, below_4g=128 << 20))
    for drive, c, h, s, trans in geo:
        rtc.set_hd_geometry(drive, c, h, s, trans)
    assert rtc.get_byte(0x12) == 0xF0 and rtc.get_byte(0x19) == 47
    assert rtc.get_byte(0x1B) == 2 and rtc.get_byte(0x1D) == 16 and rtc.get_byte(0x23) == 63
    assert rtc.get_byte(0x39) == 1 << 6  # drive 3: LBA translation
