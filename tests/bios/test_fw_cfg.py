"""fw_cfg through the bus: ports 0x510/0x511, DMA at 0x514, every entry SeaBIOS reads."""

from __future__ import annotations

import struct
import time

import pytest

from devmodel.bios import fw_cfg as F
from devmodel.bios.e820 import (
    E820_RAM,
    E820Entry,
    build_e820,
    decode_e820,
    encode_e820,
    pc_ram_split,
)
from devmodel.bios.fw_cfg import FwCfg, FwCfgConfig, build_fw_cfg
from devmodel.bios.fw_cfg_linux import ACPI_DATA_SIZE, LinuxBootError, load_linux
from devmodel.bios.smbios import checksum_ok, iter_structures
from devmodel.core import Clock, GuestMemory, Machine, SnapshotError

MiB, GiB = 1 << 20, 1 << 30
RAM = 64 * MiB
UUID = bytes.fromhex("12345678abcdef0111223344556677ff")
READY, DIR, PTR = 0x01, 0x20, 0x10
DESC = 0x8000  # where tests put DMA descriptors
BUF = 0x10000  # where tests DMA into


# ---- helpers: the register dance a guest does -------------------------------------------
def make(cfg: FwCfgConfig | None = None, fw: FwCfg | None = None) -> tuple[Machine, FwCfg]:
    if fw is None:
        fw = build_fw_cfg(cfg or FwCfgConfig(ram_size=RAM, nr_cpus=2, uuid=UUID, name="dom-a"))
    m = Machine(GuestMemory.fake(RAM), Clock(virtual=True), strict=True)
    m.add(fw)
    return m, fw


def outw(m: Machine, port: int, v: int) -> None:
    m.handle_ioreq(0, port, v, 1, 2, READY)


def outl(m: Machine, port: int, v: int) -> None:
    m.handle_ioreq(0, port, v, 1, 4, READY)


def outb(m: Machine, port: int, v: int) -> None:
    m.handle_ioreq(0, port, v, 1, 1, READY)


def inp(m: Machine, port: int, size: int = 1) -> int:
    return m.handle_ioreq(0, port, 0, 1, size, READY | DIR)


def read_key(m: Machine, key: int, n: int) -> bytes:
    outw(m, 0x510, key)
    return bytes(inp(m, 0x511) for _ in range(n))


def rep_insb(m: Machine, n: int, buf: int = BUF) -> bytes:
    """`rep insb` from 0x511 as Xen delivers it: one data_is_ptr ioreq per page."""
    out = b""
    while n:
        k = min(n, 4096)
        m.handle_ioreq(0, 0x511, buf, k, 1, READY | DIR | PTR)
        out += m.memory.read(buf, k)
        n -= k
    return out


def bswap32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "little"), "big")


def dma(m: Machine, control: int, length: int, address: int, desc: int = DESC,
        high: int | None = None) -> int:
    """Run one DMA transfer the way SeaBIOS does (outl of the big-endian low address)."""
    m.memory.write(desc, struct.pack(">IIQ", control, length, address))
    if high is not None:
        outl(m, 0x514, bswap32(high))
    outl(m, 0x518, bswap32(desc))
    return struct.unpack(">I", m.memory.read(desc, 4))[0]


def dma_read(m: Machine, key: int, n: int, buf: int = BUF) -> bytes:
    assert dma(m, key << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, n, buf) == 0
    return m.memory.read(buf, n)


def directory(m: Machine) -> dict[str, tuple[int, int]]:
    count = struct.unpack(">I", read_key(m, F.FILE_DIR, 4))[0]
    raw = bytes(inp(m, 0x511) for _ in range(64 * count))
    out = {}
    for i in range(count):
        size, key, _res, name = struct.unpack_from(">IHH56s", raw, 64 * i)
        out[name.rstrip(b"\0").decode()] = (key, size)
    return out


def read_file(m: Machine, name: str) -> bytes:
    key, size = directory(m)[name]
    return dma_read(m, key, size) if size else b""


