"""USB: the PIIX3 UHCI controller (00:01.2) with QEMU's HID tablet, keyboard and mouse, USB mass
storage (Bulk-Only Transport + SCSI) and an 8-port hub.

`build_usb(machine, devices)` adds the controller and plugs in the devices (a list of
`UsbDevice`s, or of `--usb` spec strings / parsed `UsbSpec`s). Devices here are pure state
machines; disk I/O goes through the DiskBackend port of devmodel/backends/disk.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core import UsbDevice
from .hid import UsbKeyboard, UsbMouse, UsbTablet
from .hub import NUM_PORTS, UsbHub
from .storage import UsbMassStorage
from .uhci import PCI_FN, PCI_SLOT, Uhci
from .usbspec import MAX_USB_DEVICES, UsbSpec, parse_usbspec

__all__ = ["Uhci", "UsbDevice", "UsbHub", "UsbKeyboard", "UsbMouse", "UsbTablet", "UsbMassStorage",
           "build_usb", "open_usb_devices", "parse_usbspec"]


def open_usb_devices(specs: Sequence[UsbSpec | str], backends: list | None = None) -> list[UsbDevice]:
    """Create devices for `--usb` specs; disk images are opened here (set-up time, never in a
    device). Opened backends are appended to `backends` (pass machine.backends) so the daemon
    flushes and closes them; on error the ones opened so far are closed."""
    from devmodel.backends.disk import RawFileDisk

    opened: list = []
    out: list[UsbDevice] = []
    try:
        for i, s in enumerate(specs):
            spec = parse_usbspec(s) if isinstance(s, str) else s
            if spec.kind == "tablet":
                out.append(UsbTablet(f"usb-tablet{i}"))
            elif spec.kind == "mouse":
                out.append(UsbMouse(f"usb-mouse{i}"))
            elif spec.kind == "keyboard":
                out.append(UsbKeyboard(f"usb-kbd{i}"))
            else:
                try:
                    disk = RawFileDisk(spec.path, readonly=spec.readonly)
                except OSError as e:
                    raise ValueError(f"--usb disk:{spec.path}: {e.strerror}") from None
                opened.append(disk)
                out.append(UsbMassStorage(disk, f"usb-storage{i}"))
    except BaseException:
        for b in opened:
            b.close()
        raise
    if backends is not None:
        backends.extend(opened)
    return out


def build_usb(machine, devices: Sequence[UsbDevice | UsbSpec | str] = ()) -> Uhci:
    """Add the PIIX3 UHCI at 00:01.2 and plug the devices in, in order, as QEMU's usb bus does:
    the first on root port 1; with two devices the second on root port 2; with more, a hub on
    root port 2 and the rest on its ports 1-8."""
    devs = [d for d in devices if isinstance(d, UsbDevice)]
    specs = [d for d in devices if not isinstance(d, UsbDevice)]
    if specs:
        if devs:
            raise ValueError("build_usb: pass devices or specs, not both")
        devs = open_usb_devices(specs, machine.backends)
    if len(devs) > MAX_USB_DEVICES:
        raise ValueError(f"at most {MAX_USB_DEVICES} USB devices")
    uhci = Uhci()
    if devs:
        uhci.plug(0, devs[0])
    if len(devs) == 2:
        uhci.plug(1, devs[1])
    elif len(devs) > 2:
        hub = UsbHub()
        uhci.plug(1, hub)
        for n, d in enumerate(devs[1:]):
            hub.plug(n, d)
    assert len(devs) <= 1 + NUM_PORTS
    machine.add(uhci, slot=PCI_SLOT, fn=PCI_FN)
    return uhci
