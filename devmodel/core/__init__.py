"""The core machine: address spaces, PCI, guest memory, IRQ lines, clock, registers."""

from .bus import AddressSpace, OverlapError, Range
from .clock import Clock, Timer
from .device import Device, DeviceContext, SnapshotError
from .irq import IrqLine, IrqRouter
from .machine import DeviceFailure, Machine
from .memory import GuestMemory, MemoryLayoutError
from .pci import Bar, PciBus, PciDevice
from .regs import Reg, RegisterFile

__all__ = [
    "AddressSpace", "OverlapError", "Range", "Clock", "Timer", "Device", "DeviceContext",
    "SnapshotError", "IrqLine", "IrqRouter", "DeviceFailure", "Machine", "GuestMemory",
    "MemoryLayoutError", "Bar", "PciBus", "PciDevice", "Reg", "RegisterFile",
]
