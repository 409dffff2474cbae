"""Network backends for the NICs: tap devices, datagram sockets (QEMU's `-netdev dgram`),
QEMU's `-netdev stream` framing over Unix or TCP, pcap capture, and the pump that moves
frames between a backend and a device on the daemon's event loop.

Every backend has the same small surface and no event loop in it:
- `fileno()`: the fd to watch for incoming frames (None: nothing to read); it may change
  (a stream server accepting or losing its client: `on_fds_changed`);
- `recv_frames(limit)`: up to `limit` frames that are ready now (never blocks);
- `send(frame)`: the device's transmit port; never blocks: when the fd is full the frame
  waits in a bounded backlog (`on_backlog` asks the pump to watch for writability), and
  beyond that bound it is dropped and counted;
- `flush()`, `close()`, `counters`, and an optional `capture` (PcapWriter) that records
  every frame in both directions.

`NetPump` attaches a backend to a NIC on an asyncio loop (add_reader/add_writer only, the
glue shared with SerialPump in pump.py). Frames the device has no room for wait in a bounded
queue; when that overflows the device counts them as missed (`rx_missed`: MPC and RXO),
never silently; a stream backend is read no further instead (flow control).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from .pump import FdPump

log = logging.getLogger("devmodel.net")

MAX_FRAME = 65536
MAX_BACKLOG = 256  # frames waiting for a writable fd
RX_BATCH = 64  # frames read per readiness callback
MAX_PENDING = 256  # frames waiting for receive descriptors
# Read errors that mean the backend is gone for good, not a passing condition: a tap deleted
# under us (`ip link del`: the fd stays open, poll() reports it readable for ever, read()
# fails with EBADFD), a device that went away (ENODEV, ENXIO), a broken fd (EBADF, EIO).
# Left in the reader, such an fd would spin the loop; see NetPump._readable.
GONE_ERRNOS = frozenset({errno.EBADFD, errno.ENODEV, errno.ENXIO, errno.EBADF, errno.EIO})
FEED_BATCH = 64  # frames offered to the device per loop turn

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
_PCAP_HDR = struct.Struct("<IHHiIII")
_PCAP_REC = struct.Struct("<IIII")


class PcapWriter:
    """A classic pcap file (microsecond timestamps, Ethernet) readable by tcpdump/scapy."""

    def __init__(self, path: str, snaplen: int = MAX_FRAME) -> None:
        self.path = path
        self.snaplen = snaplen
        self._f = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._f.write(_PCAP_HDR.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self._f.flush()

    def write(self, frame: bytes, ts: float | None = None) -> None:
        if self._f.closed:
            return
        ts = time.time() if ts is None else ts
        sec = int(ts)
        usec = int((ts - sec) * 1_000_000)
        data = frame[: self.snaplen]
        self._f.write(_PCAP_REC.pack(sec, usec, len(data), len(frame)) + data)

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_pcap(path: str) -> list[bytes]:
    """The frames of a pcap file written by PcapWriter (for tests and tools)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _PCAP_HDR.size or _PCAP_HDR.unpack_from(data)[0] != PCAP_MAGIC:
        raise ValueError(f"{path} is not a pcap file")
    out = []
    pos = _PCAP_HDR.size
    while pos + _PCAP_REC.size <= len(data):
        _, _, incl, _ = _PCAP_REC.unpack_from(data, pos)
        pos += _PCAP_REC.size
        out.append(data[pos : pos + incl])
        pos += incl
    return out


