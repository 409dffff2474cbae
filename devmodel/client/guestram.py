"""Guest RAM on the hypervisor side: one memfd, mapped here and shared with the daemon."""

from __future__ import annotations

import mmap
import os

LOW_RAM_END = 0xA0000  # the VGA window and ROM area follow
HIGH_START = 0x100000
BELOW_4G_END = 0xF0000000  # HVM_BELOW_4G_RAM_END: the MMIO hole above it holds PCI BARs


class GuestRam:
    def __init__(self, size: int, name: str = "devmodel-guest-ram") -> None:
        if size <= 0 or size % 4096:
            raise ValueError(f"guest RAM size {size:#x} must be a positive multiple of 4 KiB")
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        # The fd spans the guest's physical layout, so a region's fd offset equals its GPA.
        high = max(0, size - BELOW_4G_END)
        self.fd_size = (1 << 32) + high if high else size
        os.ftruncate(self.fd, self.fd_size)
        self.mm = mmap.mmap(self.fd, self.fd_size, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)

    def regions(self, layout: str = "pc") -> list[tuple[int, int]]:
        """(gpa, size) pieces of guest RAM; fd offset = gpa."""
        if layout == "flat":
            return [(0, self.size)]
        if layout != "pc":
            raise ValueError(f"unknown RAM layout {layout!r}")
        low = min(self.size, BELOW_4G_END)
        out = [(0, min(low, LOW_RAM_END))]
        if low > HIGH_START:
            out.append((HIGH_START, low - HIGH_START))
        if self.size > BELOW_4G_END:
            out.append((1 << 32, self.size - BELOW_4G_END))
        return out

    def read(self, gpa: int, n: int) -> bytes:
        return self.mm[gpa : gpa + n]

    def write(self, gpa: int, data: bytes) -> None:
        self.mm[gpa : gpa + len(data)] = data

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)
