"""Xen platform pieces: the platform PCI device with the emulated-device unplug protocol
(platform.py) and the choice and removal of the unplugged devices (unplug.py).

`build_xen_platform(machine, policy=, blacklist=)` adds the device at 00:02.0, the slot QEMU's
xenfv machine gives it (xen-protocol.md 4.4).
"""

from __future__ import annotations

from .platform import PCI_SLOT, XenPlatform, parse_blacklist_entry
from .unplug import UnplugReport, unplug_emulated

__all__ = ["PCI_SLOT", "UnplugReport", "XenPlatform", "build_xen_platform",
           "parse_blacklist_entry", "unplug_emulated"]


def build_xen_platform(machine, *, policy: str = "honour", blacklist=(),
                       slot: int = PCI_SLOT) -> XenPlatform:
    dev = XenPlatform(policy=policy, blacklist=tuple(blacklist))
    machine.add(dev, slot=slot)
    return dev
