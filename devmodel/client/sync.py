"""The synchronous hypervisor-side client: connect to (or start) a daemon, share guest RAM,
issue ioreqs, observe dm_ops, step the virtual clock.

    with Hypervisor.spawn(["--domid", "1"]) as hv:
        hv.add_ram(64 << 20)
        print(hex(hv.pci_cfg_read(0, 0, 4)))
"""

from __future__ import annotations

import array
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from devmodel.wire import codec
from devmodel.wire.codec import HEADER_IOREQ, IOREQ, Ioreq, ioreq_bits
from devmodel.wire.constants import (
    FEATURE_BUFIOREQ,
    FEATURE_MEMFD_RAM,
    FEATURE_PCI_CONFIG,
    FLAG_HAS_FDS,
    FLAG_NO_REPLY,
    IOREQ_READ,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_INVALIDATE,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_WRITE,
    MEM_RAM,
    PAGE_SIZE,
    STATE_IOREQ_READY,
    MsgType,
)
from devmodel.wire.framing import Deframer, Message, received_fds

from .guestram import GuestRam
from .process import DaemonProcess
from .state import HypervisorState

DEFAULT_FEATURES = FEATURE_BUFIOREQ | FEATURE_MEMFD_RAM | FEATURE_PCI_CONFIG
# Bytes of held-back NO_REPLY messages (CLOCK, BUFIOREQ) after which they are sent anyway.
MAX_PENDING = 1 << 16
# recvmsg sizes: a read, and room for the fds of up to four messages.
RECV_SIZE = 1 << 18
RECV_ANC = socket.CMSG_SPACE(4 * 4)
_PACK_IOREQ = HEADER_IOREQ.pack  # header + ioreq_t of one IOREQ / IORESP message, 48 bytes
_UNPACK_IOREQ = HEADER_IOREQ.unpack_from
_MSG_IOREQ = int(MsgType.IOREQ)
_MSG_IORESP = int(MsgType.IORESP)


