"""The system BIOS image and the legacy shadow area 0xC0000-0xFFFFF.

On QEMU's pc machine the BIOS image sits just below 4 GiB, and its last 128 KiB are also
visible at 0xE0000; the i440FX PAM registers decide, per segment, whether 0xC0000-0xFFFFF
reads the ROM or shadow RAM and whether writes reach RAM (QEMU hw/pci-host/pam.c). SeaBIOS
unlocks the shadow (PAM = 3), copies itself and option ROMs there, then locks it (PAM = 1).

Here the CPU side is the hypervisor's, so it must execute this memory: the daemon shares two
regions with it by MEM_ADD (docs/protocol.md 4.7): the image at 4 GiB - size (read-only)
and a shadow RAM region for 0xC0000-0xFFFFF seeded with the image's last 128 KiB at 0xE0000.
PAM changes become set_mem_type dm_ops on the shadow pages: attribute 0 (ROM/PCI) and 1
(read-only) map to HVMMEM_ram_ro (writes discarded), 2 and 3 to HVMMEM_ram_rw. As QEMU
notes, attribute 2 (write-only) really behaves as read/write RAM.
"""

from __future__ import annotations

from devmodel.core.device import Device, SharedRegion
from devmodel.wire.constants import MEM_RAM, MEM_READONLY, DmOp

SHADOW_BASE = 0xC0000
SHADOW_SIZE = 0x40000
ISA_BIOS_SIZE = 0x20000  # the image's last 128 KiB, at 0xE0000
HVMMEM_RAM_RW = 0
HVMMEM_RAM_RO = 1
PAGE = 4096

# Region ids the daemon uses for memory it shares; the hypervisor's own ids are below.
REGION_BIOS = 0x8000_0000
REGION_SHADOW = 0x8000_0001


def pam_segments() -> list[tuple[int, int, int, int]]:
    """(pam register index 0-6, nibble shift, base, size) for the 13 PAM segments."""
    segs = [(0, 4, 0xF0000, 0x10000)]
    for i in range(1, 13):
        segs.append(((i + 1) // 2, 0 if i % 2 else 4, 0xC0000 + (i - 1) * 0x4000, 0x4000))
    return segs


class SystemFirmware(Device):
    SNAPSHOT_FIELDS = ("pam",)

    def __init__(self, image: bytes, bios_fd: int, shadow_fd: int) -> None:
        super().__init__("system-firmware")
        self.image_size = len(image)
        self.bios_fd = bios_fd
        self.shadow_fd = shadow_fd
        self.pam = [0] * 7
        self._types: list[int | None] = [None] * 13

    def shared_regions(self) -> list[SharedRegion]:
        return [
            SharedRegion(REGION_BIOS, (1 << 32) - self.image_size, self.image_size, self.bios_fd,
                         MEM_RAM | MEM_READONLY),
            SharedRegion(REGION_SHADOW, SHADOW_BASE, SHADOW_SIZE, self.shadow_fd, MEM_RAM),
        ]

    def reset(self) -> None:
        # PAM lives in the i440FX and survives a reset; only our view of what the
        # hypervisor was told is re-sent.
        self._types = [None] * 13
        self._sync()

    def announced(self) -> None:
        self._types = [None] * 13
        self._sync()

    def on_pam(self, index: int, value: int) -> None:
        """Called by the i440FX for each PAM register written (index 0-6)."""
        self.pam[index] = value & 0xFF
        self._sync()

    def post_restore(self) -> None:
        self._types = [None] * 13
        self._sync()

    def _sync(self) -> None:
        if self.ctx is None or not self.ctx.machine.announcing:
            return
        for n, (reg, shift, base, size) in enumerate(pam_segments()):
            attr = (self.pam[reg] >> shift) & 3
            mtype = HVMMEM_RAM_RW if attr >= 2 else HVMMEM_RAM_RO
            if self._types[n] != mtype:
                self._types[n] = mtype
                self.ctx.machine.emit_dmop(DmOp.SET_MEM_TYPE, (size // PAGE, mtype, 0, base // PAGE))
