"""Putting the standard VGA into a machine: VRAM as shared memory, the VGA BIOS as its ROM.

Opening files and creating the memfd happen here, at set-up, never in the device."""

from __future__ import annotations

import os

from devmodel.core.machine import Machine

from . import regs as R
from .device import StdVga

VGABIOS_STDVGA = "/usr/share/seabios/vgabios-stdvga.bin"
MAX_ROM_SIZE = 1 << 20
# QEMU's pc machine puts the VGA at 00:02.0; with the Xen platform device (xenfv) at 00:03.0.
SLOT_PC = 2
SLOT_XENFV = 3


def check_vram_mb(vram_mb: int) -> int:
    if not R.VRAM_MIN_MB <= vram_mb <= R.VRAM_MAX_MB or vram_mb & (vram_mb - 1):
        raise ValueError(f"--vga-mem {vram_mb}: must be a power of two from {R.VRAM_MIN_MB} "
                         f"to {R.VRAM_MAX_MB} MiB")
    return vram_mb << 20


def load_rom(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ROM_SIZE + 1)
    except OSError as e:
        raise ValueError(f"cannot read VGA BIOS {path}: {e.strerror} "
                         "(apt-get install seabios)") from None
    if not data or len(data) > MAX_ROM_SIZE or data[:2] != b"\x55\xaa":
        raise ValueError(f"VGA BIOS {path} is not an option ROM of at most 1 MiB")
    return data


def build_vga(machine: Machine, slot: int | None = None, vram_mb: int = R.VRAM_DEFAULT_MB, *,
              rom_path: str | None = VGABIOS_STDVGA, shared: bool = True) -> StdVga:
    """Add the standard VGA at 00:`slot`.0 (None: 00:02.0 as on QEMU's pc, or 00:03.0 when
    the Xen platform device holds 00:02.0, as on xenfv). `shared`: VRAM in a memfd (a machine backend) the
    hypervisor maps at BAR0; otherwise a bytearray and BAR0 trapped. `rom_path` None: no ROM
    BAR (a firmware that brings its own VGA BIOS)."""
    size = check_vram_mb(vram_mb)
    if slot is None:
        slot = SLOT_PC if machine.pci.get(SLOT_PC << 3) is None else SLOT_XENFV
    rom = load_rom(rom_path) if rom_path else None
    if shared:
        from devmodel.backends.memfd import SharedMemory, share_rom

        mem = SharedMemory(f"devmodel-vram-{os.getpid()}", size)
        machine.backends.append(mem)
        dev = StdVga(mem.mm, vram_fd=mem.fd, rom=rom)
        share_rom(machine, dev, f"devmodel-vgarom-{os.getpid()}")  # as QEMU on Xen maps it
    else:
        dev = StdVga(bytearray(size), rom=rom)
    machine.add(dev, slot=slot)
    return dev
