"""Starting `devmodel run` as a toolstack would: with --ready-fd, and a raw QMP peer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

DEVMODEL = [sys.executable, "-m", "devmodel"]


def devmodel(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*DEVMODEL, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def start_ready(args: list[str], timeout: float = 30.0) -> tuple[subprocess.Popen, float]:
    """Start a daemon with --ready-fd; return it once READY came (and the seconds it took)."""
    r, w = os.pipe()
    t0 = time.monotonic()
    proc = subprocess.Popen([*DEVMODEL, "run", *args, "--ready-fd", str(w)], pass_fds=(w,),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.close(w)
    try:
        data = read_all(r, timeout)
    finally:
        os.close(r)
    if data != b"READY\n":
        proc.kill()
        err = proc.communicate()[1].decode()
        raise RuntimeError(f"no READY (got {data!r}): {err.strip()}")
    return proc, time.monotonic() - t0


def read_all(fd: int, timeout: float) -> bytes:
    import select

    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"read {out!r} before the timeout")
        chunk = os.read(fd, 4096)
        if not chunk:
            return out
        out += chunk


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    if proc.stderr:
        proc.stderr.close()
    return rc


class RawQmp:
    """A QMP peer framed as libxl frames it: greeting, qmp_capabilities, commands."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.greeting = self.recv()
        assert "QMP" in self.greeting
        assert "return" in self.execute("qmp_capabilities")

    def recv(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def execute(self, cmd: str, **arguments) -> dict:
        msg = {"execute": cmd, "id": 1}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        while True:
            reply = self.recv()
            if "event" not in reply:
                return reply

    def close(self) -> None:
        self.sock.close()