class ProtocolError(Exception):
    """The daemon answered with ERROR, or broke the contract."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"ERROR {code}: {text}")
        self.code = code
        self.text = text


class Hypervisor:
    """Plays Xen's part against one daemon over a Unix socket."""

    def __init__(self, sock: socket.socket, *, nr_vcpus: int = 1, domid: int = 1,
                 features: int = DEFAULT_FEATURES, timeout: float = 10.0,
                 process: DaemonProcess | None = None, handshake: bool = True) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.nr_vcpus = nr_vcpus
        self.domid = domid
        self.features = features
        self.process = process
        self.state = HypervisorState()
        self.ram: GuestRam | None = None
        self._deframer = Deframer()
        self._next_tag = 1
        self._backlog: list[Message] = []
        # Messages recv_reply skipped (per connection: a class-level list was shared by all).
        self.unmatched: list[Message] = []
        self.hello_reply: tuple[int, ...] | None = None
        self.cf8 = 0
        # NO_REPLY messages held back (queue()) to go out in the same sendall as the next
        # message, so that a CLOCK and the IOREQ it precedes cost one system call.
        self._pending = bytearray()
        self.socket_writes = 0  # sendall/sendmsg calls, for tests and benchmarks
        # Synchronous ioreqs sent (``ioreq`` and the accessors), INVALIDATE barriers apart.
        self.ioreqs_sent = 0
        self.barriers_sent = 0
        if handshake:
            self.hello()
            self.wait_enabled()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def connect(cls, path: str, **kw) -> Hypervisor:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return cls(s, **kw)

    @classmethod
    def spawn(cls, args: Sequence[str] = ("--domid", "1"), *, ram: int | None = None,
              **kw) -> Hypervisor:
        proc = DaemonProcess.start(list(args))
        try:
            hv = cls.connect(proc.socket_path, process=proc, **kw)
        except BaseException:
            proc.stop()
            raise
        if ram:
            hv.add_ram(ram)
        return hv

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            try:
                self.flush()  # posted writes and the last CLOCK still reach the daemon
            except OSError:
                pass
            self.sock.close()
        finally:
            if self.ram is not None:
                self.ram.close()
                self.ram = None
            if self.process is not None:
                self.process.wait_exit()

    # ---- framing ------------------------------------------------------------------------
    def tag(self) -> int:
        t = self._next_tag
        self._next_tag = t % 0xFFFFFFFF + 1
        return t

    def send(self, mtype: int, payload: bytes = b"", *, tag: int | None = None, chan: int = 0,
             flags: int = 0, fds: Sequence[int] = ()) -> int:
        tag = self.tag() if tag is None else tag
        data = codec.frame(mtype, payload, tag=tag, chan=chan, flags=flags)
        if fds:
            # An fd-carrying message goes whole in its own sendmsg (docs/protocol.md 1), so
            # what is held back goes first, on its own.
            self.flush()
            self.socket_writes += 1
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
        else:
            self._write(data)
        return tag

    def queue(self, mtype: int, payload: bytes = b"", *, chan: int = 0,
              flags: int = FLAG_NO_REPLY) -> int:
        """Hold a NO_REPLY message back: it goes out in front of whatever is sent next, in
        the same sendall, or at ``flush()``, or before this client waits for the daemon
        (``recv``, ``poll``). The order of messages on the socket is the order of the calls,
        so a CLOCK still precedes the IOREQ it was queued before (docs/protocol.md 4.2, 4.6)."""
        tag = self.tag()
        self._pending += codec.frame(mtype, payload, tag=tag, chan=chan, flags=flags)
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        return tag

    def flush(self) -> None:
        """Send the messages ``queue`` held back."""
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            self.socket_writes += 1
            self.sock.sendall(data)

    def _write(self, data: bytes) -> None:
        """One sendall: the held-back messages, then ``data``."""
        if self._pending:
            self._pending += data
            data = bytes(self._pending)
            self._pending.clear()
        self.socket_writes += 1
        self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def send_raw_fd(self, data: bytes, fd: int) -> None:
        """A pre-framed message with one fd, in a single sendmsg (docs/protocol.md §1)."""
        self.flush()
        self.socket_writes += 1
        self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])

    def _recv_some(self) -> None:
        self.flush()  # never wait for an answer to something still held back
        data, anc, _, _ = self.sock.recvmsg(RECV_SIZE, RECV_ANC)
        if not data:
            raise ConnectionError("daemon closed the connection")
        self._deframer.feed(data, received_fds(anc))

    def recv(self) -> Message:
        """Next message that is not a dm_op (dm_ops are answered and recorded on the way)."""
        while True:
            if self._backlog:
                return self._backlog.pop(0)
            self._drain_deframer()
            if not self._backlog:
                self._recv_some()

    def recv_reply(self, tag: int) -> Message:
        """The message answering `tag`; raises ProtocolError for an ERROR."""
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self.recv()
            if msg.tag == tag or (msg.type == MsgType.ERROR and msg.tag == 0):
                if msg.type == MsgType.ERROR:
                    raise ProtocolError(*codec.decode_error(msg.payload))
                return msg
            self.unmatched.append(msg)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to tag {tag}")

    def poll(self, timeout: float = 0.0) -> None:
        """Process whatever the daemon has sent (dm_ops: IRQs, range maps) without blocking.
        Held-back messages are sent first (while the socket still blocks)."""
        self.flush()
        self.sock.settimeout(timeout)
        try:
            while True:
                self._recv_some()
                self._drain_deframer()
                self.sock.settimeout(0.0)
        except (BlockingIOError, TimeoutError):
            pass
        finally:
            self.sock.settimeout(self.timeout)
        self._drain_deframer()

    def _drain_deframer(self) -> None:
        """dm_ops are answered and recorded, the daemon's MEM_ADDs and MEM_DELs applied; the rest
        queued."""
        for msg in self._deframer.messages():
            if msg.type == MsgType.DMOP:
                reply = self.state.handle_dmop(msg)
                if reply is not None:
                    self._write(reply)
            elif msg.type == MsgType.MEM_ADD:
                self.state.handle_mem_add(msg)
            elif msg.type == MsgType.MEM_DEL:
                self.state.handle_mem_del(msg)
            else:
                self._backlog.append(msg)

    # ---- lifecycle ----------------------------------------------------------------------
    def hello(self) -> tuple[int, ...]:
        tag = self.send(MsgType.HELLO, codec.HELLO.pack(1, PAGE_SIZE, self.nr_vcpus,
                                                       self.features, self.domid, 0))
        msg = self.recv_reply(tag)
        if msg.type != MsgType.HELLO:
            raise ProtocolError(0, f"expected HELLO, got type {msg.type}")
        self.hello_reply = codec.HELLO.unpack(msg.payload)
        return self.hello_reply

    def wait_enabled(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.state.server_enabled:
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon never enabled its ioreq server")
            self.poll(0.05)

    def add_ram(self, size: int, *, layout: str = "pc") -> GuestRam:
        """Create guest RAM in a memfd and share it: the PC split leaves 0xA0000-0xFFFFF for
        the VGA window and ROMs, as QEMU does (xen-protocol.md 7.3)."""
        ram = GuestRam(size)
        for rid, (gpa, length) in enumerate(ram.regions(layout)):
            self.mem_add(rid, gpa, length, ram.fd, gpa)
        self.ram = ram
        return ram

    def mem_add(self, region_id: int, gpa: int, size: int, fd: int, fd_offset: int,
                flags: int = MEM_RAM) -> None:
        self.send(MsgType.MEM_ADD, codec.MEM_ADD.pack(gpa, size, fd_offset, flags, region_id),
                  flags=FLAG_HAS_FDS, fds=[fd])

    def mem_del(self, region_id: int) -> None:
        self.send(MsgType.MEM_DEL, codec.MEM_DEL.pack(region_id, 0))

    def clock(self, now_ns: int, sync: bool = False) -> None:
        """CLOCK (NO_REPLY): the daemon's virtual time moves to `now_ns` and its timers that
        fall due fire. It is queued (``queue``): it goes out in the same sendall as the next
        message, typically the IOREQ it precedes. With `sync`, also wait until the daemon has
        processed it: the dm_ops of those timers (IRQs) are then applied. The barrier is an
        INVALIDATE ioreq, the one ioreq with no device effect: the daemon answers in order,
        after the CLOCK's dm_ops."""
        self.queue(MsgType.CLOCK, codec.CLOCK.pack(now_ns))
        if sync:
            self.barrier()

    def barrier(self) -> None:
        """Return once the daemon has processed everything sent so far (and we its dm_ops)."""
        self._io(IOREQ_TYPE_INVALIDATE, 0, 1, IOREQ_WRITE)

    # ---- callbacks: what a hypervisor does with the daemon's dm_ops and memory ------------
    # They live on `state` (which applies the dm_ops); these forward, so that the client is
    # an `IoreqPort` of devmodel.hvsim as it stands. A dm_op caused by an ioreq arrives before
    # its IORESP (docs/protocol.md 4.2) and `ioreq` processes everything up to that IORESP,
    # so the callbacks have run when the call that caused them returns.
    @property
    def on_isa_irq(self) -> Callable[[int, int], None] | None:
        return self.state.on_isa_irq

    @on_isa_irq.setter
    def on_isa_irq(self, cb: Callable[[int, int], None] | None) -> None:
        self.state.on_isa_irq = cb

    @property
    def on_pci_intx(self) -> Callable[[int, int, int], None] | None:
        return self.state.on_pci_intx

    @on_pci_intx.setter
    def on_pci_intx(self, cb: Callable[[int, int, int], None] | None) -> None:
        self.state.on_pci_intx = cb

    @property
    def on_link_route(self) -> Callable[[int, int], None] | None:
        return self.state.on_link_route

    @on_link_route.setter
    def on_link_route(self, cb: Callable[[int, int], None] | None) -> None:
        self.state.on_link_route = cb

    @property
    def on_shutdown(self) -> Callable[[int], None] | None:
        return self.state.on_shutdown

    @on_shutdown.setter
    def on_shutdown(self, cb: Callable[[int], None] | None) -> None:
        self.state.on_shutdown = cb

    @property
    def on_mem_add(self) -> Callable[[int, int, int, int, int], None] | None:
        return self.state.on_mem_add

    @on_mem_add.setter
    def on_mem_add(self, cb: Callable[[int, int, int, int, int], None] | None) -> None:
        self.state.on_mem_add = cb

    @property
    def on_mem_del(self) -> Callable[[int], None] | None:
        return self.state.on_mem_del

    @on_mem_del.setter
    def on_mem_del(self, cb: Callable[[int], None] | None) -> None:
        self.state.on_mem_del = cb

    @property
    def on_mem_type(self) -> Callable[[int, int, int], None] | None:
        return self.state.on_mem_type

    @on_mem_type.setter
    def on_mem_type(self, cb: Callable[[int, int, int], None] | None) -> None:
        self.state.on_mem_type = cb

    # ---- ioreqs -------------------------------------------------------------------------
    def ioreq(self, req: Ioreq, chan: int = 0) -> Ioreq:
        if req.type == IOREQ_TYPE_INVALIDATE:
            self.barriers_sent += 1
        else:
            self.ioreqs_sent += 1
        tag = self.send(MsgType.IOREQ, req.pack(), chan=chan)
        msg = self.recv_reply(tag)
        if msg.type != MsgType.IORESP:
            raise ProtocolError(0, f"expected IORESP, got type {msg.type}")
        return Ioreq.unpack(msg.payload)

    def ioreqs(self, reqs: Iterable[Ioreq], chan: int = 0) -> list[Ioreq]:
        """Pipelined: send all, then collect the answers in order."""
        tags = []
        buf = bytearray()
        for r in reqs:
            t = self.tag()
            tags.append(t)
            buf += codec.frame(MsgType.IOREQ, r.pack(), tag=t, chan=chan)
        self._write(bytes(buf))
        return [Ioreq.unpack(self.recv_reply(t).payload) for t in tags]

    def _io(self, typ: int, addr: int, size: int, dir: int, data: int = 0, count: int = 1,
            ptr: int = 0, df: int = 0, chan: int = 0) -> int:
        """One synchronous ioreq, as ``ioreq`` sends and answers it, without its objects (the
        vCPU's every exit to the daemon comes here): the message is packed with one struct,
        and an answer that arrives alone (one recvmsg of exactly its IORESP, nothing held in
        the deframer) is unpacked in place. Anything else (dm_ops in front of the answer, a
        partial read, an ERROR) goes to the deframer and ``recv_reply`` as before."""
        if typ == IOREQ_TYPE_INVALIDATE:
            self.barriers_sent += 1
        else:
            self.ioreqs_sent += 1
        tag = self._next_tag
        self._next_tag = tag % 0xFFFFFFFF + 1
        bits = STATE_IOREQ_READY | (ptr & 1) << 4 | (dir & 1) << 5 | (df & 1) << 6
        self._write(_PACK_IOREQ(_MSG_IOREQ, 0, 32, tag, chan, addr & 0xFFFFFFFFFFFFFFFF,
                                data & 0xFFFFFFFFFFFFFFFF, count, size, 0, 0, bits, typ))
        if not self._backlog and not self._deframer.buffered:
            buf, anc, _, _ = self.sock.recvmsg(RECV_SIZE, RECV_ANC)
            if not buf:
                raise ConnectionError("daemon closed the connection")
            if len(buf) == 48 and not anc:
                (mtype, flags, length, rtag, _chan, _addr, rdata, _count, _size, _eport, _pad0,
                 _bits, _typ) = _UNPACK_IOREQ(buf)
                if mtype == _MSG_IORESP and flags == 0 and length == 32 and rtag == tag:
                    return rdata
            self._deframer.feed(buf, received_fds(anc))
        msg = self.recv_reply(tag)
        if msg.type != MsgType.IORESP:
            raise ProtocolError(0, f"expected IORESP, got type {msg.type}")
        return Ioreq.unpack(msg.payload).data

    def inb(self, port: int) -> int:
        return self._io(IOREQ_TYPE_PIO, port, 1, IOREQ_READ)

    def inw(self, port: int) -> int:
        return self._io(IOREQ_TYPE_PIO, port, 2, IOREQ_READ)

    def inl(self, port: int) -> int:
        return self._io(IOREQ_TYPE_PIO, port, 4, IOREQ_READ)

    def outb(self, port: int, v: int) -> None:
        self._io(IOREQ_TYPE_PIO, port, 1, IOREQ_WRITE, v)

    def outw(self, port: int, v: int) -> None:
        self._io(IOREQ_TYPE_PIO, port, 2, IOREQ_WRITE, v)

    def outl(self, port: int, v: int) -> None:
        self._io(IOREQ_TYPE_PIO, port, 4, IOREQ_WRITE, v)

    def readb(self, gpa: int) -> int:
        return self._io(IOREQ_TYPE_COPY, gpa, 1, IOREQ_READ)

    def readw(self, gpa: int) -> int:
        return self._io(IOREQ_TYPE_COPY, gpa, 2, IOREQ_READ)

    def readl(self, gpa: int) -> int:
        return self._io(IOREQ_TYPE_COPY, gpa, 4, IOREQ_READ)

    def readq(self, gpa: int) -> int:
        return self._io(IOREQ_TYPE_COPY, gpa, 8, IOREQ_READ)

    def writeb(self, gpa: int, v: int) -> None:
        self._io(IOREQ_TYPE_COPY, gpa, 1, IOREQ_WRITE, v)

    def writew(self, gpa: int, v: int) -> None:
        self._io(IOREQ_TYPE_COPY, gpa, 2, IOREQ_WRITE, v)

    def writel(self, gpa: int, v: int) -> None:
        self._io(IOREQ_TYPE_COPY, gpa, 4, IOREQ_WRITE, v)

    def writeq(self, gpa: int, v: int) -> None:
        self._io(IOREQ_TYPE_COPY, gpa, 8, IOREQ_WRITE, v)

    def ins(self, port: int, size: int, count: int, gpa: int, df: bool = False) -> None:
        """`rep ins`: the daemon writes `count` elements into guest RAM at gpa (one ioreq)."""
        self._io(IOREQ_TYPE_PIO, port, size, IOREQ_READ, gpa, count, 1, int(df))

    def outs(self, port: int, size: int, count: int, gpa: int, df: bool = False) -> None:
        self._io(IOREQ_TYPE_PIO, port, size, IOREQ_WRITE, gpa, count, 1, int(df))

    def bufioreq(self, writes: Iterable[tuple[int, int, int, int]]) -> None:
        """Posted writes (type, addr, size, data) as one BUFIOREQ (NO_REPLY), as Xen batches
        VGA-window stores. Queued like CLOCK: sent with the next message or wait."""
        self.queue(MsgType.BUFIOREQ, codec.encode_bufioreq(list(writes)))

    @property
    def buffered(self) -> bool:
        """Whether the daemon's ioreq server has a buffered ring (it accepted the BUFIOREQ
        feature): only then does a hypervisor post writes (xen-protocol.md 2.2)."""
        return self.state.bufioreq_mode != 0

    # ---- the IoreqPort interface of devmodel.hvsim ----------------------------------------
    def pio_read(self, port: int, size: int) -> int:
        return self._io(IOREQ_TYPE_PIO, port, size, IOREQ_READ)

    def pio_write(self, port: int, size: int, value: int) -> None:
        self._io(IOREQ_TYPE_PIO, port, size, IOREQ_WRITE, value)

    def pio_string(self, port: int, size: int, count: int, dir_read: bool, gpa: int,
                   df: bool) -> None:
        self._io(IOREQ_TYPE_PIO, port, size, IOREQ_READ if dir_read else IOREQ_WRITE, gpa,
                 count, 1, int(df))

    def mmio_read(self, gpa: int, size: int) -> int:
        return self._io(IOREQ_TYPE_COPY, gpa, size, IOREQ_READ)

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        self._io(IOREQ_TYPE_COPY, gpa, size, IOREQ_WRITE, value)

    def mmio_string(self, gpa: int, size: int, count: int, data: int, ptr: bool,
                    df: bool) -> None:
        """REP STOS (`data` the fill value) or REP MOVS from RAM (`ptr`, `data` the source
        GPA) into MMIO at `gpa` as one COPY write with a count (xen-protocol.md 1.4)."""
        self._io(IOREQ_TYPE_COPY, gpa, size, IOREQ_WRITE, data, count, int(ptr), int(df))

    def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int:
        return self._io(IOREQ_TYPE_PCI_CONFIG, sbdf << 32 | reg, size, IOREQ_READ)

    def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        self._io(IOREQ_TYPE_PCI_CONFIG, sbdf << 32 | reg, size, IOREQ_WRITE, value)

    def claims_port(self, port: int, size: int) -> bool:
        return self.state.claims_port(port, size)

    def claims_mmio(self, gpa: int, size: int) -> bool:
        return self.state.claims_mmio(gpa, size)

    def claims_pci(self, sbdf: int) -> bool:
        return self.state.claims_pci(sbdf)

    # ---- PCI helpers --------------------------------------------------------------------
    def pci_scan(self) -> dict[int, dict[str, int]]:
        """Every function on bus 0 the daemon claims: ids, class, header type."""
        found: dict[int, dict[str, int]] = {}
        for devfn in range(256):
            if not self.claims_pci(devfn):
                continue
            vid = self.pci_cfg_read(devfn, 0, 2)
            if vid == 0xFFFF:
                continue
            found[devfn] = {
                "vendor": vid,
                "device": self.pci_cfg_read(devfn, 2, 2),
                "revision": self.pci_cfg_read(devfn, 8, 1),
                "class": self.pci_cfg_read(devfn, 8, 4) >> 8,
                "header_type": self.pci_cfg_read(devfn, 0x0E, 1),
                "subsystem_vendor": self.pci_cfg_read(devfn, 0x2C, 2),
                "subsystem": self.pci_cfg_read(devfn, 0x2E, 2),
            }
        return found

    def pci_bar_size(self, devfn: int, index: int) -> tuple[int, int]:
        """Size a BAR the way firmware does (write all-ones, read back, restore): (size, flags)."""
        off = 0x10 + 4 * index if index < 6 else 0x30
        old = self.pci_cfg_read(devfn, off, 4)
        self.pci_cfg_write(devfn, off, 4, 0xFFFFFFFF if index < 6 else 0xFFFFF800)
        probe = self.pci_cfg_read(devfn, off, 4)
        self.pci_cfg_write(devfn, off, 4, old)
        if probe == 0:
            return 0, 0
        flags = probe & (0x3 if probe & 1 and index < 6 else 0xF if index < 6 else 0x1)
        mask = probe & ~(0x3 if probe & 1 else 0xF) if index < 6 else probe & 0xFFFFF800
        if probe & 1 and index < 6:
            mask |= 0xFFFF0000
        return (~mask + 1) & 0xFFFFFFFF, flags

    def pci_program_bar(self, devfn: int, index: int, addr: int) -> None:
        off = 0x10 + 4 * index if index < 6 else 0x30
        self.pci_cfg_write(devfn, off, 4, addr & 0xFFFFFFFF)

    def pci_enable(self, devfn: int, io: bool = True, mem: bool = True,
                   master: bool = False) -> None:
        cmd = self.pci_cfg_read(devfn, 4, 2)
        cmd |= (1 if io else 0) | (2 if mem else 0) | (4 if master else 0)
        self.pci_cfg_write(devfn, 4, 2, cmd)

    def cf8_read(self, devfn: int, off: int, size: int) -> int:
        """Config read through mechanism #1 as the guest does it (0xCF8/0xCFC)."""
        self.outl(0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
        return self._io(IOREQ_TYPE_PIO, 0xCFC + (off & 3), size, IOREQ_READ)

    def cf8_write(self, devfn: int, off: int, size: int, value: int) -> None:
        self.outl(0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
        self._io(IOREQ_TYPE_PIO, 0xCFC + (off & 3), size, IOREQ_WRITE, value)


def ioreq_bytes(addr: int, data: int, size: int, *, read: bool, typ: int = IOREQ_TYPE_PIO,
                count: int = 1, ptr: bool = False, df: bool = False) -> bytes:
    """The raw 32 bytes of a READY ioreq_t, for tests and benchmarks that frame their own."""
    return IOREQ.pack(addr, data, count, size, 0, 0,
                      ioreq_bits(STATE_IOREQ_READY, int(ptr), int(read), int(df)), typ)


__all__ = ["Hypervisor", "ProtocolError", "ioreq_bytes", "DEFAULT_FEATURES", "os"]
