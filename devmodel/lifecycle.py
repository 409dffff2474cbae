"""What a toolstack needs to manage a daemon: `--pidfile`, `--ready-fd`, `--daemonize`, and
logging to the systemd journal (`--log-file journal`).

The pidfile is written once the hypervisor socket and every QMP socket listen, before the
lock-down (after a chroot its path may be out of reach). Readiness is Daemon.serve's `ready`
callback: "READY\\n" goes to the ready fd, and a daemonizing parent learns it through its
pipe and exits 0.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# The journal socket tests point somewhere else (the path is otherwise fixed by systemd).
JOURNAL_ENV = "DEVMODEL_JOURNAL_SOCKET"
READY = b"READY\n"


# ---- pidfile --------------------------------------------------------------------------------
def _is_devmodel(pid: int) -> bool:
    """Is `pid` a live process running devmodel (not just any process with a reused pid)?"""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(b"devmodel" in a for a in argv[:4])


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SystemExit(f"devmodel: --pidfile {path}: {e.strerror}") from None
    return int(text) if text.isdigit() else None


class PidFile:
    """Refuses to start over a live devmodel; written once serving, removed at exit."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)  # the daemon may chdir; the file stays the same
        self.written = False

    def check(self) -> None:
        pid = _read_pid(self.path)
        if pid is not None and _is_devmodel(pid):
            raise SystemExit(f"devmodel: --pidfile {self.path}: devmodel is already running as "
                             f"pid {pid}")

    def write(self) -> None:
        """Atomically, and never over a live devmodel's file (two starting at once)."""
        tmp = f"{self.path}.{os.getpid()}~"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    break
                except FileExistsError:
                    self.check()  # live: refuse; stale (dead or not devmodel): replace
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
            else:
                raise SystemExit(f"devmodel: --pidfile {self.path}: cannot claim it")
        except OSError as e:
            raise SystemExit(f"devmodel: --pidfile {self.path}: {e.strerror}") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.written = True

    def remove(self) -> None:
        if not self.written:
            return
        self.written = False
        try:
            if _read_pid(self.path) == os.getpid():
                os.unlink(self.path)
        except (OSError, SystemExit):
            pass


# ---- readiness and daemonizing --------------------------------------------------------------
def check_ready_fd(fd: int) -> None:
    try:
        os.fstat(fd)
    except OSError:
        raise SystemExit(f"devmodel: --ready-fd {fd}: not an open file descriptor") from None
    if fd <= 2:
        raise SystemExit(f"devmodel: --ready-fd {fd}: stdin, stdout or stderr cannot be the "
                         "ready fd")
    # Children (qemu-nbd) must not hold it: whoever waits would miss the EOF of a failure.
    os.set_inheritable(fd, False)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # nobody listens any more: nothing to tell


class Lifecycle:
    """The pidfile, ready fd and daemonizing pipe of one `devmodel run`."""

    def __init__(self, pidfile: str | None = None, ready_fd: int | None = None) -> None:
        self.pidfile = PidFile(pidfile) if pidfile else None
        self.ready_fd = ready_fd
        self.pipe: int | None = None  # to the waiting parent of --daemonize
        if ready_fd is not None:
            check_ready_fd(ready_fd)
        if self.pidfile is not None:
            self.pidfile.check()

    def daemonize(self) -> None:
        """Double fork, setsid, stdio to /dev/null. The original process waits on a pipe and
        exits 0 once the daemon is ready, or with the daemon's error and exit code. Only the
        daemon returns from here."""
        sys.stdout.flush()
        sys.stderr.flush()
        r, w = os.pipe()
        if os.fork() > 0:
            os.close(w)
            _wait_for_daemon(r)  # never returns
        os.close(r)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        self.pipe = w
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)

    def ready(self) -> None:
        """Called once serving (every socket listens; the pidfile is written already). Each
        fd is closed once written, so a second call does nothing."""
        if self.ready_fd is not None:
            _write_all(self.ready_fd, READY)
            os.close(self.ready_fd)
            self.ready_fd = None
        if self.pipe is not None:
            _write_all(self.pipe, READY)
            os.close(self.pipe)
            self.pipe = None

    def failed(self, code: int, message: str) -> None:
        """Start-up failed: tell the waiting parent (our stderr is /dev/null)."""
        if self.pipe is not None:
            _write_all(self.pipe, f"EXIT {code}\n{message}".encode(errors="replace"))
            os.close(self.pipe)
            self.pipe = None

    def close(self) -> None:
        if self.pidfile is not None:
            self.pidfile.remove()
        for attr in ("ready_fd", "pipe"):
            fd = getattr(self, attr)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, None)


def _wait_for_daemon(r: int) -> None:
    chunks = []
    while True:
        try:
            data = os.read(r, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        chunks.append(data)
    out = b"".join(chunks)
    try:
        os.wait()  # the intermediate child
    except ChildProcessError:
        pass
    if out.startswith(READY):
        os._exit(0)
    code = 1
    if out.startswith(b"EXIT "):
        head, _, out = out.partition(b"\n")
        try:
            code = int(head[5:]) or 1
        except ValueError:
            pass
    msg = out.decode(errors="replace").strip() or "devmodel: the daemon exited before it was ready"
    try:
        os.write(2, (msg + "\n").encode())
    except OSError:
        pass
    os._exit(code)


# ---- the journal ----------------------------------------------------------------------------
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}
MAX_DATAGRAM = 200_000  # journald takes larger ones through a memfd; a log line never needs it


def journal_field(key: str, value: str) -> bytes:
    """One field of the native protocol: KEY=value, or the binary form for multi-line values."""
    v = value.encode(errors="replace")
    if b"\n" in v:
        return key.encode() + b"\n" + struct.pack("<Q", len(v)) + v + b"\n"
    return key.encode() + b"=" + v + b"\n"


class JournalHandler(logging.Handler):
    """Native journal protocol (systemd.journal-fields(7)): one datagram per record to
    /run/systemd/journal/socket."""

    def __init__(self, path: str | None = None, identifier: str = "devmodel") -> None:
        super().__init__()
        self.path = path or os.environ.get(JOURNAL_ENV) or JOURNAL_SOCKET
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(self.path)
        except OSError as e:
            self.sock.close()
            raise OSError(e.errno, f"cannot reach the systemd journal at {self.path}: "
                                   f"{e.strerror}") from None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = [("MESSAGE", msg), ("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
                      ("SYSLOG_IDENTIFIER", self.identifier), ("SYSLOG_PID", str(record.process)),
                      ("LOGGER", record.name), ("CODE_FILE", record.pathname),
                      ("CODE_LINE", str(record.lineno)), ("CODE_FUNC", record.funcName)]
            data = b"".join(journal_field(k, v) for k, v in fields)
            if len(data) > MAX_DATAGRAM:
                fields[0] = ("MESSAGE", msg[: MAX_DATAGRAM // 2] + " [truncated]")
                data = b"".join(journal_field(k, v) for k, v in fields)
            self.sock.send(data)
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            pass  # journald is busy or gone: never stop the daemon over a log line
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def journal_available(path: str | None = None) -> str | None:
    """The journal socket path if it exists, else None."""
    p = path or os.environ.get(JOURNAL_ENV) or JOURNAL_SOCKET
    return p if os.path.exists(p) else None
