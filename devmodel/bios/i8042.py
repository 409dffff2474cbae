"""The 8042 keyboard controller at ports 0x60/0x64 (QEMU hw/input/pckbd.c, "extended state").

One output buffer is shared by three sources: the controller's own replies, the PS/2 keyboard
and the PS/2 mouse (devmodel.bios.ps2). Like QEMU, the byte is taken from its source when the
guest reads port 0x60, and a new byte is loaded (OBF set again) right after, so the level IRQ
drops and rises in the same read: the edge the 8259 needs for the next byte.

IRQ 1 is asserted while OBF holds keyboard/controller data and command byte bit 0 is set (and
the keyboard interface is enabled); IRQ 12 while OBF holds mouse data and bit 1 is set.
"""

from __future__ import annotations

from collections.abc import Callable

from devmodel.core.bus import Range
from devmodel.core.device import Device
from devmodel.core.irq import IrqLine
from devmodel.wire.constants import SHUTDOWN_REBOOT

from .ps2 import Ps2Keyboard, Ps2Mouse, qnum_of

# Status register (port 0x64 read)
STAT_OBF = 0x01
STAT_IBF = 0x02  # never set: every write is processed before the vCPU resumes
STAT_SYS = 0x04
STAT_CMD = 0x08  # last write was to 0x64
STAT_UNLOCKED = 0x10  # keylock switch: not locked
STAT_MOUSE_OBF = 0x20
STAT_TIMEOUT = 0x40  # never set
STAT_PARITY = 0x80  # never set

# Command byte ("mode")
MODE_KBD_INT = 0x01
MODE_MOUSE_INT = 0x02
MODE_SYS = 0x04
MODE_NO_KEYLOCK = 0x08
MODE_DISABLE_KBD = 0x10
MODE_DISABLE_MOUSE = 0x20
MODE_XLATE = 0x40

# Output port (P2)
OUT_RESET = 0x01  # active low: writing 0 resets the CPU
OUT_A20 = 0x02
OUT_OBF = 0x10
OUT_MOUSE_OBF = 0x20
OUT_RESET_VALUE = 0xCF  # QEMU: RESET | A20 | the always-one bits 0xCC

# Pending sources. As in QEMU the keyboard/mouse bits equal the command byte's "disable"
# bits, so masking with ~mode hides data of a disabled interface.
PENDING_KBD = MODE_DISABLE_KBD
PENDING_AUX = MODE_DISABLE_MOUSE
PENDING_CTRL_KBD = 0x04
PENDING_CTRL_AUX = 0x08

SRC_NONE, SRC_CTRL, SRC_KBD, SRC_MOUSE = 0, 1, 2, 3

# Controller commands that take a data byte through port 0x60.
CMD_WRITE_MODE = 0x60
CMD_WRITE_OUTPORT = 0xD1
CMD_WRITE_OBUF = 0xD2
CMD_WRITE_AUX_OBUF = 0xD3
CMD_WRITE_MOUSE = 0xD4
DATA_COMMANDS = frozenset({CMD_WRITE_MODE, CMD_WRITE_OUTPORT, CMD_WRITE_OBUF, CMD_WRITE_AUX_OBUF,
                           CMD_WRITE_MOUSE})


