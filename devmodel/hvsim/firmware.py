"""Memory the device model owns and the vCPU executes: the BIOS image and the shadow RAM.

As on QEMU's pc machine, the firmware is the device model's (docs/protocol.md 4.7): right
after HELLO the daemon sends daemon->hypervisor MEM_ADDs with an fd each,

- region 0x80000000: the BIOS image at 4 GiB - size, read-only (the flash alias);
- region 0x80000001: shadow RAM for 0xC0000-0xFFFFF, seeded with the image's last 128 KiB at
  0xE0000, where the reset vector F000:FFF0 lands,

and it turns the i440FX PAM registers into ``set_mem_type`` dm_ops on the shadow's segments:
HVMMEM_ram_ro (1) makes a segment read-only with writes discarded (what a write to ROM does
on real hardware), HVMMEM_ram_rw (0) makes it plain RAM. The simulator maps each fd
``MAP_SHARED`` straight into Unicorn (``mem_map_ptr``), so the daemon and the vCPU see the
same bytes, and applies the types as Unicorn page protections; a write to a read-only page
is dropped by a write-protect hook that reports it "handled".

PAM survives a reset (QEMU keeps it; SeaBIOS's qemu_reboot copies the image back into the
shadow itself before it resets), so nothing here is rewritten on reset.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from ..wire.constants import MEM_READONLY

DEFAULT_BIOS = Path("/usr/share/seabios/bios-256k.bin")
FOUR_GIB = 1 << 32
MAX_REGION_SIZE = 256 << 20  # a BIOS flash or a VRAM BAR (--vga-mem up to 256); bigger is refused
HVMMEM_RAM_RW = 0
HVMMEM_RAM_RO = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


@dataclass(frozen=True, slots=True)
class SharedRegion:
    """One daemon MEM_ADD as mapped here: host ``address`` of ``size`` bytes at ``gpa``."""

    region_id: int
    gpa: int
    size: int
    flags: int
    address: int

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MEM_READONLY)

    def contains(self, gpa: int) -> bool:
        return self.gpa <= gpa < self.gpa + self.size


def map_fd(fd: int, size: int, readonly: bool) -> int:
    """mmap ``size`` bytes of ``fd`` MAP_SHARED at offset 0; returns the host address.

    Through libc rather than the mmap module: Unicorn needs a raw address, and a read-only
    Python mmap cannot give one (ctypes.from_buffer wants a writable buffer)."""
    prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
    addr = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of a {size:#x}-byte device-model region: {os.strerror(err)}")
    return int(addr)


def unmap(address: int, size: int) -> None:
    _libc.munmap(address, size)


def check_region(gpa: int, size: int) -> str | None:
    """Why a daemon region cannot be mapped into the vCPU, or None."""
    if gpa % 4096 or size % 4096 or size == 0:
        return f"region {gpa:#x}+{size:#x} is not page aligned"
    if size > MAX_REGION_SIZE:
        return f"region {gpa:#x}+{size:#x} is larger than {MAX_REGION_SIZE:#x}"
    if gpa + size > FOUR_GIB:
        return f"region {gpa:#x}+{size:#x} is above 4 GiB (the vCPU has no PAE)"
    return None
