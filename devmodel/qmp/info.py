"""What the query-* commands return, in QEMU's QAPI shapes, and the HMP `info` texts.
Read-only views of the machine; nothing here changes state."""

from __future__ import annotations

from typing import Any

from devmodel import __version__

# The QEMU version reported. libxl picks command forms by version (blockdev-change-medium
# from 2.8, xen-save-devices-state's `live` from 2.11, eject by `id` from 6.0): a recent
# version makes it use the newest forms, which are the ones implemented here.
QEMU_VERSION = (8, 2, 0)
PACKAGE = f"devmodel {__version__}"

# QEMU hw/pci/pci.c pci_class_descriptions (the classes a PC model has)
PCI_CLASS_DESC = {
    0x0100: "SCSI controller", 0x0101: "IDE controller", 0x0106: "SATA controller",
    0x0108: "NVMe controller", 0x0180: "Storage controller", 0x0200: "Ethernet controller",
    0x0300: "VGA controller", 0x0380: "Display controller", 0x0401: "Audio controller",
    0x0403: "Audio controller", 0x0600: "Host bridge", 0x0601: "ISA bridge",
    0x0604: "PCI bridge", 0x0680: "Bridge", 0x0c03: "USB controller", 0x0c05: "SMBus",
}
PCI_BAR_UNMAPPED = -1
PIN_NAMES = "?ABCD"


def version_info() -> dict[str, Any]:
    major, minor, micro = QEMU_VERSION
    return {"qemu": {"micro": micro, "minor": minor, "major": major}, "package": PACKAGE}


# ---- PCI -----------------------------------------------------------------------------------
def _u16(c: bytes | bytearray, off: int) -> int:
    return c[off] | c[off + 1] << 8


def pci_regions(dev) -> list[dict[str, Any]]:
    out = []
    for bar in dev.bars:
        if bar is None:
            continue
        addr = dev.bar_address(bar)
        r: dict[str, Any] = {"bar": bar.index, "type": "io" if bar.io else "memory",
                             "address": PCI_BAR_UNMAPPED if addr is None else addr,
                             "size": bar.size}
        if not bar.io:
            r["prefetch"] = bool(bar.prefetch)
            r["mem_type_64"] = bool(bar.is64)
        out.append(r)
    if dev.rom_size:
        addr = dev.rom_address()
        out.append({"bar": 6, "type": "memory",
                    "address": PCI_BAR_UNMAPPED if addr is None else addr,
                    "size": dev.rom_size, "prefetch": False, "mem_type_64": False})
    return out


def pci_device_info(devfn: int, dev) -> dict[str, Any]:
    c = dev.config
    cls = _u16(c, 0x0A)
    class_info: dict[str, Any] = {"class": cls}
    if cls in PCI_CLASS_DESC:
        class_info["desc"] = PCI_CLASS_DESC[cls]
    info: dict[str, Any] = {
        "bus": 0, "slot": devfn >> 3, "function": devfn & 7,
        "class_info": class_info,
        "id": {"device": _u16(c, 2), "vendor": _u16(c, 0),
               "subsystem": _u16(c, 0x2E), "subsystem-vendor": _u16(c, 0x2C)},
        "irq_pin": c[0x3D],
        "qdev_id": getattr(dev, "qdev_id", "") or "",
        "regions": pci_regions(dev),
    }
    if c[0x3D]:
        info["irq"] = c[0x3C]
    return info


def query_pci(machine) -> list[dict[str, Any]]:
    devs = [pci_device_info(devfn, dev) for devfn, dev in sorted(machine.pci.devices.items())]
    return [{"bus": 0, "devices": devs}]


def hmp_info_pci(machine) -> str:
    lines = []
    for bus in query_pci(machine):
        for d in bus["devices"]:
            desc = d["class_info"].get("desc") or f"Class {d['class_info']['class']:04x}"
            lines.append(f"  Bus {d['bus']:2d}, device {d['slot']:3d}, function {d['function']}:")
            lines.append(f"    {desc}: PCI device {d['id']['vendor']:04x}:{d['id']['device']:04x}")
            lines.append(f"      PCI subsystem {d['id']['subsystem-vendor']:04x}:"
                         f"{d['id']['subsystem']:04x}")
            if "irq" in d:
                lines.append(f"      IRQ {d['irq']}, pin {PIN_NAMES[min(d['irq_pin'], 4)]}")
            for r in d["regions"]:
                a = r["address"] & 0xFFFFFFFFFFFFFFFF
                last = (a + r["size"] - 1) & 0xFFFFFFFFFFFFFFFF
                if r["type"] == "io":
                    lines.append(f"      BAR{r['bar']}: I/O at {a:#x} [{last:#06x}].")
                elif r["bar"] == 6:
                    lines.append(f"      ROM: address {a:#010x}, size {r['size']}.")
                else:
                    kind = ("64" if r["mem_type_64"] else "32") + " bit" + (
                        " prefetchable" if r["prefetch"] else "")
                    lines.append(f"      BAR{r['bar']}: {kind} memory at {a:#010x} [{last:#010x}].")
            lines.append(f"      id \"{d['qdev_id']}\"")
    return "".join(line + "\r\n" for line in lines)


