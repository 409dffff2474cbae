"""An asyncio NBD client (github.com/NetworkBlockDevice/nbd doc/proto.md) and `NbdDisk`.

Handshake: fixed newstyle only (oldstyle is refused with a clear error). The client asks for
NBD_OPT_STRUCTURED_REPLY, then NBD_OPT_GO with the export name and an NBD_INFO_BLOCK_SIZE
request; NBD_INFO_EXPORT gives the size and transmission flags. A server without NBD_OPT_GO
(NBD_REP_ERR_UNSUP) gets NBD_OPT_EXPORT_NAME instead.

Transmission: READ (structured replies: OFFSET_DATA, OFFSET_HOLE, ERROR, ERROR_OFFSET; simple
replies when structured replies were not negotiated), WRITE (optionally FUA), FLUSH, TRIM,
WRITE_ZEROES and DISC. Requests carry a 64-bit cookie and are pipelined: any number up to
`max_inflight` are on the wire at once and complete in whatever order the server answers.
One reader task demultiplexes replies by cookie; READ payloads are received with
`sock_recv_into` straight into the caller's memoryviews (guest RAM for bus-master DMA), and
WRITE payloads leave with one `sendmsg` of header + caller's buffers: data never goes through
an intermediate `bytes`. Requests larger than the server's maximum payload (NBD_INFO_BLOCK_SIZE,
else the protocol's 32 MiB) are split and pipelined.

Errors: a server error becomes `OSError(errno)` (the NBD error numbers are Linux's; unknown
ones become EIO) carrying the server's message. A protocol violation or a lost connection
fails every pending request with EIO and the connection is dead (`broken`) from then on.

URIs (the NBD URI convention of nbd/doc/uri.md, as QEMU and libnbd write them):
    nbd+unix:///EXPORT?socket=/path/to.sock
    nbd://HOST[:PORT]/EXPORT          (port 10809 by default)

`NbdDisk` puts the client behind the `AsyncDisk` interface (asyncdisk.py). The client runs on
the disk's own I/O thread with its own event loop (like a QEMU iothread), so that
- the synchronous `DiskBackend` facade (used by the IDE device until it is converted) can
  block on a request without dead-locking the daemon's loop, and
- a slow or stuck server delays only this disk's completions; the daemon's loop gets them
  through the completion port like any other disk's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .asyncdisk import AsyncDisk, CompletionPort, Done, Views, view_range, zero_views
from .disk import IOV_MAX, _advance

log = logging.getLogger("devmodel.backends.nbd")

NBD_DEFAULT_PORT = 10809

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OLDSTYLE_MAGIC = 0x00420281861253
REPLY_MAGIC = 0x3E889045565A9

# handshake flags (server) / client flags
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

# options
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8

# option replies
REP_ACK = 1
REP_INFO = 3
REP_ERR_BIT = 1 << 31
REP_ERR_UNSUP = REP_ERR_BIT | 1
REP_ERR_POLICY = REP_ERR_BIT | 2
REP_ERR_INVALID = REP_ERR_BIT | 3
REP_ERR_PLATFORM = REP_ERR_BIT | 4
REP_ERR_TLS_REQD = REP_ERR_BIT | 5
REP_ERR_UNKNOWN = REP_ERR_BIT | 6
REP_ERR_SHUTDOWN = REP_ERR_BIT | 7
REP_ERR_BLOCK_SIZE_REQD = REP_ERR_BIT | 8
REP_ERR_TOO_BIG = REP_ERR_BIT | 9

INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

# transmission flags
TF_HAS_FLAGS = 1 << 0
TF_READ_ONLY = 1 << 1
TF_SEND_FLUSH = 1 << 2
TF_SEND_FUA = 1 << 3
TF_ROTATIONAL = 1 << 4
TF_SEND_TRIM = 1 << 5
TF_SEND_WRITE_ZEROES = 1 << 6
TF_SEND_DF = 1 << 7
TF_CAN_MULTI_CONN = 1 << 8

# commands and command flags
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1

REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, cookie, offset, length: 28 bytes
SIMPLE_REPLY = struct.Struct(">IIQ")  # magic, error, cookie: 16 bytes
STRUCTURED_REPLY = struct.Struct(">IHHQI")  # magic, flags, type, cookie, length: 20 bytes
OPTION = struct.Struct(">QII")
OPTION_REPLY = struct.Struct(">QIII")

# The protocol's default maximum payload (2^25) when the server says nothing.
DEFAULT_MAX_PAYLOAD = 32 << 20
# Bounds on what a server may make us buffer (design rule 5): option replies and error chunks
# are small; anything bigger is a broken or hostile server.
MAX_OPTION_REPLY = 64 << 10
MAX_CHUNK_METADATA = 64 << 10
# TRIM/WRITE_ZEROES lengths are 32-bit; split bigger requests at this (aligned) size.
MAX_ZERO_REQUEST = 1 << 30
MAX_HANDSHAKE_OPTIONS = 16
DEFAULT_MAX_INFLIGHT = 64
_KNOWN_ERRNOS = {errno.EPERM, errno.EIO, errno.ENOMEM, errno.EINVAL, errno.ENOSPC, errno.EOVERFLOW,
                 errno.ENOTSUP, errno.ESHUTDOWN}
_REP_ERRNO = {REP_ERR_UNSUP: errno.ENOTSUP, REP_ERR_POLICY: errno.EACCES, REP_ERR_INVALID: errno.EINVAL,
              REP_ERR_PLATFORM: errno.ENOTSUP, REP_ERR_TLS_REQD: errno.EACCES,
              REP_ERR_UNKNOWN: errno.ENOENT, REP_ERR_SHUTDOWN: errno.ESHUTDOWN,
              REP_ERR_BLOCK_SIZE_REQD: errno.EINVAL, REP_ERR_TOO_BIG: errno.EFBIG}
_REP_NAMES = {REP_ERR_UNSUP: "unsupported", REP_ERR_POLICY: "refused by policy",
              REP_ERR_INVALID: "invalid", REP_ERR_PLATFORM: "not supported on this platform",
              REP_ERR_TLS_REQD: "TLS required", REP_ERR_UNKNOWN: "unknown export",
              REP_ERR_SHUTDOWN: "server shutting down", REP_ERR_BLOCK_SIZE_REQD: "block size required",
              REP_ERR_TOO_BIG: "too big"}


class NbdProtocolError(OSError):
    def __init__(self, msg: str) -> None:
        super().__init__(errno.EIO, f"NBD protocol error: {msg}")


# ---- URIs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NbdUri:
    export: str
    socket_path: str | None = None  # nbd+unix
    host: str | None = None  # nbd (TCP)
    port: int = NBD_DEFAULT_PORT

    def __str__(self) -> str:
        if self.socket_path is not None:
            return f"nbd+unix:///{self.export}?socket={self.socket_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"nbd://{host}:{self.port}/{self.export}"


def parse_nbd_uri(uri: str) -> NbdUri:
    """`nbd+unix:///EXPORT?socket=PATH` or `nbd://HOST[:PORT]/EXPORT`; ValueError says what is wrong."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(f"NBD URI {uri!r}: expected nbd://HOST[:PORT]/EXPORT or "
                         "nbd+unix:///EXPORT?socket=PATH")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("nbds", "nbds+unix", "nbds+vsock", "nbd+vsock"):
        raise ValueError(f"NBD URI {uri!r}: scheme {scheme!r} is not supported (no TLS, no vsock)")
    if parts.fragment:
        raise ValueError(f"NBD URI {uri!r}: a fragment (#...) is not allowed")
    export = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if len(export.encode()) > 4096:
        raise ValueError(f"NBD URI {uri!r}: export name longer than 4096 bytes")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    if scheme == "nbd+unix":
        if parts.netloc:
            raise ValueError(f"NBD URI {uri!r}: nbd+unix takes no host (write nbd+unix:///EXPORT?socket=PATH)")
        sockets = query.pop("socket", [])
        if len(sockets) != 1 or not sockets[0]:
            raise ValueError(f"NBD URI {uri!r}: nbd+unix needs exactly one ?socket=PATH")
        if query:
            raise ValueError(f"NBD URI {uri!r}: unknown query parameter(s) {sorted(query)}")
        return NbdUri(export=export, socket_path=sockets[0])
    if scheme in ("nbd", "nbd+tcp"):
        if query:
            raise ValueError(f"NBD URI {uri!r}: unknown query parameter(s) {sorted(query)}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError as e:
            raise ValueError(f"NBD URI {uri!r}: bad port ({e})") from None
        if not host:
            raise ValueError(f"NBD URI {uri!r}: no host (nbd://HOST[:PORT]/EXPORT)")
        if parts.username or parts.password:
            raise ValueError(f"NBD URI {uri!r}: user names and passwords are not supported")
        return NbdUri(export=export, host=host, port=port or NBD_DEFAULT_PORT)
    raise ValueError(f"NBD URI {uri!r}: scheme {parts.scheme!r} is not nbd or nbd+unix")


def _os_error(code: int, what: str) -> OSError:
    e = code if code in _KNOWN_ERRNOS else errno.EIO
    return OSError(e, f"{what}: {os.strerror(e)}" if what else os.strerror(e))


# ---- the client ---------------------------------------------------------------------------
class _Request:
    __slots__ = ("cmd", "offset", "length", "views", "future", "error", "covered")

    def __init__(self, cmd: int, offset: int, length: int, views: list[memoryview] | None,
                 future: asyncio.Future) -> None:
        self.cmd = cmd
        self.offset = offset
        self.length = length
        self.views = views
        self.future = future
        self.error: OSError | None = None
        self.covered = 0


class NbdClient:
    """One NBD connection in transmission phase. Create with `await NbdClient.connect(uri)`.
    All methods must be called on the loop the client was connected on."""

    def __init__(self, sock: socket.socket, uri: NbdUri, loop: asyncio.AbstractEventLoop,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self.sock = sock
        self.uri = uri
        self.loop = loop
        self.size = 0
        self.flags = 0
        self.structured = False
        self.min_block = 1
        self.preferred_block = 4096
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.broken: OSError | None = None
        self._pending: dict[int, _Request] = {}
        self._next_cookie = 1
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max_inflight)
        self._reader: asyncio.Task | None = None
        self._hdr = bytearray(STRUCTURED_REPLY.size)
        self._closing = False

    # -- flags
    @property
    def readonly(self) -> bool:
        return bool(self.flags & TF_READ_ONLY)

    @property
    def can_flush(self) -> bool:
        return bool(self.flags & TF_SEND_FLUSH)

    @property
    def can_fua(self) -> bool:
        return bool(self.flags & TF_SEND_FUA)

    @property
    def can_trim(self) -> bool:
        return bool(self.flags & TF_SEND_TRIM)

    @property
    def can_write_zeroes(self) -> bool:
        return bool(self.flags & TF_SEND_WRITE_ZEROES)

    # -- connecting
    @classmethod
    async def connect(cls, uri: str | NbdUri, *, timeout: float = 10.0, structured: bool = True,
                      max_inflight: int = DEFAULT_MAX_INFLIGHT) -> NbdClient:
        u = parse_nbd_uri(uri) if isinstance(uri, str) else uri
        loop = asyncio.get_running_loop()
        if u.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr: Any = u.socket_path
        else:
            infos = await loop.getaddrinfo(u.host, u.port, type=socket.SOCK_STREAM)
            if not infos:
                raise OSError(errno.EHOSTUNREACH, f"{u}: cannot resolve {u.host}")
            family, type_, proto, _, addr = infos[0]
            sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        client = cls(sock, u, loop, max_inflight)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(client._handshake(structured), timeout)
        except TimeoutError:
            sock.close()
            raise OSError(errno.ETIMEDOUT, f"{u}: NBD handshake timed out after {timeout} s") from None
        except OSError as e:
            sock.close()
            raise OSError(e.errno or errno.EIO, f"{u}: {e.strerror or e}") from None
        except BaseException:
            sock.close()
            raise
        client._reader = loop.create_task(client._read_replies())
        return client

    async def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        await self._recv_into(memoryview(buf))
        return buf

    async def _recv_into(self, view: memoryview) -> None:
        sock = self.sock
        while len(view):
            try:
                n = sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                n = await self.loop.sock_recv_into(sock, view)
            if n == 0:
                raise ConnectionResetError(errno.ECONNRESET, "NBD server closed the connection")
            view = view[n:]

    async def _send_option(self, opt: int, data: bytes = b"") -> None:
        await self.loop.sock_sendall(self.sock, OPTION.pack(IHAVEOPT, opt, len(data)) + data)

    async def _option_reply(self, opt: int) -> tuple[int, bytes]:
        magic, ropt, rtype, length = OPTION_REPLY.unpack(await self._recv_exact(OPTION_REPLY.size))
        if magic != REPLY_MAGIC:
            raise NbdProtocolError(f"bad option reply magic {magic:#x}")
        if ropt != opt:
            raise NbdProtocolError(f"reply to option {ropt} while waiting for option {opt}")
        if length > MAX_OPTION_REPLY:
            raise NbdProtocolError(f"option reply of {length} bytes")
        return rtype, bytes(await self._recv_exact(length)) if length else b""

    async def _handshake(self, structured: bool) -> None:
        magic, second = struct.unpack(">QQ", await self._recv_exact(16))
        if magic != NBDMAGIC:
            raise NbdProtocolError(f"not an NBD server (magic {magic:#x})")
        if second == OLDSTYLE_MAGIC:
            raise NbdProtocolError("the server speaks the oldstyle handshake, which is not supported")
        if second != IHAVEOPT:
            raise NbdProtocolError(f"bad newstyle magic {second:#x}")
        (hflags,) = struct.unpack(">H", await self._recv_exact(2))
        if not hflags & FLAG_FIXED_NEWSTYLE:
            raise NbdProtocolError("the server does not support fixed newstyle negotiation")
        no_zeroes = bool(hflags & FLAG_NO_ZEROES)
        cflags = FLAG_C_FIXED_NEWSTYLE | (FLAG_C_NO_ZEROES if no_zeroes else 0)
        await self.loop.sock_sendall(self.sock, struct.pack(">I", cflags))

        if structured:
            await self._send_option(OPT_STRUCTURED_REPLY)
            rtype, _ = await self._option_reply(OPT_STRUCTURED_REPLY)
            self.structured = rtype == REP_ACK
            if not self.structured and not rtype & REP_ERR_BIT:
                raise NbdProtocolError(f"unexpected reply {rtype} to NBD_OPT_STRUCTURED_REPLY")

        name = self.uri.export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, INFO_BLOCK_SIZE)
        await self._send_option(OPT_GO, data)
        got_export = False
        for _ in range(MAX_HANDSHAKE_OPTIONS):
            rtype, payload = await self._option_reply(OPT_GO)
            if rtype == REP_INFO:
                if len(payload) < 2:
                    raise NbdProtocolError("NBD_REP_INFO without a type")
                (itype,) = struct.unpack_from(">H", payload)
                if itype == INFO_EXPORT:
                    if len(payload) != 12:
                        raise NbdProtocolError(f"NBD_INFO_EXPORT of {len(payload)} bytes")
                    self.size, self.flags = struct.unpack_from(">QH", payload, 2)
                    got_export = True
                elif itype == INFO_BLOCK_SIZE and len(payload) == 14:
                    self.min_block, self.preferred_block, mx = struct.unpack_from(">III", payload, 2)
                    self.max_payload = max(self.min_block, min(mx, DEFAULT_MAX_PAYLOAD))
                continue  # other information types are ignored, as the protocol says
            if rtype == REP_ACK:
                if not got_export:
                    raise NbdProtocolError("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
                return
            if rtype == REP_ERR_UNSUP:
                await self._export_name(name, no_zeroes)
                return
            if rtype & REP_ERR_BIT:
                text = payload.decode(errors="replace")
                what = _REP_NAMES.get(rtype, f"error {rtype & ~REP_ERR_BIT}")
                raise OSError(_REP_ERRNO.get(rtype, errno.EIO),
                              f"export {self.uri.export!r}: {what}" + (f" ({text})" if text else ""))
            raise NbdProtocolError(f"unexpected reply {rtype} to NBD_OPT_GO")
        raise NbdProtocolError("too many NBD_REP_INFO replies")

    async def _export_name(self, name: bytes, no_zeroes: bool) -> None:
        """The old way into transmission, for servers without NBD_OPT_GO."""
        await self._send_option(OPT_EXPORT_NAME, name)
        self.size, self.flags = struct.unpack(">QH", await self._recv_exact(10))
        if not no_zeroes:
            await self._recv_exact(124)

    # -- transmission: replies
    def _fail_all(self, err: OSError) -> None:
        if self.broken is None:
            self.broken = err
        pending, self._pending = self._pending, {}
        for req in pending.values():
            if not req.future.done():
                req.future.set_exception(OSError(err.errno, err.strerror))

    async def _read_replies(self) -> None:
        try:
            while True:
                await self._read_one()
        except asyncio.CancelledError:
            self._fail_all(OSError(errno.ESHUTDOWN, "NBD connection closed"))
            raise
        except OSError as e:
            if not self._closing:
                log.error("%s: %s", self.uri, e)
            self._fail_all(e if isinstance(e, NbdProtocolError)
                           else OSError(errno.EIO, f"NBD connection lost: {e}"))
        except Exception as e:  # a bug of ours: fail everything rather than hang a request
            log.exception("%s: NBD reader failed", self.uri)
            self._fail_all(OSError(errno.EIO, f"NBD client internal error: {e}"))
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    async def _read_one(self) -> None:
        hdr = memoryview(self._hdr)
        await self._recv_into(hdr[:16])
        (magic,) = struct.unpack_from(">I", hdr)
        if magic == SIMPLE_REPLY_MAGIC:
            _, error, cookie = SIMPLE_REPLY.unpack_from(hdr)
            req = self._pending.pop(cookie, None)
            if req is None:
                raise NbdProtocolError(f"simple reply for unknown cookie {cookie}")
            if error:
                self._complete(req, _os_error(error, f"NBD {_CMD_NAMES.get(req.cmd)} failed"))
                return
            if req.cmd == CMD_READ:
                if self.structured:
                    raise NbdProtocolError("simple reply with data to a READ after structured replies")
                for v in req.views or ():
                    await self._recv_into(v)
            self._complete(req, None)
            return
        if magic != STRUCTURED_REPLY_MAGIC:
            raise NbdProtocolError(f"bad reply magic {magic:#x}")
        await self._recv_into(hdr[16:20])
        _, flags, rtype, cookie, length = STRUCTURED_REPLY.unpack_from(hdr)
        if not self.structured:
            raise NbdProtocolError("structured reply that was not negotiated")
        req = self._pending.get(cookie)
        if req is None:
            raise NbdProtocolError(f"structured reply for unknown cookie {cookie}")
        if rtype == REPLY_TYPE_OFFSET_DATA and req.cmd == CMD_READ and length > 8:
            (off,) = struct.unpack(">Q", await self._recv_exact(8))
            n = length - 8
            rel = off - req.offset
            if rel < 0 or rel + n > req.length:
                raise NbdProtocolError(f"data chunk [{off:#x}+{n:#x}] outside the request")
            for v in view_range(req.views or (), rel, n):
                await self._recv_into(v)
            req.covered += n
        elif rtype == REPLY_TYPE_OFFSET_HOLE and req.cmd == CMD_READ and length == 12:
            off, n = struct.unpack(">QI", await self._recv_exact(12))
            rel = off - req.offset
            if n == 0 or rel < 0 or rel + n > req.length:
                raise NbdProtocolError(f"hole chunk [{off:#x}+{n:#x}] outside the request")
            zero_views(view_range(req.views or (), rel, n))
            req.covered += n
        elif rtype & (1 << 15):
            if length < 6 or length > MAX_CHUNK_METADATA:
                raise NbdProtocolError(f"error chunk of {length} bytes")
            payload = await self._recv_exact(length)
            err, msglen = struct.unpack_from(">IH", payload)
            if msglen > length - 6:
                raise NbdProtocolError("error message longer than its chunk")
            msg = bytes(payload[6 : 6 + msglen]).decode(errors="replace")
            what = f"NBD {_CMD_NAMES.get(req.cmd)} failed" + (f" ({msg})" if msg else "")
            if rtype == REPLY_TYPE_ERROR_OFFSET and length >= 14 + msglen:
                (eoff,) = struct.unpack_from(">Q", payload, 6 + msglen)
                what += f" at offset {eoff:#x}"
            if req.error is None:
                req.error = _os_error(err or errno.EIO, what)
        elif rtype == REPLY_TYPE_NONE:
            if length:
                raise NbdProtocolError("NBD_REPLY_TYPE_NONE with a payload")
        else:
            # A chunk type we did not ask for (or data for a non-READ): a broken server.
            raise NbdProtocolError(f"unexpected chunk type {rtype} (length {length}) "
                                   f"for {_CMD_NAMES.get(req.cmd)}")
        if flags & REPLY_FLAG_DONE:
            del self._pending[cookie]
            err = req.error
            if err is None and req.cmd == CMD_READ and req.covered < req.length:
                err = OSError(errno.EIO, f"NBD READ returned {req.covered} of {req.length} bytes")
            self._complete(req, err)

    @staticmethod
    def _complete(req: _Request, err: OSError | None) -> None:
        if req.future.done():
            return
        if err is None:
            req.future.set_result(None)
        else:
            req.future.set_exception(err)

    # -- transmission: requests
    async def _request(self, cmd: int, offset: int, length: int, flags: int = 0,
                       views: list[memoryview] | None = None, payload: list[memoryview] | None = None
                       ) -> None:
        if self.broken is not None:
            raise OSError(self.broken.errno or errno.EIO, f"NBD connection is down: {self.broken.strerror}")
        if self._closing:
            raise OSError(errno.ESHUTDOWN, "NBD client is closing")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise OSError(errno.EINVAL, f"NBD request [{offset:#x}+{length:#x}] beyond the export "
                                        f"({self.size:#x} bytes)")
        async with self._slots:
            cookie = self._next_cookie
            self._next_cookie = (cookie + 1) & 0xFFFFFFFFFFFFFFFF or 1
            fut = self.loop.create_future()
            req = _Request(cmd, offset, length, views, fut)
            self._pending[cookie] = req
            hdr = REQUEST.pack(REQUEST_MAGIC, flags, cmd, cookie, offset, length)
            try:
                async with self._send_lock:
                    await self._sendmsg_all([memoryview(hdr), *(payload or ())])
            except OSError as e:
                self._pending.pop(cookie, None)
                self._fail_all(OSError(errno.EIO, f"NBD send failed: {e}"))
                raise OSError(errno.EIO, f"NBD send failed: {e}") from None
            await fut

    async def _sendmsg_all(self, bufs: list[memoryview]) -> None:
        sock = self.sock
        pending = [b.cast("B") if b.format != "B" else b for b in bufs if len(b)]
        while pending:
            try:
                n = sock.sendmsg(pending[:IOV_MAX])
            except (BlockingIOError, InterruptedError):
                await self._writable()
                continue
            pending = _advance(pending, n)

    async def _writable(self) -> None:
        fut = self.loop.create_future()
        fd = self.sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self.loop.add_writer(fd, ready)
        try:
            await fut
        finally:
            self.loop.remove_writer(fd)

    def _pieces(self, offset: int, views: Views, limit: int) -> list[tuple[int, list[memoryview], int]]:
        """Split a buffer list into requests of at most `limit` bytes."""
        vs = [memoryview(b).cast("B") for b in views if len(b)]
        total = sum(len(v) for v in vs)
        out = []
        pos = 0
        while pos < total:
            n = min(limit, total - pos)
            out.append((offset + pos, view_range(vs, pos, n), n))
            pos += n
        return out

    async def read_into(self, offset: int, views: Views) -> None:
        """Fill `views` from the export at `offset`; the data lands in them directly."""
        pieces = self._pieces(offset, views, self.max_payload)
        await _gather([self._request(CMD_READ, off, n, views=vs) for off, vs, n in pieces])

    async def write(self, offset: int, views: Views, fua: bool = False) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri}: the export is read-only")
        flags = CMD_FLAG_FUA if fua and self.can_fua else 0
        pieces = self._pieces(offset, views, self.max_payload)
        await _gather([self._request(CMD_WRITE, off, n, flags, payload=vs) for off, vs, n in pieces])
        if fua and not flags:
            await self.flush()

    async def flush(self) -> None:
        if self.can_flush and not self.readonly:
            await self._request(CMD_FLUSH, 0, 0)

    async def trim(self, offset: int, length: int) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri}: the export is read-only")
        if not self.can_trim:
            return  # advisory
        await _gather([self._request(CMD_TRIM, off, n) for off, n in _ranges(offset, length)])

    async def write_zeroes(self, offset: int, length: int, no_hole: bool = False,
                           fua: bool = False) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri}: the export is read-only")
        if not self.can_write_zeroes:
            raise OSError(errno.ENOTSUP, f"{self.uri}: the server does not offer WRITE_ZEROES")
        flags = (CMD_FLAG_NO_HOLE if no_hole else 0) | (CMD_FLAG_FUA if fua and self.can_fua else 0)
        await _gather([self._request(CMD_WRITE_ZEROES, off, n, flags) for off, n in _ranges(offset, length)])

    async def close(self) -> None:
        """Soft disconnect: wait for pending requests, send NBD_CMD_DISC, close."""
        if self._closing:
            return
        self._closing = True
        pending = [r.future for r in self._pending.values()]
        if pending:
            await asyncio.wait(pending, timeout=10.0)
        if self.broken is None:
            try:
                async with self._send_lock:
                    await self._sendmsg_all([memoryview(REQUEST.pack(REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))])
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
            except (TimeoutError, Exception):
                self._reader.cancel()
        try:
            self.sock.close()
        except OSError:
            pass


