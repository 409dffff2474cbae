"""PIIX4 PM function (00:01.3): config space, PM I/O block mapping, PM timer, PM1 events and
control, GPE0, APM ports, on the virtual clock."""

from __future__ import annotations

import pytest

from devmodel.bios.acpi_pm import (
    PM_TIMER_FREQUENCY,
    PWRBTN_EN,
    PWRBTN_STS,
    SCI_EN,
    SLP_EN,
    TMR_EN,
    TMR_STS,
    PiixPm,
)
from devmodel.core.chipset import build_chipset
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.wire.constants import (
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    SHUTDOWN_POWEROFF,
    DmOp,
)

NS = 1_000_000_000
DEVFN = 1 << 3 | 3
PMBASE = 0xB000  # SeaBIOS's acpi_pm_base without QEMU's table-loader


class Rig:
    def __init__(self, **kw) -> None:
        self.clock = Clock(virtual=True)
        self.m = Machine(clock=self.clock, strict=True)
        build_chipset(self.m)
        self.pm = PiixPm(**kw)
        self.remaps = 0
        self.mapped: list = []
        self.m.add(self.pm, slot=1, fn=3)

        # What the lead wires: replace the PM block's range whenever the device asks.
        def remap() -> None:
            self.remaps += 1
            for r in self.mapped:
                self.m.pio.remove(r)
            self.mapped = self.pm.pm_io_ranges()
            for r in self.mapped:
                self.m.pio.add(r)

        self.pm.on_remap = remap

    # PCI config through IOREQ_TYPE_PCI_CONFIG, as Xen (and hvsim) send it.
    def cfg_read(self, reg: int, size: int) -> int:
        return self.m.handle_ioreq(IOREQ_TYPE_PCI_CONFIG, DEVFN << 32 | reg, 0, 1, size, 0x20)

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        self.m.handle_ioreq(IOREQ_TYPE_PCI_CONFIG, DEVFN << 32 | reg, value, 1, size, 0)

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.m.handle_ioreq(IOREQ_TYPE_PIO, port, value, 1, size, 0)

    def inp(self, port: int, size: int = 1) -> int:
        return self.m.handle_ioreq(IOREQ_TYPE_PIO, port, 0, 1, size, 0x20)

    def seabios_setup(self, base: int = PMBASE) -> None:
        """SeaBIOS piix4_pm_config_setup."""
        self.cfg_write(0x3C, 1, 9)
        self.cfg_write(0x40, 4, base | 1)
        self.cfg_write(0x80, 1, 0x01)
        self.cfg_write(0x90, 4, (base + 0x100) | 1)
        self.cfg_write(0xD2, 1, 0x09)

    def at(self, ns: int) -> None:
        self.clock.set_virtual(ns)
        self.clock.run_due(ns)

    @property
    def sci(self) -> int:
        return self.m.irqs.levels().get("isa9", 0)

    def shutdowns(self) -> list[int]:
        return [f[0] for op, f, _ in self.m.outbox if op == DmOp.REMOTE_SHUTDOWN]


@pytest.fixture
def rig() -> Rig:
    return Rig()


# ---- config space -------------------------------------------------------------------------------
def test_config_identity_and_reset_values(rig: Rig) -> None:
    assert rig.cfg_read(0x00, 4) == 0x7113_8086
    assert rig.cfg_read(0x08, 4) == 0x0680_0003  # class bridge/other, revision 3
    assert rig.cfg_read(0x06, 2) == 0x0280
    assert rig.cfg_read(0x0E, 1) == 0x00
    assert rig.cfg_read(0x3D, 1) == 0x01
    assert rig.cfg_read(0x2C, 4) == 0x1100_1AF4
    assert rig.cfg_read(0x40, 4) == 0x0000_0001
    assert rig.cfg_read(0x80, 1) == 0x00
    assert rig.cfg_read(0x58, 4) == 0x0200_0000  # DEVACTB.APMC_EN: SMM "already set up"
    assert rig.cfg_read(0x5F, 1) == 0x10
    assert rig.cfg_read(0x63, 1) == 0x60
    assert rig.cfg_read(0x67, 1) == 0x00
    assert rig.cfg_read(0x90, 4) == 0xB101
    assert rig.cfg_read(0xD2, 1) == 0x09
    assert rig.pm.pm_io_base() is None
    # The PIIX3 at function 0 advertises the multifunction device.
    assert rig.m.pci.config_read(1 << 3, 0x0E, 1) & 0x80


