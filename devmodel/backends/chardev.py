"""Character backends for the UARTs: `file:PATH`, `pty`, `unix:PATH[,server]`, `stdio`, `null`.

Every backend has the same small surface, with no event loop in it:

- `write(data) -> int`: never blocks. What the fd does not take at once is kept in a bounded
  backlog (MAX_BACKLOG) and sent by `flush()` when the fd is writable; beyond the bound bytes
  are dropped and counted in `dropped` (QEMU's pty also drops output while nobody listens).
- `fileno()`: the fd to watch for readability now, or None (write-only or disconnected). It can
  change: a `unix:...,server` backend watches its listener until a client comes.
- `read_available() -> bytes`: what can be read without blocking (b"" if nothing).
- `write_fileno()`: the fd to watch for writability while `backlog` is not empty.
- `close()`.

`parse_chardev(spec)` checks a spec without opening anything; `open_chardev(spec)` opens it.
`SerialPump` attaches a backend to a UART on an asyncio loop (add_reader/add_writer only).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .pump import FdPump

MAX_BACKLOG = 64 * 1024
READ_CHUNK = 4096
# Bytes the pump holds that the UART did not take yet; reading pauses while it is this full.
MAX_PENDING_INPUT = 4096


class CharBackend:
    """Base: a write-side backlog over an output fd, plus an optional input fd."""

    kind = "null"

    def __init__(self) -> None:
        self.path: str | None = None
        self.backlog = bytearray()
        self.dropped = 0
        self.written = 0
        self.closed = False
        # Set by a pump: called when the backlog becomes non-empty (watch write_fileno()).
        self.on_backlog: Callable[[], None] | None = None
        # Set by a pump: called with an fd just before the backend closes it, so the loop
        # stops watching it before the number can be reused.
        self.on_fd_closing: Callable[[int], None] | None = None

    # -- output ---------------------------------------------------------------------------
    def _out_fd(self) -> int | None:
        return None

    def write_fileno(self) -> int | None:
        return self._out_fd()

    def write(self, data: bytes) -> int:
        """Queue `data` for output; returns how many bytes were accepted (sent or kept)."""
        fd = self._out_fd()
        if fd is None or self.closed:
            self.dropped += len(data)
            return 0
        had_backlog = bool(self.backlog)
        if not had_backlog:
            n = self._try_write(fd, data)
            if n < 0:
                return 0
            data = data[n:]
            if not data:
                return n
        room = MAX_BACKLOG - len(self.backlog)
        keep = data[:max(room, 0)]
        self.backlog += keep
        self.dropped += len(data) - len(keep)
        if self.backlog and not had_backlog and self.on_backlog is not None:
            self.on_backlog()
        return len(keep)

    def flush(self) -> None:
        """Send what the backlog holds, as far as the fd takes it now."""
        fd = self._out_fd()
        if fd is None:
            self.dropped += len(self.backlog)
            self.backlog.clear()
            return
        if self.backlog:
            n = self._try_write(fd, bytes(self.backlog))
            if n > 0:
                del self.backlog[:n]

    def _try_write(self, fd: int, data: bytes) -> int:
        """Write without blocking; -1 when the peer is gone (data dropped)."""
        try:
            _, w, _ = select.select([], [fd], [], 0)
            if not w:
                return 0
            n = os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as e:
            self._output_failed(e)
            self.dropped += len(data)
            return -1
        self.written += n
        return n

    def _output_failed(self, e: OSError) -> None:
        pass

    # -- input ----------------------------------------------------------------------------
    def fileno(self) -> int | None:
        return None

    def read_available(self) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True
        self.backlog.clear()


class NullBackend(CharBackend):
    kind = "null"


class FileBackend(CharBackend):
    """Output appended to a file (xl serial='file:...'); no input."""

    kind = "file"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                       0o640)

    def _out_fd(self) -> int | None:
        return self._fd

    def close(self) -> None:
        super().close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_fd(fd: int) -> bytes | None:
    """A non-blocking read: bytes, b"" if nothing now, None on end of file or error."""
    try:
        r, _, _ = select.select([fd], [], [], 0)
        if not r:
            return b""
        data = os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return b""
    except OSError:
        return None
    return data if data else None


class PtyBackend(CharBackend):
    """A pseudo-terminal; `path` is the slave's name (what xl prints for serial='pty').

    The slave end stays open here, so the master never sees a hang-up while no console is
    attached: output accumulates in the kernel's pty buffer, then in the backlog, then drops.
    """

    kind = "pty"

    def __init__(self) -> None:
        super().__init__()
        import tty  # (termios) only when a pty is configured

        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line discipline, as QEMU's cfmakeraw
        os.set_blocking(self._master, False)
        os.set_inheritable(self._master, False)
        os.set_inheritable(self._slave, False)
        self.path = os.ttyname(self._slave)

    def _out_fd(self) -> int | None:
        return None if self.closed else self._master

    def fileno(self) -> int | None:
        return None if self.closed else self._master

    def read_available(self) -> bytes:
        if self.closed:
            return b""
        data = _read_fd(self._master)
        return data or b""

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._master)
            os.close(self._slave)


class UnixBackend(CharBackend):
    """A Unix stream socket: connect to PATH, or listen at PATH (server) for one client at a
    time; a second client is accepted and closed at once. Never waits for a client (QEMU's
    `server,nowait`): output while no client is connected is dropped."""

    kind = "unix"

    def __init__(self, path: str, server: bool = False) -> None:
        super().__init__()
        self.path = path
        self.server = server
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self.on_connect: Callable[[bool], None] | None = None  # e.g. DCD on the UART
        if server:
            if os.path.exists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise FileExistsError(f"{path} exists and is not a socket")
                os.unlink(path)
            ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ls.bind(path)
            ls.listen(1)
            ls.setblocking(False)
            self._listener = ls
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            except OSError:
                s.close()
                raise
            s.setblocking(False)
            self._conn = s

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def _out_fd(self) -> int | None:
        return self._conn.fileno() if self._conn is not None else None

    def fileno(self) -> int | None:
        if self._conn is not None:
            return self._conn.fileno()
        if self._listener is not None:
            return self._listener.fileno()
        return None

    def _accept(self) -> None:
        assert self._listener is not None
        while True:  # bounded by the listen backlog: accept() fails once it is empty
            try:
                s, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self._conn is not None:
                s.close()  # one client at a time
                continue
            s.setblocking(False)
            self._conn = s
            if self.on_connect is not None:
                self.on_connect(True)

    def _drop_client(self) -> None:
        if self._conn is not None:
            if self.on_fd_closing is not None:
                self.on_fd_closing(self._conn.fileno())
            self._conn.close()
            self._conn = None
            self.backlog.clear()
            if self.on_connect is not None:
                self.on_connect(False)

    def _output_failed(self, e: OSError) -> None:
        if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
            self._drop_client()

    def read_available(self) -> bytes:
        if self.closed:
            return b""
        if self._conn is None:
            if self._listener is not None:
                self._accept()
            return b""
        try:
            data = self._conn.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            if self._listener is not None:
                self._accept()
            return b""
        return data

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # type: ignore[arg-type]


class StdioBackend(CharBackend):
    """The daemon's stdin/stdout (for interactive runs; the daemon must not log to stdout)."""

    kind = "stdio"

    def __init__(self, in_fd: int | None = None, out_fd: int | None = None) -> None:
        super().__init__()
        self._in = sys.stdin.fileno() if in_fd is None else in_fd
        self._out = sys.stdout.fileno() if out_fd is None else out_fd
        self._eof = False

    def _out_fd(self) -> int | None:
        return None if self.closed else self._out

    def fileno(self) -> int | None:
        return None if self.closed or self._eof else self._in

    def read_available(self) -> bytes:
        if self.closed or self._eof:
            return b""
        data = _read_fd(self._in)
        if data is None:
            self._eof = True
            return b""
        return data


