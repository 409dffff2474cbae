"""MC146818 RTC and CMOS NVRAM at 0x70/0x71, plus the upper 128-byte bank at 0x72/0x73.

Behaviour follows QEMU hw/rtc/mc146818rtc.c (what SeaBIOS and guest OSes were written
against) with the pc machine's NVRAM contents from hw/i386/pc.c (pc_cmos_init_late,
set_boot_dev, cmos_init_hd, x86_rtc_set_cpus_count).

Time model (QEMU's): guest RTC nanoseconds = base_rtc * 1e9 + (now - last_update) + offset,
where `now` is the injected clock. base_rtc starts at the caller's `base_time` (seconds since
the epoch, UTC) when the device is attached; guest writes to the time registers (while the
clock runs, or when SET is released), TIMEOFFSET deltas and divider resets move it. The time
registers are recomputed from that formula when read, so nothing ticks in the background.

Flags and interrupts are computed lazily. UF (update ended) and AF (alarm) are derived from
the time that passed since they were last looked at, whenever register C is read, register
B is written or a timer fires; a timer is armed only for an event whose interrupt is enabled
and whose flag is not yet set (UIE, AIE), and the periodic timer only while PIE is set (QEMU
never sets PF without PIE either). With no interrupt enabled the device arms no timer, and
with a virtual clock it moves only when the daemon moves the clock.

Interrupt: ISA IRQ 8, level = IRQF as in QEMU: raised when a newly set flag is enabled in B,
lowered by a read of C (which clears C) or a B write that leaves no enabled flag pending.

Deviations from QEMU, each deliberate:
- The upper bank at 0x72/0x73 (PIIX4 and later chipsets) exists; QEMU has only 128 bytes.
- UIP is computed from the sub-second phase (set for the last 244 us of every second while
  the clock runs); QEMU additionally latches it while its update timer is late, which a
  lazily computed model does not need.
- 12-hour alarm hours use the alarm register's own PM bit (QEMU uses the hours register's).
- Bytes 0x2E/0x2F hold the AT checksum of 0x10-0x2D (QEMU leaves them 0; SeaBIOS ignores
  them, DOS-era software checks them). `set_byte` keeps it current.
- Lost periodic ticks are discarded when the clock jumps by more than a period (QEMU's
  default "discard" policy, applied so that a large CLOCK step fires one interrupt, not
  thousands of timer callbacks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from devmodel.core.bus import Range
from devmodel.core.clock import Timer
from devmodel.core.device import Device, SnapshotError
from devmodel.core.irq import IrqLine

log = logging.getLogger("devmodel.rtc")

NS = 1_000_000_000
RTC_CLOCK_RATE = 32768
UIP_HOLD_NS = 8 * NS // RTC_CLOCK_RATE  # 244140 ns
RTC_IRQ = 8

# Register indices
SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0, 1, 2, 3, 4, 5
DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
SHUTDOWN_STATUS = 0x0F
CENTURY = 0x32
IBM_PS2_CENTURY = 0x37
TIME_REGS = frozenset({SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY})

REG_A_UIP = 0x80
REG_B_SET, REG_B_PIE, REG_B_AIE, REG_B_UIE = 0x80, 0x40, 0x20, 0x10
REG_B_SQWE, REG_B_DM, REG_B_24H, REG_B_DSE = 0x08, 0x04, 0x02, 0x01
REG_C_IRQF, REG_C_PF, REG_C_AF, REG_C_UF = 0x80, 0x40, 0x20, 0x10
REG_C_MASK = 0x70
REG_D_VRT = 0x80

CHECKSUM_FIRST, CHECKSUM_LAST = 0x10, 0x2D
CHECKSUM_HI, CHECKSUM_LO = 0x2E, 0x2F

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# QEMU boot_device2nibble
BOOT_NIBBLES = {"a": 1, "b": 1, "c": 2, "d": 3, "n": 4}
# QEMU cmos_get_fd_drive_type
FLOPPY_TYPES = {None: 0, "none": 0, "144": 4, "288": 5, "120": 2}


@dataclass(frozen=True)
class CmosConfig:
    """What the pc machine writes into NVRAM (QEMU pc_cmos_init_late and friends).

    below_4g defaults to QEMU's pc split: all RAM below 4 GiB when it is smaller than
    max_ram_below_4g (3.5 GiB), otherwise 3 GiB below and the rest above (gigabyte_align)."""

    ram_size: int
    boot_order: str = "cad"
    nr_cpus: int = 1
    floppy_a: str | None = None  # None/"none", "144", "288", "120"
    floppy_b: str | None = None
    fd_bootchk: bool = True  # 0x38 bit 0 = !fd_bootchk
    below_4g: int | None = None
    max_ram_below_4g: int = 0xE0000000

    def split(self) -> tuple[int, int]:
        if self.below_4g is not None:
            below = min(self.below_4g, self.ram_size)
            return below, self.ram_size - below
        lowmem = self.max_ram_below_4g
        if self.ram_size >= lowmem and lowmem > 0xC0000000:
            lowmem = 0xC0000000
        if self.ram_size >= lowmem:
            return lowmem, self.ram_size - lowmem
        return self.ram_size, 0


def to_bcd(a: int) -> int:
    return (((a // 10) << 4) | (a % 10)) & 0xFF


def mktimegm(year: int, mon: int, mday: int, hour: int, minute: int, sec: int) -> int:
    """QEMU's mktimegm (days-from-civil), total for any integer input; mon is 1-based."""
    y, m = year, mon
    if m < 3:
        m += 12
        y -= 1
    days = mday + (153 * m - 457) // 5 + 365 * y + y // 4 - y // 100 + y // 400 - 719469
    return 86400 * days + 3600 * hour + 60 * minute + sec


