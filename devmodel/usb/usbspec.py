"""`--usb` device specs, xl's `usbdevice=` list (xl.cfg(5)): `tablet`, `mouse`, `keyboard`
(QEMU's `-usbdevice kbd` name `kbd` is accepted too) and `disk:PATH` for a mass-storage device on
a raw image; `disk:PATH,ro` (or `,readonly`) opens it read-only. QEMU's legacy
`disk:format=FMT:PATH` names the image format: qcow2 and the other formats the IDE disks take
go through qemu-nbd as theirs do (devmodel.backends.qemu_nbd.open_image). The option is
repeatable; the order is the order devices are plugged in.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("tablet", "mouse", "keyboard", "disk")
_ALIASES = {"kbd": "keyboard"}
MAX_USB_DEVICES = 9  # root port 1 + the 8 ports of the hub on root port 2


@dataclass(frozen=True)
class UsbSpec:
    kind: str
    path: str = ""
    readonly: bool = False
    format: str = "raw"


def parse_usbspec(text: str) -> UsbSpec:
    t = text.strip()
    if not t:
        raise ValueError("empty --usb device")
    name, sep, rest = t.partition(":")
    kind = _ALIASES.get(name.lower(), name.lower())
    if kind not in KINDS:
        raise ValueError(f"--usb {text!r}: unknown device (tablet, mouse, keyboard or disk:PATH)")
    if kind != "disk":
        if sep:
            raise ValueError(f"--usb {text!r}: {kind} takes no argument")
        return UsbSpec(kind)
    fmt = "raw"
    if rest.startswith("format="):
        fmt, colon, rest = rest[len("format="):].partition(":")
        if not colon or not fmt.isalnum():
            raise ValueError(f"--usb {text!r}: expected disk:format=FMT:PATH")
        fmt = fmt.lower()
    path = rest
    readonly = False
    head, comma, flag = rest.rpartition(",")
    if comma and flag.strip().lower() in ("ro", "readonly", "rw"):
        path = head
        readonly = flag.strip().lower() != "rw"
    if not path:
        raise ValueError(f"--usb {text!r}: disk needs a path (disk:/path/to/image)")
    return UsbSpec("disk", path, readonly, fmt)


def parse_usbspecs(items: list[str]) -> list[UsbSpec]:
    specs = [parse_usbspec(s) for s in items]
    if len(specs) > MAX_USB_DEVICES:
        raise ValueError(f"at most {MAX_USB_DEVICES} USB devices (2 root ports, one 8-port hub)")
    return specs
