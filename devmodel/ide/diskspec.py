"""xl's DISKSPEC syntax for the `--disk` option (xl-disk-configuration(5)).

    [<key>=<value>|<flag>,]*[<target>, [<format>, [<vdev>, [<access>]]]],[<key>=<value>|<flag>,]*
    [target=<target>]

Comma-separated; an item with "=" is a named parameter, a bare keyword is a flag, anything
else fills the next unspecified positional parameter (target, format, vdev, access); an
empty item leaves its positional parameter at the default. `target=` swallows the rest of
the string, commas included, so it must come last. Leading whitespace of an item is ignored.

Only what the emulated IDE controller can use is accepted: a format QEMU knows (raw is
opened directly; the others need the NBD backend, which open_disks reports), vdev hda-hdd
(or xvda-xvdd, which libxl also gives an HVM guest as emulated IDE disks 0-3), access rw/ro,
devtype=cdrom (or the bare `cdrom` flag) for an ATAPI CD-ROM, whose target may be empty (an
empty drive, as xl's `,,hdc,cdrom`) and which is always read-only. Anything else is a
ValueError saying what was wrong.

Extension: `cache=writeback|writethrough|direct` (xl-disk-configuration(5) has no such key;
xl only knows the `direct-io-safe` hint). The host cache mode of the image (see
devmodel/backends/asyncdisk.py ThreadedRawDisk; for formats served by qemu-nbd it becomes
qemu-nbd's --cache=writeback|writethrough|none). Default writeback: FLUSH CACHE from the guest
is an fdatasync, as QEMU's default cache=writeback.
"""

from __future__ import annotations

from dataclasses import dataclass

POSITIONAL = ("target", "format", "vdev", "access")
_NAMED = {"target", "format", "vdev", "access", "devtype", "backendtype", "script", "cache"}
CACHE_MODES = ("writeback", "writethrough", "direct")
_FLAGS = {"cdrom": ("devtype", "cdrom")}
_ACCESS = {"rw": False, "w": False, "ro": True, "r": True}
_VDEV_INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}
# xl-disk-configuration(5) formats, and the other images qemu-nbd opens.
FORMATS = frozenset({"raw", "qcow2", "qcow", "qed", "vmdk", "vdi", "vpc", "vhd", "vhdx",
                     "luks", "parallels", "dmg", "cloop", "bochs"})


@dataclass(frozen=True)
class DiskSpec:
    target: str
    vdev: str
    position: tuple[int, int]  # (channel, unit)
    readonly: bool = False
    cdrom: bool = False
    format: str = "raw"
    cache: str = "writeback"  # extension: writeback | writethrough | direct


def vdev_position(vdev: str) -> tuple[int, int]:
    """hda/hdb/hdc/hdd (or xvda-xvdd) -> (0,0)/(0,1)/(1,0)/(1,1)."""
    name = vdev.strip().lower()
    for prefix in ("hd", "xvd"):
        if name.startswith(prefix) and name[len(prefix):] in _VDEV_INDEX:
            i = _VDEV_INDEX[name[len(prefix):]]
            return i >> 1, i & 1
    raise ValueError(f"vdev {vdev!r}: the emulated IDE controller has hda, hdb, hdc and hdd")


def parse_diskspec(text: str) -> DiskSpec:
    values: dict[str, str] = {}

    def put(key: str, value: str) -> None:
        if key in values:
            raise ValueError(f"disk spec {text!r}: {key} given twice")
        values[key] = value

    rest = text
    next_positional = 0
    while rest is not None:
        item, sep, tail = rest.partition(",")
        rest = tail if sep else None
        item = item.lstrip()
        if item.startswith("target="):
            # Consumes everything after it (xl: "it must come last").
            put("target", item[len("target="):] + ("," + rest if rest is not None else ""))
            break
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in _NAMED:
                raise ValueError(f"disk spec {text!r}: unknown parameter {key!r}")
            put(key, value.strip())
            continue
        if item.strip() in _FLAGS:
            put(*_FLAGS[item.strip()])
            continue
        while next_positional < len(POSITIONAL) and POSITIONAL[next_positional] in values:
            next_positional += 1
        if next_positional >= len(POSITIONAL):
            if item.strip():
                raise ValueError(f"disk spec {text!r}: unexpected extra parameter {item!r}")
            continue
        key = POSITIONAL[next_positional]
        next_positional += 1
        if item.strip():
            put(key, item.strip() if key != "target" else item)
        else:
            values.setdefault(key, "")  # explicitly left at its default

    devtype = values.get("devtype", "") or "disk"
    if devtype not in ("disk", "cdrom"):
        raise ValueError(f"disk spec {text!r}: devtype {devtype!r} is not disk or cdrom")
    cdrom = devtype == "cdrom"
    target = values.get("target", "")
    if not target and not cdrom:
        raise ValueError(f"disk spec {text!r}: no target (path of the image)")
    fmt = (values.get("format") or "raw").lower()
    if fmt not in FORMATS:
        raise ValueError(f"disk spec {text!r}: format {fmt!r} is not a disk image format "
                         f"({', '.join(sorted(FORMATS))})")
    vdev = values.get("vdev", "")
    if not vdev:
        hint = ""
        if any(f",{k}=" in target for k in _NAMED):
            hint = ("; target= takes the rest of the spec, commas included, so it must come "
                    "last (e.g. devtype=cdrom,vdev=hdc,target=/path/x.iso)")
        raise ValueError(f"disk spec {text!r}: no vdev (hda, hdb, hdc or hdd){hint}")
    position = vdev_position(vdev)
    access = (values.get("access") or ("ro" if cdrom else "rw")).lower()
    if access not in _ACCESS:
        raise ValueError(f"disk spec {text!r}: access {access!r} is not rw or ro")
    if cdrom and not _ACCESS[access]:
        raise ValueError(f"disk spec {text!r}: a CD-ROM is read-only (access=ro)")
    backendtype = values.get("backendtype", "")
    if backendtype not in ("", "qdisk"):
        raise ValueError(f"disk spec {text!r}: backendtype {backendtype!r} is not supported")
    if values.get("script"):
        raise ValueError(f"disk spec {text!r}: block scripts are not supported")
    cache = (values.get("cache") or "writeback").lower()
    if cache not in CACHE_MODES:
        raise ValueError(f"disk spec {text!r}: cache {cache!r} is not one of "
                         f"{', '.join(CACHE_MODES)}")
    return DiskSpec(target=target, vdev=vdev.lower(), position=position,
                    readonly=_ACCESS[access], cdrom=cdrom, format=fmt, cache=cache)
