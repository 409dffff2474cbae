"""The ACPI PM timer (PM_TMR), answered by the simulator as Xen answers it.

Xen emulates PM1a_STS/EN and PM_TMR itself (xen/arch/x86/hvm/pmtimer.c) at a fixed block,
0xB000/0xB008 with HVM_PARAM_ACPI_IOPORTS_LOCATION = 1 (xen-protocol.md 1.5), because
firmware and OS kernels poll PM_TMR in tight loops (SeaBIOS calibrates and delays with it).
Here the PM block belongs to the device model's PIIX4 power-management function at 00:01.3
(devmodel/bios/acpi_pm.py), and the firmware programs its base, so the simulator finds it
the way Xen finds PCI config targets, by snooping: it keeps a shadow of what the guest writes
to that function's PMBA (config 0x40, bits 15:6) and PMREGMISC (config 0x80, bit 0, the I/O
enable), and of the vendor/device ID the device model answered at config 0 (8086:7113). While
the block is enabled there, the device model claims ``PMBA + 8`` (it mapped its block
there: the claim is the cross-check that both agree) and a 4-byte read hits it, the simulator
answers from its virtual clock without an ioreq:

    PM_TMR = floor(ns * 3579545 / 1e9) mod 2**24

the formula of the device model's PiixPm.pm_timer (24 bits, as QEMU's PIIX4, whose FADT does
not set TMR_VAL_EXT) on the same virtual nanoseconds. The device model's clock is the last
CLOCK the simulator sent, which is the simulator's clock at its last synchronous access, so a
read the device model answered at any instant would give the same value; TMR_STS, the
overflow timer and the SCI stay the device model's, computed from that same clock. Everything
else in the block (PM1 status/enable/control, other sizes and offsets) goes to the device
model as before. Only PM_TMR is local: unlike Xen, the status bits stay with the device model,
so there is a single owner of TMR_STS.
"""

from __future__ import annotations

from .clock import VirtualClock

NS = 1_000_000_000
PM_TIMER_FREQUENCY = 3_579_545
PM_TMR_MASK = 0xFFFFFF  # 24-bit counter (no TMR_VAL_EXT)
PIIX4_PM_SBDF = 0 << 8 | 1 << 3 | 3  # 00:01.3
PIIX4_PM_ID = 0x7113_8086  # device << 16 | vendor
PMBA = 0x40
PMREGMISC = 0x80
PM_TMR_OFFSET = 8
_SHADOWED = (PMBA, PMBA + 1, PMREGMISC)


def pm_timer_value(ns: int) -> int:
    """PM_TMR at virtual time ``ns`` (the device model's formula)."""
    return ns * PM_TIMER_FREQUENCY // NS & PM_TMR_MASK


class PmTimer:
    """Snoops the PIIX4 PM function's config writes and answers PM_TMR reads locally."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._id = bytearray(4)  # config bytes 0-3 as the device model answered them
        self._id_seen = 0  # which of them were read
        self.cfg = {PMBA: 0x01, PMBA + 1: 0x00, PMREGMISC: 0x00}
        self.tmr_port = -1  # the port of PM_TMR while the block is enabled, else -1
        self.reads = 0  # PM_TMR reads answered here

    def reset(self) -> None:
        """Platform reset: the device model's PIIX4 PM reset (QEMU piix4_pm_reset) sets PMBA's
        low byte to 0x01 and clears PMREGMISC, so the block is off until firmware enables it
        again; PMBA's high byte survives, as there."""
        self.cfg[PMBA] = 0x01
        self.cfg[PMREGMISC] = 0x00
        self._update()

    def _update(self) -> None:
        base = (self.cfg[PMBA] | self.cfg[PMBA + 1] << 8) & 0xFFC0
        enabled = bool(self.cfg[PMREGMISC] & 1) and base != 0
        is_pm = self._id_seen == 0xF and int.from_bytes(self._id, "little") == PIIX4_PM_ID
        self.tmr_port = base + PM_TMR_OFFSET if enabled and is_pm else -1

    def config_read(self, sbdf: int, reg: int, size: int, value: int) -> None:
        """A config read the device model answered: learn the function's IDs (bytes 0-3)."""
        if sbdf != PIIX4_PM_SBDF or reg > 3:
            return
        for i in range(min(size, 4 - reg)):
            self._id[reg + i] = value >> 8 * i & 0xFF
            self._id_seen |= 1 << (reg + i)
        self._update()

    def config_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        """A config write forwarded to the device model: shadow PMBA and PMREGMISC."""
        if sbdf != PIIX4_PM_SBDF:
            return
        touched = False
        for i in range(size):
            if reg + i in _SHADOWED:
                self.cfg[reg + i] = value >> 8 * i & 0xFF
                touched = True
        if touched:
            self._update()

    def read(self) -> int:
        self.reads += 1
        return pm_timer_value(self.clock.ns)
