"""The other end of QEMU's `-netdev stream` framing (4-byte big-endian length + frame), written
independently of devmodel's deframer, for the stream backend's tests (tests/backends/
test_net_stream.py in-process, tests/nic/test_e1000_stream_daemon.py against a real daemon)."""

from __future__ import annotations

import socket
import struct


def framed(frame: bytes) -> bytes:
    return struct.pack(">I", len(frame)) + frame


def read_frames(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    """`count` frames from `sock` (fewer if the peer closes first)."""
    sock.settimeout(timeout)
    out, buf = [], b""
    while len(out) < count:
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            n = struct.unpack(">I", buf[:4])[0]
            out.append(buf[4 : 4 + n])
            buf = buf[4 + n :]
        if len(out) >= count:
            break
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return out
