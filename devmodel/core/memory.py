"""Guest physical memory as the device model sees it: regions shared by the hypervisor.

Every accessor is bounds-checked and reports failure by its return value (None / False):
DMA outside guest RAM is a bus error that the *device* turns into its error status
(design rule 6), never an exception that escapes into the dispatcher.
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import weakref
from dataclasses import dataclass, field

PAGE_SHIFT = 12
# How many regions one access may span; guest RAM is a handful of regions, and a bound keeps a
# hostile region layout from turning one DMA into a long walk.
MAX_SPAN_REGIONS = 8

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class MemoryLayoutError(ValueError):
    """A region that cannot be added (overlap, zero size, duplicate id, bad fd)."""


@dataclass(eq=False)
class Region:
    region_id: int
    gpa: int
    size: int
    flags: int
    view: memoryview
    readonly: bool = False
    _mmap: mmap.mmap | None = field(default=None, repr=False)
    _fd: int | None = field(default=None, repr=False)

    @property
    def end(self) -> int:
        return self.gpa + self.size

    def close(self) -> bool:
        """Drop the region. True if its mapping is gone now; False if it is deferred: a view
        of it is still in use, typically by a disk request in flight (a worker thread's
        preadv writes into guest RAM with the GIL released, QEMU keeps a reference on the
        RAM block for a DMA mapping for the same reason). The mapping then stays valid
        until the last view is released, and the mmap object's deallocation unmaps it, so
        a MEM_DEL (or a MEM_ADD replacing the region) during the transfer cannot make the
        worker write into unmapped memory; the data lands in the old pages."""
        try:
            self.view.release()
        except BufferError:
            pass  # an export of the region's own view: it keeps the mapping, as below
        unmapped = True
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                unmapped = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return unmapped


class GuestMemory:
    """Sorted, non-overlapping regions of guest RAM (and later ROM/VRAM)."""

    def __init__(self) -> None:
        self._regions: list[Region] = []
        self._starts: list[int] = []
        self._by_id: dict[int, Region] = {}
        self.dirty_log: set[int] | None = None  # page numbers written by DMA, when tracking
        self.generation = 0  # bumped on every layout change (INVALIDATE semantics)
        # Removed regions whose mapping is still in use (Region.close): weak references,
        # alive until the last view goes and the mapping is unmapped.
        self._retired: list[weakref.ref[mmap.mmap]] = []
        self.deferred_unmaps = 0

    # ---- layout -------------------------------------------------------------------------
    @classmethod
    def fake(cls, size: int, gpa: int = 0) -> GuestMemory:
        """Plain bytearray-backed RAM for unit tests and fuzzing."""
        mem = cls()
        mem.add_buffer(0, gpa, bytearray(size))
        return mem

    def add_buffer(self, region_id: int, gpa: int, buf: bytearray, flags: int = 1) -> Region:
        region = Region(region_id, gpa, len(buf), flags, memoryview(buf))
        self._insert(region)
        return region

    def add_fd(
        self, region_id: int, gpa: int, size: int, fd: int, fd_offset: int, flags: int
    ) -> Region:
        """Map `size` bytes of `fd` at `fd_offset` as guest RAM at `gpa`. Takes ownership of fd."""
        from devmodel.wire.constants import MEM_READONLY

        if size <= 0 or gpa < 0 or gpa + size > 1 << 52:
            raise MemoryLayoutError(f"region {region_id}: bad range gpa={gpa:#x} size={size:#x}")
        if fd_offset % mmap.ALLOCATIONGRANULARITY:
            raise MemoryLayoutError(f"region {region_id}: fd_offset {fd_offset:#x} not page aligned")
        self._check_free(region_id, gpa, size)
        try:
            st = os.fstat(fd)
            if st.st_size < fd_offset + size:
                raise MemoryLayoutError(
                    f"region {region_id}: fd holds {st.st_size:#x} bytes, "
                    f"needs {fd_offset + size:#x}"
                )
            readonly = bool(flags & MEM_READONLY)
            prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot, offset=fd_offset)
        except OSError as e:
            raise MemoryLayoutError(f"region {region_id}: cannot map fd: {e}") from None
        view = memoryview(mm)
        region = Region(region_id, gpa, size, flags, view, readonly, mm, fd)
        self._insert(region)
        return region

    def _check_free(self, region_id: int, gpa: int, size: int) -> None:
        if region_id in self._by_id:
            raise MemoryLayoutError(f"region id {region_id} already in use")
        i = bisect.bisect_right(self._starts, gpa)
        if i > 0 and self._regions[i - 1].end > gpa:
            raise MemoryLayoutError(f"region {region_id} overlaps region {self._regions[i - 1].region_id}")
        if i < len(self._regions) and self._regions[i].gpa < gpa + size:
            raise MemoryLayoutError(f"region {region_id} overlaps region {self._regions[i].region_id}")

    def _insert(self, region: Region) -> None:
        self._check_free(region.region_id, region.gpa, region.size)
        i = bisect.bisect_right(self._starts, region.gpa)
        self._regions.insert(i, region)
        self._starts.insert(i, region.gpa)
        self._by_id[region.region_id] = region
        self.generation += 1

    def remove(self, region_id: int) -> None:
        region = self._by_id.pop(region_id, None)
        if region is None:
            raise MemoryLayoutError(f"no region with id {region_id}")
        i = self._regions.index(region)
        del self._regions[i]
        del self._starts[i]
        mm = region._mmap
        if not region.close() and mm is not None:
            self.deferred_unmaps += 1
            self._retired.append(weakref.ref(mm))
        self.retired_mappings()  # prunes the mappings that have gone meanwhile
        self.generation += 1

    def retired_mappings(self) -> int:
        """How many removed regions are still mapped because I/O holds views of them."""
        self._retired = [r for r in self._retired if r() is not None]
        return len(self._retired)

    def close(self) -> None:
        for rid in list(self._by_id):
            self.remove(rid)

    @property
    def regions(self) -> list[Region]:
        return list(self._regions)

    def invalidate(self) -> None:
        """IOREQ_TYPE_INVALIDATE: we cache no translations beyond the region table itself."""
        self.generation += 1

    # ---- translation --------------------------------------------------------------------
    def _find(self, gpa: int) -> Region | None:
        i = bisect.bisect_right(self._starts, gpa) - 1
        if i >= 0:
            r = self._regions[i]
            if gpa < r.end:
                return r
        return None

    def window(self, gpa: int, length: int, write: bool = False
               ) -> tuple[int, int, memoryview] | None:
        """(start, end, view) of the one RAM region holding [gpa, gpa + length), or None when
        the range is not inside one region (or the region is read-only and `write`): a
        batched DMA path keeps it while its next buffers fall inside it (a frame is then one
        slice copy, not a region lookup per access), for one batch only (the table cannot
        change while it runs), and marks what it writes dirty itself (mark_dirty). None:
        the caller takes the general accessors, which report the bus error."""
        r = self._find(gpa)
        if r is None or gpa + length > r.end or (write and r.readonly):
            return None
        return r.gpa, r.end, r.view

    def views(self, gpa: int, length: int, write: bool = False) -> list[memoryview] | None:
        """Memoryviews covering [gpa, gpa+length), or None if any byte is not guest RAM."""
        if length < 0 or gpa < 0:
            return None
        out: list[memoryview] = []
        for _ in range(MAX_SPAN_REGIONS):
            if length == 0:
                return out
            r = self._find(gpa)
            if r is None or (write and r.readonly):
                return None
            off = gpa - r.gpa
            n = min(length, r.size - off)
            out.append(r.view[off : off + n])
            gpa += n
            length -= n
        return None if length else out

    def is_ram(self, gpa: int, length: int = 1) -> bool:
        return self.views(gpa, length) is not None

    # ---- byte access --------------------------------------------------------------------
    def read(self, gpa: int, length: int) -> bytes | None:
        r = self._find(gpa)
        if r is not None and gpa + length <= r.end and length >= 0:
            off = gpa - r.gpa
            return bytes(r.view[off : off + length])
        vs = self.views(gpa, length)
        return None if vs is None else b"".join(bytes(v) for v in vs)

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> bool:
        length = len(data)
        r = self._find(gpa)
        if r is not None and gpa + length <= r.end and not r.readonly:
            off = gpa - r.gpa
            r.view[off : off + length] = data
        else:
            vs = self.views(gpa, length, write=True)
            if vs is None:
                return False
            pos = 0
            for v in vs:
                v[:] = data[pos : pos + len(v)]
                pos += len(v)
        if self.dirty_log is not None and length:
            self.mark_dirty(gpa, length)
        return True

    def mark_dirty(self, gpa: int, length: int) -> None:
        if self.dirty_log is not None and length > 0:
            self.dirty_log.update(range(gpa >> PAGE_SHIFT, ((gpa + length - 1) >> PAGE_SHIFT) + 1))

    def read_int(self, gpa: int, size: int) -> int | None:
        b = self.read(gpa, size)
        return None if b is None else int.from_bytes(b, "little")

    def write_int(self, gpa: int, size: int, value: int) -> bool:
        return self.write(gpa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_u32(self, gpa: int) -> int | None:
        return self.read_int(gpa, 4)

    def write_u32(self, gpa: int, value: int) -> bool:
        return self.write_int(gpa, 4, value)

    def read_u64(self, gpa: int) -> int | None:
        return self.read_int(gpa, 8)