# ---- specs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChardevSpec:
    kind: str  # null, stdio, pty, file, unix
    path: str | None = None
    server: bool = False

    def open(self) -> CharBackend:
        if self.kind == "null":
            return NullBackend()
        if self.kind == "stdio":
            return StdioBackend()
        if self.kind == "pty":
            return PtyBackend()
        if self.kind == "file":
            assert self.path is not None
            return FileBackend(self.path)
        assert self.kind == "unix" and self.path is not None
        return UnixBackend(self.path, server=self.server)


KINDS = "null, stdio, pty, file:PATH, unix:PATH[,server[,nowait]]"


def parse_chardev(spec: str) -> ChardevSpec:
    """Parse a backend spec (the syntax of xl's serial= and QEMU's -serial for these kinds)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty character device spec; expected one of {KINDS}")
    s = spec.strip()
    kind, sep, rest = s.partition(":")
    if kind in ("null", "stdio", "pty"):
        if sep:
            raise ValueError(f"chardev {spec!r}: {kind!r} takes no argument")
        return ChardevSpec(kind)
    if kind == "file":
        if not rest:
            raise ValueError(f"chardev {spec!r}: file needs a path, as file:/var/log/guest.log")
        if "\0" in rest:
            raise ValueError(f"chardev {spec!r}: path contains a NUL byte")
        return ChardevSpec("file", rest)
    if kind == "unix":
        path, *opts = rest.split(",")
        if not path:
            raise ValueError(f"chardev {spec!r}: unix needs a socket path, as unix:/run/com1.sock")
        if "\0" in path:
            raise ValueError(f"chardev {spec!r}: path contains a NUL byte")
        if len(os.fsencode(path)) > 107:
            raise ValueError(f"chardev {spec!r}: socket path longer than 107 bytes")
        server = False
        for o in opts:
            if o in ("server", "server=on"):
                server = True
            elif o in ("nowait", "wait=off", "server=off"):
                pass
            else:
                raise ValueError(f"chardev {spec!r}: unknown unix option {o!r} "
                                 "(known: server, nowait)")
        return ChardevSpec("unix", path, server)
    raise ValueError(f"chardev {spec!r}: unknown kind {kind!r}; expected one of {KINDS}")


def open_chardev(spec: str) -> CharBackend:
    return parse_chardev(spec).open()


# ---- asyncio glue -----------------------------------------------------------------------
class SerialPump(FdPump):
    """Moves bytes between a backend and a UART on an asyncio loop.

    Input: the backend's fd is watched with add_reader; what the UART does not take at once
    waits here (bounded) and reading pauses until the UART calls `on_rx_space` (after a guest
    read), when the rest is offered on the next loop turn. Output: when the backend's backlog
    fills, its fd is watched with add_writer until the backlog is sent (FdPump).

    `on_effects` is called after bytes were pushed into the UART outside an ioreq, so the
    caller can send the IRQ dm_ops the machine queued (drain `machine.outbox`).
    """

    def __init__(self, loop: Any, backend: CharBackend, uart: Any,
                 on_effects: Callable[[], None] | None = None) -> None:
        super().__init__(loop, backend, on_effects)
        self.uart = uart
        self.pending = b""
        self._feed_scheduled = False
        uart.backend = backend
        uart.on_rx_space = self._rx_space
        self.start()

    def _reading_paused(self) -> bool:
        return bool(self.pending)

    def _readable(self) -> None:
        if self.closed:
            return
        data = self.backend.read_available()
        if data:
            self.pending = data[:MAX_PENDING_INPUT]
            self._feed(notify=False)
        self._sync_reader()
        self._effects()

    def _feed(self, notify: bool = True) -> None:
        self._feed_scheduled = False
        if self.closed or not self.pending:
            return
        n = self.uart.receive(self.pending)
        self.pending = self.pending[n:]
        if notify:
            self._sync_reader()
            self._effects()

    def _rx_space(self) -> None:
        # Called from inside an ioreq: defer, so the device is not re-entered.
        if self.pending and not self._feed_scheduled and not self.closed:
            self._feed_scheduled = True
            self.loop.call_soon(self._feed)

    def close(self) -> None:
        """Detach from the loop and the UART (the backend stays open; close it separately)."""
        if not self.closed:
            self.uart.on_rx_space = None
        super().close()
