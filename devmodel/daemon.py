"""The daemon: the only place with sockets, fds, timers and signals (design.md).

One hypervisor connection on a Unix stream socket. Reading uses `recvmsg` from a reader
callback (asyncio streams cannot receive fds); everything decoded from one read is served in
order and the answers leave in one `send`. The ioreq hot path is inlined here: one
`struct.unpack_from` of header and ioreq, the machine's dispatch, one `pack`.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from devmodel import lockdown
from devmodel.core.machine import OUTBOX_MEM_ADD, OUTBOX_MEM_DEL, Machine
from devmodel.trace import TraceWriter
from devmodel.wire import codec
from devmodel.wire.codec import (
    HEADER,
    HEADER_IOREQ,
    DecodeError,
    decode_bufioreq,
    encode_dmop,
    encode_error,
)
from devmodel.wire.constants import (
    DAEMON_REGION_BIT,
    FEATURE_BUFIOREQ,
    FEATURE_MEMFD_RAM,
    FEATURE_PCI_CONFIG,
    FLAG_HAS_FDS,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    HVM_IOREQSRV_BUFIOREQ_ATOMIC,
    KNOWN_FLAGS,
    MAX_PAYLOAD,
    MAX_VCPUS,
    MEM_KNOWN_FLAGS,
    NO_REPLY_DMOPS,
    PAGE_SIZE,
    PROTOCOL_VERSION,
    DmOp,
    ErrorCode,
    MsgType,
)
from devmodel.wire.framing import received_fds

log = logging.getLogger("devmodel.daemon")

SUPPORTED_FEATURES = FEATURE_BUFIOREQ | FEATURE_MEMFD_RAM | FEATURE_PCI_CONFIG
# Bytes asked of each recvmsg. Keep it under glibc's 128 KiB mmap threshold: recvmsg allocates
# a bytes object of this size per call, and at 256 KiB that is an mmap/munmap pair costing
# ~15 us per read, more than the whole ioreq round trip (bench/ioreq.py).
RECV_SIZE = 1 << 16
# Pause reading while this much output is queued: the peer is not reading its answers.
MAX_OUTPUT_BACKLOG = 16 << 20
_FD_CMSG = socket.CMSG_SPACE(16 * array.array("i").itemsize)
# A plain int: `int & socket.MSG_CTRUNC` goes through enum.IntFlag and costs ~0.65 us per read.
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_IORESP_HDR = (MsgType.IORESP, 0, 32)
_U64 = 0xFFFFFFFFFFFFFFFF
# The message types as plain ints, for _dispatch: one set lookup instead of a scan of
# MsgType.__members__, and the CLOCK that precedes nearly every synchronous ioreq of a
# virtual-clock run tested first.
_MSG_TYPES = frozenset(int(m) for m in MsgType)
_MSG_CLOCK = int(MsgType.CLOCK)
_DMOP_REPLY_RC = struct.Struct("<i")
# modified_memory reports (dirty logging for live migration): extents per dm_op, and pages per
# extent (Xen's extent count is 32-bit; a bound keeps one report small).
MAX_DIRTY_EXTENTS = 256
MAX_EXTENT_PAGES = 1 << 20


@dataclass
class DaemonConfig:
    domid: int = 0
    virtual_clock: bool = False
    trace_path: str | int | None = None  # a path, or an fd open for writing (--runas)
    # uids whose connections (hypervisor and QMP sockets) are served; None: lockdown's default
    # (the daemon's own uid at start-up, and root). See docs/security.md.
    allow_uids: frozenset[int] | None = None
    extra: dict = field(default_factory=dict)


class Connection:
    """Serves one hypervisor. Created by `Daemon` for an accepted (or inherited) socket."""

    def __init__(self, sock: socket.socket, machine: Machine, config: DaemonConfig,
                 loop: asyncio.AbstractEventLoop, on_close: Callable[[str], None]) -> None:
        self.sock = sock
        self.machine = machine
        self.config = config
        self.loop = loop
        self._on_close = on_close
        self._buf = bytearray()
        self._fds: list[int] = []
        self._out = bytearray()
        self._writing = False
        self._reading = False
        self._closed = False
        self._hello = False
        self._next_tag = 1
        self._pending: dict[int, tuple[int, Callable[[int, bytes], None] | None]] = {}
        self._timer_handle: asyncio.TimerHandle | None = None
        self.trace = TraceWriter(config.trace_path) if config.trace_path else None
        self.server_enabled = False
        self.server_created = False
        # Set by the Controller: the server is enabled only while this says so (QEMU's
        # run-state handler), and guest poweroff/reboot requests are reported to it.
        self.run_gate: Callable[[], bool] | None = None
        self.on_remote_shutdown: Callable[[int], None] | None = None
        self.nr_vcpus = 0
        machine.posted = []  # posted register writes: see _run_posted
        sock.setblocking(False)
        self._resume_reading()

    # ---- socket plumbing ----------------------------------------------------------------
    def _resume_reading(self) -> None:
        if not self._reading and not self._closed:
            self._reading = True
            self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.sock.fileno())

    def _on_readable(self) -> None:
        try:
            data, anc, msg_flags, _ = self.sock.recvmsg(RECV_SIZE, _FD_CMSG)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"read error: {e}")
            return
        if anc:
            self._fds.extend(received_fds(anc))
        if msg_flags & _MSG_CTRUNC:
            log.warning("ancillary data truncated: a peer sent more fds than one message carries")
        if not data:
            self.close("hypervisor disconnected")
            return
        self._buf += data
        try:
            self._process()
        finally:
            if self.machine.memory.dirty_log:
                self.report_dirty()
            self._flush()
            self._schedule_timer()

    def _send(self, data: bytes) -> None:
        self._out += data

    def _flush(self) -> None:
        if self._closed or not self._out or self._writing:
            return
        try:
            n = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self.close(f"write error: {e}")
            return
        del self._out[:n]
        if self._out:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._on_writable)
            if len(self._out) > MAX_OUTPUT_BACKLOG:
                self._pause_reading()

    def _on_writable(self) -> None:
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())
        self._flush()
        if not self._writing:
            self._resume_reading()

    # ---- message processing -------------------------------------------------------------
    def _process(self) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        machine = self.machine
        handle = machine.handle_ioreq
        out = self._out
        trace = self.trace
        unpack_io = HEADER_IOREQ.unpack_from
        pack_io = HEADER_IOREQ.pack
        try:
            while n - pos >= HEADER_SIZE:
                if n - pos >= 48:
                    (mtype, flags, length, tag, chan, addr, data, count, size, eport, pad0,
                     bits, typ) = unpack_io(buf, pos)
                    if (mtype == 4 and length == 32 and flags == 0 and self.server_enabled
                            and bits & 0xF == 1 and size in (1, 2, 4, 8) and typ in (0, 1, 2)
                            and chan < self.nr_vcpus):
                        if trace:
                            trace.record(0, bytes(buf[pos : pos + 48]))
                        pos += 48
                        data = handle(typ, addr, data, count, size, bits) & _U64
                        if machine.outbox:
                            self._drain_outbox()
                        resp = pack_io(5, 0, 32, tag, chan, addr, data, count, size, eport, pad0,
                                       (bits & 0xF0) | 3, typ)
                        out += resp
                        if trace:
                            trace.record(1, resp)
                        if machine.posted:
                            self._run_posted()
                            if self._closed:
                                return
                        continue
                mtype, flags, length, tag, chan = HEADER.unpack_from(buf, pos)
                if length > MAX_PAYLOAD or flags & ~KNOWN_FLAGS:
                    # The length cannot be trusted, so the stream cannot be resynchronised.
                    self._error(ErrorCode.BAD_HEADER, tag, chan,
                                f"bad header: payload_len {length}, flags {flags:#x}")
                    self._flush()  # the ERROR must leave before the close (close drops _out)
                    self.close("unrecoverable framing error")
                    return
                end = pos + HEADER_SIZE + length
                if end > n:
                    break
                payload = bytes(buf[pos + HEADER_SIZE : end])
                if trace:
                    trace.record(0, bytes(buf[pos:end]))
                pos = end
                fd = None
                if flags & FLAG_HAS_FDS and self._fds:
                    fd = self._fds.pop(0)
                try:
                    self._dispatch(mtype, flags, tag, chan, payload, fd)
                except DecodeError as e:
                    self._error(e.code, tag, chan, str(e))
                except Exception as e:  # a bug of ours: answer, log, keep serving
                    log.exception("internal error on message type %d", mtype)
                    self._error(ErrorCode.INTERNAL, tag, chan, f"internal error: {e}")
                finally:
                    if fd is not None and fd >= 0:
                        # fds a handler did not take ownership of (it sets -1) are closed.
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                if self._closed:
                    return
                if machine.posted:
                    self._run_posted()
        finally:
            if pos:
                del buf[:pos]

    def _run_posted(self) -> None:
        """Work devices posted from the ioreq just answered (an e1000 TDT doorbell's ring
        walk, Machine.post): the answer leaves first, so the vCPU runs on during the walk as
        after a posted PCI write, and nothing else is served before the work is done, so every
        later message (an ICR read) sees its effects. Its dm_ops follow the answer."""
        self._flush()
        self.machine.run_posted()
        if self.machine.outbox:
            self._drain_outbox()

    def _error(self, code: int, tag: int, chan: int, text: str) -> None:
        log.warning("answering ERROR %d to tag %d: %s", code, tag, text)
        msg = codec.frame(MsgType.ERROR, encode_error(code, text), tag=tag, chan=chan)
        self._out += msg
        if self.trace:
            self.trace.record(1, msg)

    def _emit(self, mtype: int, payload: bytes, tag: int = 0, chan: int = 0, flags: int = 0) -> None:
        msg = codec.frame(mtype, payload, tag=tag, chan=chan, flags=flags)
        self._out += msg
        if self.trace:
            self.trace.record(1, msg)

    def _dispatch(self, mtype: int, flags: int, tag: int, chan: int, payload: bytes,
                  fd: int | None) -> None:
        if mtype == MsgType.HELLO:
            self._on_hello(tag, chan, payload)
            return
        if mtype not in _MSG_TYPES:
            raise DecodeError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype}")
        if not self._hello:
            raise DecodeError(ErrorCode.BAD_STATE, f"{MsgType(mtype).name} before HELLO")
        if mtype == _MSG_CLOCK:
            if len(payload) != codec.CLOCK.size:
                raise DecodeError(ErrorCode.BAD_LENGTH, f"CLOCK payload {len(payload)} != 8")
            clock = self.machine.clock
            if not clock.virtual:
                raise DecodeError(ErrorCode.BAD_STATE, "CLOCK needs --clock virtual")
            (now,) = codec.CLOCK.unpack(payload)
            clock.set_virtual(now)
            clock.run_due(clock.now())
            if self.machine.outbox:
                self._drain_outbox()
        elif mtype == MsgType.IOREQ:
            self._on_ioreq(tag, chan, payload, flags)
        elif mtype == MsgType.BUFIOREQ:
            self.machine.handle_buffered_batch(decode_bufioreq(payload))
            if self.machine.outbox:
                self._drain_outbox()
        elif mtype == MsgType.MEM_ADD:
            self._on_mem_add(payload, flags, fd)
        elif mtype == MsgType.MEM_DEL:
            if len(payload) != codec.MEM_DEL.size:
                raise DecodeError(ErrorCode.BAD_LENGTH, f"MEM_DEL payload {len(payload)} != 8")
            rid, _ = codec.MEM_DEL.unpack(payload)
            try:
                self.machine.memory.remove(rid)
            except ValueError as e:
                raise DecodeError(ErrorCode.BAD_FIELD, str(e)) from None
        elif mtype == MsgType.DMOP_REPLY:
            self._on_dmop_reply(tag, payload)
        elif mtype == MsgType.ERROR:
            code, text = codec.decode_error(payload) if len(payload) >= 8 else (0, "")
            log.warning("hypervisor reported error %d for tag %d: %s", code, tag, text)
        else:
            raise DecodeError(ErrorCode.BAD_STATE,
                              f"{MsgType(mtype).name} is not sent to the device model")

    def _on_hello(self, tag: int, chan: int, payload: bytes) -> None:
        if self._hello:
            raise DecodeError(ErrorCode.BAD_STATE, "second HELLO")
        if len(payload) != codec.HELLO.size:
            raise DecodeError(ErrorCode.BAD_LENGTH, f"HELLO payload {len(payload)} != 24")
        version, page_size, nr_vcpus, features, _domid, _ = codec.HELLO.unpack(payload)
        if version != PROTOCOL_VERSION:
            raise DecodeError(ErrorCode.BAD_FIELD, f"protocol version {version} unsupported "
                                                   f"(this daemon speaks {PROTOCOL_VERSION})")
        if page_size != PAGE_SIZE:
            raise DecodeError(ErrorCode.BAD_FIELD, f"page_size {page_size} != {PAGE_SIZE}")
        if not 1 <= nr_vcpus <= MAX_VCPUS:
            raise DecodeError(ErrorCode.BAD_FIELD, f"nr_vcpus {nr_vcpus} outside 1-{MAX_VCPUS}")
        self._hello = True
        self.nr_vcpus = nr_vcpus
        self.features = features & SUPPORTED_FEATURES
        self._emit(MsgType.HELLO, codec.HELLO.pack(PROTOCOL_VERSION, PAGE_SIZE, nr_vcpus,
                                                   self.features, self.config.domid, 0),
                   tag=tag, chan=chan)
        # Memory we own that the CPU side must map (firmware, shadow RAM) goes first.
        for dev in self.machine.devices:
            for r in dev.shared_regions():
                self._send_region(OUTBOX_MEM_ADD, (r.region_id, r.gpa, r.size, r.flags, r.fd))
        # Start-up as QEMU does on Xen (xen-protocol.md 4.1): create the server, claim every
        # range and PCI function, then enable.
        bufmode = HVM_IOREQSRV_BUFIOREQ_ATOMIC if self.features & FEATURE_BUFIOREQ else 0
        self.request_dmop(DmOp.CREATE_IOREQ_SERVER, (bufmode, 0), self._on_server_created)

    def _on_server_created(self, rc: int, union: bytes) -> None:
        if rc != 0:
            log.error("create_ioreq_server failed: rc=%d; serving nothing", rc)
            return
        _, server_id = codec.DMOP_BODY[DmOp.CREATE_IOREQ_SERVER].unpack_from(union, 0)
        m = self.machine
        m.server_id = server_id
        self.server_created = True
        for kind, start, end in m.claimed():
            self.request_dmop(DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, (server_id, 0, kind, start, end))
        m.start_announcing()
        if self.run_gate is None or self.run_gate():
            self.request_dmop(DmOp.SET_IOREQ_SERVER_STATE, (server_id, 1, ), self._on_enabled)
        else:
            log.info("ioreq server %d created; stays disabled until the guest runs", server_id)
        self._drain_outbox()

    def _on_enabled(self, rc: int, union: bytes) -> None:
        self._on_state(True, rc)

    def _on_state(self, enabled: bool, rc: int) -> None:
        if rc == 0:
            self.server_enabled = enabled
            log.info("ioreq server %d %s", self.machine.server_id,
                     "enabled" if enabled else "disabled")
        else:
            log.error("set_ioreq_server_state(%s) failed: rc=%d",
                      "enabled" if enabled else "disabled", rc)

    def set_server_state(self, enabled: bool) -> None:
        """Enable or disable the ioreq server (QMP cont/stop, xen-protocol.md 4.5). Pending
        effects and dirty-page reports go first; `server_enabled` follows the reply."""
        if self._closed or not self.server_created:
            return  # before creation: _on_server_created consults run_gate
        self._drain_outbox()
        self.report_dirty()
        self.request_dmop(DmOp.SET_IOREQ_SERVER_STATE, (self.machine.server_id, int(enabled)),
                          lambda rc, _u: self._on_state(enabled, rc))
        self._flush()

    def _on_ioreq(self, tag: int, chan: int, payload: bytes, flags: int) -> None:
        if len(payload) != 32:
            raise DecodeError(ErrorCode.BAD_LENGTH, f"IOREQ payload {len(payload)} != 32")
        addr, data, count, size, eport, pad0, bits, typ = codec.IOREQ.unpack(payload)
        if bits & 0xF != 1:
            raise DecodeError(ErrorCode.BAD_FIELD, f"IOREQ state {bits & 0xF} != READY (1)")
        if size not in (1, 2, 4, 8):
            raise DecodeError(ErrorCode.BAD_FIELD, f"IOREQ size {size} not 1, 2, 4 or 8")
        if typ not in (0, 1, 2, 7, 8):
            raise DecodeError(ErrorCode.BAD_FIELD, f"IOREQ type {typ} unknown")
        if chan >= max(self.nr_vcpus, 1):
            raise DecodeError(ErrorCode.BAD_FIELD, f"IOREQ chan {chan} >= nr_vcpus {self.nr_vcpus}")
        if not self.server_enabled:
            # Xen sends nothing to a disabled server (7.4 rule 7); we still answer, as a
            # bus with no device: reads all-ones.
            data = (1 << (8 * size)) - 1 if bits & 0x20 and not bits & 0x10 else data
        else:
            data = self.machine.handle_ioreq(typ, addr, data, count, size, bits) & _U64
        if self.machine.outbox:
            self._drain_outbox()
        if not flags & FLAG_NO_REPLY:
            self._emit(MsgType.IORESP, codec.IOREQ.pack(addr, data, count, size, eport, pad0,
                                                        (bits & 0xF0) | 3, typ), tag=tag, chan=chan)

    def _on_mem_add(self, payload: bytes, flags: int, fd: int | None) -> None:
        if len(payload) != codec.MEM_ADD.size:
            raise DecodeError(ErrorCode.BAD_LENGTH, f"MEM_ADD payload {len(payload)} != 32")
        if fd is None:
            raise DecodeError(ErrorCode.BAD_FDS, "MEM_ADD without a file descriptor (HAS_FDS)")
        gpa, size, off, mflags, rid = codec.MEM_ADD.unpack(payload)
        if mflags & ~MEM_KNOWN_FLAGS:
            raise DecodeError(ErrorCode.BAD_FIELD, f"MEM_ADD flags {mflags:#x} unknown")
        if gpa % PAGE_SIZE or size % PAGE_SIZE:
            raise DecodeError(ErrorCode.BAD_FIELD, "MEM_ADD gpa and size must be page aligned")
        dup = os.dup(fd)
        try:
            self.machine.memory.add_fd(rid, gpa, size, dup, off, mflags)
        except ValueError as e:
            os.close(dup)
            raise DecodeError(ErrorCode.BAD_FIELD, str(e)) from None
        log.info("guest memory region %d: gpa %#x size %#x flags %#x", rid, gpa, size, mflags)

    def _take_tag(self) -> int:
        tag = self._next_tag
        self._next_tag = (tag % 0xFFFFFFFF) + 1
        return tag

    def _send_fd(self, msg: bytes, fd: int) -> None:
        """An fd-carrying message leaves whole in one sendmsg, after everything queued."""
        if self.trace:
            self.trace.record(1, msg)
        self.sock.setblocking(True)
        try:
            if self._out:
                self.sock.sendall(self._out)
                self._out.clear()
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            self.sock.setblocking(False)

    # ---- dm_ops -------------------------------------------------------------------------
    def request_dmop(self, op: int, fields: tuple[int, ...],
                     on_reply: Callable[[int, bytes], None] | None = None,
                     buf1: bytes | None = None) -> None:
        tag = self._take_tag()
        no_reply = op in NO_REPLY_DMOPS
        if not no_reply:
            if len(self._pending) > 4096:
                log.error("hypervisor is not answering dm_ops; %d outstanding", len(self._pending))
            self._pending[tag] = (op, on_reply)
        self._emit(MsgType.DMOP, encode_dmop(op, *fields, buf1=buf1), tag=tag,
                   flags=FLAG_NO_REPLY if no_reply else 0)

    def _drain_outbox(self) -> None:
        box = self.machine.outbox
        self.machine.outbox = []
        for op, fields, buf1 in box:
            if op < 0:  # share_region / unshare_region (docs/protocol.md 4.7)
                self._send_region(op, fields)
                continue
            self.request_dmop(op, fields, None, buf1)
            if op == DmOp.REMOTE_SHUTDOWN and self.on_remote_shutdown is not None:
                try:
                    self.on_remote_shutdown(fields[0])
                except Exception:
                    log.exception("remote_shutdown listener failed")

    def _send_region(self, op: int, fields: tuple[int, ...]) -> None:
        """A daemon->hypervisor MEM_ADD (fd attached; the same region id moves the mapping)
        or MEM_DEL, in order with the dm_ops around it. Only daemon region ids (bit 31)."""
        if self._closed:
            return
        rid = fields[0]
        if not rid & DAEMON_REGION_BIT:
            log.error("not sending a region change for id %#x: bit 31 is not set", rid)
            return
        try:
            if op == OUTBOX_MEM_ADD:
                _, gpa, size, flags, fd = fields
                log.info("sharing region %#x: gpa %#x size %#x flags %#x", rid, gpa, size, flags)
                self._send_fd(codec.frame(MsgType.MEM_ADD, codec.MEM_ADD.pack(gpa, size, 0, flags, rid),
                                          tag=self._take_tag(), flags=FLAG_HAS_FDS), fd)
            elif op == OUTBOX_MEM_DEL:
                log.info("unsharing region %#x", rid)
                self._emit(MsgType.MEM_DEL, codec.MEM_DEL.pack(rid, 0), tag=self._take_tag())
            else:
                log.error("unknown outbox entry %d", op)
        except OSError as e:
            self.close(f"write error: {e}")

    def report_dirty(self) -> None:
        """Pages devices wrote by DMA while dirty logging is on (QMP
        xen-set-global-dirty-log), as modified_memory extents: runs of consecutive pfns,
        at most MAX_DIRTY_EXTENTS per dm_op (xen-protocol.md 4.7)."""
        dirty = self.machine.memory.dirty_log
        if not dirty or self._closed:
            return
        pages = sorted(dirty)
        dirty.clear()
        extents: list[tuple[int, int]] = []
        first = prev = pages[0]
        for pfn in pages[1:]:
            if pfn == prev + 1 and pfn - first < MAX_EXTENT_PAGES:
                prev = pfn
                continue
            extents.append((first, prev - first + 1))
            first = prev = pfn
        extents.append((first, prev - first + 1))
        for i in range(0, len(extents), MAX_DIRTY_EXTENTS):
            chunk = extents[i : i + MAX_DIRTY_EXTENTS]
            buf1 = b"".join(codec.MODIFIED_MEMORY_EXTENT.pack(n, 0, pfn) for pfn, n in chunk)
            self.request_dmop(DmOp.MODIFIED_MEMORY, (len(chunk), 0), None, buf1)

    def _on_dmop_reply(self, tag: int, payload: bytes) -> None:
        if len(payload) < 8 + 32:
            raise DecodeError(ErrorCode.BAD_LENGTH, f"DMOP_REPLY payload {len(payload)} < 40")
        entry = self._pending.pop(tag, None)
        if entry is None:
            raise DecodeError(ErrorCode.BAD_FIELD, f"DMOP_REPLY for unknown tag {tag}")
        op, cb = entry
        (rc,) = _DMOP_REPLY_RC.unpack_from(payload, 0)
        if rc != 0 and cb is None:
            log.error("dm_op %s failed: rc=%d", DmOp(op).name, rc)
        if cb is not None:
            cb(rc, payload[16:40])

    def flush_effects(self) -> None:
        """Send what the machine queued outside an ioreq (a backend pushed bytes into a
        device, which raised an IRQ)."""
        if self._closed:
            return
        if self.machine.posted:  # work a device posted outside an ioreq runs now, not later
            self._run_posted()
        if self.machine.outbox or self.machine.memory.dirty_log:
            self._drain_outbox()
            self.report_dirty()
            self._flush()
        # A device may arm a timer with no other effect (e1000 RDTR after a received frame):
        # the loop must learn the new deadline now, not at the guest's next ioreq.
        self._schedule_timer()

    # ---- timers -------------------------------------------------------------------------
    def _schedule_timer(self) -> None:
        clock = self.machine.clock
        if clock.virtual or not clock.changed or self._closed:
            return
        clock.changed = False
        deadline = clock.next_deadline()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if deadline is not None:
            delay = max(0.0, (deadline - clock.now()) / 1e9)
            self._timer_handle = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_handle = None
        self.machine.clock.run_due()
        self.machine.clock.changed = True
        if self.machine.posted:
            self._run_posted()
        if self.machine.outbox:
            self._drain_outbox()
        if self.machine.memory.dirty_log:
            self.report_dirty()
        self._flush()
        self._schedule_timer()

    # ---- teardown -----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Orderly end (SIGTERM): disable and destroy the server, flush, close."""
        if self._closed:
            return
        if self.server_created:
            sid = self.machine.server_id
            self.request_dmop(DmOp.SET_IOREQ_SERVER_STATE, (sid, 0))
            self.request_dmop(DmOp.DESTROY_IOREQ_SERVER, (sid,))
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            if self._out:
                self.sock.sendall(self._out)
                self._out.clear()
        except OSError:
            pass
        self.close("shutdown")

    def close(self, why: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.machine.posted = None
        self._pause_reading()
        if self._writing:
            self.loop.remove_writer(self.sock.fileno())
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self.trace:
            self.trace.close()
        try:
            self.sock.close()
        except OSError:
            pass
        log.info("connection closed: %s", why)
        self._on_close(why)


class Daemon:
    """Accepts one hypervisor connection and serves it until it goes, then returns.

    With a `controller` (devmodel.controller) the daemon also serves QMP monitors on the
    given listening sockets from the start, before any hypervisor connects."""

    def __init__(self, machine_factory: Callable[[], Machine], config: DaemonConfig,
                 controller=None, qmp_listeners: list[socket.socket] | None = None) -> None:
        self.machine_factory = machine_factory
        self.config = config
        self.machine: Machine | None = None
        self.connection: Connection | None = None
        self.controller = controller
        self.qmp_listeners = list(qmp_listeners or [])
        self.qmp_servers: list = []
        self._done: asyncio.Future[str] | None = None
        # Fixed now, before any --runas: the uid the daemon later runs as is not let in.
        self.allow_uids = (config.allow_uids if config.allow_uids is not None
                           else lockdown.default_allowed())

    async def serve(self, listener: socket.socket | None = None,
                    connected: socket.socket | None = None,
                    ready: Callable[[], None] | None = None,
                    handle_signals: bool = True) -> str:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self.machine = self.machine_factory()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop, sig.name)
        if self.controller is not None:
            from devmodel.qmp.server import QmpServer

            self.controller.on_quit = lambda why: loop.call_soon(self.stop, why)
            self.qmp_servers = [QmpServer(ls, self.controller, loop, allow_uids=self.allow_uids)
                                for ls in self.qmp_listeners]
            self.controller.monitor_paths = [str(qs.path) for qs in self.qmp_servers]
        try:
            if connected is None:
                assert listener is not None
                listener.setblocking(False)
                if ready:
                    ready()
                # A stop (SIGTERM/SIGINT) may come before any hypervisor connects: wait for
                # whichever happens first, or the daemon would sit in accept() forever.
                while True:  # until a peer --allow-uid admits connects
                    accept = asyncio.ensure_future(loop.sock_accept(listener))
                    await asyncio.wait({accept, self._done}, return_when=asyncio.FIRST_COMPLETED)
                    if not accept.done():
                        accept.cancel()
                        return self._done.result()
                    conn_sock, _ = accept.result()
                    if self._admit(conn_sock):
                        break
                # Only one hypervisor: later connections are refused with an ERROR.
                loop.add_reader(listener.fileno(), self._refuse, listener)
            else:
                conn_sock = connected
                if ready:
                    ready()
            log.info("hypervisor connected")
            self.connection = Connection(conn_sock, self.machine, self.config, loop, self._closed)
            if self.controller is not None:
                self.controller.attach(self.connection)
            attached = [hook(loop, self.connection.flush_effects) for hook in self.machine.io_hooks]
            try:
                return await self._done
            finally:
                for obj in attached:
                    try:
                        obj.close()
                    except Exception:
                        log.exception("closing %r failed", obj)
        except asyncio.CancelledError:
            return "cancelled"
        finally:
            if listener is not None:
                try:
                    loop.remove_reader(listener.fileno())
                except (ValueError, OSError):
                    pass
            if handle_signals:
                # Shutdown has begun. Removing the loop's handlers would restore SIG_DFL,
                # and a repeated SIGTERM (a toolstack's second kill) would then end the
                # orderly exit with -15 half-way through closing the backends. So they are
                # replaced by SIG_IGN in one step (no window with SIG_DFL) and stay so until
                # the process exits: the exit is already under way. (uvloop leaves them alone
                # when it closes; asyncio's loop restores SIG_DFL then, and cli.py ignores
                # them again after the loop.)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_IGN)
            for qs in self.qmp_servers:
                qs.close()
            if self.controller is not None:
                self.controller.detach()
            log.info("machine counters: %s", " ".join(
                f"{k.replace(' ', '_')}={v}" for k, v in sorted(self.machine.stats().items())))
            self.machine.close_backends()
            self.machine.memory.close()

    @staticmethod
    def _error_frame(why: str) -> bytes:
        return codec.frame(MsgType.ERROR, encode_error(ErrorCode.BAD_STATE, why))

    def _admit(self, s: socket.socket) -> bool:
        """Peer credentials (SO_PEERCRED) against --allow-uid; a refused peer gets an ERROR."""
        return lockdown.admit(s, self.allow_uids, "the hypervisor socket", self._error_frame)

    def _refuse(self, listener: socket.socket) -> None:
        s = lockdown.accept_checked(listener, self.allow_uids, "the hypervisor socket",
                                    self._error_frame)
        if s is None:
            return
        try:
            s.send(self._error_frame("a hypervisor is already connected"))
        except OSError:
            pass
        s.close()

    def stop(self, why: str = "stop") -> None:
        log.info("stopping: %s", why)
        if self._done is not None and not self._done.done():
            self._done.set_result(why)
        if self.connection is not None:
            self.connection.shutdown()

    def _closed(self, why: str) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(why)


def listen_unix(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600 from the start (umask, not a later chmod)."""
    if os.path.exists(path):
        import stat

        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
        else:
            raise FileExistsError(f"{path} exists and is not a socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind a temporary name and rename it once listening: whoever waits for `path` to appear
    # (DaemonProcess, a toolstack) must not connect between bind and listen (ECONNREFUSED).
    tmp = path + "~"
    if os.path.lexists(tmp):
        import stat

        if not stat.S_ISSOCK(os.lstat(tmp).st_mode):
            raise FileExistsError(f"{tmp} exists and is not a socket")
        os.unlink(tmp)
    old = os.umask(0o177)
    try:
        s.bind(tmp)
    finally:
        os.umask(old)
    try:
        s.listen(4)
        os.rename(tmp, path)
    except OSError:
        s.close()
        os.unlink(tmp)
        raise
    return s
