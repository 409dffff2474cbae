"""SMBIOS tables as QEMU's `pc` machine builds them for the firmware (hw/smbios/smbios.c).

QEMU serves two fw_cfg files: `etc/smbios/smbios-anchor`, an entry point whose table address
is 0 ("BIOS must recalculate"), and `etc/smbios/smbios-tables`, the structures back to back.
SeaBIOS (src/fw/biostables.c smbios_romfile_setup) accepts them only if the anchor's size is
exactly that of a 2.1 (31 bytes, "_SM_") or 3.0 (24 bytes, "_SM3_") entry point and the
tables file is exactly `structure_table_length` (2.1) / `structure_table_max_size` (3.0) long;
it copies the tables to the F-segment or high memory, patches the address and recomputes the
checksums by subtraction, and adds its own type 0 (vendor "SeaBIOS") when none is present.

Structures and handles follow QEMU's defaults: type 0 only when BIOS fields are given, 1
(system, UUID in the SMBIOS 2.6 wire order), 3 (chassis), 4 per socket, 16 (memory array),
17 per 16 GiB "DIMM", 19 per e820 RAM entry, 32 (boot status) and 127 (end). Layouts are data
(core.layout: named fields over one little-endian `struct`), declared on first use (`layouts`).
The fw_cfg device builds the tables when the firmware first reads fw_cfg
(`fits_21_entry_point` says when that is safe). They were construct Structs once: importing
construct (and the pdb it pulls in) cost ~12 ms of the guest's first fw_cfg read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace

from devmodel.core.layout import U8, U16, U32, U64, Const, Layout

EP21_SIZE = 0x1F
EP30_SIZE = 0x18
ONE_KIB, ONE_MIB, ONE_GIB = 1 << 10, 1 << 20, 1 << 30
MAX_DIMM_SIZE = 16 * ONE_GIB  # QEMU MAX_DIMM_SZ
MAX_T16_STD_KIB = 0x80000000  # 2 TiB in KiB
MAX_T17_STD_MIB = 0x7FFF
MAX_STRING_BYTES = 64  # per SMBIOS string (host input; keeps structures small)
MAX_STRUCTURES = 4096  # bound on a table walk
MAX_SOCKETS = 255  # pc-i440fx max_cpus

_LAYOUTS = ("HEADER", "TYPE0", "TYPE1", "TYPE3", "TYPE4_V28", "TYPE4_V30", "TYPE16",
            "TYPE17", "TYPE19", "TYPE32", "TYPE127", "EP21", "EP30")


@functools.cache
def layouts() -> SimpleNamespace:
    """The structure layouts (SMBIOS 3.x, DSP0134 sections 6.1.2, 5.2.1/5.2.2 and 7.x)."""
    HEADER = Layout(("type", U8), ("length", U8), ("handle", U16))

    TYPE0 = Layout(
        ("header", HEADER), ("vendor", U8), ("version", U8), ("start_segment", U16),
        ("release_date", U8), ("rom_size", U8), ("characteristics", U64),
        ("characteristics_ext", "2s"), ("bios_major", U8), ("bios_minor", U8),
        ("ec_major", U8), ("ec_minor", U8),
    )
    TYPE1 = Layout(
        ("header", HEADER), ("manufacturer", U8), ("product", U8), ("version", U8),
        ("serial", U8), ("uuid", "16s"), ("wake_up_type", U8), ("sku", U8), ("family", U8),
    )
    TYPE3 = Layout(
        ("header", HEADER), ("manufacturer", U8), ("type", U8), ("version", U8),
        ("serial", U8), ("asset", U8), ("boot_up_state", U8), ("power_supply_state", U8),
        ("thermal_state", U8), ("security_status", U8), ("oem_defined", U32),
        ("height", U8), ("power_cords", U8), ("contained_count", U8),
        ("contained_length", U8), ("sku", U8),
    )
    type4_fields: tuple[tuple[str, str | Layout], ...] = (
        ("header", HEADER), ("socket", U8), ("processor_type", U8), ("family", U8),
        ("manufacturer", U8), ("processor_id", U64), ("version", U8), ("voltage", U8),
        ("external_clock", U16), ("max_speed", U16), ("current_speed", U16),
        ("status", U8), ("upgrade", U8), ("l1_handle", U16), ("l2_handle", U16),
        ("l3_handle", U16), ("serial", U8), ("asset", U8), ("part", U8),
        ("core_count", U8), ("core_enabled", U8), ("thread_count", U8),
        ("characteristics", U16), ("family2", U16),
    )
    TYPE4_V28 = Layout(*type4_fields)  # 0x2A bytes
    TYPE4_V30 = Layout(*type4_fields, ("core_count2", U16), ("core_enabled2", U16),
                       ("thread_count2", U16))  # 0x30 bytes
    TYPE16 = Layout(
        ("header", HEADER), ("location", U8), ("use", U8), ("error_correction", U8),
        ("maximum_capacity", U32), ("error_handle", U16), ("devices", U16),
        ("extended_maximum_capacity", U64),
    )
    TYPE17 = Layout(
        ("header", HEADER), ("array_handle", U16), ("error_handle", U16),
        ("total_width", U16), ("data_width", U16), ("size", U16), ("form_factor", U8),
        ("device_set", U8), ("device_locator", U8), ("bank_locator", U8),
        ("memory_type", U8), ("type_detail", U16), ("speed", U16), ("manufacturer", U8),
        ("serial", U8), ("asset", U8), ("part", U8), ("attributes", U8),
        ("extended_size", U32), ("configured_speed", U16), ("minimum_voltage", U16),
        ("maximum_voltage", U16), ("configured_voltage", U16),
    )
    TYPE19 = Layout(
        ("header", HEADER), ("start", U32), ("end", U32), ("array_handle", U16),
        ("partition_width", U8), ("extended_start", U64), ("extended_end", U64),
    )
    TYPE32 = Layout(("header", HEADER), ("reserved", "6s"), ("boot_status", U8))
    TYPE127 = Layout(("header", HEADER))

    EP21 = Layout(
        ("anchor", Const(b"_SM_")), ("checksum", U8), ("length", U8), ("major", U8),
        ("minor", U8), ("max_structure_size", U16), ("revision", U8),
        ("formatted_area", "5s"), ("intermediate_anchor", Const(b"_DMI_")),
        ("intermediate_checksum", U8), ("table_length", U16), ("table_address", U32),
        ("structure_count", U16), ("bcd_revision", U8),
    )
    EP30 = Layout(
        ("anchor", Const(b"_SM3_")), ("checksum", U8), ("length", U8), ("major", U8),
        ("minor", U8), ("docrev", U8), ("revision", U8), ("reserved", U8),
        ("table_max_size", U32), ("table_address", U64),
    )
    names = locals()
    return SimpleNamespace(**{n: names[n] for n in _LAYOUTS})


def __getattr__(name: str):
    """`smbios.TYPE1`, `smbios.EP21` & co. as before, declared when first asked for."""
    if name in _LAYOUTS:
        return getattr(layouts(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# QEMU's fixed handles (smbios.c SMBIOS_BUILD_TABLE_PRE calls).
HANDLE_T0, HANDLE_T1, HANDLE_T3, HANDLE_T4 = 0x000, 0x100, 0x300, 0x400
HANDLE_T16, HANDLE_T17, HANDLE_T19, HANDLE_T32, HANDLE_T127 = 0x1000, 0x1100, 0x1300, 0x2000, 0x7F00


@dataclass
class SmbiosConfig:
    """Strings and identity. Defaults are what QEMU's pc machine puts there
    (smbios_set_defaults("QEMU", mc->desc, mc->name)); None leaves a string out."""

    manufacturer: str = "QEMU"
    product: str = "Standard PC (i440FX + PIIX, 1996)"
    version: str = "pc-i440fx-devmodel"
    serial: str | None = None
    sku: str | None = None
    family: str | None = None
    uuid: bytes | None = None  # 16 bytes, RFC 4122 (big-endian) order, as the toolstack has it
    # Type 0 is QEMU's optional table: absent unless one of these is set, and SeaBIOS then
    # supplies its own ("SeaBIOS", its version, "04/01/2014").
    bios_vendor: str | None = None
    bios_version: str | None = None
    bios_date: str | None = None
    bios_release: tuple[int, int] | None = None
    cpuid_version: int = 0  # CPUID.1:EAX, QEMU smbios_set_cpuid
    cpuid_features: int = 0  # CPUID.1:EDX
    cpu_mhz: int = 2000  # QEMU: "SVVP requires max_speed and current_speed to not be unknown"
    entry_point: str = "2.1"  # "2.1" (SMBIOS 2.8 tables, QEMU's i440FX default) or "3.0"


@dataclass(frozen=True)
class SmbiosTables:
    anchor: bytes
    tables: bytes
    count: int
    max_structure_size: int


def smbios_uuid(uuid: bytes) -> bytes:
    """RFC 4122 bytes -> SMBIOS 2.6+ wire order: time_low, time_mid, time_hi little-endian
    (QEMU smbios_encode_uuid)."""
    if len(uuid) != 16:
        raise ValueError("a UUID is 16 bytes")
    return uuid[3::-1] + uuid[5:3:-1] + uuid[7:5:-1] + uuid[8:]


class _Strings:
    """The string-set that follows a structure: 1-based indices, 0 for "no string"."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def add(self, s: str | None) -> int:
        if not s:
            return 0
        b = s.encode("utf-8", "replace").replace(b"\0", b"")[:MAX_STRING_BYTES]
        if not b:
            return 0
        self.items.append(b)
        return len(self.items)

    def terminate(self) -> bytes:
        # Each string NUL-terminated, then one more NUL; two NULs when there are none.
        return b"".join(s + b"\0" for s in self.items) + b"\0" if self.items else b"\0\0"


