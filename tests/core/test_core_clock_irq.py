"""Clock/Timer (time as an input, bounded runs) and IrqRouter (wired-OR, changes only)."""

from __future__ import annotations

import pytest

from devmodel.core.clock import MAX_TIMERS_PER_RUN, Clock
from devmodel.core.irq import IrqRouter
from devmodel.wire.constants import DmOp

# ---- clock -----------------------------------------------------------------------------------


def test_virtual_time_only_moves_forward():
    c = Clock(virtual=True)
    assert c.now() == 0
    c.set_virtual(1000)
    c.set_virtual(500)
    assert c.now() == 1000


def test_monotonic_clock_moves():
    c = Clock()
    a = c.now()
    assert c.now() >= a


def test_timers_fire_in_deadline_order_with_their_deadline():
    c = Clock(virtual=True)
    fired: list[tuple[str, int]] = []
    t1 = c.timer(lambda d: fired.append(("a", d)), "a")
    t2 = c.timer(lambda d: fired.append(("b", d)), "b")
    t3 = c.timer(lambda d: fired.append(("c", d)), "c")
    t1.arm(300)
    t2.arm(100)
    t3.arm(100)  # same deadline as b: armed later, fires later
    assert c.changed and c.next_deadline() == 100
    assert c.run_due(99) == 0
    assert c.run_due(100) == 2
    assert fired == [("b", 100), ("c", 100)]
    assert not t2.armed and t1.armed
    assert c.run_due(10_000) == 1 and fired[-1] == ("a", 300)
    assert c.next_deadline() is None


def test_rearm_replaces_the_old_deadline():
    c = Clock(virtual=True)
    fired: list[int] = []
    t = c.timer(fired.append)
    t.arm(100)
    t.arm(200)
    assert c.next_deadline() == 200
    assert c.run_due(150) == 0
    assert c.run_due(250) == 1 and fired == [200]
    t.arm(300)
    t.arm(50)  # earlier re-arm also wins
    assert c.run_due(100) == 1 and fired == [200, 50]
    assert c.run_due(1000) == 0


def test_cancel():
    c = Clock(virtual=True)
    fired: list[int] = []
    t = c.timer(fired.append)
    t.arm(10)
    t.cancel()
    assert not t.armed and c.next_deadline() is None
    assert c.run_due(100) == 0 and fired == []


def test_arm_in_is_relative_to_now():
    c = Clock(virtual=True)
    c.set_virtual(1_000)
    t = c.timer(lambda d: None)
    t.arm_in(500)
    assert t.deadline == 1_500


def test_callback_rearming_in_the_past_is_bounded_per_run():
    c = Clock(virtual=True)
    c.set_virtual(10)
    count = [0]

    def again(deadline):
        count[0] += 1
        t.arm(deadline)  # always due: a runaway device

    t = c.timer(again)
    t.arm(0)
    assert c.run_due() == MAX_TIMERS_PER_RUN
    assert count[0] == MAX_TIMERS_PER_RUN
    assert t.armed  # still pending for the next run


def test_periodic_timer_fires_once_per_period():
    c = Clock(virtual=True)
    hits: list[int] = []

    def tick(deadline):
        hits.append(deadline)
        t.arm(deadline + 100)

    t = c.timer(tick)
    t.arm(100)
    c.set_virtual(550)
    c.run_due()
    assert hits == [100, 200, 300, 400, 500] and t.deadline == 600


# ---- IRQ lines -------------------------------------------------------------------------------


def router():
    out: list[tuple[int, tuple[int, ...]]] = []
    return IrqRouter(lambda op, fields: out.append((op, fields))), out


def test_isa_line_only_changes_emitted():
    r, out = router()
    line = r.isa(4, "com1")
    line.raise_()
    line.raise_()
    line.set_level(True)
    assert out == [(DmOp.SET_ISA_IRQ_LEVEL, (4, 1))]
    line.lower()
    line.lower()
    assert out[-1] == (DmOp.SET_ISA_IRQ_LEVEL, (4, 0)) and len(out) == 2
    assert line.level == 0


def test_wired_or_of_two_sources():
    r, out = router()
    a, b = r.isa(10), r.isa(10)
    a.raise_()
    b.raise_()
    a.lower()
    assert out == [(DmOp.SET_ISA_IRQ_LEVEL, (10, 1))]
    assert b.level == 1
    b.lower()
    assert out == [(DmOp.SET_ISA_IRQ_LEVEL, (10, 1)), (DmOp.SET_ISA_IRQ_LEVEL, (10, 0))]


def test_pulse_is_an_edge():
    r, out = router()
    r.isa(1).pulse()
    assert out == [(DmOp.SET_ISA_IRQ_LEVEL, (1, 1)), (DmOp.SET_ISA_IRQ_LEVEL, (1, 0))]


def test_pulse_on_a_line_held_by_another_source_changes_nothing():
    r, out = router()
    held, pulser = r.isa(7), r.isa(7)
    held.raise_()
    out.clear()
    pulser.pulse()
    assert out == []


def test_intx_lines_and_levels_and_reset():
    r, out = router()
    a = r.intx(3, 0)
    d = r.intx(5, 3)
    isa = r.isa(9)
    a.raise_()
    d.set_level(1)
    isa.raise_()
    assert out == [(DmOp.SET_PCI_INTX_LEVEL, (0, 0, 3, 0, 1)),
                   (DmOp.SET_PCI_INTX_LEVEL, (0, 0, 5, 3, 1)),
                   (DmOp.SET_ISA_IRQ_LEVEL, (9, 1))]
    assert r.levels() == {"isa9": 1, "intx3.A": 1, "intx5.D": 1}
    d.lower()
    out.clear()
    r.reset()
    assert sorted(out) == sorted([(DmOp.SET_PCI_INTX_LEVEL, (0, 0, 3, 0, 0)),
                                  (DmOp.SET_ISA_IRQ_LEVEL, (9, 0))])
    out.clear()
    r.reset()
    assert out == []


@pytest.mark.parametrize("call", [lambda r: r.isa(16), lambda r: r.isa(-1), lambda r: r.intx(32, 0),
                                  lambda r: r.intx(0, 4)])
def test_out_of_range_lines_refused(call):
    r, _ = router()
    with pytest.raises(ValueError):
        call(r)


def test_cancel_where_cancels_only_the_selected_armed_timers():
    c = Clock(virtual=True)
    fired = []
    a, b = c.timer(lambda d: fired.append("a"), "a"), c.timer(lambda d: fired.append("b"), "b")
    idle = c.timer(lambda d: fired.append("idle"), "idle")
    a.arm(10)
    b.arm(20)
    assert c.cancel_where(lambda t: t.name in ("a", "idle")) == 1  # idle is not armed
    assert not a.armed and b.armed and not idle.armed
    c.set_virtual(100)
    c.run_due()
    assert fired == ["b"]
