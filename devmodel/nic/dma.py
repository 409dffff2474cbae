"""Guest-RAM windows for the NIC's batched paths: the whole region holding a buffer, looked
up once and reused while the next buffers fall inside it (they normally all do), so a frame
costs one slice copy instead of a region search per access. The region table cannot change
while a batch runs (no ioreq is handled in between); callers keep a window for one batch only
and mark what they write dirty themselves (GuestMemory.mark_dirty)."""

from __future__ import annotations

from typing import Any


def ram_window(mem: Any, gpa: int, length: int, write: bool = False) -> tuple[int, int, Any] | None:
    """(start, end, memoryview) of the RAM region holding [gpa, gpa + length), or None when
    that range is not inside one region (or the region is read-only and `write`): the caller
    then takes GuestMemory's general accessors, which report the bus error."""
    for r in mem.regions:
        if r.gpa <= gpa and gpa + length <= r.gpa + r.size:
            if write and r.readonly:
                return None
            return r.gpa, r.gpa + r.size, r.view
    return None
