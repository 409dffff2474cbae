"""The sync client holds NO_REPLY messages (CLOCK, BUFIOREQ) back and sends them in the same
sendall as the next message, without changing the order the daemon sees."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from dmsupport import TIMER_IRQ, TIMER_PORT, VGA_BASE, inprocess, make_machine  # noqa: E402

from devmodel.wire.constants import IOREQ_TYPE_COPY  # noqa: E402


def test_clock_goes_out_with_the_next_ioreq() -> None:
    with inprocess(lambda: make_machine(virtual_clock=True)) as (d, hv):
        hv.inb(0x92)
        now = d.machine.clock.now()
        hv.outl(TIMER_PORT, 1000)
        writes = hv.socket_writes
        hv.clock(now + 1000)
        assert hv.socket_writes == writes  # held back
        assert hv.inl(TIMER_PORT) == 1  # the CLOCK went first: the timer fired before the read
        assert hv.socket_writes == writes + 1  # CLOCK + IOREQ in one sendall
        assert hv.state.isa_irq[TIMER_IRQ] == 1
        hv.outl(TIMER_PORT, 0)


def test_held_back_messages_go_before_a_wait_and_before_fds() -> None:
    with inprocess(lambda: make_machine(virtual_clock=True)) as (d, hv):
        hv.inb(0x92)
        now = d.machine.clock.now()
        hv.outl(TIMER_PORT, 500)
        hv.clock(now + 500)
        hv.poll(0.2)  # a wait sends what is held back; the IRQ dm_op comes back
        assert hv.state.isa_irq.get(TIMER_IRQ) == 1
        hv.outl(TIMER_PORT, 0)

        hv.bufioreq([(IOREQ_TYPE_COPY, VGA_BASE, 1, 0x5A)])
        hv.mem_add(99, 0x3000_0000, 4096, hv.ram.fd, 0)  # fd message: sent after the BUFIOREQ
        assert hv.readb(VGA_BASE) == 0x5A
        hv.bufioreq([(IOREQ_TYPE_COPY, VGA_BASE + 1, 1, 0x5B)])
        hv.flush()
        assert hv.readb(VGA_BASE + 1) == 0x5B
