"""The e820 memory map QEMU's `pc` machine hands to the firmware as the fw_cfg file `etc/e820`.

QEMU (hw/i386/pc.c pc_memory_init) adds exactly one RAM entry for the memory below 4 GiB,
starting at 0 and *not* split at the VGA hole: SeaBIOS carves 0x9FC00-0xFFFFF and its own
areas out itself (src/fw/paravirt.c qemu_early_e820, src/e820map.c). A second RAM entry covers
the memory relocated above 4 GiB. Reserved entries appear only for KVM's identity map and SGX
EPC, neither of which exists here; callers may still pass extra reserved ranges.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5

FOUR_GIB = 1 << 32
# QEMU pc_piix.c: max-ram-below-4g defaults to 3.5 GiB; a machine at least that large is
# split at 3 GiB instead (gigabyte_align, true for every pc-i440fx machine type since 1.7).
DEFAULT_MAX_RAM_BELOW_4G = 0xE0000000
GIGABYTE_ALIGNED_LOWMEM = 0xC0000000
# Bound on the table (host configuration, not guest input; SeaBIOS keeps at most 32 entries).
MAX_E820_ENTRIES = 32

# struct e820_entry (hw/i386/e820_memory_layout.h): le64 address, le64 length, le32 type.
ENTRY = struct.Struct("<QQI")


@dataclass(frozen=True)
class E820Entry:
    address: int
    length: int
    type: int

    def pack(self) -> bytes:
        return ENTRY.pack(self.address, self.length, self.type)


def pc_ram_split(ram_size: int, max_ram_below_4g: int = DEFAULT_MAX_RAM_BELOW_4G,
                 gigabyte_align: bool = True) -> tuple[int, int]:
    """(below_4g, above_4g) as QEMU's pc_init1 computes them for the i440FX machine."""
    if ram_size <= 0:
        raise ValueError(f"RAM size {ram_size:#x} must be positive")
    lowmem = max_ram_below_4g
    if ram_size >= max_ram_below_4g and gigabyte_align:
        lowmem = min(lowmem, GIGABYTE_ALIGNED_LOWMEM)
    if ram_size >= lowmem:
        return lowmem, ram_size - lowmem
    return ram_size, 0


def build_e820(below_4g: int, above_4g: int = 0,
               reserved: Iterable[tuple[int, int]] = ()) -> list[E820Entry]:
    """The entries in QEMU's order: RAM below 4 GiB, RAM above 4 GiB, then reserved ranges."""
    if below_4g <= 0 or below_4g > FOUR_GIB:
        raise ValueError(f"RAM below 4 GiB {below_4g:#x} out of range")
    if above_4g < 0 or above_4g >= 1 << 52:
        raise ValueError(f"RAM above 4 GiB {above_4g:#x} out of range")
    entries = [E820Entry(0, below_4g, E820_RAM)]
    if above_4g:
        entries.append(E820Entry(FOUR_GIB, above_4g, E820_RAM))
    for addr, length in reserved:
        if length <= 0 or addr < 0 or addr + length > 1 << 64:
            raise ValueError(f"reserved range {addr:#x}+{length:#x} out of range")
        entries.append(E820Entry(addr, length, E820_RESERVED))
    if len(entries) > MAX_E820_ENTRIES:
        raise ValueError(f"{len(entries)} e820 entries, at most {MAX_E820_ENTRIES}")
    return entries


def encode_e820(entries: Iterable[E820Entry]) -> bytes:
    """The `etc/e820` file: the entries back to back, no count (its size gives the count)."""
    return b"".join(e.pack() for e in entries)


def decode_e820(blob: bytes) -> list[E820Entry]:
    """Parse `etc/e820` the way SeaBIOS does (size / 20 entries, trailing bytes ignored)."""
    n = min(len(blob) // ENTRY.size, MAX_E820_ENTRIES)
    return [E820Entry(*ENTRY.unpack_from(blob, i * ENTRY.size)) for i in range(n)]


def ram_areas(entries: Iterable[E820Entry]) -> list[tuple[int, int]]:
    """(address, length) of the RAM entries, for SMBIOS type 19 (QEMU fw_cfg_build_smbios)."""
    return [(e.address, e.length) for e in entries if e.type == E820_RAM]
