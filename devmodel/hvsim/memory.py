"""Guest RAM: one memfd, mapped into the CPU and shared with the device model.

Layout (xen-protocol.md 7.3): file offset == guest-physical address, so one memfd serves every
region. [0, 0xA0000) and [0x100000, ram_size) are RAM (QEMU's split, the same regions the
client's ``add_ram`` announces); 0xA0000-0xBFFFF is the VGA MMIO window, and 0xC0000-0xFFFFF
is the device model's shadow RAM, mapped from its own MEM_ADD (see firmware.py). RAM above the PCI hole is
not supported: the CPU runs without PAE, so ram_size is capped at 0xF0000000
(HVM_BELOW_4G_RAM_END).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass

from ..wire.constants import MEM_RAM

VGA_START = 0xA0000
SHADOW_START = 0xC0000
SHADOW_END = 0x100000
HIGH_START = SHADOW_END
MAX_RAM_BELOW_4G = 0xF000_0000
RAM_ALIGN = 1 << 20


@dataclass(frozen=True, slots=True)
class RamRegion:
    """One MEM_ADD: guest-physical ``gpa``, ``size`` bytes at ``offset`` of the memfd."""

    gpa: int
    size: int
    offset: int
    flags: int = MEM_RAM


class GuestRam:
    """The memfd, its mapping, and the regions to announce to the device model."""

    def __init__(self, size: int, *, shared: mmap.mmap | None = None, fd: int = -1) -> None:
        """Create a memfd of ``size`` bytes, or with ``shared`` use a mapping somebody else
        owns (e.g. ``devmodel.client``'s GuestRam.mm, already announced with MEM_ADD); it must
        be a MAP_SHARED mapping at file offset 0 and at least ``size`` long."""
        if size % RAM_ALIGN or not 2 * RAM_ALIGN <= size <= MAX_RAM_BELOW_4G:
            raise ValueError(
                f"ram_size must be a multiple of 1 MiB in [2 MiB, {MAX_RAM_BELOW_4G:#x}]"
            )
        self.size = size
        self._owned = shared is None
        if shared is None:
            fd = os.memfd_create("hvsim-ram", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                os.ftruncate(fd, size)
                shared = mmap.mmap(fd, size, mmap.MAP_SHARED)
            except BaseException:
                os.close(fd)
                raise
        elif len(shared) < size:
            raise ValueError(f"shared mapping is {len(shared)} bytes, need {size}")
        self.fd = fd
        self._mmap = shared
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self._mmap)
        self.address = ctypes.addressof(self._anchor)
        self.view = memoryview(self._mmap)

    def regions(self) -> list[RamRegion]:
        """What to announce with MEM_ADD: everything but the VGA window and the ROM area."""
        return [
            RamRegion(0, VGA_START, 0),
            RamRegion(HIGH_START, self.size - HIGH_START, HIGH_START),
        ]

    def contains(self, gpa: int, length: int) -> bool:
        end = gpa + length
        return (0 <= gpa and end <= VGA_START) or (HIGH_START <= gpa and end <= self.size)

    def read(self, gpa: int, length: int) -> bytes:
        if not self.contains(gpa, length):
            raise ValueError(f"{gpa:#x}+{length} is not guest RAM")
        return bytes(self.view[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        if not self.contains(gpa, len(data)):
            raise ValueError(f"{gpa:#x}+{len(data)} is not guest RAM")
        self.view[gpa : gpa + len(data)] = data

    def close(self) -> None:
        """Release the mapping. The CPU must not run afterwards."""
        if self._anchor is None:
            return
        self.view.release()
        self._anchor = None
        if self._owned:
            self._mmap.close()
            os.close(self.fd)