def _header(t: int, handle: int, layout: Layout) -> dict[str, int]:
    return {"type": t, "length": layout.sizeof(), "handle": handle}


def _checksum_fix(buf: bytearray, at: int, start: int, end: int) -> None:
    buf[at] = 0
    buf[at] = -sum(buf[start:end]) & 0xFF


# Bounds for `fits_21_entry_point`: no structure's formatted area is longer (TYPE4_V30 is 0x30
# bytes; a test checks every layout), none has more strings (type 1 has 6).
MAX_FORMATTED_BYTES = 0x40
MAX_STRINGS_PER_STRUCTURE = 7


def check_smbios(cfg: SmbiosConfig, ram_size: int, sockets: int) -> None:
    """The configuration errors build_smbios raises, without building anything."""
    if not 1 <= sockets <= MAX_SOCKETS:
        raise ValueError(f"{sockets} sockets, want 1..{MAX_SOCKETS}")
    if ram_size <= 0:
        raise ValueError("RAM size must be positive")
    if cfg.entry_point not in ("2.1", "3.0"):
        raise ValueError(f"SMBIOS entry point {cfg.entry_point!r}, want '2.1' or '3.0'")


def max_smbios_bytes(ram_size: int, sockets: int, ram_areas: int) -> int:
    """An upper bound of the tables' length plus the entry point's."""
    dimms = (ram_size + MAX_DIMM_SIZE - 1) // MAX_DIMM_SIZE
    count = 1 + 1 + 1 + sockets + 1 + dimms + ram_areas + 1 + 1  # types 0, 1, 3, 4.., 16, ...
    per = MAX_FORMATTED_BYTES + MAX_STRINGS_PER_STRUCTURE * (MAX_STRING_BYTES + 1) + 2
    return count * per + max(EP21_SIZE, EP30_SIZE)


