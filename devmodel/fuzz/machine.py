"""The machine a fuzz input runs on: `build_pc` in strict mode on a virtual clock, plus guest
RAM (a bytearray, as GuestMemory.fake) and an in-memory IDE disk, and the list of devices the
input is aimed at (QEMU's generic fuzzer selects objects the same way: the machine is whole,
the targeting is narrowed).

A fresh machine per input keeps every input deterministic and independent; building one
costs ~3 ms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from devmodel.core.machine import Machine
from devmodel.core.pci import PciDevice
from devmodel.pc import PcOptions, build_pc

# Device families: --devices names -> device names of build_pc's machine (prefix match).
FAMILIES: dict[str, tuple[str, ...]] = {
    "chipset": ("i440fx", "piix3", "pci-host", "port92"),
    "rtc": ("rtc",),
    "fw_cfg": ("fw_cfg",),
    "i8042": ("i8042",),
    "uart": ("com",),
    "pm": ("piix4-pm",),
    "debugport": ("debugport",),
    "ide": ("piix3-ide",),
    "xen": ("xen-platform",),
    "vga": ("vga",),
    "usb": ("piix3-usb-uhci",),
    # build_pc opens a real tap for a NIC: the fuzzer attaches one with no backend itself
    # (in-process only; a trace replay's daemon has no such NIC).
    "e1000": ("e1000",),
}
ALIASES = {"bios": ("rtc", "fw_cfg", "i8042", "uart", "pm", "debugport")}
# Families whose devices exist only when asked for (the rest are always in the machine).
EXTRA_FAMILIES = ("xen", "vga", "usb", "e1000")
BASE_FAMILIES = tuple(f for f in FAMILIES if f not in EXTRA_FAMILIES)
ALL_FAMILIES = tuple(FAMILIES)

VGA_MEM_MB = 4  # the smallest VRAM: a fresh (sparse) memfd per input
RTC_BASE = 1_600_000_000  # a fixed RTC start, so a run is reproducible
VGA_HOLE = (0xA0000, 0x100000)  # no RAM there: the legacy VGA window and ROMs (as on a PC)


def parse_devices(text: str) -> tuple[str, ...]:
    """`chipset,bios,ide` or `all` -> the family names, in a stable order."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            names: tuple[str, ...] = ALL_FAMILIES
        elif part in ALIASES:
            names = ALIASES[part]
        elif part in FAMILIES:
            names = (part,)
        else:
            known = ", ".join([*FAMILIES, *ALIASES, "all"])
            raise ValueError(f"unknown device family {part!r} (known: {known})")
        out += [n for n in names if n not in out]
    if not out:
        raise ValueError("no device family selected")
    return tuple(out)


@dataclass
class FuzzSetup:
    """What makes two runs of one input identical: written into every reproducer."""

    devices: tuple[str, ...] = BASE_FAMILIES
    ram: int = 2 << 20  # bytes of guest RAM at 0 (minus the VGA hole)
    disks: dict[str, int] = field(default_factory=lambda: {"hda": 4 << 20})  # vdev -> bytes
    rtc_base: int = RTC_BASE

    def header(self) -> str:
        disks = ",".join(f"{k}:{v}" for k, v in self.disks.items()) or "none"
        return f"devices={','.join(self.devices)} ram={self.ram} disks={disks}"

    @classmethod
    def from_header(cls, text: str) -> FuzzSetup:
        s = cls()
        for item in text.split():
            key, _, val = item.partition("=")
            if key == "devices":
                s.devices = parse_devices(val)
            elif key == "ram":
                s.ram = int(val, 0)
            elif key == "disks":
                s.disks = {} if val == "none" else {
                    k: int(v, 0) for k, v in (d.split(":") for d in val.split(","))}
            elif key == "rtc_base":
                s.rtc_base = int(val, 0)
        return s

    def daemon_args(self) -> list[str]:
        """Machine options of `devmodel run` that build the same machine (disks aside)."""
        out = ["--clock", "virtual", "--rtc-base", str(self.rtc_base),
               "--memory", str(max(self.ram, 1 << 20)), "--vga", self._vga(),
               "--xen-platform", "on" if "xen" in self.devices else "off"]
        for dev in self._usb():
            out += ["--usb", dev]
        return out

    def _vga(self) -> str:
        return "std" if "vga" in self.devices else "none"

    def _usb(self) -> list[str]:
        return ["tablet", "keyboard"] if "usb" in self.devices else []


def ram_regions(size: int) -> list[tuple[int, int]]:
    """(gpa, length) of guest RAM: below the VGA hole and from 1 MiB on."""
    lo, hi = VGA_HOLE
    if size <= lo:
        return [(0, size)]
    return [(0, lo)] + ([(hi, size - hi)] if size > hi else [])


def _memdisk(size: int) -> tuple[int, str]:
    fd = os.memfd_create("devmodel-fuzz-disk", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, f"/proc/self/fd/{fd}"


def build_fuzz_machine(setup: FuzzSetup, *, strict: bool = True) -> Machine:
    """A fresh machine for one input. Guest RAM is bytearray-backed; disks are fresh memfds
    (sparse, zero) opened through /proc/self/fd so build_pc's own disk path is used."""
    fds: list[int] = []
    specs = []
    try:
        for vdev, size in setup.disks.items():
            fd, path = _memdisk(size)
            fds.append(fd)
            specs.append(f"format=raw,vdev={vdev},access=rw,target={path}")
        m = build_pc(PcOptions(virtual_clock=True, strict=strict, memory=max(setup.ram, 1 << 20),
                               rtc_base=setup.rtc_base, disks=specs, serial=["null"],
                               vga=setup._vga(), vga_mem=VGA_MEM_MB,
                               xen_platform="xen" in setup.devices, usb=setup._usb()))
    finally:
        for fd in fds:
            os.close(fd)
    for rid, (gpa, length) in enumerate(ram_regions(setup.ram)):
        m.memory.add_buffer(rid, gpa, bytearray(length))
    _add_extras(m, setup.devices)
    return m


def _add_extras(m: Machine, families: tuple[str, ...]) -> None:
    if "e1000" in families:
        from devmodel.nic import build_e1000
        from devmodel.pc import _free_slot

        build_e1000(m, _free_slot(m), b"\x52\x54\x00\x12\x34\x56", None, rom=None)


class Targets:
    """The port ranges, MMIO ranges and PCI functions of the selected devices, recomputed
    when the address spaces change (a BAR moved)."""

    def __init__(self, m: Machine, families: tuple[str, ...]) -> None:
        prefixes = tuple(p for f in families for p in FAMILIES[f])
        self.devices = [d for d in m.devices if d.name.startswith(prefixes)]
        self.pci: list[PciDevice] = [d for d in self.devices if isinstance(d, PciDevice)]
        self._m = m
        self._stale = True
        self.pio: list = []
        self.mmio: list = []
        for space in (m.pio, m.mmio):
            space.listeners.append(self._changed)
        self.refresh()

    def _changed(self, *_a) -> None:
        self._stale = True

    def refresh(self) -> None:
        if not self._stale:
            return
        owners = set(map(id, self.devices))
        self.pio = [r for r in self._m.pio if id(r.owner) in owners]
        self.mmio = [r for r in self._m.mmio if id(r.owner) in owners]
        self._stale = False
