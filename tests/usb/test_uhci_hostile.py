"""UHCI registers, the frame clock, and hostile schedules (hostile-guest-catalog 18, 19, 20,
22, 24, 29, 50): every walk is bounded, every bad pointer is a reported error."""

from __future__ import annotations

import pytest
from uhci_driver import (
    ACTIVE,
    CRC_TO,
    FLBASEADD,
    FRAME_LIST,
    FRNUM,
    IN,
    NAKBIT,
    OUT,
    QH_ADDR,
    SETUP,
    SOFMOD,
    USBCMD,
    USBINTR,
    USBSTS,
    VF,
    Q,
    T,
    UhciDriver,
)

from devmodel.usb import UsbTablet
from devmodel.usb import uhci as U

HSE, HCPE, HCH, USBERRINT = 0x08, 0x10, 0x20, 0x02


def _ready():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(1)
    d.out(USBSTS, 0x3F)
    d.m.outbox.clear()
    return d, tablet


def _point_all_frames(d, link):
    for i in range(1024):
        d.w32(FRAME_LIST + 4 * i, link)


def test_register_defaults_and_widths():
    d = UhciDriver([], start=False)
    assert d.inp(USBCMD) == 0
    assert d.inp(USBSTS) == HCH
    assert d.inp(SOFMOD, 1) == 0x40
    d.out(FLBASEADD, 0x12345FFF, 4)
    assert d.inp(FLBASEADD, 4) == 0x12345000
    d.out(USBINTR, 0xFFFF)
    assert d.inp(USBINTR) == 0x000F
    # every offset and size answers without raising (catalog 20, 50)
    for off in range(32):
        for size in (1, 2, 4):
            d.inp(off, size)
            d.out(off, 0, size)
    assert d.uhci.failed is False
    assert d.uhci.counters  # the holes were counted


def test_remote_wakeup_sets_resume_detect():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(1)
    d.control(1, 0x00, 3, 1)  # SET_FEATURE(DEVICE_REMOTE_WAKEUP)
    d.out(USBINTR, 0x0002)  # resume interrupt
    d.out(USBCMD, 0x00C8)  # stop, enter global suspend (EGSM)
    d.out(0x10, 0x1004)  # suspend the port
    d.m.outbox.clear()
    tablet.event(3, 3)
    assert d.inp(0x10) & 0x0040  # port resume detect
    assert d.inp(USBSTS) & 0x04 and d.inp(USBCMD) & 0x10  # RD, FGR
    assert d.irq_level() == 1


def test_frame_timer_runs_only_while_running():
    d = UhciDriver([UsbTablet()], start=False)
    assert not d.uhci.frame_timer.armed and d.m.clock.next_deadline() is None
    d.start()
    assert d.uhci.frame_timer.armed
    f0 = d.inp(FRNUM)
    d.step(5)
    assert d.inp(FRNUM) == (f0 + 5) & 0x7FF
    d.out(FRNUM, 0x100)  # ignored while running
    assert d.inp(FRNUM) == (f0 + 5) & 0x7FF
    d.out(USBCMD, 0x00C0)  # clear RS
    assert d.inp(USBSTS) & HCH
    assert not d.uhci.frame_timer.armed and d.m.clock.next_deadline() is None
    d.step(50)
    assert d.inp(FRNUM) == (f0 + 5) & 0x7FF
    d.out(FRNUM, 0x100)
    assert d.inp(FRNUM) == 0x100


def test_catch_up_after_stall_is_bounded():
    d = UhciDriver([UsbTablet()])
    calls = []
    orig = d.uhci.run_frame
    d.uhci.run_frame = lambda: (calls.append(1), orig())[1]
    f0 = d.inp(FRNUM)
    d.step(10_000)  # the daemon was stopped for 10 s
    assert len(calls) == U.MAX_CATCHUP_FRAMES
    assert d.inp(FRNUM) == (f0 + 10_000) & 0x7FF
    assert d.uhci.counters["frames skipped after a stall"] == 10_000 - U.MAX_CATCHUP_FRAMES
    assert d.uhci.frame_timer.deadline > d.now


