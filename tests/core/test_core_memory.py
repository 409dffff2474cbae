"""GuestMemory: bounds, regions, read-only mappings, dirty log, fd-backed regions."""

from __future__ import annotations

import os

import pytest

from devmodel.core.memory import MAX_SPAN_REGIONS, GuestMemory, MemoryLayoutError
from devmodel.wire.constants import MEM_RAM, MEM_READONLY


def memfd(size: int, fill: bytes = b"") -> int:
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    if fill:
        os.pwrite(fd, fill, 0)
    return fd


def test_fake_bounds():
    m = GuestMemory.fake(0x2000)
    assert m.write(0x1FFC, b"abcd")
    assert m.read(0x1FFC, 4) == b"abcd"
    assert m.read(0x1FFD, 4) is None
    assert not m.write(0x1FFD, b"abcd")
    assert m.read(0x2000, 1) is None
    assert m.read_int(-1, 1) is None
    assert m.views(0, -1) is None
    assert m.read(0, 0) == b""


def test_int_helpers():
    m = GuestMemory.fake(0x1000)
    assert m.write_int(0x10, 2, 0x1FFFF)  # truncated to size
    assert m.read(0x10, 3) == b"\xff\xff\x00"
    assert m.write_u32(0x20, 0xDEADBEEF) and m.read_u32(0x20) == 0xDEADBEEF
    m.write(0x30, (0x1122334455667788).to_bytes(8, "little"))
    assert m.read_u64(0x30) == 0x1122334455667788
    assert m.read_u32(0xFFE) is None and not m.write_u32(0xFFE, 0)


def test_access_spanning_two_regions_and_a_gap():
    m = GuestMemory()
    a, b = bytearray(0x1000), bytearray(0x1000)
    m.add_buffer(0, 0x0, a)
    m.add_buffer(1, 0x1000, b)
    m.add_buffer(2, 0x3000, bytearray(0x1000))  # gap at 0x2000
    assert m.write(0xFFE, b"WXYZ")
    assert a[-2:] == b"WX" and b[:2] == b"YZ"
    assert m.read(0xFFE, 4) == b"WXYZ"
    assert m.read(0x1FFE, 4) is None  # runs into the gap
    assert not m.write(0x1FFE, b"1234")
    assert m.is_ram(0x3000, 0x1000) and not m.is_ram(0x2FFF, 2)


def test_span_bound():
    m = GuestMemory()
    for i in range(MAX_SPAN_REGIONS + 2):
        m.add_buffer(i, i * 16, bytearray(16))
    assert m.read(0, 16 * MAX_SPAN_REGIONS) is not None
    assert m.read(0, 16 * MAX_SPAN_REGIONS + 1) is None


def test_layout_errors_and_generation():
    m = GuestMemory()
    g0 = m.generation
    m.add_buffer(0, 0x1000, bytearray(0x1000))
    with pytest.raises(MemoryLayoutError):
        m.add_buffer(1, 0x1800, bytearray(0x1000))
    with pytest.raises(MemoryLayoutError):
        m.add_buffer(1, 0x0, bytearray(0x1001))
    with pytest.raises(MemoryLayoutError):
        m.add_buffer(0, 0x9000, bytearray(0x10))  # duplicate id
    m.add_buffer(1, 0x2000, bytearray(0x10))
    assert [r.region_id for r in m.regions] == [0, 1]
    m.invalidate()
    m.remove(0)
    assert m.read(0x1000, 1) is None
    with pytest.raises(MemoryLayoutError):
        m.remove(0)
    assert m.generation == g0 + 4


def test_fd_region_shared_with_the_fd_and_owned():
    fd = memfd(0x3000, b"hello")
    m = GuestMemory()
    m.add_fd(5, 0x10000, 0x2000, fd, 0x1000, MEM_RAM)
    os.pwrite(fd, b"\x42", 0x1000)
    assert m.read(0x10000, 1) == b"\x42"
    assert m.write(0x10001, b"!")
    assert os.pread(fd, 2, 0x1000) == b"\x42!"
    m.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # the region owned (and closed) the fd


def test_readonly_region():
    fd = memfd(0x1000, b"rom!")
    m = GuestMemory()
    m.add_fd(0, 0xF0000, 0x1000, fd, 0, MEM_RAM | MEM_READONLY)
    assert m.read(0xF0000, 4) == b"rom!"
    assert not m.write(0xF0000, b"RAM?")
    assert not m.write_int(0xF0000, 1, 0)
    assert m.read(0xF0000, 4) == b"rom!"
    m.close()


@pytest.mark.parametrize(
    "gpa, size, off, fdsize",
    [(0, 0x2000, 0, 0x1000), (0, 0x1000, 0x800, 0x2000), (0, 0, 0, 0x1000), (-4096, 0x1000, 0, 0x1000)],
)
def test_fd_region_refused(gpa, size, off, fdsize):
    fd = memfd(fdsize)
    try:
        with pytest.raises(MemoryLayoutError):
            GuestMemory().add_fd(0, gpa, size, fd, off, MEM_RAM)
    finally:
        os.close(fd)


def test_dirty_log():
    m = GuestMemory.fake(0x4000)
    m.write(0x10, b"x")
    assert m.dirty_log is None
    m.dirty_log = set()
    m.write(0xFFF, b"ab")  # straddles pages 0 and 1
    m.write_int(0x3000, 4, 1)
    assert m.dirty_log == {0, 1, 3}
    assert not m.write(0x3FFF, b"ab")  # failed write marks nothing
    m.write(0x2000, b"")  # empty write marks nothing
    assert m.dirty_log == {0, 1, 3}
    m.mark_dirty(0x2000, 0x1001)
    assert m.dirty_log == {0, 1, 2, 3}
