"""Over a real socket, with test devices in an in-process daemon: a device bug is contained and
the vCPU still gets its answer; posted writes land before a later ioreq; TIMEOFFSET and
INVALIDATE are served; virtual time from CLOCK messages fires device timers whose IRQ dm_op
reaches the hypervisor before the next IORESP."""

from __future__ import annotations

import logging

import pytest
from dmsupport import (
    FAULT_MMIO,
    FAULT_PORT,
    TIMER_IRQ,
    TIMER_PORT,
    VGA_BASE,
    RawPeer,
    inprocess,
    make_machine,
)

from devmodel.client import InProcessDaemon
from devmodel.wire import codec
from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import (
    FLAG_NO_REPLY,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_INVALIDATE,
    IOREQ_TYPE_PIO,
    IOREQ_TYPE_TIMEOFFSET,
    DmOp,
    MsgType,
)


@pytest.fixture
def env():
    with inprocess(lambda: make_machine(virtual_clock=True)) as (d, hv):
        yield d, hv


# ---- containment of a device bug (design rule 6) ---------------------------------------------

def test_device_exception_contained_over_the_socket(env, caplog):
    d, hv = env
    dev = d.machine.device("faulty")
    with caplog.at_level(logging.ERROR, logger="devmodel.machine"):
        assert hv.inb(FAULT_PORT) == 0xFF  # answered, all-ones
    assert dev.failed
    assert d.machine.counters["device_failure"] == 1
    recs = [r for r in caplog.records if r.name == "devmodel.machine" and r.levelno == logging.ERROR]
    assert recs and "faulty" in recs[0].getMessage() and f"{FAULT_PORT:#x}" in recs[0].getMessage()
    assert recs[0].exc_info is not None
    # later ioreqs are answered: the failed device's ranges read all-ones, others work
    assert hv.readl(FAULT_MMIO) == 0xFFFFFFFF
    assert hv.inw(FAULT_PORT + 2) == 0xFFFF
    hv.outb(FAULT_PORT, 1)
    assert dev.writes == 0
    assert hv.pci_cfg_read(0, 0, 4) == 0x12378086
    assert d.machine.counters["device_failure"] == 1  # the dead device is no longer called


def test_device_exception_in_mmio_qword_read(env):
    d, hv = env
    assert hv.readq(FAULT_MMIO + 8) == 2**64 - 1
    assert hv.inb(0x92) == 0


def test_strict_daemon_machine_raises():
    from devmodel.core.machine import DeviceFailure

    m = make_machine(strict=True)
    with pytest.raises(DeviceFailure):
        m.handle_ioreq(IOREQ_TYPE_PIO, FAULT_PORT, 0, 1, 1, 0x21)


# ---- BUFIOREQ ordering -----------------------------------------------------------------------

def test_bufioreq_applied_before_a_following_ioreq(env):
    d, hv = env
    writes = [(IOREQ_TYPE_COPY, VGA_BASE + 0x10, 1, 0x41),
              (IOREQ_TYPE_COPY, VGA_BASE + 0x11, 1, 0x42),
              (IOREQ_TYPE_COPY, VGA_BASE + 0x12, 2, 0x4443),
              (IOREQ_TYPE_COPY, VGA_BASE + 0x14, 4, 0x48474645),
              (IOREQ_TYPE_COPY, VGA_BASE + 0x18, 8, 0x504F4E4D4C4B4A49),  # two slots
              (IOREQ_TYPE_PIO, 0x92, 1, 0x02)]
    # one sendall: the BUFIOREQ (NO_REPLY) and the IOREQ right behind it
    tag = hv.tag()
    data = codec.frame(MsgType.BUFIOREQ, codec.encode_bufioreq(writes), flags=FLAG_NO_REPLY)
    data += codec.frame(MsgType.IOREQ, Ioreq(addr=VGA_BASE + 0x10, size=8, dir=1,
                                             type=IOREQ_TYPE_COPY).pack(), tag=tag)
    hv.send_raw(data)
    msg = hv.recv_reply(tag)
    assert Ioreq.unpack(msg.payload).data == int.from_bytes(b"ABCDEFGH", "little")
    assert hv.readq(VGA_BASE + 0x18) == 0x504F4E4D4C4B4A49
    assert bytes(d.machine.device("lowmmio").mem[0x10:0x20]) == b"ABCDEFGHIJKLMNOP"
    assert hv.inb(0x92) == 0x02
    hv.outb(0x92, 0)


