"""MC146818 RTC/CMOS through its ports, on the virtual clock."""

from __future__ import annotations

import calendar

import pytest

from devmodel.bios.rtc import (
    NS,
    UIP_HOLD_NS,
    CmosConfig,
    Rtc,
    gmtime,
    mktimegm,
)
from devmodel.core.clock import Clock
from devmodel.core.device import SnapshotError
from devmodel.core.machine import Machine
from devmodel.wire.constants import IOREQ_TYPE_PIO, IOREQ_TYPE_TIMEOFFSET

MIB, GIB = 1 << 20, 1 << 30
# 2024-02-29 23:59:58 UTC, a Thursday: leap day, month, day and week roll over in 2 s.
T0 = calendar.timegm((2024, 2, 29, 23, 59, 58, 0, 0, 0))


class Rig:
    def __init__(self, base_time: int = T0, cfg: CmosConfig | None = None) -> None:
        self.clock = Clock(virtual=True)
        self.m = Machine(clock=self.clock, strict=True)
        self.rtc = self.m.add(Rtc(base_time, cfg or CmosConfig(64 * MIB)))

    # The real register dance: index (with NMI mask, as SeaBIOS does), then data.
    def out(self, port: int, value: int, size: int = 1) -> None:
        self.m.handle_ioreq(IOREQ_TYPE_PIO, port, value, 1, size, 0)

    def inp(self, port: int, size: int = 1) -> int:
        return self.m.handle_ioreq(IOREQ_TYPE_PIO, port, 0, 1, size, 0x20)

    def read(self, idx: int) -> int:
        self.out(0x70, 0x80 | idx)
        return self.inp(0x71)

    def write(self, idx: int, value: int) -> None:
        self.out(0x70, 0x80 | idx)
        self.out(0x71, value)

    def at(self, ns: int) -> None:
        self.clock.set_virtual(ns)
        self.clock.run_due(ns)

    def advance(self, ns: int) -> None:
        self.at(self.clock.now() + ns)

    @property
    def irq(self) -> int:
        return self.m.irqs.levels().get("isa8", 0)

    def time_regs(self) -> list[int]:
        return [self.read(i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)]


@pytest.fixture
def rig() -> Rig:
    return Rig()


# ---- time registers ---------------------------------------------------------------------------
def test_initial_registers_bcd_24h(rig: Rig) -> None:
    #                       sec   min   hour  wday  mday  mon   year  century
    assert rig.time_regs() == [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]
    assert rig.read(0x0A) == 0x26
    assert rig.read(0x0B) == 0x02
    assert rig.read(0x0C) == 0x00
    assert rig.read(0x0D) == 0x80