def fits_21_entry_point(cfg: SmbiosConfig, ram_size: int, sockets: int, ram_areas: int) -> bool:
    """True when the tables cannot outgrow what their entry point can describe (always for
    3.0; for 2.1 an upper bound of their length is within 0xFFFF): then build_smbios cannot
    fail once check_smbios passed, and may run later, on first use."""
    if cfg.entry_point != "2.1":
        return True
    return max_smbios_bytes(ram_size, sockets, ram_areas) - EP21_SIZE <= 0xFFFF


def build_smbios(cfg: SmbiosConfig, ram_size: int, sockets: int,
                 ram_areas: Iterable[tuple[int, int]]) -> SmbiosTables:
    """Build (anchor, tables) as QEMU smbios_get_tables does for 1 core and 1 thread per socket."""
    check_smbios(cfg, ram_size, sockets)
    L = layouts()
    out: list[bytes] = []

    def emit(layout: Layout, fields: dict, strings: _Strings) -> None:
        out.append(layout.build(fields) + strings.terminate())

    if cfg.bios_vendor or cfg.bios_version or cfg.bios_date or cfg.bios_release:
        s = _Strings()
        major, minor = cfg.bios_release or (0, 0)
        emit(L.TYPE0, dict(
            header=_header(0, HANDLE_T0, L.TYPE0), vendor=s.add(cfg.bios_vendor),
            version=s.add(cfg.bios_version), start_segment=0xE800,
            release_date=s.add(cfg.bios_date), rom_size=0, characteristics=0x08,
            characteristics_ext=bytes((0, 0x14)),  # targeted content distribution | VM
            bios_major=major & 0xFF, bios_minor=minor & 0xFF, ec_major=0xFF, ec_minor=0xFF,
        ), s)

    s = _Strings()
    emit(L.TYPE1, dict(
        header=_header(1, HANDLE_T1, L.TYPE1), manufacturer=s.add(cfg.manufacturer),
        product=s.add(cfg.product), version=s.add(cfg.version), serial=s.add(cfg.serial),
        uuid=smbios_uuid(cfg.uuid) if cfg.uuid is not None else bytes(16),
        wake_up_type=0x06, sku=s.add(cfg.sku), family=s.add(cfg.family),  # 6: power switch
    ), s)

    s = _Strings()
    emit(L.TYPE3, dict(
        header=_header(3, HANDLE_T3, L.TYPE3), manufacturer=s.add(cfg.manufacturer), type=0x01,
        version=s.add(cfg.version), serial=0, asset=0, boot_up_state=0x03,
        power_supply_state=0x03, thermal_state=0x03, security_status=0x02, oem_defined=0,
        height=0, power_cords=0, contained_count=0, contained_length=0, sku=0,
    ), s)

    t4 = L.TYPE4_V28 if cfg.entry_point == "2.1" else L.TYPE4_V30
    for i in range(sockets):
        s = _Strings()
        fields = dict(
            header=_header(4, HANDLE_T4 + i, t4), socket=s.add(f"CPU{i:2x}"), processor_type=0x03,
            family=0x01, manufacturer=s.add(cfg.manufacturer),
            processor_id=(cfg.cpuid_version & 0xFFFFFFFF) | (cfg.cpuid_features & 0xFFFFFFFF) << 32,
            version=s.add(cfg.version), voltage=0, external_clock=0, max_speed=cfg.cpu_mhz,
            current_speed=cfg.cpu_mhz, status=0x41, upgrade=0x01, l1_handle=0xFFFF,
            l2_handle=0xFFFF, l3_handle=0xFFFF, serial=0, asset=0, part=0, core_count=1,
            core_enabled=1, thread_count=1, characteristics=0x02, family2=0x01,
        )
        if t4 is L.TYPE4_V30:
            fields.update(core_count2=1, core_enabled2=1, thread_count2=1)
        emit(t4, fields, s)

    dimms = (ram_size + MAX_DIMM_SIZE - 1) // MAX_DIMM_SIZE
    size_kib = (ram_size + ONE_KIB - 1) // ONE_KIB
    big = size_kib >= MAX_T16_STD_KIB
    emit(L.TYPE16, dict(
        header=_header(16, HANDLE_T16, L.TYPE16), location=0x01, use=0x03, error_correction=0x06,
        maximum_capacity=MAX_T16_STD_KIB if big else size_kib, error_handle=0xFFFE,
        devices=dimms, extended_maximum_capacity=ram_size if big else 0,
    ), _Strings())

    for i in range(dimms):
        dimm = MAX_DIMM_SIZE if i < dimms - 1 else (ram_size - 1) % MAX_DIMM_SIZE + 1
        size_mib = (dimm + ONE_MIB - 1) // ONE_MIB
        s = _Strings()
        emit(L.TYPE17, dict(
            header=_header(17, HANDLE_T17 + i, L.TYPE17), array_handle=HANDLE_T16,
            error_handle=0xFFFE, total_width=0xFFFF, data_width=0xFFFF,
            size=size_mib if size_mib < MAX_T17_STD_MIB else MAX_T17_STD_MIB,
            form_factor=0x09, device_set=0, device_locator=s.add(f"DIMM {i}"), bank_locator=0,
            memory_type=0x07, type_detail=0x02, speed=0, manufacturer=s.add(cfg.manufacturer),
            serial=0, asset=0, part=0, attributes=0,
            extended_size=0 if size_mib < MAX_T17_STD_MIB else size_mib, configured_speed=0,
            minimum_voltage=0, maximum_voltage=0, configured_voltage=0,
        ), s)

    for i, (start, length) in enumerate(ram_areas):
        end = start + length - 1
        start_kib, end_kib = start // ONE_KIB, end // ONE_KIB
        small = start_kib < 0xFFFFFFFF and end_kib < 0xFFFFFFFF
        emit(L.TYPE19, dict(
            header=_header(19, HANDLE_T19 + i, L.TYPE19),
            start=start_kib if small else 0xFFFFFFFF, end=end_kib if small else 0xFFFFFFFF,
            array_handle=HANDLE_T16, partition_width=1,
            extended_start=0 if small else start, extended_end=0 if small else end,
        ), _Strings())

    emit(L.TYPE32, dict(header=_header(32, HANDLE_T32, L.TYPE32), reserved=bytes(6), boot_status=0),
         _Strings())
    emit(L.TYPE127, dict(header=_header(127, HANDLE_T127, L.TYPE127)), _Strings())

    tables = b"".join(out)
    max_size = max(len(t) for t in out)
    if cfg.entry_point == "2.1":
        if len(tables) > 0xFFFF:
            raise ValueError(f"SMBIOS tables of {len(tables)} bytes do not fit a 2.1 entry point")
        anchor = bytearray(L.EP21.build(dict(
            checksum=0, length=EP21_SIZE, major=2, minor=8, max_structure_size=max_size,
            revision=0, formatted_area=bytes(5), intermediate_checksum=0,
            table_length=len(tables), table_address=0, structure_count=len(out),
            bcd_revision=0x28,
        )))
        # QEMU leaves both checksums 0 for the BIOS; SeaBIOS fixes them by subtraction, so
        # correct ones are equally fine and keep the anchor valid on its own.
        _checksum_fix(anchor, 0x15, 0x10, EP21_SIZE)
        _checksum_fix(anchor, 0x04, 0x00, EP21_SIZE)
    else:
        anchor = bytearray(L.EP30.build(dict(
            checksum=0, length=EP30_SIZE, major=3, minor=0, docrev=0, revision=1, reserved=0,
            table_max_size=len(tables), table_address=0,
        )))
        _checksum_fix(anchor, 0x05, 0x00, EP30_SIZE)
    return SmbiosTables(bytes(anchor), tables, len(out), max_size)


@dataclass(frozen=True)
class Structure:
    type: int
    length: int
    handle: int
    formatted: bytes  # the whole formatted area, header included
    strings: list[bytes]


def iter_structures(tables: bytes) -> list[Structure]:
    """Walk a structure table the way SeaBIOS smbios_next does, bounded by MAX_STRUCTURES.
    Stops at type 127, at a truncated structure, or at the end of the buffer."""
    out: list[Structure] = []
    pos, end = 0, len(tables)
    for _ in range(MAX_STRUCTURES):
        if pos + 4 > end:
            break
        t, length, handle = tables[pos], tables[pos + 1], int.from_bytes(tables[pos + 2:pos + 4], "little")
        if length < 4 or pos + length >= end:
            break
        formatted = bytes(tables[pos:pos + length])
        term = tables.find(b"\0\0", pos + length)
        if term < 0:
            break
        area = tables[pos + length:term]
        strings = [x for x in area.split(b"\0")] if area else []
        out.append(Structure(t, length, handle, formatted, strings))
        pos = term + 2
        if t == 127:
            break
    return out


def checksum_ok(buf: bytes) -> bool:
    return sum(buf) & 0xFF == 0
