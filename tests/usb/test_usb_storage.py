"""USB mass storage through the UHCI: BOT + SCSI on a real image file, checked against the file."""

from __future__ import annotations

import struct

import pytest
from uhci_driver import IN, OUT, TransferError, UhciDriver

from devmodel.backends.disk import RawFileDisk
from devmodel.usb import UsbMassStorage

ADDR = 2
NSECT = 128


def pattern(nsect: int) -> bytes:
    return b"".join(struct.pack("<I", s) + bytes((s * 3 + i) & 0xFF for i in range(508))
                    for s in range(nsect))


@pytest.fixture
def rig(tmp_path):
    img = tmp_path / "stick.img"
    img.write_bytes(pattern(NSECT))
    disk = RawFileDisk(img)
    msd = UsbMassStorage(disk)
    d = UhciDriver([msd])
    d.reset_port(0)
    d.enumerate(ADDR)
    yield d, msd, img
    disk.close()


_tag = [0x1000]


def cbw(cdb: bytes, length: int, dir_in: bool, tag: int | None = None, lun: int = 0,
        sig: int = 0x43425355) -> bytes:
    if tag is None:
        _tag[0] += 1
        tag = _tag[0]
    return struct.pack("<IIIBBB16s", sig, tag, length, 0x80 if dir_in else 0, lun, len(cdb),
                       cdb.ljust(16, b"\0"))


def command(d, cdb: bytes, length: int = 0, dir_in: bool = True, data: bytes = b""):
    c = cbw(cdb, length, dir_in)
    tag = struct.unpack_from("<I", c, 4)[0]
    d.bulk(ADDR, 2, OUT, c)
    got = b""
    if length:
        if dir_in:
            got = d.bulk(ADDR, 1, IN, length=length)
        else:
            d.bulk(ADDR, 2, OUT, data.ljust(length, b"\0"))
    csw = d.bulk(ADDR, 1, IN, length=13)
    sig, rtag, residue, status = struct.unpack("<IIIB", csw)
    assert sig == 0x53425355 and rtag == tag
    return got, residue, status


def test_descriptors_and_max_lun(rig):
    d, _, _ = rig
    dev = d.get_descriptor(ADDR, 1, 18)
    assert int.from_bytes(dev[8:12], "little") == 0x000146F4
    cfg = d.get_descriptor(ADDR, 2, 32)
    assert cfg[9 + 5 : 9 + 8] == bytes([8, 6, 0x50])
    assert d.control(ADDR, 0xA1, 0xFE, 0, 0, length=1) == b"\0"


def test_inquiry_tur_capacity_sense(rig):
    d, _, _ = rig
    data, residue, status = command(d, bytes([0x12, 0, 0, 0, 36, 0]), 36)
    assert status == 0 and residue == 0
    assert data[8:16] == b"QEMU    " and data[16:32] == b"QEMU HARDDISK   "
    assert command(d, bytes(6))[2] == 0  # TEST UNIT READY
    data, _, status = command(d, bytes([0x25]) + bytes(9), 8)
    assert status == 0 and struct.unpack(">II", data) == (NSECT - 1, 512)
    # unknown opcode -> CHECK CONDITION, then REQUEST SENSE says why
    _, _, status = command(d, bytes([0xEE]) + bytes(5))
    assert status == 1
    data, _, status = command(d, bytes([0x03, 0, 0, 0, 18, 0]), 18)
    assert status == 0 and data[0] == 0x70 and data[2] == 0x05 and data[12] == 0x20
    # MODE SENSE(6) and (10), PREVENT ALLOW, SYNCHRONIZE CACHE
    data, _, status = command(d, bytes([0x1A, 0, 0x3F, 0, 192, 0]), 192)
    assert status == 0 and data[0] + 1 == 4 + 8 + 20 + 12 and data[3] == 8
    data, _, status = command(d, bytes([0x5A, 0x08, 0x08, 0, 0, 0, 0, 0, 64, 0]), 64)
    assert status == 0 and data[8] == 0x08 and data[7] == 0
    assert command(d, bytes([0x1E, 0, 0, 0, 1, 0]))[2] == 0
    assert command(d, bytes([0x35]) + bytes(9))[2] == 0


def test_read_write_round_trip(rig):
    d, _, img = rig
    data, residue, status = command(d, struct.pack(">BBIBHB", 0x28, 0, 5, 0, 4, 0), 4 * 512)
    assert status == 0 and residue == 0
    assert data == pattern(NSECT)[5 * 512 : 9 * 512]
    new = bytes((i * 7) & 0xFF for i in range(3 * 512))
    _, residue, status = command(d, struct.pack(">BBIBHB", 0x2A, 0, 100, 0, 3, 0), 3 * 512,
                                 dir_in=False, data=new)
    assert status == 0 and residue == 0
    assert img.read_bytes()[100 * 512 : 103 * 512] == new
    data, _, _ = command(d, struct.pack(">BBIBHB", 0x28, 0, 100, 0, 3, 0), 3 * 512)
    assert data == new


def test_large_read_streams_through_bounded_buffer(rig):
    d, msd, _ = rig
    data, _, status = command(d, struct.pack(">BBIBHB", 0x28, 0, 0, 0, NSECT, 0), NSECT * 512)
    assert status == 0 and data == pattern(NSECT)
    assert len(msd.rd_buf) <= 64 * 1024


