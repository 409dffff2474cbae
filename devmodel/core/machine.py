"""The Machine: address spaces, PCI bus, guest memory, IRQ lines, clock, and the one dispatch
path every ioreq takes (design rule 2). No I/O: effects (dm_ops) are queued in `outbox` for
whoever drives the machine (the daemon, a test, a fuzzer) to send before the IORESP.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from devmodel.wire.constants import (
    DAEMON_REGION_BIT,
    IO_RANGE_MEMORY,
    IO_RANGE_PCI,
    IO_RANGE_PORT,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_INVALIDATE,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_TYPE_TIMEOFFSET,
    PAGE_SIZE,
    SHUTDOWN_REBOOT,
    DmOp,
)

from .bus import AddressSpace, Range
from .clock import Clock
from .device import Device, DeviceContext, SharedRegion
from .irq import IrqRouter
from .memory import GuestMemory
from .pci import PciBus, PciDevice

log = logging.getLogger("devmodel.machine")

# Outbox entries that are not dm_ops (docs/protocol.md 4.7): memory the daemon owns, shared
# with the hypervisor while running. Negative, so never a DmOp; buf1 is None.
#   (OUTBOX_MEM_ADD, (region_id, gpa, size, flags, fd), None): a daemon->hypervisor MEM_ADD
#       (fd attached; the same region id again moves the mapping);
#   (OUTBOX_MEM_DEL, (region_id,), None): a daemon->hypervisor MEM_DEL.
# The fd stays the owner's (a machine backend); the daemon sends a copy (SCM_RIGHTS).
OUTBOX_MEM_ADD = -2
OUTBOX_MEM_DEL = -3
# Rounds of work posted by posted work that run_posted follows before it waits for the next
# message (a device re-posting itself forever cannot hold the loop).
MAX_POSTED_ROUNDS = 4

ONES = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF, 0, 0, 0, 0xFFFFFFFFFFFFFFFF)
U64 = 0xFFFFFFFFFFFFFFFF
BIT_PTR = 0x10
BIT_DIR = 0x20
BIT_DF = 0x40


class DeviceFailure(Exception):
    """Raised in strict mode when a device raised while serving an ioreq."""


def _check_region_id(rid: int) -> None:
    if not rid & DAEMON_REGION_BIT or rid > 0xFFFFFFFF:
        raise ValueError(f"region id {rid:#x}: daemon region ids have bit 31 set")


class Machine:
    def __init__(self, memory: GuestMemory | None = None, clock: Clock | None = None,
                 *, strict: bool = False) -> None:
        self.memory = memory if memory is not None else GuestMemory()
        self.clock = clock if clock is not None else Clock()
        self.strict = strict
        self.counters: Counter[str] = Counter()
        self.pio = AddressSpace("pio", 0x10000, IO_RANGE_PORT, self._misbehaviour)
        self.mmio = AddressSpace("mmio", 1 << 64, IO_RANGE_MEMORY, self._misbehaviour)
        self.pci = PciBus(self.pio, self.mmio, self._misbehaviour)
        # Effects: (op, fields, buf1) dm_ops to send, in order, before the current IORESP, and
        # the MEM_ADD/MEM_DEL entries of share_region/unshare_region (OUTBOX_MEM_*).
        self.outbox: list[tuple[int, tuple[int, ...], bytes | None]] = []
        self.irqs = IrqRouter(self.emit_dmop)
        # Work a device posts from a register write, to run once the write is answered (a
        # doorbell's ring walk: a memory write is posted on PCI). None: it runs at once, inside
        # the write (tests, replay, fuzzing). The daemon sets a list and runs the entries
        # (run_posted) right after sending the IORESP and before the next message, so every
        # later ioreq, from any vCPU, sees their effects.
        self.posted: list[tuple[Device, Callable[[], None]]] | None = None
        self.devices: list[Device] = []
        # I/O-side objects the machine's devices depend on (disk files, shared memory); the
        # daemon flushes and closes them at exit. Devices never call them for I/O setup.
        self.backends: list[Any] = []
        # Set-up steps that need the daemon's event loop (a serial backend's pump): called as
        # hook(loop, flush_effects) once the hypervisor is connected; each returns a closeable.
        self.io_hooks: list[Callable[[Any, Callable[[], None]], Any]] = []
        self.server_id = 0
        self.announcing = False  # once the hypervisor knows our ranges, changes are reported
        self.rtc_offset = 0  # accumulated TIMEOFFSET seconds
        self.timeoffset_listeners: list[Callable[[int], None]] = []
        # Unplug (design rule 12): `resources` maps a device (or an IDE drive) to the backends
        # and closeables only it uses, released when it is unplugged; `unplug_listeners` hear
        # (device_id, kind) for each device or drive removed (QMP: DEVICE_DELETED).
        self.resources: dict[object, list[Any]] = {}
        self.unplug_listeners: list[Callable[[str, str], None]] = []
        self._pending_shutdown: int | None = None
        self._port_map = self.pio.port_map
        assert self._port_map is not None
        for space in (self.pio, self.mmio):
            space.listeners.append(self._range_changed)
        self.ctx = DeviceContext(self.memory, self.irqs, self.clock, self)

    # ---- building -----------------------------------------------------------------------
    def add(self, dev: Device, slot: int | None = None, fn: int = 0) -> Device:
        self.devices.append(dev)
        dev.attach(self.ctx)
        if isinstance(dev, PciDevice):
            if slot is None:
                raise ValueError(f"{dev.name}: a PCI device needs a slot")
            self.pci.add(dev, slot, fn)
            pin = dev.config[0x3D]
            if pin:
                dev.irq_line = self.irqs.intx(slot, pin - 1, dev.name)
            if self.announcing:
                self.emit_dmop(DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER,
                               (self.server_id, 0, IO_RANGE_PCI, dev.devfn, dev.devfn))
        for r in dev.pio_ranges():
            self.pio.add(r)
        for r in dev.mmio_ranges():
            self.mmio.add(r)
        dev.reset()
        return dev

    def own(self, owner: object, resource: Any) -> Any:
        """Record that `resource` (a backend, a pump: anything with close(), optionally flush()
        and drain()) serves only `owner`; unplugging the owner releases it. Returns it."""
        self.resources.setdefault(owner, []).append(resource)
        return resource

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    # ---- effects ------------------------------------------------------------------------
    def emit_dmop(self, op: int, fields: tuple[int, ...], buf1: bytes | None = None) -> None:
        self.outbox.append((op, fields, buf1))

    def attach_completions(self, backend: Any) -> None:
        """An asynchronous disk (one with io_hook) delivers its completions on the daemon's
        loop once the hypervisor is connected; before that, and without a daemon, they run
        inline. With a virtual clock the machine is in its deterministic mode (tests,
        fuzzing, replay, the simulator): they stay inline, so the guest sees the same number
        of busy polls on every run."""
        hook = getattr(backend, "io_hook", None)
        if hook is not None and not self.clock.virtual:
            self.io_hooks.append(hook())

    def post(self, dev: Device, fn: Callable[[], None]) -> None:
        """Run fn for `dev` after the current ioreq is answered (see `posted`), or now."""
        if self.posted is None:
            fn()
        else:
            self.posted.append((dev, fn))

    def run_posted(self) -> None:
        """Run the posted work, each entry contained as an ioreq is: a device that raises is
        logged and marked failed (strict mode: DeviceFailure). Work that posts more work is
        followed, for at most MAX_POSTED_ROUNDS rounds; what is left then waits for the next
        message (counted)."""
        for _ in range(MAX_POSTED_ROUNDS):
            work = self.posted
            if not work:
                break
            self.posted = []
            for dev, fn in work:
                if dev.failed:
                    continue
                try:
                    fn()
                except Exception as exc:
                    if self.strict:
                        raise DeviceFailure(f"device {dev.name} raised in posted work") from exc
                    self.counters["device_failure"] += 1
                    log.error("device %s raised in work posted by a register write; it is "
                              "marked failed", dev.name, exc_info=exc)
                    self._fail(dev)
        else:
            if self.posted:
                self.counters["posted_deferred"] += 1
        if self._pending_shutdown is not None:
            self._finish_shutdown()

    def share_region(self, region: SharedRegion) -> None:
        """Map memory the daemon owns into the guest: a daemon->hypervisor MEM_ADD, sent in
        order with the dm_ops, before the current IORESP. The same region id again moves it."""
        rid = region.region_id
        _check_region_id(rid)
        if region.gpa % PAGE_SIZE or region.size % PAGE_SIZE or not region.size:
            raise ValueError(f"region {rid:#x} at {region.gpa:#x}+{region.size:#x}: not page aligned")
        self.outbox.append((OUTBOX_MEM_ADD, (rid, region.gpa, region.size, region.flags,
                                             region.fd), None))
        self.counters["share_region"] += 1

    def unshare_region(self, region_id: int) -> None:
        """Unmap a region share_region mapped: a daemon->hypervisor MEM_DEL, in order."""
        _check_region_id(region_id)
        self.outbox.append((OUTBOX_MEM_DEL, (region_id,), None))
        self.counters["unshare_region"] += 1

    def _range_changed(self, space: AddressSpace, what: str, r: Range) -> None:
        if self.announcing:
            op = (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER if what == "add"
                  else DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER)
            self.emit_dmop(op, (self.server_id, 0, space.range_type, r.start, r.end))

    def claimed(self) -> list[tuple[int, int, int]]:
        """Everything to register with the ioreq server: (type, start, end) inclusive."""
        out = [(IO_RANGE_PORT, r.start, r.end) for r in self.pio]
        out += [(IO_RANGE_MEMORY, r.start, r.end) for r in self.mmio]
        out += [(IO_RANGE_PCI, devfn, devfn) for devfn in sorted(self.pci.devices)]
        return out

    def start_announcing(self) -> None:
        """From now on range changes are reported; devices push what the hypervisor mirrors."""
        self.announcing = True
        for dev in self.devices:
            dev.announced()

    def request_shutdown(self, reason: int) -> None:
        """A device asks for poweroff/reboot; done after the current ioreq, before its IORESP."""
        if self._pending_shutdown is None:
            self._pending_shutdown = reason

    def _finish_shutdown(self) -> None:
        reason = self._pending_shutdown
        self._pending_shutdown = None
        if reason == SHUTDOWN_REBOOT:
            self.reset()
        self.emit_dmop(DmOp.REMOTE_SHUTDOWN, (reason,))

    def reset(self) -> None:
        """System reset: every device to its power-on state, BARs unmapped (QEMU on Xen resets
        its devices before calling remote_shutdown(reboot), xen-protocol.md 4.2 step 7)."""
        for dev in self.devices:
            try:
                dev.reset()
            except Exception:
                self._contain_reset(dev)
        for dev in self.pci.devices.values():
            self.pci.update_mappings(dev)
        self.counters["reset"] += 1

    def _contain_reset(self, dev: Device) -> None:
        if self.strict:
            raise
        log.exception("device %s failed during reset", dev.name)
        dev.failed = True

    def _misbehaviour(self, what: str) -> None:
        self.counters["guest_error"] += 1
        if self.counters["guest_error"] <= 20 or self.counters["guest_error"] % 1000 == 0:
            log.info("guest error: %s", what)

    # ---- the dispatch path --------------------------------------------------------------
    def handle_ioreq(self, type_: int, addr: int, data: int, count: int, size: int, bits: int) -> int:
        """Serve one ioreq and return the `data` field of its response. Never raises outside
        strict mode: a failing device is contained and the ioreq still answered."""
        try:
            if type_ == IOREQ_TYPE_PIO and count == 1 and not bits & BIT_PTR:
                r = self._port_map.get(addr)
                # start + length, not the `end` property: a property call costs ~100 ns here
                if r is not None and size in r.sizes and addr + size <= r.start + r.length:
                    if bits & BIT_DIR:
                        data = r.read(addr - r.start, size)
                    else:
                        r.write(addr - r.start, size, data & ONES[size])
                elif bits & BIT_DIR:
                    data = self.pio.read(addr, size) if size in (1, 2, 4) else self._bad_size(size)
                elif size in (1, 2, 4):
                    self.pio.write(addr, size, data & ONES[size])
                else:
                    self._bad_size(size)
            else:
                data = self._slow_path(type_, addr, data, count, size, bits)
        except Exception as exc:
            data = self._contain(exc, type_, addr, data, count, size, bits)
        if self._pending_shutdown is not None:
            self._finish_shutdown()
        return data

    def _bad_size(self, size: int) -> int:
        self._misbehaviour(f"ioreq size {size}")
        return U64

    def _slow_path(self, type_: int, addr: int, data: int, count: int, size: int, bits: int) -> int:
        if type_ == IOREQ_TYPE_PIO:
            if size not in (1, 2, 4):
                self._bad_size(size)  # writes of a bad size are counted too (design rule 6)
                return U64 if bits & BIT_DIR else data
            return self._rep(self.pio, addr, data, count, size, bits, moving=False)
        if type_ == IOREQ_TYPE_COPY:
            if size not in (1, 2, 4, 8):
                self._bad_size(size)  # writes of a bad size are counted too (design rule 6)
                return U64 if bits & BIT_DIR else data
            return self._rep(self.mmio, addr, data, count, size, bits, moving=True)
        if type_ == IOREQ_TYPE_PCI_CONFIG:
            return self._pci_config(addr, data, size, bits)
        if type_ == IOREQ_TYPE_TIMEOFFSET:
            delta = data - (1 << 64) if data >> 63 else data
            self.rtc_offset += delta
            for fn in self.timeoffset_listeners:
                fn(delta)
            return data
        if type_ == IOREQ_TYPE_INVALIDATE:
            self.memory.invalidate()
            self.counters["invalidate"] += 1
            return data
        self._misbehaviour(f"unknown ioreq type {type_}")
        return U64 if bits & BIT_DIR else data

    def _rep(self, space: AddressSpace, addr: int, data: int, count: int, size: int,
             bits: int, moving: bool) -> int:
        """count repetitions, optionally through guest RAM (xen-protocol.md 1.4)."""
        read = bits & BIT_DIR
        # Xen never sends more than fits one page; a larger count is a broken or hostile
        # peer, served up to the page bound (design rule 5) and counted.
        limit = PAGE_SIZE // size
        if count > limit:
            self._misbehaviour(f"ioreq count {count} > {limit}")
            count = limit
        step = -size if bits & BIT_DF else size
        mask = ONES[size]
        # The device range is looked up once per request, not once per element: when every
        # element's address falls in one range that takes this size (what space.read/write
        # would check element by element), the elements go straight to its read/write with
        # the same offsets, in the same order (a VGA `rep stos` is 16384 elements).
        r = None
        if moving and count > 0:
            lo = addr if step > 0 else addr + (count - 1) * step
            hi = addr + (count - 1) * step if step > 0 else addr
            if lo >= 0 and hi <= U64:
                r = space.find(lo)
                if r is not None and (size not in r.sizes or lo < r.start
                                      or hi + size > r.start + r.length):
                    r = None
        if not bits & BIT_PTR:
            if r is not None:
                off = addr - r.start
                if read:
                    rd = r.read
                    val = mask
                    for i in range(count):
                        val = rd(off + i * step, size)
                    return val & mask
                v = data & mask
                if step > 0 and r.write_fill is not None:
                    r.write_fill(off, size, count, v)
                    return data
                wr = r.write
                for i in range(count):
                    wr(off + i * step, size, v)
                return data
            if read:
                val = mask
                for i in range(count):
                    val = space.read((addr + i * step) & U64 if moving else addr, size)
                return val & mask
            for i in range(count):
                space.write((addr + i * step) & U64 if moving else addr, size, data & mask)
            return data
        mem = self.memory
        if not moving and step > 0 and self._rep_block(space, addr, data, count, size, read):
            return data
        if (moving and step > 0 and not read and r is not None and r.write_rep is not None
                and self._copy_block(r, addr - r.start, data, count, size)):
            return data
        # One range found above: its offsets, never wrapping; else the space, per element.
        if r is not None:
            base, rd, wr = addr - r.start, r.read, r.write
        else:
            base, rd, wr = addr, space.read, space.write
        dstep = step if moving else 0
        for i in range(count):
            ram = (data + i * step) & U64
            dev = (base + i * dstep) & U64
            if read:
                if not mem.write_int(ram, size, rd(dev, size)):
                    self._misbehaviour(f"data_is_ptr buffer {ram:#x} is not guest RAM")
                    break
            else:
                v = mem.read_int(ram, size)
                if v is None:
                    self._misbehaviour(f"data_is_ptr buffer {ram:#x} is not guest RAM")
                    break
                wr(dev, size, v)
        return data

    def _rep_block(self, space: AddressSpace, addr: int, data: int, count: int, size: int,
                   read: int) -> bool:
        """`rep ins/outs` to a port whose range offers whole-string hooks (the IDE data
        port): one call and one copy instead of `count` dispatches. False: take the
        element-by-element path (no hook, or the buffer is not all guest RAM)."""
        r = space.find(addr)
        if r is None or size not in r.sizes or addr + size > r.start + r.length:
            return False
        hook = r.read_rep if read else r.write_rep
        if hook is None:
            return False
        nbytes = count * size
        views = self.memory.views(data, nbytes, write=bool(read))
        if views is None:
            return False
        off = addr - r.start
        if read:
            blob = r.read_rep(off, size, count)
            pos = 0
            for v in views:
                v[:] = blob[pos : pos + len(v)]
                pos += len(v)
            self.memory.mark_dirty(data, nbytes)
        else:
            r.write_rep(off, size, views[0] if len(views) == 1 else b"".join(views))
        return True

    def _copy_block(self, r: Range, off: int, data: int, count: int, size: int) -> bool:
        """A forward REP MOVS from guest RAM into one MMIO range that takes whole blocks
        (write_rep: the VGA window): one call with the bytes. False: not all guest RAM,
        element by element instead (it counts the bad buffer)."""
        views = self.memory.views(data, count * size, write=False)
        if views is None:
            return False
        r.write_rep(off, size, views[0] if len(views) == 1 else b"".join(views))  # type: ignore[misc]
        return True

    def _pci_config(self, addr: int, data: int, size: int, bits: int) -> int:
        sbdf = addr >> 32
        reg = addr & 0xFFFFFFFF
        read = bits & BIT_DIR
        if size not in (1, 2, 4) or sbdf > 0xFF:  # segment 0, bus 0 only
            self._misbehaviour(f"PCI_CONFIG sbdf {sbdf:#x} size {size}")
            return ONES[size] if read and size in (1, 2, 4) else (U64 if read else data)
        ptr = bits & BIT_PTR
        if read:
            v = self.pci.config_read(sbdf, reg, size)
            if ptr:
                if not self.memory.write_int(data, size, v):
                    self._misbehaviour("PCI_CONFIG pointer outside RAM")
                return data
            return v
        v = data
        if ptr:
            v = self.memory.read_int(data, size)
            if v is None:
                self._misbehaviour("PCI_CONFIG pointer outside RAM")
                return data
        self.pci.config_write(sbdf, reg, size, v & ONES[size])
        return data

    def _owner_of(self, type_: int, addr: int) -> Device | None:
        if type_ == IOREQ_TYPE_PIO:
            r = self.pio.find(addr)
        elif type_ == IOREQ_TYPE_COPY:
            r = self.mmio.find(addr)
        elif type_ == IOREQ_TYPE_PCI_CONFIG:
            return self.pci.get(addr >> 32)
        else:
            return None
        return r.owner if r is not None and isinstance(r.owner, Device) else None

    def _contain(self, exc: Exception, type_: int, addr: int, data: int, count: int,
                 size: int, bits: int) -> int:
        dev = self._owner_of(type_, addr)
        name = dev.name if dev is not None else "?"
        if self.strict:
            raise DeviceFailure(
                f"device {name} raised on ioreq type={type_} addr={addr:#x} size={size}"
            ) from exc
        self.counters["device_failure"] += 1
        log.error("device %s raised serving ioreq type=%d addr=%#x data=%#x count=%d size=%d "
                  "bits=%#x; the ioreq is answered and the device marked failed",
                  name, type_, addr, data, count, size, bits, exc_info=exc)
        if dev is not None and not dev.failed:
            self._fail(dev)
        if bits & BIT_DIR and not bits & BIT_PTR:
            # all-ones of the access size, zero-extended, like any unhandled read (1.4)
            return ONES[size] if size in (1, 2, 4, 8) else U64
        return data

    def _fail(self, dev: Device) -> None:
        """A failed device stops being called: its ranges read all-ones and drop writes, and
        their whole-string and block hooks are gone (the rep paths then take the dead
        read/write element by element)."""
        dev.failed = True
        for space in (self.pio, self.mmio):
            for r in space:
                if r.owner is dev:
                    r.read = _dead_read
                    r.write = _dead_write
                    r.read_rep = r.write_rep = r.write_fill = None

    def handle_buffered(self, type_: int, addr: int, size: int, data: int) -> None:
        """A posted write from a BUFIOREQ batch: a plain count-1 write (xen-protocol.md 2.2).
        MMIO slots (the VGA window: whole frames of them) go straight to the bus, with the
        containment and shutdown handling of handle_ioreq; bench/vga.py: about 1.5x the
        stores per second of the generic path. Everything else takes handle_ioreq."""
        if type_ != IOREQ_TYPE_COPY or size not in (1, 2, 4, 8):
            self.handle_ioreq(type_, addr, data, 1, size, 0x01)
            return
        try:
            self.mmio.write(addr, size, data & ONES[size])
        except Exception as exc:
            self._contain(exc, type_, addr, data, 1, size, 0x01)
        if self._pending_shutdown is not None:
            self._finish_shutdown()

    def handle_buffered_batch(self, slots: Sequence[Any]) -> None:
        """A BUFIOREQ batch (slots with .type/.addr/.size/.data), in slot order. A run of
        single-byte port writes to one port whose range takes whole strings (write_rep: the
        debug consoles, where SeaBIOS prints its log a byte per OUT) is one write_rep call,
        as the REP OUTSB it amounts to would be; every other slot is handle_buffered."""
        i, n = 0, len(slots)
        while i < n:
            b = slots[i]
            if b.type == IOREQ_TYPE_PIO and b.size == 1:
                port = b.addr
                j = i + 1
                while (j < n and slots[j].addr == port and slots[j].size == 1
                       and slots[j].type == IOREQ_TYPE_PIO):
                    j += 1
                r = self._port_map.get(port) if j - i > 1 else None
                if r is not None and r.write_rep is not None and 1 in r.sizes:
                    try:
                        r.write_rep(port - r.start, 1, bytes(s.data & 0xFF for s in slots[i:j]))
                    except Exception as exc:
                        self._contain(exc, IOREQ_TYPE_PIO, port, b.data, j - i, 1, 0x01)
                    if self._pending_shutdown is not None:
                        self._finish_shutdown()
                    i = j
                    continue
            self.handle_buffered(b.type, b.addr, b.size, b.data)
            i += 1

    def close_backends(self) -> None:
        """Drain, flush and close every backend (SIGTERM, disconnect): requests in flight
        finish first (drain), then every completed write, acknowledged or not, is made
        durable (flush: fdatasync), so acknowledged writes persist."""
        for b in reversed(list(self.backends)):  # release_backend removes b from the list
            self.release_backend(b, "exit")
        self.backends.clear()

    # ---- unplug (design rule 12) ----------------------------------------------------------
    def release_backend(self, b: Any, when: str = "unplug") -> None:
        """Finish with one backend now: in-flight requests complete (drain), completed writes
        become durable (flush: fdatasync for a file), then close. It leaves `backends`, so
        nothing reaches the image or the tap through us afterwards. Never raises; a backend
        that fails to flush is still closed. An I/O error (a dead NBD server, a full disk) is
        the backend's state, logged in one line; anything else is a bug, logged with its
        traceback."""
        for step in ("drain", "flush", "close"):
            fn = getattr(b, step, None)
            if fn is None:
                continue
            try:
                fn()
            except OSError as e:
                log.error("%s of %r at %s failed: %s", step, b, when, e)
            except Exception:
                log.exception("%s of %r at %s failed", step, b, when)
        self.backends[:] = [x for x in self.backends if x is not b]

    def release_resources(self, owner: object) -> None:
        """Release what `own()` recorded for `owner`, last registered first (a pump before
        the backend it pumps)."""
        for r in reversed(self.resources.pop(owner, [])):
            self.release_backend(r)

    def stats(self) -> dict[str, int]:
        """The machine's counters plus the accesses nothing served: ports and MMIO no range
        claims, config space of absent PCI functions (after a Xen unplug, what a stale ioreq
        for a removed device becomes). The daemon logs them at exit."""
        out = dict(self.counters)
        out.update(unclaimed_pio=self.pio.unclaimed, unclaimed_mmio=self.mmio.unclaimed,
                   absent_pci=self.pci.absent)
        return out

    def notify_unplugged(self, device_id: str, kind: str) -> None:
        log.info("unplugged %s %s", kind, device_id)
        self.counters["unplugged"] += 1
        for fn in list(self.unplug_listeners):
            try:
                fn(device_id, kind)
            except Exception:
                log.exception("unplug listener failed")

    def unplug(self, dev: Device, kind: str = "device", device_id: str | None = None) -> bool:
        """Remove a device from the running machine. Its resources are released first (no
        more frames from the tap, writes flushed), its IRQ lowered, every range it decodes
        unmapped (UNMAP_IO_RANGE dm_ops through the address-space listeners), its PCI function
        gone from config space (reads all-ones; unmap_pcidev as QEMU's device listener does),
        its armed timers cancelled. False if it is not (or no longer) in the machine."""
        if not any(d is dev for d in self.devices):
            return False
        self.release_resources(dev)
        if isinstance(dev, PciDevice):
            if dev.irq_line is not None:
                dev.irq_line.lower()
                dev.irq_line = None
            devfn = dev.devfn
            self.pci.remove(dev)
            if self.announcing:
                self.emit_dmop(DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER,
                               (self.server_id, 0, IO_RANGE_PCI, devfn, devfn))
        for space in (self.pio, self.mmio):
            for r in space:
                if r.owner is dev:
                    space.remove(r)
        self.clock.cancel_where(lambda t: getattr(t.callback, "__self__", None) is dev)
        self.devices[:] = [d for d in self.devices if d is not dev]
        self.notify_unplugged(device_id or dev.name, kind)
        return True

    # ---- snapshot -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "rtc_offset": self.rtc_offset,
            "devices": {d.name: d.snapshot() for d in self.devices},
        }

    def restore(self, snap: dict[str, Any]) -> None:
        devs = snap.get("devices", {})
        for d in self.devices:
            if d.name in devs:
                d.restore(devs[d.name])
        self.rtc_offset = snap.get("rtc_offset", 0)
        for dev in self.pci.devices.values():
            self.pci.update_mappings(dev)


def _dead_read(off: int, size: int) -> int:
    return ONES[size] if size < len(ONES) else U64


def _dead_write(off: int, size: int, value: int) -> None:
    return None