_CMD_NAMES = {CMD_READ: "READ", CMD_WRITE: "WRITE", CMD_DISC: "DISC", CMD_FLUSH: "FLUSH",
              CMD_TRIM: "TRIM", CMD_WRITE_ZEROES: "WRITE_ZEROES"}


def _ranges(offset: int, length: int) -> list[tuple[int, int]]:
    out = []
    while length > 0:
        n = min(length, MAX_ZERO_REQUEST)
        out.append((offset, n))
        offset += n
        length -= n
    return out


async def _gather(coros: list) -> None:
    """Run requests concurrently (pipelined); raise the first error after all have finished."""
    if len(coros) == 1:
        await coros[0]
        return
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


# ---- NbdDisk: the client behind AsyncDisk, on its own I/O thread --------------------------
def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


class NbdDisk(AsyncDisk):
    """An NBD export as a disk. `owner` (e.g. a QemuNbd server) is closed after the client."""

    def __init__(self, uri: str | NbdUri, readonly: bool = False, *, timeout: float = 10.0,
                 max_inflight: int = 16, completions: CompletionPort | None = None,
                 owner: Any = None, connect_retry: float = 0.0, structured: bool = True) -> None:
        self.uri = parse_nbd_uri(uri) if isinstance(uri, str) else uri
        self.name = str(self.uri)
        super().__init__(max_inflight, completions)
        self.owner = owner
        self.timeout = timeout
        self.structured = structured
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"nbd-{self.uri.export}",
                                        daemon=True)
        self._thread.start()
        try:
            self.client: NbdClient = self._call(self._connect(connect_retry), timeout + connect_retry + 1)
        except BaseException:
            self._stop_loop()
            raise
        self.readonly = readonly or self.client.readonly

    async def _connect(self, retry: float) -> NbdClient:
        deadline = self._loop.time() + retry
        while True:
            try:
                return await NbdClient.connect(self.uri, timeout=self.timeout, structured=self.structured)
            except OSError as e:
                # A server that is starting (socket not yet listening) is retried briefly.
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED) or self._loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.01)

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise OSError(errno.ETIMEDOUT, f"{self.uri}: no answer in {timeout} s") from None

    @property
    def size(self) -> int:
        return self.client.size

    def __repr__(self) -> str:
        return f"NbdDisk({str(self.uri)!r}, readonly={self.readonly}, size={self.size})"

    # -- asynchronous API
    def _submit(self, done: Done, coro_fn: Callable[[], Any]) -> None:
        self._begin()
        port = self.completions
        try:
            fut = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)
        except RuntimeError:
            self._end()
            raise OSError(errno.EBADF, f"{self.uri}: disk is closed") from None
        if port.inline:
            try:
                fut.result()
                err = None
            except OSError as e:
                err = e
            except Exception as e:
                err = OSError(errno.EIO, f"{self.uri}: {e}")
            self._finish(port, done, err)
            return

        def finished(f: concurrent.futures.Future) -> None:
            err: OSError | None = None
            if f.cancelled():
                err = OSError(errno.ECANCELED, f"{self.uri}: request cancelled")
            else:
                exc = f.exception()
                if isinstance(exc, OSError):
                    err = exc
                elif exc is not None:
                    err = OSError(errno.EIO, f"{self.uri}: {exc}")
            self._finish(port, done, err)

        fut.add_done_callback(finished)

    def submit_read(self, offset: int, views: Views, done: Done) -> None:
        self._submit(done, lambda: self.client.read_into(offset, views))

    def submit_write(self, offset: int, views: Views, done: Done, fua: bool = False) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri} is read-only")
        self._submit(done, lambda: self.client.write(offset, views, fua))

    def submit_flush(self, done: Done) -> None:
        self._submit(done, self.client.flush)

    def submit_discard(self, offset: int, length: int, done: Done) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri} is read-only")
        self._submit(done, lambda: self.client.trim(offset, length))

    def submit_write_zeroes(self, offset: int, length: int, done: Done, no_hole: bool = False) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri} is read-only")
        self._submit(done, lambda: self.client.write_zeroes(offset, length, no_hole))

    # -- synchronous facade
    def read_into(self, offset: int, bufs: Sequence[Any]) -> None:
        self._call(self.client.read_into(offset, bufs))

    def write_from(self, offset: int, bufs: Sequence[Any]) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.uri} is read-only")
        self._call(self.client.write(offset, bufs))

    def flush(self) -> None:
        self.drain()
        self._call(self.client.flush())

    def discard(self, offset: int, length: int) -> bool:
        if self.readonly or length <= 0 or not self.client.can_trim:
            return False
        self._call(self.client.trim(offset, length))
        return True

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
        try:
            self.drain(self.timeout)
            try:
                self._call(self.client.close(), self.timeout)
            except OSError as e:
                log.warning("%s: disconnect failed: %s", self.uri, e)
        finally:
            self._stop_loop()
            if self.owner is not None:
                self.owner.close()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
