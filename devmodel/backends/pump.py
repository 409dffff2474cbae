"""The event-loop glue shared by the pumps that move data between a backend and a device
(NetPump for NICs, SerialPump for UARTs).

A backend exposes `fileno()` (what to watch for input, or None), `write_fileno()`, a
`backlog` that is non-empty while output waits for a writable fd, `flush()`, and three
callbacks the pump sets: `on_backlog` (output started to wait), `on_fd_closing(fd)` (stop
watching it before it is closed) and `on_fds_changed` (a listener accepted or lost a client:
watch the new fd). Only add_reader/add_writer/remove_*/call_soon are used, so any asyncio
loop (uvloop too) works.

Subclasses implement `_readable()` and may override `_reading_paused()` to stop reading
(flow control) while the device has no room; they call `_sync_reader()` when that changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FdPump:
    def __init__(self, loop: Any, backend: Any, on_effects: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.backend = backend
        self.on_effects = on_effects
        self.closed = False
        self._reader_fd: int | None = None
        self._writer_fd: int | None = None
        backend.on_backlog = self._want_write
        backend.on_fd_closing = self._fd_closing
        backend.on_fds_changed = self._fds_changed

    def start(self) -> None:
        self._sync_reader()
        if self.backend.backlog:
            self._want_write()

    # -- input ----------------------------------------------------------------------------
    def _reading_paused(self) -> bool:
        return False

    def _sync_reader(self) -> None:
        want = None if self.closed or self._reading_paused() else self.backend.fileno()
        if want == self._reader_fd:
            return
        if self._reader_fd is not None:
            self.loop.remove_reader(self._reader_fd)
        self._reader_fd = want
        if want is not None:
            self.loop.add_reader(want, self._readable)

    def _readable(self) -> None:
        raise NotImplementedError

    def _effects(self) -> None:
        if self.on_effects is not None:
            self.on_effects()

    # -- output ---------------------------------------------------------------------------
    def _want_write(self) -> None:
        fd = self.backend.write_fileno()
        if fd is None or self.closed or fd == self._writer_fd:
            return
        if self._writer_fd is not None:
            self.loop.remove_writer(self._writer_fd)
        self._writer_fd = fd
        self.loop.add_writer(fd, self._writable)

    def _writable(self) -> None:
        self.backend.flush()
        if not self.backend.backlog and self._writer_fd is not None:
            self.loop.remove_writer(self._writer_fd)
            self._writer_fd = None
        self._sync_reader()  # a failed write may have dropped a client

    # -- fds coming and going -------------------------------------------------------------
    def _fd_closing(self, fd: int) -> None:
        if fd == self._reader_fd:
            self.loop.remove_reader(fd)
            self._reader_fd = None
        if fd == self._writer_fd:
            self.loop.remove_writer(fd)
            self._writer_fd = None

    def _fds_changed(self) -> None:
        if self.closed:
            return
        if self._writer_fd is not None and self._writer_fd != self.backend.write_fileno():
            self.loop.remove_writer(self._writer_fd)
            self._writer_fd = None
        self._sync_reader()
        if self.backend.backlog:
            self._want_write()

    def close(self) -> None:
        """Detach from the loop and the backend (the backend stays open; close it separately)."""
        if self.closed:
            return
        self.closed = True
        if self._reader_fd is not None:
            self.loop.remove_reader(self._reader_fd)
            self._reader_fd = None
        if self._writer_fd is not None:
            self.loop.remove_writer(self._writer_fd)
            self._writer_fd = None
        self.backend.on_backlog = None
        self.backend.on_fd_closing = None
        self.backend.on_fds_changed = None