def test_legacy_device_hints() -> None:
    r = Rig(com1=True, com2=True, lpt1=True)
    assert r.cfg_read(0x5F, 1) == 0x90 and r.cfg_read(0x67, 1) == 0x98


def test_smm_check_seabios_does(rig: Rig) -> None:
    # SeaBIOS piix4_apmc_smm_setup returns at once when DEVACTB bit 25 is set, so it never
    # writes 0xB3/0xB2 or polls 0xB3 for an SMI handler that does not exist.
    assert rig.cfg_read(0x58, 4) & (1 << 25)
    rig.m.reset()
    assert rig.cfg_read(0x58, 4) & (1 << 25)


# ---- PM I/O block mapping ---------------------------------------------------------------------
def test_pm_base_programming_maps_and_unmaps(rig: Rig) -> None:
    assert rig.inp(PMBASE + 8, 4) == 0xFFFFFFFF
    rig.cfg_write(0x40, 4, PMBASE | 1)
    assert rig.remaps == 0  # not enabled yet
    rig.cfg_write(0x80, 1, 0x01)
    assert rig.remaps == 1
    assert rig.pm.pm_io_base() == PMBASE
    assert [(r.start, r.length) for r in rig.mapped] == [(PMBASE, 64)]
    assert rig.inp(PMBASE + 4, 2) == SCI_EN
    # Same values again: nothing changes, no remap.
    rig.cfg_write(0x40, 4, PMBASE | 1)
    rig.cfg_write(0x80, 1, 0x01)
    assert rig.remaps == 1
    # Move it (SeaBIOS moves to 0x600 with QEMU's ACPI tables).
    rig.cfg_write(0x40, 4, 0x0600)
    assert rig.remaps == 2 and rig.pm.pm_io_base() == 0x600
    assert rig.cfg_read(0x40, 4) == 0x0601  # bit 0 reads 1, low bits and high word fixed
    rig.cfg_write(0x40, 4, 0xFFFF_FFFF)
    assert rig.cfg_read(0x40, 4) == 0xFFC1
    rig.cfg_write(0x41, 1, 0xB0)  # byte write to the high byte of the base
    assert rig.pm.pm_io_base() == 0xB0C0
    assert rig.inp(PMBASE + 4, 2) == 0xFFFF
    rig.cfg_write(0x80, 1, 0x00)
    assert rig.mapped == [] and rig.pm.pm_io_base() is None
    assert rig.inp(0xB0C4, 2) == 0xFFFF
    assert rig.cfg_read(0x80, 1) == 0x00


def test_pm_block_is_not_gated_by_command_register(rig: Rig) -> None:
    rig.seabios_setup()
    rig.cfg_write(0x04, 2, 0x0000)
    assert rig.inp(PMBASE + 4, 2) == SCI_EN


def test_reset_unmaps_pm_block(rig: Rig) -> None:
    rig.seabios_setup()
    assert rig.mapped
    rig.m.reset()
    assert rig.mapped == []
    assert rig.cfg_read(0x80, 1) == 0 and rig.cfg_read(0x40, 1) == 0x01


def test_smbus_not_implemented_reads_all_ones(rig: Rig) -> None:
    rig.seabios_setup()
    assert rig.inp(PMBASE + 0x100) == 0xFF
    assert rig.cfg_read(0x90, 4) == (PMBASE + 0x100) | 1


def test_pm_block_holes_read_all_ones_and_count(rig: Rig) -> None:
    rig.seabios_setup()
    assert rig.inp(PMBASE + 0x28, 4) == 0xFFFFFFFF  # SeaBIOS GLBCTL (never read with SMM off)
    assert sum(rig.pm.counters.values()) >= 1
    rig.out(PMBASE + 0x30, 0x12345678, 4)  # dropped


