"""The register-file engine (design rule 3): register maps are data.

A device declares its registers as `Reg` rows: offset, width, reset value, writable mask,
write-1-to-clear mask, and optional handlers for side effects only. The engine does the masking
and partial or unaligned accesses, so a 1-byte write to the top byte of a 32-bit register, or a
4-byte read spanning two 16-bit registers, behaves the way a bus of byte lanes does.
Offsets that no register covers read as zero-bits of the `hole` value and ignore writes, and
are counted as guest misbehaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reg:
    name: str
    offset: int
    width: int = 4  # bytes
    reset: int = 0
    wmask: int | None = None  # None: every bit writable
    w1c: int = 0  # bits cleared by writing 1 (status registers)
    # Side effects. on_read(value) -> value returned (e.g. read-to-clear handled by the device);
    # on_write(old, new) runs after the masked value is stored.
    on_read: Callable[[int], int] | None = None
    on_write: Callable[[int, int], None] | None = None

    @property
    def mask(self) -> int:
        return (1 << (8 * self.width)) - 1


class RegisterFile:
    def __init__(self, regs: Iterable[Reg], on_hole: Callable[[str], None] | None = None,
                 hole: int = 0) -> None:
        self.regs: dict[str, Reg] = {}
        self._by_offset: dict[int, Reg] = {}
        self._byte: dict[int, Reg] = {}
        self.values: dict[str, int] = {}
        self._on_hole = on_hole
        self._hole = hole
        for r in regs:
            if r.name in self.regs:
                raise ValueError(f"duplicate register {r.name}")
            for b in range(r.offset, r.offset + r.width):
                if b in self._byte:
                    raise ValueError(f"register {r.name} overlaps {self._byte[b].name}")
                self._byte[b] = r
            self.regs[r.name] = r
            self._by_offset[r.offset] = r
        # Reset values computed once: a guest can reset a device thousands of times in one
        # ioreq (`rep outsw` to e1000 CTRL.RST through its I/O window), so reset is one dict
        # update, not a Python loop over ~700 registers (60 us -> a few us per reset).
        self._defaults = {r.name: r.reset & r.mask for r in self.regs.values()}
        self.reset()

    def reset(self) -> None:
        self.values.update(self._defaults)

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __setitem__(self, name: str, value: int) -> None:
        """Device-side store: no masks, no side effects."""
        self.values[name] = value & self.regs[name].mask

    def read(self, offset: int, size: int) -> int:
        r = self._by_offset.get(offset)
        if r is not None and r.width == size:
            v = self.values[r.name]
            return r.on_read(v) if r.on_read else v
        # Byte-lane assembly: each register touched is read once.
        result = 0
        seen: dict[str, int] = {}
        for i in range(size):
            b = offset + i
            r = self._byte.get(b)
            if r is None:
                if self._on_hole:
                    self._on_hole(f"read of unimplemented offset {b:#x}")
                result |= (self._hole & 0xFF) << (8 * i)
                continue
            if r.name not in seen:
                v = self.values[r.name]
                seen[r.name] = r.on_read(v) if r.on_read else v
            result |= ((seen[r.name] >> (8 * (b - r.offset))) & 0xFF) << (8 * i)
        return result

    def write(self, offset: int, size: int, value: int) -> None:
        r = self._by_offset.get(offset)
        if r is not None and r.width == size:
            self._store(r, r.mask, value)
            return
        # Group the written bytes by register, then store each once with a lane mask.
        lanes: dict[str, list[int]] = {}
        for i in range(size):
            b = offset + i
            r = self._byte.get(b)
            if r is None:
                if self._on_hole:
                    self._on_hole(f"write to unimplemented offset {b:#x}")
                continue
            sh = 8 * (b - r.offset)
            acc = lanes.setdefault(r.name, [0, 0])
            acc[0] |= 0xFF << sh
            acc[1] |= ((value >> (8 * i)) & 0xFF) << sh
        for name, (lane_mask, v) in lanes.items():
            self._store(self.regs[name], lane_mask, v)

    def _store(self, r: Reg, lane_mask: int, value: int) -> None:
        old = self.values[r.name]
        wmask = r.mask if r.wmask is None else r.wmask
        wmask &= lane_mask & ~r.w1c
        new = (old & ~wmask) | (value & wmask)
        if r.w1c:
            new &= ~(value & r.w1c & lane_mask)
        self.values[r.name] = new & r.mask
        if r.on_write:
            r.on_write(old, self.values[r.name])

    def snapshot(self) -> dict[str, int]:
        return dict(self.values)

    def restore(self, values: dict[str, int]) -> None:
        unknown = set(values) - set(self.regs)
        if unknown:
            raise ValueError(f"unknown registers in snapshot: {sorted(unknown)}")
        for name, v in values.items():
            self.values[name] = int(v) & self.regs[name].mask
