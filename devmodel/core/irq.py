"""Interrupt lines. On Xen the device model owns no interrupt controller: a level change is a
dm_op (set_isa_irq_level / set_pci_intx_level), sent before the IORESP of the access that
caused it (xen-protocol.md 4.6, 7.4 rule 2).

Several sources may share one line (wired-OR), so a line keeps the set of asserting sources
and only a change of the OR reaches the hypervisor.
"""

from __future__ import annotations

from collections.abc import Callable

from devmodel.wire.constants import DmOp

EmitFn = Callable[[int, tuple[int, ...]], None]


class _SharedLine:
    __slots__ = ("_asserted", "_emit", "_op", "_args", "level")

    def __init__(self, emit: EmitFn, op: int, args: tuple[int, ...]) -> None:
        self._asserted: set[int] = set()
        self._emit = emit
        self._op = op
        self._args = args
        self.level = 0

    def set(self, source: int, level: int) -> None:
        if level:
            self._asserted.add(source)
        else:
            self._asserted.discard(source)
        new = 1 if self._asserted else 0
        if new != self.level:
            self.level = new
            self._emit(self._op, self._args + (new,))

    def reset(self) -> None:
        self._asserted.clear()
        if self.level:
            self.level = 0
            self._emit(self._op, self._args + (0,))


class IrqLine:
    """What a device holds: raise(), lower(), pulse(), set_level()."""

    __slots__ = ("_line", "_source", "name")

    def __init__(self, line: _SharedLine, source: int, name: str) -> None:
        self._line = line
        self._source = source
        self.name = name

    def set_level(self, level: int | bool) -> None:
        self._line.set(self._source, 1 if level else 0)

    def raise_(self) -> None:
        self._line.set(self._source, 1)

    def lower(self) -> None:
        self._line.set(self._source, 0)

    def pulse(self) -> None:
        """An edge, as ISA devices signal one: a 1 then a 0 (xen-protocol.md 4.6)."""
        self._line.set(self._source, 1)
        self._line.set(self._source, 0)

    @property
    def level(self) -> int:
        return self._line.level


class IrqRouter:
    """Creates lines and turns their level changes into IRQ dm_ops via `emit`."""

    def __init__(self, emit: EmitFn) -> None:
        self._emit = emit
        self._isa: dict[int, _SharedLine] = {}
        self._intx: dict[tuple[int, int], _SharedLine] = {}
        self._sources = 0

    def _next_source(self) -> int:
        self._sources += 1
        return self._sources

    def isa(self, irq: int, name: str = "") -> IrqLine:
        if not 0 <= irq <= 15:
            raise ValueError(f"ISA IRQ {irq} out of range 0-15")
        line = self._isa.get(irq)
        if line is None:
            line = self._isa[irq] = _SharedLine(self._emit, DmOp.SET_ISA_IRQ_LEVEL, (irq,))
        return IrqLine(line, self._next_source(), name or f"isa{irq}")

    def intx(self, slot: int, pin: int, name: str = "") -> IrqLine:
        """PCI INTx of device `slot`, pin 0-3 = INTA-D. Xen does the swizzle and routing."""
        if not (0 <= slot <= 31 and 0 <= pin <= 3):
            raise ValueError(f"bad INTx slot {slot} pin {pin}")
        line = self._intx.get((slot, pin))
        if line is None:
            # set_pci_intx_level fields: domain, bus, device, intx, level
            line = self._intx[(slot, pin)] = _SharedLine(
                self._emit, DmOp.SET_PCI_INTX_LEVEL, (0, 0, slot, pin)
            )
        return IrqLine(line, self._next_source(), name or f"intx{slot}.{'ABCD'[pin]}")

    def levels(self) -> dict[str, int]:
        out = {f"isa{k}": v.level for k, v in self._isa.items()}
        out.update({f"intx{s}.{'ABCD'[p]}": v.level for (s, p), v in self._intx.items()})
        return out

    def reset(self) -> None:
        for line in (*self._isa.values(), *self._intx.values()):
            line.reset()
