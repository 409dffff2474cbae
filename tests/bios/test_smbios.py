"""SMBIOS tables and entry points, checked the way SeaBIOS consumes them."""

from __future__ import annotations

import random
import struct

import pytest

from devmodel.bios.smbios import (
    EP21,
    EP30,
    SmbiosConfig,
    build_smbios,
    checksum_ok,
    iter_structures,
    smbios_uuid,
)

MiB, GiB = 1 << 20, 1 << 30
UUID = bytes.fromhex("0123456789abcdef0011223344556677")


def build(ram=64 * MiB, cpus=1, areas=None, **kw):
    return build_smbios(SmbiosConfig(**kw), ram, cpus, areas if areas is not None else [(0, ram)])


def by_type(tables: bytes) -> dict[int, list]:
    out: dict[int, list] = {}
    for s in iter_structures(tables):
        out.setdefault(s.type, []).append(s)
    return out


def seabios_accepts(anchor: bytes, tables: bytes) -> bool:
    """src/fw/biostables.c smbios_romfile_setup + smbios_build_tables preconditions."""
    if len(anchor) == 31 and anchor[:4] == b"_SM_":
        return struct.unpack_from("<H", anchor, 0x16)[0] == len(tables)
    if len(anchor) == 24 and anchor[:5] == b"_SM3_":
        return struct.unpack_from("<I", anchor, 0x0C)[0] == len(tables)
    return False


def test_entry_point_21_checksums_and_fields():
    t = build(cpus=2, uuid=UUID)
    ep = EP21.parse(t.anchor)
    assert len(t.anchor) == 31 and ep.length == 31
    assert (ep.major, ep.minor, ep.bcd_revision) == (2, 8, 0x28)
    assert checksum_ok(t.anchor)
    assert checksum_ok(t.anchor[0x10:])  # intermediate checksum over the _DMI_ part
    assert ep.table_length == len(t.tables)
    assert ep.table_address == 0  # the BIOS places the table
    structs = iter_structures(t.tables)
    assert ep.structure_count == len(structs) == t.count
    sizes = []
    for i, s in enumerate(structs):
        nxt = structs[i + 1].formatted if i + 1 < len(structs) else None
        start = t.tables.find(s.formatted)
        end = t.tables.find(nxt, start) if nxt else len(t.tables)
        sizes.append(end - start)
    assert ep.max_structure_size == max(sizes)
    assert seabios_accepts(t.anchor, t.tables)


def test_entry_point_30():
    t = build(entry_point="3.0", cpus=3)
    ep = EP30.parse(t.anchor)
    assert len(t.anchor) == 24 and (ep.major, ep.minor, ep.revision) == (3, 0, 1)
    assert checksum_ok(t.anchor)
    assert ep.table_max_size == len(t.tables)
    t4 = by_type(t.tables)[4]
    assert len(t4) == 3 and all(s.length == 0x30 for s in t4)
    assert seabios_accepts(t.anchor, t.tables)


def test_table_walk_qemu_defaults():
    t = build(cpus=2, uuid=UUID, serial="my-domain")
    types = [s.type for s in iter_structures(t.tables)]
    assert types == [1, 3, 4, 4, 16, 17, 19, 32, 127]
    assert t.tables.endswith(b"\x7f\x04\x00\x7f\x00\x00")
    tt = by_type(t.tables)
    t1 = tt[1][0]
    assert (t1.length, t1.handle) == (0x1B, 0x100)
    assert t1.strings == [b"QEMU", b"Standard PC (i440FX + PIIX, 1996)", b"pc-i440fx-devmodel",
                          b"my-domain"]
    assert t1.formatted[4:8] == bytes((1, 2, 3, 4))
    assert t1.formatted[8:24] == smbios_uuid(UUID)
    assert t1.formatted[8:24] == bytes.fromhex("67452301ab89efcd0011223344556677")
    assert t1.formatted[24] == 6  # wake-up: power switch
    assert [s.handle for s in tt[4]] == [0x400, 0x401]
    assert [s.strings[0] for s in tt[4]] == [b"CPU 0", b"CPU 1"]
    t4 = tt[4][0].formatted
    assert t4[0x05] == 3 and struct.unpack_from("<HH", t4, 0x14) == (2000, 2000)
    assert t4[0x18] == 0x41
    t3 = tt[3][0]
    assert t3.length == 0x16 and t3.formatted[5] == 1 and t3.strings[0] == b"QEMU"
    t16 = tt[16][0].formatted
    assert struct.unpack_from("<IHH", t16, 7) == (64 * 1024, 0xFFFE, 1)
    t17 = tt[17][0]
    assert struct.unpack_from("<H", t17.formatted, 0x0C)[0] == 64
    assert t17.strings == [b"DIMM 0", b"QEMU"]
    t19 = tt[19][0].formatted
    assert struct.unpack_from("<IIHB", t19, 4) == (0, 64 * 1024 - 1, 0x1000, 1)
    assert tt[32][0].length == 11
    assert 0 not in tt  # type 0 left to SeaBIOS, as QEMU does