def bzimage(protocol: int = 0x20F, setup_sects: int = 4, payload: bytes = b"K" * 5000,
            loadflags: int = 0x01, xloadflags: int = 0, initrd_max: int = 0x37FFFFFF) -> bytes:
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x202, 0x53726448)
    struct.pack_into("<H", setup, 0x206, protocol)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x22C, initrd_max)
    struct.pack_into("<H", setup, 0x236, xloadflags)
    return bytes(setup) + payload


# ---- the traditional interface -------------------------------------------------------------
def test_signature_and_id_through_ports():
    m, fw = make()
    assert read_key(m, F.SIGNATURE, 4) == b"QEMU"
    id_ = struct.unpack("<I", read_key(m, F.ID, 4))[0]
    assert id_ == F.VERSION_TRADITIONAL | F.VERSION_DMA
    # 8-bit reads of 0x510 read data too (QEMU's combined I/O region)
    outw(m, 0x510, F.SIGNATURE)
    assert bytes(inp(m, 0x510) for _ in range(4)) == b"QEMU"


def test_reset_selects_signature_and_offset_restarts():
    m, fw = make()
    read_key(m, F.ID, 2)
    m.reset()
    assert bytes(inp(m, 0x511) for _ in range(4)) == b"QEMU"
    outw(m, 0x510, F.SIGNATURE)
    assert inp(m, 0x511) == ord("Q")
    outw(m, 0x510, F.SIGNATURE)
    assert inp(m, 0x511) == ord("Q")


def test_without_dma_id_bit_and_no_dma_port():
    m, fw = make(fw=FwCfg(dma=False))
    assert struct.unpack("<I", read_key(m, F.ID, 4))[0] == F.VERSION_TRADITIONAL
    assert inp(m, 0x514, 1) == 0xFF  # unclaimed


def test_past_end_and_invalid_keys_read_zero():
    m, fw = make()
    assert read_key(m, F.SIGNATURE, 6) == b"QEMU\0\0"
    for key in (0x3FFF, 0x7FFF, 0xFFFF, 0xBFFF, F.FILE_FIRST + 0x20, 0x1A, F.KERNEL_DATA):
        assert read_key(m, key, 4) == bytes(4), hex(key)
    # the write-channel bit does not change what is read
    assert read_key(m, F.WRITE_CHANNEL | F.SIGNATURE, 4) == b"QEMU"


def test_unsupported_accesses_are_counted_not_raised():
    m, fw = make()
    outw(m, 0x510, F.SIGNATURE)
    assert inp(m, 0x510, 2) == 0  # 16-bit reads are not valid on the combined port
    outb(m, 0x511, 0x55)  # data-port writes were removed in QEMU 2.4
    outb(m, 0x514, 1)
    m.handle_ioreq(0, 0x516, 1, 1, 2, READY)
    assert sum(fw.counters.values()) == 4
    assert bytes(inp(m, 0x511) for _ in range(4)) == b"QEMU"


def test_legacy_entries_seabios_reads():
    m, fw = make(FwCfgConfig(ram_size=RAM, nr_cpus=3, uuid=UUID, boot_menu=True, nographic=True))
    assert read_key(m, F.UUID, 16) == UUID
    assert struct.unpack("<H", read_key(m, F.NB_CPUS, 2))[0] == 3
    assert struct.unpack("<H", read_key(m, F.MAX_CPUS, 2))[0] == 3
    assert struct.unpack("<Q", read_key(m, F.RAM_SIZE, 8))[0] == RAM
    assert struct.unpack("<H", read_key(m, F.NOGRAPHIC, 2))[0] == 1
    assert struct.unpack("<H", read_key(m, F.BOOT_MENU, 2))[0] == 1  # etc/show-boot-menu
    assert struct.unpack("<I", read_key(m, F.IRQ0_OVERRIDE, 4))[0] == 1
    numa = fw.entry_data(F.NUMA)
    assert numa == bytes(8 * 4)  # count 0, one word per APIC ID
    assert read_key(m, F.HPET, 1) == b"\0"
    # SeaBIOS's qemu_cfg_legacy: ACPI table and SMBIOS entry counts read as 0
    assert read_key(m, F.ACPI_TABLES, 2) == b"\0\0"
    assert read_key(m, F.SMBIOS_ENTRIES, 2) == b"\0\0"


