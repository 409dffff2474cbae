"""The pcap capture of a network backend holds both directions and is readable while it grows
(flushed per received batch and per sent frame), as tcpdump -r or a test polling it needs."""

from __future__ import annotations

import socket

from devmodel.backends.net import PcapWriter, SocketBackend, read_pcap


def test_capture_both_directions_readable_before_close(tmp_path):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    backend = SocketBackend(a)
    path = str(tmp_path / "cap.pcap")
    backend.capture = PcapWriter(path)
    try:
        out = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(28)
        backend.send(out)
        assert b.recv(2048) == out
        assert read_pcap(path) == [out]
        back = bytes.fromhex("020000000001020000000002") + b"\x08\x00" + bytes(46)
        b.send(back)
        assert backend.recv_frames() == [back]
        assert read_pcap(path) == [out, back]
    finally:
        backend.close()
        b.close()
    assert read_pcap(path) == [out, back]


def test_capture_is_read_by_tcpdump(tmp_path):
    """An independent reader: tcpdump parses every record (pcap header, per-record lengths,
    Ethernet link type) and decodes the frames as ARP and IPv4/UDP."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (Debian package tcpdump)")
    sys.path.insert(0, str(Path(__file__).parent))
    from e1000_rig import IP_A, IP_B, eth, ipv4, udp

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    backend = SocketBackend(a)
    path = str(tmp_path / "cap.pcap")
    backend.capture = PcapWriter(path)
    try:
        arp = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes.fromhex(
            "0001080006040001020000000001" "0a000001" "000000000000" "0a000002")
        backend.send(arp)
        b.send(eth(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"), 0x0800,
                   ipv4(IP_B, IP_A, 17, udp(IP_B, IP_A, b"x" * 1400))))
        assert len(backend.recv_frames()) == 1
    finally:
        backend.close()
        b.close()
    out = subprocess.run(["tcpdump", "-nn", "-e", "-r", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert "ARP" in lines[0] and "Request who-has 10.0.0.2 tell 10.0.0.1" in lines[0]
    assert "IPv4" in lines[1] and "10.0.0.2.5000 > 10.0.0.1.53" in lines[1] and "length 1442" in lines[1]
