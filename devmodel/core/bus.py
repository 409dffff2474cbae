"""Address spaces: non-overlapping ranges with declared access sizes, one lookup path.

Modelled on crosvm's `Bus` and QEMU's `MemoryRegionOps.impl`: a device declares which access
sizes it implements; the bus splits a wider access into several of the widest size the device
takes, and rejects (counts, reads all-ones) one narrower than the narrowest it takes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

ReadFn = Callable[[int, int], int]
WriteFn = Callable[[int, int, int], None]

ALL_SIZES = frozenset({1, 2, 4, 8})


class OverlapError(ValueError):
    pass


@dataclass(eq=False)
class Range:
    """`length` bytes at `start`, served by read(offset, size)/write(offset, size, value)."""

    start: int
    length: int
    read: ReadFn
    write: WriteFn
    name: str
    owner: object = None
    sizes: frozenset[int] = frozenset({1, 2, 4})
    # Optional whole-string hooks for `rep ins/outs` with data_is_ptr (a port, not memory):
    # read_rep(off, size, count) -> the count*size bytes `count` reads would return;
    # write_rep(off, size, data) does what len(data)//size writes would.
    read_rep: Callable[[int, int, int], bytes] | None = None
    write_rep: Callable[[int, int, bytes | memoryview], None] | None = None
    # Optional fill hook for a forward `rep stos` into memory (MMIO, no data_is_ptr):
    # write_fill(off, size, count, value) does what `count` writes of `value` at off,
    # off + size, ... would. Machine._rep calls it only when all of them fall in this range.
    write_fill: Callable[[int, int, int, int], None] | None = None
    max_size: int = field(init=False)

    def __post_init__(self) -> None:
        if self.length <= 0:
            raise ValueError(f"range {self.name}: length must be positive")
        self.max_size = max(self.sizes)

    @property
    def end(self) -> int:
        """Inclusive last address, as Xen's range DMOPs want it."""
        return self.start + self.length - 1


class AddressSpace:
    """One of PIO or MMIO. Listeners hear about every range added or removed."""

    def __init__(self, name: str, limit: int, range_type: int,
                 misbehaviour: Callable[[str], None]) -> None:
        self.name = name
        self.range_type = range_type  # XEN_DMOP_IO_RANGE_PORT or _MEMORY
        self.limit = limit
        self._ranges: list[Range] = []
        self._starts: list[int] = []
        # PIO is small enough to expand every port into a dict entry: the ~40 ns lookup the
        # hot path wants (machine-limits.md section 4). MMIO uses bisect.
        self.port_map: dict[int, Range] | None = {} if limit <= 0x10000 else None
        self.listeners: list[Callable[[AddressSpace, str, Range], None]] = []
        self._count = misbehaviour
        # Accesses no range serves (read all-ones / write dropped). Not a guest error: on Xen
        # they reach us only by a routing race (an ioreq already in flight when its range was
        # unmapped, e.g. at a Xen unplug) or a peer's bug; firmware probing absent hardware
        # is answered by the hypervisor itself. Logged with the machine's counters at exit.
        self.unclaimed = 0

    def add(self, r: Range) -> None:
        if r.start < 0 or r.start + r.length > self.limit:
            raise OverlapError(f"{self.name}: {r.name} at {r.start:#x} is outside the space")
        i = bisect.bisect_right(self._starts, r.start)
        if i > 0 and self._ranges[i - 1].end >= r.start:
            other = self._ranges[i - 1]
            raise OverlapError(f"{self.name}: {r.name} at {r.start:#x} overlaps {other.name}")
        if i < len(self._ranges) and self._ranges[i].start <= r.end:
            other = self._ranges[i]
            raise OverlapError(f"{self.name}: {r.name} at {r.start:#x} overlaps {other.name}")
        self._ranges.insert(i, r)
        self._starts.insert(i, r.start)
        if self.port_map is not None:
            for p in range(r.start, r.start + r.length):
                self.port_map[p] = r
        for fn in self.listeners:
            fn(self, "add", r)

    def remove(self, r: Range) -> None:
        i = self._ranges.index(r)
        del self._ranges[i]
        del self._starts[i]
        if self.port_map is not None:
            for p in range(r.start, r.start + r.length):
                self.port_map.pop(p, None)
        for fn in self.listeners:
            fn(self, "remove", r)

    def __iter__(self):
        return iter(list(self._ranges))

    def find(self, addr: int) -> Range | None:
        if self.port_map is not None:
            return self.port_map.get(addr)
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            r = self._ranges[i]
            if addr <= r.end:
                return r
        return None

    # ---- access -------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        r = self.find(addr)
        if r is None or addr + size - 1 > r.end:
            self.unclaimed += 1
            return (1 << (8 * size)) - 1
        off = addr - r.start
        if size in r.sizes:
            return r.read(off, size)
        if size > r.max_size:
            step = r.max_size
            val = 0
            for i in range(0, size, step):
                val |= (r.read(off + i, step) & ((1 << (8 * step)) - 1)) << (8 * i)
            return val
        self._count(f"{self.name} read of size {size} at {addr:#x} ({r.name})")
        return (1 << (8 * size)) - 1

    def write(self, addr: int, size: int, value: int) -> None:
        r = self.find(addr)
        if r is None or addr + size - 1 > r.end:
            self.unclaimed += 1
            return
        off = addr - r.start
        if size in r.sizes:
            r.write(off, size, value)
        elif size > r.max_size:
            step = r.max_size
            mask = (1 << (8 * step)) - 1
            for i in range(0, size, step):
                r.write(off + i, step, (value >> (8 * i)) & mask)
        else:
            self._count(f"{self.name} write of size {size} at {addr:#x} ({r.name})")
