"""Sans-IO framing: bytes and received fds in, whole messages out.

Both the daemon and the client library use this. On SOCK_STREAM, ancillary fds are attached
to bytes rather than messages, so received fds go into a FIFO and a message whose header has
HAS_FDS takes one from it (each fd-carrying message is sent with a single sendmsg call).
"""

from __future__ import annotations

import array
import socket
from collections import deque
from dataclasses import dataclass, field

from .codec import HEADER
from .constants import FLAG_HAS_FDS, HEADER_SIZE, KNOWN_FLAGS, MAX_PAYLOAD, ErrorCode


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The fds of the SCM_RIGHTS entries of recvmsg's ancillary data, in order (a truncated
    last entry gives the whole fds it holds)."""
    fds: list[int] = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
            fds.extend(a)
    return fds


@dataclass(slots=True)
class Message:
    type: int
    flags: int
    tag: int
    chan: int
    payload: bytes
    fds: list[int] = field(default_factory=list)


class FramingError(Exception):
    """The byte stream cannot be resynchronised (oversized or nonsensical header).

    After this the connection must be closed: a length we refuse to trust leaves no way to
    find the next header. Everything else is a per-message ERROR and the stream goes on.
    """

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


class Deframer:
    MAX_PENDING_FDS = 64

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fds: deque[int] = deque()

    def feed(self, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        self._buf += data
        self._fds.extend(fds)
        # A peer that sends fds without messages to claim them is closed rather than allowed
        # to exhaust our descriptor table.
        if len(self._fds) > self.MAX_PENDING_FDS:
            raise FramingError(ErrorCode.BAD_FDS, "too many unclaimed file descriptors")

    def messages(self):
        """Yield complete messages. Raises FramingError for an untrustworthy header."""
        buf = self._buf
        pos = 0
        n = len(buf)
        try:
            while n - pos >= HEADER_SIZE:
                mtype, flags, length, tag, chan = HEADER.unpack_from(buf, pos)
                if length > MAX_PAYLOAD:
                    raise FramingError(
                        ErrorCode.BAD_HEADER, f"payload_len {length} exceeds limit {MAX_PAYLOAD}"
                    )
                if flags & ~KNOWN_FLAGS:
                    raise FramingError(ErrorCode.BAD_HEADER, f"unknown header flags {flags:#x}")
                end = pos + HEADER_SIZE + length
                if end > n:
                    break
                fds: list[int] = []
                if flags & FLAG_HAS_FDS and self._fds:
                    fds.append(self._fds.popleft())
                payload = bytes(buf[pos + HEADER_SIZE : end])
                pos = end
                yield Message(mtype, flags, tag, chan, payload, fds)
        finally:
            if pos:
                del buf[:pos]

    def pending_fds(self) -> list[int]:
        out = list(self._fds)
        self._fds.clear()
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
