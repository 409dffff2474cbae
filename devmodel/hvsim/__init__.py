"""devmodel.hvsim: a hypervisor simulator that plays Xen's part for the device model.

It owns what Xen owns on an HVM guest: the vCPU (Unicorn), guest RAM (a memfd shared with the
device model), the 8259 PIC pair, the 8254 PIT, LAPIC/IO-APIC stubs and the
CF8 latch; everything else becomes an ioreq through an ``IoreqPort``. The firmware is the device
model's: it shares the BIOS image and the shadow RAM, and the simulator maps them (firmware.py).
"""

from .clock import VirtualClock
from .firmware import DEFAULT_BIOS, SharedRegion
from .memory import GuestRam, RamRegion
from .pic import DualPic
from .pit import Pit
from .ports import IoreqPort, NullPort
from .routing import IoRouter, Route
from .simulator import Simulator, Stats, Stop, StopReason

__all__ = [
    "DEFAULT_BIOS", "DualPic", "GuestRam", "IoRouter", "IoreqPort", "NullPort", "Pit",
    "RamRegion", "Route", "SharedRegion", "Simulator", "Stats", "Stop", "StopReason",
    "VirtualClock",
]
