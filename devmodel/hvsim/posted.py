"""Posted (buffered) writes: what Xen puts in the buffered ioreq ring instead of waiting.

Xen turns single, non-pointer, count-1 writes to the legacy VGA window 0xA0000-0xBFFFF that an
ioreq server claims into ``buf_ioreq_t`` slots, and the vCPU goes on at once (xen-protocol.md
1.5 and 2.2; xen/arch/x86/hvm/ioreq.c ``ioreq_send_buffered``). The device model applies them
before the next synchronous request it handles.

The simulator also posts single port writes whose effect the guest cannot observe before its
next synchronous access (``postable_port``, docs/protocol.md 4.2):

- the debug consoles 0x402 and 0xE9 and POST port 0x80 (write-only logs);
- the CMOS index 0x70 and the PCI address latch 0xCF8 (4-byte writes only, the ones the latch
  takes): they only select what the next data-port access, which is synchronous and goes after
  the flush, reaches. The simulator keeps its own copy of CF8 to route 0xCFC-0xCFF, as Xen
  does, and the device model still gets every write, in order;
- the VGA and Bochs VBE registers (``VGA_PORTS``): a VGA register write changes nothing the
  guest can see until it reads a register or video memory back (synchronous), and what the
  screen shows lags by at most one slice, as it does for the VGA-window stores Xen posts. They
  raise no interrupt and change no mapping (the device model claims its ranges once). SeaBIOS's
  VGA BIOS loads the 768 DAC bytes and the CRTC this way during POST.

Xen emulates 0x70 and 0xE9 itself and never forwards them at all, and forwards the others
synchronously (xen-protocol.md 1.5, 2.2); here the device model owns them, so they reach it,
but without a round trip each. They travel as slots of type PIO (0), which Xen's ring format
allows and the daemon applies like COPY slots.

A batch of such writes is collected and handed to the port as one BUFIOREQ message
(docs/protocol.md 3.2), flushed:

- before any access the device model serves synchronously, and before every CLOCK message
  (so the device model sees writes and time in the order the vCPU made them);
- when the batch fills the 511 slots of Xen's ring (an 8-byte value takes two);
- at HLT and at the end of every run slice (the simulator's stand-in for Xen's "notify the
  buffered event channel": nothing posted waits longer than one slice), and when a run stops.

TIMEOFFSET, the other buffered request, comes from Xen's RTC; the RTC is the device model's
here, so the simulator never produces it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..wire.constants import IOREQ_TYPE_COPY

VGA_WINDOW_START = 0xA0000
VGA_WINDOW_END = 0xC0000  # exclusive
BUFFER_SLOTS = 511  # IOREQ_BUFFER_SLOT_NUM: the slots of Xen's buffered_iopage
PCI_CF8 = 0xCF8
# Ports whose single 1-, 2- or 4-byte writes may be posted when the device model claims them
# (see above); CF8 separately (4-byte writes only).
LOG_PORTS = frozenset({0x80, 0xE9, 0x402})
VGA_PORTS = frozenset({
    0x1CE, 0x1CF,  # Bochs VBE index / data
    0x3B4, 0x3B5, 0x3BA,  # CRTC index / data and feature control, mono addressing
    0x3C0,  # attribute controller index / data (the flip-flop is reset by a 0x3DA read)
    0x3C2,  # miscellaneous output
    0x3C4, 0x3C5,  # sequencer
    0x3C6, 0x3C7, 0x3C8, 0x3C9,  # DAC mask, read index, write index, data
    0x3CE, 0x3CF,  # graphics controller
    0x3D4, 0x3D5, 0x3DA,  # CRTC and feature control, colour addressing
})
POSTED_PORTS = LOG_PORTS | {0x70} | VGA_PORTS

PostedWrite = tuple[int, int, int, int]  # (type, addr, size, value), as Hypervisor.bufioreq


def bufferable(gpa: int, size: int) -> bool:
    """Whether Xen would buffer a single MMIO write of ``size`` bytes at ``gpa`` (to a claimed
    range; the caller checks the claim)."""
    return VGA_WINDOW_START <= gpa and gpa + size <= VGA_WINDOW_END and size in (1, 2, 4, 8)


def postable_port(port: int, size: int) -> bool:
    """Whether a single (non-string) write of ``size`` bytes to ``port`` may be posted (to a
    port the device model claims; the caller checks the claim)."""
    if port == PCI_CF8:
        return size == 4
    return port in POSTED_PORTS and size in (1, 2, 4)


class PostedWrites:
    """The batch of posted writes not yet handed to the device model."""

    def __init__(self, send: Callable[[list[PostedWrite]], None]) -> None:
        self._send = send
        self.writes: list[PostedWrite] = []
        self.slots = 0
        self.total = 0  # writes posted
        self.batches = 0  # BUFIOREQ messages handed over

    def add(self, gpa: int, size: int, value: int, type_: int = IOREQ_TYPE_COPY) -> None:
        """Post a write: ``type_`` IOREQ_TYPE_COPY (``gpa`` a guest-physical address) or
        IOREQ_TYPE_PIO (``gpa`` a port)."""
        need = 2 if size == 8 else 1
        if self.slots + need > BUFFER_SLOTS:  # Xen's "ring full" check, qword-aware
            self.flush()
        self.writes.append((type_, gpa, size, value))
        self.slots += need
        self.total += 1
        if self.slots >= BUFFER_SLOTS:
            self.flush()

    def flush(self) -> None:
        if not self.writes:
            return
        batch = self.writes
        self.writes = []
        self.slots = 0
        self.batches += 1
        self._send(batch)

    def clear(self) -> None:
        self.writes = []
        self.slots = 0
