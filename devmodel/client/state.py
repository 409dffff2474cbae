"""The hypervisor side of the wire contract, sans-IO: what a hypervisor keeps about its device
model (ioreq server, claimed ranges, IRQ levels, link routes, shutdowns) and how it answers
the daemon's dm_ops. The sync and asyncio clients wrap this with a socket.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from devmodel.wire import codec
from devmodel.wire.constants import (
    DAEMON_REGION_BIT,
    FLAG_NO_REPLY,
    IO_RANGE_MEMORY,
    IO_RANGE_PCI,
    IO_RANGE_PORT,
    DmOp,
    MsgType,
)
from devmodel.wire.framing import Message

ERANGE_EXISTS = -17  # -EEXIST
ENOENT = -2
EINVAL = -22


@dataclass
class DmopRecord:
    op: int
    fields: tuple[int, ...]
    buf1: bytes | None
    rc: int


class RangeSet:
    """Inclusive [start, end] ranges, non-overlapping, as Xen keeps them per server."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> int:
        if start > end:
            return EINVAL
        i = bisect.bisect_right(self._starts, start)
        if (i > 0 and self._ends[i - 1] >= start) or (i < len(self._starts) and self._starts[i] <= end):
            return ERANGE_EXISTS
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        return 0

    def remove(self, start: int, end: int) -> int:
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0 or self._starts[i] != start or self._ends[i] != end:
            return ENOENT
        del self._starts[i]
        del self._ends[i]
        return 0

    def contains(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def __iter__(self):
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)


