"""QEMU's firmware configuration device (fw_cfg), I/O-port variant of the `pc` machine.

Behaviour follows hw/nvram/fw_cfg.c (fw_cfg_io_realize, fw_cfg_comb_mem_ops,
fw_cfg_dma_mem_ops) and what SeaBIOS's src/fw/paravirt.c reads:

- 0x510-0x511 ("comb"): a 16-bit write anywhere in it selects an entry and rewinds the offset.
  The key's bit 0x8000 picks the arch (x86) table, bit 0x4000 (write channel) is ignored for
  lookup; `key & 0x3FFF` at or past 0x20 + file slots selects nothing (reads 0, CVE-2016-1714).
  8-bit reads at either port return the next byte of the entry, 0 past its end. 8-bit writes
  do nothing (data-port writes were removed in QEMU 2.4).
- 0x514-0x51B: the DMA address register, big-endian. A 32-bit write at +0 sets the high half
  (and clears the low one), one at +4 ORs in the low half and runs the transfer; a 64-bit
  write at +0 sets both and runs it. Reads return the bytes of "QEMU CFG".
- A DMA descriptor {be32 control, be32 length, be64 address} in guest RAM; the result (0 or
  ERROR) is written back big-endian to its control word before the ioreq is answered, so
  SeaBIOS's busy-wait ends at once.

Entries are added at build time (`build_fw_cfg`); files get keys 0x20.. sorted by name, as
QEMU sorts them for every machine type newer than pc-*-2.x legacy ordering.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from devmodel.core.bus import Range
from devmodel.core.device import Device, SnapshotError

from . import e820 as e820mod
from .fw_cfg_linux import LINUXBOOT_BOOT_PATH, LINUXBOOT_ROM_NAME, load_linux
from .smbios import SmbiosConfig, build_smbios, check_smbios, fits_21_entry_point, max_smbios_bytes

# ---- selector keys (include/standard-headers/linux/qemu_fw_cfg.h) ------------------------
SIGNATURE, ID, UUID, RAM_SIZE, NOGRAPHIC, NB_CPUS, MACHINE_ID = range(7)
KERNEL_ADDR, KERNEL_SIZE, KERNEL_CMDLINE, INITRD_ADDR, INITRD_SIZE, BOOT_DEVICE = range(7, 13)
NUMA, BOOT_MENU, MAX_CPUS, KERNEL_ENTRY, KERNEL_DATA, INITRD_DATA = range(13, 19)
CMDLINE_ADDR, CMDLINE_SIZE, CMDLINE_DATA, SETUP_ADDR, SETUP_SIZE, SETUP_DATA = range(19, 25)
FILE_DIR = 0x19
FILE_FIRST = 0x20
WRITE_CHANNEL = 0x4000
ARCH_LOCAL = 0x8000
ENTRY_MASK = 0x3FFF
INVALID = 0xFFFF
# x86 arch entries (hw/i386/fw_cfg.h)
ACPI_TABLES = ARCH_LOCAL + 0
SMBIOS_ENTRIES = ARCH_LOCAL + 1
IRQ0_OVERRIDE = ARCH_LOCAL + 2
E820_TABLE = ARCH_LOCAL + 3
HPET = ARCH_LOCAL + 4

VERSION_TRADITIONAL = 0x01
VERSION_DMA = 0x02

DMA_CTL_ERROR = 0x01
DMA_CTL_READ = 0x02
DMA_CTL_SKIP = 0x04
DMA_CTL_SELECT = 0x08
DMA_CTL_WRITE = 0x10
DMA_SIGNATURE = b"QEMU CFG"  # 0x51454d5520434647, big-endian
DMA_DESCRIPTOR = struct.Struct(">IIQ")

IO_BASE = 0x510
DMA_IO_BASE = 0x514

FILE_SLOTS_DEFAULT = 0x20  # QEMU FW_CFG_FILE_SLOTS_DFLT
FILE_SLOTS_MAX = ENTRY_MASK - FILE_FIRST + 1
FILE_NAME_BYTES = 56  # char name[56], NUL included
FILE_DIR_ENTRY = struct.Struct(">IHH56s")

# ---- bounds (design rule 5) --------------------------------------------------------------
MAX_ENTRY_BYTES = 1 << 30  # one entry (an initrd is the largest)
MAX_TOTAL_BYTES = 2 << 30  # all entries together
MAX_WRITABLE_BYTES = 64 << 10  # a guest-writable entry (QEMU's are a few bytes: vmgenid, SMI)
# Bytes of zeros a DMA read past an entry's end may write. QEMU writes the full guest length
# (up to 4 GiB); we fill this much and report ERROR for the rest. No firmware reads past an
# entry on purpose.
MAX_DMA_ZERO_FILL = 16 << 20
_ZEROS = memoryview(bytes(64 << 10))

U64 = (1 << 64) - 1

EntryData = bytes | bytearray | memoryview
WriteCallback = Callable[[int, int], None]


@dataclass
class Entry:
    data: EntryData
    writable: bool = False
    on_write: WriteCallback | None = None  # (offset, length) after a successful DMA write


@dataclass
class _File:
    name: str
    entry: Entry
    key: int = 0


class FwCfg(Device):
    SNAPSHOT_FIELDS = ("cur_entry", "cur_offset", "dma_addr", "writable_state")

    def __init__(self, name: str = "fw_cfg", *, file_slots: int = FILE_SLOTS_DEFAULT,
                 dma: bool = True) -> None:
        super().__init__(name)
        if not 0x10 <= file_slots <= FILE_SLOTS_MAX:
            raise ValueError(f"file_slots {file_slots:#x} out of range")
        self.file_slots = file_slots
        self.max_entry = FILE_FIRST + file_slots  # exclusive
        self.dma_enabled = dma
        self._entries: dict[int, Entry] = {}  # key & (ARCH_LOCAL | ENTRY_MASK) -> entry
        self._files: dict[str, _File] = {}
        self._total = 0
        self._dir = bytearray(4 + FILE_DIR_ENTRY.size * file_slots)
        self._entries[FILE_DIR] = Entry(self._dir)
        # (names, produce, max_bytes) of files built on first use (add_deferred_files)
        self._deferred: list[tuple[tuple[str, ...], Callable[[], dict[str, bytes]], int]] = []
        self.cur_entry = SIGNATURE
        self.cur_offset = 0
        self.dma_addr = 0
        self.add_bytes(SIGNATURE, b"QEMU")
        self.add_i32(ID, VERSION_TRADITIONAL | (VERSION_DMA if dma else 0))

    # ---- building (host configuration: errors raise) ---------------------------------------
    def _check_size(self, data: EntryData, writable: bool) -> None:
        n = len(data)
        if n > MAX_ENTRY_BYTES or (writable and n > MAX_WRITABLE_BYTES):
            raise ValueError(f"{self.name}: entry of {n} bytes is too large")
        if self._total + n > MAX_TOTAL_BYTES:
            raise ValueError(f"{self.name}: entries exceed {MAX_TOTAL_BYTES} bytes in all")
        self._total += n

    def add_bytes(self, key: int, data: EntryData, *, writable: bool = False,
                  on_write: WriteCallback | None = None) -> None:
        k = key & (ARCH_LOCAL | ENTRY_MASK)
        if (k & ENTRY_MASK) >= FILE_FIRST or k == FILE_DIR:
            raise ValueError(f"{self.name}: key {key:#x} is not a fixed entry (use add_file)")
        if k in self._entries:
            raise ValueError(f"{self.name}: key {key:#x} added twice")
        self._check_size(data, writable)
        self._entries[k] = Entry(bytearray(data) if writable else data, writable, on_write)

    def add_i16(self, key: int, value: int) -> None:
        self.add_bytes(key, struct.pack("<H", value & 0xFFFF))

    def add_i32(self, key: int, value: int) -> None:
        self.add_bytes(key, struct.pack("<I", value & 0xFFFFFFFF))

    def add_i64(self, key: int, value: int) -> None:
        self.add_bytes(key, struct.pack("<Q", value & U64))

    def add_string(self, key: int, value: str) -> None:
        self.add_bytes(key, value.encode() + b"\0")

    def add_file(self, name: str, data: EntryData, *, writable: bool = False,
                 on_write: WriteCallback | None = None) -> None:
        raw = name.encode()
        if not raw or len(raw) >= FILE_NAME_BYTES or b"\0" in raw:
            raise ValueError(f"{self.name}: bad fw_cfg file name {name!r}")
        if name in self._files:
            raise ValueError(f"{self.name}: duplicate fw_cfg file name {name!r}")
        if len(self._files) >= self.file_slots:
            raise ValueError(f"{self.name}: more than {self.file_slots} files")
        self._check_size(data, writable)
        self._files[name] = _File(name, Entry(bytearray(data) if writable else data, writable, on_write))
        self._rebuild_dir()

    def add_deferred_files(self, names: tuple[str, ...], produce: Callable[[], dict[str, bytes]],
                           max_bytes: int) -> None:
        """Files whose contents are built on first use: the first read of any entry (the
        directory included), or entry_data. Names, slots and keys are fixed now, so the guest
        sees exactly what add_file would have given it. For contents that are slow to build
        and may never be read (the SMBIOS tables: hvmloader on Xen does not read fw_cfg).
        `max_bytes` (all of them together, at most) is counted against the size limits now,
        and `produce` must not fail otherwise: every error stays a start-up error."""
        if max_bytes > MAX_ENTRY_BYTES or self._total + max_bytes > MAX_TOTAL_BYTES:
            raise ValueError(f"{self.name}: entries exceed {MAX_TOTAL_BYTES} bytes in all")
        for name in names:
            self.add_file(name, b"")
        self._total += max_bytes
        self._deferred.append((names, produce, max_bytes))

    def _build_deferred(self) -> None:
        pending, self._deferred = self._deferred, []
        for names, produce, max_bytes in pending:
            data = produce()
            if set(data) != set(names) or sum(len(d) for d in data.values()) > max_bytes:
                raise ValueError(f"{self.name}: deferred files {sorted(data)} are not "
                                 f"{sorted(names)} within {max_bytes} bytes")
            self._total -= max_bytes
            for name in names:
                self._check_size(data[name], False)
                self._files[name].entry = Entry(data[name])
        self._rebuild_dir()

    def _rebuild_dir(self) -> None:
        # QEMU fw_cfg_add_file_callback keeps the directory sorted by strcmp on the names and
        # renumbers the keys of the files after an insertion point.
        for k in [k for k in self._entries if FILE_FIRST <= k < ARCH_LOCAL]:
            del self._entries[k]
        self._dir[:] = bytes(len(self._dir))
        ordered = sorted(self._files.values(), key=lambda f: f.name.encode())
        struct.pack_into(">I", self._dir, 0, len(ordered))
        for i, f in enumerate(ordered):
            f.key = FILE_FIRST + i
            self._entries[f.key] = f.entry
            FILE_DIR_ENTRY.pack_into(self._dir, 4 + i * FILE_DIR_ENTRY.size, len(f.entry.data),
                                     f.key, 0, f.name.encode())

    def file_key(self, name: str) -> int | None:
        f = self._files.get(name)
        return None if f is None else f.key

    def entry_data(self, key: int) -> bytes | None:
        if self._deferred:
            self._build_deferred()
        e = self._entries.get(key & (ARCH_LOCAL | ENTRY_MASK))
        return None if e is None else bytes(e.data)

    @property
    def file_names(self) -> list[str]:
        return sorted(self._files, key=str.encode)

    # ---- bus ----------------------------------------------------------------------------
    def pio_ranges(self) -> list[Range]:
        ranges = [Range(IO_BASE, 2, self._comb_read, self._comb_write, "fw_cfg", self,
                        frozenset({1, 2}))]
        if self.dma_enabled:
            ranges.append(Range(DMA_IO_BASE, 8, self._dma_read, self._dma_write, "fw_cfg.dma",
                                self, frozenset({1, 2, 4, 8})))
        return ranges

    def reset(self) -> None:
        # QEMU fw_cfg_reset only selects the signature. We also drop a half-written DMA
        # address (QEMU keeps it), so that a guest that wrote the high half and then rebooted
        # does not send SeaBIOS's first low-half-only transfer outside RAM; writable entry
        # contents survive, as in QEMU.
        self.select(SIGNATURE)
        self.dma_addr = 0

    def select(self, key: int) -> None:
        key &= 0xFFFF
        self.cur_offset = 0
        self.cur_entry = INVALID if (key & ENTRY_MASK) >= self.max_entry else key

    def _current(self) -> Entry | None:
        if self._deferred:  # the guest's first read: build what was deferred
            self._build_deferred()
        if self.cur_entry == INVALID:
            return None
        return self._entries.get(self.cur_entry & (ARCH_LOCAL | ENTRY_MASK))

    def _comb_read(self, off: int, size: int) -> int:
        if size != 1:
            # fw_cfg_comb_valid: reads are byte-wide only.
            self.guest_error(f"fw_cfg {size}-byte read")
            return 0
        e = self._current()
        if e is None or self.cur_offset >= len(e.data):
            return 0
        v = e.data[self.cur_offset]
        self.cur_offset += 1
        return v

    def _comb_write(self, off: int, size: int, value: int) -> None:
        if size == 2:
            self.select(value)
        else:
            self.guest_error("fw_cfg data port write (unsupported since QEMU 2.4)")

    def _dma_read(self, off: int, size: int) -> int:
        return int.from_bytes(DMA_SIGNATURE[off:off + size], "little")

    def _dma_write(self, off: int, size: int, value: int) -> None:
        # The region is big-endian: the guest's little-endian value is byte-swapped.
        be = int.from_bytes(value.to_bytes(size, "little"), "big")
        if size == 4 and off == 0:
            self.dma_addr = be << 32
        elif size == 4 and off == 4:
            self.dma_addr |= be
            self._dma_transfer()
        elif size == 8 and off == 0:
            self.dma_addr = be
            self._dma_transfer()
        else:
            self.guest_error(f"fw_cfg DMA register {size}-byte write at +{off}")

    # ---- DMA (fw_cfg_dma_transfer) ---------------------------------------------------------
    def _dma_transfer(self) -> None:
        assert self.ctx is not None
        mem = self.ctx.memory
        desc_addr = self.dma_addr
        self.dma_addr = 0
        raw = mem.read(desc_addr, DMA_DESCRIPTOR.size)
        if raw is None:
            self.guest_error(f"fw_cfg DMA descriptor {desc_addr:#x} is not RAM")
            mem.write(desc_addr, struct.pack(">I", DMA_CTL_ERROR))
            return
        control, length, address = DMA_DESCRIPTOR.unpack(raw)
        if control & DMA_CTL_SELECT:
            self.select(control >> 16)
        read = write = False
        if control & DMA_CTL_READ:
            read = True
        elif control & DMA_CTL_WRITE:
            write = True
        elif not control & DMA_CTL_SKIP:
            length = 0
        status = 0
        e = self._current()
        # QEMU loops while length > 0; here the loop has at most two steps (the part inside the
        # entry, then the part past its end), done explicitly.
        if length and e is not None and self.cur_offset < len(e.data):
            n = min(length, len(e.data) - self.cur_offset)
            if read:
                chunk = memoryview(e.data)[self.cur_offset:self.cur_offset + n]
                if not mem.write(address, chunk):
                    status = DMA_CTL_ERROR
            elif write:
                status = self._dma_write_entry(e, address, n, n == length)
            self.cur_offset += n
            address = (address + n) & U64
            length -= n
        if length and not status:
            if read:
                status = self._zero_fill(address, length)
            elif write:
                status = DMA_CTL_ERROR
        if status:
            self.guest_error("fw_cfg DMA transfer error")
        mem.write(desc_addr, struct.pack(">I", status))

    def _dma_write_entry(self, e: Entry, address: int, n: int, whole: bool) -> int:
        # QEMU: writes need a writable entry and must fit in it entirely.
        if not e.writable or not whole:
            return DMA_CTL_ERROR
        assert self.ctx is not None
        src = self.ctx.memory.read(address, n)
        if src is None:
            return DMA_CTL_ERROR
        start = self.cur_offset
        e.data[start:start + n] = src
        if e.on_write is not None:
            e.on_write(start, n)
        return 0

    def _zero_fill(self, address: int, length: int) -> int:
        assert self.ctx is not None
        mem = self.ctx.memory
        n = min(length, MAX_DMA_ZERO_FILL)
        views = mem.views(address, n, write=True)
        if views is None:
            return DMA_CTL_ERROR
        for v in views:
            for i in range(0, len(v), len(_ZEROS)):
                k = min(len(_ZEROS), len(v) - i)
                v[i:i + k] = _ZEROS[:k]
        mem.mark_dirty(address, n)
        if n < length:
            self.guest_error(f"fw_cfg DMA read of {length} bytes past an entry, clamped")
            return DMA_CTL_ERROR
        return 0

    # ---- snapshot -------------------------------------------------------------------------
    @property
    def writable_state(self) -> dict[str, bytes]:
        return {f"{k:#06x}": bytes(e.data) for k, e in self._entries.items() if e.writable}

    @writable_state.setter
    def writable_state(self, state: dict[str, bytes]) -> None:
        mine = {f"{k:#06x}": e for k, e in self._entries.items() if e.writable}
        if set(state) != set(mine):
            raise SnapshotError(f"{self.name}: writable entries {sorted(state)} != {sorted(mine)}")
        for k, e in mine.items():
            v = state[k]
            if not isinstance(v, (bytes, bytearray)) or len(v) != len(e.data):
                raise SnapshotError(f"{self.name}: writable entry {k} has the wrong size")
            e.data[:] = v

    def restore(self, snap: dict[str, Any]) -> None:
        state = snap.get("state", {})
        for f in ("cur_entry", "cur_offset", "dma_addr"):
            v = state.get(f)
            if not isinstance(v, int) or v < 0:
                raise SnapshotError(f"{self.name}: bad {f} {v!r}")
        if state["cur_entry"] > 0xFFFF or state["cur_offset"] > 0xFFFFFFFF or state["dma_addr"] > U64:
            raise SnapshotError(f"{self.name}: register value out of range")
        super().restore(snap)


# ---- configuration and builder -----------------------------------------------------------
@dataclass
class FwCfgConfig:
    ram_size: int
    nr_cpus: int = 1
    uuid: bytes = bytes(16)  # RFC 4122 byte order (the Xen domain handle)
    name: str = ""  # domain name: SMBIOS type 1 serial number
    boot_order: list[str] = field(default_factory=list)  # OpenFirmware paths, most wanted first
    boot_menu: bool = False
    boot_menu_wait_ms: int | None = None  # etc/boot-menu-wait (QEMU: -boot splash-time)
    # etc/boot-fail-wait: None is QEMU's default, -1 ("No bootable device." and no retry).
    boot_fail_wait_s: float | None = None
    roms: list[tuple[str, bytes]] = field(default_factory=list)  # genroms/NAME
    opt_files: list[tuple[str, bytes]] = field(default_factory=list)  # opt/NAME
    kernel: bytes | None = None
    initrd: bytes | None = None
    cmdline: str = ""
    linuxboot_rom: bytes | None = None  # /usr/share/qemu/linuxboot_dma.bin, read by the caller
    max_cpus: int | None = None  # APIC ID limit; defaults to nr_cpus
    ram_below_4g: int | None = None  # default: QEMU's pc split (3 GiB once RAM >= 3.5 GiB)
    nographic: bool = False
    smbios: SmbiosConfig | None = None  # overrides QEMU's SMBIOS strings
    file_slots: int = FILE_SLOTS_DEFAULT


MAX_CPUS_LIMIT = 255  # pc-i440fx


def build_fw_cfg(cfg: FwCfgConfig, name: str = "fw_cfg") -> FwCfg:
    """An FwCfg holding every entry QEMU's pc machine would give this domain."""
    if not 1 <= cfg.nr_cpus <= MAX_CPUS_LIMIT:
        raise ValueError(f"nr_cpus {cfg.nr_cpus} out of 1..{MAX_CPUS_LIMIT}")
    max_cpus = cfg.max_cpus if cfg.max_cpus is not None else cfg.nr_cpus
    if not cfg.nr_cpus <= max_cpus <= MAX_CPUS_LIMIT:
        raise ValueError(f"max_cpus {max_cpus} out of {cfg.nr_cpus}..{MAX_CPUS_LIMIT}")
    if len(cfg.uuid) != 16:
        raise ValueError("uuid must be 16 bytes")
    if cfg.ram_below_4g is None:
        below, above = e820mod.pc_ram_split(cfg.ram_size)
    else:
        below = min(cfg.ram_below_4g, cfg.ram_size)
        above = cfg.ram_size - below
    table = e820mod.build_e820(below, above)

    fw = FwCfg(name, file_slots=cfg.file_slots)
    # fw_cfg_common_realize
    fw.add_bytes(UUID, bytes(cfg.uuid))
    fw.add_i16(NOGRAPHIC, int(cfg.nographic))
    fw.add_i16(BOOT_MENU, int(cfg.boot_menu))  # SeaBIOS reads it as etc/show-boot-menu
    if cfg.boot_menu_wait_ms is not None:
        if not 0 <= cfg.boot_menu_wait_ms <= 0xFFFF:
            raise ValueError("boot_menu_wait_ms must be 0..65535")
        fw.add_file("etc/boot-menu-wait", struct.pack("<H", cfg.boot_menu_wait_ms))
    if cfg.boot_fail_wait_s is None:
        fail_ms = 0xFFFFFFFF
    else:
        fail_ms = round(cfg.boot_fail_wait_s * 1000)
        if not 0 <= fail_ms <= 0xFFFF:  # QEMU fw_cfg_reboot: -1 or 0..65535 ms
            raise ValueError("boot_fail_wait_s must be 0..65.535")
    fw.add_file("etc/boot-fail-wait", struct.pack("<I", fail_ms))
    # fw_cfg_arch_create
    fw.add_i16(NB_CPUS, cfg.nr_cpus)
    fw.add_i16(MAX_CPUS, max_cpus)
    fw.add_i64(RAM_SIZE, cfg.ram_size)
    fw.add_i32(IRQ0_OVERRIDE, 1)
    fw.add_file("etc/e820", e820mod.encode_e820(table))
    # struct hpet_fw_config {u8 count; {u32 id; u64 addr; u16 min_tick; u8 prot} hpet[8]}:
    # no HPET in this machine, so count 0.
    fw.add_bytes(HPET, bytes(1 + 15 * 8))
    # NUMA: node count, a node per APIC ID, memory per node; no NUMA nodes.
    fw.add_bytes(NUMA, bytes(8 * (1 + max_cpus)))
    # SMBIOS (fw_cfg_build_smbios): type 19 areas from the e820 RAM entries.
    scfg = cfg.smbios if cfg.smbios is not None else SmbiosConfig()
    if scfg.uuid is None:
        scfg = replace(scfg, uuid=bytes(cfg.uuid))
    if scfg.serial is None and cfg.name:
        scfg = replace(scfg, serial=cfg.name)
    areas = e820mod.ram_areas(table)
    check_smbios(scfg, cfg.ram_size, cfg.nr_cpus)  # configuration errors: now
    names = ("etc/smbios/smbios-tables", "etc/smbios/smbios-anchor")

    def smbios_files() -> dict[str, bytes]:
        sm = build_smbios(scfg, cfg.ram_size, cfg.nr_cpus, areas)
        return {names[0]: sm.tables, names[1]: sm.anchor}

    if fits_21_entry_point(scfg, cfg.ram_size, cfg.nr_cpus, len(areas)):
        # built when the firmware first reads fw_cfg
        fw.add_deferred_files(names, smbios_files,
                              max_smbios_bytes(cfg.ram_size, cfg.nr_cpus, len(areas)))
    else:  # may not fit: build now, so that the error is a start-up one
        for name, data in smbios_files().items():
            fw.add_file(name, data)

    boot_paths = list(cfg.boot_order)
    if cfg.kernel is not None:
        lb = load_linux(cfg.kernel, cfg.cmdline, cfg.initrd, below_4g=below)
        fw.add_i32(CMDLINE_ADDR, lb.cmdline_addr)
        fw.add_i32(CMDLINE_SIZE, len(lb.cmdline))
        fw.add_bytes(CMDLINE_DATA, lb.cmdline)
        if lb.initrd is not None and lb.initrd_addr is not None:
            fw.add_i32(INITRD_ADDR, lb.initrd_addr)
            fw.add_i32(INITRD_SIZE, len(lb.initrd))
            fw.add_bytes(INITRD_DATA, lb.initrd)
        fw.add_i32(KERNEL_ADDR, lb.kernel_addr)
        fw.add_i32(KERNEL_SIZE, len(lb.kernel))
        fw.add_bytes(KERNEL_DATA, lb.kernel)
        fw.add_i32(SETUP_ADDR, lb.setup_addr)
        fw.add_i32(SETUP_SIZE, len(lb.setup))
        fw.add_bytes(SETUP_DATA, lb.setup)
        fw.add_file("etc/boot/kernel", lb.image)
        if cfg.linuxboot_rom is not None:
            # QEMU registers the ROM with bootindex 0: first in bootorder.
            fw.add_file("genroms/" + LINUXBOOT_ROM_NAME, cfg.linuxboot_rom)
            boot_paths.insert(0, LINUXBOOT_BOOT_PATH)
    for rom_name, data in cfg.roms:
        fw.add_file("genroms/" + rom_name, data)
    for opt_name, data in cfg.opt_files:
        fw.add_file(opt_name if opt_name.startswith("opt/") else "opt/" + opt_name, data)
    # get_boot_devices_list: paths joined by '\n', NUL-terminated; empty when none. QEMU adds
    # both files even when empty (fw_cfg_machine_reset).
    for p in boot_paths:
        if not p or "\n" in p or "\0" in p:
            raise ValueError(f"bad boot path {p!r}")
    fw.add_file("bootorder", ("\n".join(boot_paths) + "\0").encode() if boot_paths else b"")
    fw.add_file("bios-geometry", b"")
    return fw