class NetBackend:
    kind = "null"

    def __init__(self) -> None:
        self.fd: int | None = None
        self.capture: PcapWriter | None = None
        self.backlog: collections.deque[bytes] = collections.deque()
        self.counters: collections.Counter[str] = collections.Counter()
        self.on_backlog: Callable[[], None] | None = None
        self.on_fd_closing: Callable[[int], None] | None = None
        self.on_fds_changed: Callable[[], None] | None = None
        self.gone = False  # a read failed with one of GONE_ERRNOS: nothing more will come

    # a stream is flow-controlled (the pump stops reading when the NIC is full); datagrams
    # are not (frames beyond the pump's queue are counted as missed)
    reliable = False

    @property
    def ready(self) -> int:
        """Frames already decoded and waiting for recv_frames (streams)."""
        return 0

    # -- reading --------------------------------------------------------------------------
    def fileno(self) -> int | None:
        return self.fd

    def recv_frames(self, limit: int = RX_BATCH) -> list[bytes]:
        out: list[bytes] = []
        recv = self._recv_one
        for _ in range(limit):
            try:
                frame = recv()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._read_failed(e)
                break
            if frame is None:
                break
            if frame:
                out.append(frame)
        return self._received(out)

    def _received(self, out: list[bytes]) -> list[bytes]:
        """Count (and capture) the frames a recv_frames returns."""
        if out:
            self.counters["rx frames"] += len(out)
            if self.capture is not None:
                for frame in out:
                    self.capture.write(frame)
                self.capture.flush()  # one flush per batch: the file is readable as it grows
        return out

    def _read_failed(self, e: OSError) -> None:
        self.counters["read errors"] += 1
        if e.errno in GONE_ERRNOS:
            if not self.gone:
                log.warning("%s: read failed, the backend is gone: %s", self.kind, e)
            self.gone = True
        else:
            log.warning("%s: read failed: %s", self.kind, e)

    def _recv_one(self) -> bytes | None:
        return None

    # -- writing --------------------------------------------------------------------------
    def write_fileno(self) -> int | None:
        return self.fd

    def send(self, frame: bytes) -> None:
        if self.capture is not None:
            self.capture.write(frame)
            self.capture.flush()
        if self.gone:
            self.counters["tx dropped: backend gone"] += 1
            return
        if self.backlog:
            self._queue(frame)
            return
        try:
            self._send_one(frame)
        except OSError as e:
            self._send_failed(frame, e)
            return
        self.counters["tx frames"] += 1

    def _send_failed(self, frame: bytes, e: OSError) -> None:
        """A send of `frame` raised `e`: a full socket queues the frame (it goes when the
        socket is writable again); any other error loses it."""
        if isinstance(e, (BlockingIOError, InterruptedError)):
            self._queue(frame)
        else:
            self._send_error(e)

    def _send_error(self, e: OSError) -> None:
        """A send failed for good: the frame is counted as lost."""
        self.counters["tx errors"] += 1
        log.debug("%s: send failed: %s", self.kind, e)

    def send_many(self, frames: list[bytes]) -> None:
        """send() of each frame in order (a NIC's doorbell batch)."""
        send = self.send
        for frame in frames:
            send(frame)

    def _queue(self, frame: bytes) -> None:
        if len(self.backlog) >= MAX_BACKLOG:
            self.counters["tx dropped: backlog full"] += 1
            return
        self.backlog.append(frame)
        if self.on_backlog is not None:
            self.on_backlog()

    def flush(self) -> None:
        while self.backlog:
            try:
                self._send_one(self.backlog[0])
                self.counters["tx frames"] += 1
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._send_error(e)
            self.backlog.popleft()
        if self.capture is not None:
            self.capture.flush()

    def _send_one(self, frame: bytes) -> None:
        self.counters["tx dropped: no peer"] += 1

    def close(self) -> None:
        if self.fd is not None:
            if self.on_fd_closing is not None:
                self.on_fd_closing(self.fd)
            self._close_fd()
            self.fd = None
        if self.capture is not None:
            self.capture.close()

    def _close_fd(self) -> None:
        os.close(self.fd)


class NullBackend(NetBackend):
    """No network: frames sent are counted and dropped."""


# ---- tap ----------------------------------------------------------------------------------
def _in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    """Run fn in network namespace `netns` (a name under /run/netns or a path) on a
    short-lived thread: setns(2) changes only the calling thread, so the daemon's own
    threads never leave their namespace. Python 3.11 has no os.setns, hence ctypes."""
    path = netns if "/" in netns else f"/run/netns/{netns}"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(nsfd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(nsfd)
            result["value"] = fn()
        except BaseException as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def open_tap(ifname: str = "", netns: str | None = None, create: bool | None = None) -> tuple[int, str]:
    """Attach to tap device `ifname` and return (fd, name); the fd is non-blocking and
    close-on-exec. `create`: None creates the device only when no name is given (the kernel
    picks one); False requires an existing device (the toolstack's vifN.M-emu), True creates
    a missing one (it goes away when the fd closes)."""
    if len(ifname.encode()) > 15:
        raise ValueError(f"tap name {ifname!r} is longer than 15 bytes")
    if create is None:
        create = not ifname

    def attach() -> tuple[int, str]:
        if ifname and not create:
            try:
                socket.if_nametoindex(ifname)
            except OSError:
                raise ValueError(f"tap device {ifname} does not exist (the toolstack creates it; "
                                 "or ask for create=on)") from None
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise ValueError(f"cannot open /dev/net/tun: {e.strerror}") from None
        try:
            ifr = struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI)
            res = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            os.close(fd)
            raise ValueError(f"cannot attach tap {ifname or '(new)'}: {e.strerror}") from None
        return fd, res[:16].rstrip(b"\0").decode()

    if netns:
        return _in_netns(netns, attach)
    return attach()