def test_file_directory_sorted_as_qemu():
    m, fw = make(FwCfgConfig(ram_size=RAM, boot_order=["/pci@i0cf8/*@1,1/drive@0/disk@0"],
                             boot_menu_wait_ms=2500, boot_fail_wait_s=1,
                             roms=[("pxe.rom", b"\x55\xaa" + bytes(510))],
                             opt_files=[("org.example/x", b"hello"), ("opt/a", b"1")]))
    d = directory(m)
    names = list(d)
    assert names == sorted(names, key=str.encode)
    assert names == [
        "bios-geometry", "bootorder", "etc/boot-fail-wait", "etc/boot-menu-wait", "etc/e820",
        "etc/smbios/smbios-anchor", "etc/smbios/smbios-tables", "genroms/pxe.rom", "opt/a",
        "opt/org.example/x",
    ]
    assert [k for k, _ in d.values()] == list(range(F.FILE_FIRST, F.FILE_FIRST + len(d)))
    # QEMU serves the whole slot array: 4 + 64 * file_slots bytes
    assert len(fw.entry_data(F.FILE_DIR)) == 4 + 64 * F.FILE_SLOTS_DEFAULT
    assert read_file(m, "bootorder") == b"/pci@i0cf8/*@1,1/drive@0/disk@0\0"
    assert read_file(m, "etc/boot-menu-wait") == struct.pack("<H", 2500)
    assert read_file(m, "etc/boot-fail-wait") == struct.pack("<I", 1000)
    assert read_file(m, "genroms/pxe.rom")[:2] == b"\x55\xaa"
    assert read_file(m, "opt/org.example/x") == b"hello"
    assert read_file(m, "opt/a") == b"1"
    assert d["bios-geometry"][1] == 0


def test_default_files_and_boot_fail_wait():
    m, fw = make(FwCfgConfig(ram_size=RAM))
    d = directory(m)
    assert "etc/boot-menu-wait" not in d
    assert d["bootorder"][1] == 0  # QEMU adds it empty when no device has a bootindex
    # QEMU's default reboot-timeout is -1: "No bootable device." and no retry
    assert read_file(m, "etc/boot-fail-wait") == b"\xff\xff\xff\xff"


def test_bootorder_multiple_paths():
    paths = ["/pci@i0cf8/*@1,1/drive@0/disk@0", "/pci@i0cf8/ethernet@3/ethernet-phy@0"]
    m, fw = make(FwCfgConfig(ram_size=RAM, boot_order=paths))
    assert read_file(m, "bootorder") == ("\n".join(paths) + "\0").encode()


def test_e820_file_64mib_and_rep_insb():
    m, fw = make(FwCfgConfig(ram_size=RAM))
    key, size = directory(m)["etc/e820"]
    assert size == 20
    outw(m, 0x510, key)
    blob = rep_insb(m, size)
    assert decode_e820(blob) == [E820Entry(0, RAM, E820_RAM)]
    assert blob == struct.pack("<QQI", 0, RAM, 1)


def test_e820_6gib():
    m, fw = make(FwCfgConfig(ram_size=6 * GiB, nr_cpus=1))
    table = decode_e820(read_file(m, "etc/e820"))
    assert table == [E820Entry(0, 3 * GiB, E820_RAM), E820Entry(4 * GiB, 3 * GiB, E820_RAM)]
    assert struct.unpack("<Q", read_key(m, F.RAM_SIZE, 8))[0] == 6 * GiB


