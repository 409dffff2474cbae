"""Time as an input (design rule 11): a clock the daemon drives, and timers devices arm.

Devices hold `Timer` objects and arm them with absolute deadlines in nanoseconds; they never
read a wall clock. The daemon asks `next_deadline()` after each batch of messages and calls
`run_due(now)` when it passes. With `--clock virtual` the hypervisor moves time with CLOCK
messages, so a test or fuzzer is fully deterministic.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

# A misbehaving device (or guest) re-arming a timer in the past must not spin the loop.
MAX_TIMERS_PER_RUN = 1024
# Heap entries (live and superseded) before a compaction; live timers are a few per device.
MAX_STALE_ENTRIES = 4096


class Timer:
    __slots__ = ("_clock", "callback", "deadline", "_seq", "name")

    def __init__(self, clock: Clock, callback: Callable[[int], None], name: str) -> None:
        self._clock = clock
        self.callback = callback
        self.deadline: int | None = None
        self._seq = 0
        self.name = name

    def arm(self, deadline_ns: int) -> None:
        self.deadline = deadline_ns
        self._seq = next(self._clock._counter)
        clock = self._clock
        heapq.heappush(clock._heap, (deadline_ns, self._seq, self))
        clock.changed = True
        if len(clock._heap) > MAX_STALE_ENTRIES:
            clock._compact()

    def arm_in(self, delay_ns: int) -> None:
        self.arm(self._clock.now() + delay_ns)

    def cancel(self) -> None:
        self.deadline = None

    @property
    def armed(self) -> bool:
        return self.deadline is not None


class Clock:
    def __init__(self, virtual: bool = False) -> None:
        self.virtual = virtual
        self._virtual_now = 0
        self._heap: list[tuple[int, int, Timer]] = []
        self._counter = itertools.count(1)
        self.changed = False  # set when a deadline was armed since the daemon last looked

    def now(self) -> int:
        if self.virtual:
            return self._virtual_now
        return time.monotonic_ns()

    def set_virtual(self, now_ns: int) -> None:
        # Virtual time never goes backwards: a CLOCK message in the past is ignored.
        if now_ns > self._virtual_now:
            self._virtual_now = now_ns

    def timer(self, callback: Callable[[int], None], name: str = "") -> Timer:
        return Timer(self, callback, name)

    def cancel_where(self, pred: Callable[[Timer], bool]) -> int:
        """Cancel every armed timer `pred` selects (an unplugged device's); returns how many."""
        hit = 0
        for _, _, t in list(self._heap):
            if t.deadline is not None and pred(t):
                t.cancel()
                hit += 1
        return hit

    def _compact(self) -> None:
        """Drop superseded entries: a guest toggling an enable bit re-arms without bound, and
        lazy deletion alone would let the heap grow with it."""
        self._heap = [e for e in self._heap if e[2].deadline == e[0] and e[2]._seq == e[1]]
        heapq.heapify(self._heap)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and (heap[0][2].deadline != heap[0][0] or heap[0][2]._seq != heap[0][1]):
            heapq.heappop(heap)

    def next_deadline(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: int | None = None) -> int:
        """Fire every timer whose deadline has passed; returns how many fired."""
        if now is None:
            now = self.now()
        fired = 0
        while fired < MAX_TIMERS_PER_RUN:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            deadline, _, t = heapq.heappop(self._heap)
            t.deadline = None
            fired += 1
            t.callback(deadline)
        return fired