def test_6gib_memory_structures():
    areas = [(0, 3 * GiB), (4 * GiB, 3 * GiB)]
    tt = by_type(build(ram=6 * GiB, areas=areas).tables)
    assert struct.unpack_from("<I", tt[16][0].formatted, 7)[0] == 6 * GiB // 1024
    assert len(tt[17]) == 1
    assert struct.unpack_from("<H", tt[17][0].formatted, 0x0C)[0] == 6144
    starts = [struct.unpack_from("<II", s.formatted, 4) for s in tt[19]]
    assert starts == [(0, 3 * GiB // 1024 - 1), (4 * GiB // 1024, 7 * GiB // 1024 - 1)]
    assert [s.handle for s in tt[19]] == [0x1300, 0x1301]


def test_large_memory_dimms_and_extended_fields():
    ram = 40 * GiB
    tt = by_type(build(ram=ram, areas=[(0, 3 * GiB), (4 * GiB, ram - 3 * GiB)]).tables)
    sizes = [struct.unpack_from("<H", s.formatted, 0x0C)[0] for s in tt[17]]
    assert sizes == [16384, 16384, 8192]
    assert struct.unpack_from("<H", tt[16][0].formatted, 0x0D)[0] == 3
    big = by_type(build(ram=4096 * GiB, areas=[(0, 3 * GiB)]).tables)
    t16 = big[16][0].formatted
    assert struct.unpack_from("<I", t16, 7)[0] == 0x80000000
    assert struct.unpack_from("<Q", t16, 15)[0] == 4096 * GiB
    huge_area = by_type(build(ram=8 * GiB, areas=[(1 << 42, 8 * GiB)]).tables)[19][0].formatted
    assert struct.unpack_from("<II", huge_area, 4) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert struct.unpack_from("<QQ", huge_area, 15) == (1 << 42, (1 << 42) + 8 * GiB - 1)


def test_type0_only_when_bios_fields_given():
    t = build(bios_vendor="Xen", bios_version="4.19", bios_date="01/01/2024",
              bios_release=(4, 19))
    s0 = iter_structures(t.tables)[0]
    assert (s0.type, s0.length, s0.handle) == (0, 0x18, 0)
    assert s0.strings == [b"Xen", b"4.19", b"01/01/2024"]
    assert struct.unpack_from("<H", s0.formatted, 6)[0] == 0xE800
    assert (s0.formatted[0x14], s0.formatted[0x15]) == (4, 19)
    assert seabios_accepts(t.anchor, t.tables)


def test_strings_are_sanitised_and_bounded():
    t = build(serial="a\0b", sku="", family="x" * 500, manufacturer="Ünïcode")
    t1 = by_type(t.tables)[1][0]
    assert t1.strings[3] == b"ab"
    assert t1.formatted[0x19] == 0  # empty SKU: no string
    assert len(t1.strings[4]) == 64
    assert t1.strings[0] == "Ünïcode".encode()


def test_no_uuid_is_zero():
    assert by_type(build().tables)[1][0].formatted[8:24] == bytes(16)


def test_limits():
    with pytest.raises(ValueError):
        build(cpus=0)
    with pytest.raises(ValueError):
        build(cpus=256)
    with pytest.raises(ValueError):
        build(entry_point="2.0")
    with pytest.raises(ValueError):
        build(areas=[(i * GiB, GiB) for i in range(2000)])  # > 64 KiB for a 2.1 entry point
    with pytest.raises(ValueError):
        smbios_uuid(b"short")
    t = build(cpus=255)
    assert seabios_accepts(t.anchor, t.tables)


def test_walk_of_garbage_terminates():
    rng = random.Random(1)
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        iter_structures(blob)
    assert iter_structures(bytes(100)) == []  # length 0 headers stop the walk
    assert len(iter_structures(b"\x01\x04\x00\x00\0\0" * 10000)) == 4096  # bounded