def test_e820_split_rules():
    assert pc_ram_split(64 * MiB) == (64 * MiB, 0)
    assert pc_ram_split(3 * GiB) == (3 * GiB, 0)
    assert pc_ram_split(0xDFF00000) == (0xDFF00000, 0)
    assert pc_ram_split(0xE0000000) == (3 * GiB, 0x20000000)  # 3.5 GiB: gigabyte aligned
    assert pc_ram_split(4 * GiB, gigabyte_align=False) == (0xE0000000, 0x20000000)
    reserved = build_e820(64 * MiB, 0, [(0xFEFFC000, 0x4000)])
    assert decode_e820(encode_e820(reserved))[1] == E820Entry(0xFEFFC000, 0x4000, 2)
    with pytest.raises(ValueError):
        pc_ram_split(0)
    with pytest.raises(ValueError):
        build_e820(5 * GiB)
    m, fw = make(FwCfgConfig(ram_size=2 * GiB, ram_below_4g=1 * GiB))
    assert decode_e820(read_file(m, "etc/e820"))[1] == E820Entry(4 * GiB, 1 * GiB, E820_RAM)


def test_smbios_files_via_dma():
    m, fw = make()
    anchor = read_file(m, "etc/smbios/smbios-anchor")
    tables = read_file(m, "etc/smbios/smbios-tables")
    # what SeaBIOS smbios_romfile_setup insists on
    assert len(anchor) == 31 and anchor[:4] == b"_SM_" and anchor[0x10:0x15] == b"_DMI_"
    assert struct.unpack_from("<H", anchor, 0x16)[0] == len(tables)
    assert checksum_ok(anchor) and checksum_ok(anchor[0x10:])
    structs = iter_structures(tables)
    assert struct.unpack_from("<H", anchor, 0x1C)[0] == len(structs)
    t1 = next(s for s in structs if s.type == 1)
    assert t1.formatted[8:24] == bytes.fromhex("78563412cdab01ef11223344556677ff")
    assert b"dom-a" in t1.strings
    assert [s.type for s in structs].count(4) == 2


# ---- DMA -----------------------------------------------------------------------------------
def test_dma_signature_reads():
    m, fw = make()
    assert inp(m, 0x514, 1) == ord("Q")
    assert inp(m, 0x514, 4).to_bytes(4, "little") == b"QEMU"
    assert inp(m, 0x518, 4).to_bytes(4, "little") == b" CFG"
    assert inp(m, 0x51A, 2).to_bytes(2, "little") == b"FG"
    assert m.pio.read(0x514, 8).to_bytes(8, "little") == b"QEMU CFG"


def test_dma_select_read_and_continue():
    m, fw = make()
    assert dma_read(m, F.SIGNATURE, 2) == b"QE"
    assert dma(m, F.DMA_CTL_READ, 2, BUF + 100) == 0  # no select: continues at offset 2
    assert m.memory.read(BUF + 100, 2) == b"MU"
    # the port interface sees the same offset
    assert inp(m, 0x511) == 0


def test_dma_skip_then_read_like_seabios_read_file():
    m, fw = make()
    key, size = directory(m)["etc/smbios/smbios-tables"]
    whole = dma_read(m, key, size)
    outw(m, 0x510, key)
    assert dma(m, F.DMA_CTL_SKIP, 10, 0) == 0
    assert dma(m, F.DMA_CTL_READ, size - 10, BUF) == 0
    assert m.memory.read(BUF, size - 10) == whole[10:]


def test_dma_select_only_and_no_op():
    m, fw = make()
    assert dma(m, F.ID << 16 | F.DMA_CTL_SELECT, 100, BUF) == 0
    assert struct.unpack("<I", bytes(inp(m, 0x511) for _ in range(4)))[0] == 3
    assert dma(m, 0, 100, BUF) == 0


def test_dma_read_past_end_zero_fills():
    m, fw = make()
    m.memory.write(BUF, b"\xaa" * 16)
    assert dma_read(m, F.SIGNATURE, 8) == b"QEMU\0\0\0\0"
    m.memory.write(BUF, b"\xaa" * 16)
    assert dma(m, 0x3FFF << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, 8, BUF) == 0  # invalid key
    assert m.memory.read(BUF, 9) == bytes(8) + b"\xaa"


