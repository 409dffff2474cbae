"""QEMU's `-netdev stream` framing (4-byte big-endian length + frame) over real Unix and TCP
sockets, with the pump on a real asyncio loop and an e1000 on a strict machine: frames both
ways, client and server roles, a server taking the next client, an oversized length ending
the connection (as QEMU's net_fill_rstate does), a peer that stops reading costing a bounded
backlog without breaking the framing, and flow control instead of loss when the NIC is full."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "nic"))

from e1000_rig import MAC, PEER, Rig, d, eth  # noqa: E402
from stream_peer import framed, read_frames  # noqa: E402

from devmodel.backends.net import (  # noqa: E402
    MAX_BACKLOG,
    MAX_PENDING,
    STREAM_MAX_FRAME,
    NetPump,
    StreamDeframer,
    open_backend,
)


def spin(loop, seconds: float = 0.05) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def both_ways(loop, r: Rig, peer: socket.socket, inbound: bytes, out: bytes) -> None:
    """`inbound` from the peer reaches the NIC's RX ring; `out`, sent by the NIC, the peer."""
    peer.sendall(framed(inbound))
    spin(loop)
    assert [f[0] for f in r.rx_frames()] == [inbound]
    r.legacy(out)
    r.kick()
    assert read_frames(peer, 1) == [out]


def test_deframer_any_split_and_oversized_length():
    frames = [bytes([i]) * n for i, n in enumerate((60, 1, 1514, 0, 9000))]
    wire = b"".join(framed(f) for f in frames)
    for step in (1, 3, 4, 5, 7, 1000, len(wire)):
        df = StreamDeframer()
        got = []
        for i in range(0, len(wire), step):
            got += df.feed(wire[i : i + step])
        assert got == frames and not df.buf
    df = StreamDeframer()
    assert df.feed(framed(b"ok") + struct.pack(">I", STREAM_MAX_FRAME + 1) + b"x") == [b"ok"]
    assert "stream frame" in df.error and df.feed(framed(b"later")) == [] and not df.buf
    assert StreamDeframer().feed(struct.pack(">I", STREAM_MAX_FRAME)) == []  # the limit itself is fine


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def wired(backend, loop, n_rx: int = 64):
    r = Rig(backend=backend)
    r.setup_tx()
    r.setup_rx(n_rx)
    pump = NetPump(loop, backend, r.nic)
    return r, pump


