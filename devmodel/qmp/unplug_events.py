"""What the toolstack hears when the guest's PV drivers unplug emulated devices (xen-protocol.md
5.4): one `DEVICE_DELETED` per removed device, shaped as QEMU sends it, then one
`XEN_PLATFORM_UNPLUG` summary per request (devmodel's own event; QEMU has none).

QEMU's shapes (hw/core/qdev.c device_finalize -> qapi_event_send_device_deleted(dev->id,
canonical path); `device` is optional and absent for a device without an id):
- a NIC: libxl starts it as `-device e1000,id=nicN`, so `{"device": id, "path":
  "/machine/peripheral/<id>"}`; here the id is the device's name.
- an IDE hard disk: xen_platform.c ide_dev_unplug unparents the `ide-hd` qdev that the legacy
  `-drive if=ide` created. That qdev has no id (the `ide0-hd0` name belongs to the drive's
  BlockBackend, not the device), so QEMU sends only the path, under /machine/unattached.
  Our path is the `qdev` query-block reports for the drive (devmodel.controller): toolstacks
  can match one against the other; the summary event carries the drive name as well.

The events come from the machine's unplug path (Machine.notify_unplugged and
XenPlatform.summary_listeners), i.e. while the guest's write to port 0x10 (or the legacy BAR0
hooks) is served, and reach every QMP monitor in negotiated mode.
"""

from __future__ import annotations

import re
from typing import Any

from devmodel.controller import IDE_DEVNUM

SUMMARY_EVENT = "XEN_PLATFORM_UNPLUG"
_IDE_DRIVE = re.compile(r"ide([01])-hd([01])$")


def device_deleted_data(device_id: str, kind: str) -> dict[str, Any]:
    """The DEVICE_DELETED `data` for one removed device or drive."""
    m = _IDE_DRIVE.match(device_id)
    if m is not None and kind == "disk":
        devnum = IDE_DEVNUM[(int(m.group(1)), int(m.group(2)))]
        return {"path": f"/machine/unattached/device[{devnum}]"}
    return {"device": device_id, "path": f"/machine/peripheral/{device_id}"}


def summary_data(report: Any) -> dict[str, Any]:
    """XEN_PLATFORM_UNPLUG `data` from a devmodel.xen.UnplugReport."""
    from devmodel.xen.platform import PRODUCTS

    data: dict[str, Any] = {
        "mask": report.mask,
        "source": report.source,  # "port" (0x10) or "bar0" (legacy hooks)
        "product": report.product,
        "product-name": PRODUCTS.get(report.product, "unknown"),
        "removed": [{"device": dev_id, "kind": kind, **device_deleted_data(dev_id, kind)}
                    for dev_id, kind in report.removed],
    }
    if report.build is not None:
        data["build"] = report.build
    if report.refused:
        data["refused"] = report.refused  # "blacklisted" or "policy": nothing was removed
    return data


def wire_unplug_events(controller: Any) -> None:
    """Subscribe `controller` (devmodel.controller.Controller, which calls this once, when
    it is made) to its machine's unplugs."""
    machine = controller.machine

    def deleted(device_id: str, kind: str) -> None:
        controller.emit("DEVICE_DELETED", device_deleted_data(device_id, kind))

    def summary(report: Any) -> None:
        controller.emit(SUMMARY_EVENT, summary_data(report))

    machine.unplug_listeners.append(deleted)
    for dev in machine.devices:
        listeners = getattr(dev, "summary_listeners", None)
        if isinstance(listeners, list):
            listeners.append(summary)
