"""Network backends: pcap capture, datagram sockets with the pump on an asyncio loop, the
bounded queues, and a REAL tap device in a network namespace the test creates, where the
Linux kernel answers ARP, ICMP echo, a UDP datagram with checksum offload and a TCP stream
sent with TSO. No traffic leaves the test's own namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "nic"))

from e1000_rig import IP_A, MAC, PEER, Rig, cksum, d, eth, ipv4, pseudo_seed, tcp, udp  # noqa: E402
from netns_support import ip, private_netns, tap_skip_reason  # noqa: E402

from devmodel.backends.net import (  # noqa: E402
    MAX_BACKLOG,
    MAX_PENDING,
    NetPump,
    PcapWriter,
    SocketBackend,
    TapBackend,
    _in_netns,
    open_backend,
    read_pcap,
)
from devmodel.nic.nicspec import parse_nicspec  # noqa: E402


def test_pcap_round_trip(tmp_path):
    p = tmp_path / "x.pcap"
    w = PcapWriter(str(p))
    w.write(b"\x01" * 60)
    w.write(b"\x02" * 1514)
    w.close()
    raw = p.read_bytes()
    assert struct.unpack("<IHHiIII", raw[:24]) == (0xA1B2C3D4, 2, 4, 0, 0, 65536, 1)
    assert read_pcap(str(p)) == [b"\x01" * 60, b"\x02" * 1514]


def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.settimeout(2)
    return SocketBackend(a), b


def test_socket_backend_with_pump_both_ways(tmp_path):
    backend, peer = _pair()
    backend.capture = PcapWriter(str(tmp_path / "c.pcap"))
    r = Rig(backend=backend)
    r.setup_tx()
    r.setup_rx()
    loop = asyncio.new_event_loop()
    effects = []
    pump = NetPump(loop, backend, r.nic, on_effects=lambda: effects.append(1))
    try:
        frame_in = eth(MAC, PEER, 0x0800, ipv4(IP_A, IP_A, 17, udp(IP_A, IP_A, b"in" * 40)))
        peer.send(frame_in)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert [f[0] for f in r.rx_frames()] == [frame_in]
        assert effects
        frame_out = eth(PEER, MAC, 0x0806, bytes(46))
        r.legacy(frame_out)
        r.kick()
        assert peer.recv(2000) == frame_out
    finally:
        pump.close()
        backend.close()
        peer.close()
        loop.close()
    assert read_pcap(str(tmp_path / "c.pcap")) == [frame_in, frame_out]


def test_pump_waits_for_rx_space_and_counts_overflow_as_missed():
    backend, peer = _pair()
    r = Rig(backend=backend)
    r.setup_rx(8)
    loop = asyncio.new_event_loop()
    pump = NetPump(loop, backend, r.nic)
    try:
        frames = [eth(MAC, PEER, 0x0800, bytes([i]) * 100) for i in range(20)]
        for f in frames:
            peer.send(f)
        loop.run_until_complete(asyncio.sleep(0.05))
        got = [f[0] for f in r.rx_frames()]  # 7 stored; handing them back retries the rest
        loop.run_until_complete(asyncio.sleep(0.02))
        for _ in range(5):
            got += [f[0] for f in r.rx_frames()]
            loop.run_until_complete(asyncio.sleep(0.02))
        assert got == frames  # nothing lost: they waited in the pump's queue
        assert r.rd(d.STATS["MPC"]) == 0 and r.rd(d.STATS["RNBC"]) > 0
        # overflow the bounded queue: counted by the NIC as missed
        for i in range(MAX_PENDING + 30):
            peer.send(eth(MAC, PEER, 0x0800, i.to_bytes(2, "big") * 50))
            if i % 50 == 0:
                loop.run_until_complete(asyncio.sleep(0.01))
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(pump.pending) <= MAX_PENDING
        assert r.rd(d.STATS["MPC"]) > 0
    finally:
        pump.close()
        backend.close()
        peer.close()
        loop.close()


def test_send_backlog_is_bounded():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    backend = SocketBackend(a)
    wants = []
    backend.on_backlog = lambda: wants.append(1)
    for _ in range(MAX_BACKLOG + 2000):
        backend.send(b"x" * 1500)
    assert len(backend.backlog) == MAX_BACKLOG
    assert backend.counters["tx dropped: backlog full"] > 0 and wants
    while True:
        try:
            b.recv(2000, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        backend.flush()
    backend.close()
    b.close()


def test_udp_backend_and_specs(tmp_path):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    spec = parse_nicspec(f"model=e1000,mac=52:54:00:00:00:01,backend=udp,peer=127.0.0.1:{port},"
                         f"capture={tmp_path / 'u.pcap'}")
    backend = spec.open_backend()
    backend.send(b"hello-frame")
    assert rx.recv(100) == b"hello-frame"
    backend.close()
    rx.close()
    assert read_pcap(str(tmp_path / "u.pcap")) == [b"hello-frame"]
    with pytest.raises(ValueError, match="unknown network backend"):
        open_backend("carrier-pigeon")


# ---- the real thing: a tap in a namespace of our own ----------------------------------------
NS_IP = bytes([10, 213, 0, 1])
DEV_IP = bytes([10, 213, 0, 2])


@pytest.fixture
def netns():
    with private_netns("dmtest") as name:
        yield name


def _wait(loop, r: Rig, pred, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        loop.run_until_complete(asyncio.sleep(0.01))
        for f in r.rx_frames():
            seen.append(f[0])
            if pred(f[0]):
                return f[0]
    raise AssertionError(f"no matching frame; saw {[s[:16].hex() for s in seen]}")


def test_real_tap_arp_ping_udp_offload_and_tso(netns):
    ns = netns
    backend = TapBackend("dmtap0", netns=ns, create=True)
    assert backend.ifname == "dmtap0"
    ip(ns, "link", "set", "lo", "up")
    ip(ns, "addr", "add", "10.213.0.1/24", "dev", "dmtap0")
    ip(ns, "link", "set", "dmtap0", "up")
    udp_sock = _in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    udp_sock.bind(("10.213.0.1", 6000))
    udp_sock.settimeout(3)
    listener = _in_netns(ns, lambda: socket.create_server(("10.213.0.1", 5555)))
    listener.settimeout(3)
    r = Rig(backend=backend)
    loop = asyncio.new_event_loop()
    pump = NetPump(loop, backend, r.nic)
    try:
        r.linux_init()
        r.setup_tx()
        r.setup_rx()
        r.wr(d.IMS, d.ICR_RXT0 | d.ICR_TXDW | d.ICR_LSC)
        # 1. ARP: who has 10.213.0.1? The kernel answers to our MAC.
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC, DEV_IP, bytes(6), NS_IP)
        r.legacy(eth(b"\xff" * 6, MAC, 0x0806, arp))
        r.kick()
        reply = _wait(loop, r, lambda f: f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02")
        ns_mac = reply[22:28]
        assert reply[:6] == MAC and reply[28:32] == NS_IP
        # 2. ICMP echo with IP checksum offload (legacy IC can't do IP; use a context)
        icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"devmodel-ping" * 4)
        icmp[2:4] = struct.pack("!H", cksum(bytes(icmp)))
        ping = eth(ns_mac, MAC, 0x0800, ipv4(DEV_IP, NS_IP, 1, bytes(icmp), csum=False))
        r.context(ipcss=14, ipcso=24, ipcse=33, tucss=34, tucso=36, tucmd=d.TUCMD_IP)
        r.data(ping, popts=d.POPTS_IXSM)
        r.kick()
        pong = _wait(loop, r, lambda f: f[23:24] == b"\x01" and f[34] == 0)
        assert pong[42:] .startswith(b"devmodel-ping")
        # 3. UDP with L4 checksum offload: the kernel drops bad checksums, so arrival proves it
        body = b"offloaded-udp" * 20
        seg = udp(DEV_IP, NS_IP, body, seed=pseudo_seed(DEV_IP, NS_IP, 17, 8 + len(body)))
        seg = struct.pack("!H", 7000) + struct.pack("!H", 6000) + seg[4:]
        r.context(ipcss=14, ipcso=24, ipcse=33, tucss=34, tucso=40, tucmd=d.TUCMD_IP)
        r.data(eth(ns_mac, MAC, 0x0800, ipv4(DEV_IP, NS_IP, 17, seg)), popts=d.POPTS_TXSM)
        r.kick()
        data, addr = udp_sock.recvfrom(2000)
        assert data == body and addr == ("10.213.0.2", 7000)
        # 4. TCP: handshake by hand, then 4000 bytes in one TSO packet (MSS 1000)
        syn = tcp(DEV_IP, NS_IP, b"", seq=1000, flags=0x02, sport=40001, dport=5555, ack=0)
        r.legacy(eth(ns_mac, MAC, 0x0800, ipv4(DEV_IP, NS_IP, 6, syn)))
        r.kick()
        synack = _wait(loop, r, lambda f: f[23] == 6 and f[47] & 0x12 == 0x12)
        kseq = struct.unpack("!I", synack[38:42])[0]
        ack = tcp(DEV_IP, NS_IP, b"", seq=1001, flags=0x10, sport=40001, dport=5555, ack=kseq + 1)
        r.legacy(eth(ns_mac, MAC, 0x0800, ipv4(DEV_IP, NS_IP, 6, ack)))
        payload = bytes((i * 13) & 0xFF for i in range(4000))
        hdr = bytearray(eth(ns_mac, MAC, 0x0800, ipv4(
            DEV_IP, NS_IP, 6, tcp(DEV_IP, NS_IP, b"", seq=1001, flags=0x18, sport=40001,
                                  dport=5555, ack=kseq + 1, seed=pseudo_seed(DEV_IP, NS_IP, 6, 0)),
            csum=False)))
        r.context(ipcss=14, ipcso=24, ipcse=33, tucss=34, tucso=50, paylen=len(payload),
                  tucmd=d.TUCMD_IP | d.TUCMD_TCP | d.TUCMD_TSE, hdrlen=54, mss=1000)
        r.data(bytes(hdr), dcmd=d.TXD_CMD_TSE, popts=d.POPTS_TXSM | d.POPTS_IXSM)
        r.data(payload, dcmd=d.TXD_CMD_TSE | d.TXD_CMD_EOP | d.TXD_CMD_RS)
        r.kick()
        conn, _ = listener.accept()
        conn.settimeout(3)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        conn.close()
        assert got == payload
        assert r.nic.counters["tx frames"] >= 8
    finally:
        pump.close()
        backend.close()
        udp_sock.close()
        listener.close()
        loop.close()


def test_tap_errors_are_clear():
    if tap_skip_reason():
        pytest.skip(tap_skip_reason())
    with pytest.raises(ValueError, match="longer than 15"):
        TapBackend("x" * 20)
    with pytest.raises(ValueError, match="does not exist"):
        TapBackend("dmnosuch0")
