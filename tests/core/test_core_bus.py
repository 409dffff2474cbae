"""AddressSpace: non-overlapping ranges, declared access sizes, splitting and rejection."""

from __future__ import annotations

import pytest

from devmodel.core.bus import AddressSpace, OverlapError, Range


class Rec:
    def __init__(self, base_value: int = 0):
        self.calls: list[tuple] = []
        self.base = base_value

    def read(self, off, size):
        self.calls.append(("r", off, size))
        return (self.base + off) & ((1 << (8 * size)) - 1)

    def write(self, off, size, value):
        self.calls.append(("w", off, size, value))


def space(limit=0x10000):
    counted: list[str] = []
    events: list[tuple[str, int]] = []
    s = AddressSpace("t", limit, 0, counted.append)
    s.listeners.append(lambda sp, what, r: events.append((what, r.start)))
    return s, counted, events


def rng(start, length, dev, sizes=frozenset({1, 2, 4}), name="r"):
    return Range(start, length, dev.read, dev.write, name, dev, sizes)


@pytest.mark.parametrize("limit", [0x10000, 1 << 64])
def test_overlap_refused_adjacent_allowed(limit):
    s, _, events = space(limit)
    d = Rec()
    s.add(rng(0x100, 0x10, d))
    for start, length in ((0x100, 1), (0x10F, 1), (0xF8, 0x10), (0x108, 0x100), (0xF0, 0x100)):
        with pytest.raises(OverlapError):
            s.add(rng(start, length, d))
    s.add(rng(0x110, 0x10, d))
    s.add(rng(0xF0, 0x10, d))
    assert [r.start for r in s] == [0xF0, 0x100, 0x110]
    assert events == [("add", 0x100), ("add", 0x110), ("add", 0xF0)]


def test_outside_the_space_refused():
    s, _, _ = space()
    with pytest.raises(OverlapError):
        s.add(rng(0xFFF0, 0x20, Rec()))
    with pytest.raises(ValueError):
        Range(0, 0, Rec().read, Rec().write, "empty")


def test_find_and_end_inclusive():
    for limit in (0x10000, 1 << 64):
        s, _, _ = space(limit)
        r = rng(0x200, 8, Rec())
        s.add(r)
        assert r.end == 0x207
        assert s.find(0x200) is r and s.find(0x207) is r
        assert s.find(0x1FF) is None and s.find(0x208) is None


def test_remove_notifies_and_frees_ports():
    s, _, events = space()
    d = Rec()
    r = rng(0x60, 4, d)
    s.add(r)
    s.remove(r)
    assert events[-1] == ("remove", 0x60)
    assert s.find(0x61) is None
    assert s.read(0x60, 1) == 0xFF and d.calls == []
    s.add(rng(0x60, 4, d))  # the place is free again


def test_declared_size_goes_straight_through():
    s, counted, _ = space()
    d = Rec(0x1000)
    s.add(rng(0x10, 8, d))
    assert s.read(0x12, 2) == 0x1002
    s.write(0x14, 4, 0xAABBCCDD)
    assert d.calls == [("r", 2, 2), ("w", 4, 4, 0xAABBCCDD)] and counted == []


def test_wide_access_split_into_the_widest_declared_size():
    s, counted, _ = space(1 << 64)
    d = Rec()
    s.add(rng(0x1000, 16, d, frozenset({1, 2})))
    # reads of 2 bytes at offsets 4, 6, 8, 10 -> values 4, 6, 8, 10 assembled little-endian
    assert s.read(0x1004, 8) == 0x000A_0008_0006_0004
    assert d.calls == [("r", 4, 2), ("r", 6, 2), ("r", 8, 2), ("r", 10, 2)]
    d.calls.clear()
    s.write(0x1000, 4, 0x11223344)
    assert d.calls == [("w", 0, 2, 0x3344), ("w", 2, 2, 0x1122)]
    assert counted == []


def test_byte_only_device_sees_four_bytes():
    s, _, _ = space()
    d = Rec()
    s.add(rng(0x80, 4, d, frozenset({1})))
    s.write(0x80, 4, 0x04030201)
    assert d.calls == [("w", 0, 1, 1), ("w", 1, 1, 2), ("w", 2, 1, 3), ("w", 3, 1, 4)]


def test_narrow_access_counted_and_rejected():
    s, counted, _ = space()
    d = Rec()
    s.add(rng(0x40, 8, d, frozenset({4})))
    assert s.read(0x40, 1) == 0xFF
    assert s.read(0x40, 2) == 0xFFFF
    s.write(0x42, 2, 0x1234)
    assert d.calls == []
    assert len(counted) == 3


def test_access_running_off_the_range_end_reads_ones():
    s, _, _ = space()
    d = Rec()
    s.add(rng(0x40, 4, d))
    assert s.read(0x42, 4) == 0xFFFFFFFF
    s.write(0x43, 2, 0)
    assert d.calls == []


def test_unmapped_reads_ones_writes_dropped():
    s, counted, _ = space(1 << 64)
    assert s.read(0xDEAD0000, 8) == 2**64 - 1
    s.write(0xDEAD0000, 4, 1)
    assert counted == []
