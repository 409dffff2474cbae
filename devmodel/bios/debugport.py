"""Debug console ports and POST codes.

- 0x402: QEMU isa-debugcon as SeaBIOS uses it (CONFIG_DEBUG_IO_PORT). A byte write appends
  to the console; a read returns the readback value 0xE9. SeaBIOS reads the port once and
  keeps printing there only if it sees 0xE9 (seabios-on-unicorn.md, obstacle 8).
- 0xE9: the Bochs/Xen debug port (Xen hvm_print_line, Bochs port_e9_hack): a byte write
  appends, a read returns 0xE9.
- 0x80: POST codes. A write records the code (last one and a bounded history); a read
  returns 0xFF, as QEMU's ioport80_read does (hw/i386/pc.c returns all-ones; the port has no
  latch on the pc machine).

All three take byte accesses only (QEMU debugcon valid.max_access_size = 1); wider ones fall
outside the one-byte range and read all-ones / are dropped by the bus.

Output goes to an injected `ConsoleSink`: write(channel, data) with channel "debugcon",
"e9" or "post". `BufferSink` is the bounded in-memory sink used by tests and the boot
command: it keeps the last `max_bytes` of each channel and splits text channels into lines
(bounded count and length), logging each complete line once at info level.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Protocol

from devmodel.core.bus import Range
from devmodel.core.device import Device

log = logging.getLogger("devmodel.console")

DEBUGCON_PORT = 0x402
E9_PORT = 0xE9
POST_PORT = 0x80
READBACK = 0xE9
POST_HISTORY = 64

CHANNEL_DEBUGCON = "debugcon"
CHANNEL_E9 = "e9"
CHANNEL_POST = "post"
TEXT_CHANNELS = frozenset({CHANNEL_DEBUGCON, CHANNEL_E9})


class ConsoleSink(Protocol):
    def write(self, channel: str, data: bytes) -> None: ...


class NullSink:
    def write(self, channel: str, data: bytes) -> None:
        return None


class _Channel:
    __slots__ = ("raw", "lines", "partial", "total")

    def __init__(self, max_lines: int) -> None:
        self.raw = bytearray()
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.partial = bytearray()
        self.total = 0


class BufferSink:
    """Bounded console buffer. Memory is O(max_bytes + max_lines * max_line) per channel
    whatever the guest writes; the channel set is fixed by the device code, not the guest.

    Complete lines of text channels go to the `devmodel.console` logger at info level, each
    once, until `max_log_lines` have been logged (then one warning, and silence: a guest that
    prints forever cannot flood the daemon's log)."""

    def __init__(self, max_bytes: int = 64 * 1024, max_lines: int = 1000, max_line: int = 1024,
                 max_log_lines: int = 10000, log_lines: bool = True) -> None:
        if max_bytes <= 0 or max_lines <= 0 or max_line <= 0:
            raise ValueError("BufferSink bounds must be positive")
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.max_line = max_line
        self.max_log_lines = max_log_lines
        self.log_lines = log_lines
        self.logged = 0
        self._channels: dict[str, _Channel] = {}

    def _chan(self, channel: str) -> _Channel:
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(self.max_lines)
        return ch

    def write(self, channel: str, data: bytes) -> None:
        ch = self._chan(channel)
        ch.total += len(data)
        raw = ch.raw
        raw += data
        # Trim in chunks (amortised O(1) per byte): let it grow to twice the bound.
        if len(raw) > 2 * self.max_bytes:
            del raw[: len(raw) - self.max_bytes]
        if channel in TEXT_CHANNELS:
            self._split(channel, ch, data)
        elif channel == CHANNEL_POST and self.log_lines:
            for b in data:
                log.debug("POST code %#04x", b)

    def _split(self, channel: str, ch: _Channel, data: bytes) -> None:
        partial = ch.partial
        start = 0
        while True:
            nl = data.find(b"\n", start)
            piece = data[start:] if nl < 0 else data[start:nl]
            room = self.max_line - len(partial)
            while len(piece) > room:  # an over-long line is cut into max_line pieces
                partial += piece[:room]
                piece = piece[room:]
                self._line(channel, ch)
                room = self.max_line
            partial += piece
            if nl < 0:
                return
            self._line(channel, ch)
            start = nl + 1

    def _line(self, channel: str, ch: _Channel) -> None:
        text = bytes(ch.partial).rstrip(b"\r").decode("utf-8", "replace")
        ch.partial.clear()
        ch.lines.append(text)
        if not self.log_lines:
            return
        if self.logged < self.max_log_lines:
            self.logged += 1
            log.info("[%s] %s", channel, text)
        elif self.logged == self.max_log_lines:
            self.logged += 1
            log.warning("console: %d lines logged; further guest console lines are not logged",
                        self.max_log_lines)

    # ---- reading back -----------------------------------------------------------------------
    def data(self, channel: str = CHANNEL_DEBUGCON) -> bytes:
        """The last max_bytes bytes written to `channel`."""
        ch = self._channels.get(channel)
        if ch is None:
            return b""
        return bytes(ch.raw[-self.max_bytes :])

    def text(self, channel: str = CHANNEL_DEBUGCON) -> str:
        return self.data(channel).decode("utf-8", "replace")

    def lines(self, channel: str = CHANNEL_DEBUGCON) -> list[str]:
        """Complete lines (the last max_lines of them)."""
        ch = self._channels.get(channel)
        return list(ch.lines) if ch is not None else []

    def partial(self, channel: str = CHANNEL_DEBUGCON) -> str:
        ch = self._channels.get(channel)
        return bytes(ch.partial).decode("utf-8", "replace") if ch is not None else ""

    def total(self, channel: str = CHANNEL_DEBUGCON) -> int:
        """Bytes ever written to `channel` (not bounded by what is kept)."""
        ch = self._channels.get(channel)
        return ch.total if ch is not None else 0

    def clear(self) -> None:
        self._channels.clear()


class DebugPorts(Device):
    """0x402 debugcon, 0xE9 and 0x80 POST as one device; each can be left out."""

    SNAPSHOT_FIELDS = ("last_post", "post_history")

    def __init__(self, sink: ConsoleSink | None = None, *, debugcon: bool = True,
                 e9: bool = True, post: bool = True, debugcon_port: int = DEBUGCON_PORT,
                 readback: int = READBACK, name: str = "debugport") -> None:
        super().__init__(name)
        self.sink: ConsoleSink = sink if sink is not None else NullSink()
        self.enable_debugcon = debugcon
        self.enable_e9 = e9
        self.enable_post = post
        self.debugcon_port = debugcon_port
        self.readback = readback & 0xFF
        self.last_post: int | None = None
        self.post_history: list[int] = []
        self._history: deque[int] = deque(maxlen=POST_HISTORY)
        self.bytes_out = {CHANNEL_DEBUGCON: 0, CHANNEL_E9: 0}

    def pio_ranges(self) -> list[Range]:
        one = frozenset({1})
        out = []
        if self.enable_debugcon:
            out.append(Range(self.debugcon_port, 1, self._con_read, self._debugcon_write,
                             "debugcon", self, one, write_rep=self._debugcon_write_rep))
        if self.enable_e9:
            out.append(Range(E9_PORT, 1, self._con_read, self._e9_write, "port-e9", self, one,
                             write_rep=self._e9_write_rep))
        if self.enable_post:
            out.append(Range(POST_PORT, 1, self._post_read, self._post_write, "post", self, one))
        return out

    def _con_read(self, off: int, size: int) -> int:
        return self.readback

    def _debugcon_write(self, off: int, size: int, value: int) -> None:
        self.bytes_out[CHANNEL_DEBUGCON] += 1
        self.sink.write(CHANNEL_DEBUGCON, bytes((value & 0xFF,)))

    def _e9_write(self, off: int, size: int, value: int) -> None:
        self.bytes_out[CHANNEL_E9] += 1
        self.sink.write(CHANNEL_E9, bytes((value & 0xFF,)))

    # Whole strings: REP OUTSB, and runs of posted single-byte writes (Machine.
    # handle_buffered_batch); the sink gets them in one piece instead of a byte per call.
    def _debugcon_write_rep(self, off: int, size: int, data: bytes | memoryview) -> None:
        self.bytes_out[CHANNEL_DEBUGCON] += len(data)
        self.sink.write(CHANNEL_DEBUGCON, bytes(data))

    def _e9_write_rep(self, off: int, size: int, data: bytes | memoryview) -> None:
        self.bytes_out[CHANNEL_E9] += len(data)
        self.sink.write(CHANNEL_E9, bytes(data))

    def _post_read(self, off: int, size: int) -> int:
        return 0xFF

    def _post_write(self, off: int, size: int, value: int) -> None:
        code = value & 0xFF
        self.last_post = code
        self._history.append(code)
        self.sink.write(CHANNEL_POST, bytes((code,)))

    @property
    def post_codes(self) -> list[int]:
        """The last POST_HISTORY codes, oldest first."""
        return list(self._history)

    # The history travels as a plain list; the deque keeps it bounded.
    def snapshot(self):
        self.post_history = list(self._history)
        return super().snapshot()

    def post_restore(self) -> None:
        self._history = deque((int(x) & 0xFF for x in self.post_history[-POST_HISTORY:]),
                              maxlen=POST_HISTORY)
        self.post_history = list(self._history)
        if self.last_post is not None:
            self.last_post = int(self.last_post) & 0xFF
