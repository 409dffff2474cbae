"""`--nic ...,backend=stream` end to end: a REAL daemon, a guest driver on the client library
(e1000_guest.py), and this test process as the other end of QEMU's stream framing (4-byte
big-endian length + frame), over Unix (the daemon connects to our server) and over TCP (the
daemon listens, server=on, and we connect)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

from e1000_guest import GuestE1000
from stream_peer import framed, read_frames

from devmodel.client import Hypervisor

PEER = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


@contextmanager
def daemon_with_unix_stream_peer(tmp_path) -> Iterator[tuple[Hypervisor, socket.socket]]:
    """A daemon whose stream NIC connects to our Unix server: (hv, the accepted peer socket).
    The daemon must exit cleanly on SIGTERM at the end."""
    path = str(tmp_path / "net.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    spec = f"model=e1000,mac=00:16:3e:00:00:42,backend=stream,path={path},rom=off"
    with Hypervisor.spawn(["--vga", "none", "--nic", spec], ram=16 << 20) as hv:
        server.settimeout(10)
        peer, _ = server.accept()
        try:
            yield hv, peer
        finally:
            peer.close()
        hv.process.signal()
        assert hv.process.wait_exit() == 0
    server.close()


def arp_request(src_mac: bytes, src_ip: bytes, dst_ip: bytes) -> bytes:
    return BCAST + src_mac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac,
                                                       src_ip, bytes(6), dst_ip)


def exchange(hv: Hypervisor, peer: socket.socket) -> None:
    g = GuestE1000(hv)
    mac = g.init()
    assert mac == bytes.fromhex("00163e000042")
    # guest -> peer: an ARP request (padded to 60 by PSP) and full-size frames
    req = arp_request(mac, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    g.send(req)
    big = [PEER + mac + b"\x88\xb5" + bytes([i]) * 1500 for i in range(20)]
    for f in big:
        g.send(f)
    got = read_frames(peer, 21)
    assert got[0] == req + bytes(60 - len(req)) and got[1:] == big
    # peer -> guest: the ARP reply, then a burst bigger than a socket read
    reply = mac + PEER + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, PEER,
                                                   bytes([10, 0, 0, 1]), mac, bytes([10, 0, 0, 2]))
    burst = [mac + PEER + b"\x88\xb5" + i.to_bytes(2, "big") * 700 for i in range(40)]
    peer.sendall(framed(reply) + b"".join(framed(f) for f in burst))
    rx = g.receive(41)
    assert rx[0] == reply + bytes(60 - len(reply))  # short frames are padded on receive
    assert rx[1:] == burst


def test_daemon_connects_to_a_unix_stream_server(tmp_path):
    with daemon_with_unix_stream_peer(tmp_path) as (hv, peer):
        exchange(hv, peer)


def test_daemon_listens_on_tcp_server_on():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    spec = f"model=e1000,mac=00:16:3e:00:00:42,backend=stream,addr=127.0.0.1:{port},server=on,rom=off"
    with Hypervisor.spawn(["--vga", "none", "--nic", spec], ram=16 << 20) as hv:
        deadline = time.monotonic() + 10
        while True:
            try:
                peer = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        try:
            exchange(hv, peer)
        finally:
            peer.close()
        hv.process.signal()
        assert hv.process.wait_exit() == 0


def test_missing_stream_server_is_a_clear_start_up_error(devmodel_daemon, tmp_path):
    import pytest

    with pytest.raises(RuntimeError, match="cannot connect stream to"):
        devmodel_daemon("--nic", f"backend=stream,path={tmp_path / 'none.sock'}")


def test_receive_delay_timer_fires_without_any_ioreq(tmp_path):
    """RDTR moderation: the frame arrives from the backend (no ioreq in flight) and arms the
    delay timer; the interrupt must come when it expires, not at the guest's next access."""
    with daemon_with_unix_stream_peer(tmp_path) as (hv, peer):
        g = GuestE1000(hv)
        mac = g.init()
        from devmodel.nic import e1000_defs as d

        g.wr(d.RDTR, 2000)  # ~2 ms after the last frame
        g.rd(d.ICR)
        assert not g.irq
        frame = mac + PEER + b"\x88\xb5" + bytes(100)
        peer.sendall(framed(frame))
        deadline = time.monotonic() + 5
        while not g.irq and time.monotonic() < deadline:
            hv.poll(0.01)  # only listens for dm_ops: no ioreq goes to the daemon
        assert g.irq, "the RDTR timer never fired"
        assert g.receive(1) == [frame]
