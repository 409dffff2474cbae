"""An in-process stand-in for the device model, for hvsim tests before the daemon exists.

Only what SeaBIOS needs to get through POST on a bare platform: the QEMU debug port 0x402
(reads 0xE9, collects the console), a CMOS at 0x70/0x71 with memory size and boot settings,
the 0xCF8 register (SeaBIOS's pci_probe_host reads it back), the 0xCF9 reset register, and
optionally an i440FX host bridge at 00:00.0 (QEMU subsystem IDs, PAM registers) so that SeaBIOS
runs its QEMU path and unlocks shadow RAM. fw_cfg is absent (0x510/0x511 are not claimed).

Like the daemon (docs/protocol.md 4.7), the fake owns the firmware: ``announce()`` shares the
BIOS image and the shadow RAM as memfds through ``on_mem_add``, and PAM writes become
``on_mem_type`` calls (PAM survives ``reset()``, as on QEMU).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path

from devmodel.bios.firmware import (
    HVMMEM_RAM_RO,
    HVMMEM_RAM_RW,
    ISA_BIOS_SIZE,
    REGION_BIOS,
    REGION_SHADOW,
    SHADOW_BASE,
    SHADOW_SIZE,
    pam_segments,
)
from devmodel.hvsim import DEFAULT_BIOS
from devmodel.wire.constants import MEM_RAM, MEM_READONLY

DEBUG_PORT = 0x402
CMOS_INDEX, CMOS_DATA = 0x70, 0x71


ENTRY = 0x7C00  # where the tiny test ROM jumps
ROM_SIZE = 128 * 1024


def make_rom(path: Path) -> Path:
    """A 128 KiB "BIOS" whose reset vector jumps to 0000:7C00 (code the test puts in RAM)."""
    rom = bytearray(b"\xf4" * ROM_SIZE)
    rom[-16:-11] = bytes((0xEA, ENTRY & 0xFF, ENTRY >> 8, 0x00, 0x00))  # jmp far 0000:7C00
    path.write_bytes(bytes(rom))
    return path


def _ignore(*_args: int) -> None:
    return None


def make_cmos(ram_size: int) -> bytearray:
    """CMOS contents in QEMU's layout (hw/rtc/mc146818rtc.c, hw/i386/pc.c pc_cmos_init)."""
    c = bytearray(128)
    c[0x00], c[0x02], c[0x04] = 0x00, 0x00, 0x12  # 12:00:00, BCD
    c[0x06], c[0x07], c[0x08], c[0x09] = 0x02, 0x01, 0x01, 0x24  # Mon 2024-01-01
    c[0x0A], c[0x0B], c[0x0C], c[0x0D] = 0x26, 0x02, 0x00, 0x80  # 24h, valid RAM and time
    c[0x10] = 0x00  # no floppy
    c[0x14] = 0x06  # equipment: FPU, VGA/EGA
    c[0x15], c[0x16] = 0x80, 0x02  # 640 KiB base memory
    ext_kib = min(ram_size // 1024 - 1024, 0xFFFF)
    c[0x17], c[0x18] = ext_kib & 0xFF, ext_kib >> 8
    c[0x30], c[0x31] = c[0x17], c[0x18]
    above16 = max(0, ram_size - (16 << 20)) >> 16  # 64 KiB units above 16 MiB
    c[0x34], c[0x35] = above16 & 0xFF, above16 >> 8 & 0xFF
    c[0x32] = 0x20  # century
    c[0x38] = 0x00  # boot order 3rd / floppy signature check
    c[0x3D] = 0x12  # boot order: hdd, then floppy
    c[0x5F] = 0x00  # number of CPUs - 1
    return c


class FakeHostBridge:
    """00:00.0 i440FX config space: IDs as QEMU, PAM0-6 writable, everything else read-only."""

    def __init__(self) -> None:
        cfg = bytearray(256)
        cfg[0:4] = (0x1237_8086).to_bytes(4, "little")  # 8086:1237
        cfg[0x08:0x0C] = (0x0600_0002).to_bytes(4, "little")  # rev 2, class 06 00 00
        cfg[0x2C:0x30] = (0x1100_1AF4).to_bytes(4, "little")  # subsystem 1af4:1100 (QEMU)
        self.cfg = cfg
        self.writable = set(range(0x59, 0x60)) | {0x72}

    def read(self, reg: int, size: int) -> int:
        return int.from_bytes(self.cfg[reg : reg + size].ljust(size, b"\xff"), "little")

    def write(self, reg: int, size: int, value: int) -> None:
        for i in range(size):
            if reg + i in self.writable:
                self.cfg[reg + i] = value >> 8 * i & 0xFF


def _memfd(name: str, data: bytes, size: int) -> tuple[int, mmap.mmap]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
    mm[size - len(data):] = data
    return fd, mm


class FakeFirmware:
    """The daemon's SystemFirmware in miniature: image + shadow memfds, PAM -> mem types."""

    def __init__(self, bios: Path) -> None:
        image = Path(bios).read_bytes()
        self.image_size = len(image)
        self.bios_fd, self.bios_mm = _memfd("fake-bios", image, len(image))
        self.shadow_fd, self.shadow_mm = _memfd("fake-shadow", image[-ISA_BIOS_SIZE:], SHADOW_SIZE)
        self.types: list[int | None] = [None] * 13

    def regions(self) -> list[tuple[int, int, int, int, int]]:
        return [(REGION_BIOS, (1 << 32) - self.image_size, self.image_size,
                 MEM_RAM | MEM_READONLY, self.bios_fd),
                (REGION_SHADOW, SHADOW_BASE, SHADOW_SIZE, MEM_RAM, self.shadow_fd)]

    def sync(self, pam: bytes, on_mem_type: Callable[[int, int, int], None]) -> None:
        for n, (reg, shift, base, size) in enumerate(pam_segments()):
            mtype = HVMMEM_RAM_RW if (pam[reg] >> shift) & 3 >= 2 else HVMMEM_RAM_RO
            if self.types[n] != mtype:
                self.types[n] = mtype
                on_mem_type(base // 4096, size // 4096, mtype)

    def close(self) -> None:
        for mm, fd in ((self.bios_mm, self.bios_fd), (self.shadow_mm, self.shadow_fd)):
            mm.close()
            os.close(fd)


class FakeDeviceModel:
    """Implements devmodel.hvsim.IoreqPort in-process."""

    def __init__(self, ram_size: int = 64 << 20, *, host_bridge: bool = True,
                 bios: Path = DEFAULT_BIOS) -> None:
        self.on_isa_irq: Callable[[int, int], None] = _ignore
        self.on_pci_intx: Callable[[int, int, int], None] = _ignore
        self.on_link_route: Callable[[int, int], None] = _ignore
        self.on_shutdown: Callable[[int], None] = _ignore
        self.on_mem_add: Callable[[int, int, int, int, int], None] = _ignore
        self.on_mem_type: Callable[[int, int, int], None] = _ignore
        self.firmware = FakeFirmware(bios)
        self.clocks: list[tuple[int, bool]] = []  # CLOCK messages received
        self.console = bytearray()
        self.cmos = make_cmos(ram_size)
        self.cmos_index = 0
        self.cf8 = 0
        self.bridge = FakeHostBridge() if host_bridge else None
        self.ram: memoryview | None = None  # set by the test for pio_string
        self.log: list[tuple] = []
        self.extra_ports: dict[int, Callable[..., int | None]] = {}
        self.string_calls: list[tuple[int, int, int, bool, int, bool]] = []
        self.polls = 0

    def announce(self) -> None:
        """What the daemon does after HELLO: share the firmware, then send the PAM types."""
        for region in self.firmware.regions():
            self.on_mem_add(*region)
        self._sync_pam()

    def _pam(self) -> bytes:
        return bytes(self.bridge.cfg[0x59:0x60]) if self.bridge is not None else bytes(7)

    def _sync_pam(self) -> None:
        self.firmware.sync(self._pam(), self.on_mem_type)

    def reset(self) -> None:
        """What the device model does on a platform reset (the parts this fake has). PAM
        survives, as on QEMU."""
        self.cmos_index = 0
        self.cf8 = 0

    def close(self) -> None:
        self.firmware.close()

    # ---- claims ----------------------------------------------------------------------------
    def claims_port(self, port: int, size: int) -> bool:
        last = port + size - 1
        if port == 0xCF8:
            return size == 4
        if port in self.extra_ports:
            return True
        return (port == DEBUG_PORT and size == 1) or (
            CMOS_INDEX <= port and last <= CMOS_DATA
        ) or (port == 0xCF9 and size == 1)

    def claims_mmio(self, gpa: int, size: int) -> bool:
        return False

    def claims_pci(self, sbdf: int) -> bool:
        return sbdf == 0 and self.bridge is not None

    # ---- ioreqs ----------------------------------------------------------------------------
    def pio_read(self, port: int, size: int) -> int:
        if port in self.extra_ports:
            return self.extra_ports[port]("r", size) or 0
        if port == DEBUG_PORT:
            return 0xE9
        if port == CMOS_DATA:
            return self.cmos[self.cmos_index]
        if port == CMOS_INDEX:
            return 0xFF
        if port == 0xCF8:
            return self.cf8
        return (1 << 8 * size) - 1

    def pio_write(self, port: int, size: int, value: int) -> None:
        if port in self.extra_ports:
            self.extra_ports[port]("w", size, value)
        elif port == DEBUG_PORT:
            self.console.append(value & 0xFF)
        elif port == CMOS_INDEX:
            self.cmos_index = value & 0x7F  # bit 7 is the NMI mask
        elif port == CMOS_DATA:
            if self.cmos_index >= 0x0E:  # the clock registers stay fixed
                self.cmos[self.cmos_index] = value & 0xFF
        elif port == 0xCF8:
            self.cf8 = value
        elif port == 0xCF9 and value & 4:
            self.on_shutdown(1)  # hard reset requested: reboot

    def pio_string(
        self, port: int, size: int, count: int, dir_read: bool, gpa: int, df: bool
    ) -> None:
        self.string_calls.append((port, size, count, dir_read, gpa, df))
        assert self.ram is not None, "pio_string needs the test to give the fake the RAM"
        for i in range(count):
            addr = gpa - i * size if df else gpa + i * size
            if dir_read:
                value = self.pio_read(port, size)
                self.ram[addr : addr + size] = value.to_bytes(size, "little")
            else:
                self.pio_write(port, size, int.from_bytes(self.ram[addr : addr + size], "little"))

    def mmio_read(self, gpa: int, size: int) -> int:
        return (1 << 8 * size) - 1

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        return None

    def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int:
        assert self.bridge is not None and sbdf == 0
        return self.bridge.read(reg, size)

    def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        assert self.bridge is not None and sbdf == 0
        self.bridge.write(reg, size, value)
        if reg <= 0x5F and reg + size > 0x59:
            self._sync_pam()  # before the "IORESP", as the daemon sends set_mem_type

    def poll(self) -> None:
        self.polls += 1

    def clock(self, now_ns: int, sync: bool = False) -> None:
        self.clocks.append((now_ns, sync))
