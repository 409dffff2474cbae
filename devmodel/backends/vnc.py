"""A VNC server (RFB 3.8, also answering 3.3 and 3.7 clients) for the standard VGA.

- `--vnc HOST:DISPLAY` (TCP port 5900 + DISPLAY; HOST empty means 127.0.0.1, as xl's default
  vnclisten), `--vnc unix:PATH`; `,password` asks for VNC authentication (the password comes
  from `--vnc-password-file` or QMP change-vnc-password; until then every attempt fails, as
  QEMU), `,to=N` tries displays DISPLAY..N until one is free. Security type None otherwise.
- Several clients; a client asking for exclusive access (ClientInit shared=0) disconnects the
  others. At most MAX_CLIENTS.
- Frames come from devmodel.vga.render (capture + render), on a loop timer at most `rate_hz`
  times a second and only while some client waits for an update (never on the ioreq path). A
  cheap check (registers and the VRAM bytes the mode shows) skips rendering when nothing
  changed; TileTracker then finds the changed 16x16 tiles. Each client keeps a bitmap of the
  tiles it has not been sent yet (bounded by the frame size).
- Encodings: Raw, ZLIB (6) and ZRLE (16), the first the client lists; DesktopSize (-223) on a
  mode change; QEMU's ExtendedKeyEvent (-258), raw scancodes instead of keysyms.
- Output is bounded per client: an update is only built while the client's transport holds
  less than `high_water` bytes, and one update carries at most `max_update` bytes of pixels
  (the rest stays dirty for the next request). A client that stops reading costs at most
  high_water + max_update + one rectangle of memory, and simply gets fewer updates.
- Keyboard and pointer events go through devmodel.input (the router QMP uses too).

Sockets and timers live here (a backend); the VGA device knows nothing about VNC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devmodel.vga.render import TILE, Frame, TileTracker, blank_frame, capture, is_text

from . import vncauth
from .screen import FrameCheck, find_vga, render_frame

log = logging.getLogger("devmodel.vnc")

VNC_BASE_PORT = 5900
DEFAULT_HOST = "127.0.0.1"
MAX_CLIENTS = 16
DEFAULT_RATE_HZ = 30
HIGH_WATER = 1 << 20  # bytes queued in a client's transport above which it gets no update
MAX_UPDATE = 4 << 20  # bytes of pixels in one FramebufferUpdate at most
MAX_RECT_BYTES = 256 << 10  # a merged rectangle holds at most this many bytes of pixels
MAX_CUT_TEXT = 1 << 20  # ClientCutText longer than this closes the connection
MAX_ENCODINGS = 1024  # SetEncodings entries looked at (the rest are read and ignored)
HANDSHAKE_TIMEOUT = 30.0
MAX_ACCEPTS_PER_WAKEUP = 16
BLINK_PHASE_S = 0.266  # text cursor blink half-period (QEMU VGA_TEXT_CURSOR_PERIOD_MS / 2)
FULL_CHECK_S = 1.0  # render anyway this often (a change outside the watched VRAM range)
WATCH_VGA_BYTES = 4 << 20  # VRAM a non-VBE mode can show (start address + 1024 lines)
# Rendering shares the loop with the ioreq path: the next refresh waits until the last one's
# cost is at most this fraction of the time since (a 2 ms text frame allows the full rate;
# a guest that makes every frame expensive gets fewer).
RENDER_DUTY = 0.25

RFB_VERSION = b"RFB 003.008\n"
SEC_INVALID, SEC_NONE, SEC_VNC = 0, 1, 2
ENC_RAW, ENC_COPYRECT, ENC_ZLIB, ENC_ZRLE = 0, 1, 6, 16
ENC_DESKTOP_SIZE = -223
ENC_EXT_KEY_EVENT = -258
SUPPORTED_ENCODINGS = (ENC_RAW, ENC_ZLIB, ENC_ZRLE)
ZRLE_TILE = 64

# Client -> server message types
MSG_SET_PIXEL_FORMAT, MSG_SET_ENCODINGS, MSG_FB_UPDATE_REQUEST = 0, 2, 3
MSG_KEY_EVENT, MSG_POINTER_EVENT, MSG_CLIENT_CUT_TEXT, MSG_QEMU = 4, 5, 6, 255
QEMU_EXT_KEY_EVENT = 0

_RECT = struct.Struct(">HHHHi")
_UPDATE_HDR = struct.Struct(">BxH")


class ProtocolError(Exception):
    pass


# ---- addresses -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VncSpec:
    family: str  # "ipv4", "ipv6" or "unix"
    host: str  # address, or the socket path
    display: int = 0
    to_display: int | None = None
    password: bool = False  # VNC authentication asked for

    @property
    def port(self) -> int:
        return VNC_BASE_PORT + self.display


def parse_vnc_spec(text: str) -> VncSpec:
    """`HOST:DISPLAY`, `:DISPLAY`, `[V6ADDR]:DISPLAY` or `unix:PATH`, then `,password`,
    `,to=N` (QEMU's -vnc syntax, the subset xl uses)."""
    head, *opts = text.split(",")
    password = False
    to = None
    for o in opts:
        if o in ("password", "password=on"):
            password = True
        elif o == "password=off":
            password = False
        elif o.startswith("to="):
            try:
                to = int(o[3:])
            except ValueError:
                raise ValueError(f"--vnc {text}: to={o[3:]} is not a display number") from None
        elif o:
            raise ValueError(f"--vnc {text}: unknown option {o!r} (password, to=N)")
    if head.startswith("unix:"):
        path = head[5:]
        if not path:
            raise ValueError(f"--vnc {text}: unix: needs a path")
        return VncSpec("unix", path, password=password)
    host, sep, disp = head.rpartition(":")
    if not sep:
        raise ValueError(f"--vnc {text}: expected HOST:DISPLAY or unix:PATH")
    try:
        display = int(disp)
    except ValueError:
        raise ValueError(f"--vnc {text}: display {disp!r} is not a number") from None
    if not 0 <= display <= 65535 - VNC_BASE_PORT:
        raise ValueError(f"--vnc {text}: display {display} out of range")
    if to is not None and not display <= to <= 65535 - VNC_BASE_PORT:
        raise ValueError(f"--vnc {text}: to={to} must be at least the display")
    family = "ipv4"
    if host.startswith("[") and host.endswith("]"):
        host, family = host[1:-1], "ipv6"
    elif ":" in host:
        family = "ipv6"
    return VncSpec(family, host or DEFAULT_HOST, display, to, password)


def open_listener(spec: VncSpec) -> socket.socket:
    """Bind and listen at set-up (so a taken port fails start-up, not the first client)."""
    if spec.family == "unix":
        from devmodel.daemon import listen_unix

        return listen_unix(spec.host)
    fam = socket.AF_INET6 if spec.family == "ipv6" else socket.AF_INET
    last: OSError | None = None
    for display in range(spec.display, (spec.to_display or spec.display) + 1):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((spec.host, VNC_BASE_PORT + display))
            s.listen(8)
            return s
        except OSError as e:
            s.close()
            last = e
    assert last is not None
    raise last


def read_password_file(path: str) -> bytes:
    """The first line of the file (at most 8 bytes are used, as VNC authentication does)."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise ValueError(f"--vnc-password-file {path}: {e.strerror}") from None
    return data.split(b"\n", 1)[0].rstrip(b"\r")


# ---- pixel formats -------------------------------------------------------------------------------
_PF = struct.Struct(">BBBBHHHBBB3x")


@dataclass(frozen=True)
class PixelFormat:
    bpp: int = 32
    depth: int = 24
    big_endian: bool = False
    true_colour: bool = True
    red_max: int = 255
    green_max: int = 255
    blue_max: int = 255
    red_shift: int = 16
    green_shift: int = 8
    blue_shift: int = 0

    def pack(self) -> bytes:
        return _PF.pack(self.bpp, self.depth, int(self.big_endian), int(self.true_colour),
                        self.red_max, self.green_max, self.blue_max, self.red_shift,
                        self.green_shift, self.blue_shift)

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, be, tc, rm, gm, bm, rs, gs, bs = _PF.unpack(data)
        pf = cls(bpp, depth, bool(be), bool(tc), rm, gm, bm, rs, gs, bs)
        if bpp not in (8, 16, 32):
            raise ProtocolError(f"bits-per-pixel {bpp} (8, 16 or 32)")
        if not pf.true_colour:
            if bpp != 8:
                raise ProtocolError("colour-map pixel formats need 8 bits per pixel")
            return COLOUR_MAP_FORMAT
        for m, s in ((rm, rs), (gm, gs), (bm, bs)):
            if m == 0 or s >= bpp or (m << s) >> bpp:
                raise ProtocolError(f"channel max {m} shift {s} do not fit {bpp} bits")
        return pf

    @property
    def bytes_pp(self) -> int:
        return self.bpp // 8

    def cpixel_drop(self) -> int | None:
        """ZRLE CPIXEL: the byte index (in memory order) dropped from each 32-bit pixel, or
        None when CPIXEL is the whole pixel."""
        if self.bpp != 32 or not self.true_colour or self.depth > 24:
            return None
        bits = ((self.red_max << self.red_shift) | (self.green_max << self.green_shift)
                | (self.blue_max << self.blue_shift))
        if bits < 1 << 24:  # the least significant three bytes
            return 0 if self.big_endian else 3
        if not bits & 0xFF:  # the most significant three bytes
            return 3 if self.big_endian else 0
        return None


DEFAULT_FORMAT = PixelFormat()
# A client that wants a colour map gets ours: 3-3-2 RGB (SetColourMapEntries at once).
COLOUR_MAP_FORMAT = PixelFormat(8, 8, False, False, 7, 7, 3, 5, 2, 0)


def _lane_or(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(n, "big")


_IDENT = bytes(range(256))
_ZERO = bytes(256)


class Converter:
    """Packed RGB (3 bytes a pixel) to a client pixel format, one output byte lane at a time
    with bytes.translate (no per-pixel Python loop)."""

    def __init__(self, pf: PixelFormat) -> None:
        self.pf = pf
        n = pf.bytes_pp
        self.lanes: list[tuple[int, list[tuple[int, bytes]]]] = []
        chans = ((pf.red_max, pf.red_shift), (pf.green_max, pf.green_shift),
                 (pf.blue_max, pf.blue_shift))
        for k in range(n):  # k: byte significance (0 = least significant)
            parts = []
            for c, (mx, sh) in enumerate(chans):
                t = bytes(((((v * mx + 127) // 255) << sh) >> (8 * k)) & 0xFF for v in range(256))
                if t != _ZERO:
                    parts.append((c, t))
            pos = n - 1 - k if pf.big_endian else k
            self.lanes.append((pos, parts))

    def __call__(self, rgb: bytes) -> bytes:
        n = self.pf.bytes_pp
        planes = (rgb[0::3], rgb[1::3], rgb[2::3])
        out = bytearray(len(planes[0]) * n)
        for pos, parts in self.lanes:
            acc: bytes | None = None
            for c, t in parts:
                p = planes[c] if t == _IDENT else planes[c].translate(t)
                acc = p if acc is None else _lane_or(acc, p)
            if acc is not None:
                out[pos::n] = acc
        return bytes(out)


def colour_map_entries() -> bytes:
    """SetColourMapEntries for COLOUR_MAP_FORMAT (256 entries, 16-bit channels)."""
    body = bytearray(struct.pack(">BxHH", 1, 0, 256))
    for i in range(256):
        r, g, b = (i >> 5) & 7, (i >> 2) & 7, i & 3
        body += struct.pack(">HHH", r * 65535 // 7, g * 65535 // 7, b * 65535 // 3)
    return bytes(body)


# ---- frames --------------------------------------------------------------------------------------
class VgaFrameSource:
    """Renders the VGA's frame, skipping the render when the registers and the VRAM the mode
    shows are unchanged since the last one (checked with one memcmp)."""

    def __init__(self, vga: Any, blink: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.vga = vga
        self.blink = blink
        self.clock = clock
        self._check = FrameCheck(WATCH_VGA_BYTES, FULL_CHECK_S)
        self._blank_sent = False
        self.frame: Frame = blank_frame()
        self.renders = 0

    def poll(self, force: bool = False) -> Frame | None:
        """A new frame, or None when nothing can have changed."""
        if self.vga is None:
            if not self._blank_sent:  # no VGA: the blank frame once
                self._blank_sent = True
                return self.frame
            return None
        now = self.clock()
        s = capture(self.vga, copy_vram=False)
        blink_on = True
        if self.blink and is_text(s):
            blink_on = int(now / BLINK_PHASE_S) % 2 == 0
        if not self._check.changed(s, now, force, (blink_on,)):
            return None
        frame = render_frame(s, blink_on)
        self.renders += 1
        self.frame = frame
        return frame


# ---- one client ----------------------------------------------------------------------------------
class VncClient:
    def __init__(self, server: VncServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        fam = getattr(sock, "family", None)
        if fam == socket.AF_UNIX:
            self.family, self.host, self.service = "unix", server.spec.host, ""
        else:
            self.family = "ipv6" if fam == socket.AF_INET6 else "ipv4"
            self.host, self.service = (str(peer[0]), str(peer[1])) if peer else ("", "")
        self.pf = DEFAULT_FORMAT
        self.convert = Converter(self.pf)
        self.encoding = ENC_RAW
        self.desktop_size = False
        self.ext_keys = False
        self.width = self.height = 0  # the size this client knows
        self.size_changed = False
        self.want = False  # a FramebufferUpdateRequest is outstanding
        self.force_reply = False  # answer it even with nothing dirty (non-incremental)
        self.tiles_x = self.tiles_y = 0
        self.dirty = bytearray()  # one byte per tile: not yet sent to this client
        self.buttons = 0  # RFB button mask last seen
        self.zstreams: dict[int, Any] = {}  # encoding (ZLIB, ZRLE) -> its zlib compressor
        self.updates_sent = 0
        self.updates_deferred = 0
        self.closed = False

    # ---- output ---------------------------------------------------------------------------------
    def queued(self) -> int:
        t = self.writer.transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    # ---- dirty tiles ------------------------------------------------------------------------------
    def resize(self, w: int, h: int) -> None:
        self.tiles_x = -(-w // TILE)
        self.tiles_y = -(-h // TILE)
        self.dirty = bytearray(b"\x01" * (self.tiles_x * self.tiles_y))

    def mark(self, x: int, y: int, w: int, h: int) -> None:
        if w <= 0 or h <= 0:
            return
        tx0, ty0 = max(0, x // TILE), max(0, y // TILE)
        tx1, ty1 = min(self.tiles_x, -(-(x + w) // TILE)), min(self.tiles_y, -(-(y + h) // TILE))
        if tx1 <= tx0:
            return
        ones = b"\x01" * (tx1 - tx0)
        for ty in range(ty0, ty1):
            o = ty * self.tiles_x
            self.dirty[o + tx0 : o + tx1] = ones

    def take_rects(self, fw: int, fh: int, bytes_pp: int, budget: int) -> list[tuple[int, int, int, int]]:
        """Dirty tiles as rectangles (runs per tile row, merged down while the same), clearing
        those taken, until `budget` bytes of pixels."""
        runs: list[list[int]] = []  # [x, y, w, h]
        open_runs: dict[tuple[int, int], list[int]] = {}
        total = 0
        tx_n = self.tiles_x
        for ty in range(self.tiles_y):
            row = self.dirty[ty * tx_n : (ty + 1) * tx_n]
            if 1 not in row:
                open_runs = {}
                continue
            y = ty * TILE
            h = min(TILE, fh - y)
            if h <= 0:  # below the frame (a client larger than it): nothing to draw
                self.dirty[ty * tx_n : (ty + 1) * tx_n] = bytes(tx_n)
                open_runs = {}
                continue
            nxt: dict[tuple[int, int], list[int]] = {}
            tx = 0
            while tx < tx_n:
                if not row[tx]:
                    tx += 1
                    continue
                end = row.find(b"\x00", tx)
                end = tx_n if end < 0 else end
                x = tx * TILE
                w = min(end * TILE, fw) - x
                if w <= 0:
                    self.dirty[ty * tx_n + tx : ty * tx_n + end] = bytes(end - tx)
                    tx = end
                    continue
                size = w * h * bytes_pp
                if total and total + size > budget:
                    return [tuple(r) for r in runs]  # type: ignore[misc]
                total += size
                self.dirty[ty * tx_n + tx : ty * tx_n + end] = bytes(end - tx)
                prev = open_runs.get((x, w))
                if prev is not None and (prev[3] + h) * w * bytes_pp <= MAX_RECT_BYTES:
                    prev[3] += h
                    nxt[(x, w)] = prev
                else:
                    r = [x, y, w, h]
                    runs.append(r)
                    nxt[(x, w)] = r
                tx = end
            open_runs = nxt
        return [tuple(r) for r in runs]  # type: ignore[misc]

    def has_dirty(self) -> bool:
        return 1 in self.dirty


# ---- the server ----------------------------------------------------------------------------------
class VncServer:
    """Serves the VGA on `listener`. Attach to an event loop with `attach(loop, on_input)`
    (the machine.io_hooks signature; `on_input` sends what input events made devices do)."""

    def __init__(self, listener: socket.socket, spec: VncSpec, vga: Any, router: Any, *,
                 password: bytes | None = None, rate_hz: float = DEFAULT_RATE_HZ,
                 blink: bool = True, name: str = "devmodel", high_water: int = HIGH_WATER,
                 max_update: int = MAX_UPDATE) -> None:
        self.listener = listener
        self.spec = spec
        self.source = VgaFrameSource(vga, blink=blink)
        self.router = router
        self.auth = spec.password or password is not None
        self.password = password
        self.period = 1.0 / max(rate_hz, 0.1)
        self.name = name.encode("utf-8", "replace")[:255] or b"devmodel"
        self.high_water = high_water
        self.max_update = max_update
        self.tracker = TileTracker(TILE)
        self.frame: Frame | None = None
        self.clients: list[VncClient] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_input: Callable[[], None] = lambda: None
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_tick = 0.0
        self._cost = 0.0  # seconds the last refresh took
        self._closed = False
        self.counters: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # ---- lifecycle ------------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop, on_input: Callable[[], None] | None = None
               ) -> VncServer:
        self.loop = loop
        if on_input is not None:
            self.on_input = on_input
        self.listener.setblocking(False)
        loop.add_reader(self.listener.fileno(), self._accept)
        log.info("VNC server on %s", self.address())
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.loop is not None:
            try:
                self.loop.remove_reader(self.listener.fileno())
            except (ValueError, OSError, RuntimeError):
                pass
        for c in list(self.clients):
            c.close()
        self.clients.clear()
        for t in list(self._tasks):
            t.cancel()
        try:
            self.listener.close()
        except OSError:
            pass
        if self.spec.family == "unix":
            try:
                os.unlink(self.spec.host)
            except OSError:
                pass

    def address(self) -> str:
        if self.spec.family == "unix":
            return f"unix:{self.spec.host}"
        host, port = self.listener.getsockname()[:2]
        return f"[{host}]:{port}" if self.spec.family == "ipv6" else f"{host}:{port}"

    # ---- QMP --------------------------------------------------------------------------------------
    def query(self) -> dict[str, Any]:
        """QMP query-vnc (QEMU's VncInfo)."""
        if self.spec.family == "unix":
            host, service = self.spec.host, ""
        else:
            h, p = self.listener.getsockname()[:2]
            host, service = str(h), str(p)
        return {"enabled": True, "host": host, "family": self.spec.family, "service": service,
                "auth": "vnc" if self.auth else "none",
                "clients": [{"host": c.host, "service": c.service, "family": c.family,
                             "websocket": False} for c in self.clients]}

    def set_password(self, password: str | bytes) -> bool:
        """QMP change-vnc-password: only when password authentication is on (QEMU)."""
        if not self.auth:
            return False
        self.password = password.encode("latin-1", "replace") if isinstance(password, str) else password
        return True

    # ---- connections ------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(MAX_ACCEPTS_PER_WAKEUP):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("VNC accept failed: %s", e)
                return
            if len(self._tasks) >= 2 * MAX_CLIENTS:  # connections stuck in the handshake
                self._count("connections refused (too many)")
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert self.loop is not None
            task = self.loop.create_task(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        except OSError:
            sock.close()
            return
        client = VncClient(self, reader, writer)
        why = "client closed"
        try:
            await asyncio.wait_for(self._handshake(client), HANDSHAKE_TIMEOUT)
            await self._messages(client)
        except asyncio.IncompleteReadError:
            pass
        except TimeoutError:
            why = "handshake timeout"
        except ProtocolError as e:
            why = f"protocol error: {e}"
            self._count("protocol errors")
        except (ConnectionError, OSError) as e:
            why = f"connection error: {e}"
        except asyncio.CancelledError:
            why = "server closed"
        finally:
            if client in self.clients:
                self.clients.remove(client)
            client.close()
            log.info("VNC client %s:%s gone: %s", client.host, client.service, why)

    async def _handshake(self, c: VncClient) -> None:
        c.send(RFB_VERSION)
        ver = await c.reader.readexactly(12)
        if ver[:4] != b"RFB " or ver[7:8] != b"." or ver[11:] != b"\n":
            raise ProtocolError(f"bad version string {ver!r}")
        try:
            major, minor = int(ver[4:7]), int(ver[8:11])
        except ValueError:
            raise ProtocolError(f"bad version string {ver!r}") from None
        if major != 3 or minor < 3:
            raise ProtocolError(f"RFB version {major}.{minor}")
        minor = 8 if minor >= 8 else (7 if minor == 7 else 3)
        sec = SEC_VNC if self.auth else SEC_NONE
        full = len(self.clients) >= MAX_CLIENTS
        if minor == 3:
            if full:
                c.send(struct.pack(">I", SEC_INVALID) + _counted(b"too many clients"))
                raise ProtocolError("too many clients")
            c.send(struct.pack(">I", sec))
        else:
            if full:
                c.send(b"\x00" + _counted(b"too many clients"))
                raise ProtocolError("too many clients")
            c.send(bytes((1, sec)))
            chosen = (await c.reader.readexactly(1))[0]
            if chosen != sec:
                if minor == 8:
                    c.send(struct.pack(">I", 1) + _counted(b"security type not offered"))
                raise ProtocolError(f"client chose security type {chosen}")
        if sec == SEC_VNC:
            challenge = vncauth.new_challenge()
            c.send(challenge)
            response = await c.reader.readexactly(vncauth.CHALLENGE_SIZE)
            if not vncauth.check_response(self.password, challenge, response):
                self._count("authentication failures")
                c.send(struct.pack(">I", 1) + (_counted(b"authentication failed") if minor == 8 else b""))
                raise ProtocolError("authentication failed")
            c.send(struct.pack(">I", 0))
        elif minor == 8:
            c.send(struct.pack(">I", 0))
        shared = (await c.reader.readexactly(1))[0]
        if not shared:
            for other in list(self.clients):
                other.close()
        frame = self._current_frame()
        c.width, c.height = frame.width, frame.height
        c.resize(c.width, c.height)
        c.send(struct.pack(">HH", c.width, c.height) + c.pf.pack()
               + _counted(self.name))
        self.clients.append(c)
        log.info("VNC client %s:%s connected", c.host, c.service)

    def _current_frame(self) -> Frame:
        if self.frame is None:
            self._refresh(force=True)
        assert self.frame is not None
        return self.frame

    async def _messages(self, c: VncClient) -> None:
        rd = c.reader.readexactly
        while not c.closed:
            mtype = (await rd(1))[0]
            if mtype == MSG_SET_PIXEL_FORMAT:
                data = await rd(19)
                pf = PixelFormat.unpack(data[3:])
                c.pf = pf
                c.convert = Converter(pf)
                if not pf.true_colour:
                    c.send(colour_map_entries())
                c.mark(0, 0, c.width, c.height)  # what the client has is in the old format
            elif mtype == MSG_SET_ENCODINGS:
                (n,) = struct.unpack(">xH", await rd(3))
                encs = struct.unpack(f">{n}i", await rd(4 * n))[:MAX_ENCODINGS]
                self._set_encodings(c, encs)
            elif mtype == MSG_FB_UPDATE_REQUEST:
                inc, x, y, w, h = struct.unpack(">BHHHH", await rd(9))
                c.want = True
                if not inc:
                    c.force_reply = True
                    c.mark(x, y, w, h)
                self._schedule()
            elif mtype == MSG_KEY_EVENT:
                down, sym = struct.unpack(">Bxxi", await rd(7))
                self.router.keysym(sym & 0xFFFFFFFF, bool(down))
                self.on_input()
            elif mtype == MSG_POINTER_EVENT:
                mask, x, y = struct.unpack(">BHH", await rd(5))
                self._pointer(c, mask, x, y)
                self.on_input()
            elif mtype == MSG_CLIENT_CUT_TEXT:
                (n,) = struct.unpack(">xxxi", await rd(7))
                n = abs(n)  # negative: extended clipboard (not offered, but skip it whole)
                if n > MAX_CUT_TEXT:
                    raise ProtocolError(f"ClientCutText of {n} bytes")
                await rd(n)  # the guest has no clipboard channel
            elif mtype == MSG_QEMU:
                sub = (await rd(1))[0]
                if sub != QEMU_EXT_KEY_EVENT:
                    raise ProtocolError(f"QEMU client message {sub} not supported")
                down, _sym, keycode = struct.unpack(">HII", await rd(10))
                self._ext_key(keycode, bool(down))
                self.on_input()
            else:
                raise ProtocolError(f"message type {mtype}")

    def _set_encodings(self, c: VncClient, encs: tuple[int, ...]) -> None:
        c.encoding = next((e for e in encs if e in SUPPORTED_ENCODINGS), ENC_RAW)
        c.desktop_size = ENC_DESKTOP_SIZE in encs
        ext = ENC_EXT_KEY_EVENT in encs
        if ext and not c.ext_keys:
            # QEMU acknowledges with an update holding one ExtendedKeyEvent pseudo-rectangle.
            c.send(_UPDATE_HDR.pack(0, 1) + _RECT.pack(0, 0, 0, 0, ENC_EXT_KEY_EVENT))
        c.ext_keys = ext

    # ---- input ------------------------------------------------------------------------------------
    def _pointer(self, c: VncClient, mask: int, x: int, y: int) -> None:
        # RFB: bit 0 left, 1 middle, 2 right, 3 wheel up, 4 wheel down, 7 (QEMU) side.
        pressed = mask & ~c.buttons
        c.buttons = mask
        wheel = (1 if pressed & 0x08 else 0) - (1 if pressed & 0x10 else 0)
        buttons = (mask & 1) | (0x02 if mask & 0x04 else 0) | (0x04 if mask & 0x02 else 0)
        self.router.pointer_screen(x, y, c.width, c.height, buttons, wheel)

    def _ext_key(self, keycode: int, down: bool) -> None:
        # QEMU's ExtendedKeyEvent carries the XT scancode: 0xE0xx for extended keys.
        if keycode & 0xFF00 == 0xE000:
            qnum = 0x80 | (keycode & 0x7F)
        else:
            qnum = keycode & 0x7F
        if not self.router.key(qnum, down):
            self._count("unknown scancode")

    # ---- updates ----------------------------------------------------------------------------------
    def _schedule(self) -> None:
        if self._timer is not None or self._closed or self.loop is None:
            return
        interval = max(self.period, self._cost / RENDER_DUTY)
        delay = max(0.0, self._last_tick + interval - self.loop.time())
        self._timer = self.loop.call_later(delay, self._tick)

    def _refresh(self, force: bool = False) -> None:
        """Poll the frame source; on a new frame, mark its changed tiles in every client."""
        frame = self.source.poll(force)
        if frame is None:
            return
        old = self.frame
        self.frame = frame
        resized = old is None or (old.width, old.height) != (frame.width, frame.height)
        if not resized and old.rgb == frame.rgb:
            self.tracker.shadow = frame
            return
        rects = self.tracker.update(frame)
        for c in self.clients:
            if resized and (c.width, c.height) != (frame.width, frame.height):
                c.size_changed = True
                continue
            for r in rects:
                c.mark(*r)

    def _tick(self) -> None:
        self._timer = None
        assert self.loop is not None
        self._last_tick = self.loop.time()
        if self._closed:
            return
        waiting = [c for c in self.clients if c.want and not c.closed]
        if not waiting:
            return
        t0 = time.perf_counter()
        try:
            self._refresh()
        except Exception:  # a rendering bug must not take the daemon down
            log.exception("VNC frame refresh failed")
            self._count("render errors")
        frame = self.frame
        if frame is not None:
            for c in waiting:
                self._update_client(c, frame)
        self._cost = time.perf_counter() - t0
        if any(c.want for c in self.clients):
            self._schedule()

    def _update_client(self, c: VncClient, frame: Frame) -> None:
        if c.queued() >= self.high_water:
            c.updates_deferred += 1
            self._count("updates deferred (slow client)")
            return
        if c.size_changed:
            c.size_changed = False
            if c.desktop_size:
                # On its own, unsolicited, as QEMU does; the pixels follow in the next update.
                c.width, c.height = frame.width, frame.height
                c.send(_UPDATE_HDR.pack(0, 1) + _RECT.pack(0, 0, c.width, c.height, ENC_DESKTOP_SIZE))
            # A client without DesktopSize keeps its size and gets what fits in it.
            c.resize(c.width, c.height)
        if not c.force_reply and not c.has_dirty():
            return
        parts: list[bytes] = []
        n = 0
        w, h = min(c.width, frame.width), min(c.height, frame.height)
        for x, y, rw, rh in c.take_rects(w, h, c.pf.bytes_pp, self.max_update):
            parts.append(self._encode(c, frame, x, y, rw, rh))
            n += 1
        c.send(_UPDATE_HDR.pack(0, n) + b"".join(parts))
        c.want = c.force_reply = False
        c.updates_sent += 1

    def _encode(self, c: VncClient, frame: Frame, x: int, y: int, w: int, h: int) -> bytes:
        stride = frame.width * 3
        rgb = frame.rgb
        if x == 0 and w == frame.width:
            block = rgb[y * stride : (y + h) * stride]
        else:
            block = b"".join(rgb[(yy * frame.width + x) * 3 : (yy * frame.width + x + w) * 3]
                             for yy in range(y, y + h))
        pixels = c.convert(block)
        enc = c.encoding
        if enc == ENC_RAW:
            return _RECT.pack(x, y, w, h, ENC_RAW) + pixels
        # ZLIB and ZRLE: each its own zlib stream for the connection's lifetime (RFB)
        stream = c.zstreams.get(enc)
        if stream is None:
            stream = c.zstreams[enc] = zlib.compressobj(6)
        data = pixels if enc == ENC_ZLIB else _zrle_tiles(pixels, w, h, c.pf)
        z = stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH)
        return _RECT.pack(x, y, w, h, enc) + _counted(z)


def _counted(data: bytes) -> bytes:
    """RFB's length-prefixed bytes (a reason string, the desktop name, compressed data)."""
    return struct.pack(">I", len(data)) + data


def _zrle_tiles(pixels: bytes, w: int, h: int, pf: PixelFormat) -> bytes:
    """ZRLE's uncompressed stream: 64x64 tiles, each solid (subencoding 1) or raw (0), in
    CPIXELs."""
    bpp = pf.bytes_pp
    drop = pf.cpixel_drop()
    if drop is not None:
        buf = bytearray(pixels)
        del buf[drop::4]
        pixels, bpp = bytes(buf), 3
    stride = w * bpp
    out = bytearray()
    for ty in range(0, h, ZRLE_TILE):
        th = min(ZRLE_TILE, h - ty)
        for tx in range(0, w, ZRLE_TILE):
            tw = min(ZRLE_TILE, w - tx)
            a = ty * stride + tx * bpp
            tile = b"".join(pixels[a + r * stride : a + r * stride + tw * bpp] for r in range(th))
            first = tile[:bpp]
            if tile == first * (tw * th):
                out += b"\x01" + first
            else:
                out += b"\x00" + tile
    return bytes(out)


def find_vnc(machine: Any) -> VncServer | None:
    """The machine's VNC server (QMP query-vnc, change-vnc-password), if any."""
    for b in getattr(machine, "backends", ()):
        if isinstance(b, VncServer):
            return b
    return None


def build_vnc(machine: Any, spec_text: str, password_file: str | None = None, *,
              name: str = "devmodel", vga: Any = None, blink: bool = False) -> VncServer:
    """Set-up time: bind the listener, find the VGA, register the server as a machine backend
    (closed with the machine) and as an io hook (served on the daemon's loop). The text cursor
    does not blink by default, so that what a client sees is what `--screendump` and QMP
    screendump write (the screen recorder draws it steadily); a blink phase costs a text frame
    (about 1-2 ms) when it is on."""
    from devmodel.input import router_for

    spec = parse_vnc_spec(spec_text)
    password = read_password_file(password_file) if password_file else None
    if vga is None:
        vga = find_vga(machine)
    try:
        listener = open_listener(spec)
    except OSError as e:
        raise ValueError(f"--vnc {spec_text}: {e.strerror or e}") from None
    server = VncServer(listener, spec, vga, router_for(machine), password=password,
                       name=name or "devmodel", blink=blink)
    machine.backends.append(server)
    machine.io_hooks.append(lambda loop, flush: server.attach(loop, flush))
    return server