def gmtime(t: int) -> tuple[int, int, int, int, int, int, int]:
    """(year, month 1-12, mday, hour, min, sec, wday 0=Sunday) for any integer t; pure
    arithmetic (H. Hinnant's civil_from_days) so no guest value can raise."""
    days, rem = divmod(t, 86400)
    hour, rem = divmod(rem, 3600)
    minute, sec = divmod(rem, 60)
    wday = (days + 4) % 7  # 1970-01-01 was a Thursday
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (1 if m <= 2 else 0), m, d, hour, minute, sec, wday)


def _want(timer: Timer | None, deadline: int | None) -> None:
    """Ask for a callback at `deadline`. Never cancels and only re-arms for an earlier
    deadline, so a guest toggling enables cannot pile up stale entries in the clock's heap;
    callbacks re-check what is due (a wake-up with nothing to do is harmless)."""
    if timer is None or deadline is None:
        return
    if timer.deadline is None or deadline < timer.deadline:
        timer.arm(deadline)


class Rtc(Device):
    """The RTC/CMOS. Constructor: Rtc(base_time, CmosConfig(...)).

    Ports 0x70 (index, bit 7 = NMI mask), 0x71 (data), 0x72 (upper-bank index), 0x73."""

    SNAPSHOT_VERSION = 1
    SNAPSHOT_FIELDS = ("cmos", "ext", "index", "ext_index", "nmi_masked", "base_rtc",
                       "offset", "elapsed_ns", "period", "periodic_in_ns",
                       "timeoffset_total")

    def __init__(self, base_time: int, config: CmosConfig, name: str = "rtc") -> None:
        super().__init__(name)
        self.base_time = int(base_time)
        self.config = config
        self.cmos = bytearray(128)
        self.ext = bytearray(128)
        self.index = 0
        self.ext_index = 0
        self.nmi_masked = 0
        self.base_rtc = self.base_time
        self.last_update = 0
        self.offset = 0
        self.period = 0  # periodic interval in 32 kHz ticks; 0 = no periodic timer
        self.next_periodic_time = 0
        self.next_alarm_ns = 0
        self.checked_ns = 0  # UF/AF are accounted for up to this clock time
        self.timeoffset_total = 0
        self.irq: IrqLine | None = None
        self._periodic: Timer | None = None
        self._update: Timer | None = None
        self._init_nvram()

    # ---- NVRAM contents (pc machine) -----------------------------------------------------
    def _init_nvram(self) -> None:
        c = self.cmos
        cfg = self.config
        c[REG_A] = 0x26
        c[REG_B] = REG_B_24H
        c[REG_C] = 0
        c[REG_D] = REG_D_VRT
        below, above = cfg.split()
        base = min(below // KIB, 640)
        c[0x15], c[0x16] = base & 0xFF, base >> 8 & 0xFF
        ext = min((below - MIB) // KIB if below > MIB else 0, 0xFFFF)
        c[0x17], c[0x18] = ext & 0xFF, ext >> 8
        c[0x30], c[0x31] = ext & 0xFF, ext >> 8
        mid = min((below - 16 * MIB) // (64 * KIB) if below > 16 * MIB else 0, 0xFFFF)
        c[0x34], c[0x35] = mid & 0xFF, mid >> 8
        high = above // (64 * KIB)
        c[0x5B], c[0x5C], c[0x5D] = high & 0xFF, high >> 8 & 0xFF, high >> 16 & 0xFF
        # x86_rtc_set_cpus_count: more than 255 CPUs do not fit, the BIOS must use fw_cfg.
        c[0x5F] = 0 if cfg.nr_cpus > 0xFF else max(cfg.nr_cpus - 1, 0)
        self._set_boot_order(cfg.boot_order, cfg.fd_bootchk)
        fa = FLOPPY_TYPES.get(cfg.floppy_a)
        fb = FLOPPY_TYPES.get(cfg.floppy_b)
        if fa is None or fb is None:
            raise ValueError(f"floppy types must be one of {sorted(k for k in FLOPPY_TYPES if k)}")
        c[0x10] = fa << 4 | fb
        equip = 0x02 | 0x04  # FPU, PS/2 mouse
        nb = (fa != 0) + (fb != 0)
        equip |= {0: 0, 1: 0x01, 2: 0x41}[nb]
        c[0x14] = equip
        self._set_clock_regs(self.base_rtc)
        self._update_checksum()

    def _set_boot_order(self, order: str, fd_bootchk: bool) -> None:
        if len(order) > 3:
            raise ValueError("at most 3 boot devices for PC")
        bds = [0, 0, 0]
        for i, ch in enumerate(order):
            nib = BOOT_NIBBLES.get(ch)
            if nib is None:
                raise ValueError(f"invalid boot device for PC: {ch!r}")
            bds[i] = nib
        self.cmos[0x3D] = bds[1] << 4 | bds[0]
        self.cmos[0x38] = bds[2] << 4 | (0 if fd_bootchk else 1)

    def set_boot_order(self, order: str, fd_bootchk: bool | None = None) -> None:
        """QEMU pc_boot_set (e.g. from QMP/-boot once)."""
        if fd_bootchk is None:
            fd_bootchk = not self.cmos[0x38] & 1
        self._set_boot_order(order, fd_bootchk)

    def _update_checksum(self) -> None:
        s = sum(self.cmos[CHECKSUM_FIRST : CHECKSUM_LAST + 1])
        self.cmos[CHECKSUM_HI], self.cmos[CHECKSUM_LO] = s >> 8 & 0xFF, s & 0xFF

    def set_byte(self, index: int, value: int) -> None:
        """Machine-side NVRAM store (QEMU mc146818rtc_set_cmos_data): 0-127 low bank,
        128-255 upper bank. Keeps the 0x2E/0x2F checksum current."""
        if not 0 <= index <= 0xFF:
            raise ValueError(f"CMOS index {index:#x} out of range")
        if index >= 0x80:
            self.ext[index - 0x80] = value & 0xFF
            return
        self.cmos[index] = value & 0xFF
        if CHECKSUM_FIRST <= index <= CHECKSUM_LAST:
            self._update_checksum()

    def get_byte(self, index: int) -> int:
        if not 0 <= index <= 0xFF:
            raise ValueError(f"CMOS index {index:#x} out of range")
        return self.ext[index - 0x80] if index >= 0x80 else self.cmos[index]

    def set_hd_geometry(self, drive: int, cylinders: int, heads: int, sectors: int,
                        translation: int = 1) -> None:
        """What QEMU pc_cmos_init_late writes for IDE drive `drive` (0-3 = primary master,
        primary slave, secondary master, secondary slave). translation is the CMOS code
        (0 none, 1 LBA, 2 large, 3 r-echs) in 0x39. Drives 0/1 also get type 47 and a
        parameter block (0x19/0x1B, 0x1A/0x24) and their nibble of 0x12."""
        if not 0 <= drive <= 3 or not 0 <= translation <= 3:
            raise ValueError("drive 0-3, translation 0-3")
        if drive < 2:
            type_ofs, info = (0x19, 0x1B) if drive == 0 else (0x1A, 0x24)
            vals = [cylinders & 0xFF, cylinders >> 8 & 0xFF, heads & 0xFF, 0xFF, 0xFF,
                    0xC0 | (0x08 if heads > 8 else 0), cylinders & 0xFF, cylinders >> 8 & 0xFF,
                    sectors & 0xFF]
            self.set_byte(type_ofs, 47)
            for i, v in enumerate(vals):
                self.set_byte(info + i, v)
            self.set_byte(0x12, self.cmos[0x12] | (0xF0 if drive == 0 else 0x0F))
        shift = 2 * drive
        self.set_byte(0x39, (self.cmos[0x39] & ~(3 << shift)) | translation << shift)

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx) -> None:
        super().attach(ctx)
        self.irq = ctx.irqs.isa(RTC_IRQ, self.name)
        self._periodic = ctx.clock.timer(self._periodic_fired, f"{self.name}.periodic")
        self._update = ctx.clock.timer(self._update_fired, f"{self.name}.update")
        now = ctx.clock.now()
        self.base_rtc = self.base_time
        self.last_update = now
        self.offset = 0
        self.checked_ns = now
        self._set_clock_regs(self.base_rtc)
        self.next_alarm_ns = self._compute_next_alarm(now)
        ctx.machine.timeoffset_listeners.append(self.timeoffset)

    def pio_ranges(self) -> list[Range]:
        ones = frozenset({1})
        return [Range(0x70, 2, self._read, self._write, self.name, self, ones),
                Range(0x72, 2, self._ext_read, self._ext_write, f"{self.name}-nvram2", self, ones)]

    def reset(self) -> None:
        """QEMU rtc_reset_enter/hold: time and NVRAM survive; 0x0F cleared unless an S3
        resume (0xFE) is pending; PIE/AIE/SQWE and the C flags cleared; IRQ lowered."""
        if self.ctx is None:
            return
        now = self._now()
        self._sync_flags(now)
        if self.cmos[SHUTDOWN_STATUS] != 0xFE:
            self.cmos[SHUTDOWN_STATUS] = 0
        self.cmos[REG_B] &= ~(REG_B_PIE | REG_B_AIE | REG_B_SQWE) & 0xFF
        self.cmos[REG_C] &= ~(REG_C_UF | REG_C_IRQF | REG_C_PF | REG_C_AF) & 0xFF
        self._periodic_update(now, 0, False)
        self._check_update_timer(now)
        self._set_irq()

    # ---- time ----------------------------------------------------------------------------
    def _now(self) -> int:
        assert self.ctx is not None
        return self.ctx.clock.now()

    def _running(self) -> bool:
        return not self.cmos[REG_B] & REG_B_SET and (self.cmos[REG_A] & 0x70) <= 0x20

    def _divider_reset(self) -> bool:
        return (self.cmos[REG_A] & 0x60) == 0x60

    def guest_ns(self, now: int | None = None) -> int:
        if now is None:
            now = self._now()
        return self.base_rtc * NS + now - self.last_update + self.offset

    def guest_time(self, now: int | None = None) -> int:
        """Guest RTC seconds since the epoch (UTC), as the clock runs (not the frozen
        registers while SET is held)."""
        return self.guest_ns(now) // NS

    def _from_bcd(self, a: int) -> int:
        if (a & 0xC0) == 0xC0:
            return -1
        if self.cmos[REG_B] & REG_B_DM:
            return a
        return (a >> 4) * 10 + (a & 0x0F)

    def _to_bcd(self, a: int) -> int:
        return a & 0xFF if self.cmos[REG_B] & REG_B_DM else to_bcd(a)

    def _reg_hour(self, v: int) -> int:
        """An hours register value to 0-23 (or -1 for don't care), honouring 12h mode."""
        if (v & 0xC0) == 0xC0:
            return -1
        if self.cmos[REG_B] & REG_B_24H:
            return self._from_bcd(v)
        h = self._from_bcd(v & 0x7F) % 12
        return h + 12 if v & 0x80 else h

    def _set_clock_regs(self, t: int) -> None:
        """QEMU rtc_set_cmos from seconds since the epoch (base_year 0)."""
        year, mon, mday, hour, minute, sec, wday = gmtime(t)
        c = self.cmos
        c[SECONDS] = self._to_bcd(sec)
        c[MINUTES] = self._to_bcd(minute)
        if c[REG_B] & REG_B_24H:
            c[HOURS] = self._to_bcd(hour)
        else:
            h = hour % 12 or 12
            c[HOURS] = self._to_bcd(h) | (0x80 if hour >= 12 else 0)
        c[DAY_OF_WEEK] = self._to_bcd(wday + 1)
        c[DAY_OF_MONTH] = self._to_bcd(mday)
        c[MONTH] = self._to_bcd(mon)
        c[YEAR] = self._to_bcd(year % 100)
        c[CENTURY] = self._to_bcd(year // 100)

    def _regs_time(self) -> int:
        """QEMU rtc_get_time + mktimegm: the time registers as seconds since the epoch."""
        c = self.cmos
        sec = self._from_bcd(c[SECONDS])
        minute = self._from_bcd(c[MINUTES])
        hour = self._reg_hour(c[HOURS])
        mday = self._from_bcd(c[DAY_OF_MONTH])
        mon = self._from_bcd(c[MONTH])
        year = self._from_bcd(c[YEAR]) + self._from_bcd(c[CENTURY]) * 100
        return mktimegm(year, mon, mday, hour, minute, sec)

    def _update_time(self, now: int) -> None:
        """QEMU rtc_update_time: refresh the time registers unless SET is held."""
        if not self.cmos[REG_B] & REG_B_SET:
            self._set_clock_regs(self.guest_ns(now) // NS)

    def _set_time(self, now: int) -> None:
        """QEMU rtc_set_time: the registers become the new base (offset kept)."""
        self.base_rtc = self._regs_time()
        self.last_update = now

    def timeoffset(self, delta: int) -> None:
        """TIMEOFFSET listener (Machine.timeoffset_listeners): shift guest time by delta s."""
        if self.ctx is None:
            return
        now = self._now()
        self._sync_flags(now)
        self.base_rtc += int(delta)
        self.timeoffset_total += int(delta)
        self._update_time(now)
        self._check_update_timer(now)
        self._set_irq()

    # ---- flags and timers ------------------------------------------------------------------
    def _next_update(self, now: int) -> int:
        return now + NS - self.guest_ns(now) % NS

    def _compute_next_alarm(self, now: int) -> int:
        """QEMU get_next_alarm/check_update_timer: clock time of the update at which the
        alarm registers match."""
        next_update = self._next_update(now)
        c = self.cmos
        if self._running():
            _, _, _, cur_hour, cur_min, cur_sec, _ = gmtime(self.guest_ns(now) // NS)
        else:
            cur_sec = self._from_bcd(c[SECONDS])
            cur_min = self._from_bcd(c[MINUTES])
            cur_hour = self._reg_hour(c[HOURS])
            # Garbage in a frozen register: treat as midnight (only the alarm time moves).
            cur_sec, cur_min, cur_hour = (x if 0 <= x < lim else 0 for x, lim in
                                          ((cur_sec, 60), (cur_min, 60), (cur_hour, 24)))
        a_sec = self._from_bcd(c[SECONDS_ALARM])
        a_min = self._from_bcd(c[MINUTES_ALARM])
        a_hour = self._reg_hour(c[HOURS_ALARM])
        secs = _alarm_delta(a_hour, a_min, a_sec, cur_hour, cur_min, cur_sec)
        return next_update + (secs - 1) * NS

    def _sync_flags(self, now: int) -> int:
        """Account for updates since checked_ns: sets UF/AF (and IRQF if a newly set flag is
        enabled). Returns the newly set flags. The IRQ line is the caller's business."""
        new = 0
        if now > self.checked_ns and not self._divider_reset():
            if self._next_update(self.checked_ns) <= now:
                irqs = REG_C_UF
                if now >= self.next_alarm_ns:
                    irqs |= REG_C_AF
                c = self.cmos
                new = irqs & ~c[REG_C]
                c[REG_C] |= irqs
                if new & c[REG_B]:
                    c[REG_C] |= REG_C_IRQF
                self.checked_ns = now
                if irqs & REG_C_AF:
                    self.next_alarm_ns = self._compute_next_alarm(now)
                return new
        if now > self.checked_ns:
            self.checked_ns = now
        return new

    def _check_update_timer(self, now: int) -> None:
        """Recompute the alarm target and ask for a wake-up only for enabled events whose
        flag is still clear (the lazy counterpart of QEMU check_update_timer)."""
        self.next_alarm_ns = self._compute_next_alarm(now)
        if self._divider_reset():
            return
        c = self.cmos
        want: int | None = None
        if c[REG_B] & REG_B_UIE and not c[REG_C] & REG_C_UF:
            want = self._next_update(now)
        if c[REG_B] & REG_B_AIE and not c[REG_C] & REG_C_AF:
            want = self.next_alarm_ns if want is None else min(want, self.next_alarm_ns)
        _want(self._update, want)

    def _update_fired(self, deadline: int) -> None:
        now = max(self._now(), deadline)
        self._sync_flags(now)
        self._set_irq()
        self._check_update_timer(now)

    def _period_ticks(self) -> int:
        if not self.cmos[REG_B] & REG_B_PIE:
            return 0
        code = self.cmos[REG_A] & 0x0F
        if not code:
            return 0
        if code <= 2:
            code += 7
        return 1 << (code - 1)

    def _periodic_update(self, current: int, old_period: int, period_change: bool) -> None:
        """QEMU periodic_timer_update with the discard lost-tick policy."""
        period = self._period_ticks()
        self.period = period
        if not period:
            return  # a pending wake-up finds period == 0 and does nothing
        cur_clock = current * RTC_CLOCK_RATE // NS
        lost = 0
        if old_period and period_change:
            next_clock = self.next_periodic_time * RTC_CLOCK_RATE // NS
            lost = max(cur_clock - (next_clock - old_period), 0)
        lost = min(lost, period)
        next_irq_clock = cur_clock + period - lost
        self.next_periodic_time = next_irq_clock * NS // RTC_CLOCK_RATE + 1
        _want(self._periodic, self.next_periodic_time)

    def _periodic_fired(self, deadline: int) -> None:
        now = max(self._now(), deadline)
        if not self.period:
            return
        if now < self.next_periodic_time:
            _want(self._periodic, self.next_periodic_time)  # an early (stale) wake-up
            return
        period_ns = self.period * NS // RTC_CLOCK_RATE
        base = self.next_periodic_time if now - self.next_periodic_time < period_ns else now
        self._periodic_update(base, self.period, False)
        c = self.cmos
        c[REG_C] |= REG_C_PF
        if c[REG_B] & REG_B_PIE:
            c[REG_C] |= REG_C_IRQF
            self._set_irq()

    def _set_irq(self) -> None:
        if self.irq is not None:
            self.irq.set_level(self.cmos[REG_C] & REG_C_IRQF)

    def _uip(self, now: int) -> bool:
        return self._running() and self.guest_ns(now) % NS >= NS - UIP_HOLD_NS

    # ---- port access ---------------------------------------------------------------------
    def _read(self, off: int, size: int) -> int:
        if off == 0:
            return 0xFF  # the index port is write-only (QEMU returns 0xff)
        return self.read_data()

    def _write(self, off: int, size: int, value: int) -> None:
        if off == 0:
            self.index = value & 0x7F
            self.nmi_masked = value >> 7 & 1
        else:
            self.write_data(value & 0xFF)

    def read_data(self) -> int:
        idx = self.index
        now = self._now()
        c = self.cmos
        if idx == IBM_PS2_CENTURY:
            idx = self.index = CENTURY
        if idx in TIME_REGS:
            if self._running():
                self._update_time(now)
            return c[idx]
        if idx == REG_A:
            return c[REG_A] | (REG_A_UIP if self._uip(now) else 0)
        if idx == REG_C:
            self._sync_flags(now)
            ret = c[REG_C]
            c[REG_C] = 0
            if self.irq is not None:
                self.irq.lower()
            if ret & (REG_C_UF | REG_C_AF):
                self._check_update_timer(now)
            return ret
        return c[idx]

    def write_data(self, data: int) -> None:
        idx = self.index
        now = self._now()
        c = self.cmos
        if idx in (SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM):
            self._sync_flags(now)
            c[idx] = data
            self._check_update_timer(now)
            self._set_irq()
            return
        if idx == IBM_PS2_CENTURY:
            idx = self.index = CENTURY
        if idx in TIME_REGS:
            c[idx] = data
            if self._running():
                self._sync_flags(now)
                self._set_time(now)
                self._check_update_timer(now)
                self._set_irq()
            return
        if idx == REG_A:
            self._write_a(data, now)
            return
        if idx == REG_B:
            self._write_b(data, now)
            return
        if idx in (REG_C, REG_D):
            return  # read-only
        c[idx] = data

    def _write_a(self, data: int, now: int) -> None:
        c = self.cmos
        self._sync_flags(now)
        update_periodic = (c[REG_A] ^ data) & 0x0F
        old_period = self._period_ticks()
        if (data & 0x60) == 0x60:
            if self._running():
                self._update_time(now)
        elif self._divider_reset() and (data & 0x70) <= 0x20:
            # Leaving divider reset: the first update comes half a second later.
            if not c[REG_B] & REG_B_SET:
                self.offset = NS // 2
                self._set_time(now)
        c[REG_A] = data & ~REG_A_UIP & 0xFF
        if update_periodic:
            self._periodic_update(now, old_period, True)
        self._check_update_timer(now)
        self._set_irq()

    def _write_b(self, data: int, now: int) -> None:
        c = self.cmos
        self._sync_flags(now)
        update_periodic = (c[REG_B] ^ data) & REG_B_PIE
        old_period = self._period_ticks()
        if data & REG_B_SET:
            if self._running():
                self._update_time(now)
            data &= ~REG_B_UIE
        elif c[REG_B] & REG_B_SET and (c[REG_A] & 0x70) <= 0x20:
            # Releasing SET: the registers become the time, the sub-second phase runs on.
            self.offset = self.guest_ns(now) % NS
            self._set_time(now)
        if data & c[REG_C] & REG_C_MASK:
            c[REG_C] |= REG_C_IRQF
        else:
            c[REG_C] &= ~REG_C_IRQF & 0xFF
        c[REG_B] = data & 0xFF
        self._set_irq()
        if update_periodic:
            self._periodic_update(now, old_period, True)
        self._check_update_timer(now)

    def _ext_read(self, off: int, size: int) -> int:
        return 0xFF if off == 0 else self.ext[self.ext_index]

    def _ext_write(self, off: int, size: int, value: int) -> None:
        if off == 0:
            self.ext_index = value & 0x7F
        else:
            self.ext[self.ext_index] = value & 0xFF

    # ---- snapshot -------------------------------------------------------------------------
    # Clock-relative values travel as durations, so a snapshot restores onto any clock.
    @property
    def elapsed_ns(self) -> int:
        return self._now() - self.last_update if self.ctx is not None else 0

    @elapsed_ns.setter
    def elapsed_ns(self, v: int) -> None:
        self.last_update = self._now() - int(v)

    @property
    def periodic_in_ns(self) -> int:
        if self.ctx is None or not self.period:
            return 0
        return self.next_periodic_time - self._now()

    @periodic_in_ns.setter
    def periodic_in_ns(self, v: int) -> None:
        self._restored_periodic_in = int(v)

    def snapshot(self) -> dict[str, Any]:
        if self.ctx is not None:
            self._sync_flags(self._now())  # QEMU pre_save: bring the flags up to date
        return super().snapshot()

    def restore(self, snap: dict[str, Any]) -> None:
        state = snap.get("state", {})
        for f in ("index", "ext_index", "base_rtc", "offset", "elapsed_ns", "period",
                  "periodic_in_ns", "timeoffset_total", "nmi_masked"):
            if f in state and not isinstance(state[f], int):
                raise SnapshotError(f"{self.name}: {f} must be an integer")
        super().restore(snap)

    def post_restore(self) -> None:
        self.index &= 0x7F
        self.ext_index &= 0x7F
        self.nmi_masked &= 1
        if self.ctx is None:
            return
        now = self._now()
        self.checked_ns = now
        self.period = self._period_ticks()
        if self.period:
            self.next_periodic_time = now + getattr(self, "_restored_periodic_in", 0)
            _want(self._periodic, self.next_periodic_time)
        self._check_update_timer(now)
        self._set_irq()


def _alarm_delta(a_hour: int, a_min: int, a_sec: int, cur_hour: int, cur_min: int,
                 cur_sec: int) -> int:
    """QEMU get_next_alarm: seconds (1..86400) from the current time to the alarm; -1 in an
    alarm field is "don't care"."""
    alarm_hour, alarm_min, alarm_sec = a_hour, a_min, a_sec
    # Out-of-range (but not don't-care) alarm values never match; wrap them as QEMU does.
    if alarm_hour == -1:
        alarm_hour = cur_hour
        if alarm_min == -1:
            alarm_min = cur_min
            if alarm_sec == -1:
                alarm_sec = cur_sec + 1
            elif cur_sec > alarm_sec:
                alarm_min += 1
        elif cur_min == alarm_min:
            if alarm_sec == -1:
                alarm_sec = cur_sec + 1
            elif cur_sec > alarm_sec:
                alarm_hour += 1
            if alarm_sec == 60:
                alarm_sec = 0
                alarm_hour += 1
        elif cur_min > alarm_min:
            alarm_hour += 1
    elif cur_hour == alarm_hour:
        if alarm_min == -1:
            alarm_min = cur_min
            if alarm_sec == -1:
                alarm_sec = cur_sec + 1
            elif cur_sec > alarm_sec:
                alarm_min += 1
            if alarm_sec == 60:
                alarm_sec = 0
                alarm_min += 1
            alarm_min %= 60
        elif cur_min == alarm_min:
            if alarm_sec == -1:
                alarm_sec = cur_sec + 1
            alarm_sec %= 60
    if alarm_min == -1:
        alarm_min = 0
    if alarm_sec == -1:
        alarm_sec = 0
    if alarm_sec == 60:
        alarm_sec = 0
        alarm_min += 1
    if alarm_min == 60:
        alarm_min = 0
        alarm_hour += 1
    alarm_hour %= 24
    hour = alarm_hour - cur_hour
    minute = hour * 60 + alarm_min - cur_min
    sec = minute * 60 + alarm_sec - cur_sec
    if sec <= 0:
        sec += 86400
    # Garbage alarm registers can push this outside a day; the alarm then fires within one.
    return min(max(sec, 1), 86400)
