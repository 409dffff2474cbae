"""Statistics of the 82540EM's good frames, tallied per batch (a doorbell's walk, a receive
batch) and added to the clear-on-read registers once (E1000.stat_tally)."""

from __future__ import annotations

from collections.abc import Sequence

from .netpkt import BROADCAST

# size bucket (index into PRC_REGS/PTC_REGS; 6 = counted in none) by wire length with FCS,
# capped at 1024: 64, 65-127, 128-255, 256-511, 512-1023, 1024 and up (SDM 13.7)
BUCKET = bytes(6 if w < 64 else 0 if w == 64 else 1 if w < 128 else 2 if w < 256 else
                3 if w < 512 else 4 if w < 1024 else 5 for w in range(1025))


class FrameTally:
    """The statistics of a batch of good frames, added to the registers once per doorbell
    or receive batch instead of once per frame."""

    __slots__ = ("frames", "octets", "buckets", "bcast", "mcast")

    def __init__(self) -> None:
        self.frames = self.octets = self.bcast = self.mcast = 0
        self.buckets = [0] * 7

    def add(self, frame: bytes | bytearray) -> None:
        self.add_many((frame,))

    def add_many(self, frames: Sequence[bytes | bytearray]) -> None:
        """add() of each frame, with the loop's state in locals (a doorbell's batch)."""
        octets = bcast = mcast = 0
        buckets = self.buckets
        for frame in frames:
            wire = len(frame) + 4
            octets += wire
            buckets[BUCKET[wire if wire < 1024 else 1024]] += 1
            if frame[0] & 1:
                if frame[:6] == BROADCAST:
                    bcast += 1
                else:
                    mcast += 1
        self.frames += len(frames)
        self.octets += octets
        self.bcast += bcast
        self.mcast += mcast
