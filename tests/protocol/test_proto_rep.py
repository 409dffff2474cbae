"""rep ins/outs and rep movs with data_is_ptr, as one ioreq each (xen-protocol.md 1.4), over a
real socket with guest RAM shared as a memfd. A recording test device shows element order;
guest RAM is checked byte-exact, neighbours included."""

from __future__ import annotations

import pytest
from dmsupport import REC_MMIO, REC_PORT, inprocess

from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import IOREQ_READ, IOREQ_TYPE_COPY, IOREQ_TYPE_PIO, IOREQ_WRITE

FILL = 0xEE


@pytest.fixture(scope="module")
def env():
    with inprocess() as (d, hv):
        yield d, hv


@pytest.fixture
def rec(env):
    d, hv = env
    r = d.machine.device("recorder")
    r.log.clear()
    r.next_value = 0
    r.mem[:] = bytes((i * 7 + 3) & 0xFF for i in range(len(r.mem)))
    d.machine.counters.clear()
    return r


def rep(hv, typ, addr, size, count, gpa, *, read, df=False):
    resp = hv.ioreq(Ioreq(addr=addr, data=gpa, count=count, size=size, data_is_ptr=1,
                          dir=IOREQ_READ if read else IOREQ_WRITE, df=int(df), type=typ))
    # the answer echoes the request: pointer, count, bits; state IORESP_READY
    assert (resp.data, resp.count, resp.size, resp.data_is_ptr, resp.df, resp.state) == (
        gpa, count, size, 1, int(df), 3)
    return resp


def fill(hv, gpa, n):
    hv.ram.write(gpa, bytes([FILL]) * n)


def test_rep_ins_forward(env, rec):
    d, hv = env
    fill(hv, 0x10000, 16)
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 2, 4, 0x10004, read=True)
    assert hv.ram.read(0x10000, 16) == bytes.fromhex("eeeeeeee 1100 2200 3300 4400 eeeeeeee")
    assert rec.log == [("pio", "r", 0, 2, v) for v in (0x11, 0x22, 0x33, 0x44)]  # port fixed


def test_rep_ins_backward(env, rec):
    d, hv = env
    fill(hv, 0x10000, 16)
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 2, 4, 0x1000A, read=True, df=True)
    # element i lands at 0x1000A - 2*i
    assert hv.ram.read(0x10000, 16) == bytes.fromhex("eeeeeeee 4400 3300 2200 1100 eeeeeeee")
    assert [e[2] for e in rec.log] == [0, 0, 0, 0]


def test_rep_outs_forward(env, rec):
    d, hv = env
    hv.ram.write(0x20000, bytes.fromhex("01020304 05060708 090a0b0c"))
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 4, 3, 0x20000, read=False)
    assert rec.log == [("pio", "w", 0, 4, 0x04030201), ("pio", "w", 0, 4, 0x08070605),
                       ("pio", "w", 0, 4, 0x0C0B0A09)]


def test_rep_outs_backward(env, rec):
    d, hv = env
    hv.ram.write(0x20000, bytes.fromhex("01020304 05060708 090a0b0c"))
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 4, 3, 0x20008, read=False, df=True)
    assert [e[4] for e in rec.log] == [0x0C0B0A09, 0x08070605, 0x04030201]


def test_rep_outs_bytes_port_offset(env, rec):
    d, hv = env
    hv.ram.write(0x20000, b"xyz")
    rep(hv, IOREQ_TYPE_PIO, REC_PORT + 3, 1, 3, 0x20000, read=False)
    assert rec.log == [("pio", "w", 3, 1, ord(c)) for c in "xyz"]


def test_rep_movs_mmio_to_ram_forward(env, rec):
    d, hv = env
    fill(hv, 0x30000, 0x20)
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO + 0x100, 4, 5, 0x30004, read=True)
    assert hv.ram.read(0x30004, 20) == bytes(rec.mem[0x100:0x114])
    assert hv.ram.read(0x30000, 4) == b"\xee" * 4 and hv.ram.read(0x30018, 8) == b"\xee" * 8
    assert [(e[2], e[3]) for e in rec.log] == [(0x100 + 4 * i, 4) for i in range(5)]


