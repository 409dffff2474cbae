"""Fixed binary layouts declared as data: named fields over one little-endian `struct`.

For the cold, fixed structures a device model hands its guest (SMBIOS tables, USB
descriptors): declared like a register map, built from a dict, parsed back for tests. They
replace construct Structs, whose import (with the pdb it pulls in) cost ~12 ms wherever it
first happened, inside the guest's first fw_cfg read or GET_DESCRIPTOR. Hot paths use a
precompiled struct.Struct directly (design rule 9).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

U8, U16, U32, U64 = "B", "H", "I", "Q"


@dataclass(frozen=True)
class Const:
    """A field with a fixed value (an anchor string, a descriptor's bLength): never passed to
    build, checked by parse. `code` defaults to the bytes' length for a bytes value."""

    value: int | bytes
    code: str = ""

    def struct_code(self) -> str:
        if self.code:
            return self.code
        if not isinstance(self.value, bytes):
            raise ValueError("an integer Const needs its struct code")
        return f"{len(self.value)}s"


Field = tuple[str, "str | Layout | Const"]


class Layout:
    """(name, code) pairs, code being a `struct` code ("B", "H", "I", "Q", "5s"), a nested
    Layout (built from a dict of its own) or a Const."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields
        codes = []
        for _name, code in fields:
            if isinstance(code, Layout):
                codes.append(code.struct.format.lstrip("<"))
            elif isinstance(code, Const):
                codes.append(code.struct_code())
            else:
                codes.append(code)
        self.struct = struct.Struct("<" + "".join(codes))

    def sizeof(self) -> int:
        return self.struct.size

    def _values(self, values: Mapping[str, object]) -> list[object]:
        out: list[object] = []
        for name, code in self.fields:
            if isinstance(code, Const):
                out.append(code.value)
            elif isinstance(code, Layout):
                out.extend(code._values(values[name]))  # type: ignore[arg-type]
            else:
                out.append(values[name])
        return out

    def build(self, values: Mapping[str, object]) -> bytes:
        """The bytes of `values` (every field but the constants; nested layouts as dicts).
        A missing field is a KeyError, a value out of its field's range a struct.error."""
        return self.struct.pack(*self._values(values))

    def _take(self, flat: list[object]) -> SimpleNamespace:
        out = SimpleNamespace()
        for name, code in self.fields:
            if isinstance(code, Layout):
                setattr(out, name, code._take(flat))
                continue
            value = flat.pop(0)
            if isinstance(code, Const) and value != code.value:
                raise ValueError(f"{name}: {value!r}, want {code.value!r}")
            setattr(out, name, value)
        return out

    def parse(self, data: bytes) -> SimpleNamespace:
        """The fields of the first sizeof() bytes of `data` (constants checked)."""
        return self._take(list(self.struct.unpack_from(data, 0)))
