"""The screen: the VGA's latest frame, rendered at a bounded rate, and the files written from it.

`ScreenRecorder` renders on the daemon's event loop, at most `rate_hz` times a second (a loop
timer, never on the ioreq path), and skips the render when a cheap check (the registers and
the VRAM bytes the mode shows) finds nothing changed; a TileTracker then finds the 16x16 tiles
that did change (`dirty`, for whoever consumes updates). It keeps the latest frame and text
screen, answers the VGA's screendump (QMP) with a fresh one, and at exit writes
`--screendump FILE.png` and `--screentext FILE.txt`.

The files are opened at set-up (before any chroot or privilege drop, and so that a bad path
fails start-up) and rewritten at exit. Files happen here, never in the device.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from devmodel.vga.render import TILE, Frame, TileTracker, blank_frame, capture, render, text_screen

from .display import encode_png, encode_text

log = logging.getLogger("devmodel.screen")

DEFAULT_RATE_HZ = 5.0
MAX_RATE_HZ = 60.0
FULL_CHECK_S = 2.0  # render anyway this often (a change outside the watched VRAM)
WATCH_VGA_BYTES = 512 << 10  # VRAM a non-VBE mode can show (4 planes x 64 KiB, and a margin)
MAX_DIRTY = 4096  # dirty rectangles kept between consumers; past that the whole frame


class FrameCheck:
    """Whether a capture may show something the last render did not: the registers (and
    `extra`, e.g. a blink phase), the VRAM the mode shows (`watch` bytes from 0 outside VBE;
    one memcmp), or `full_s` seconds since the last render. The screen recorder's and the VNC
    server's frame sources each keep one."""

    def __init__(self, watch: int = WATCH_VGA_BYTES, full_s: float = FULL_CHECK_S) -> None:
        self.watch = watch
        self.full_s = full_s
        self._key: tuple | None = None
        self._vram: bytes | None = None
        self._last = -1e9

    def changed(self, s: Any, now: float, force: bool = False, extra: tuple = ()) -> bool:
        """True (and remembered as the last render) unless nothing can have changed."""
        key = (s.sr, s.gr, s.ar, s.cr, s.ar_index, s.misc, s.palette, s.pel_mask, s.dac_8bit,
               s.vbe_enabled, s.vbe_xres, s.vbe_yres, s.vbe_bpp, s.vbe_line_offset,
               s.vbe_start_addr) + extra
        if s.vbe_enabled:
            a = s.vbe_start_addr
            b = min(s.vram_size, a + s.vbe_yres * s.vbe_line_offset)
        else:
            a, b = 0, min(s.vram_size, self.watch)
        vram = s.vram[a:b]
        if (not force and key == self._key and vram == self._vram
                and now - self._last < self.full_s):
            return False
        self._key, self._vram, self._last = key, bytes(vram), now
        return True


def render_frame(s: Any, blink_on: bool) -> Frame:
    """render(), or the blank frame when the mode has no size."""
    frame = render(s, blink_on)
    return frame if frame.width > 0 and frame.height > 0 else blank_frame()


