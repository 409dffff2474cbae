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