def test_time_runs_on_the_clock_and_rolls_over(rig: Rig) -> None:
    rig.at(2 * NS + 1)
    assert rig.time_regs() == [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
    rig.at(3600 * NS + 2 * NS)
    assert rig.read(4) == 0x01 and rig.read(2) == 0x00
    assert rig.rtc.guest_time() == T0 + 3602


def test_binary_and_12_hour_modes(rig: Rig) -> None:
    rig.write(0x0B, 0x04)  # DM=binary, 12-hour
    # 23:59:58 in 12-hour binary: 11 with the PM flag.
    assert rig.read(4) == 0x80 | 11
    assert rig.read(0) == 58 and rig.read(2) == 59 and rig.read(7) == 29 and rig.read(9) == 24
    rig.at(2 * NS)  # 00:00:00 -> 12 AM
    assert rig.read(4) == 12
    rig.at(2 * NS + 13 * 3600 * NS)  # 13:00 -> 1 PM
    assert rig.read(4) == 0x81
    rig.write(0x0B, 0x00)  # BCD 12-hour
    assert rig.read(4) == 0x81
    rig.at(2 * NS + 22 * 3600 * NS)  # 22:00 -> 10 PM, BCD 0x10
    assert rig.read(4) == 0x90


def test_uip_is_set_for_the_last_244us_of_each_second(rig: Rig) -> None:
    # Guest time starts on a whole second at clock 0.
    rig.at(NS - UIP_HOLD_NS - 1)
    assert rig.read(0x0A) == 0x26
    rig.at(NS - UIP_HOLD_NS)
    assert rig.read(0x0A) == 0xA6
    rig.at(NS - 1)
    assert rig.read(0x0A) == 0xA6
    rig.at(NS)
    assert rig.read(0x0A) == 0x26
    # UIP is read-only and never set while SET holds the clock.
    rig.write(0x0A, 0xA6)
    assert rig.read(0x0A) == 0x26
    rig.write(0x0B, 0x82)
    rig.at(2 * NS - 1000)
    assert rig.read(0x0A) == 0x26


def test_set_mode_write_then_release(rig: Rig) -> None:
    rig.at(NS // 4)  # sub-second phase 0.25 s
    rig.write(0x0B, 0x82)  # SET
    for idx, v in ((0, 0x30), (2, 0x15), (4, 0x10), (7, 0x01), (8, 0x01), (9, 0x99), (0x32, 0x19)):
        rig.write(idx, v)
    rig.advance(5 * NS)  # frozen while SET is held
    assert rig.time_regs()[:3] == [0x30, 0x15, 0x10]
    rig.write(0x0B, 0x02)  # release: runs on from the written time, phase kept
    assert rig.rtc.guest_time() == calendar.timegm((1999, 1, 1, 10, 15, 30, 0, 0, 0))
    rig.advance(3 * NS // 4 - 1)
    assert rig.read(0) == 0x30
    rig.advance(1)
    assert rig.read(0) == 0x31
    assert rig.read(6) == 0x06  # 1999-01-01 was a Friday (day of week 6)


def test_time_write_while_running_takes_effect_at_once(rig: Rig) -> None:
    rig.write(4, 0x05)  # hours 05
    assert rig.read(4) == 0x05
    assert rig.rtc.guest_time() == calendar.timegm((2024, 2, 29, 5, 59, 58, 0, 0, 0))


def test_century_alias_0x37(rig: Rig) -> None:
    assert rig.read(0x37) == 0x20
    assert rig.rtc.index == 0x32
    rig.write(0x37, 0x21)
    assert rig.read(0x32) == 0x21


def test_garbage_time_registers_do_not_raise(rig: Rig) -> None:
    rig.write(0x0B, 0x82)
    for idx in (0, 2, 4, 6, 7, 8, 9, 0x32):
        rig.write(idx, 0xFF)
    rig.write(0x01, 0xBB)
    rig.write(0x05, 0x7F)
    rig.write(0x0B, 0x32)  # release SET with UIE+AIE on garbage
    rig.advance(10 * NS)
    rig.read(0x0C)
    for idx in (0, 2, 4, 6, 7, 8, 9, 0x32):
        assert 0 <= rig.read(idx) <= 0xFF


# ---- interrupts --------------------------------------------------------------------------------
def test_no_timer_when_no_interrupt_enabled(rig: Rig) -> None:
    rig.write(0x05, 0x12)  # keep the alarm (reset value 00:00:00) off the midnight we cross
    assert rig.clock.next_deadline() is None
    rig.at(10 * NS)
    assert rig.clock.next_deadline() is None
    # UF is still reported, lazily, and raises nothing.
    assert rig.read(0x0C) == 0x10
    assert rig.irq == 0
    assert rig.read(0x0C) == 0x00
    rig.advance(NS // 2)
    assert rig.read(0x0C) == 0x00  # no update boundary crossed since the last read


def test_periodic_interrupt_rate_1024hz(rig: Rig) -> None:
    rig.write(0x0B, 0x42)  # PIE, rate from A = 0x26 (RS=6: 1024 Hz)
    assert rig.irq == 0
    first = rig.clock.next_deadline()
    assert first == pytest.approx(NS / 1024, abs=1000)
    fires = 0
    while True:
        d = rig.clock.next_deadline()
        if d > NS:
            break
        rig.at(d)
        if rig.irq:
            fires += 1
            assert rig.read(0x0C) == 0xC0  # IRQF | PF
            assert rig.irq == 0
    assert fires == 1024 - 1 or fires == 1024
    # A slower rate: RS=15 -> 2 Hz.
    rig.write(0x0A, 0x2F)
    rig.advance(NS // 2 + 1000)
    assert rig.irq == 1
    assert rig.read(0x0C) & 0xC0 == 0xC0


def test_periodic_off_stops_interrupts(rig: Rig) -> None:
    rig.write(0x0B, 0x42)
    rig.advance(NS // 100)
    assert rig.irq == 1
    rig.write(0x0B, 0x02)  # PIE off: no flag enabled is pending, B write lowers the IRQ
    assert rig.irq == 0
    rig.read(0x0C)
    rig.advance(NS)
    assert rig.irq == 0
    assert rig.read(0x0C) & 0x40 == 0  # QEMU sets PF only while PIE is on
    assert rig.clock.next_deadline() is None


def test_big_clock_jump_fires_once_not_per_lost_tick(rig: Rig) -> None:
    rig.write(0x0B, 0x42)
    rig.clock.set_virtual(100 * NS)
    fired = rig.clock.run_due(100 * NS)
    assert fired <= 2
    assert rig.irq == 1
    assert rig.clock.next_deadline() > 100 * NS


def test_update_ended_interrupt(rig: Rig) -> None:
    rig.write(0x05, 0x12)
    rig.at(NS // 3)
    assert rig.read(0x0C) == 0  # no boundary crossed yet
    rig.write(0x0B, 0x12)  # UIE
    assert rig.clock.next_deadline() == NS
    rig.at(NS - 1)
    assert rig.irq == 0
    rig.at(NS)
    assert rig.irq == 1
    assert rig.read(0x0C) == 0x90  # IRQF | UF
    assert rig.irq == 0
    rig.at(2 * NS)
    assert rig.irq == 1
    assert rig.read(0x0C) == 0x90


def test_enabling_an_interrupt_with_its_flag_pending_raises_at_once(rig: Rig) -> None:
    rig.write(0x05, 0x12)
    rig.at(3 * NS)  # UF pending, not yet read
    assert rig.irq == 0
    rig.write(0x0B, 0x12)
    assert rig.irq == 1
    assert rig.read(0x0C) == 0x90


def test_alarm_interrupt(rig: Rig) -> None:
    rig.write(0x0B, 0x02)
    # Now 23:59:58; alarm at 00:00:05 (the next day).
    rig.write(0x01, 0x05)
    rig.write(0x03, 0x00)
    rig.write(0x05, 0x00)
    rig.read(0x0C)
    rig.write(0x0B, 0x22)  # AIE
    assert rig.clock.next_deadline() == 7 * NS
    rig.at(7 * NS - 1)
    assert rig.irq == 0
    rig.at(7 * NS)
    assert rig.irq == 1
    assert rig.read(0x0C) == 0xB0  # IRQF | AF | UF
    assert rig.irq == 0
    # Next match is a day later; nothing fires before.
    rig.at(7 * NS + 3600 * NS)
    assert rig.irq == 0


def test_alarm_dont_care_fires_every_second(rig: Rig) -> None:
    rig.write(0x01, 0xC0)
    rig.write(0x03, 0xC0)
    rig.write(0x05, 0xFF)
    rig.write(0x0B, 0x22)
    for s in range(1, 4):
        rig.at(s * NS)
        assert rig.irq == 1
        assert rig.read(0x0C) & 0xA0 == 0xA0


def test_alarm_minutes_dont_care(rig: Rig) -> None:
    # hh=any, mm=any, ss=10: fires when the seconds reach 10 (12 s from 23:59:58).
    rig.write(0x01, 0x10)
    rig.write(0x03, 0xC0)
    rig.write(0x05, 0xC0)
    rig.write(0x0B, 0x22)
    assert rig.clock.next_deadline() == 12 * NS
    rig.at(12 * NS)
    assert rig.irq == 1


def test_set_bit_clears_uie(rig: Rig) -> None:
    rig.write(0x0B, 0x92)
    assert rig.read(0x0B) == 0x82


def test_divider_reset_freezes_and_restarts_half_a_second_later(rig: Rig) -> None:
    rig.at(NS // 4)
    rig.write(0x0A, 0x66)  # divider reset
    rig.advance(10 * NS)
    assert rig.read(0) == 0x58
    rig.read(0x0C)  # drop the flags of the boundaries before the reset
    rig.advance(10 * NS)
    assert rig.read(0x0C) == 0  # no updates while in divider reset
    rig.write(0x0A, 0x26)
    rig.advance(NS // 2 - 1)
    assert rig.read(0) == 0x58
    rig.advance(1)
    assert rig.read(0) == 0x59


# ---- TIMEOFFSET ----------------------------------------------------------------------------------
def test_timeoffset_shifts_guest_time(rig: Rig) -> None:
    rig.m.handle_ioreq(IOREQ_TYPE_TIMEOFFSET, 0, 3600, 1, 8, 0)
    assert rig.rtc.guest_time() == T0 + 3600
    assert rig.read(4) == 0x00 and rig.read(7) == 0x01 and rig.read(8) == 0x03
    rig.m.handle_ioreq(IOREQ_TYPE_TIMEOFFSET, 0, (1 << 64) - 7200, 1, 8, 0)  # -7200
    assert rig.rtc.guest_time() == T0 - 3600
    assert rig.read(4) == 0x22
    assert rig.rtc.timeoffset_total == -3600


def test_alarm_flag_at_midnight_with_reset_alarm_registers(rig: Rig) -> None:
    # Alarm registers are 00:00:00 after power-on: AF sets when the clock reaches midnight,
    # whether or not AIE is on (only the interrupt needs AIE).
    rig.at(NS)
    assert rig.read(0x0C) == 0x10
    rig.at(2 * NS)
    assert rig.read(0x0C) == 0x30
    assert rig.irq == 0


# ---- NVRAM -------------------------------------------------------------------------------------
def _word(r: Rig, lo: int) -> int:
    return r.read(lo) | r.read(lo + 1) << 8


def test_nvram_64mib_machine() -> None:
    r = Rig(cfg=CmosConfig(64 * MIB, boot_order="cdn", nr_cpus=2))
    assert _word(r, 0x15) == 640
    assert _word(r, 0x17) == 63 * 1024 == _word(r, 0x30)
    assert _word(r, 0x34) == (64 - 16) * 16
    assert [r.read(i) for i in (0x5B, 0x5C, 0x5D)] == [0, 0, 0]
    assert r.read(0x5F) == 1
    assert r.read(0x3D) == 0x32  # hd first, cdrom second
    assert r.read(0x38) == 0x40  # network third, floppy signature check on
    assert r.read(0x10) == 0x00  # no floppies
    assert r.read(0x14) == 0x06  # FPU, PS/2 mouse
    assert r.read(0x12) == 0x00
    assert r.read(0x0F) == 0x00
    assert r.read(0x32) == 0x20


def test_nvram_6gib_machine() -> None:
    r = Rig(cfg=CmosConfig(6 * GIB, nr_cpus=4))
    # QEMU pc: 3 GiB below 4G (gigabyte_align), 3 GiB above.
    assert _word(r, 0x17) == 0xFFFF == _word(r, 0x30)
    assert _word(r, 0x34) == (3 * GIB - 16 * MIB) // 65536 == 0xBF00
    high = r.read(0x5B) | r.read(0x5C) << 8 | r.read(0x5D) << 16
    assert high == 3 * GIB // 65536 == 0xC000
    assert r.read(0x5F) == 3


def test_nvram_split_below_3_5g_and_override() -> None:
    r = Rig(cfg=CmosConfig(3 * GIB + GIB // 2 - MIB))  # just below max_ram_below_4g
    assert r.read(0x5B) | r.read(0x5C) << 8 == 0
    assert CmosConfig(4 * GIB, below_4g=0xF0000000).split() == (0xF0000000, 4 * GIB - 0xF0000000)
    assert CmosConfig(300 * 0x100, nr_cpus=300).split() == (300 * 0x100, 0)
    assert Rig(cfg=CmosConfig(64 * MIB, nr_cpus=300)).read(0x5F) == 0


def test_floppy_and_boot_options() -> None:
    r = Rig(cfg=CmosConfig(64 * MIB, boot_order="a", floppy_a="144", fd_bootchk=False))
    assert r.read(0x10) == 0x40
    assert r.read(0x14) == 0x07
    assert r.read(0x3D) == 0x01 and r.read(0x38) == 0x01
    r2 = Rig(cfg=CmosConfig(64 * MIB, floppy_a="288", floppy_b="120"))
    assert r2.read(0x10) == 0x52 and r2.read(0x14) == 0x47
    with pytest.raises(ValueError):
        Rtc(T0, CmosConfig(64 * MIB, boot_order="cdnx"))
    with pytest.raises(ValueError):
        Rtc(T0, CmosConfig(64 * MIB, boot_order="z"))
    r.rtc.set_boot_order("n")
    assert r.read(0x3D) == 0x04 and r.read(0x38) == 0x01


def test_checksum_and_set_byte(rig: Rig) -> None:
    def checksum() -> int:
        return sum(rig.read(i) for i in range(0x10, 0x2E))

    assert rig.read(0x2E) << 8 | rig.read(0x2F) == checksum()
    rig.rtc.set_hd_geometry(0, cylinders=1024, heads=16, sectors=63, translation=1)
    assert rig.read(0x12) == 0xF0 and rig.read(0x19) == 47
    assert [rig.read(0x1B + i) for i in range(9)] == [0x00, 0x04, 16, 0xFF, 0xFF, 0xC8,
                                                      0x00, 0x04, 63]
    assert rig.read(0x39) == 0x01
    rig.rtc.set_hd_geometry(1, cylinders=20, heads=4, sectors=17, translation=0)
    assert rig.read(0x12) == 0xFF and rig.read(0x1A) == 47 and rig.read(0x24) == 20
    rig.rtc.set_hd_geometry(3, cylinders=20, heads=4, sectors=17, translation=2)
    assert rig.read(0x39) == 0x81
    assert rig.read(0x2E) << 8 | rig.read(0x2F) == checksum()
    rig.rtc.set_byte(0x90, 0x5A)  # upper bank
    assert rig.rtc.get_byte(0x90) == 0x5A
    with pytest.raises(ValueError):
        rig.rtc.set_byte(0x100, 0)


def test_guest_nvram_write_and_upper_bank(rig: Rig) -> None:
    rig.write(0x40, 0xAB)
    assert rig.read(0x40) == 0xAB
    rig.write(0x0C, 0xFF)  # C and D are read-only
    rig.write(0x0D, 0x00)
    assert rig.read(0x0D) == 0x80
    rig.out(0x72, 0x40)
    rig.out(0x73, 0xCD)
    assert rig.inp(0x73) == 0xCD
    assert rig.read(0x40) == 0xAB  # separate banks
    rig.out(0x72, 0xC0)  # index bit 7 ignored
    assert rig.inp(0x73) == 0xCD
    assert rig.inp(0x70) == 0xFF and rig.inp(0x72) == 0xFF


def test_nmi_mask_bit_and_wide_access(rig: Rig) -> None:
    rig.out(0x70, 0x0F)
    assert rig.rtc.nmi_masked == 0 and rig.rtc.index == 0x0F
    rig.out(0x70, 0x8F)
    assert rig.rtc.nmi_masked == 1 and rig.rtc.index == 0x0F
    # A 16-bit write to 0x70 is split into bytes: index, then data.
    rig.out(0x70, 0x7745 | 0x80, size=2)
    assert rig.read(0x45) == 0x77


def test_reset_keeps_time_and_clears_interrupt_state(rig: Rig) -> None:
    rig.write(0x0F, 0x05)
    rig.write(0x0B, 0x6A)  # PIE, AIE, SQWE, 24h
    rig.advance(NS // 100)
    assert rig.irq == 1
    rig.m.reset()
    assert rig.irq == 0
    assert rig.read(0x0B) == 0x02
    assert rig.read(0x0F) == 0x00
    assert rig.read(0x0C) & 0xC0 == 0
    assert rig.rtc.guest_time() == T0
    rig.write(0x0F, 0xFE)  # S3 resume marker survives
    rig.m.reset()
    assert rig.read(0x0F) == 0xFE


# ---- snapshot -------------------------------------------------------------------------------------
def test_snapshot_round_trip(rig: Rig) -> None:
    rig.write(0x0B, 0x42)
    rig.write(0x50, 0x12)
    rig.out(0x72, 3)
    rig.out(0x73, 0x99)
    rig.advance(NS // 3)
    rig.m.handle_ioreq(IOREQ_TYPE_TIMEOFFSET, 0, 60, 1, 8, 0)
    snap = rig.rtc.snapshot()
    deadline = rig.clock.next_deadline()
    # mutate
    rig.write(0x0B, 0x82)
    rig.write(0, 0x00)
    rig.write(0x50, 0x00)
    rig.out(0x72, 0)
    rig.rtc.restore(snap)
    assert rig.rtc.snapshot() == snap
    assert rig.read(0x50) == 0x12
    assert rig.rtc.guest_time() == T0 + 60
    assert rig.clock.next_deadline() == deadline
    rig.advance(NS // 100)
    assert rig.irq == 1


def test_snapshot_restores_onto_another_clock(rig: Rig) -> None:
    rig.advance(5 * NS)
    snap = rig.rtc.snapshot()
    other = Rig(base_time=0)
    other.at(123 * NS)
    other.rtc.restore(snap)
    assert other.rtc.guest_time() == T0 + 5
    assert other.time_regs() == [0x03, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]


def test_snapshot_rejects_bad_state(rig: Rig) -> None:
    snap = rig.rtc.snapshot()
    bad = {**snap, "state": {**snap["state"], "cmos": b"\0" * 10}}
    with pytest.raises(SnapshotError):
        rig.rtc.restore(bad)
    bad = {**snap, "state": {**snap["state"], "base_rtc": "x"}}
    with pytest.raises(SnapshotError):
        rig.rtc.restore(bad)


# ---- helpers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 951782400, T0, 4102444800, -86400 * 365, 253402300799])
def test_gmtime_matches_calendar(t: int) -> None:
    y, mo, d, h, mi, s, wday = gmtime(t)
    assert mktimegm(y, mo, d, h, mi, s) == t
    if t >= 0:
        import time as _time
        g = _time.gmtime(t)
        assert (y, mo, d, h, mi, s) == tuple(g[:6])
        assert wday == (g.tm_wday + 1) % 7
