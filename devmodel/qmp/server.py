"""A QEMU-compatible QMP monitor on a Unix socket.

Framing as QEMU: the input is a stream of JSON objects (any whitespace between them; libxl
ends each with CRLF, qemu.qmp with LF); every output message is one JSON object followed by
CRLF. On connect the greeting
`{"QMP": {"version": {"qemu": {...}, "package": ...}, "capabilities": []}}` is sent; until
`qmp_capabilities` every other command is refused with CommandNotFound (capabilities
negotiation mode) and no events are sent. Replies carry the request's `id` when it had one.
Out-of-band execution is not offered (no "oob" capability).

One client per monitor socket, as QEMU's chardev socket server: while a client is connected
the socket is not accepted from, so a second client waits in the listen backlog and is served
when the first leaves. Give `--qmp` more than once for more monitors (libxl uses two: its own
and libxenstat's).

File descriptors sent with SCM_RIGHTS are queued per connection and taken by `add-fd`.
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from devmodel import lockdown
from devmodel.wire.framing import received_fds

from .commands import COMMANDS, QmpError, greeting, run_command
from .fdsets import FdSets

log = logging.getLogger("devmodel.qmp")

RECV_SIZE = 1 << 16
MAX_MESSAGE = 1 << 20  # bytes of one JSON object
MAX_NESTING = 64
MAX_OUTPUT = 8 << 20  # a client that reads nothing is dropped past this backlog
MAX_QUEUED_FDS = 16
_FD_CMSG = socket.CMSG_SPACE(MAX_QUEUED_FDS * array.array("i").itemsize)
_WS = frozenset(b" \t\r\n")


class JsonSplitter:
    """Cuts a byte stream into top-level JSON texts by bracket depth (QEMU's json-streamer).
    Yields bytes of one complete object/array, or a QmpError for input that is not."""

    def __init__(self, max_size: int = MAX_MESSAGE, max_depth: int = MAX_NESTING) -> None:
        self.buf = bytearray()
        self.pos = 0  # scan position inside buf
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.max_size = max_size
        self.max_depth = max_depth

    def feed(self, data: bytes) -> list[bytes | QmpError]:
        out: list[bytes | QmpError] = []
        buf = self.buf
        buf += data
        i = self.pos
        n = len(buf)
        start = 0
        while i < n:
            c = buf[i]
            if self.depth == 0:
                if c in _WS:
                    i += 1
                    start = i
                    continue
                if c in b"{[":
                    self.depth = 1
                    start = i
                    i += 1
                    continue
                j = i
                while j < n and buf[j] not in _WS and buf[j] not in b"{[":
                    j += 1
                token = bytes(buf[i:j])
                try:
                    json.loads(token)
                    out.append(QmpError("QMP input must be a JSON object"))
                except ValueError:
                    out.append(QmpError(f"JSON parse error, invalid token {token[:32]!r}"))
                i = start = j
                continue
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif c == 0x5C:  # backslash
                    self.esc = True
                elif c == 0x22:
                    self.in_str = False
            elif c == 0x22:
                self.in_str = True
            elif c in b"{[":
                self.depth += 1
                if self.depth > self.max_depth:
                    out.append(QmpError("JSON parse error, nesting too deep"))
                    self._reset()
                    return out
            elif c in b"}]":
                self.depth -= 1
                if self.depth == 0:
                    out.append(bytes(buf[start : i + 1]))
                    start = i + 1
            i += 1
            if self.depth and i - start > self.max_size:
                out.append(QmpError(f"JSON parse error, message larger than {self.max_size} bytes"))
                self._reset()
                return out
        if self.depth == 0:
            buf.clear()
            self.pos = 0
        else:
            del buf[:start]
            self.pos = i - start
        return out

    def _reset(self) -> None:
        self.buf.clear()
        self.pos = 0
        self.depth = 0
        self.in_str = self.esc = False


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=False).encode("utf-8") + b"\r\n"


class QmpSession:
    """One connected client."""

    def __init__(self, sock: socket.socket, server: QmpServer) -> None:
        self.sock = sock
        self.server = server
        self.controller = server.controller
        self.loop = server.loop
        self.negotiated = False
        self.fds: list[int] = []
        self.after_reply: list[Callable[[], None]] = []
        self._splitter = JsonSplitter()
        self._out = bytearray()
        self._writing = False
        self._closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._on_readable)
        self.write(greeting())

    # ---- output ---------------------------------------------------------------------------
    def write(self, msg: dict[str, Any]) -> None:
        if self._closed:
            return
        self._out += encode(msg)
        self._flush()

    def _flush(self) -> None:
        if self._closed or self._writing or not self._out:
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
            if len(self._out) > MAX_OUTPUT:
                self.close("client does not read its replies")
                return
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())
        self._flush()

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        if not self.negotiated:
            return  # QEMU sends no events in capabilities negotiation mode
        sec, usec = self.controller.now_us()
        self.write({"event": event, "data": data,
                    "timestamp": {"seconds": sec, "microseconds": usec}})

    # ---- input ----------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data, anc, _flags, _ = self.sock.recvmsg(RECV_SIZE, _FD_CMSG)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"read error: {e}")
            return
        for fd in received_fds(anc):
            if len(self.fds) < MAX_QUEUED_FDS:
                self.fds.append(fd)
            else:
                os.close(fd)
        if not data:
            self.close("client disconnected")
            return
        for item in self._splitter.feed(data):
            if self._closed:
                return
            if isinstance(item, QmpError):
                self.write(item.response(None))
                continue
            self._handle(item)

    def take_fd(self) -> int | None:
        return self.fds.pop(0) if self.fds else None

    def _handle(self, raw: bytes) -> None:
        has_id = False
        req_id = None
        try:
            try:
                msg = json.loads(raw)
            except ValueError as e:
                raise QmpError(f"JSON parse error, {e}") from None
            if not isinstance(msg, dict):
                raise QmpError("QMP input must be a JSON object")
            if "id" in msg:
                has_id, req_id = True, msg["id"]
            result = run_command(self, msg)
        except QmpError as e:
            self.write(e.response(req_id, has_id))
            self._run_after_reply()
            return
        except Exception as e:  # a bug of ours: answer, log, keep serving (as the daemon does)
            log.exception("QMP command failed: %r", raw[:200])
            self.write(QmpError(f"internal error: {e}").response(req_id, has_id))
            self._run_after_reply()
            return
        reply: dict[str, Any] = {"return": result}
        if has_id:
            reply["id"] = req_id
        self.write(reply)
        self._run_after_reply()

    def _run_after_reply(self) -> None:
        todo, self.after_reply = self.after_reply, []
        for fn in todo:
            try:
                fn()
            except Exception:
                log.exception("post-reply action failed")

    # ---- teardown -------------------------------------------------------------------------
    def close(self, why: str) -> None:
        if self._closed:
            return
        # Whatever is still queued (a reply, the SHUTDOWN event of quit) gets a last chance.
        if self._out:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(0.5)
                self.sock.sendall(self._out)
            except OSError:
                pass
            self._out.clear()
        self._closed = True
        try:
            self.loop.remove_reader(self.sock.fileno())
            if self._writing:
                self.loop.remove_writer(self.sock.fileno())
        except (ValueError, OSError):
            pass
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        self.server.fdsets.release_owner(self)
        try:
            self.sock.close()
        except OSError:
            pass
        log.info("QMP client on %s: %s", self.server.path, why)
        self.server.session_closed(self)


class QmpServer:
    """One monitor: a listening socket, at most one client at a time."""

    def __init__(self, listener: socket.socket, controller, loop, fdsets: FdSets | None = None,
                 allow_uids: frozenset[int] | None = None) -> None:
        self.listener = listener
        # Peer uids served (SO_PEERCRED, --allow-uid); default: our own uid and root.
        self.allow_uids = allow_uids if allow_uids is not None else lockdown.default_allowed()
        self.controller = controller
        self.loop = loop
        self.fdsets: FdSets = fdsets if fdsets is not None else controller.fdsets
        try:
            path = listener.getsockname() or "?"
        except OSError:
            path = "?"
        # devmodel.daemon.listen_unix binds PATH~ and renames it to PATH once listening.
        self.path = path[:-1] if isinstance(path, str) and path.endswith("~") else path
        self.session: QmpSession | None = None
        self._accepting = False
        self._closed = False
        listener.setblocking(False)
        self._start_accepting()

    def _start_accepting(self) -> None:
        if not self._accepting and not self._closed:
            self._accepting = True
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def _stop_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self.listener.fileno())

    def _accept(self) -> None:
        # A refused peer gets no greeting: one error, then the connection is closed.
        s = lockdown.accept_checked(
            self.listener, self.allow_uids, f"QMP {self.path}",
            lambda why: encode({"error": {"class": "GenericError", "desc": why}}))
        if s is None:
            return
        self._stop_accepting()
        log.info("QMP client connected on %s", self.path)
        self.session = QmpSession(s, self)
        self.controller.listeners.append(self.session.on_event)

    def session_closed(self, session: QmpSession) -> None:
        if session.on_event in self.controller.listeners:
            self.controller.listeners.remove(session.on_event)
        if self.session is session:
            self.session = None
        self._start_accepting()

    def close(self) -> None:
        if self._closed:
            return
        if self.session is not None:
            self.session.close("daemon exiting")
        self._closed = True
        self._stop_accepting()
        try:
            self.listener.close()
        except OSError:
            pass


__all__ = ["QmpServer", "QmpSession", "JsonSplitter", "COMMANDS"]
