"""ISA interrupt lines as Xen wires them: a wired-OR of every source of each line.

Sources of ISA IRQ n (xen-protocol.md 4.6; Xen xen/arch/x86/hvm/irq.c):
- the device model's ``set_isa_irq_level(n, level)``;
- PCI INTx: device ``slot`` pin ``pin`` (0-3 = A-D) asserts link ``(slot + pin) & 3``
  (Xen's ``hvm_pci_intx_link``), and the link drives the ISA IRQ that ``set_pci_link_route``
  last gave it (0 = not routed). A link is asserted while any of its INTx sources is;
- the hypervisor's own devices (the PIT drives IRQ 0).

The resulting line level goes to the 8259 pair, which applies edge or level semantics from ELCR.
Xen also feeds the IO-APIC (GSI = 16 + ((slot*4 + slot/8 + pin) & 31) for INTx); the IO-APIC here
is a register stub and delivers nothing.
"""

from __future__ import annotations

from collections.abc import Callable

NR_ISA_IRQS = 16
NR_LINKS = 4
NR_SLOTS = 32

SRC_DM = 0  # the device model's set_isa_irq_level
SRC_PIT = 1


def intx_link(slot: int, pin: int) -> int:
    return (slot + pin) & 3


class IrqRouter:
    """Collects line levels from all sources and reports each ISA line's OR to ``sink``."""

    def __init__(self, sink: Callable[[int, int], None]) -> None:
        self._sink = sink
        self.isa_sources: list[int] = [0] * NR_ISA_IRQS  # bitmask of SRC_* asserting
        self.intx: set[tuple[int, int]] = set()  # asserted (slot, pin)
        self.link_route: list[int] = [0] * NR_LINKS
        self._line: list[int] = [0] * NR_ISA_IRQS
        self.bad_requests = 0  # out-of-range arguments from the device model

    def reset(self) -> None:
        self.isa_sources = [0] * NR_ISA_IRQS
        self.intx.clear()
        self.link_route = [0] * NR_LINKS
        for irq in range(NR_ISA_IRQS):
            self._update(irq)

    def _link_asserted(self, link: int) -> bool:
        return any(intx_link(slot, pin) == link for slot, pin in self.intx)

    def level(self, irq: int) -> int:
        if self.isa_sources[irq]:
            return 1
        for link in range(NR_LINKS):
            if self.link_route[link] == irq and irq and self._link_asserted(link):
                return 1
        return 0

    def _update(self, irq: int) -> None:
        level = self.level(irq)
        if level != self._line[irq]:
            self._line[irq] = level
            self._sink(irq, level)

    # ---- sources ---------------------------------------------------------------------------
    def set_isa_level(self, irq: int, level: int, source: int = SRC_DM) -> None:
        if not 0 <= irq < NR_ISA_IRQS:
            self.bad_requests += 1
            return
        if level:
            self.isa_sources[irq] |= 1 << source
        else:
            self.isa_sources[irq] &= ~(1 << source)
        self._update(irq)

    def set_pci_intx(self, slot: int, pin: int, level: int) -> None:
        if not (0 <= slot < NR_SLOTS and 0 <= pin < 4):
            self.bad_requests += 1
            return
        if level:
            self.intx.add((slot, pin))
        else:
            self.intx.discard((slot, pin))
        irq = self.link_route[intx_link(slot, pin)]
        if irq:
            self._update(irq)

    def set_link_route(self, link: int, irq: int) -> None:
        if not 0 <= link < NR_LINKS or not 0 <= irq < NR_ISA_IRQS:
            self.bad_requests += 1
            return
        old = self.link_route[link]
        self.link_route[link] = irq
        for line in (old, irq):  # the old line drops before the new one rises
            if line:
                self._update(line)