class TapBackend(NetBackend):
    """A Linux tap device: an existing one by name (the toolstack's vifN.M-emu, already in
    a bridge) or a new one. One read/write is one Ethernet frame (IFF_NO_PI)."""

    kind = "tap"

    def __init__(self, ifname: str = "", netns: str | None = None, create: bool | None = None) -> None:
        super().__init__()
        self.fd, self.ifname = open_tap(ifname, netns, create)

    def _recv_one(self) -> bytes | None:
        if self.fd is None:
            return None
        return os.read(self.fd, MAX_FRAME)

    def _send_one(self, frame: bytes) -> None:
        if self.fd is None:
            raise OSError("tap closed")
        os.write(self.fd, frame)


# ---- datagram sockets ---------------------------------------------------------------------
class SocketBackend(NetBackend):
    """One frame per datagram with a UDP or Unix datagram peer (tests, fuzzers, or QEMU's
    `-netdev dgram`). Without a fixed peer, frames go to whoever sent the last datagram."""

    kind = "socket"

    def __init__(self, sock: socket.socket, peer: Any = None) -> None:
        super().__init__()
        sock.setblocking(False)
        self.sock = sock
        self.peer = peer
        self.learned: Any = None
        self.fd = sock.fileno()

    @classmethod
    def udp(cls, remote: tuple[str, int] | None, local: tuple[str, int] | None = None) -> SocketBackend:
        host = (remote or local or ("127.0.0.1", 0))[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if local is not None:
                sock.bind(local)
        except OSError as e:
            sock.close()
            raise ValueError(f"cannot bind UDP {local}: {e.strerror}") from None
        return cls(sock, remote)

    @classmethod
    def unix(cls, path: str | None, peer: str | None = None) -> SocketBackend:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if path:
                sock.bind(path)
        except OSError as e:
            sock.close()
            raise ValueError(f"cannot bind {path}: {e.strerror}") from None
        return cls(sock, peer)

    def recv_frames(self, limit: int = RX_BATCH) -> list[bytes]:
        """NetBackend.recv_frames, straight-line for the usual case: a fixed peer (no sender
        address to learn) and no capture (the per-frame receive path)."""
        if self.peer is None or self.capture is not None:
            return super().recv_frames(limit)
        recv = self.sock.recv
        out: list[bytes] = []
        keep = out.append
        try:
            for _ in range(limit):
                frame = recv(MAX_FRAME)
                if frame:
                    keep(frame)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._read_failed(e)
        return self._received(out)

    def _recv_one(self) -> bytes | None:
        if self.peer is not None:
            return self.sock.recv(MAX_FRAME)  # no sender address to build
        data, addr = self.sock.recvfrom(MAX_FRAME)
        if addr:
            self.learned = addr  # reply to whoever sent last
        return data

    def send(self, frame: bytes) -> None:
        """NetBackend.send, straight-line for the usual case: a fixed peer, nothing waiting,
        no capture (the per-frame transmit path)."""
        peer = self.peer
        if peer is None or self.backlog or self.capture is not None or self.gone:
            super().send(frame)
            return
        try:
            self.sock.sendto(frame, peer)
        except OSError as e:
            self._send_failed(frame, e)
            return
        self.counters["tx frames"] += 1

    def send_many(self, frames: list[bytes]) -> None:
        """send() of each frame, with the checks and the counter once for the batch in the
        usual case (a fixed peer, nothing waiting, no capture). A frame the socket has no room
        for, and every one after it, take send() (the backlog keeps their order)."""
        peer = self.peer
        if peer is None or self.backlog or self.capture is not None or self.gone:
            super().send_many(frames)
            return
        sendto = self.sock.sendto
        sent = 0
        for i, frame in enumerate(frames):
            try:
                sendto(frame, peer)
            except (BlockingIOError, InterruptedError):
                self.counters["tx frames"] += sent
                for rest in frames[i:]:
                    self.send(rest)
                return
            except OSError as e:
                self._send_error(e)
                continue
            sent += 1
        self.counters["tx frames"] += sent

    def _send_one(self, frame: bytes) -> None:
        if self.peer is not None:
            self.sock.sendto(frame, self.peer)
            return
        peer = self.learned
        if peer is None:
            try:
                self.sock.send(frame)  # a connected socket (socketpair, connect())
            except OSError as e:
                if e.errno not in (errno.ENOTCONN, errno.EDESTADDRREQ):
                    raise
                self.counters["tx dropped: no peer"] += 1
            return
        self.sock.sendto(frame, peer)

    def _close_fd(self) -> None:
        self.sock.close()


# ---- streams (QEMU -netdev stream) ----------------------------------------------------------
STREAM_LEN = struct.Struct(">I")
# QEMU's NET_BUFSIZE (4096 + 65536): net_fill_rstate ends the connection on a longer frame
STREAM_MAX_FRAME = 4096 + 65536
STREAM_READ = 65536  # bytes read per readiness callback


class StreamDeframer:
    """QEMU's stream framing, sans I/O: each frame is a 4-byte big-endian length and then
    that many bytes. Holds at most one incomplete frame. A length above STREAM_MAX_FRAME is a
    protocol error, as it is for QEMU (which then drops the connection): `error` is set and
    nothing more is decoded; the frames before it are still returned, as QEMU delivers each
    frame the moment it is complete."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error:
            return []
        buf = self.buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = STREAM_LEN.unpack_from(buf, pos)[0]
            if length > STREAM_MAX_FRAME:
                self.error = f"stream frame of {length} bytes (at most {STREAM_MAX_FRAME})"
                buf.clear()
                return out
            end = pos + 4 + length
            if end > n:
                break
            out.append(bytes(buf[pos + 4 : end]))
            pos = end
        del buf[:pos]
        return out


def stream_frame(frame: bytes) -> bytes:
    return STREAM_LEN.pack(len(frame)) + frame


class StreamBackend(NetBackend):
    """QEMU's `-netdev stream`: frames with a 4-byte big-endian length over a Unix or TCP
    stream, as a client (connects at start, clear error if nobody listens) or as a server
    (listens; one client at a time, the next one is accepted when it leaves, as QEMU's
    listener does). Frames sent while no peer is connected are dropped and counted, as QEMU
    drops them on a link-down netdev. Output that the socket does not take waits in the
    bounded backlog (a partly sent frame is always finished, never dropped: that would break
    the framing); a peer that stops reading costs at most MAX_BACKLOG frames."""

    kind = "stream"
    reliable = True

    def __init__(self, path: str | None = None, addr: tuple[str, int] | None = None,
                 server: bool = False, reconnect: float = 0.0) -> None:
        super().__init__()
        self.path = path
        self.addr = addr
        self.server = server
        # client only, QEMU's reconnect=SECONDS: a failed or lost connection is tried again
        # after that long (the pump keeps the timer: backends have no event loop)
        self.reconnect = reconnect if not server else 0.0
        self.connecting: socket.socket | None = None  # a non-blocking connect under way
        self.listener: socket.socket | None = None
        self.sock: socket.socket | None = None
        self.deframer = StreamDeframer()
        self.frames: collections.deque[bytes] = collections.deque()
        self.connections = 0
        if server:
            self.listener = self._listen()
        else:
            try:
                self._attach(self._connect())
            except ValueError as e:
                if not self.reconnect:
                    raise
                log.warning("%s; trying again every %g s", e, self.reconnect)

    @property
    def wants_reconnect(self) -> bool:
        return bool(self.reconnect) and self.sock is None and self.connecting is None

    def start_connect(self) -> None:
        """Begin a non-blocking connect (the pump calls this when the reconnect delay is
        over); `connecting` is then the fd to watch for writability, unless it finished
        (or failed) at once."""
        sock = self._socket()
        sock.setblocking(False)
        err = sock.connect_ex(self.path if self.path is not None else self.addr)
        if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            self.connecting = sock
        elif err == 0:
            self._attach(sock)
        else:
            self.counters["connect failures"] += 1
            sock.close()

    def finish_connect(self) -> None:
        """The connecting fd became writable: connected, or failed (try again later)."""
        sock, self.connecting = self.connecting, None
        if sock is None:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.counters["connect failures"] += 1
            sock.close()
            return
        log.info("stream %s: connected", self.where)
        self._attach(sock)

    @property
    def where(self) -> str:
        return self.path if self.path is not None else f"{self.addr[0]}:{self.addr[1]}"

    def _socket(self) -> socket.socket:
        if self.path is not None:
            return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        family = socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET
        return socket.socket(family, socket.SOCK_STREAM)

    def _listen(self) -> socket.socket:
        sock = self._socket()
        try:
            if self.path is not None:
                if os.path.exists(self.path) and stat.S_ISSOCK(os.stat(self.path).st_mode):
                    os.unlink(self.path)  # a stale socket, as QEMU's unix_listen does
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.path if self.path is not None else self.addr)
            sock.listen(1)
        except OSError as e:
            sock.close()
            raise ValueError(f"cannot listen on stream {self.where}: {e.strerror}") from None
        sock.setblocking(False)
        if self.addr is not None and self.addr[1] == 0:
            self.addr = sock.getsockname()[:2]
        return sock

    def _connect(self) -> socket.socket:
        sock = self._socket()
        try:
            sock.connect(self.path if self.path is not None else self.addr)
        except OSError as e:
            sock.close()
            raise ValueError(f"cannot connect stream to {self.where}: {e.strerror}") from None
        return sock

    def _attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as QEMU: no Nagle
        self.sock = sock
        self.fd = sock.fileno()
        self.deframer = StreamDeframer()
        self.connections += 1
        if self.on_fds_changed is not None:
            self.on_fds_changed()

    def _detach(self, why: str) -> None:
        """The peer left (or broke the framing): drop the connection and what was queued for
        it; a server listens again."""
        log.info("stream %s: peer gone (%s)", self.where, why)
        self.counters[f"disconnects: {why}"] += 1
        if self.sock is not None:
            self._close(self.sock)
        self.sock = None
        self.fd = None
        if self.backlog:
            self.counters["tx dropped: peer gone"] += len(self.backlog)
            self.backlog.clear()
        self.frames.clear()
        if self.on_fds_changed is not None:
            self.on_fds_changed()

    def _close(self, sock: socket.socket) -> None:
        """Close one of the backend's sockets, telling the pump first (on_fd_closing)."""
        if self.on_fd_closing is not None:
            self.on_fd_closing(sock.fileno())
        sock.close()

    @property
    def connected(self) -> bool:
        return self.sock is not None

    @property
    def ready(self) -> int:
        return len(self.frames)

    def fileno(self) -> int | None:
        if self.sock is not None:
            return self.sock.fileno()
        return self.listener.fileno() if self.listener is not None else None

    def write_fileno(self) -> int | None:
        return self.sock.fileno() if self.sock is not None else None

    # -- reading --------------------------------------------------------------------------
    def recv_frames(self, limit: int = RX_BATCH) -> list[bytes]:
        if self.sock is None:
            if self.listener is not None:
                self._accept()
        elif len(self.frames) < limit:
            self._read()
        out = []
        frames = self.frames
        while frames and len(out) < limit:
            frame = frames.popleft()
            if frame:
                out.append(frame)
            else:
                self.counters["rx empty frames"] += 1
        return self._received(out)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.counters["accept errors"] += 1
            log.warning("stream %s: accept failed: %s", self.where, e)
            return
        log.info("stream %s: peer connected", self.where)
        self._attach(sock)

    def _read(self) -> None:
        try:
            data = self.sock.recv(STREAM_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.counters["read errors"] += 1
            self._detach(e.strerror or str(e))
            return
        if not data:
            self._detach("end of stream")
            return
        self.frames.extend(self.deframer.feed(data))
        if self.deframer.error:
            log.warning("stream %s: %s: connection dropped", self.where, self.deframer.error)
            frames = list(self.frames)
            self._detach("oversized frame")
            self.frames.extend(frames)  # complete before the error: delivered, as by QEMU

    # -- writing --------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        if self.capture is not None:
            self.capture.write(frame)
            self.capture.flush()
        if self.sock is None:
            self.counters["tx dropped: not connected"] += 1
            return
        data = stream_frame(frame)
        if self.backlog:
            self._queue(data)
            return
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._send_error(e)
            return
        self.counters["tx frames"] += 1
        if n < len(data):
            # the head of the backlog may be a partly sent frame; it is always finished
            self.backlog.append(data[n:])
            if self.on_backlog is not None:
                self.on_backlog()

    def _queue(self, data: bytes) -> None:
        if len(self.backlog) >= MAX_BACKLOG:
            self.counters["tx dropped: backlog full"] += 1
            return
        self.counters["tx frames"] += 1
        self.backlog.append(data)

    def _send_error(self, e: OSError) -> None:
        """A send failed for good: counted, and the connection given up."""
        self.counters["tx errors"] += 1
        self._detach(e.strerror or str(e))

    def flush(self) -> None:
        backlog = self.backlog
        while backlog and self.sock is not None:
            head = backlog[0]
            try:
                n = self.sock.send(head)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._send_error(e)
                break
            if n < len(head):
                backlog[0] = head[n:]
                break
            backlog.popleft()
        if self.capture is not None:
            self.capture.flush()

    def close(self) -> None:
        self.reconnect = 0.0
        if self.connecting is not None:
            self._close(self.connecting)
            self.connecting = None
        if self.sock is not None:
            self._close(self.sock)
            self.sock = None
        if self.listener is not None:
            self._close(self.listener)
            self.listener = None
            if self.path is not None:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
        self.fd = None
        if self.capture is not None:
            self.capture.close()


# ---- the pump -----------------------------------------------------------------------------
class NetPump(FdPump):
    """Moves frames between a backend and a NIC on an asyncio loop.

    Input: the backend's fd is watched with add_reader; frames go to `nic.receive_many`;
    those it has no room for wait here (at most MAX_PENDING) and are offered again after the
    NIC calls `on_rx_space` (deferred with call_soon, so the device is never re-entered from
    inside an ioreq). Beyond the bound: a datagram backend (tap, udp, unix) keeps reading and
    the NIC counts the frames as missed (MPC, RXO), as a full packet buffer does; a stream
    backend (`reliable`) stops reading instead, so TCP/Unix flow control holds the peer back
    (QEMU's stream netdev does the same). Output: when the backend's backlog fills, its fd is
    watched with add_writer until it drains.

    `on_effects` is called after frames were pushed into the NIC outside an ioreq, so the
    caller sends the IRQ dm_ops the machine queued."""

    def __init__(self, loop: Any, backend: NetBackend, nic: Any,
                 on_effects: Callable[[], None] | None = None) -> None:
        super().__init__(loop, backend, on_effects)
        self.nic = nic
        self.pending: collections.deque[bytes] = collections.deque()
        self._feed_scheduled = False
        self._read_scheduled = False
        self._reconnect_handle: Any = None
        self._connect_fd: int | None = None
        nic.transmit = backend.send
        nic.transmit_batch = getattr(backend, "send_many", None)
        nic.on_rx_space = self._rx_space
        self.start()
        self._maybe_reconnect()

    # -- stream clients: reconnect (QEMU reconnect=SECONDS) -------------------------------
    def _maybe_reconnect(self) -> None:
        if (self.closed or self._reconnect_handle is not None
                or not getattr(self.backend, "wants_reconnect", False)):
            return
        self._reconnect_handle = self.loop.call_later(self.backend.reconnect, self._reconnect)

    def _reconnect(self) -> None:
        self._reconnect_handle = None
        if self.closed or not self.backend.wants_reconnect:
            return
        self.backend.start_connect()  # success calls on_fds_changed
        sock = self.backend.connecting
        if sock is not None:
            self._connect_fd = sock.fileno()
            self.loop.add_writer(self._connect_fd, self._connected)
        else:
            self._maybe_reconnect()

    def _connected(self) -> None:
        if self._connect_fd is not None:
            self.loop.remove_writer(self._connect_fd)
            self._connect_fd = None
        self.backend.finish_connect()
        self._maybe_reconnect()  # failed: try again after the delay

    def _fds_changed(self) -> None:
        super()._fds_changed()
        self._maybe_reconnect()

    def _reading_paused(self) -> bool:
        backend = self.backend
        return backend.gone or (backend.reliable and len(self.pending) >= MAX_PENDING)

    def _readable(self) -> None:
        self._read_scheduled = False
        if self.closed:
            return
        backend = self.backend
        limit = RX_BATCH
        if backend.reliable:
            limit = min(limit, MAX_PENDING - len(self.pending))
            if limit <= 0:
                self._sync_reader()
                return
        frames = backend.recv_frames(limit)
        if backend.gone:
            self._backend_gone()
        if frames:
            direct = not self.pending
            if direct:
                # the usual case: straight into the NIC as one batch; what it has no room
                # for waits (the NIC counted RNBC once and calls on_rx_space later)
                frames = frames[self.nic.receive_many(frames):]
            for frame in frames:
                if len(self.pending) >= MAX_PENDING:
                    backend.counters["rx missed: queue full"] += 1
                    self.nic.rx_missed()
                    continue
                self.pending.append(frame)
            if not direct:
                self._feed(notify=False)
        self._read_leftovers()
        self._sync_reader()
        self._effects()

    def _read_leftovers(self) -> None:
        """Frames a stream backend decoded from an earlier read wait in it (`ready`): no fd
        readiness will announce them, so read again on the next loop turn (once, and not
        while reading is paused)."""
        if self.backend.ready and not self._read_scheduled and not self._reading_paused():
            self._read_scheduled = True
            self.loop.call_soon(self._readable)

    def _backend_gone(self) -> None:
        """The backend cannot deliver any more (a deleted tap): stop watching its fd, which
        would stay readable for ever, and pull the NIC's cable as QMP set_link off does, so
        the guest sees link down (e1000: STATUS.LU clear, ICR.LSC) and its transmits are
        dropped and counted. Frames already queued for the NIC are still delivered."""
        self._sync_reader()
        set_link = getattr(self.nic, "set_link", None)
        if callable(set_link):
            set_link(False)
        self._effects()

    def _feed(self, notify: bool = True) -> None:
        self._feed_scheduled = False
        if self.closed:
            return
        pending = self.pending
        if pending:
            done = self.nic.receive_many(itertools.islice(pending, FEED_BATCH))
            for _ in range(done):
                pending.popleft()
            if done == FEED_BATCH and pending:
                self._schedule_feed()
        if self.backend.reliable:
            self._sync_reader()  # room again: resume reading
            self._read_leftovers()
        if notify:
            self._effects()

    def _schedule_feed(self) -> None:
        if not self._feed_scheduled and not self.closed:
            self._feed_scheduled = True
            self.loop.call_soon(self._feed)

    def _rx_space(self) -> None:
        if self.pending:
            self._schedule_feed()

    def close(self) -> None:
        if not self.closed:
            self.nic.on_rx_space = None
            if self._reconnect_handle is not None:
                self._reconnect_handle.cancel()
                self._reconnect_handle = None
            if self._connect_fd is not None:
                self.loop.remove_writer(self._connect_fd)
                self._connect_fd = None
        super().close()


# ---- specs --------------------------------------------------------------------------------
def open_backend(kind: str, *, ifname: str = "", netns: str | None = None, path: str | None = None,
                 peer: str | None = None, capture: str | None = None,
                 create: bool | None = None, addr: str | None = None,
                 server: bool = False, reconnect: float = 0.0) -> NetBackend:
    """Open a backend by kind: `tap` (ifname), `udp` (peer host:port, path = local
    host:port), `unix` (path = our socket, peer = theirs), `dgram` (QEMU's name for those
    two: udp when the addresses are HOST:PORT, else unix), `stream` (path = a Unix socket or
    addr = HOST:PORT for TCP; server: listen instead of connect; reconnect: seconds between
    attempts of a client), `null`; `capture` adds a pcap."""
    if kind == "dgram":
        kind = "udp" if all(_is_hostport(a) for a in (peer, path) if a) else "unix"
    if kind == "tap":
        backend: NetBackend = TapBackend(ifname, netns, create)
    elif kind == "udp":
        backend = SocketBackend.udp(_hostport(peer) if peer else None,
                                    _hostport(path) if path else None)
    elif kind == "unix":
        backend = SocketBackend.unix(path, peer)
    elif kind == "stream":
        if (path is None) == (addr is None):
            raise ValueError("stream backend needs path=SOCKET (Unix) or addr=HOST:PORT (TCP)")
        backend = StreamBackend(path=path, addr=_hostport(addr) if addr else None, server=server,
                                reconnect=reconnect)
    elif kind in ("null", "none"):
        backend = NullBackend()
    else:
        raise ValueError(f"unknown network backend {kind!r}: expected tap, stream, dgram, udp, unix "
                         "or null")
    if capture:
        try:
            backend.capture = PcapWriter(capture)
        except OSError as e:
            backend.close()
            raise ValueError(f"cannot write capture {capture}: {e.strerror}") from None
    return backend


def _is_hostport(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep) and port.isdigit() and "/" not in text


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)