def test_dma_write_refused_on_read_only_entries():
    m, fw = make()
    m.memory.write(BUF, b"XXXX")
    st = dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_WRITE, 4, BUF)
    assert st == F.DMA_CTL_ERROR
    assert read_key(m, F.SIGNATURE, 4) == b"QEMU"
    st = dma(m, 0x3FFF << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_WRITE, 4, BUF)
    assert st == F.DMA_CTL_ERROR


def test_dma_write_to_writable_entry():
    fw = FwCfg()
    seen = []
    fw.add_file("etc/test-writable", bytes(8), writable=True, on_write=lambda o, n: seen.append((o, n)))
    m, fw = make(fw=fw)
    key, size = directory(m)["etc/test-writable"]
    m.memory.write(BUF, b"abcd")
    assert dma(m, key << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_WRITE, 4, BUF) == 0
    assert dma(m, F.DMA_CTL_WRITE, 4, BUF) == 0  # continues at offset 4
    assert seen == [(0, 4), (4, 4)]
    assert dma_read(m, key, 8) == b"abcdabcd"
    # a write that does not fit entirely is refused (QEMU: len != dma.length)
    outw(m, 0x510, key)
    assert dma(m, F.DMA_CTL_SKIP, 6, 0) == 0
    assert dma(m, F.DMA_CTL_WRITE, 4, BUF) == F.DMA_CTL_ERROR
    assert fw.entry_data(key) == b"abcdabcd"
    # the write's source outside RAM
    assert dma(m, key << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_WRITE, 4, 1 << 40) == F.DMA_CTL_ERROR
    with pytest.raises(ValueError):
        FwCfg().add_file("big", bytes(F.MAX_WRITABLE_BYTES + 1), writable=True)


def test_dma_outside_ram_sets_error_without_exception():
    m, fw = make()
    # buffer outside RAM
    assert dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, 4, RAM + 4096) == 1
    # buffer straddling the end of RAM
    assert dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, 4, RAM - 2) == 1
    assert m.memory.read(RAM - 2, 2) == b"\0\0"
    # zero fill into non-RAM
    assert dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, 8, RAM - 4) == 1
    # the descriptor itself outside RAM / straddling its end: counted, nothing raised
    before = sum(fw.counters.values())
    outl(m, 0x518, bswap32(RAM + 0x1000))
    outl(m, 0x518, bswap32(RAM - 8))
    assert sum(fw.counters.values()) >= before + 2
    # a high half pointing past 4 GiB, then the address register is clear again
    # descriptor at 4 GiB + DESC is not RAM: the one at DESC is left untouched
    assert dma(m, F.DMA_CTL_READ, 4, BUF, high=1) == F.DMA_CTL_READ
    assert fw.dma_addr == 0
    assert dma_read(m, F.SIGNATURE, 4) == b"QEMU"


def test_dma_huge_length_is_clamped():
    m, fw = make()
    m.memory.write(BUF, b"\xaa" * 64)
    end_of_fill = BUF + 4 + F.MAX_DMA_ZERO_FILL
    m.memory.write(end_of_fill, b"\xbb" * 16)
    t0 = time.monotonic()
    st = dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, 0xFFFFFFFF, BUF)
    assert time.monotonic() - t0 < 5
    assert st == F.DMA_CTL_ERROR
    assert m.memory.read(BUF, 8) == b"QEMU\0\0\0\0"
    assert m.memory.read(end_of_fill, 16) == b"\xbb" * 16
    # a huge skip costs nothing and is not an error
    assert dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_SKIP, 0xFFFFFFFF, 0) == 0
    # a huge read into a range that is not RAM: error, nothing written
    assert dma(m, F.SIGNATURE << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_READ, 0xFFFFFFFF,
               0xFFFFFFFFFFFFFFF0) == F.DMA_CTL_ERROR