def test_client_over_unix_both_ways(tmp_path, loop):
    path = str(tmp_path / "peer.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    backend = open_backend("stream", path=path)
    peer, _ = server.accept()
    r, pump = wired(backend, loop)
    try:
        out = [eth(PEER, MAC, 0x88B5, bytes([i]) * (46 + i * 100)) for i in range(5)]
        for f in out:
            r.legacy(f)
        r.kick()
        assert read_frames(peer, 5) == out
        inbound = [eth(MAC, PEER, 0x88B5, bytes([0x40 + i]) * (50 + i * 300)) for i in range(5)]
        # one write holding every frame, then one frame split across writes
        peer.sendall(b"".join(framed(f) for f in inbound[:4]))
        tail = framed(inbound[4])
        peer.sendall(tail[:3])
        spin(loop)
        peer.sendall(tail[3:])
        spin(loop)
        assert [f[0] for f in r.rx_frames()] == inbound
    finally:
        pump.close()
        backend.close()
        peer.close()
        server.close()


def test_client_without_a_listener_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot connect stream to .*nobody.sock"):
        open_backend("stream", path=str(tmp_path / "nobody.sock"))
    with pytest.raises(ValueError, match="path=SOCKET .* or addr=HOST:PORT"):
        open_backend("stream")


def test_server_over_tcp_takes_the_next_client(loop):
    backend = open_backend("stream", addr="127.0.0.1:0", server=True)
    r, pump = wired(backend, loop)
    host, port = backend.addr
    try:
        frame = eth(PEER, MAC, 0x88B5, bytes(100))
        r.legacy(frame)
        r.kick()  # nobody connected: dropped and counted, as QEMU drops on a link-down netdev
        assert backend.counters["tx dropped: not connected"] == 1
        for round_ in range(2):
            c = socket.create_connection((host, port))
            spin(loop)
            assert backend.connected
            assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # ours is set, not theirs
            assert backend.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            both_ways(loop, r, c, eth(MAC, PEER, 0x88B5, bytes([round_]) * 200),
                      eth(PEER, MAC, 0x88B5, bytes([0x80 + round_]) * 300))
            c.close()
            spin(loop)
            assert not backend.connected  # listening again
        assert backend.connections == 2
    finally:
        pump.close()
        backend.close()


def test_oversized_length_drops_the_connection(tmp_path, loop):
    path = str(tmp_path / "dm.sock")
    backend = open_backend("stream", path=path, server=True)
    r, pump = wired(backend, loop)
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        good = eth(MAC, PEER, 0x88B5, bytes(60))
        c.sendall(framed(good) + struct.pack(">I", STREAM_MAX_FRAME + 1) + bytes(64))
        spin(loop)
        assert [f[0] for f in r.rx_frames()] == [good]  # what came before still counts
        assert backend.counters["disconnects: oversized frame"] == 1 and not backend.connected
        c.settimeout(2)
        assert c.recv(10) == b""  # closed on our side
        c.close()
        c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c2.connect(path)  # the socket file is still there, and listening
        spin(loop)
        assert backend.connected
        c2.close()
    finally:
        pump.close()
        backend.close()
    assert not os.path.exists(path)  # removed at close


def test_peer_that_stops_reading_costs_a_bounded_backlog(tmp_path, loop):
    path = str(tmp_path / "dm.sock")
    backend = open_backend("stream", path=path, server=True)
    r, pump = wired(backend, loop)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(path)
    spin(loop)
    try:
        frames = [eth(PEER, MAC, 0x88B5, i.to_bytes(4, "big") * 375) for i in range(3000)]
        for i in range(0, len(frames), 32):
            for f in frames[i : i + 32]:
                r.legacy(f)
            r.kick()
            assert len(backend.backlog) <= MAX_BACKLOG + 1
        spin(loop)
        dropped = backend.counters["tx dropped: backlog full"]
        assert dropped > 0
        assert sum(len(x) for x in backend.backlog) <= (MAX_BACKLOG + 1) * (4 + 1514)
        # the peer reads again: whole frames in order, none broken by the drops
        got = []
        c.setblocking(False)
        buf = b""
        for _ in range(400):
            spin(loop, 0.005)
            try:
                while chunk := c.recv(1 << 20):
                    buf += chunk
            except BlockingIOError:
                pass
            if not backend.backlog and len(buf) >= (len(frames) - dropped) * (4 + 1514):
                break
        while len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            got.append(buf[4 : 4 + n])
            buf = buf[4 + n :]
        assert not buf
        assert len(got) == len(frames) - dropped
        index = {f: i for i, f in enumerate(frames)}
        order = [index[g] for g in got]  # every frame received is one that was sent, in order
        assert order == sorted(order)
    finally:
        pump.close()
        backend.close()
        c.close()


def test_full_nic_holds_the_peer_back_instead_of_dropping(tmp_path, loop):
    path = str(tmp_path / "dm.sock")
    backend = open_backend("stream", path=path, server=True)
    r, pump = wired(backend, loop, n_rx=8)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    spin(loop)
    try:
        frames = [eth(MAC, PEER, 0x88B5, i.to_bytes(2, "big") * 40) for i in range(MAX_PENDING * 4)]
        c.setblocking(False)
        wire = b"".join(framed(f) for f in frames)
        sent = 0
        got = []
        for _ in range(3000):
            if sent < len(wire):
                try:
                    sent += c.send(wire[sent:])
                except BlockingIOError:
                    pass
            spin(loop, 0.001)
            assert len(pump.pending) <= MAX_PENDING
            if _ % 3 == 0:
                got += [f[0] for f in r.rx_frames()]  # the guest drains slowly
            if len(got) == len(frames):
                break
        assert got == frames  # none lost: TCP/Unix flow control held the peer back
        assert r.rd(d.STATS["MPC"]) == 0
    finally:
        pump.close()
        backend.close()
        c.close()


def test_client_reconnects_as_qemu_reconnect(tmp_path, loop):
    """reconnect=SECONDS: no listener at start is not an error; the client keeps trying
    (non-blocking, on the loop's timer) and comes back after its peer goes away."""
    path = str(tmp_path / "switch.sock")
    backend = open_backend("stream", path=path, reconnect=0.02)
    r, pump = wired(backend, loop)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        spin(loop, 0.1)
        assert not backend.connected and backend.counters["connect failures"] >= 2
        server.bind(path)
        server.listen(1)
        server.settimeout(0)
        peers = []
        for round_ in range(2):
            for _ in range(100):
                spin(loop, 0.01)
                try:
                    peers.append(server.accept()[0])
                    break
                except BlockingIOError:
                    pass
            spin(loop, 0.02)
            assert backend.connected and backend.connections == round_ + 1
            peer = peers[-1]
            both_ways(loop, r, peer, eth(MAC, PEER, 0x88B5, bytes([round_]) * 80),
                      eth(PEER, MAC, 0x88B5, bytes([0x40 + round_]) * 80))
            peer.close()  # the peer goes: the client notices and comes back (next round)
            spin(loop)
            assert backend.counters["disconnects: end of stream"] == round_ + 1
    finally:
        pump.close()
        backend.close()
        server.close()
