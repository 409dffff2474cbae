"""Interoperability with REAL QEMU (qemu-system-x86_64 from Debian, 7.2+): QEMU's own
`-netdev stream` and `-netdev dgram` talk to the daemon's e1000. QEMU runs without a guest
(-machine none) as a relay: two of its netdevs joined by a hub, one facing the daemon, the
other facing this test. A frame a guest driver sends through the daemon must come out of
QEMU intact, and the reverse, so both framings are checked against QEMU's implementation
(net/stream.c, net/dgram.c), not only against our own reading of it."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time

import pytest
from dmsupport import stop_process
from e1000_guest import GuestE1000

from devmodel.client import Hypervisor

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
PEER = bytes.fromhex("020000000002")
MAC = bytes.fromhex("00163e000042")


def free_port(kind: int) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def qemu_relay(*netdevs: str) -> subprocess.Popen:
    """QEMU with the given netdevs (ids n0, n1) on one hub and nothing else."""
    args = [QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", "none"]
    for i, nd in enumerate(netdevs):
        args += ["-netdev", f"{nd},id=n{i}", "-netdev", f"hubport,id=h{i},hubid=0,netdev=n{i}"]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def udp_peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def through(hv: Hypervisor, send, recv, count: int = 8) -> None:
    """Guest frames out through QEMU and test frames in through QEMU."""
    g = GuestE1000(hv)
    assert g.init() == MAC
    # QEMU connects asynchronously and drops frames until then: probe until one gets through
    probe = MAC + PEER + b"\x88\xb5" + b"probe".ljust(46, b".")
    deadline = time.monotonic() + 10
    while True:
        send(probe)
        got = g.receive(1, timeout=0.2)
        if got:
            assert got == [probe]
            break
        assert time.monotonic() < deadline, "no frame came through QEMU"
    out = [PEER + MAC + b"\x88\xb5" + bytes([i]) * (46 + i * 180) for i in range(count)]
    for f in out:
        g.send(f)
    assert [recv() for _ in out] == out
    inbound = [MAC + PEER + b"\x88\xb5" + bytes([0x80 + i]) * (46 + i * 180) for i in range(count)]
    for f in inbound:
        send(f)
    got = []
    while len(got) < count and time.monotonic() < deadline + 10:
        got += [f for f in g.receive(count - len(got), timeout=1) if f != probe]  # a late probe
    assert got == inbound


def test_qemu_stream_client_to_daemon_stream_server(tmp_path):
    """The daemon listens (server=on); QEMU's stream netdev connects as a client."""
    path = str(tmp_path / "dm.sock")
    udp = udp_peer()
    qport = free_port(socket.SOCK_DGRAM)
    spec = f"model=e1000,mac=00:16:3e:00:00:42,backend=stream,path={path},server=on,rom=off"
    with Hypervisor.spawn(["--vga", "none", "--nic", spec], ram=16 << 20) as hv:
        q = qemu_relay(f"stream,server=off,addr.type=unix,addr.path={path}",
                       f"dgram,local.type=inet,local.host=127.0.0.1,local.port={qport},"
                       f"remote.type=inet,remote.host=127.0.0.1,remote.port={udp.getsockname()[1]}")
        try:
            through(hv, lambda f: udp.sendto(f, ("127.0.0.1", qport)), lambda: udp.recv(70000))
        finally:
            stop_process(q)
        hv.process.signal()
        assert hv.process.wait_exit() == 0
    udp.close()


def test_daemon_stream_client_to_qemu_stream_server_over_tcp():
    """QEMU listens (server=on, TCP); the daemon connects with addr=HOST:PORT."""
    port = free_port(socket.SOCK_STREAM)
    udp = udp_peer()
    qport = free_port(socket.SOCK_DGRAM)
    q = qemu_relay(f"stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port={port}",
                   f"dgram,local.type=inet,local.host=127.0.0.1,local.port={qport},"
                   f"remote.type=inet,remote.host=127.0.0.1,remote.port={udp.getsockname()[1]}")
    try:
        deadline = time.monotonic() + 10
        while True:  # wait for QEMU's listener, without connecting to it
            out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
            if str(port) in out.stdout:
                break
            assert time.monotonic() < deadline and q.poll() is None, q.stderr.read()
            time.sleep(0.05)
        spec = f"model=e1000,mac=00:16:3e:00:00:42,backend=stream,addr=127.0.0.1:{port},rom=off"
        with Hypervisor.spawn(["--vga", "none", "--nic", spec], ram=16 << 20) as hv:
            through(hv, lambda f: udp.sendto(f, ("127.0.0.1", qport)), lambda: udp.recv(70000))
            hv.process.signal()
            assert hv.process.wait_exit() == 0
    finally:
        stop_process(q)
        udp.close()


def test_daemon_dgram_with_qemu_dgram(tmp_path):
    """`backend=dgram` (Unix datagrams) against QEMU's dgram netdev; QEMU relays to a stream
    server in this test, so the frames also cross QEMU's stream framing."""
    ours, theirs = str(tmp_path / "dm.dgram"), str(tmp_path / "qemu.dgram")
    spath = str(tmp_path / "test.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(spath)
    server.listen(1)
    server.settimeout(10)
    spec = f"model=e1000,mac=00:16:3e:00:00:42,backend=dgram,path={ours},peer={theirs},rom=off"
    with Hypervisor.spawn(["--vga", "none", "--nic", spec], ram=16 << 20) as hv:
        q = qemu_relay(f"dgram,local.type=unix,local.path={theirs},remote.type=unix,remote.path={ours}",
                       f"stream,server=off,addr.type=unix,addr.path={spath}")
        try:
            conn, _ = server.accept()
            conn.settimeout(5)
            buf = bytearray()

            def recv() -> bytes:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
                    chunk = conn.recv(1 << 16)
                    assert chunk, "QEMU closed the stream"
                    buf.extend(chunk)
                n = struct.unpack(">I", buf[:4])[0]
                frame = bytes(buf[4 : 4 + n])
                del buf[: 4 + n]
                return frame

            through(hv, lambda f: conn.sendall(struct.pack(">I", len(f)) + f), recv)
            conn.close()
        finally:
            stop_process(q)
            for p in (theirs,):
                if os.path.exists(p):
                    os.unlink(p)
        hv.process.signal()
        assert hv.process.wait_exit() == 0
    server.close()
