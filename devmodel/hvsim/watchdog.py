"""A wall-clock bound on one ``emu_start``, without Unicorn's ``timeout``.

The simulator runs the vCPU uncounted (simulator.py), so an ``emu_start`` returns only when a
hook stops it, at HLT, or on an error. A guest that spins without any exit would never come
back; this watchdog stops it after ``period`` wall seconds.

Unicorn's own ``timeout`` argument is not used: it starts a thread per ``emu_start`` that polls
every 2 us (TIMEOUT_STEP in uc.c) and is joined at the end, which costs CPU on the core the
vCPU shares with the device model, and latency on every return. This is one long-lived thread
that sleeps on a condition variable. ``uc_emu_stop`` from another thread is what Unicorn's
timeout thread does itself; the condition's lock makes sure it can only hit the ``emu_start``
it was armed for (once that call has returned, ``uc_emu_stop`` is a no-op, and the next call
clears the request on entry). What to do at an expiry is the simulator's (``on_expire``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    """Calls ``on_expire()`` every ``period`` wall seconds while an ``emu_start`` is armed;
    ``on_expire`` stops the vCPU itself if it wants to and returns True if it did."""

    def __init__(self, on_expire: Callable[[], bool], period: float) -> None:
        if period <= 0:
            raise ValueError("the watchdog period must be positive")
        self.period = period
        self._on_expire = on_expire
        self._cond = threading.Condition()
        self._gen = 0
        self._running = False
        self._fired = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """An ``emu_start`` is about to begin."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hvsim-watchdog",
                                                daemon=True)
                self._thread.start()
            self._gen += 1
            self._running = True
            self._cond.notify()

    def disarm(self) -> bool:
        """The ``emu_start`` returned; True if the watchdog stopped it."""
        with self._cond:
            self._running = False
            self._cond.notify()
            return self._fired == self._gen

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._running:
                    self._cond.wait()
                    continue
                gen = self._gen
                deadline = time.monotonic() + self.period
                while self._running and self._gen == gen and not self._closed:
                    left = deadline - time.monotonic()
                    if left > 0:
                        self._cond.wait(left)
                        continue
                    if self._on_expire():
                        self._fired = gen
                        while self._running and self._gen == gen and not self._closed:
                            self._cond.wait()  # wait for this emu_start to return
                        break
                    deadline = time.monotonic() + self.period