def test_hcreset_and_greset():
    d, tablet = _ready()
    d.out(USBINTR, 0x000F)
    d.out(USBCMD, 0x0002)
    assert d.inp(USBCMD) == 0 and d.inp(USBINTR) == 0
    assert d.inp(0x10) == 0x0083  # device shows as newly connected, port disabled
    assert tablet.addr == 0
    assert not d.uhci.frame_timer.armed
    d.out(USBCMD, 0x0004)  # GRESET
    assert d.inp(USBCMD) == 0x0004
    d.out(USBCMD, 0)


def test_cyclic_qh_list_ends_the_frame():
    d, _ = _ready()
    a, b = 0x20000, 0x20040
    d.w32(a, b | Q)
    d.w32(a + 4, T)
    d.w32(b, a | Q)
    d.w32(b + 4, T)
    _point_all_frames(d, a | Q)
    d.step(20)
    assert d.uhci.counters["QH loop without progress: frame ended"] == 20
    d.w32(a, a | Q)  # a QH linked to itself
    d.step(5)
    assert d.uhci.counters["QH loop without progress: frame ended"] == 25
    assert d.inp(USBSTS) & HCH == 0


def test_qh_loop_with_progress_is_bounded_by_loop_limit():
    """A reclamation loop whose TDs keep completing (inactive-TD IOC each lap) still ends."""
    d, _ = _ready()
    qh = 0x20000
    # a chain of SETUP TDs that all complete: every lap does work
    tds = [d.make_td(SETUP, 1, 0, 0, 8, bytes([0x80, 6, 0, 1, 0, 0, 8, 0])) for _ in range(4)]
    for t in tds:
        d.w32(t.addr, T)
    d.w32(tds[-1].addr, qh | Q)  # the last TD loops back to the QH ...
    d.chain(tds[:-1])
    d.w32(tds[-2].addr, tds[-1].addr | VF)
    d.w32(qh, qh | Q)  # ... and the QH to itself
    d.w32(qh + 4, tds[0].addr)
    _point_all_frames(d, qh | Q)
    d.step(3)
    assert d.inp(USBSTS) & HCH == 0


def test_self_linked_td_is_executed_once_per_frame():
    d, tablet = _ready()
    seen = []
    orig = tablet.handle_packet
    tablet.handle_packet = lambda *a: (seen.append(a[0]), orig(*a))[1]
    d.heap = 0x20000
    td = d.make_td(IN, 1, 1, 0, 8)  # NAKs: no input
    d.w32(td.addr, td.addr)  # horizontal link to itself
    _point_all_frames(d, td.addr)
    d.step(10)
    assert len(seen) == 10
    assert d.ctrl_of(td) & NAKBIT and d.ctrl_of(td) & ACTIVE
    assert d.uhci.counters["TD revisited in one lap: frame ended"] == 10
    d.w32(td.addr, td.addr | VF)  # depth-first self link inside a QH
    d.w32(QH_ADDR + 4, td.addr)
    _point_all_frames(d, QH_ADDR | Q)
    d.step(5)
    assert len(seen) == 15


def test_long_chain_of_tds_hits_the_loop_limit():
    d, _ = _ready()
    d.heap = 0x20000
    tds = [d.make_td(IN, 1, 1, 0, 8) for _ in range(U.FRAME_MAX_LOOPS + 50)]
    for t in tds:
        d.w32(t.addr + 4, 0)  # inactive
    for a, b in zip(tds, tds[1:], strict=False):
        d.w32(a.addr, b.addr)  # breadth-first chain, no QH
    _point_all_frames(d, tds[0].addr)
    d.step(3)
    assert d.uhci.counters["frame loop limit reached"] == 3


@pytest.mark.parametrize("field", [0x500, 0x6FF, 0x7FE])
def test_invalid_maxlen_is_a_process_error(field):
    d, _ = _ready()
    d.out(USBINTR, 0)
    d.heap = 0x20000
    td = d.make_td(OUT, 1, 0, 0, 1)
    tok = d.r32(td.addr + 8)
    d.w32(td.addr + 8, (tok & 0x1FFFFF) | field << 21)
    d.w32(QH_ADDR + 4, td.addr)
    d.step(2)
    sts = d.inp(USBSTS)
    assert sts & HCPE and sts & HCH
    assert not d.inp(USBCMD) & 1
    assert d.irq_level() == 1  # HCPE interrupts whatever USBINTR says
    assert not d.uhci.frame_timer.armed


