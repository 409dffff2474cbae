"""Assembles the emulated PC from the command-line options: the one place that knows which
devices a domain gets and where they sit (QEMU's `pc`/`xenfv` layout, xen-protocol.md 4.4)."""

from __future__ import annotations

from dataclasses import dataclass

from devmodel.core.chipset import build_chipset
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine


@dataclass
class PcOptions:
    virtual_clock: bool = False
    strict: bool = False


def build_pc(opts: PcOptions) -> Machine:
    machine = Machine(clock=Clock(virtual=opts.virtual_clock), strict=opts.strict)
    build_chipset(machine)
    return machine
