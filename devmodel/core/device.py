"""The device base: a pure state machine with counters, reset and snapshot/restore.

A device never does I/O (design rule 1). What it needs is injected by the machine when it is
attached (`DeviceContext`: guest memory, IRQ lines, clock, shutdown requests). What it
serves is declared: `ranges()` for fixed port/MMIO ranges; PCI devices add BARs.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bus import Range
    from .clock import Clock
    from .irq import IrqRouter
    from .memory import GuestMemory

log = logging.getLogger("devmodel.device")
_NUMBERS = re.compile(r"\b(?:0x[0-9a-fA-F]+|-?\d+)\b")  # values inside guest-error messages


class SnapshotError(ValueError):
    pass


@dataclass(frozen=True)
class SharedRegion:
    """Memory a device owns that the hypervisor maps (firmware, VRAM, an option ROM): what
    Device.shared_regions lists and Machine.share_region takes, sent as a daemon->hypervisor
    MEM_ADD (docs/protocol.md 4.7). The fd stays the device's (a machine backend)."""

    region_id: int
    gpa: int
    size: int
    fd: int
    flags: int


@dataclass
class DeviceContext:
    memory: GuestMemory
    irqs: IrqRouter
    clock: Clock
    machine: Any  # the Machine: request_shutdown(), remap hooks


class Device:
    """Base of every device. Subclasses list their state in SNAPSHOT_FIELDS."""

    SNAPSHOT_VERSION = 1
    SNAPSHOT_FIELDS: tuple[str, ...] = ()
    # Rate limit of the misbehaviour log (the counter itself always counts).
    LOG_INTERVAL_S = 1.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters: Counter[str] = Counter()
        self.failed = False
        self.ctx: DeviceContext | None = None
        self._last_log = 0.0

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx: DeviceContext) -> None:
        """Called once by the machine; devices take their IRQ lines and timers here."""
        self.ctx = ctx

    def pio_ranges(self) -> list[Range]:
        """Fixed port ranges the machine adds when the device is attached."""
        return []

    def mmio_ranges(self) -> list[Range]:
        return []

    def shared_regions(self) -> list[SharedRegion]:
        """Memory this device owns that the hypervisor must map (firmware, VRAM), sent as
        daemon->hypervisor MEM_ADD when it connects."""
        return []

    def reset(self) -> None:
        """Power-on / system reset state."""

    def announced(self) -> None:
        """The hypervisor has been told our ranges: push state it must mirror (IRQ routes)."""

    # ---- guest misbehaviour (design rule 6) ---------------------------------------------
    def guest_error(self, what: str) -> None:
        # The counter key is the message with its numbers taken out: messages carry guest
        # values ("tx ring pointers outside TDLEN: 7 9 0x80"), and a key per value would let a
        # guest grow the counters without bound (one new key per ioreq).
        key = _NUMBERS.sub("#", what)
        self.counters[key.split(" ", 1)[0] if len(key) > 60 else key] += 1
        now = time.monotonic()
        if now - self._last_log >= self.LOG_INTERVAL_S:
            self._last_log = now
            log.warning("%s: guest error: %s (%d so far)", self.name, what,
                        sum(self.counters.values()))

    # ---- snapshot (design rule 8) -------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        state = {}
        for f in self.SNAPSHOT_FIELDS:
            v = getattr(self, f)
            state[f] = _plain(v)
        return {"device": type(self).__name__, "version": self.SNAPSHOT_VERSION, "state": state}

    def restore(self, snap: dict[str, Any]) -> None:
        if snap.get("device") != type(self).__name__:
            raise SnapshotError(f"{self.name}: snapshot is of {snap.get('device')!r}")
        if snap.get("version") != self.SNAPSHOT_VERSION:
            raise SnapshotError(f"{self.name}: snapshot version {snap.get('version')} unsupported")
        state = snap.get("state", {})
        missing = set(self.SNAPSHOT_FIELDS) - set(state)
        if missing:
            raise SnapshotError(f"{self.name}: snapshot lacks {sorted(missing)}")
        for f in self.SNAPSHOT_FIELDS:
            cur = getattr(self, f)
            v = state[f]
            if isinstance(cur, bytearray):
                if len(v) != len(cur):
                    raise SnapshotError(f"{self.name}: {f} has {len(v)} bytes, want {len(cur)}")
                cur[:] = v
            elif isinstance(cur, list):
                setattr(self, f, list(v))
            elif isinstance(cur, dict):
                setattr(self, f, dict(v))
            else:
                setattr(self, f, v)
        self.post_restore()

    def post_restore(self) -> None:
        """Recompute derived state after restore."""


def _plain(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
