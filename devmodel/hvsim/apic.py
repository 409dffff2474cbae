"""Register stubs for the local APIC (0xFEE00000) and the IO-APIC (0xFEC00000).

Just enough for SeaBIOS's ``smp_setup`` (reads the LAPIC version at 0x30 and the SVR at 0xF0,
writes SVR, LVT LINT0/LINT1 at 0x350/0x360, and INIT then SIPI through the ICR at 0x300; the
study, obstacle 12) and for an IO-APIC probe (index register at 0x00, window at 0x10; Intel
82093AA datasheet). Nothing is ever delivered through them: interrupts reach the CPU through
the 8259 pair only. The ICR delivery-status bit (12) always reads idle, and there are no APs,
so INIT/SIPI are only recorded.
"""

from __future__ import annotations

LAPIC_BASE = 0xFEE00000
IOAPIC_BASE = 0xFEC00000
LAPIC_VERSION = 0x0005_0014  # version 0x14 (integrated APIC), max LVT entry 5
IOAPIC_VERSION = 0x0017_0011  # version 0x11, 24 redirection entries
IOAPIC_PINS = 24


class LapicStub:
    def __init__(self) -> None:
        self.regs: dict[int, int] = {}
        self.ipis: list[int] = []  # ICR low words written (INIT 0xC4500, SIPI 0xC46xx)
        self.reset()

    def reset(self) -> None:
        # Intel SDM vol. 3, 10.4.7.1: after reset the SVR is 0xFF, every LVT masked.
        self.regs = {0x20: 0, 0x30: LAPIC_VERSION, 0xF0: 0xFF}
        for lvt in (0x320, 0x330, 0x340, 0x350, 0x360, 0x370):
            self.regs[lvt] = 0x10000
        self.ipis.clear()

    def read(self, offset: int, size: int) -> int:
        reg = offset & ~0xF
        value = self.regs.get(reg, 0)
        if reg == 0x300:
            value &= ~(1 << 12)  # delivery status: idle
        return value >> 8 * (offset & 3) & ((1 << 8 * size) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        reg = offset & ~0xF
        if reg in (0x20, 0x30):
            return  # ID is kept 0, version is read-only
        self.regs[reg] = value & 0xFFFFFFFF
        if reg == 0x300 and len(self.ipis) < 64:
            self.ipis.append(value & 0xFFFFFFFF)


class IoapicStub:
    def __init__(self) -> None:
        self.index = 0
        self.id = 0
        self.redir: list[int] = []
        self.reset()

    def reset(self) -> None:
        self.index = 0
        self.id = 0
        self.redir = [1 << 16] * IOAPIC_PINS  # every pin masked

    def _read_reg(self) -> int:
        idx = self.index
        if idx == 0:
            return self.id << 24
        if idx == 1:
            return IOAPIC_VERSION
        if 0x10 <= idx < 0x10 + 2 * IOAPIC_PINS:
            entry = self.redir[(idx - 0x10) >> 1]
            return entry >> 32 if idx & 1 else entry & 0xFFFFFFFF
        return 0

    def _write_reg(self, value: int) -> None:
        idx = self.index
        if idx == 0:
            self.id = value >> 24 & 0xF
        elif 0x10 <= idx < 0x10 + 2 * IOAPIC_PINS:
            pin = (idx - 0x10) >> 1
            if idx & 1:
                self.redir[pin] = (self.redir[pin] & 0xFFFFFFFF) | (value & 0xFFFFFFFF) << 32
            else:
                self.redir[pin] = (self.redir[pin] & ~0xFFFFFFFF) | (value & 0xFFFFFFFF)

    def read(self, offset: int, size: int) -> int:
        if offset < 4:
            value = self.index
        elif 0x10 <= offset < 0x14:
            value = self._read_reg()
        else:
            return 0
        return value >> 8 * (offset & 3) & ((1 << 8 * size) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0xFF
        elif offset == 0x10 and size == 4:
            self._write_reg(value)