# ---- block ---------------------------------------------------------------------------------
def _inserted(blk) -> dict[str, Any] | None:
    d = blk.drive
    backend = getattr(d, "backend", None)
    if backend is None or not getattr(d, "present", True):
        return None
    path = getattr(backend, "path", "") or ""
    ro = bool(getattr(backend, "readonly", False))
    size = int(getattr(backend, "size", 0))
    wc = bool(getattr(d, "write_cache", True))
    fmt = getattr(backend, "format", "raw")  # qcow2 & co. are served by qemu-nbd
    return {
        "file": path, "node-name": f"#block{blk.channel * 2 + blk.unit}", "ro": ro, "drv": fmt,
        "encrypted": False, "detect_zeroes": "off", "backing_file_depth": 0,
        "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0,
        "write_threshold": 0,
        "cache": {"writeback": wc, "direct": False, "no-flush": False},
        "image": {"filename": path, "format": fmt, "virtual-size": size, "dirty-flag": False},
    }


def query_block(controller) -> list[dict[str, Any]]:
    out = []
    for blk in controller.block_devices():
        info: dict[str, Any] = {"device": blk.name, "qdev": blk.qdev,
                                "locked": bool(getattr(blk.drive, "locked", False)),
                                "removable": blk.removable, "type": "unknown", "io-status": "ok"}
        if blk.removable:
            info["tray_open"] = bool(getattr(blk.drive, "tray_open", False))
        ins = _inserted(blk)
        if ins is not None:
            info["inserted"] = ins
        out.append(info)
    return out


def hmp_info_block(controller) -> str:
    parts = []
    for b in query_block(controller):
        ins = b.get("inserted")
        if ins:
            head = f"{b['device']} ({ins['node-name']}): {ins['file']} ({ins['drv']}"
            head += ", read-only)" if ins["ro"] else ")"
        else:
            head = f"{b['device']}: [not inserted]"
        lines = [head, f"    Attached to:      {b['qdev']}"]
        if b["removable"]:
            lines.append(f"    Removable device: {'locked' if b['locked'] else 'not locked'}, "
                         f"tray {'open' if b.get('tray_open') else 'closed'}")
        if ins:
            mode = "writeback" if ins["cache"]["writeback"] else "writethrough"
            lines.append(f"    Cache mode:       {mode}")
        parts.append("".join(line + "\r\n" for line in lines))
    return "\r\n".join(parts)


# ---- chardev -------------------------------------------------------------------------------
def chardev_filename(backend) -> str:
    kind = getattr(backend, "kind", "null")
    path = getattr(backend, "path", None)
    if kind == "pty":
        return f"pty:{path}"
    if kind == "unix":
        server = ",server=on" if getattr(backend, "server", False) else ""
        prefix = "" if getattr(backend, "connected", True) else "disconnected:"
        return f"{prefix}unix:{path}{server}"
    return kind  # QEMU reports "file", "null", "stdio" for these


def query_chardev(controller, monitors: list[str]) -> list[dict[str, Any]]:
    """serialN for the UARTs (libxl reads `pty:` filenames of these to find the guest's
    console), the debug console if redirected, and the QMP monitors."""
    out = []
    for d in controller.machine.devices:
        if type(d).__name__ == "Uart" and d.name.startswith("com"):
            n = int(d.name[3:]) - 1
            out.append({"label": f"serial{n}", "filename": chardev_filename(d.backend),
                        "frontend-open": True})
    for i, path in enumerate(monitors):
        out.append({"label": f"qmp{i}", "filename": f"unix:{path},server=on", "frontend-open": True})
    return out


def hmp_info_chardev(controller, monitors: list[str]) -> str:
    return "".join(f"{c['label']}: filename={c['filename']}\r\n"
                   for c in query_chardev(controller, monitors))
