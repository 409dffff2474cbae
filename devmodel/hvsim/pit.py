"""The 8254 programmable interval timer (ports 0x40-0x43) and port 0x61 (PC "port B").

Behaviour follows the Intel 8254 datasheet (order no. 231164): modes 0-5 (6 and 7 alias 2 and 3),
LSB/MSB/word access, counter latch and read-back commands, the gate of channel 2 on port 0x61
bit 0 and its output on bit 5. Counting arithmetic is QEMU's hw/timer/i8254.c (the same model
Xen's xen/arch/x86/emul/vpit.c uses): a channel stores the time its count was loaded and derives
count and OUT from the elapsed input clocks at 1.193182 MHz, so nothing ticks in between.

Time comes from the shared VirtualClock. Channel 0's OUT drives ISA IRQ 0; the simulator asks
``next_deadline()`` and calls ``run_until(now)`` to replay OUT transitions in order, so an edge
is never skipped even when time jumps (HLT).

Port 0x61 bits (IBM PC/AT technical reference; QEMU hw/audio/pcspk.c, Xen vpit.c): 0 = timer 2
gate, 1 = speaker data, 4 = refresh toggle (read, flips every 15.085 us), 5 = timer 2 OUT (read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clock import NS_PER_S, VirtualClock

PIT_HZ = 1_193_182
REFRESH_PERIOD_NS = 15_085
# OUT transitions replayed per run_until call before the rest is coalesced into one (a guest
# that programs a 1-tick period must not make the simulator loop for the length of a HLT).
MAX_TRANSITIONS_PER_UPDATE = 64

RW_LSB, RW_MSB, RW_WORD0, RW_WORD1 = 1, 2, 3, 4


def _ticks(ns: int) -> int:
    return ns * PIT_HZ // NS_PER_S


def _ns(ticks: int) -> int:
    # Round up so that the tick has really elapsed at the returned time.
    return -(-ticks * NS_PER_S // PIT_HZ)


@dataclass
class PitChannel:
    gate: int = 1
    mode: int = 0
    bcd: int = 0
    rw_mode: int = RW_WORD0
    read_state: int = RW_WORD0
    write_state: int = RW_WORD0
    write_latch: int = 0
    count: int = 0x10000
    load_ns: int = 0
    programmed: bool = False  # no OUT activity before the first count is loaded (as Xen)
    count_latched: int = 0
    latched_count: int = 0
    status_latched: bool = False
    status: int = 0

    def _elapsed(self, now: int) -> int:
        return _ticks(now - self.load_ns)

    def get_count(self, now: int) -> int:
        d = self._elapsed(now)
        if self.mode in (0, 1, 4, 5):
            return (self.count - d) & 0xFFFF
        if self.mode == 3:
            return self.count - ((2 * d) % self.count)
        return self.count - (d % self.count)

    def get_out(self, now: int) -> int:
        if not self.programmed:
            return 0
        d = self._elapsed(now)
        if self.mode == 1:
            return int(d < self.count)
        if self.mode == 2:
            return int(d % self.count == 0 and d != 0)
        if self.mode == 3:
            return int(d % self.count < (self.count + 1) >> 1)
        if self.mode in (4, 5):
            return int(d == self.count)
        return int(d >= self.count)  # mode 0

    def next_transition(self, now: int) -> int | None:
        """Virtual time of the next OUT change after ``now``, or None."""
        if not self.programmed:
            return None
        d = self._elapsed(now)
        c = self.count
        if self.mode in (0, 1):
            if d >= c:
                return None
            nxt = c
        elif self.mode == 2:
            # OUT is high for the one input clock at each multiple of the count (QEMU's
            # convention; the 8254's low pulse is the mirror image), so both edges are events.
            nxt = d + 1 if (d % c == 0 and d != 0) else d // c * c + c
        elif self.mode == 3:
            base = d // c * c
            half = (c + 1) >> 1
            nxt = base + half if d - base < half else base + c
        else:  # 4, 5
            if d < c:
                nxt = c
            elif d == c:
                nxt = c + 1
            else:
                return None
        t = self.load_ns + _ns(nxt)
        return t if t > now else now + 1

    def load(self, value: int, now: int) -> None:
        self.count = value or 0x10000
        self.load_ns = now
        self.programmed = True

    def latch_count(self, now: int) -> None:
        if not self.count_latched:  # a second latch before the read is ignored
            self.latched_count = self.get_count(now)
            self.count_latched = self.rw_mode


class Pit:
    """Three channels plus port 0x61. ``on_irq0(level)`` receives channel 0's OUT."""

    def __init__(self, clock: VirtualClock, on_irq0: Callable[[int], None]) -> None:
        self.clock = clock
        self.on_irq0 = on_irq0
        self.channels = [PitChannel(), PitChannel(), PitChannel()]
        self.speaker_data = 0
        self.portb_low = 0  # bits 2-3 as written (parity/IOCHK enables; no function here)
        self._irq0_level = 0
        self._irq0_at = 0  # time up to which channel 0's OUT has been replayed
        self.coalesced = 0  # OUT transitions skipped because a guest programmed a tiny period
        self.reset()

    def reset(self) -> None:
        now = self.clock.ns
        self.channels = [PitChannel(gate=int(i != 2), load_ns=now) for i in range(3)]
        self.speaker_data = 0
        self.portb_low = 0
        self._irq0_at = now
        self._set_irq0(0)

    def _set_irq0(self, level: int) -> None:
        if level != self._irq0_level:
            self._irq0_level = level
            self.on_irq0(level)

    # ---- timer events ----------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        return self.channels[0].next_transition(self._irq0_at)

    def run_until(self, now: int) -> None:
        """Replay channel 0's OUT up to ``now`` (bounded; see MAX_TRANSITIONS_PER_UPDATE)."""
        ch = self.channels[0]
        t = self._irq0_at
        for _ in range(MAX_TRANSITIONS_PER_UPDATE):
            nxt = ch.next_transition(t)
            if nxt is None or nxt > now:
                break
            t = nxt
            self._set_irq0(ch.get_out(t))
        else:
            if (nxt := ch.next_transition(t)) is not None and nxt <= now:
                self.coalesced += 1
        self._irq0_at = now
        self._set_irq0(ch.get_out(now))

    def _changed(self, index: int) -> None:
        if index == 0:
            self.run_until(self.clock.ns)

    # ---- ports 0x40-0x43 -------------------------------------------------------------------
    def io_write(self, port: int, value: int) -> None:
        now = self.clock.ns
        value &= 0xFF
        addr = port & 3
        if addr == 3:
            sel = value >> 6
            if sel == 3:  # read-back command (8254 only)
                for i, ch in enumerate(self.channels):
                    if not value & (2 << i):
                        continue
                    if not value & 0x20:
                        ch.latch_count(now)
                    if not value & 0x10 and not ch.status_latched:
                        ch.status = (
                            ch.get_out(now) << 7 | ch.rw_mode << 4 | ch.mode << 1 | ch.bcd
                        )
                        ch.status_latched = True
                return
            ch = self.channels[sel]
            access = value >> 4 & 3
            if access == 0:
                ch.latch_count(now)
                return
            if sel == 0:
                self.run_until(now)
            mode = value >> 1 & 7
            ch.rw_mode = ch.read_state = ch.write_state = access
            ch.mode = mode - 4 if mode >= 6 else mode
            ch.bcd = value & 1
            return
        ch = self.channels[addr]
        if ch.write_state == RW_WORD0:
            ch.write_latch = value
            ch.write_state = RW_WORD1
            return
        if addr == 0:
            self.run_until(now)
        if ch.write_state == RW_LSB:
            ch.load(value, now)
        elif ch.write_state == RW_MSB:
            ch.load(value << 8, now)
        else:  # RW_WORD1
            ch.load(ch.write_latch | value << 8, now)
            ch.write_state = RW_WORD0
        self._changed(addr)

    def io_read(self, port: int) -> int:
        addr = port & 3
        if addr == 3:
            return 0xFF  # the control word register cannot be read
        ch = self.channels[addr]
        now = self.clock.ns
        if ch.status_latched:
            ch.status_latched = False
            return ch.status
        if ch.count_latched:
            if ch.count_latched == RW_WORD0:
                ch.count_latched = RW_MSB
                return ch.latched_count & 0xFF
            ret = ch.latched_count & 0xFF if ch.count_latched == RW_LSB else ch.latched_count >> 8
            ch.count_latched = 0
            return ret & 0xFF
        count = ch.get_count(now)
        if ch.read_state == RW_LSB:
            return count & 0xFF
        if ch.read_state == RW_MSB:
            return count >> 8 & 0xFF
        if ch.read_state == RW_WORD0:
            ch.read_state = RW_WORD1
            return count & 0xFF
        ch.read_state = RW_WORD0
        return count >> 8 & 0xFF

    # ---- port 0x61 -------------------------------------------------------------------------
    def set_gate2(self, level: int) -> None:
        ch = self.channels[2]
        # Modes 1, 2, 3, 5 restart counting on a rising gate edge (datasheet, "GATE" table);
        # modes 0 and 4 would pause, which, like QEMU and Xen, we do not model.
        if level and not ch.gate and ch.mode in (1, 2, 3, 5):
            ch.load_ns = self.clock.ns
        ch.gate = level

    def portb_read(self) -> int:
        now = self.clock.ns
        refresh = now // REFRESH_PERIOD_NS & 1
        return (
            self.channels[2].gate
            | self.speaker_data << 1
            | self.portb_low
            | refresh << 4
            | self.channels[2].get_out(now) << 5
        )

    def portb_write(self, value: int) -> None:
        self.set_gate2(value & 1)
        self.speaker_data = value >> 1 & 1
        self.portb_low = value & 0x0C