def test_bufioreq_with_a_reset_sends_shutdown(env):
    d, hv = env
    hv.bufioreq([(IOREQ_TYPE_PIO, 0xCF9, 1, 0x06)])
    assert hv.pci_cfg_read(0, 0, 4) == 0x12378086  # sync point
    assert hv.state.shutdowns == [1]


def test_empty_bufioreq(env):
    d, hv = env
    hv.bufioreq([])
    assert hv.inb(0x92) == 0


# ---- TIMEOFFSET and INVALIDATE ---------------------------------------------------------------

def test_timeoffset_accumulates(env):
    d, hv = env
    for delta in (3600, -7200):
        r = hv.ioreq(Ioreq(data=delta & (2**64 - 1), size=8, type=IOREQ_TYPE_TIMEOFFSET))
        assert r.state == 3 and r.data == delta & (2**64 - 1) and r.type == IOREQ_TYPE_TIMEOFFSET
    # buffered, as Xen really sends it: two slots carrying the signed 64-bit delta
    hv.bufioreq([(IOREQ_TYPE_TIMEOFFSET, 0, 8, (-5) & (2**64 - 1))])
    hv.inb(0x92)
    assert d.machine.rtc_offset == -3605


def test_invalidate_answered(env):
    d, hv = env
    hv.inb(0x92)  # sync: the MEM_ADDs (no reply) have been applied
    gen = d.machine.memory.generation
    r = hv.ioreq(Ioreq(data=2**64 - 1, count=0, size=4, type=IOREQ_TYPE_INVALIDATE))
    assert (r.state, r.type, r.data, r.count) == (3, IOREQ_TYPE_INVALIDATE, 2**64 - 1, 0)
    assert d.machine.counters["invalidate"] == 1
    assert d.machine.memory.generation == gen + 1
    hv.ram.write(0x7000, b"\x99")
    hv.ins(0x92, 1, 1, 0x7000)  # guest RAM still reachable after the invalidate
    assert hv.ram.read(0x7000, 1) == b"\x00"


# ---- virtual time ----------------------------------------------------------------------------

def test_clock_fires_device_timer_and_irq_dmop(env):
    d, hv = env
    now = d.machine.clock.now()
    hv.outl(TIMER_PORT, 1000)  # arm for now + 1000 ns
    hv.clock(now + 999)
    assert hv.inl(TIMER_PORT) == 0
    assert hv.state.isa_irq.get(TIMER_IRQ, 0) == 0
    hv.clock(now + 1000)
    # the CLOCK is NO_REPLY; the next ioreq is the sync point, and the IRQ dm_op precedes it
    assert hv.inl(TIMER_PORT) == 1
    assert hv.state.isa_irq[TIMER_IRQ] == 1
    irq_ops = [r for r in hv.state.dmops if r.op == DmOp.SET_ISA_IRQ_LEVEL]
    assert [r.fields for r in irq_ops] == [(TIMER_IRQ, 1)]
    hv.clock(now + 500)  # time never goes back; nothing fires again
    hv.clock(now + 10_000)
    assert hv.inl(TIMER_PORT) == 1
    hv.outl(TIMER_PORT, 0)
    assert hv.state.isa_irq[TIMER_IRQ] == 0


def test_clock_irq_dmop_order_on_raw_socket():
    d = InProcessDaemon(lambda: make_machine(virtual_clock=True))
    peer = RawPeer.connect(d.socket_path)
    try:
        peer.hello()
        peer.io(10, IOREQ_TYPE_PIO, TIMER_PORT, 4, read=False, data=50)
        peer.send(codec.frame(MsgType.CLOCK, codec.CLOCK.pack(10**9), flags=FLAG_NO_REPLY))
        msgs = peer.io(11, IOREQ_TYPE_PIO, 0x92, 1, read=True)
        assert [m.type for m in msgs] == [MsgType.DMOP, MsgType.IORESP]
        op = codec.decode_dmop(msgs[0].payload)
        assert (op.op, op.fields) == (DmOp.SET_ISA_IRQ_LEVEL, (TIMER_IRQ, 1))
        assert msgs[0].flags == FLAG_NO_REPLY
    finally:
        peer.close()
        d.stop()
