"""PIIX4 power-management function (8086:7113) at 00:01.3 of the pc machine, SMM disabled,
as QEMU hw/acpi/piix4.c + hw/acpi/core.c + hw/isa/apm.c.

PCI config: revision 3, class 0x068000 (bridge/other), header type 0, interrupt pin A,
status 0x0280, subsystem 1af4:1100. Device-specific registers (QEMU realize/reset/
machine_ready): PMBA 0x40 (I/O base, 64 bytes, bits 15:6; bit 0 reads 1), PMREGMISC 0x80
bit 0 (PM I/O enable), DEVACTB 0x58-0x5B with 0x5B = 0x02 (APMC_EN: "SMM already set up",
which is what makes SeaBIOS skip its SMM relocation), 0x5F/0x63/0x67 (LPT/COM decode
hints), SMBBA 0x90 (= smb_io_base | 1) and SMBHSTCFG 0xD2 = 0x09. The SMBus controller is
not implemented: nothing is mapped at SMBBA, so its ports read all-ones.

The PM I/O block is not a BAR: it appears at PMBA & 0xFFC0 while PMREGMISC bit 0 is set,
regardless of the PCI command register (QEMU pm_io_space_update). When 0x40-0x43 or 0x80
change what is decoded, the device calls `on_remap()`; the machine then replaces the old
range with `pm_io_ranges()` (see the module's report for the exact wiring).

PM I/O block (offsets from PMBA):
  0x00 PM1a_STS (16, write-1-to-clear)   0x02 PM1a_EN (16)
  0x04 PM1a_CNT (16: SCI_EN, SLP_TYP, SLP_EN)   0x08 PM_TMR (32, read-only, 24 bits)
Fixed ports: GPE0 at 0xAFE0 (STS 2 bytes, EN 2 bytes), APM 0xB2 (control) / 0xB3 (status).

SCI: ISA IRQ 9 (QEMU wires the PM function's SCI to GSI 9, not to its INTA), level =
(PM1_STS & PM1_EN & (RTC|PWRBTN|GBL|TMR)) != 0 or (GPE0_STS[0] & GPE0_EN[0]) != 0 (QEMU
acpi_update_sci; SCI_EN does not gate it there either).

Sleep: SLP_EN with SLP_TYP 0 is soft-off (QEMU's DSDT declares _S5 = {0, 0}), and SLP_TYP
== s4_val (2) is S4, also a power-off; both call machine.request_shutdown(SHUTDOWN_POWEROFF).
SLP_TYP 1 (S3) is not supported here and is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devmodel.core.bus import Range
from devmodel.core.clock import Timer
from devmodel.core.device import SnapshotError
from devmodel.core.irq import IrqLine
from devmodel.core.pci import PciDevice
from devmodel.core.regs import Reg, RegisterFile
from devmodel.wire.constants import SHUTDOWN_POWEROFF

NS = 1_000_000_000
PM_TIMER_FREQUENCY = 3579545
PM_IO_LEN = 64
SCI_IRQ = 9
GPE_BASE = 0xAFE0
GPE_LEN = 4
APM_CNT_PORT = 0xB2
ACPI_ENABLE = 0xF1
ACPI_DISABLE = 0xF0
DEFAULT_SMB_IO_BASE = 0xB100  # QEMU pc_piix

# PM1 event bits (QEMU include/hw/acpi/acpi.h)
TMR_STS = 0x0001
BM_STS = 0x0010
GBL_STS = 0x0020
PWRBTN_STS = 0x0100
SLPBTN_STS = 0x0200
RTC_STS = 0x0400
WAK_STS = 0x8000
TMR_EN = 0x0001
GBL_EN = 0x0020
PWRBTN_EN = 0x0100
SLPBTN_EN = 0x0200
RTC_EN = 0x0400
PM1_COMMON_ENABLED = RTC_EN | PWRBTN_EN | GBL_EN | TMR_EN
# PM1 control bits
SCI_EN = 0x0001
SLP_TYP_MASK = 0x1C00
SLP_EN = 0x2000

PMBA = 0x40
PMREGMISC = 0x80
DEVACTB = 0x58
SMBBA = 0x90
SMBHSTCFG = 0xD2


def _pm_ticks(ns: int) -> int:
    return ns * PM_TIMER_FREQUENCY // NS


def _ticks_ns(ticks: int) -> int:
    # Rounded up, so that at the deadline the counter has reached `ticks` (QEMU rounds down
    # and can report TMR_STS one tick before bit 23 toggles).
    return -(-ticks * NS // PM_TIMER_FREQUENCY)


class PiixPm(PciDevice):
    """Constructor: PiixPm(smb_io_base=0xB100, acpi_only=True, s4_val=2, com1=False,
    com2=False, lpt1=False). Attach at slot 1, function 3. Set `on_remap` before the guest
    runs. `power_button()` is the QMP system_powerdown entry."""

    SNAPSHOT_FIELDS = ("config", "irq_level", "pm_regs", "gpe_sts", "gpe_en", "apmc",
                       "apms", "overflow_in_ticks")

    def __init__(self, *, smb_io_base: int = DEFAULT_SMB_IO_BASE, acpi_only: bool = True,
                 s4_val: int = 2, com1: bool = False, com2: bool = False, lpt1: bool = False,
                 name: str = "piix4-pm") -> None:
        super().__init__(name, vendor_id=0x8086, device_id=0x7113, class_code=0x068000,
                         revision=0x03, irq_pin=1)
        self.smb_io_base = smb_io_base & 0xFFC0
        # QEMU: acpi_only = !smm_compat && !smm_enabled. SCI_EN is then set at reset and the
        # ACPI_ENABLE/DISABLE commands at 0xB2 leave it alone.
        self.acpi_only = acpi_only
        self.s4_val = s4_val
        self.on_remap: Callable[[], None] | None = None
        self.sci: IrqLine | None = None
        self._tmr: Timer | None = None
        self.regs = RegisterFile(
            [
                Reg("pm1_sts", 0x00, 2, wmask=0, w1c=0xFFFF, on_read=self._sts_read,
                    on_write=self._sts_written),
                Reg("pm1_en", 0x02, 2, on_write=self._en_written),
                Reg("pm1_cnt", 0x04, 2, on_write=self._cnt_written),
                Reg("pm_tmr", 0x08, 4, wmask=0, on_read=self._tmr_read),
            ],
            on_hole=self.guest_error, hole=0xFF,
        )
        self.gpe_sts = [0, 0]
        self.gpe_en = [0, 0]
        self.apmc = 0
        self.apms = 0
        self.overflow_time = 0  # PM timer ticks at which TMR_STS next sets
        self.smi_requests = 0
        self.s3_requests = 0
        self._mapped_key: tuple[bool, int] = (False, 0)
        self._pm_range: Range | None = None

        c = self.config
        c[0x06], c[0x07] = 0x80, 0x02  # status: fast back-to-back, DEVSEL medium
        c[0x09] = 0x00
        # PMBA: bits 15:6 hold the base; bit 0 is a hard-wired 1 (I/O space indicator).
        self.wmask[PMBA : PMBA + 4] = bytes((0xC0, 0xFF, 0x00, 0x00))
        self.wmask[PMREGMISC] = 0x01
        self.wmask[SMBBA : SMBBA + 4] = bytes((0xF0, 0xFF, 0x00, 0x00))
        c[SMBBA] = (self.smb_io_base | 1) & 0xFF
        c[SMBBA + 1] = self.smb_io_base >> 8 & 0xFF
        c[SMBHSTCFG] = 0x09
        # piix4_pm_machine_ready: decode hints for the legacy devices present.
        c[0x5F] = 0x10 | (0x80 if lpt1 else 0)
        c[0x63] = 0x60
        c[0x67] = (0x08 if com1 else 0) | (0x90 if com2 else 0)
        self._reset_pm_config()

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx) -> None:
        super().attach(ctx)
        self.sci = ctx.irqs.isa(SCI_IRQ, f"{self.name}.sci")
        self._tmr = ctx.clock.timer(self._tmr_fired, f"{self.name}.tmr")

    def pio_ranges(self) -> list[Range]:
        one = frozenset({1})
        return [
            Range(APM_CNT_PORT, 2, self._apm_read, self._apm_write, "apm", self, one),
            Range(GPE_BASE, GPE_LEN, self._gpe_read, self._gpe_write, f"{self.name}.gpe0",
                  self, one),
        ]

    def pm_io_base(self) -> int | None:
        """Where the PM I/O block decodes now, or None."""
        enabled, base = self._decode()
        return base if enabled else None

    def pm_io_ranges(self) -> list[Range]:
        """The PM I/O block as the machine should map it now ([] when disabled). The same
        Range object is returned while the base does not change."""
        enabled, base = self._decode()
        if not enabled:
            return []
        r = self._pm_range
        if r is None or r.start != base:
            r = self._pm_range = Range(base, PM_IO_LEN, self._pm_read, self._pm_write,
                                       f"{self.name}.io", self, frozenset({1, 2, 4}))
        return [r]

    def _decode(self) -> tuple[bool, int]:
        c = self.config
        base = (c[PMBA] | c[PMBA + 1] << 8) & 0xFFC0
        # Base 0 would sit on the DMA controller; treat it as not decoded (QEMU would map it).
        return bool(c[PMREGMISC] & 1) and base != 0, base

    def _maybe_remap(self) -> None:
        key = self._decode()
        if not key[0]:
            key = (False, 0)
        if key != self._mapped_key:
            self._mapped_key = key
            if self.on_remap is not None:
                self.on_remap()

    def config_written(self, off: int, size: int, value: int) -> None:
        if off <= PMREGMISC < off + size or (off < PMBA + 4 and off + size > PMBA):
            self._maybe_remap()

    def _reset_pm_config(self) -> None:
        c = self.config
        c[DEVACTB : DEVACTB + 4] = bytes(4)
        c[PMBA] = 0x01
        c[PMREGMISC] = 0
        c[DEVACTB + 3] = 0x02  # SMM disabled: APMC_EN, "SMM init already done"

    def reset(self) -> None:
        """QEMU piix4_pm_reset (after the generic PCI reset)."""
        super().reset()
        self._reset_pm_config()
        self.regs.reset()
        self.regs["pm1_cnt"] = SCI_EN if self.acpi_only else 0
        self.overflow_time = 0
        self.gpe_sts = [0, 0]
        self.gpe_en = [0, 0]
        if self.ctx is not None:
            self._update_sci()
        self._maybe_remap()

    # ---- PM timer and status ---------------------------------------------------------------
    def _now(self) -> int:
        assert self.ctx is not None
        return self.ctx.clock.now()

    def pm_timer(self, now: int | None = None) -> int:
        """PM_TMR: 3.579545 MHz, 24 bits, from the machine clock."""
        return _pm_ticks(self._now() if now is None else now) & 0xFFFFFF

    def _refresh_sts(self, now: int) -> int:
        """QEMU acpi_pm1_evt_get_sts: TMR_STS sets once the clock passes overflow_time."""
        sts = self.regs["pm1_sts"]
        if now >= _ticks_ns(self.overflow_time):
            sts |= TMR_STS
            self.regs["pm1_sts"] = sts
        return sts

    def _calc_overflow(self, now: int) -> None:
        """The next time bit 23 of the counter toggles."""
        self.overflow_time = (_pm_ticks(now) + 0x800000) & ~0x7FFFFF

    def _update_sci(self, now: int | None = None) -> None:
        if now is None:
            now = self._now()
        sts = self._refresh_sts(now)
        en = self.regs["pm1_en"]
        level = bool(sts & en & PM1_COMMON_ENABLED) or bool(self.gpe_sts[0] & self.gpe_en[0])
        if self.sci is not None:
            self.sci.set_level(level)
        if en & TMR_EN and not sts & TMR_STS:
            deadline = _ticks_ns(self.overflow_time)
            t = self._tmr
            if t is not None and (t.deadline is None or deadline < t.deadline):
                t.arm(deadline)  # never cancelled: a stale wake-up re-checks and returns

    def _tmr_fired(self, deadline: int) -> None:
        self._update_sci(max(self._now(), deadline))

    def _sts_read(self, v: int) -> int:
        return self._refresh_sts(self._now())

    def _sts_written(self, old: int, new: int) -> None:
        # Cleared TMR_STS: compute the next overflow (QEMU acpi_pm1_evt_write_sts).
        if old & ~new & TMR_STS:
            self._calc_overflow(self._now())

    def _en_written(self, old: int, new: int) -> None:
        return None  # SCI re-evaluated by _pm_write

    def _cnt_written(self, old: int, new: int) -> None:
        self.regs["pm1_cnt"] = new & ~SLP_EN
        if not new & SLP_EN:
            return
        typ = (new & SLP_TYP_MASK) >> 10
        assert self.ctx is not None
        if typ == 0 or typ == self.s4_val:
            self.ctx.machine.request_shutdown(SHUTDOWN_POWEROFF)
        elif typ == 1:
            self.s3_requests += 1
            self.guest_error("S3 suspend requested (not supported)")

    def _tmr_read(self, v: int) -> int:
        return self.pm_timer()

    def _pm_read(self, off: int, size: int) -> int:
        return self.regs.read(off, size)

    def _pm_write(self, off: int, size: int, value: int) -> None:
        now = self._now()
        self._refresh_sts(now)
        self.regs.write(off, size, value)
        if off < 4:
            self._update_sci(now)

    # ---- GPE0 (0xAFE0) ---------------------------------------------------------------------
    def _gpe_read(self, off: int, size: int) -> int:
        return self.gpe_sts[off] if off < 2 else self.gpe_en[off - 2]

    def _gpe_write(self, off: int, size: int, value: int) -> None:
        if off < 2:
            self.gpe_sts[off] &= ~value & 0xFF
        else:
            self.gpe_en[off - 2] = value & 0xFF
        self._update_sci()

    def gpe_event(self, bits: int) -> None:
        """Raise GPE0 status bits (QEMU acpi_send_gpe_event), e.g. for hotplug later."""
        self.gpe_sts[0] |= bits & 0xFF
        self._update_sci()

    # ---- APM (0xB2/0xB3) -----------------------------------------------------------------
    def _apm_read(self, off: int, size: int) -> int:
        return self.apmc if off == 0 else self.apms

    def _apm_write(self, off: int, size: int, value: int) -> None:
        value &= 0xFF
        if off == 1:
            self.apms = value
            return
        self.apmc = value
        if value in (ACPI_ENABLE, ACPI_DISABLE):
            if not self.acpi_only:
                cnt = self.regs["pm1_cnt"]
                self.regs["pm1_cnt"] = cnt | SCI_EN if value == ACPI_ENABLE else cnt & ~SCI_EN
            return
        if self.config[DEVACTB + 3] & 0x02:
            # QEMU would raise SMI here if SMM were enabled. There is no SMM: only counted.
            self.smi_requests += 1

    # ---- external events -------------------------------------------------------------------
    def power_button(self) -> bool:
        """QEMU acpi_pm1_evt_power_down: sets PWRBTN_STS and raises SCI if the guest enabled
        the power button event. Returns whether the event was delivered."""
        if not self.regs["pm1_en"] & PWRBTN_EN:
            return False
        self.regs["pm1_sts"] = self.regs["pm1_sts"] | PWRBTN_STS
        self._update_sci()
        return True

    # ---- snapshot -------------------------------------------------------------------------
    @property
    def pm_regs(self) -> dict[str, int]:
        if self.ctx is not None:
            self._refresh_sts(self._now())
        return {k: v for k, v in self.regs.snapshot().items() if k != "pm_tmr"}

    @pm_regs.setter
    def pm_regs(self, v: dict[str, int]) -> None:
        if not isinstance(v, dict):
            raise SnapshotError(f"{self.name}: pm_regs must be a dict")
        try:
            self.regs.restore({k: int(x) for k, x in v.items() if k != "pm_tmr"})
        except (TypeError, ValueError) as e:
            raise SnapshotError(f"{self.name}: {e}") from e

    @property
    def overflow_in_ticks(self) -> int:
        if self.ctx is None:
            return self.overflow_time
        return self.overflow_time - _pm_ticks(self._now())

    @overflow_in_ticks.setter
    def overflow_in_ticks(self, v: int) -> None:
        base = _pm_ticks(self._now()) if self.ctx is not None else 0
        self.overflow_time = base + int(v)

    def restore(self, snap: dict[str, Any]) -> None:
        st = snap.get("state", {})
        for f in ("gpe_sts", "gpe_en"):
            if f in st and (not isinstance(st[f], list) or len(st[f]) != 2):
                raise SnapshotError(f"{self.name}: {f} must be a list of 2 bytes")
        super().restore(snap)

    def post_restore(self) -> None:
        super().post_restore()
        self.gpe_sts = [int(x) & 0xFF for x in self.gpe_sts]
        self.gpe_en = [int(x) & 0xFF for x in self.gpe_en]
        self.apmc &= 0xFF
        self.apms &= 0xFF
        if self.ctx is not None:
            self._update_sci()
        self._maybe_remap()
