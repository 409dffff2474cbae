"""PIIX3 IDE as a PCI function: identity, BAR4, timing registers, legacy ports, reset."""

from __future__ import annotations

import pytest
from ide_helpers import BMIBA, Rig, make_image

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import ata


def test_identity_matches_qemu_piix3_ide(tmp_path):
    r = Rig.with_file(tmp_path, enable=False)
    assert r.cfg_read(0x00, 2) == 0x8086
    assert r.cfg_read(0x02, 2) == 0x7010
    assert r.cfg_read(0x08, 4) >> 8 == 0x010180  # IDE, legacy mode, bus master
    assert r.cfg_read(0x0E, 1) == 0x00  # header type 0, no multifunction bit on fn 1
    assert r.cfg_read(0x2C, 2) == 0x1AF4 and r.cfg_read(0x2E, 2) == 0x1100
    assert r.cfg_read(0x04, 2) == 0  # COMMAND after reset
    assert r.cfg_read(0x06, 2) == 0x0280  # fast back-to-back, medium DEVSEL
    assert r.cfg_read(0x3D, 1) == 0  # legacy mode: no INTx pin
    assert r.cfg_read(0x20, 4) == 0x1  # BMIBA: I/O BAR type bit


def test_bar4_sizes_as_16_byte_io_and_maps(tmp_path):
    r = Rig.with_file(tmp_path, enable=False)
    r.cfg_write(0x20, 4, 0xFFFFFFFF)
    assert r.cfg_read(0x20, 4) == 0xFFFFFFF1
    for bar in (0x10, 0x14, 0x18, 0x1C, 0x24):
        r.cfg_write(bar, 4, 0xFFFFFFFF)
        assert r.cfg_read(bar, 4) == 0  # legacy mode: BARs 0-3 and 5 do not exist
    r.cfg_write(0x20, 4, BMIBA | 1)
    assert r.inp(BMIBA + 2) == 0xFF  # not decoded while COMMAND.IO is clear
    r.cfg_write(0x04, 2, 0x1)
    assert r.inp(BMIBA + 2) == 0x00


def test_timing_registers_read_back_and_reset(tmp_path):
    r = Rig.with_file(tmp_path, enable=False)
    r.cfg_write(0x40, 4, 0xA307_8000 | 0x0000)
    assert r.cfg_read(0x40, 4) == 0xA3078000
    r.cfg_write(0x44, 1, 0x5A)
    assert r.cfg_read(0x44, 1) == 0x5A
    r.m.reset()
    assert r.cfg_read(0x40, 4) == 0 and r.cfg_read(0x44, 1) == 0


def test_legacy_ports_are_fixed_and_claimed(tmp_path):
    r = Rig.with_file(tmp_path)
    claimed = {(t, s, e) for t, s, e in r.m.claimed()}
    for start, end in ((0x1F0, 0x1F7), (0x3F6, 0x3F6), (0x170, 0x177), (0x376, 0x376)):
        assert any(s == start and e == end for _, s, e in claimed), hex(start)
    assert r.inp(0x3F7) == 0xFF  # 0x3F7 belongs to the floppy controller, not to us


def test_empty_channel_reads_zero(tmp_path):
    r = Rig.with_file(tmp_path)  # disk on channel 0 only
    for reg in range(1, 8):
        assert r.inp(0x170 + reg) == 0
    assert r.altstatus(1) == 0


def test_irq_lines_are_isa_14_and_15(tmp_path):
    img0 = make_image(tmp_path / "a.img", 8)
    img1 = make_image(tmp_path / "b.img", 8)
    r = Rig({(0, 0): RawFileDisk(img0), (1, 0): RawFileDisk(img1)})
    r.command(ata.CMD_CHECK_POWER_MODE1, ch=0)
    assert r.irqs() == [(14, 1)]
    r.command(ata.CMD_CHECK_POWER_MODE1, ch=1)
    assert r.irqs() == [(15, 1)]
    r.status(0)
    r.status(1)
    assert r.irqs() == [(14, 0), (15, 0)]


def test_bus_master_register_widths(tmp_path):
    r = Rig.with_file(tmp_path)
    r.out(BMIBA + 4, 0x12345677, 4)
    assert r.inp(BMIBA + 4, 4) == 0x12345674  # dword aligned
    r.out(BMIBA + 6, 0xABCD, 2)
    assert r.inp(BMIBA + 4, 4) == 0xABCD5674
    assert r.inp(BMIBA + 5, 1) == 0x56
    assert r.inp(BMIBA, 2) == 0xFFFF  # command/status take byte accesses only
    assert r.inp(BMIBA + 1) == 0xFF
    r.out(BMIBA + 2, 0x60)  # drive DMA-capable bits are plain R/W
    assert r.bm_status() == 0x60
    r.out(BMIBA + 2, 0x00)
    assert r.bm_status() == 0x00
    r.out(BMIBA + 8 + 4, 0x1000, 4)  # secondary channel's own pointer
    assert r.inp(BMIBA + 12, 4) == 0x1000 and r.inp(BMIBA + 4, 4) == 0xABCD5674


def test_bmdma_stop_on_channel_without_drive_only_touches_bits(tmp_path):
    """CVE-2020-25743: start/stop on an empty channel must be harmless."""
    r = Rig.with_file(tmp_path)
    for _ in range(3):
        r.bm_start(True, ch=1)
        assert r.bm_status(1) & ata.BM_STATUS_ACTIVE
        r.bm_stop(ch=1)
        assert not r.bm_status(1) & ata.BM_STATUS_ACTIVE
    assert not r.dev.failed


def test_build_ide_registers_backends_for_flush_and_close(tmp_path):
    r = Rig.with_file(tmp_path)
    disk = r.dev.drive(0, 0).backend
    assert r.m.backends == [disk]
    r.m.close_backends()
    assert r.m.backends == []
    with pytest.raises(OSError):
        disk.read_into(0, [bytearray(1)])


def test_no_disks_at_all(tmp_path):
    r = Rig({})
    assert r.cfg_read(0x00, 4) == 0x70108086
    assert r.status(0) == 0 and r.status(1) == 0
    r.command(ata.CMD_IDENTIFY)  # an absent device 0 aborts (QEMU: no blk -> abort)
    assert r.inp(0x1F0, 2) == 0xFFFF and not r.dev.failed
