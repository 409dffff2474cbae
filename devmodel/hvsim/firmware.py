"""The firmware image and the i440FX PAM shadow-RAM control.

Image placement (as QEMU's pc_system_firmware_init / ``isa-bios``): the whole image is a ROM at
4 GiB - size, and its last 128 KiB also appear at 0xE0000-0xFFFFF, where the reset vector
F000:FFF0 lands. Here the low copy lives in guest RAM (the shadow area) and the PAM registers
decide whether it is writable.

PAM registers (Intel 82441FX PMC datasheet, order no. 290549, section 3.2.17; QEMU
hw/pci-host/pam.c): config offsets 0x59-0x5F of 00:00.0. 0x59 bits 5:4 control 0xF0000-0xFFFFF
(64 KiB); 0x5A-0x5F hold two 16 KiB segments each, low nibble first, 0xC0000 upwards. In each
2-bit field bit 0 = read enable (RAM), bit 1 = write enable (RAM). The registers live in the
device model; the simulator snoops the config writes it forwards to keep this copy.

Simplification, stated: reads always come from the shadow RAM, which is seeded with the ROM
bytes at power-on and reset, so "read ROM" and "read RAM" differ only after the guest wrote the
shadow with reads still routed to ROM (no firmware does that). Writes with WE=0 go to the ROM,
i.e. nowhere: the simulator drops them (a write-protect hook that reports "handled").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BIOS = Path("/usr/share/seabios/bios-256k.bin")
FOUR_GIB = 1 << 32
LOW_ALIAS_SIZE = 128 * 1024
LOW_ALIAS_START = 0x100000 - LOW_ALIAS_SIZE
MAX_IMAGE_SIZE = 16 << 20

PAM_FIRST_REG = 0x59
PAM_LAST_REG = 0x5F
PAM_WE = 2
PAM_RE = 1


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    data: bytes

    @classmethod
    def load(cls, path: str | Path) -> FirmwareImage:
        data = Path(path).read_bytes()
        if len(data) < LOW_ALIAS_SIZE or len(data) > MAX_IMAGE_SIZE or len(data) % 0x10000:
            raise ValueError(
                f"{path}: firmware size {len(data)} must be a multiple of 64 KiB, "
                f"128 KiB to 16 MiB"
            )
        return cls(data)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def flash_base(self) -> int:
        return FOUR_GIB - self.size

    @property
    def low_alias(self) -> bytes:
        return self.data[-LOW_ALIAS_SIZE:]


def pam_segments() -> list[tuple[int, int, int, int]]:
    """(register, nibble shift, start, size) of every PAM-controlled segment."""
    segs = [(0x59, 4, 0xF0000, 0x10000)]
    start = 0xC0000
    for reg in range(0x5A, PAM_LAST_REG + 1):
        for shift in (0, 4):
            segs.append((reg, shift, start, 0x4000))
            start += 0x4000
    return segs


PAM_SEGMENTS = pam_segments()


@dataclass
class PamState:
    """The hypervisor's copy of PAM0-PAM6 (power-on value 0: everything goes to ROM)."""

    regs: bytearray = field(default_factory=lambda: bytearray(PAM_LAST_REG - PAM_FIRST_REG + 1))

    def reset(self) -> None:
        self.regs[:] = bytes(len(self.regs))

    def snoop_write(self, reg: int, size: int, value: int) -> bool:
        """Apply a config write to 00:00.0 at ``reg``; True if a PAM byte changed."""
        changed = False
        for i in range(size):  # bounded: size <= 4
            r = reg + i
            if PAM_FIRST_REG <= r <= PAM_LAST_REG:
                byte = value >> 8 * i & 0xFF
                if self.regs[r - PAM_FIRST_REG] != byte:
                    self.regs[r - PAM_FIRST_REG] = byte
                    changed = True
        return changed

    def field(self, reg: int, shift: int) -> int:
        return self.regs[reg - PAM_FIRST_REG] >> shift & 3

    def writable_segments(self) -> list[tuple[int, int, bool]]:
        """(start, size, writable) for every segment."""
        return [
            (start, size, bool(self.field(reg, shift) & PAM_WE))
            for reg, shift, start, size in PAM_SEGMENTS
        ]
