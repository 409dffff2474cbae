"""The 8259A programmable interrupt controller pair (master 0x20/0x21, slave 0xA0/0xA1) and
the PIIX edge/level control registers (ELCR, 0x4D0/0x4D1).

Behaviour follows the Intel 8259A datasheet (order no. 231468): ICW1-ICW4 initialisation,
OCW1 (IMR), OCW2 (EOI, specific EOI, rotation), OCW3 (IRR/ISR read select, poll, special mask),
fixed and rotating priority, auto-EOI and special fully nested mode; the logic mirrors QEMU's
hw/intc/i8259.c and Xen's xen/arch/x86/hvm/vpic.c, which model the same part.

ELCR is from the Intel 82371 (PIIX3) datasheet, section 4.1.8: one bit per IRQ, 1 = level.
IRQ 0, 1, 2, 8 and 13 are always edge (masks 0xF8 and 0xDE, as in QEMU and Xen).

The pair is a pure state machine: ``set_irq`` takes line levels, ``pending_vector`` /
``acknowledge`` play the CPU's INTA cycle. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

MASTER_BASE = 0x20
SLAVE_BASE = 0xA0
ELCR_BASE = 0x4D0
ELCR_MASKS = (0xF8, 0xDE)
CASCADE_IRQ = 2


def _lowest_priority(mask: int, priority_add: int) -> int:
    """Priority level (0 = highest) of the highest-priority bit set in ``mask``; 8 if none."""
    if mask == 0:
        return 8
    for priority in range(8):  # bounded: 8 levels
        if mask & (1 << ((priority + priority_add) & 7)):
            return priority
    return 8


@dataclass
class Pic8259:
    """One 8259A. ``master`` matters only for special fully nested mode."""

    master: bool
    elcr_mask: int
    irr: int = 0
    imr: int = 0
    isr: int = 0
    last_irr: int = 0  # line levels, for edge detection
    priority_add: int = 0
    irq_base: int = 0
    read_reg_select: int = 0
    poll: bool = False
    special_mask: bool = False
    init_state: int = 0
    init4: bool = False
    single_mode: bool = False
    auto_eoi: bool = False
    rotate_on_auto_eoi: bool = False
    special_fully_nested: bool = False
    elcr: int = 0

    # ---- INT output ------------------------------------------------------------------------
    def get_irq(self) -> int:
        """The IRQ (0-7) this 8259 wants to raise INT for, or -1."""
        mask = self.irr & ~self.imr
        priority = _lowest_priority(mask, self.priority_add)
        if priority == 8:
            return -1
        # Current in-service priority. In special fully nested mode the master ignores the
        # cascade input's ISR bit, so a higher-priority slave IRQ can nest (datasheet p. 16).
        mask = self.isr
        if self.special_mask:
            mask &= ~self.imr
        if self.special_fully_nested and self.master:
            mask &= ~(1 << CASCADE_IRQ)
        if priority < _lowest_priority(mask, self.priority_add):
            return (priority + self.priority_add) & 7
        return -1

    def set_irq(self, irq: int, level: int) -> None:
        bit = 1 << irq
        if self.elcr & bit:
            # Level-sensitive: IRR follows the line.
            if level:
                self.irr |= bit
                self.last_irr |= bit
            else:
                self.irr &= ~bit
                self.last_irr &= ~bit
        elif level:
            if not self.last_irr & bit:  # rising edge
                self.irr |= bit
            self.last_irr |= bit
        else:
            self.last_irr &= ~bit

    def intack(self, irq: int) -> None:
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        # A level-sensitive request stays in IRR while the line is high.
        if not self.elcr & (1 << irq):
            self.irr &= ~(1 << irq)

    def _init_reset(self) -> None:
        # ICW1 resets everything but ELCR (and the edge detector sees the lines afresh).
        self.last_irr = 0
        self.irr &= self.elcr
        self.imr = self.isr = self.priority_add = self.irq_base = 0
        self.read_reg_select = 0
        self.poll = self.special_mask = False
        self.init_state = 0
        self.auto_eoi = self.rotate_on_auto_eoi = self.special_fully_nested = False
        self.init4 = self.single_mode = False

    def reset(self) -> None:
        self._init_reset()
        self.irr = 0
        self.elcr = 0

    # ---- ports -----------------------------------------------------------------------------
    def write(self, a0: int, val: int) -> None:
        val &= 0xFF
        if a0 == 0:
            if val & 0x10:  # ICW1
                self._init_reset()
                self.init_state = 1
                self.init4 = bool(val & 1)
                self.single_mode = bool(val & 2)
                # Bit 3 (LTIM, all-level) is ignored, as in QEMU and Xen: PCs use the ELCR.
            elif val & 0x08:  # OCW3
                if val & 0x04:
                    self.poll = True
                if val & 0x02:
                    self.read_reg_select = val & 1
                if val & 0x40:
                    self.special_mask = bool(val >> 5 & 1)
            else:  # OCW2
                self._ocw2(val)
        else:
            if self.init_state == 0:  # OCW1
                self.imr = val
            elif self.init_state == 1:  # ICW2: vector base, low 3 bits are the IRQ
                self.irq_base = val & 0xF8
                if self.single_mode:
                    self.init_state = 3 if self.init4 else 0
                else:
                    self.init_state = 2
            elif self.init_state == 2:  # ICW3: cascade wiring, fixed on a PC
                self.init_state = 3 if self.init4 else 0
            else:  # ICW4
                self.special_fully_nested = bool(val >> 4 & 1)
                self.auto_eoi = bool(val >> 1 & 1)
                self.init_state = 0

    def _ocw2(self, val: int) -> None:
        cmd = val >> 5
        if cmd in (0, 4):  # clear / set rotate in auto-EOI mode
            self.rotate_on_auto_eoi = bool(cmd >> 2)
        elif cmd in (1, 5):  # non-specific EOI (5: and rotate)
            priority = _lowest_priority(self.isr, self.priority_add)
            if priority != 8:
                irq = (priority + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if cmd == 5:
                    self.priority_add = (irq + 1) & 7
        elif cmd == 3:  # specific EOI
            self.isr &= ~(1 << (val & 7))
        elif cmd == 6:  # set priority
            self.priority_add = (val + 1) & 7
        elif cmd == 7:  # rotate on specific EOI
            irq = val & 7
            self.isr &= ~(1 << irq)
            self.priority_add = (irq + 1) & 7
        # cmd 2: no operation

    def read(self, a0: int) -> int:
        if self.poll:
            # Poll command (OCW3 bit 2): the next read is an INTA in disguise.
            self.poll = False
            irq = self.get_irq()
            if irq >= 0:
                self.intack(irq)
                return 0x80 | irq
            return 0
        if a0 == 0:
            return self.isr if self.read_reg_select else self.irr
        return self.imr


class DualPic:
    """Master and slave 8259A cascaded on master IRQ 2, plus the two ELCR bytes."""

    def __init__(self) -> None:
        self.master = Pic8259(master=True, elcr_mask=ELCR_MASKS[0])
        self.slave = Pic8259(master=False, elcr_mask=ELCR_MASKS[1])
        self.spurious = 0  # INTA cycles that found nothing (vector base + 7)

    def reset(self) -> None:
        self.master.reset()
        self.slave.reset()

    def _update_cascade(self) -> None:
        self.master.set_irq(CASCADE_IRQ, 1 if self.slave.get_irq() >= 0 else 0)

    # ---- lines -----------------------------------------------------------------------------
    def set_irq(self, irq: int, level: int) -> None:
        """Drive ISA line ``irq`` (0-15) to ``level``."""
        if irq >= 8:
            self.slave.set_irq(irq - 8, level)
            self._update_cascade()
        elif irq != CASCADE_IRQ:
            self.master.set_irq(irq, level)

    # ---- CPU side --------------------------------------------------------------------------
    def has_interrupt(self) -> bool:
        """The master's INT pin."""
        return self.master.get_irq() >= 0

    def acknowledge(self) -> int:
        """The INTA cycle: returns the vector and updates ISR/IRR as the hardware does.

        With nothing to deliver the 8259 answers IRQ 7 of the responding chip (a spurious
        interrupt, datasheet p. 13), and does not set its ISR bit.
        """
        m, s = self.master, self.slave
        irq = m.get_irq()
        if irq < 0:
            self.spurious += 1
            return m.irq_base + 7
        if irq == CASCADE_IRQ:
            irq2 = s.get_irq()
            if irq2 >= 0:
                s.intack(irq2)
                vector = s.irq_base + irq2
            else:
                self.spurious += 1
                vector = s.irq_base + 7
            self._update_cascade()
        else:
            vector = m.irq_base + irq
        m.intack(irq)
        return vector

    # ---- ports -----------------------------------------------------------------------------
    def io_read(self, port: int) -> int:
        if port in (0x20, 0x21):
            return self.master.read(port & 1)
        if port in (0xA0, 0xA1):
            val = self.slave.read(port & 1)
            self._update_cascade()
            return val
        if port == ELCR_BASE:
            return self.master.elcr
        if port == ELCR_BASE + 1:
            return self.slave.elcr
        return 0xFF

    def io_write(self, port: int, value: int) -> None:
        value &= 0xFF
        if port in (0x20, 0x21):
            self.master.write(port & 1, value)
        elif port in (0xA0, 0xA1):
            self.slave.write(port & 1, value)
            self._update_cascade()
        elif port == ELCR_BASE:
            self.master.elcr = value & self.master.elcr_mask
        elif port == ELCR_BASE + 1:
            self.slave.elcr = value & self.slave.elcr_mask

    def vector_base(self) -> tuple[int, int]:
        return self.master.irq_base, self.slave.irq_base