@dataclass
class HypervisorState:
    """Xen's view of one device model's ioreq server."""

    server_created: bool = False
    server_enabled: bool = False
    server_id: int = 0
    bufioreq_mode: int = 0
    ports: RangeSet = field(default_factory=RangeSet)
    mmio: RangeSet = field(default_factory=RangeSet)
    pci: RangeSet = field(default_factory=RangeSet)
    isa_irq: dict[int, int] = field(default_factory=dict)
    pci_intx: dict[tuple[int, int], int] = field(default_factory=dict)
    link_route: dict[int, int] = field(default_factory=dict)
    shutdowns: list[int] = field(default_factory=list)
    dmops: list[DmopRecord] = field(default_factory=list)
    dirty_pages: set[int] = field(default_factory=set)
    errors: list[tuple[int, int, str]] = field(default_factory=list)
    on_isa_irq: Callable[[int, int], None] | None = None
    on_pci_intx: Callable[[int, int, int], None] | None = None
    on_link_route: Callable[[int, int], None] | None = None
    on_shutdown: Callable[[int], None] | None = None
    on_range: Callable[[str, int, int, int], None] | None = None
    # Memory the daemon shares (firmware, VRAM): region_id -> (gpa, size, flags, fd).
    dm_regions: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    mem_types: dict[int, int] = field(default_factory=dict)  # first_pfn -> type of each set_mem_type
    on_mem_add: Callable[[int, int, int, int, int], None] | None = None  # id, gpa, size, flags, fd
    on_mem_del: Callable[[int], None] | None = None  # region id
    on_mem_type: Callable[[int, int, int], None] | None = None  # first_pfn, nr, type
    max_log: int = 100_000

    def _rangeset(self, kind: int) -> RangeSet | None:
        return {IO_RANGE_PORT: self.ports, IO_RANGE_MEMORY: self.mmio, IO_RANGE_PCI: self.pci}.get(kind)

    def handle_dmop(self, msg: Message) -> bytes | None:
        """Apply one DMOP from the daemon; returns the DMOP_REPLY frame (None for NO_REPLY)."""
        try:
            d = codec.decode_dmop(msg.payload)
        except codec.DecodeError as e:
            self.errors.append((msg.tag, e.code, str(e)))
            return codec.frame(MsgType.DMOP_REPLY,
                               codec.encode_dmop_reply(EINVAL, msg.payload.ljust(32, b"\0")),
                               tag=msg.tag)
        rc, out_fields = self._apply(d)
        if len(self.dmops) < self.max_log:
            self.dmops.append(DmopRecord(d.op, d.fields, d.buf1, rc))
        if msg.flags & FLAG_NO_REPLY:
            return None
        union = msg.payload[:32]
        if out_fields is not None:
            union = codec.encode_dmop(d.op, *out_fields)[:32]
        return codec.frame(MsgType.DMOP_REPLY, codec.encode_dmop_reply(rc, union), tag=msg.tag)

    def _apply(self, d: codec.DmopMsg) -> tuple[int, tuple[int, ...] | None]:
        op, f = d.op, d.fields
        if op == DmOp.CREATE_IOREQ_SERVER:
            if f[0] > 2:
                return EINVAL, None
            self.server_created = True
            self.bufioreq_mode = f[0]
            return 0, (f[0], self.server_id)
        if op in (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER):
            _sid, _pad, kind, start, end = f
            rs = self._rangeset(kind)
            if rs is None:
                return EINVAL, None
            if op == DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER:
                rc = rs.add(start, end)
                what = "map"
            else:
                rc = rs.remove(start, end)
                what = "unmap"
            if rc == 0 and self.on_range:
                self.on_range(what, kind, start, end)
            return rc, None
        if op == DmOp.SET_IOREQ_SERVER_STATE:
            self.server_enabled = bool(f[1])
            return 0, None
        if op == DmOp.DESTROY_IOREQ_SERVER:
            self.server_created = self.server_enabled = False
            return 0, None
        if op == DmOp.SET_ISA_IRQ_LEVEL:
            irq, level = f
            if irq > 15 or level > 1:
                return EINVAL, None
            self.isa_irq[irq] = level
            if self.on_isa_irq:
                self.on_isa_irq(irq, level)
            return 0, None
        if op == DmOp.SET_PCI_INTX_LEVEL:
            _dom, _bus, dev, intx, level = f
            if dev > 31 or intx > 3 or level > 1:
                return EINVAL, None
            self.pci_intx[(dev, intx)] = level
            if self.on_pci_intx:
                self.on_pci_intx(dev, intx, level)
            return 0, None
        if op == DmOp.SET_PCI_LINK_ROUTE:
            link, irq = f
            if link > 3 or irq > 15:
                return EINVAL, None
            self.link_route[link] = irq
            if self.on_link_route:
                self.on_link_route(link, irq)
            return 0, None
        if op == DmOp.REMOTE_SHUTDOWN:
            self.shutdowns.append(f[0])
            if self.on_shutdown:
                self.on_shutdown(f[0])
            return 0, None
        if op == DmOp.MODIFIED_MEMORY:
            nr = f[0]
            buf = d.buf1 or b""
            if len(buf) < 16 * nr:
                return EINVAL, None
            for i in range(nr):
                n, _, first = codec.MODIFIED_MEMORY_EXTENT.unpack_from(buf, 16 * i)
                self.dirty_pages.update(range(first, first + min(n, 1 << 20)))
            return 0, None
        if op == DmOp.SET_MEM_TYPE:
            nr, mtype, _pad, first = f
            if mtype not in (0, 1, 2, 4) or nr > 1 << 20:
                return EINVAL, None
            self.mem_types[first] = mtype
            if self.on_mem_type:
                self.on_mem_type(first, nr, mtype)
            return 0, None
        if op == DmOp.NR_VCPUS:
            return 0, (1,)
        return 0, None

    def handle_mem_add(self, msg: Message) -> None:
        """A MEM_ADD from the daemon: memory it owns and the CPU side must map (fd attached)."""
        if len(msg.payload) != codec.MEM_ADD.size or not msg.fds:
            self.errors.append((msg.tag, 0, "malformed MEM_ADD from the daemon"))
            for fd in msg.fds:
                os.close(fd)
            return
        gpa, size, _off, flags, rid = codec.MEM_ADD.unpack(msg.payload)
        if not rid & DAEMON_REGION_BIT:
            self.errors.append((msg.tag, 0, f"MEM_ADD from the daemon for region {rid:#x} "
                                            "(daemon region ids have bit 31 set)"))
            for fd in msg.fds:
                os.close(fd)
            return
        for fd in msg.fds[1:]:
            os.close(fd)
        # The same id again is a move: the old mapping goes, the new one replaces it.
        old = self.dm_regions.pop(rid, None)
        if old is not None:
            os.close(old[3])
        self.dm_regions[rid] = (gpa, size, flags, msg.fds[0])
        if self.on_mem_add:
            self.on_mem_add(rid, gpa, size, flags, msg.fds[0])

    def handle_mem_del(self, msg: Message) -> None:
        """A MEM_DEL from the daemon: unmap a region it shared (docs/protocol.md 4.7). Only
        daemon region ids (bit 31); an unknown id is recorded as an error and ignored."""
        if len(msg.payload) != codec.MEM_DEL.size:
            self.errors.append((msg.tag, 0, "malformed MEM_DEL from the daemon"))
            return
        rid, _ = codec.MEM_DEL.unpack(msg.payload)
        if not rid & DAEMON_REGION_BIT:
            self.errors.append((msg.tag, 0, f"MEM_DEL from the daemon for region {rid:#x} "
                                            "(not a daemon region id)"))
            return
        old = self.dm_regions.pop(rid, None)
        if old is None:
            self.errors.append((msg.tag, 0, f"MEM_DEL of unknown region {rid:#x}"))
            return
        if self.on_mem_del:
            self.on_mem_del(rid)
        os.close(old[3])

    # Xen's routing rules (xen-protocol.md 1.5): the whole access inside one claimed range.
    def claims_port(self, port: int, size: int) -> bool:
        return self.server_enabled and self.ports.contains(port, port + size - 1)

    def claims_mmio(self, gpa: int, size: int) -> bool:
        return self.server_enabled and self.mmio.contains(gpa, gpa + size - 1)

    def claims_pci(self, sbdf: int) -> bool:
        return self.server_enabled and self.pci.contains(sbdf, sbdf)
