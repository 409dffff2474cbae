"""core.layout: fixed little-endian layouts declared as data (SMBIOS tables, USB descriptors)."""

from __future__ import annotations

import struct

import pytest

from devmodel.core.layout import U8, U16, U32, U64, Const, Layout

HEADER = Layout(("type", U8), ("length", U8), ("handle", U16))
RECORD = Layout(("magic", Const(b"_AB_")), ("header", HEADER), ("bLength", Const(9, U8)),
                ("addr", U64), ("count", U32), ("name", "3s"))


def test_build_packs_little_endian_with_constants_and_nested_layouts() -> None:
    data = RECORD.build(dict(header=dict(type=17, length=RECORD.sizeof(), handle=0x1100),
                             addr=0x1122334455667788, count=7, name=b"abc"))
    assert RECORD.sizeof() == 4 + 4 + 1 + 8 + 4 + 3 == len(data)
    assert data == (b"_AB_" + bytes((17, 24)) + b"\x00\x11" + b"\x09"
                    + struct.pack("<QI", 0x1122334455667788, 7) + b"abc")


def test_parse_gives_the_fields_back_and_checks_constants() -> None:
    data = RECORD.build(dict(header=dict(type=1, length=2, handle=3), addr=4, count=5,
                             name=b"xyz"))
    rec = RECORD.parse(data + b"trailing bytes are not read")
    assert (rec.header.type, rec.header.length, rec.header.handle) == (1, 2, 3)
    assert (rec.magic, rec.bLength, rec.addr, rec.count, rec.name) == (b"_AB_", 9, 4, 5, b"xyz")
    with pytest.raises(ValueError, match="magic"):
        RECORD.parse(b"_XX_" + data[4:])
    with pytest.raises(ValueError, match="bLength"):
        RECORD.parse(data[:8] + b"\x08" + data[9:])


def test_missing_and_out_of_range_fields_are_errors() -> None:
    with pytest.raises(KeyError):
        HEADER.build(dict(type=1, length=2))
    with pytest.raises(struct.error):
        HEADER.build(dict(type=256, length=2, handle=3))
    with pytest.raises(ValueError):
        Layout(("n", Const(5)))  # an integer constant needs its struct code