class ScreenRecorder:
    """The latest frame of one VGA (see the module docstring). An io hook and a backend."""

    def __init__(self, vga: Any, *, rate_hz: float = DEFAULT_RATE_HZ,
                 screendump: str | None = None, screentext: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"screen rate {rate_hz:g} Hz: must be 0 (on demand) to {MAX_RATE_HZ:g}")
        self.vga = vga
        self.rate_hz = rate_hz
        self.clock = clock
        self.paths = {"png": screendump, "text": screentext}
        self._fds: dict[str, int] = {}
        try:
            for kind, path in self.paths.items():
                if path:
                    self._fds[kind] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self._close_fds()
            raise ValueError(f"--screen{'dump' if kind == 'png' else 'text'} {path}: "
                             f"{e.strerror or e}") from None
        self.frame: Frame = blank_frame()
        self.text: list[str] = []
        self.tracker = TileTracker(TILE)
        self.dirty: list[tuple[int, int, int, int]] = []
        self.renders = 0
        self.ticks = 0
        self._check = FrameCheck()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._written = False

    # ---- the io hook: a timer on the daemon's loop ---------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop, flush: Callable[[], None] | None = None
               ) -> ScreenRecorder:
        self.loop = loop
        if self.rate_hz > 0:
            self._timer = loop.call_later(1.0 / self.rate_hz, self._tick)
        return self

    def _tick(self) -> None:
        self._timer = None
        if self._closed or self.loop is None:
            return
        self.ticks += 1
        try:
            self.refresh()
        except Exception:  # a rendering bug must not take the daemon down
            log.exception("screen refresh failed")
        self._timer = self.loop.call_later(1.0 / self.rate_hz, self._tick)

    # ---- frames ---------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Render if anything the display shows changed (or `force`); True if it rendered.
        The cursor is drawn steadily (no blink phase): dumps are reproducible."""
        vga = self.vga
        if getattr(vga, "failed", False):
            return False
        s = capture(vga, copy_vram=False)
        if not self._check.changed(s, self.clock(), force):
            return False
        frame = render_frame(s, True)
        self.renders += 1
        rects = self.tracker.update(frame)
        if rects:
            self.dirty.extend(rects)
            if len(self.dirty) > MAX_DIRTY:
                self.dirty = [(0, 0, frame.width, frame.height)]
        self.frame = frame
        self.text = text_screen(s)
        return True

    def current(self) -> Frame:
        """The frame the monitor shows now (re-rendered only if something changed)."""
        self.refresh()
        return self.frame

    def take_dirty(self) -> list[tuple[int, int, int, int]]:
        out, self.dirty = self.dirty, []
        return out

    # ---- files ----------------------------------------------------------------------------
    def write_files(self) -> None:
        """Write --screendump / --screentext from the final screen."""
        if not self._fds:
            return
        try:
            self.refresh(force=True)
        except Exception:
            log.exception("final screen render failed; writing the last frame")
        f = self.frame
        data = {"png": lambda: encode_png(f.width, f.height, f.rgb),
                "text": lambda: encode_text(self.text)}
        for kind, fd in self._fds.items():
            try:
                blob = data[kind]()
                os.ftruncate(fd, 0)
                os.pwrite(fd, blob, 0)
                log.info("screen %s written to %s (%dx%d %s)", kind, self.paths[kind], f.width,
                         f.height, f.mode)
            except (OSError, ValueError) as e:
                log.error("writing the screen %s to %s failed: %s", kind, self.paths[kind], e)

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def close(self) -> None:
        """At exit (first as the io hook's closeable, then as a backend; VRAM is still mapped
        the first time): write the files once, stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        if not self._written:
            self._written = True
            self.write_files()
            self._close_fds()


def find_vga(machine: Any) -> Any:
    return next((d for d in machine.devices if type(d).__name__ == "StdVga"), None)


def build_screen(machine: Any, *, rate_hz: float = DEFAULT_RATE_HZ, screendump: str | None = None,
                 screentext: str | None = None) -> ScreenRecorder | None:
    """Set-up time: the recorder for the machine's VGA (None without one; output files then
    are an error), registered as a backend (closed with the machine) and an io hook (its timer
    runs on the daemon's loop), and as the VGA's renderer (its screendump uses the frame)."""
    vga = find_vga(machine)
    if vga is None:
        if screendump or screentext:
            raise ValueError("--screendump and --screentext need the VGA (--vga std)")
        return None
    rec = ScreenRecorder(vga, rate_hz=rate_hz, screendump=screendump, screentext=screentext)
    # Backends close last first: VRAM (added with the VGA) is still mapped when this closes.
    machine.backends.append(rec)
    machine.io_hooks.append(lambda loop, flush: rec.attach(loop, flush))
    vga.renderer = rec
    return rec