def test_max_valid_maxlen_is_bounded_by_the_device():
    d, tablet = _ready()
    tablet.event(7, 7)
    d.heap = 0x20000
    td = d.make_td(IN, 1, 1, 0, 0x500)  # field 0x4FF: 1280 bytes, the largest legal
    d.w32(QH_ADDR + 4, td.addr)
    d.step(2)
    assert not d.ctrl_of(td) & ACTIVE and d.actual(td) == 6


def test_invalid_pid_is_a_process_error():
    d, _ = _ready()
    d.heap = 0x20000
    td = d.make_td(0xA5, 1, 0, 0, 8)
    d.w32(QH_ADDR + 4, td.addr)
    d.step(2)
    assert d.inp(USBSTS) & HCPE


def test_frame_list_outside_ram_is_a_host_system_error():
    d, _ = _ready()
    d.out(USBCMD, 0x00C0)
    d.out(FLBASEADD, 0xFFFFF000, 4)
    d.out(USBSTS, 0x3F)
    d.out(USBCMD, 0x00C1)
    d.step(2)
    sts = d.inp(USBSTS)
    assert sts & HSE and sts & HCH
    assert d.irq_level() == 1
    assert d.cfg_read(0x06, 2) & 0x2000  # received master abort
    assert d.uhci.counters["uhci frame list entry outside RAM"] == 1


@pytest.mark.parametrize("where", ["qh", "td", "buffer", "in_buffer"])
def test_pointers_outside_ram_are_host_system_errors(where):
    d, tablet = _ready()
    tablet.event(1, 1)
    bad = 0x7FFF0000
    if where == "qh":
        d.w32(QH_ADDR + 4, bad | Q)
    elif where == "td":
        d.w32(QH_ADDR + 4, bad)
    else:
        d.heap = 0x20000
        td = d.make_td(OUT if where == "buffer" else IN, 1, 0 if where == "buffer" else 1, 0, 8)
        d.w32(td.addr + 12, bad)
        d.w32(QH_ADDR + 4, td.addr)
    d.step(2)
    assert d.inp(USBSTS) & HSE
    assert not d.uhci.frame_timer.armed


def test_error_counter_counts_down_on_timeouts():
    d, _ = _ready()
    d.out(USBINTR, 0x0001)
    d.heap = 0x20000
    td = d.make_td(IN, 77, 1, 0, 8, cerr=2)  # nobody has address 77
    d.w32(QH_ADDR + 4, td.addr)
    d.step(1)
    c = d.ctrl_of(td)
    assert c & ACTIVE and (c >> 27) & 3 == 1 and c & CRC_TO
    d.step(1)
    c = d.ctrl_of(td)
    assert not c & ACTIVE and (c >> 27) & 3 == 0
    assert d.inp(USBSTS) & USBERRINT and d.irq_level() == 1
    # C_ERR 0: retried for ever, never retired
    d.heap = 0x21000
    td2 = d.make_td(IN, 77, 1, 0, 8, cerr=0)
    d.w32(QH_ADDR + 4, td2.addr)
    d.step(10)
    assert d.ctrl_of(td2) & ACTIVE


def test_frame_byte_budget_spreads_large_transfers():
    d, tablet = _ready()
    for i in range(16):
        tablet.event(i, i)
    d.heap = 0x20000
    # 16 interrupt TDs, depth first: 6 bytes each is under the budget, so all go in one frame
    tds = [d.make_td(IN, 1, 1, i & 1, 8) for i in range(16)]
    d.chain(tds)
    d.w32(QH_ADDR + 4, tds[0].addr)
    d.step(1)
    assert all(not d.ctrl_of(t) & ACTIVE for t in tds)


def test_no_bus_master_no_dma():
    d, tablet = _ready()
    d.cfg_write(0x04, 2, 0x0001)
    tablet.event(1, 1)
    d.heap = 0x20000
    td = d.make_td(IN, 1, 1, 0, 8)
    d.w32(QH_ADDR + 4, td.addr)
    d.step(3)
    assert d.ctrl_of(td) & ACTIVE
    assert d.uhci.counters["frame without bus mastering"] == 3