def test_dma_64bit_register_write():
    m, fw = make()
    m.memory.write(DESC, struct.pack(">IIQ", F.SIGNATURE << 16 | 0x0A, 4, BUF))
    m.pio.write(0x514, 8, int.from_bytes(DESC.to_bytes(8, "big"), "little"))
    assert m.memory.read(DESC, 4) == bytes(4)
    assert m.memory.read(BUF, 4) == b"QEMU"


# ---- snapshot ----------------------------------------------------------------------------
def test_snapshot_mutate_restore():
    fw = FwCfg()
    fw.add_file("etc/w", bytes(4), writable=True)
    m, fw = make(fw=fw)
    key = fw.file_key("etc/w")
    m.memory.write(BUF, b"wxyz")
    assert dma(m, key << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_WRITE, 4, BUF) == 0
    read_key(m, F.SIGNATURE, 2)
    outl(m, 0x514, bswap32(0x1234))
    snap = fw.snapshot()
    assert snap["state"]["cur_offset"] == 2 and snap["state"]["dma_addr"] == 0x1234 << 32
    read_key(m, F.ID, 1)
    m.memory.write(BUF, b"0000")
    assert dma(m, key << 16 | F.DMA_CTL_SELECT | F.DMA_CTL_WRITE, 4, BUF, high=0) == 0
    fw.restore(snap)
    assert fw.snapshot() == snap
    assert bytes(inp(m, 0x511) for _ in range(2)) == b"MU"
    assert fw.entry_data(key) == b"wxyz"
    bad = {**snap, "state": {**snap["state"], "cur_offset": -1}}
    with pytest.raises(SnapshotError):
        fw.restore(bad)
    bad = {**snap, "state": {**snap["state"], "writable_state": {}}}
    with pytest.raises(SnapshotError):
        fw.restore(bad)


# ---- building limits ------------------------------------------------------------------------
def test_build_limits():
    fw = FwCfg(file_slots=0x10)
    for i in range(0x10):
        fw.add_file(f"f{i:02}", b"x")
    with pytest.raises(ValueError):
        fw.add_file("one-too-many", b"x")
    with pytest.raises(ValueError):
        FwCfg().add_file("x" * 56, b"")
    fw = FwCfg()
    fw.add_file("a", b"")
    with pytest.raises(ValueError):
        fw.add_file("a", b"")
    with pytest.raises(ValueError):
        fw.add_bytes(F.SIGNATURE, b"again")
    with pytest.raises(ValueError):
        fw.add_bytes(F.FILE_FIRST, b"x")
    with pytest.raises(ValueError):
        build_fw_cfg(FwCfgConfig(ram_size=RAM, nr_cpus=0))
    with pytest.raises(ValueError):
        build_fw_cfg(FwCfgConfig(ram_size=RAM, boot_fail_wait_s=100))
    with pytest.raises(ValueError):
        build_fw_cfg(FwCfgConfig(ram_size=RAM, boot_order=["a\nb"]))


def test_file_keys_renumber_on_sorted_insert():
    fw = FwCfg()
    fw.add_file("b", b"B")
    assert fw.file_key("b") == 0x20
    fw.add_file("a", b"A")
    assert (fw.file_key("a"), fw.file_key("b")) == (0x20, 0x21)
    m, fw = make(fw=fw)
    assert read_key(m, 0x21, 1) == b"B"