def test_out_of_range_and_residue_cases(rig):
    d, _, _ = rig
    # LBA beyond the end: CHECK CONDITION, padding, full residue
    data, residue, status = command(d, struct.pack(">BBIBHB", 0x28, 0, NSECT, 0, 1, 0), 512)
    assert status == 1 and residue == 512 and data == bytes(512)
    sense, _, _ = command(d, bytes([0x03, 0, 0, 0, 18, 0]), 18)
    assert sense[2] == 5 and sense[12] == 0x21
    # host expects more than INQUIRY returns: padded, residue
    data, residue, status = command(d, bytes([0x12, 0, 0, 0, 36, 0]), 64)
    assert status == 0 and residue == 28 and data[36:] == bytes(28)
    # host expects less than the device wants: phase error
    _, residue, status = command(d, struct.pack(">BBIBHB", 0x28, 0, 0, 0, 2, 0), 512)
    assert status == 2
    # direction mismatch: phase error
    _, _, status = command(d, struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0), 512, dir_in=False)
    assert status == 2
    # the device still works
    assert command(d, bytes(6))[2] == 0


def test_absurd_transfer_length_is_not_allocated(rig):
    d, msd, _ = rig
    c = cbw(bytes([0x12, 0, 0, 0, 36, 0]), 0xFFFFFFFF, True)
    d.bulk(ADDR, 2, OUT, c)
    first = d.bulk(ADDR, 1, IN, length=128)
    assert first[8:16] == b"QEMU    " and first[36:] == bytes(92)
    assert msd.host_left == 0xFFFFFFFF - 128
    # recovery instead of reading 4 GiB of padding
    d.control(ADDR, 0x21, 0xFF, 0, 0)
    assert command(d, bytes(6))[2] == 0


@pytest.mark.parametrize("bad", ["short", "signature", "lun", "cblen"])
def test_invalid_cbw_needs_reset_recovery(rig, bad):
    d, msd, _ = rig
    c = cbw(bytes(6), 0, True)
    if bad == "short":
        c = c[:30]
    elif bad == "signature":
        c = cbw(bytes(6), 0, True, sig=0x12345678)
    elif bad == "lun":
        c = cbw(bytes(6), 0, True, lun=1)
    else:
        c = c[:14] + b"\x11" + c[15:]
    with pytest.raises(TransferError) as e:
        d.bulk(ADDR, 2, OUT, c)
    assert e.value.ctrl & (1 << 22)
    # both endpoints halted; CLEAR_FEATURE alone does not help before the reset (BOT 6.6.1)
    assert d.control(ADDR, 0x82, 0, 0, 0x81, length=2) == b"\x01\x00"
    d.control(ADDR, 0x02, 1, 0, 0x81)
    assert d.control(ADDR, 0x82, 0, 0, 0x81, length=2) == b"\x01\x00"
    # reset recovery: Bulk-Only Mass Storage Reset, then CLEAR_FEATURE(HALT) on both
    d.control(ADDR, 0x21, 0xFF, 0, 0)
    d.control(ADDR, 0x02, 1, 0, 0x81)
    d.control(ADDR, 0x02, 1, 0, 0x02)
    d.toggles[(ADDR, 0x81)] = 0
    d.toggles[(ADDR, 0x02)] = 0
    assert d.control(ADDR, 0x82, 0, 0, 0x02, length=2) == b"\x00\x00"
    assert command(d, bytes(6))[2] == 0
    assert msd.counters


def test_retransmitted_out_packet_is_dropped(rig):
    """A data toggle that does not advance is a retransmission: ACKed, not written twice."""
    d, msd, img = rig
    c = cbw(struct.pack(">BBIBHB", 0x2A, 0, 1, 0, 1, 0), 512, False)
    d.bulk(ADDR, 2, OUT, c)
    chunk = b"\xAA" * 64
    tog = d.toggles[(ADDR, 0x02)]
    d.bulk(ADDR, 2, OUT, chunk)
    d.toggles[(ADDR, 0x02)] = tog  # "lost ACK": send the same packet with the same toggle
    d.bulk(ADDR, 2, OUT, chunk)
    d.bulk(ADDR, 2, OUT, b"\xBB" * (512 - 64))
    csw = d.bulk(ADDR, 1, IN, length=13)
    assert csw[12] == 0
    assert img.read_bytes()[512:1024] == b"\xAA" * 64 + b"\xBB" * 448
    assert msd.counters["OUT toggle mismatch (retransmission dropped)"] == 1


def test_readonly_disk_write_is_data_protect(tmp_path):
    img = tmp_path / "ro.img"
    img.write_bytes(pattern(8))
    disk = RawFileDisk(img, readonly=True)
    d = UhciDriver([UsbMassStorage(disk)])
    d.reset_port(0)
    d.enumerate(ADDR)
    _, residue, status = command(d, struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0), 512, dir_in=False,
                                 data=bytes(512))
    assert status == 1 and residue == 512
    sense, _, _ = command(d, bytes([0x03, 0, 0, 0, 18, 0]), 18)
    assert sense[2] == 7
    data, _, _ = command(d, bytes([0x1A, 0, 0x08, 0, 64, 0]), 64)
    assert data[2] & 0x80
    assert img.read_bytes() == pattern(8)
    disk.close()
