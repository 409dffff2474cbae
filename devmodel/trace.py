"""`--trace FILE`: every message in both directions, replayable.

File: the 8-byte magic b"DMTRACE1", then records of a 16-byte header `<BBHIQ>` (direction:
0 hypervisor->daemon, 1 daemon->hypervisor; reserved; reserved; length of the message;
nanoseconds since the trace began) followed by the message exactly as framed on the socket.
File descriptors cannot be recorded: a replay recreates MEM_ADD regions as fresh zeroed memfds.

Direction 2 (SIDEBAND) records are not socket messages but what the hypervisor side did
besides talking to the daemon, so that a replay can do it too (`devmodel fuzz` writes them):
a 4-byte kind, then its payload. b"GMEM" + `<Q` gpa + bytes: the guest's CPU wrote guest RAM
(applied to the recreated memfds, in order, once everything sent before it was answered).
b"ARGS" + JSON: how the recording daemon was started ({"daemon_args": [...], ...}).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"DMTRACE1"
RECORD = struct.Struct("<BBHIQ")
TO_DM = 0
FROM_DM = 1
SIDEBAND = 2
GMEM = b"GMEM"
ARGS = b"ARGS"
_GPA = struct.Struct("<Q")


class TraceWriter:
    def __init__(self, path: str) -> None:
        self._f = open(path, "wb", buffering=1 << 16)  # noqa: SIM115 - closed by close()
        self._f.write(MAGIC)
        self._t0 = time.monotonic_ns()

    def record(self, direction: int, message: bytes) -> None:
        self._f.write(RECORD.pack(direction, 0, 0, len(message), time.monotonic_ns() - self._t0))
        self._f.write(message)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


@dataclass
class TraceRecord:
    direction: int
    time_ns: int
    message: bytes


def read_trace(path: str) -> Iterator[TraceRecord]:
    with open(path, "rb") as f:
        yield from read_records(f, path)


def read_records(f: BinaryIO, path: str) -> Iterator[TraceRecord]:
    """The records of a trace read from `f` (a plain file, or a decompressing one such as
    gzip.open's), from its magic on; `path` names it in errors."""
    if f.read(len(MAGIC)) != MAGIC:
        raise ValueError(f"{path} is not a devmodel trace (bad magic)")
    while True:
        hdr = f.read(RECORD.size)
        if not hdr:
            return
        if len(hdr) < RECORD.size:
            raise ValueError(f"{path}: truncated record header")
        direction, _, _, length, t = RECORD.unpack(hdr)
        msg = f.read(length)
        if len(msg) < length:
            raise ValueError(f"{path}: truncated record")
        yield TraceRecord(direction, t, msg)


@dataclass
class ReplayResult:
    sent: int = 0
    answers: int = 0
    mismatches: list[tuple[int, bytes, bytes]] | None = None  # (tag, recorded, replayed)


def sideband_args(path: str) -> dict:
    """The ARGS sideband record of a trace ({} if it has none)."""
    import json

    for rec in read_trace(path):
        if rec.direction == SIDEBAND and rec.message[:4] == ARGS:
            return json.loads(rec.message[4:].decode())
    return {}


def replay(path: str, hv) -> ReplayResult:
    """Send a trace's hypervisor->daemon messages to a fresh daemon through `hv` (a
    devmodel.client.Hypervisor created with handshake=False) and compare every IORESP with
    the recorded one. MEM_ADD regions are recreated as zeroed memfds of the recorded size;
    the recorded HELLO is sent as it was; GMEM sideband records are written into them."""
    import os

    from devmodel.wire.codec import HEADER, MEM_ADD
    from devmodel.wire.constants import FLAG_HAS_FDS, MsgType

    recorded: dict[int, bytes] = {}
    for rec in read_trace(path):
        if rec.direction == FROM_DM:
            mtype, _flags, _length, tag, _chan = HEADER.unpack_from(rec.message, 0)
            if mtype == MsgType.IORESP:
                recorded[tag] = rec.message[16:]
    result = ReplayResult(mismatches=[])
    fds: list[int] = []
    regions: list[tuple[int, int, int, int]] = []  # (gpa, size, fd, fd offset)
    unanswered = False
    try:
        for rec in read_trace(path):
            if rec.direction == SIDEBAND:
                if rec.message[:4] == GMEM:
                    if unanswered:
                        hv.barrier()  # what was sent before the CPU wrote RAM is done first
                        unanswered = False
                    (gpa,) = _GPA.unpack_from(rec.message, 4)
                    _write_regions(regions, gpa, rec.message[4 + _GPA.size :])
                continue
            if rec.direction != TO_DM:
                continue
            msg = rec.message
            mtype, flags, _length, tag, _chan = HEADER.unpack_from(msg, 0)
            if mtype == MsgType.DMOP_REPLY:
                continue
            if mtype == MsgType.MEM_ADD and flags & FLAG_HAS_FDS:
                gpa, size, off, _f, _rid = MEM_ADD.unpack_from(msg, 16)
                fd = os.memfd_create("devmodel-replay", os.MFD_CLOEXEC)
                os.ftruncate(fd, off + size)
                fds.append(fd)
                regions.append((gpa, size, fd, off))
                hv.send_raw_fd(msg, fd)
            else:
                hv.send_raw(msg)
            result.sent += 1
            if mtype == MsgType.IOREQ and tag in recorded:
                reply = hv.recv_reply(tag)
                result.answers += 1
                unanswered = False
                if reply.payload != recorded[tag]:
                    result.mismatches.append((tag, recorded[tag], reply.payload))
            elif mtype == MsgType.HELLO:
                hv.recv_reply(tag)
                hv.wait_enabled()
            else:
                unanswered = True
    finally:
        for fd in fds:
            os.close(fd)
    return result


def _write_regions(regions: list[tuple[int, int, int, int]], gpa: int, data: bytes) -> None:
    import os

    for rgpa, size, fd, off in regions:
        lo, hi = max(gpa, rgpa), min(gpa + len(data), rgpa + size)
        if lo < hi:
            os.pwrite(fd, data[lo - gpa : hi - gpa], off + lo - rgpa)
