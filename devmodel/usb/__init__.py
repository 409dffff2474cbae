"""USB: the PIIX3 UHCI controller (00:01.2) with QEMU's HID tablet, keyboard and mouse, USB mass
storage (Bulk-Only Transport + SCSI) and an 8-port hub.

`build_usb(machine, devices)` adds the controller and plugs in the devices (a list of
`UsbDevice`s, or of `--usb` spec strings / parsed `UsbSpec`s). Devices here are pure state
machines; disk I/O goes through the DiskBackend port of devmodel/backends/disk.py.

`unplug_usb(machine, dev)` (QMP device_del of a USB device reaches it through
`UsbDevice.unplug_request`) disconnects a device from its root or hub port on the running
machine and releases what it owned; `plug_usb` connects one again.
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
           "build_usb", "open_usb_devices", "parse_usbspec", "plug_usb", "unplug_usb"]


def open_usb_devices(specs: Sequence[UsbSpec | str], backends: list | None = None) -> list[UsbDevice]:
    """Create devices for `--usb` specs; disk images are opened here (set-up time, never in a
    device), as the IDE disks are (devmodel.backends.qemu_nbd.open_image: a raw image on the
    thread pool, asynchronous). Opened backends are appended to `backends` (pass
    machine.backends) so the daemon flushes and closes them; on error the ones opened so far
    are closed."""
    from devmodel.backends.qemu_nbd import QemuNbdError, open_image
    from devmodel.ide.piix import NBD_FORMATS

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
                if spec.format != "raw" and spec.format not in NBD_FORMATS:
                    raise ValueError(f"--usb disk:{spec.path}: format {spec.format!r} is not supported")
                try:
                    disk = open_image(spec.path, spec.format, readonly=spec.readonly)
                except OSError as e:
                    raise ValueError(f"--usb disk:{spec.path}: {e.strerror}") from None
                except QemuNbdError as e:
                    raise ValueError(f"--usb disk:{spec.path}: cannot open as {spec.format}: {e}") from None
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
    if specs:
        for d in devs:  # the backends opened here serve one device each: unplug releases them
            backend = getattr(d, "backend", None)
            if backend is not None:
                machine.own(d, backend)
                machine.attach_completions(backend)  # as for IDE disks
    for d in uhci.all_devices():
        _wire_unplug(machine, uhci, d)
    return uhci


def _wire_unplug(machine, uhci: Uhci, dev: UsbDevice) -> None:
    def unplug() -> None:
        unplug_usb(machine, dev, uhci)
    dev.port_unplug = unplug


def plug_usb(machine, uhci: Uhci, dev: UsbDevice, port: int, hub: UsbHub | None = None) -> None:
    """Connect `dev` to a free root port of `uhci` (or to port `port` of `hub`, which is
    plugged in) on the running machine: the port reports the connection as at start-up, and
    QMP device_del of the device (UsbDevice.unplug_request) reaches unplug_usb."""
    if dev.port_unplug is not None or any(d is dev for d in uhci.all_devices()):
        raise ValueError(f"{dev.name} is plugged in already")
    if hub is not None:
        if not any(d is hub for d in uhci.all_devices()):
            raise ValueError(f"{hub.name} is not plugged in")
        hub.plug(port, dev)
    else:
        uhci.plug(port, dev)
    for d in uhci.all_devices():
        _wire_unplug(machine, uhci, d)


def unplug_usb(machine, dev: UsbDevice, uhci: Uhci | None = None) -> bool:
    """Unplug a USB device from the running machine (QMP device_del; hostile-guest-catalog
    28): the port reports the disconnect, the device (a hub: with everything behind it) is
    reset and unbound (UsbDevice.detached), the backends it owns are drained, flushed and
    closed (Machine.release_resources), and each removed device is announced
    (Machine.notify_unplugged: DEVICE_DELETED). Nothing in the model refers to it afterwards.
    False if it is not plugged into the machine's UHCI."""
    if uhci is None:
        uhci = next((d for d in machine.devices if isinstance(d, Uhci)
                     and any(u is dev for u in d.all_devices())), None)
    if uhci is None:
        return False
    gone = dev.subtree()
    if not uhci.detach(dev):
        return False
    for d in reversed(gone):
        machine.release_resources(d)
        machine.notify_unplugged(d.name, "usb")
    return True