# ---- direct kernel boot ----------------------------------------------------------------------
def test_direct_kernel_boot_entries():
    payload = bytes(range(256)) * 20
    kernel = bzimage(payload=payload)
    initrd = b"I" * 10000
    rom = b"\x55\xaa\x03" + bytes(1533)
    m, fw = make(FwCfgConfig(ram_size=RAM, kernel=kernel, initrd=initrd,
                             cmdline="console=ttyS0 vga=ask", linuxboot_rom=rom,
                             boot_order=["/pci@i0cf8/*@1,1/drive@0/disk@0"]))

    def i32(key: int) -> int:
        return struct.unpack("<I", read_key(m, key, 4))[0]

    assert i32(F.SETUP_ADDR) == 0x10000
    assert i32(F.KERNEL_ADDR) == 0x100000
    assert i32(F.CMDLINE_ADDR) == 0x20000
    assert i32(F.CMDLINE_SIZE) == len("console=ttyS0 vga=ask") + 1
    assert dma_read(m, F.CMDLINE_DATA, i32(F.CMDLINE_SIZE)) == b"console=ttyS0 vga=ask\0"
    setup_size = 5 * 512
    assert i32(F.SETUP_SIZE) == setup_size
    assert i32(F.KERNEL_SIZE) == len(payload)
    assert dma_read(m, F.KERNEL_DATA, len(payload)) == payload
    setup = dma_read(m, F.SETUP_DATA, setup_size)
    assert setup[0x210] == 0xB0
    assert setup[0x211] == 0x81
    assert struct.unpack_from("<H", setup, 0x224)[0] == 0x20000 - 0x10000 - 0x200
    assert struct.unpack_from("<I", setup, 0x228)[0] == 0x20000
    assert struct.unpack_from("<H", setup, 0x1FA)[0] == 0xFFFD
    initrd_addr = (RAM - ACPI_DATA_SIZE - 1 - len(initrd)) & ~4095
    assert struct.unpack_from("<II", setup, 0x218) == (initrd_addr, len(initrd))
    assert i32(F.INITRD_ADDR) == initrd_addr
    assert i32(F.INITRD_SIZE) == len(initrd)
    assert dma_read(m, F.INITRD_DATA, len(initrd)) == initrd
    assert read_file(m, "etc/boot/kernel") == kernel  # unpatched
    assert read_file(m, "genroms/linuxboot_dma.bin") == rom
    assert read_file(m, "bootorder") == (
        b"/rom@genroms/linuxboot_dma.bin\n/pci@i0cf8/*@1,1/drive@0/disk@0\0")


def test_linux_loader_protocol_variants():
    old = load_linux(bzimage(protocol=0x201), "root=/dev/sda", below_4g=RAM)
    assert (old.setup_addr, old.kernel_addr) == (0x90000, 0x100000)
    assert old.cmdline_addr == 0x9A000 - 16 * ((len("root=/dev/sda") + 16) // 16)
    assert struct.unpack_from("<HH", old.setup, 0x20) == (0xA33F, old.cmdline_addr - 0x90000)
    low = load_linux(bzimage(loadflags=0), below_4g=RAM)
    assert low.kernel_addr == 0x10000
    zimage = b"\0" * 4096
    z = load_linux(zimage, below_4g=RAM)
    assert z.protocol == 0 and z.setup == zimage[:2560] and z.kernel_addr == 0x10000
    with pytest.raises(LinuxBootError):
        load_linux(zimage, initrd=b"x", below_4g=RAM)
    above = load_linux(bzimage(protocol=0x20C, xloadflags=2), initrd=b"x" * 4096, below_4g=RAM)
    assert above.initrd_addr == (RAM - ACPI_DATA_SIZE - 1 - 4096) & ~4095
    capped = load_linux(bzimage(initrd_max=0x00FFFFFF), initrd=b"x" * 4096, below_4g=RAM)
    assert capped.initrd_addr == (0x00FFFFFF - 4096) & ~4095
    with pytest.raises(LinuxBootError):
        load_linux(bzimage(), initrd=b"x" * RAM, below_4g=RAM)
    with pytest.raises(LinuxBootError):
        load_linux(bzimage(setup_sects=30)[:4000], below_4g=RAM)
    with pytest.raises(LinuxBootError):
        load_linux(bzimage(), "vga=bogus", below_4g=RAM)
    assert struct.unpack_from("<H", load_linux(bzimage(), "vga=0x318", below_4g=RAM).setup,
                              0x1FA)[0] == 0x318
