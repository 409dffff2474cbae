"""The one virtual clock of the simulated machine.

Everything time-dependent on the hypervisor side reads this clock: the 8254 PIT, port 0x61's
refresh toggle and the TSC returned by the ``rdtsc`` hook. Nothing reads the host clock, so a
run is a pure function of the firmware image and the device model's answers (the study's
obstacle 11: with the host TSC the number of 0x61 polls varied from 545 to 904 per boot).

Time advances only when the simulator says so: by a fixed cost per exit (port, MMIO, rdtsc),
by a fixed cost per executed instruction slice, and by jumping to the next timer deadline
while the vCPU is halted.
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000


class VirtualClock:
    """Monotonic nanoseconds since power-on, and a TSC derived from them."""

    def __init__(self, tsc_hz: int = 1_000_000_000) -> None:
        if tsc_hz <= 0:
            raise ValueError("tsc_hz must be positive")
        self.tsc_hz = tsc_hz
        self.ns = 0
        self._tsc_offset = 0

    def advance(self, ns: int) -> None:
        if ns > 0:
            self.ns += ns

    def advance_to(self, ns: int) -> None:
        if ns > self.ns:
            self.ns = ns

    def tsc(self) -> int:
        """The TSC as the guest sees it: ticks at tsc_hz since the last reset."""
        return (self.ns * self.tsc_hz // NS_PER_S - self._tsc_offset) & 0xFFFF_FFFF_FFFF_FFFF

    def reset_tsc(self) -> None:
        """A CPU reset zeroes the TSC (Intel SDM vol. 3, 17.17); the clock itself runs on."""
        self._tsc_offset = self.ns * self.tsc_hz // NS_PER_S