def test_rep_movs_mmio_to_ram_backward(env, rec):
    d, hv = env
    fill(hv, 0x30000, 0x40)
    # both sides move down: MMIO 0x200, 0x1F8, 0x1F0 -> RAM 0x30020, 0x30018, 0x30010
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO + 0x200, 8, 3, 0x30020, read=True, df=True)
    assert [e[2] for e in rec.log] == [0x200, 0x1F8, 0x1F0]
    assert hv.ram.read(0x30010, 24) == bytes(rec.mem[0x1F0:0x208])
    assert hv.ram.read(0x30000, 0x10) == b"\xee" * 0x10
    assert hv.ram.read(0x30028, 0x18) == b"\xee" * 0x18


def test_rep_movs_ram_to_mmio_forward(env, rec):
    d, hv = env
    src = bytes(range(0x40, 0x50))
    hv.ram.write(0x40000, src)
    before = bytes(rec.mem)
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO + 0x300, 2, 8, 0x40000, read=False)
    assert bytes(rec.mem[0x300:0x310]) == src
    assert rec.mem[:0x300] == before[:0x300] and rec.mem[0x310:] == before[0x310:]
    assert [(e[1], e[2]) for e in rec.log] == [("w", 0x300 + 2 * i) for i in range(8)]


def test_rep_movs_ram_to_mmio_backward(env, rec):
    d, hv = env
    src = bytes(range(0x60, 0x70))
    hv.ram.write(0x40000, src)
    before = bytes(rec.mem)
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO + 0x40C, 4, 4, 0x4000C, read=False, df=True)
    assert [e[2] for e in rec.log] == [0x40C, 0x408, 0x404, 0x400]
    assert [e[4] for e in rec.log] == [int.from_bytes(src[i:i + 4], "little") for i in (12, 8, 4, 0)]
    assert bytes(rec.mem[0x400:0x410]) == src
    assert rec.mem[:0x400] == before[:0x400] and rec.mem[0x410:] == before[0x410:]


def test_rep_movs_qwords(env, rec):
    d, hv = env
    src = bytes(range(32))
    hv.ram.write(0x41000, src)
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO + 0x800, 8, 4, 0x41000, read=False)
    assert bytes(rec.mem[0x800:0x820]) == src
    assert {e[3] for e in rec.log} == {8}


@pytest.mark.parametrize("size", [1, 2, 4])
def test_count_clamped_to_one_page(env, rec, size):
    d, hv = env
    fill(hv, 0x50000, 0x1100)
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, size, 5000, 0x50000, read=True)
    limit = 4096 // size
    assert len(rec.log) == limit
    assert d.machine.counters["guest_error"] == 1
    assert hv.ram.read(0x51000, 0x100) == b"\xee" * 0x100  # nothing beyond the page
    first = hv.ram.read(0x50000, size)
    assert int.from_bytes(first, "little") == 0x11 & ((1 << (8 * size)) - 1)


def test_count_clamped_copy(env, rec):
    d, hv = env
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO, 8, 2**32 - 1, 0x60000, read=True)
    assert len(rec.log) == 512
    assert hv.ram.read(0x60000, 4096) == bytes(rec.mem[:4096])


def test_pointer_outside_ram_is_counted_not_fatal(env, rec):
    d, hv = env
    # 0xA0000-0xFFFFF is not RAM in the pc layout (VGA window / ROMs)
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 4, 4, 0xA0000, read=False)
    assert rec.log == []  # nothing to write: the first element could not be loaded
    assert d.machine.counters["guest_error"] == 1
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 4, 4, 0xF0000000, read=True)
    assert d.machine.counters["guest_error"] == 2
    rep(hv, IOREQ_TYPE_COPY, REC_MMIO, 4, 2, 0xFFFFFFFFFFFFFFF0, read=False)
    assert d.machine.counters["guest_error"] == 3
    assert hv.pci_cfg_read(0, 0, 4) == 0x12378086


def test_pointer_running_off_the_end_of_ram(env, rec):
    d, hv = env
    fill(hv, 0x9FFF0, 0x10)
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 1, 4, 0x9FFFE, read=True)
    # two elements land in RAM, the third has nowhere to go: the walk stops and is counted
    assert hv.ram.read(0x9FFFC, 4) == bytes.fromhex("eeee1122")
    assert len(rec.log) == 3
    assert d.machine.counters["guest_error"] == 1


def test_pointer_backwards_below_zero_wraps_and_stops(env, rec):
    d, hv = env
    fill(hv, 0, 4)
    rep(hv, IOREQ_TYPE_PIO, REC_PORT, 1, 3, 0x1, read=True, df=True)
    assert hv.ram.read(0, 2) == bytes.fromhex("2211")
    assert d.machine.counters["guest_error"] == 1  # the third element is at 2**64 - 1
