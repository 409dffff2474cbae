"""`--trace FILE`: every message in both directions, replayable.

File: the 8-byte magic b"DMTRACE1", then records of a 16-byte header `<BBHIQ>` (direction:
0 hypervisor->daemon, 1 daemon->hypervisor; reserved; reserved; length of the message;
nanoseconds since the trace began) followed by the message exactly as framed on the socket.
File descriptors cannot be recorded: a replay recreates MEM_ADD regions as fresh zeroed memfds.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"DMTRACE1"
RECORD = struct.Struct("<BBHIQ")
TO_DM = 0
FROM_DM = 1


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