class I8042(Device):
    SNAPSHOT_FIELDS = ("mode", "status", "outport", "obsrc", "obdata", "cbdata", "pending_ctrl",
                       "write_cmd", "kbd_state", "mouse_state")

    def __init__(self, on_a20: Callable[[int], None] | None = None,
                 on_leds: Callable[[int], None] | None = None, name: str = "i8042") -> None:
        super().__init__(name)
        self.on_a20 = on_a20
        self.kbd = Ps2Keyboard(self._safe_update, on_leds)
        self.mouse = Ps2Mouse(self._safe_update)
        self.irq_kbd: IrqLine | None = None
        self.irq_mouse: IrqLine | None = None
        self._power_on()

    def _power_on(self) -> None:
        self.mode = MODE_KBD_INT | MODE_MOUSE_INT
        self.status = STAT_CMD | STAT_UNLOCKED
        self.outport = OUT_RESET_VALUE
        self.obsrc = SRC_NONE
        self.obdata = 0
        self.cbdata = 0
        self.pending_ctrl = 0
        self.write_cmd = 0

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx) -> None:
        super().attach(ctx)
        self.irq_kbd = ctx.irqs.isa(1, "i8042-kbd")
        self.irq_mouse = ctx.irqs.isa(12, "i8042-aux")

    def pio_ranges(self) -> list[Range]:
        return [
            Range(0x60, 1, self._read_data, self._write_data, "i8042-data", self, frozenset({1})),
            Range(0x64, 1, self._read_status, self._write_command, "i8042-cmd", self,
                  frozenset({1})),
        ]

    def reset(self) -> None:
        self._power_on()
        self.kbd.reset()
        self.mouse.reset()
        self._update_lines()

    # ---- input API (display, QMP send-key, input-send-event) -----------------------------
    def key_event(self, key: str | int, down: bool) -> bool:
        """A key by QEMU qcode name ("a", "ret", "shift", "up", "f1"...) or qnum (set-1 code,
        +0x80 for E0 keys). Returns False when unknown, scanning is off, or the queue is full."""
        qnum = qnum_of(key)
        if qnum is None:
            self.counters["unknown key"] += 1
            return False
        return self.kbd.key(qnum, down)

    def mouse_event(self, dx: int, dy: int, dz: int = 0, buttons: int = 0) -> bool:
        """Relative motion and buttons (bit 0 left, 1 right, 2 middle, 3 side, 4 extra)."""
        return self.mouse.event(dx, dy, dz, buttons)

    @property
    def a20(self) -> int:
        return self.outport >> 1 & 1

    # ---- output buffer ------------------------------------------------------------------
    def _pending(self) -> int:
        p = self.pending_ctrl
        if self.kbd.has_output():
            p |= PENDING_KBD
        if self.mouse.has_output():
            p |= PENDING_AUX
        return p & (~self.mode | PENDING_CTRL_KBD | PENDING_CTRL_AUX)

    def _update_lines(self) -> None:
        kbd = mouse = 0
        if self.status & STAT_OBF:
            if self.status & STAT_MOUSE_OBF:
                mouse = 1 if self.mode & MODE_MOUSE_INT else 0
            elif self.mode & MODE_KBD_INT and not self.mode & MODE_DISABLE_KBD:
                kbd = 1
        if self.irq_kbd is not None and self.irq_mouse is not None:
            self.irq_kbd.set_level(kbd)
            self.irq_mouse.set_level(mouse)

    def _update(self) -> None:
        """Load OBF from the highest-priority pending source (QEMU kbd_update_irq)."""
        pending = self._pending()
        self.status &= ~(STAT_OBF | STAT_MOUSE_OBF)
        self.outport &= ~(OUT_OBF | OUT_MOUSE_OBF)
        if pending:
            self.status |= STAT_OBF
            self.outport |= OUT_OBF
            if pending & PENDING_CTRL_KBD:
                self.obsrc = SRC_CTRL
            elif pending & PENDING_CTRL_AUX:
                self.status |= STAT_MOUSE_OBF
                self.outport |= OUT_MOUSE_OBF
                self.obsrc = SRC_CTRL
            elif pending & PENDING_KBD:
                self.obsrc = SRC_KBD
            else:
                self.status |= STAT_MOUSE_OBF
                self.outport |= OUT_MOUSE_OBF
                self.obsrc = SRC_MOUSE
        self._update_lines()

    def _safe_update(self) -> None:
        # A full output buffer is never replaced; the next byte is loaded when it is read.
        if self.status & STAT_OBF:
            return
        if self._pending():
            self._update()

    def _queue_ctrl(self, b: int, aux: bool = False) -> None:
        self.cbdata = b & 0xFF
        self.pending_ctrl = PENDING_CTRL_AUX if aux else PENDING_CTRL_KBD
        self._safe_update()

    # ---- port 0x60 ----------------------------------------------------------------------
    def _read_data(self, off: int, size: int) -> int:
        if self.status & STAT_OBF:
            self.status &= ~(STAT_OBF | STAT_MOUSE_OBF)
            self.outport &= ~(OUT_OBF | OUT_MOUSE_OBF)
            self._update_lines()
            if self.obsrc == SRC_KBD:
                self.obdata = self.kbd.read()
            elif self.obsrc == SRC_MOUSE:
                self.obdata = self.mouse.read()
            elif self.obsrc == SRC_CTRL:
                self.obdata = self.cbdata
                self.pending_ctrl = 0
            self._safe_update()
        # An empty buffer reads the last byte again.
        return self.obdata

    def _write_data(self, off: int, size: int, val: int) -> None:
        self.status &= ~STAT_CMD
        cmd, self.write_cmd = self.write_cmd, 0
        if cmd == 0:
            self.kbd.write(val)
            # Sending data to the keyboard re-enables its interface (QEMU kbd_write_data).
            self.mode &= ~MODE_DISABLE_KBD
            self._safe_update()
        elif cmd == CMD_WRITE_MODE:
            self._write_mode(val)
        elif cmd == CMD_WRITE_OBUF:
            self._queue_ctrl(val)
        elif cmd == CMD_WRITE_AUX_OBUF:
            self._queue_ctrl(val, aux=True)
        elif cmd == CMD_WRITE_OUTPORT:
            self._write_outport(val)
        elif cmd == CMD_WRITE_MOUSE:
            self.mouse.write(val)

    def _write_mode(self, val: int) -> None:
        self.mode = val
        self.kbd.translate = 1 if val & MODE_XLATE else 0
        # The system flag in the status register follows command byte bit 2 (8042 data
        # sheet); QEMU sets it only on self-test. Either way BIOSes see it set after POST.
        self.status = (self.status & ~STAT_SYS) | (val & MODE_SYS)
        self._update_lines()  # interrupt enables act on the lines at once
        self._safe_update()  # cleared disable bits may uncover pending data

    def _write_outport(self, val: int) -> None:
        old = self.outport
        self.outport = val & 0xFF
        if (old ^ val) & OUT_A20 and self.on_a20 is not None:
            self.on_a20(val >> 1 & 1)
        if not val & OUT_RESET:
            self._request_reset()

    def _set_a20(self, level: int) -> None:
        self._write_outport((self.outport & ~OUT_A20) | (OUT_A20 if level else 0) | OUT_RESET)

    def _request_reset(self) -> None:
        assert self.ctx is not None
        self.ctx.machine.request_shutdown(SHUTDOWN_REBOOT)

    # ---- port 0x64 ----------------------------------------------------------------------
    def _read_status(self, off: int, size: int) -> int:
        return self.status

    def _write_command(self, off: int, size: int, val: int) -> None:
        self.status |= STAT_CMD
        self.write_cmd = 0
        if val & 0xF0 == 0xF0:
            # Pulse output port bits 3-0 low for 6 us (0 = pulse). Only bit 0 (CPU reset)
            # does anything: 0xFE resets, 0xFF and the other even/odd values per bit 0.
            if not val & 1:
                self._request_reset()
            return
        if val in DATA_COMMANDS:
            self.write_cmd = val
        elif val == 0x20:
            self._queue_ctrl(self.mode)
        elif 0x21 <= val <= 0x3F:
            self._queue_ctrl(0)  # other controller RAM bytes: not kept
        elif 0x61 <= val <= 0x7F:
            self.write_cmd = -1  # RAM write: swallow the data byte
        elif val == 0xA7:
            self.mode |= MODE_DISABLE_MOUSE
            self._update_lines()
        elif val == 0xA8:
            self.mode &= ~MODE_DISABLE_MOUSE
            self._safe_update()
        elif val == 0xA9:  # aux interface test: 0 = no error
            self._queue_ctrl(0x00)
        elif val == 0xAA:  # controller self test
            self.status |= STAT_SYS
            self._queue_ctrl(0x55)
        elif val == 0xAB:  # keyboard interface test
            self._queue_ctrl(0x00)
        elif val == 0xAD:
            self.mode |= MODE_DISABLE_KBD
            self._update_lines()
        elif val == 0xAE:
            self.mode &= ~MODE_DISABLE_KBD
            self._safe_update()
        elif val == 0xC0:  # input port: bit 7 = keyboard not inhibited (QEMU answers 0x80)
            self._queue_ctrl(0x80)
        elif val == 0xD0:
            self._queue_ctrl(self.outport)
        elif val == 0xDD:
            self._set_a20(0)
        elif val == 0xDF:
            self._set_a20(1)
        elif val == 0xE0:  # test inputs T0/T1 (clock lines): both low
            self._queue_ctrl(0x00)
        else:
            self.guest_error(f"unsupported i8042 command {val:#04x}")

    # ---- snapshot -----------------------------------------------------------------------
    @property
    def kbd_state(self) -> dict:
        return self.kbd.state()

    @kbd_state.setter
    def kbd_state(self, st: dict) -> None:
        self.kbd.restore(st)

    @property
    def mouse_state(self) -> dict:
        return self.mouse.state()

    @mouse_state.setter
    def mouse_state(self, st: dict) -> None:
        self.mouse.restore(st)

    def post_restore(self) -> None:
        self.mode &= 0xFF
        self.status &= 0xFF
        self.outport &= 0xFF
        self.kbd.translate = 1 if self.mode & MODE_XLATE else 0
        if self.write_cmd not in DATA_COMMANDS and self.write_cmd not in (0, -1):
            self.write_cmd = 0
        self._update_lines()
