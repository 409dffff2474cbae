"""RegisterFile: masks, write-1-to-clear, partial and unaligned access, holes (design rule 3)."""

from __future__ import annotations

import pytest

from devmodel.core.regs import Reg, RegisterFile


def make(**kw):
    holes: list[str] = []
    writes: list[tuple[str, int, int]] = []
    reads: list[str] = []

    def on_write(name):
        return lambda old, new: writes.append((name, old, new))

    def on_read(name):
        def f(v):
            reads.append(name)
            return v
        return f

    rf = RegisterFile(
        [
            Reg("ctrl", 0x00, 4, reset=0x12345678, wmask=0x0000FFFF, on_write=on_write("ctrl")),
            Reg("status", 0x04, 2, reset=0x0001, wmask=0x0000, w1c=0x00F0),
            Reg("lo", 0x08, 2, reset=0xBBAA, on_read=on_read("lo")),
            Reg("hi", 0x0A, 2, reset=0xDDCC, on_read=on_read("hi")),
            Reg("byte", 0x0C, 1, reset=0x5A),
            # 0x0D-0x0F: hole
            Reg("mixed", 0x10, 4, wmask=0xFFFF0000, w1c=0x000000FF),
        ],
        on_hole=holes.append, **kw,
    )
    return rf, holes, writes, reads


def test_reset_values():
    rf, *_ = make()
    assert rf["ctrl"] == 0x12345678 and rf["status"] == 1 and rf["byte"] == 0x5A


def test_full_width_write_respects_wmask_and_calls_handler_once():
    rf, holes, writes, _ = make()
    rf.write(0, 4, 0xFFFFFFFF)
    assert rf["ctrl"] == 0x1234FFFF
    assert writes == [("ctrl", 0x12345678, 0x1234FFFF)]
    assert holes == []


def test_byte_write_to_top_byte_only_touches_that_lane():
    rf, _, writes, _ = make()
    rf.write(1, 1, 0x00)  # byte 1 is writable
    assert rf["ctrl"] == 0x12340078
    rf.write(3, 1, 0xFF)  # byte 3 is read-only
    assert rf["ctrl"] == 0x12340078
    assert len(writes) == 2  # the handler still sees the (no-op) write


def test_partial_reads():
    rf, *_ = make()
    assert rf.read(0, 1) == 0x78
    assert rf.read(1, 2) == 0x3456
    assert rf.read(3, 1) == 0x12
    assert rf.read(2, 2) == 0x1234


def test_unaligned_read_spanning_two_registers_reads_each_once():
    rf, holes, _, reads = make()
    assert rf.read(0x09, 4) == 0x5ADDCCBB  # lo[1], hi[0], hi[1], byte
    assert reads == ["lo", "hi"]
    assert holes == []


def test_unaligned_write_spanning_two_registers():
    rf, *_ = make()
    rf.write(0x09, 2, 0x2211)  # lo high byte = 0x11, hi low byte = 0x22
    assert rf["lo"] == 0x11AA and rf["hi"] == 0xDD22


def test_w1c_clears_only_written_ones_and_ignores_plain_writes():
    rf, *_ = make()
    rf["status"] = 0x00F5  # device side sets status bits
    rf.write(4, 2, 0x0010)
    assert rf["status"] == 0x00E5
    rf.write(4, 2, 0x000E)  # non-w1c bits are read-only (wmask 0)
    assert rf["status"] == 0x00E5
    rf.write(4, 2, 0xFFFF)
    assert rf["status"] == 0x0005


def test_w1c_respects_byte_lanes():
    rf, *_ = make()
    rf["mixed"] = 0x000000FF
    rf.write(0x11, 1, 0xFF)  # lane 1 holds no w1c bits: lane 0 must survive
    assert rf["mixed"] == 0x000000FF
    rf.write(0x12, 2, 0xBEEF)  # writable upper half
    assert rf["mixed"] == 0xBEEF00FF
    rf.write(0x10, 1, 0x0F)
    assert rf["mixed"] == 0xBEEF00F0


def test_holes_are_counted_and_read_the_hole_value():
    rf, holes, _, _ = make(hole=0xFF)
    assert rf.read(0x0C, 4) == 0xFFFFFF5A
    assert len(holes) == 3
    rf.write(0x0E, 2, 0xABCD)
    assert len(holes) == 5
    assert rf.read(0x40, 1) == 0xFF
    assert len(holes) == 6


def test_hole_value_default_zero():
    rf, holes, _, _ = make()
    assert rf.read(0x0D, 2) == 0 and len(holes) == 2


def test_device_side_store_masks_width_and_has_no_side_effects():
    rf, _, writes, _ = make()
    rf["byte"] = 0x1FF
    assert rf["byte"] == 0xFF
    rf["ctrl"] = 0xFFFFFFFFFF
    assert rf["ctrl"] == 0xFFFFFFFF and writes == []


def test_snapshot_restore():
    rf, *_ = make()
    rf.write(0, 4, 0xAAAA)
    snap = rf.snapshot()
    rf.write(0, 4, 0x5555)
    rf.restore(snap)
    assert rf["ctrl"] == 0x1234AAAA
    with pytest.raises(ValueError):
        rf.restore({"nope": 1})
    rf.restore({"byte": 0x1234})
    assert rf["byte"] == 0x34
    rf.reset()
    assert rf.snapshot()["ctrl"] == 0x12345678


def test_overlapping_or_duplicate_registers_refused():
    with pytest.raises(ValueError):
        RegisterFile([Reg("a", 0, 4), Reg("b", 2, 2)])
    with pytest.raises(ValueError):
        RegisterFile([Reg("a", 0, 1), Reg("a", 1, 1)])
