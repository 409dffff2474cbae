"""Which emulated devices an unplug request removes, exactly as upstream QEMU chooses them
(hw/i386/xen/xen_platform.c: pci_unplug_disks / pci_unplug_nics; xen-protocol.md 5.4), and
the removal itself as a machine operation (design rule 12).

Mask bits: 1 all IDE (and SCSI) disks, 2 all NICs, 4 IDE disks except the primary master
(ignored when bit 0 is set too), 8 NVMe disks. Disk unplug runs when any of bits 0, 2, 3 is
set, NIC unplug when bit 1 is. As in QEMU, every PCI function on the bus is looked at by its
class code, and passed-through functions (`passthrough = True`) are never touched:

- IDE 01:01 / SATA 01:06 controllers stay; their hard-disk drives go (never a CD-ROM; with
  the aux rule the master of channel 0 stays). Each drive's backend is drained, flushed
  (fdatasync) and closed; the position becomes empty (an absent device: status and error
  read 0 on an empty channel, the signature FF/FF). If any drive went, the controller is
  reset as QEMU's pci_device_reset does, which also clears its COMMAND register and so
  unmaps the bus-master BAR (the range DMOP shows it) until the guest programs it again.
- SCSI 01:00 controllers are removed whole unless in aux mode; NVMe 01:08 when bit 3 is set.
  A mask of 8 alone also takes the IDE disks: QEMU's aux test is (mask & 4) && !(mask & 1),
  so any disk request without the aux bit is an all-disks request.
- Ethernet 02:00 functions: their backend peers (the tap) are released first, then the
  functions are removed (BARs unmapped, config space all-ones, unmap_pcidev).

The drive protocol (IDE today, ATAPI being added): a drive is a hard disk iff it is present
and its `unplug_kind` is "disk" (the default when the attribute is absent); a CD-ROM drive
(devmodel/ide/atapi.py's AtapiDrive: `is_cd = True`, or `unplug_kind = "cdrom"`) is never
unplugged, with or without a medium.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("devmodel.xen")

UNPLUG_ALL_DISKS = 0x1  # IDE and SCSI disks (not CD-ROMs)
UNPLUG_ALL_NICS = 0x2
UNPLUG_AUX_IDE_DISKS = 0x4  # all IDE disks but the primary master
UNPLUG_NVME_DISKS = 0x8
UNPLUG_DISK_BITS = UNPLUG_ALL_DISKS | UNPLUG_AUX_IDE_DISKS | UNPLUG_NVME_DISKS

CLASS_STORAGE_SCSI = 0x0100
CLASS_STORAGE_IDE = 0x0101
CLASS_STORAGE_SATA = 0x0106
CLASS_STORAGE_NVME = 0x0108
CLASS_NETWORK_ETHERNET = 0x0200


@dataclass
class UnplugReport:
    """What one unplug request did: the summary the QMP layer turns into an event."""

    mask: int
    source: str  # "port" (0x10), "bar0" (legacy hooks at BAR0 offset 4/8)
    product: int = 0  # the product number the driver registered (0: none)
    build: int | None = None
    removed: list[tuple[str, str]] = field(default_factory=list)  # (device_id, kind)
    refused: str | None = None  # "blacklisted", "policy" when nothing was done on purpose


def class_word(dev: Any) -> int:
    c = dev.config
    return c[0x0A] | c[0x0B] << 8


def is_hard_disk(drive: Any) -> bool:
    if not getattr(drive, "present", False):
        return False
    if getattr(drive, "is_cd", False) or getattr(drive, "is_cdrom", False):
        return False
    return getattr(drive, "unplug_kind", "disk") == "disk"


def drive_id(channel: int, unit: int) -> str:
    """QEMU's name for a legacy IDE drive (blockdev.c: if_name + bus + "-hd" + unit), which
    is what libxl's `-drive if=ide,index=N` gets."""
    return f"ide{channel}-hd{unit}"


def unplug_emulated(machine: Any, mask: int) -> list[tuple[str, str]]:
    """Run one unplug request on `machine`; returns the (device_id, kind) removed, in order.
    Idempotent: what is gone is not found again."""
    removed: list[tuple[str, str]] = []
    if mask & UNPLUG_DISK_BITS:
        removed += _unplug_disks(machine, mask)
    if mask & UNPLUG_ALL_NICS:
        removed += _unplug_nics(machine)
    return removed


def _functions(machine: Any) -> list[Any]:
    return [d for _, d in sorted(machine.pci.devices.items())
            if not getattr(d, "passthrough", False)]


def _unplug_disks(machine: Any, mask: int) -> list[tuple[str, str]]:
    aux = bool(mask & UNPLUG_AUX_IDE_DISKS) and not mask & UNPLUG_ALL_DISKS
    out: list[tuple[str, str]] = []
    for dev in _functions(machine):
        cls = class_word(dev)
        if cls in (CLASS_STORAGE_IDE, CLASS_STORAGE_SATA):
            out += unplug_ide_drives(machine, dev, aux)
        elif cls == CLASS_STORAGE_SCSI and not aux:
            if machine.unplug(dev, "disk"):
                out.append((dev.name, "disk"))
        elif cls == CLASS_STORAGE_NVME and mask & UNPLUG_NVME_DISKS:
            if machine.unplug(dev, "disk"):
                out.append((dev.name, "disk"))
    return out


def unplug_ide_drives(machine: Any, ide: Any, aux: bool) -> list[tuple[str, str]]:
    """QEMU ide_dev_unplug for each ide-hd child, then pci_device_reset if any went."""
    removed: list[tuple[str, str]] = []
    for ch in getattr(ide, "channels", ()):
        drives = list(ch.drives)
        for unit, drive in enumerate(drives):
            if not is_hard_disk(drive):
                continue
            if aux and ch.index == 0 and unit == 0:
                continue
            backend = getattr(drive, "backend", None)
            # Disk I/O is asynchronous: release_backend drains the request in flight (its
            # completion, if still queued on the loop, is dropped by the drive: it is no
            # longer the channel's), then fdatasyncs, then closes. Every write acknowledged
            # to the guest had completed, so it is in the image and now durable.
            if backend is not None:
                machine.release_backend(backend)
            machine.release_resources(drive)
            drives[unit] = _empty_position(ch, unit, drive)
            disks = getattr(ide, "disks", None)
            if isinstance(disks, dict):
                disks.pop((ch.index, unit), None)
            removed.append((drive_id(ch.index, unit), "disk"))
        ch.set_drives(drives)
    if removed:
        # QEMU pci_device_reset: the controller and both buses to power-on state. A command
        # still waiting for the bus master (or a half-written PIO block) is dropped: it was
        # never acknowledged to the guest.
        ide.reset()
        machine.pci.update_mappings(ide)
        for device_id, kind in removed:
            machine.notify_unplugged(device_id, kind)
    return removed


def _empty_position(channel: Any, unit: int, old: Any) -> Any:
    """An absent device at the position (QEMU keeps the IDEState with blk = NULL)."""
    from devmodel.ide.drive import AtaDrive

    return AtaDrive(channel, unit, None, getattr(old, "serial", ""))


def _unplug_nics(machine: Any) -> list[tuple[str, str]]:
    nics = [d for d in _functions(machine) if class_word(d) == CLASS_NETWORK_ETHERNET]
    # QEMU deletes the peers (taps) of all PCI NICs first, then the NICs.
    for nic in nics:
        machine.release_resources(nic)
    out = []
    for nic in nics:
        if machine.unplug(nic, "nic"):
            out.append((nic.name, "nic"))
    return out
