"""PCI: configuration spaces with writable and write-1-to-clear masks, BARs, ROM BAR,
capability lists, INTx, and a bus that turns BAR/command changes into range changes.

Register behaviour follows QEMU's hw/pci/pci.c, because that is what SeaBIOS, hvmloader and
guest drivers were written against: sizing a BAR by writing all-ones reads back ~(size-1) plus
the read-only type bits; a BAR is unmapped while its decode bit in COMMAND is clear, while it
is 0, while it overlaps the all-ones sizing pattern, or (32-bit BARs) past 4 GiB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from devmodel.wire.constants import MEM_RAM, MEM_READONLY, PAGE_SIZE

from .bus import ALL_SIZES, AddressSpace, OverlapError, Range, ReadFn, WriteFn
from .device import Device, SharedRegion

log = logging.getLogger("devmodel.pci")

CONFIG_SIZE = 256

# Standard header offsets
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION = 0x08
CLASS_PROG = 0x09
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BAR0 = 0x10
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
ROM_ADDRESS = 0x30
CAPABILITY_LIST = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D

CMD_IO = 0x1
CMD_MEMORY = 0x2
CMD_MASTER = 0x4
CMD_SERR = 0x100
CMD_INTX_DISABLE = 0x400

STATUS_INTERRUPT = 0x08
STATUS_CAP_LIST = 0x10
# PARITY | SIG_TARGET_ABORT | REC_TARGET_ABORT | REC_MASTER_ABORT | SIG_SYSTEM_ERROR |
# DETECTED_PARITY: the error bits software clears by writing 1 (QEMU pci_init_w1cmask).
STATUS_W1C = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000
STATUS_REC_MASTER_ABORT = 0x2000

BAR_IO = 0x1
BAR_MEM_TYPE_64 = 0x4
BAR_MEM_PREFETCH = 0x8
ROM_ENABLE = 0x1

HEADER_MULTIFUNCTION = 0x80

# Daemon region id of a shared expansion ROM: this | devfn (docs/protocol.md 4.7).
REGION_ROM_BASE = 0x8000_0100


@dataclass(eq=False)
class Bar:
    """One BAR: `size` is a power of two; read/write serve offsets inside it."""

    index: int
    size: int
    io: bool
    read: ReadFn
    write: WriteFn
    name: str = ""
    prefetch: bool = False
    is64: bool = False
    sizes: frozenset[int] = frozenset({1, 2, 4})

    def __post_init__(self) -> None:
        if self.size & (self.size - 1) or self.size < (4 if self.io else 16):
            raise ValueError(f"BAR{self.index} size {self.size:#x} is not a valid power of two")


class PciDevice(Device):
    SNAPSHOT_FIELDS = ("config", "irq_level")

    def __init__(
        self,
        name: str,
        *,
        vendor_id: int,
        device_id: int,
        class_code: int,  # 24-bit: class << 16 | subclass << 8 | prog-if
        revision: int = 0,
        header_type: int = 0,
        # QEMU gives every non-bridge device without its own IDs 1af4:1100 (Red Hat / QEMU),
        # pci_set_default_subsystem_id in hw/pci/pci.c.
        subsystem_vendor_id: int = 0x1AF4,
        subsystem_id: int = 0x1100,
        irq_pin: int = 0,  # 0 none, 1-4 = INTA-INTD
        multifunction: bool = False,
    ) -> None:
        super().__init__(name)
        self.config = bytearray(CONFIG_SIZE)
        self.wmask = bytearray(CONFIG_SIZE)
        self.w1cmask = bytearray(CONFIG_SIZE)
        self.bars: list[Bar | None] = [None] * 6
        self.rom: bytes | None = None
        self.rom_size = 0
        # A memfd holding the ROM (share_rom): the hypervisor then maps it at the ROM BAR.
        self.rom_fd: int | None = None
        self._rom_told: int | None = None  # where the hypervisor was last told it is mapped
        self.multifunction = multifunction
        self.irq_level = 0
        self.irq_line = None  # IrqLine, set by the bus when the device has a pin
        self.devfn = -1
        self.bus: PciBus | None = None
        c = self.config
        c[0:2] = vendor_id.to_bytes(2, "little")
        c[2:4] = device_id.to_bytes(2, "little")
        c[REVISION] = revision
        c[CLASS_PROG : CLASS_PROG + 3] = class_code.to_bytes(3, "little")
        c[HEADER_TYPE] = header_type | (HEADER_MULTIFUNCTION if multifunction else 0)
        c[SUBSYSTEM_VENDOR_ID : SUBSYSTEM_VENDOR_ID + 2] = subsystem_vendor_id.to_bytes(2, "little")
        c[SUBSYSTEM_ID : SUBSYSTEM_ID + 2] = subsystem_id.to_bytes(2, "little")
        c[INTERRUPT_PIN] = irq_pin
        # QEMU pci_init_wmask: COMMAND I/O, memory, bus master, SERR, INTx disable; cache line
        # size and interrupt line; everything device-specific (0x40-0xFF) writable unless the
        # device narrows it.
        self._set_mask16(self.wmask, COMMAND, CMD_IO | CMD_MEMORY | CMD_MASTER | CMD_SERR
                         | CMD_INTX_DISABLE)
        self.wmask[CACHE_LINE_SIZE] = 0xFF
        self.wmask[INTERRUPT_LINE] = 0xFF
        self.wmask[0x40:] = b"\xff" * (CONFIG_SIZE - 0x40)
        self._set_mask16(self.w1cmask, STATUS, STATUS_W1C)

    @staticmethod
    def _set_mask16(mask: bytearray, off: int, v: int) -> None:
        mask[off : off + 2] = v.to_bytes(2, "little")

    # ---- building -----------------------------------------------------------------------
    def add_bar(self, bar: Bar) -> Bar:
        i = bar.index
        if (not 0 <= i < 6 or self.bars[i] is not None
                or (i > 0 and (prev := self.bars[i - 1]) is not None and prev.is64)  # upper half
                or (bar.is64 and (i == 5 or self.bars[i + 1]))):
            raise ValueError(f"{self.name}: BAR{i} cannot be added")
        self.bars[i] = bar
        off = BAR0 + 4 * i
        if bar.io:
            flags = BAR_IO
            mask = ~(bar.size - 1) & 0xFFFFFFFC
        else:
            flags = (BAR_MEM_PREFETCH if bar.prefetch else 0) | (BAR_MEM_TYPE_64 if bar.is64 else 0)
            mask = ~(bar.size - 1) & 0xFFFFFFF0
        self.config[off : off + 4] = flags.to_bytes(4, "little")
        self.wmask[off : off + 4] = (mask & 0xFFFFFFFF).to_bytes(4, "little")
        if bar.is64:
            self.wmask[off + 4 : off + 8] = ((~(bar.size - 1) >> 32) & 0xFFFFFFFF).to_bytes(4, "little")
        return bar

    def set_rom(self, data: bytes, size: int | None = None) -> None:
        size = size or max(2048, 1 << (len(data) - 1).bit_length())
        self.rom = bytes(data)
        self.rom_size = size
        # QEMU pci_register_bar: wmask ~(size-1) | enable; with a >= 2 KiB ROM that leaves
        # bits 10:1 read-only as the PCI spec wants.
        mask = (~(size - 1) & 0xFFFFFFFF) | ROM_ENABLE
        self.wmask[ROM_ADDRESS : ROM_ADDRESS + 4] = mask.to_bytes(4, "little")

    def share_rom(self, fd: int) -> None:
        """The ROM's bytes are also in the memfd `fd` (rom_size bytes): from now on the ROM BAR
        is memory the hypervisor maps read-only (a daemon->hypervisor MEM_ADD whenever it
        starts decoding or moves, MEM_DEL when it stops) instead of a trapped MMIO range. This
        is what QEMU does on Xen: its ROM is a RAM block that xen_add_to_physmap puts at the
        BAR, so firmware copying an option ROM (SeaBIOS reads it dword by dword) does not trap.
        """
        if not self.rom_size or self.rom_size % PAGE_SIZE:
            raise ValueError(f"{self.name}: a ROM of {self.rom_size:#x} bytes cannot be mapped "
                             "by pages")
        self.rom_fd = fd

    def rom_region(self, gpa: int) -> SharedRegion:
        assert self.rom_fd is not None
        return SharedRegion(REGION_ROM_BASE | self.devfn, gpa, self.rom_size, self.rom_fd,
                         MEM_RAM | MEM_READONLY)

    def shared_regions(self) -> list:
        """The shared ROM if it already decodes when the hypervisor connects (a restore)."""
        if self.rom_fd is None:
            return []
        gpa = self.rom_address()
        self._rom_told = gpa
        return [] if gpa is None else [self.rom_region(gpa)]

    def sync_rom(self, gpa: int | None) -> None:
        """Tell the hypervisor where the shared ROM decodes now (None: nowhere)."""
        machine = self.ctx.machine if self.ctx is not None else None
        if self.rom_fd is None or machine is None or gpa == self._rom_told:
            return
        if not machine.announcing:
            return  # the HELLO exchange sends shared_regions() as it is then
        if gpa is None:
            machine.unshare_region(REGION_ROM_BASE | self.devfn)
        else:
            machine.share_region(self.rom_region(gpa))
        self._rom_told = gpa

    def add_capability(self, cap_id: int, offset: int, size: int) -> int:
        """Link a capability at `offset` into the list (head insertion, as QEMU does)."""
        if offset < 0x40 or offset + size > CONFIG_SIZE:
            raise ValueError(f"{self.name}: capability at {offset:#x} outside config space")
        c = self.config
        c[offset] = cap_id
        c[offset + 1] = c[CAPABILITY_LIST]
        c[CAPABILITY_LIST] = offset
        c[STATUS] |= STATUS_CAP_LIST
        # The ID and next pointer are read-only; the capability body is the owner's business.
        self.wmask[offset : offset + 2] = b"\0\0"
        return offset

    def reset(self) -> None:
        """QEMU pci_do_device_reset: clear the writable COMMAND bits and the error status,
        zero cache line and interrupt line, BARs back to their type bits, ROM disabled.
        Device-specific registers (0x40 up) are the subclass's business: the i440FX keeps its
        PAM and SMRAM values across a system reset, as QEMU does."""
        c = self.config
        cmd = (c[COMMAND] | c[COMMAND + 1] << 8) & ~0x0507
        c[COMMAND : COMMAND + 2] = cmd.to_bytes(2, "little")
        st = (c[STATUS] | c[STATUS + 1] << 8) & ~(STATUS_W1C | STATUS_INTERRUPT)
        c[STATUS : STATUS + 2] = st.to_bytes(2, "little")
        c[CACHE_LINE_SIZE] = 0
        c[INTERRUPT_LINE] = 0
        for bar in self.bars:
            if bar is None:
                continue
            off = BAR0 + 4 * bar.index
            flags = BAR_IO if bar.io else (
                (BAR_MEM_PREFETCH if bar.prefetch else 0) | (BAR_MEM_TYPE_64 if bar.is64 else 0))
            c[off : off + 4] = flags.to_bytes(4, "little")
            if bar.is64:
                c[off + 4 : off + 8] = bytes(4)
        c[ROM_ADDRESS : ROM_ADDRESS + 4] = bytes(4)
        self.irq_level = 0
        if self.irq_line is not None:
            self.irq_line.lower()

    # ---- config access ------------------------------------------------------------------
    def config_read(self, off: int, size: int) -> int:
        return int.from_bytes(self.config[off : off + size], "little")

    def config_write(self, off: int, size: int, value: int) -> None:
        c = self.config
        for i in range(size):
            a = off + i
            b = (value >> (8 * i)) & 0xFF
            wm = self.wmask[a]
            w1c = self.w1cmask[a]
            c[a] = ((c[a] & ~wm) | (b & wm)) & ~(b & w1c) & 0xFF
        if off <= COMMAND + 1 and off + size > COMMAND:
            self._update_irq()
        self.config_written(off, size, value)

    def config_written(self, off: int, size: int, value: int) -> None:
        """Side effects of a config write, for subclasses (masks already applied)."""

    @property
    def command(self) -> int:
        return self.config[COMMAND] | self.config[COMMAND + 1] << 8

    @property
    def bus_master(self) -> bool:
        return bool(self.config[COMMAND] & CMD_MASTER)

    # ---- INTx ---------------------------------------------------------------------------
    def set_irq(self, level: int | bool) -> None:
        self.irq_level = 1 if level else 0
        self._update_irq()

    def _update_irq(self) -> None:
        if self.irq_level:
            self.config[STATUS] |= STATUS_INTERRUPT
        else:
            self.config[STATUS] &= ~STATUS_INTERRUPT & 0xFF
        if self.irq_line is not None:
            disabled = self.config[COMMAND + 1] & (CMD_INTX_DISABLE >> 8)
            self.irq_line.set_level(self.irq_level and not disabled)

    def post_restore(self) -> None:
        self._update_irq()

    # ---- mappings -----------------------------------------------------------------------
    def bar_address(self, bar: Bar) -> int | None:
        """Where the BAR currently decodes, or None (QEMU pci_bar_address)."""
        cmd = self.command
        off = BAR0 + 4 * bar.index
        raw = int.from_bytes(self.config[off : off + 4], "little")
        if bar.io:
            if not cmd & CMD_IO:
                return None
            addr = raw & ~(bar.size - 1) & 0xFFFFFFFC
            last = addr + bar.size - 1
            if addr == 0 or last > 0xFFFF:
                return None
            return addr
        if not cmd & CMD_MEMORY:
            return None
        if bar.is64:
            raw |= int.from_bytes(self.config[off + 4 : off + 8], "little") << 32
            limit = (1 << 64) - 1
        else:
            limit = 0xFFFFFFFF
        addr = raw & ~(bar.size - 1) & ~0xF & limit
        last = addr + bar.size - 1
        if addr == 0 or last >= limit:
            return None
        return addr

    def rom_address(self) -> int | None:
        if not self.rom_size or not self.command & CMD_MEMORY:
            return None
        raw = int.from_bytes(self.config[ROM_ADDRESS : ROM_ADDRESS + 4], "little")
        if not raw & ROM_ENABLE:
            return None
        addr = raw & ~(self.rom_size - 1) & 0xFFFFFFFF
        if addr == 0 or addr + self.rom_size - 1 >= 0xFFFFFFFF:
            return None
        return addr

    def _rom_read(self, off: int, size: int) -> int:
        data = self.rom or b""
        chunk = data[off : off + size]
        return int.from_bytes(chunk.ljust(size, b"\xff"), "little")

    def _rom_write(self, off: int, size: int, value: int) -> None:
        self.guest_error("write to expansion ROM")


class PciBus:
    """Bus 0. Applies BAR mappings to the address spaces when config writes change them."""

    def __init__(self, pio: AddressSpace, mmio: AddressSpace,
                 on_conflict: Callable[[str], None]) -> None:
        self.pio = pio
        self.mmio = mmio
        self.devices: dict[int, PciDevice] = {}
        self._mapped: dict[tuple[int, int], tuple[AddressSpace, Range]] = {}
        self._conflict = on_conflict
        self.absent = 0  # config accesses to no function (as AddressSpace.unclaimed)

    def add(self, dev: PciDevice, slot: int, fn: int = 0) -> None:
        devfn = slot << 3 | fn
        if devfn in self.devices:
            raise ValueError(f"PCI {slot:02x}.{fn} already holds {self.devices[devfn].name}")
        dev.devfn = devfn
        dev.bus = self
        self.devices[devfn] = dev
        if fn != 0 and (f0 := self.devices.get(slot << 3)) is not None:
            f0.config[HEADER_TYPE] |= HEADER_MULTIFUNCTION

    def remove(self, dev: PciDevice) -> None:
        """Hot-unplug: the BARs are unmapped and the function leaves config space (reads
        all-ones from now on, as an empty slot)."""
        self.unmap_all(dev)
        if self.devices.get(dev.devfn) is dev:
            del self.devices[dev.devfn]
        dev.bus = None

    def get(self, devfn: int) -> PciDevice | None:
        return self.devices.get(devfn)

    def config_read(self, devfn: int, off: int, size: int) -> int:
        dev = self.devices.get(devfn)
        if dev is None or off + size > CONFIG_SIZE:
            self.absent += dev is None
            return (1 << (8 * size)) - 1
        return dev.config_read(off, size)

    def config_write(self, devfn: int, off: int, size: int, value: int) -> None:
        dev = self.devices.get(devfn)
        if dev is None or off + size > CONFIG_SIZE:
            self.absent += dev is None
            return
        dev.config_write(off, size, value)
        # Command register, BARs, ROM BAR: recompute what this device decodes.
        if (off < COMMAND + 2 and off + size > COMMAND) or (
            off < ROM_ADDRESS + 4 and off + size > BAR0
        ):
            self.update_mappings(dev)

    def update_mappings(self, dev: PciDevice) -> None:
        want: dict[int, tuple[AddressSpace, int, int, ReadFn, WriteFn, frozenset[int], str]] = {}
        for bar in dev.bars:
            if bar is None:
                continue
            addr = dev.bar_address(bar)
            if addr is not None:
                space = self.pio if bar.io else self.mmio
                want[bar.index] = (space, addr, bar.size, bar.read, bar.write, bar.sizes,
                                   f"{dev.name}.bar{bar.index}")
        rom_addr = dev.rom_address()
        if dev.rom_fd is not None:
            dev.sync_rom(rom_addr)  # memory the hypervisor maps, never a trapped range
        elif rom_addr is not None:
            want[6] = (self.mmio, rom_addr, dev.rom_size, dev._rom_read, dev._rom_write,
                       ALL_SIZES, f"{dev.name}.rom")
        for idx in range(7):
            key = (dev.devfn, idx)
            cur = self._mapped.get(key)
            new = want.get(idx)
            if cur is not None and new is not None and cur[1].start == new[1] and cur[0] is new[0]:
                continue
            if cur is not None:
                cur[0].remove(cur[1])
                del self._mapped[key]
            if new is not None:
                space, addr, size, rd, wr, sizes, name = new
                r = Range(addr, size, rd, wr, name, dev, sizes)
                try:
                    space.add(r)
                except OverlapError as e:
                    # A guest may program overlapping BARs; real hardware then decodes
                    # unpredictably. We leave this BAR unmapped and count it.
                    self._conflict(f"{name}: {e}")
                    continue
                self._mapped[key] = (space, r)

    def unmap_all(self, dev: PciDevice) -> None:
        dev.sync_rom(None)
        for idx in range(7):
            cur = self._mapped.pop((dev.devfn, idx), None)
            if cur is not None:
                cur[0].remove(cur[1])

    def mapped(self, dev: PciDevice) -> dict[int, Range]:
        return {idx: r for (devfn, idx), (_, r) in self._mapped.items() if devfn == dev.devfn}
