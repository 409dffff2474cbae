"""IDENTIFY DEVICE as SeaBIOS and libata parse it, read through the data port."""

from __future__ import annotations

import struct

from ide_helpers import Rig, ata_string, make_image, words

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import ata
from devmodel.ide.identify import guess_geometry


def test_identify_words(tmp_path):
    nsectors = 20480  # 10 MiB
    r = Rig.with_file(tmp_path, nsectors)
    page = r.identify()
    w = words(page)
    cyls = nsectors // (16 * 63)
    assert w[0] == 0x0040
    assert (w[1], w[3], w[6]) == (cyls, 16, 63)
    assert ata_string(page, 10, 19) == "QM00001"
    assert ata_string(page, 23, 26) == "2.5+"
    assert ata_string(page, 27, 46) == "QEMU HARDDISK"
    assert page[54:56] == b"EQ"  # byte-swapped within each word, as ATA strings are
    assert w[47] == 0x8010  # READ/WRITE MULTIPLE up to 16
    assert w[49] & (1 << 9) and w[49] & (1 << 8)  # LBA, DMA
    assert w[53] & 0x7 == 0x7
    assert (w[54], w[55], w[56]) == (cyls, 16, 63)
    assert w[57] | w[58] << 16 == cyls * 16 * 63
    assert w[59] == 0x110  # multiple setting valid, 16 sectors
    assert w[60] | w[61] << 16 == nsectors
    assert w[63] & 0x7 == 0x7 and w[64] == 0x3 and w[88] & 0x3F == 0x3F
    assert w[83] == (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10)  # FLUSH EXT, FLUSH, LBA48
    assert w[86] == (1 << 13) | (1 << 12) | (1 << 10)
    assert w[85] & (1 << 5)  # write cache enabled
    assert w[82] & 1 and w[85] & 1  # SMART supported and enabled
    assert not w[84] & 3 and not w[87] & 3  # but no self-test or error log
    assert w[169] == 1 and w[105] == 8 and w[69] & (1 << 14)  # TRIM, up to 8 blocks
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == nsectors
    # The data phase is over: DRQ clear, and no interrupt for the end of an IDENTIFY block.
    assert r.status() == ata.READY_STAT | ata.SEEK_STAT


def test_identify_large_disk_caps_lba28_and_chs(tmp_path):
    img = tmp_path / "big.img"
    nsectors = (1 << 28) + 4096  # 128 GiB + 2 MiB, sparse
    with open(img, "wb") as f:
        f.truncate(nsectors * 512)
    r = Rig({(0, 0): RawFileDisk(img)})
    w = words(r.identify())
    assert w[60] | w[61] << 16 == (1 << 28) - 1
    assert w[100] | w[101] << 16 | w[102] << 32 == nsectors
    assert (w[1], w[3], w[6]) == (16383, 16, 63)


def test_identify_with_dword_pio(tmp_path):
    r = Rig.with_file(tmp_path)
    r.command(ata.CMD_IDENTIFY)
    dwords = [r.inp(0x1F0, 4) for _ in range(128)]
    page = struct.pack("<128I", *dwords)
    assert ata_string(page, 27, 46) == "QEMU HARDDISK"
    assert not r.status() & ata.DRQ_STAT
    assert r.inp(0x1F0, 2) == 0xFFFF  # no data phase: all-ones, nothing moves


def test_identify_slave_and_absent_slave(tmp_path):
    img0 = make_image(tmp_path / "a.img", 8)
    img1 = make_image(tmp_path / "b.img", 16)
    r = Rig({(0, 0): RawFileDisk(img0), (0, 1): RawFileDisk(img1)})
    w = words(r.identify(unit=1))
    assert w[60] == 16
    assert ata_string(r.identify(unit=1), 10, 19) == "QM00002"
    r2 = Rig.with_file(tmp_path, 8)
    r2.select(1)
    r2.command(ata.CMD_IDENTIFY)  # ignored: there is no device 1
    assert r2.status() == 0 and r2.error() == 0 and r2.irqs() == []
    r2.select(0)
    assert r2.status() == ata.READY_STAT | ata.SEEK_STAT


def test_set_features_transfer_mode_and_write_cache(tmp_path):
    r = Rig.with_file(tmp_path)
    r.out(0x1F1, ata.FEAT_XFER_MODE)
    r.out(0x1F2, 0x22)  # multiword DMA mode 2
    r.command(ata.CMD_SET_FEATURES)
    assert r.status() == ata.READY_STAT | ata.SEEK_STAT
    w = words(r.identify())
    assert w[63] == 0x0407 and w[62] == 0x07 and w[88] == 0x3F
    r.out(0x1F1, ata.FEAT_XFER_MODE)
    r.out(0x1F2, 0x45)  # UDMA 5
    r.command(ata.CMD_SET_FEATURES)
    assert words(r.identify())[88] == 0x203F
    r.out(0x1F1, ata.FEAT_WCACHE_OFF)
    r.command(ata.CMD_SET_FEATURES)
    assert r.status() & ata.ERR_STAT == 0
    assert not words(r.identify())[85] & (1 << 5)
    r.out(0x1F1, ata.FEAT_WCACHE_ON)
    r.command(ata.CMD_SET_FEATURES)
    assert words(r.identify())[85] & (1 << 5)
    r.out(0x1F1, 0x31)  # not a subcommand we know
    r.command(ata.CMD_SET_FEATURES)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR


def test_geometry_from_partition_table(tmp_path):
    nsectors = 8 * 32 * 100
    mbr = bytearray(512)
    # One partition ending at head 7, sector 32: written with an 8-head, 32-sector geometry.
    mbr[0x1BE:0x1CE] = bytes((0x80, 1, 1, 0, 0x83, 7, 32, 99)) + struct.pack("<II", 32, 25568)
    mbr[510:512] = b"\x55\xaa"
    g = guess_geometry(nsectors, bytes(mbr))
    assert (g.cylinders, g.heads, g.sectors) == (100, 8, 32)
    img = tmp_path / "mbr.img"
    img.write_bytes(bytes(mbr) + bytes(512 * (nsectors - 1)))
    r = Rig({(0, 0): RawFileDisk(img)})
    w = words(r.identify())
    assert (w[1], w[3], w[6]) == (100, 8, 32)
    # A table written under BIOS LBA translation (255 heads) gives the standard geometry.
    mbr[0x1BE + 5] = 254
    mbr[0x1BE + 6] = 63
    assert guess_geometry(nsectors * 100, bytes(mbr)).heads == 16
    assert guess_geometry(100).cylinders == 2  # tiny disks still get 2 cylinders