# ---- PM timer --------------------------------------------------------------------------------------
def test_pm_timer_rate(rig: Rig) -> None:
    rig.seabios_setup()
    rig.at(NS)
    assert rig.inp(PMBASE + 8, 4) == PM_TIMER_FREQUENCY
    rig.at(NS + NS // 1000)
    assert rig.inp(PMBASE + 8, 4) - PM_TIMER_FREQUENCY == PM_TIMER_FREQUENCY // 1000
    # 24 bits: wraps after 2^24 ticks (about 4.69 s).
    t = (1 << 24) * NS // PM_TIMER_FREQUENCY + 1
    rig.at(t)
    assert rig.inp(PMBASE + 8, 4) < 10
    # Byte lanes of the 32-bit register.
    rig.at(3 * NS)
    v = rig.inp(PMBASE + 8, 4)
    assert rig.inp(PMBASE + 8, 1) == v & 0xFF
    assert rig.inp(PMBASE + 9, 2) == v >> 8 & 0xFFFF
    assert rig.inp(PMBASE + 11, 1) == 0
    rig.out(PMBASE + 8, 0, 4)  # read-only
    assert rig.inp(PMBASE + 8, 4) == v


def test_tmr_sts_and_overflow_interrupt(rig: Rig) -> None:
    rig.seabios_setup()
    # After reset the overflow time is 0, so TMR_STS reads set (QEMU does the same).
    assert rig.inp(PMBASE, 2) & TMR_STS
    rig.at(NS)
    rig.out(PMBASE, TMR_STS, 2)  # clear: next overflow when bit 23 next toggles
    assert rig.inp(PMBASE, 2) & TMR_STS == 0
    overflow_ticks = (PM_TIMER_FREQUENCY + 0x800000) & ~0x7FFFFF
    overflow_ns = -(-overflow_ticks * NS // PM_TIMER_FREQUENCY)
    assert rig.clock.next_deadline() is None  # TMR_EN off: no timer
    rig.out(PMBASE + 2, TMR_EN, 2)
    assert rig.sci == 0
    assert rig.clock.next_deadline() == overflow_ns
    rig.at(overflow_ns - 1)
    assert rig.sci == 0
    rig.at(overflow_ns)
    assert rig.sci == 1
    assert rig.inp(PMBASE, 2) & TMR_STS
    assert rig.inp(PMBASE + 8, 4) == overflow_ticks & 0xFFFFFF
    rig.out(PMBASE, TMR_STS, 2)
    assert rig.sci == 0
    # The next one comes 2^23 ticks later.
    nxt = -(-(overflow_ticks + 0x800000) * NS // PM_TIMER_FREQUENCY)
    assert rig.clock.next_deadline() == nxt


def test_tmr_en_toggling_does_not_pile_up_timers(rig: Rig) -> None:
    rig.seabios_setup()
    rig.out(PMBASE, TMR_STS, 2)
    heap = rig.clock._heap
    for _ in range(1000):
        rig.out(PMBASE + 2, TMR_EN, 2)
        rig.out(PMBASE + 2, 0, 2)
    assert len(heap) <= 2


# ---- PM1 control: sleep ---------------------------------------------------------------------------
def test_s5_soft_off_requests_poweroff(rig: Rig) -> None:
    rig.seabios_setup()
    rig.m.outbox.clear()
    rig.out(PMBASE + 4, (0 << 10) | SLP_EN | SCI_EN, 2)  # _S5 = {0, 0} in QEMU's DSDT
    assert rig.shutdowns() == [SHUTDOWN_POWEROFF]
    assert rig.inp(PMBASE + 4, 2) == SCI_EN  # SLP_EN is write-only


def test_seabios_apm_shutdown_write(rig: Rig) -> None:
    rig.seabios_setup()
    rig.m.outbox.clear()
    rig.out(PMBASE + 4, 0x2000, 2)  # SeaBIOS apm_shutdown
    assert rig.shutdowns() == [SHUTDOWN_POWEROFF]


def test_s4_is_poweroff_and_s3_is_refused(rig: Rig) -> None:
    rig.seabios_setup()
    rig.m.outbox.clear()
    rig.out(PMBASE + 4, (1 << 10) | SLP_EN, 2)
    assert rig.shutdowns() == []
    assert rig.pm.s3_requests == 1
    rig.out(PMBASE + 4, (2 << 10) | SLP_EN, 2)
    assert rig.shutdowns() == [SHUTDOWN_POWEROFF]


def test_slp_typ_without_slp_en_does_nothing(rig: Rig) -> None:
    rig.seabios_setup()
    rig.m.outbox.clear()
    rig.out(PMBASE + 4, 5 << 10, 2)
    assert rig.shutdowns() == []
    assert rig.inp(PMBASE + 4, 2) == 5 << 10
    # Byte write to the high byte keeps the low byte (QEMU acpi_pm_cnt_write, addr 1).
    rig.out(PMBASE + 4, 0x01, 1)
    rig.out(PMBASE + 5, SLP_EN >> 8, 1)
    assert rig.shutdowns() == [SHUTDOWN_POWEROFF]


# ---- power button, GPE ------------------------------------------------------------------------------
def test_power_button_raises_sci(rig: Rig) -> None:
    rig.seabios_setup()
    rig.out(PMBASE, 0xFFFF, 2)  # clear everything (TMR_STS)
    assert rig.pm.power_button() is False  # not enabled: QEMU drops the event
    assert rig.sci == 0
    rig.out(PMBASE + 2, PWRBTN_EN, 2)
    assert rig.pm.power_button() is True
    assert rig.sci == 1
    assert rig.inp(PMBASE, 2) & PWRBTN_STS
    rig.out(PMBASE, PWRBTN_STS, 2)
    assert rig.sci == 0
    # Disabling the enable with the status set also lowers SCI.
    rig.pm.power_button()
    assert rig.sci == 1
    rig.out(PMBASE + 2, 0, 2)
    assert rig.sci == 0


def test_gpe0_block(rig: Rig) -> None:
    assert rig.inp(0xAFE0, 4) == 0
    rig.pm.gpe_event(0x02)
    assert rig.sci == 0 and rig.inp(0xAFE0) == 0x02
    rig.out(0xAFE2, 0x02)
    assert rig.sci == 1
    assert rig.inp(0xAFE2) == 0x02
    rig.out(0xAFE0, 0x02)  # write-1-to-clear
    assert rig.sci == 0 and rig.inp(0xAFE0) == 0
    rig.out(0xAFE0, 0x0102FF00, 4)  # split into bytes by the bus
    assert rig.inp(0xAFE0, 4) == 0x0102_0000


# ---- APM ----------------------------------------------------------------------------------------------
def test_apm_ports_store_values(rig: Rig) -> None:
    rig.out(0xB3, 0x01)
    rig.out(0xB2, 0x00)
    assert rig.inp(0xB2) == 0x00
    assert rig.inp(0xB3) == 0x01  # nothing (no SMI handler) clears it
    assert rig.pm.smi_requests == 1
    rig.out(0xB2, 0x5A)
    assert rig.inp(0xB2) == 0x5A


def test_acpi_enable_disable_commands() -> None:
    # acpi_only (QEMU with SMM off): SCI_EN set from reset, ACPI_ENABLE/DISABLE ignored.
    r = Rig()
    r.seabios_setup()
    assert r.inp(PMBASE + 4, 2) == SCI_EN
    r.out(0xB2, 0xF0)
    assert r.inp(PMBASE + 4, 2) == SCI_EN
    # Legacy mode (smm-compat): the OS switches with 0xF1/0xF0 at 0xB2.
    r = Rig(acpi_only=False)
    r.seabios_setup()
    assert r.inp(PMBASE + 4, 2) == 0
    r.out(0xB2, 0xF1)
    assert r.inp(PMBASE + 4, 2) == SCI_EN
    r.out(0xB2, 0xF0)
    assert r.inp(PMBASE + 4, 2) == 0
    assert r.pm.smi_requests == 0


# ---- snapshot ----------------------------------------------------------------------------------------
def test_snapshot_round_trip(rig: Rig) -> None:
    rig.seabios_setup()
    rig.at(NS)
    rig.out(PMBASE, TMR_STS, 2)
    rig.out(PMBASE + 2, TMR_EN | PWRBTN_EN, 2)
    rig.pm.power_button()
    rig.out(0xAFE2, 0x01)
    rig.out(0xB3, 0x77)
    snap = rig.pm.snapshot()
    deadline = rig.clock.next_deadline()
    # mutate
    rig.out(PMBASE, 0xFFFF, 2)
    rig.out(0xB3, 0)
    rig.cfg_write(0x80, 1, 0)
    assert rig.mapped == [] and rig.sci == 0
    rig.pm.restore(snap)
    assert rig.pm.snapshot() == snap
    assert rig.mapped and rig.pm.pm_io_base() == PMBASE  # restore remapped the block
    assert rig.sci == 1
    assert rig.inp(0xB3) == 0x77
    assert rig.clock.next_deadline() == deadline
    rig.out(PMBASE, PWRBTN_STS, 2)
    assert rig.sci == 0


def test_snapshot_rejects_bad_state(rig: Rig) -> None:
    from devmodel.core.device import SnapshotError

    snap = rig.pm.snapshot()
    for field, bad in (("pm_regs", {"nope": 1}), ("gpe_sts", [1, 2, 3]), ("config", b"\0")):
        with pytest.raises(SnapshotError):
            rig.pm.restore({**snap, "state": {**snap["state"], field: bad}})
