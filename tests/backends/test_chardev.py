"""Character backends with real fds (pty, Unix sockets, pipes) and the asyncio pump."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from devmodel.backends.chardev import (
    MAX_BACKLOG,
    ChardevSpec,
    FileBackend,
    NullBackend,
    PtyBackend,
    SerialPump,
    StdioBackend,
    UnixBackend,
    open_chardev,
    parse_chardev,
)
from devmodel.bios.uart import com
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.wire.constants import DmOp


def wait_read(backend, want: int, timeout: float = 2.0) -> bytes:
    got = b""
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        got += backend.read_available()
        if len(got) < want:
            time.sleep(0.005)
    return got


# ---- parser -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,want", [
    ("null", ChardevSpec("null")),
    ("stdio", ChardevSpec("stdio")),
    ("pty", ChardevSpec("pty")),
    ("file:/tmp/x.log", ChardevSpec("file", "/tmp/x.log")),
    ("unix:/run/s.sock", ChardevSpec("unix", "/run/s.sock", False)),
    ("unix:/run/s.sock,server", ChardevSpec("unix", "/run/s.sock", True)),
    ("unix:/run/s.sock,server,nowait", ChardevSpec("unix", "/run/s.sock", True)),
])
def test_parse_good(spec, want):
    assert parse_chardev(spec) == want


@pytest.mark.parametrize("spec,msg", [
    ("", "empty"),
    ("tcp:1.2.3.4:5", "unknown kind 'tcp'"),
    ("file:", "file needs a path"),
    ("unix:", "unix needs a socket path"),
    ("unix:/x,listen", "unknown unix option 'listen'"),
    ("pty:/dev/pts/3", "takes no argument"),
    ("unix:/" + "a" * 200, "longer than 107"),
])
def test_parse_bad(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_chardev(spec)


# ---- simple backends ----------------------------------------------------------------------
def test_null_backend():
    b = open_chardev("null")
    assert isinstance(b, NullBackend)
    assert b.write(b"abc") == 0 and b.dropped == 3
    assert b.fileno() is None and b.read_available() == b""
    b.close()


def test_file_backend_appends(tmp_path):
    p = tmp_path / "com1.log"
    p.write_bytes(b"old\n")
    b = open_chardev(f"file:{p}")
    assert isinstance(b, FileBackend) and b.fileno() is None
    assert b.write(b"new\n") == 4
    b.close()
    assert p.read_bytes() == b"old\nnew\n"


def test_stdio_backend_with_pipes():
    rin, win = os.pipe()
    rout, wout = os.pipe()
    b = StdioBackend(in_fd=rin, out_fd=wout)
    assert b.read_available() == b""
    os.write(win, b"key")
    assert b.fileno() == rin
    assert wait_read(b, 3) == b"key"
    b.write(b"out")
    assert os.read(rout, 10) == b"out"
    os.close(win)
    assert b.read_available() == b""  # end of file
    assert b.fileno() is None
    for fd in (rin, rout, wout):
        os.close(fd)


# ---- pty ----------------------------------------------------------------------------------
def test_pty_both_directions():
    b = open_chardev("pty")
    assert isinstance(b, PtyBackend)
    assert b.path and b.path.startswith("/dev/pts/")
    fd = os.open(b.path, os.O_RDWR | os.O_NOCTTY)
    try:
        b.write(b"hello\n")
        assert os.read(fd, 100) == b"hello\n"  # raw mode: no CR inserted
        os.write(fd, b"typed")
        assert wait_read(b, 5) == b"typed"
    finally:
        os.close(fd)
        b.close()


def test_pty_output_bounded_without_reader():
    b = PtyBackend()
    try:
        chunk = b"x" * 4096
        for _ in range(64):
            b.write(chunk)
        assert len(b.backlog) <= MAX_BACKLOG
        assert b.dropped > 0
    finally:
        b.close()


# ---- unix sockets -------------------------------------------------------------------------
def test_unix_server_one_client(tmp_path):
    path = str(tmp_path / "com1.sock")
    b = open_chardev(f"unix:{path},server")
    assert isinstance(b, UnixBackend)
    events = []
    b.on_connect = events.append
    listener_fd = b.fileno()
    assert b.write(b"lost") == 0  # nobody connected: dropped
    c1 = socket.socket(socket.AF_UNIX)
    c1.connect(path)
    assert b.read_available() == b""  # accepts
    assert b.connected and events == [True]
    assert b.fileno() != listener_fd
    c2 = socket.socket(socket.AF_UNIX)
    c2.connect(path)
    c1.sendall(b"ping")
    assert wait_read(b, 4) == b"ping"
    b.write(b"pong")
    assert c1.recv(10) == b"pong"
    c1.close()
    assert wait_read(b, 1, timeout=0.2) == b""
    assert not b.connected or b.fileno() != listener_fd
    assert events[:2] == [True, False]
    c2.close()
    b.close()
    assert not os.path.exists(path)


def test_unix_server_second_client_refused(tmp_path):
    path = str(tmp_path / "s")
    b = UnixBackend(path, server=True)
    c1 = socket.socket(socket.AF_UNIX)
    c1.connect(path)
    b.read_available()
    assert b.connected
    c2 = socket.socket(socket.AF_UNIX)
    c2.connect(path)
    # The listener is not watched while a client is connected; refusing happens when a
    # client goes. Drop c1: the next read accepts c2.
    c1.close()
    wait_read(b, 1, timeout=0.2)
    assert b.connected
    c2.sendall(b"2")
    assert wait_read(b, 1) == b"2"
    c2.close()
    b.close()


def test_unix_client(tmp_path):
    path = str(tmp_path / "srv")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    b = open_chardev(f"unix:{path}")
    peer, _ = srv.accept()
    b.write(b"to-peer")
    assert peer.recv(20) == b"to-peer"
    peer.sendall(b"from-peer")
    assert wait_read(b, 9) == b"from-peer"
    peer.close()
    assert wait_read(b, 1, timeout=0.2) == b""
    assert b.fileno() is None  # the peer left; a client does not reconnect
    b.close()
    srv.close()


def test_unix_client_connect_failure(tmp_path):
    with pytest.raises(OSError):
        open_chardev(f"unix:{tmp_path / 'nobody'}")


def test_unix_server_refuses_non_socket_path(tmp_path):
    p = tmp_path / "file"
    p.write_text("x")
    with pytest.raises(FileExistsError):
        UnixBackend(str(p), server=True)


# ---- the asyncio pump ---------------------------------------------------------------------
def _machine():
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    uart = m.add(com(1))
    return m, uart


async def _until(cond, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


async def test_pump_pty_to_uart_and_back():
    m, uart = _machine()
    b = PtyBackend()
    effects = []
    pump = SerialPump(asyncio.get_running_loop(), b, uart, on_effects=lambda: effects.append(1))
    fd = os.open(b.path, os.O_RDWR | os.O_NOCTTY)
    try:
        m.handle_ioreq(0, 0x3F8 + 2, 0x01, 1, 1, 0x01)  # FIFO on
        m.handle_ioreq(0, 0x3F8 + 1, 0x01, 1, 1, 0x01)  # RX interrupt
        m.outbox.clear()
        os.write(fd, b"0123456789abcdefXYZ")  # more than the FIFO holds
        await _until(lambda: len(uart.rx_fifo) == 16)
        assert effects and (DmOp.SET_ISA_IRQ_LEVEL, (4, 1), None) in m.outbox
        assert pump.pending == b"XYZ"
        got = bytes(m.handle_ioreq(0, 0x3F8, 0, 1, 1, 0x21) for _ in range(16))
        assert got == b"0123456789abcdef"
        await _until(lambda: not pump.pending)
        got = bytes(m.handle_ioreq(0, 0x3F8, 0, 1, 1, 0x21) for _ in range(3))
        assert got == b"XYZ"
        for ch in b"out":
            m.handle_ioreq(0, 0x3F8, ch, 1, 1, 0x01)
        assert os.read(fd, 10) == b"out"
    finally:
        pump.close()
        os.close(fd)
        b.close()


async def test_pump_backlog_flushes_when_writable(tmp_path):
    m, uart = _machine()
    path = str(tmp_path / "c.sock")
    b = UnixBackend(path, server=True)
    pump = SerialPump(asyncio.get_running_loop(), b, uart)
    c = socket.socket(socket.AF_UNIX)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(path)
    c.setblocking(False)
    await _until(lambda: b.connected)
    big = b"y" * 2_000_000
    b.write(big)  # what the UART would do byte by byte, in one go
    assert b.backlog  # the socket did not take it all
    received = bytearray()

    def drain():
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)
        except BlockingIOError:
            pass
        return not b.backlog and len(received) + b.dropped >= len(big)

    await _until(drain)
    assert len(received) + b.dropped == len(big)
    assert b.dropped > 0  # beyond MAX_BACKLOG
    pump.close()
    c.close()
    b.close()


async def test_pump_follows_reconnects(tmp_path):
    m, uart = _machine()
    path = str(tmp_path / "r.sock")
    b = UnixBackend(path, server=True)
    pump = SerialPump(asyncio.get_running_loop(), b, uart)
    for msg in (b"A", b"B"):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        await _until(lambda: b.connected)
        c.sendall(msg)
        await _until(lambda: bool(uart.lsr & 1))
        assert m.handle_ioreq(0, 0x3F8, 0, 1, 1, 0x21) == msg[0]
        c.close()
        await _until(lambda: not b.connected)
    pump.close()
    b.close()
