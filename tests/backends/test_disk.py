"""RawFileDisk against real files: scatter reads into memoryviews, writes, EOF, read-only."""

from __future__ import annotations

import errno
import os

import pytest

from devmodel.backends.disk import IOV_MAX, RawFileDisk


def image(tmp_path, n=8192):
    p = tmp_path / "img"
    p.write_bytes(bytes(i & 0xFF for i in range(n)))
    return p


def test_read_into_scattered_views(tmp_path):
    d = RawFileDisk(image(tmp_path))
    ram = bytearray(4096)
    mv = memoryview(ram)
    d.read_into(100, [mv[0:10], mv[1000:1300], mv[4000:4096]])
    expect = bytes(i & 0xFF for i in range(100, 100 + 406))
    assert ram[0:10] + ram[1000:1300] + ram[4000:4096] == expect
    assert ram[10:1000] == bytes(990)
    assert d.size == 8192
    d.close()


def test_read_past_end_reads_zeros(tmp_path):
    d = RawFileDisk(image(tmp_path, 1000))
    buf = bytearray(b"\xee" * 100)
    d.read_into(950, [buf])
    assert buf[:50] == bytes(i & 0xFF for i in range(950, 1000)) and buf[50:] == bytes(50)


def test_write_from_and_flush(tmp_path):
    p = image(tmp_path)
    d = RawFileDisk(p)
    d.write_from(512, [b"\x01" * 3, memoryview(bytearray(b"\x02" * 5)), bytearray(b"\x03")])
    d.flush()
    assert p.read_bytes()[512:521] == b"\x01\x01\x01\x02\x02\x02\x02\x02\x03"
    d.close()


def test_more_views_than_iov_max(tmp_path):
    p = image(tmp_path, 3 * IOV_MAX)
    d = RawFileDisk(p)
    ram = bytearray(3 * IOV_MAX)
    views = [memoryview(ram)[i : i + 3] for i in range(0, len(ram), 3)]
    d.read_into(0, views)
    assert ram == p.read_bytes()
    d.write_from(0, [memoryview(b"\x07" * 2)] * (IOV_MAX + 5))
    assert p.read_bytes()[: 2 * (IOV_MAX + 5)] == b"\x07" * (2 * (IOV_MAX + 5))


def test_readonly(tmp_path):
    p = image(tmp_path)
    d = RawFileDisk(p, readonly=True)
    with pytest.raises(OSError) as e:
        d.write_from(0, [b"x"])
    assert e.value.errno == errno.EROFS
    buf = bytearray(4)
    d.read_into(4, [buf])
    assert buf == b"\x04\x05\x06\x07"
    d.flush()  # nothing to do, no error
    assert d.discard(0, 4096) is False


def test_from_fd_and_close(tmp_path):
    fd = os.open(image(tmp_path), os.O_RDWR)
    d = RawFileDisk.from_fd(fd)
    assert d.size == 8192
    d.close()
    d.close()  # idempotent
    with pytest.raises(OSError):
        d.read_into(0, [bytearray(1)])
    with pytest.raises(ValueError):
        RawFileDisk()


def test_discard_keeps_size_and_reads_zeros(tmp_path):
    p = image(tmp_path, 1 << 16)
    d = RawFileDisk(p)
    if d.discard(4096, 8192):
        buf = bytearray(8192)
        d.read_into(4096, [buf])
        assert buf == bytes(8192)
    assert os.path.getsize(p) == 1 << 16 and d.size == 1 << 16
