"""PS/2 keyboard and mouse behind the i8042 (QEMU hw/input/ps2.c), as plain state machines.

They are not `Device`s: they own no ports. The i8042 forwards the bytes the guest writes to
them and pulls their output bytes one at a time. Each side keeps two bounded queues, as QEMU's
queue with its command-reply area does: `replies` (answers to commands, read first; a new
command discards unread answers of the previous one) and `data` (scancodes or motion packets,
at most PS2_QUEUE_SIZE bytes; input that does not fit is dropped and counted).
"""

from __future__ import annotations

from collections.abc import Callable

# QEMU hw/input/ps2.c: PS2_QUEUE_SIZE is what input events may fill; PS2_QUEUE_HEADROOM is
# kept for command replies on top of it (the ring itself is PS2_BUFFER_SIZE = 256).
PS2_QUEUE_SIZE = 16
PS2_QUEUE_HEADROOM = 8

ACK = 0xFA
RESEND = 0xFE
POR = 0xAA  # power-on reset / self-test passed
KBD_ID = (0xAB, 0x83)  # MF2 keyboard

# ---- keycode tables ------------------------------------------------------------------------
# "qnum" is QEMU's numbering of keys (QMP send-key {"type": "number"}): the set-1 make code,
# with 0x80 added for keys sent with an E0 prefix.
QCODES: dict[str, int] = {
    "esc": 0x01, "1": 0x02, "2": 0x03, "3": 0x04, "4": 0x05, "5": 0x06, "6": 0x07, "7": 0x08,
    "8": 0x09, "9": 0x0A, "0": 0x0B, "minus": 0x0C, "equal": 0x0D, "backspace": 0x0E,
    "tab": 0x0F, "q": 0x10, "w": 0x11, "e": 0x12, "r": 0x13, "t": 0x14, "y": 0x15, "u": 0x16,
    "i": 0x17, "o": 0x18, "p": 0x19, "bracket_left": 0x1A, "bracket_right": 0x1B,
    "ret": 0x1C, "ctrl": 0x1D, "a": 0x1E, "s": 0x1F, "d": 0x20, "f": 0x21, "g": 0x22,
    "h": 0x23, "j": 0x24, "k": 0x25, "l": 0x26, "semicolon": 0x27, "apostrophe": 0x28,
    "grave_accent": 0x29, "shift": 0x2A, "backslash": 0x2B, "z": 0x2C, "x": 0x2D, "c": 0x2E,
    "v": 0x2F, "b": 0x30, "n": 0x31, "m": 0x32, "comma": 0x33, "dot": 0x34, "slash": 0x35,
    "shift_r": 0x36, "kp_multiply": 0x37, "alt": 0x38, "spc": 0x39, "caps_lock": 0x3A,
    "f1": 0x3B, "f2": 0x3C, "f3": 0x3D, "f4": 0x3E, "f5": 0x3F, "f6": 0x40, "f7": 0x41,
    "f8": 0x42, "f9": 0x43, "f10": 0x44, "num_lock": 0x45, "scroll_lock": 0x46,
    "f11": 0x57, "f12": 0x58,
    # E0-prefixed (extended) keys
    "kp_enter": 0x9C, "ctrl_r": 0x9D, "kp_divide": 0xB5, "alt_r": 0xB8, "home": 0xC7,
    "up": 0xC8, "pgup": 0xC9, "left": 0xCB, "right": 0xCD, "end": 0xCF, "down": 0xD0,
    "pgdn": 0xD1, "insert": 0xD2, "delete": 0xD3, "meta_l": 0xDB, "meta_r": 0xDC, "menu": 0xDD,
}
# Common aliases (QEMU qcode names are the keys above).
QCODES.update({"enter": 0x1C, "return": 0x1C, "escape": 0x01, "space": 0x39, "lshift": 0x2A,
               "rshift": 0x36, "lctrl": 0x1D, "rctrl": 0x9D, "lalt": 0x38, "ralt": 0xB8})

# Set-1 make code -> set-2 make code (IBM PC AT keyboard; the E0 prefix is the same in both).
SET1_TO_SET2: dict[int, int] = {
    0x01: 0x76, 0x02: 0x16, 0x03: 0x1E, 0x04: 0x26, 0x05: 0x25, 0x06: 0x2E, 0x07: 0x36,
    0x08: 0x3D, 0x09: 0x3E, 0x0A: 0x46, 0x0B: 0x45, 0x0C: 0x4E, 0x0D: 0x55, 0x0E: 0x66,
    0x0F: 0x0D, 0x10: 0x15, 0x11: 0x1D, 0x12: 0x24, 0x13: 0x2D, 0x14: 0x2C, 0x15: 0x35,
    0x16: 0x3C, 0x17: 0x43, 0x18: 0x44, 0x19: 0x4D, 0x1A: 0x54, 0x1B: 0x5B, 0x1C: 0x5A,
    0x1D: 0x14, 0x1E: 0x1C, 0x1F: 0x1B, 0x20: 0x23, 0x21: 0x2B, 0x22: 0x34, 0x23: 0x33,
    0x24: 0x3B, 0x25: 0x42, 0x26: 0x4B, 0x27: 0x4C, 0x28: 0x52, 0x29: 0x0E, 0x2A: 0x12,
    0x2B: 0x5D, 0x2C: 0x1A, 0x2D: 0x22, 0x2E: 0x21, 0x2F: 0x2A, 0x30: 0x32, 0x31: 0x31,
    0x32: 0x3A, 0x33: 0x41, 0x34: 0x49, 0x35: 0x4A, 0x36: 0x59, 0x37: 0x7C, 0x38: 0x11,
    0x39: 0x29, 0x3A: 0x58, 0x3B: 0x05, 0x3C: 0x06, 0x3D: 0x04, 0x3E: 0x0C, 0x3F: 0x03,
    0x40: 0x0B, 0x41: 0x83, 0x42: 0x0A, 0x43: 0x01, 0x44: 0x09, 0x45: 0x77, 0x46: 0x7E,
    0x47: 0x6C, 0x48: 0x75, 0x49: 0x7D, 0x4A: 0x7B, 0x4B: 0x6B, 0x4C: 0x73, 0x4D: 0x74,
    0x4E: 0x79, 0x4F: 0x69, 0x50: 0x72, 0x51: 0x7A, 0x52: 0x70, 0x53: 0x71, 0x54: 0x84,
    0x56: 0x61, 0x57: 0x78, 0x58: 0x07, 0x5B: 0x1F, 0x5C: 0x27, 0x5D: 0x2F,
}

# The 8042's set-2 -> set-1 translation (command byte bit 6): the inverse of the table above.
# Codes it does not list pass unchanged (0x80-0xFF are mostly identity on the real part too:
# ACK 0xFA, 0xAA, 0xAB, 0xE0 all go through as they are).
TRANSLATE = list(range(256))
for _s1, _s2 in SET1_TO_SET2.items():
    TRANSLATE[_s2] = _s1
del _s1, _s2
# Entries of the real table outside the inverse: 0x02 is the alternative F7 code (its
# translation 0x41 is why a translated "get scan code set 2" reads 0x41), 0x00 is overrun.
TRANSLATE[0x00] = 0xFF
TRANSLATE[0x02] = 0x41

# Scan code set 3 differs from set 2 for these keys (by qnum) and never uses the E0 prefix.
SET3_OVERRIDES: dict[int, int] = {
    0x01: 0x08, 0x1D: 0x11, 0x2B: 0x5C, 0x37: 0x7E, 0x38: 0x19, 0x3A: 0x14, 0x3B: 0x07,
    0x3C: 0x0F, 0x3D: 0x17, 0x3E: 0x1F, 0x3F: 0x27, 0x40: 0x2F, 0x41: 0x37, 0x42: 0x3F,
    0x43: 0x47, 0x44: 0x4F, 0x45: 0x76, 0x46: 0x5F, 0x57: 0x56, 0x58: 0x5E,
    0x9C: 0x79, 0x9D: 0x58, 0xB5: 0x77, 0xB8: 0x39, 0xC7: 0x6E, 0xC8: 0x63, 0xC9: 0x6F,
    0xCB: 0x61, 0xCD: 0x6A, 0xCF: 0x65, 0xD0: 0x60, 0xD1: 0x6D, 0xD2: 0x67, 0xD3: 0x64,
    0xDB: 0x8B, 0xDC: 0x8C, 0xDD: 0x8D,
}


def qnum_of(key: str | int) -> int | None:
    """A qcode name or a qnum -> qnum, or None if unknown."""
    if isinstance(key, str):
        return QCODES.get(key.lower())
    if 0 < key <= 0xFF and (key & 0x7F) in SET1_TO_SET2:
        return key
    return None


def scancodes(qnum: int, down: bool, scancode_set: int) -> list[int]:
    """The bytes a keyboard in `scancode_set` sends for one key press or release."""
    ext = qnum & 0x80
    code = qnum & 0x7F
    if scancode_set == 1:
        return ([0xE0] if ext else []) + [code if down else code | 0x80]
    if scancode_set == 3:
        c3 = SET3_OVERRIDES.get(qnum, SET1_TO_SET2[code])
        return [c3] if down else [0xF0, c3]
    c2 = SET1_TO_SET2[code]
    return ([0xE0] if ext else []) + ([c2] if down else [0xF0, c2])


class _Ps2Port:
    """What keyboard and mouse share: the two queues and the pending command byte."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify  # the i8042 re-evaluates its output buffer
        self.replies: list[int] = []
        self.data: list[int] = []
        self.write_cmd = -1
        self.last = 0  # an empty queue reads the last byte again (QEMU, "needed for EMM386")
        self.dropped = 0

    def has_output(self) -> bool:
        return bool(self.replies or self.data)

    def read(self) -> int:
        if self.replies:
            self.last = self.replies.pop(0)
        elif self.data:
            self.last = self.data.pop(0)
        return self.last

    def reply(self, *b: int) -> None:
        room = PS2_QUEUE_HEADROOM - len(self.replies)
        self.replies.extend(b[:max(room, 0)])
        self.notify()

    def push_data(self, b: list[int]) -> bool:
        if len(self.data) + len(b) > PS2_QUEUE_SIZE:
            self.dropped += 1
            return False
        self.data.extend(b)
        self.notify()
        return True

    def clear_queues(self) -> None:
        self.replies.clear()
        self.data.clear()

    def common_state(self) -> dict:
        return {"replies": list(self.replies), "data": list(self.data),
                "write_cmd": self.write_cmd, "last": self.last}

    def restore_common(self, st: dict) -> None:
        self.replies = [int(x) & 0xFF for x in st["replies"]][:PS2_QUEUE_HEADROOM]
        self.data = [int(x) & 0xFF for x in st["data"]][:PS2_QUEUE_SIZE]
        self.write_cmd = int(st["write_cmd"])
        self.last = int(st["last"]) & 0xFF


class Ps2Keyboard(_Ps2Port):
    def __init__(self, notify: Callable[[], None],
                 on_leds: Callable[[int], None] | None = None) -> None:
        super().__init__(notify)
        self.on_leds = on_leds
        self.reset()

    def reset(self) -> None:
        # QEMU ps2_kbd_reset: scanning on, set 2, translation off (the i8042 sets it).
        self.clear_queues()
        self.write_cmd = -1
        self.scan_enabled = 1
        self.translate = 0
        self.scancode_set = 2
        self.ledstate = 0
        self.typematic = 0x2B  # 10.9 cps, 500 ms: the power-on default
        self.last = 0

    def _reset_keyboard(self) -> None:
        self.scan_enabled = 1
        self.scancode_set = 2
        self.typematic = 0x2B
        self.data.clear()
        self._set_leds(0)

    def _set_leds(self, v: int) -> None:
        self.ledstate = v & 0x07
        if self.on_leds is not None:
            self.on_leds(self.ledstate)

    def _xlate(self, b: int) -> int:
        return TRANSLATE[b] if self.translate else b

    def write(self, val: int) -> None:
        """A byte from the host (i8042 port 0x60 with no controller command pending)."""
        self.replies.clear()  # a new command discards unread replies (QEMU ps2_cqueue_reset)
        cmd, self.write_cmd = self.write_cmd, -1
        if cmd == 0xED:  # LEDs
            self._set_leds(val)
            self.reply(ACK)
        elif cmd == 0xF3:  # typematic rate/delay: stored only
            self.typematic = val & 0x7F
            self.reply(ACK)
        elif cmd == 0xF0:  # scan code set: 0 = get
            if val == 0:
                self.reply(ACK, self._xlate(self.scancode_set))
            elif 1 <= val <= 3:
                self.scancode_set = val
                self.reply(ACK)
            else:
                self.reply(RESEND)
        elif val in (0xED, 0xF0, 0xF3):
            self.write_cmd = val
            self.reply(ACK)
        elif val == 0xEE:  # echo
            self.reply(0xEE)
        elif val == 0xF2:  # identify: with translation QEMU answers AB 41 (0x83 translated)
            self.reply(ACK, KBD_ID[0], 0x41 if self.translate else KBD_ID[1])
        elif val == 0xF4:
            self.scan_enabled = 1
            self.reply(ACK)
        elif val == 0xF5:  # defaults and disable
            self._reset_keyboard()
            self.scan_enabled = 0
            self.reply(ACK)
        elif val == 0xF6:  # defaults and enable
            self._reset_keyboard()
            self.reply(ACK)
        elif val == 0xFF:
            self._reset_keyboard()
            self.reply(ACK, POR)
        elif val in (0x00, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD):
            self.reply(ACK)  # set-3 key type commands: accepted and ignored, as QEMU does
        else:
            self.reply(RESEND)

    def key(self, qnum: int, down: bool) -> bool:
        """Queue the scancodes of one key event. False when scanning is off or the queue is full."""
        if not self.scan_enabled:
            return False
        raw = scancodes(qnum, down, self.scancode_set)
        if self.translate:
            # The 8042 turns an F0 prefix into bit 7 of the following translated byte.
            out: list[int] = []
            brk = False
            for b in raw:
                if b == 0xF0:
                    brk = True
                    continue
                out.append(TRANSLATE[b] | (0x80 if brk else 0))
                brk = False
            raw = out
        return self.push_data(raw)

    def state(self) -> dict:
        st = self.common_state()
        st.update(scan_enabled=self.scan_enabled, translate=self.translate,
                  scancode_set=self.scancode_set, ledstate=self.ledstate, typematic=self.typematic)
        return st

    def restore(self, st: dict) -> None:
        self.restore_common(st)
        self.scan_enabled = int(st["scan_enabled"]) & 1
        self.translate = int(st["translate"]) & 1
        ss = int(st["scancode_set"])
        self.scancode_set = ss if ss in (1, 2, 3) else 2
        self.ledstate = int(st["ledstate"]) & 7
        self.typematic = int(st["typematic"]) & 0x7F
        if self.on_leds is not None:
            self.on_leds(self.ledstate)


MOUSE_STATUS_REMOTE = 0x40
MOUSE_STATUS_ENABLED = 0x20
MOUSE_STATUS_SCALE21 = 0x10
# Buttons of mouse_event(): bit 0 left, 1 right, 2 middle, 3 side, 4 extra (QEMU MOUSE_EVENT_*).
MAX_PACKETS_PER_EVENT = 8  # a huge motion is split into packets; the rest waits


class Ps2Mouse(_Ps2Port):
    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__(notify)
        self.reset()

    def reset(self) -> None:
        self.clear_queues()
        self.write_cmd = -1
        self.last = 0
        self.status = 0
        self.resolution = 2
        self.sample_rate = 100
        self.wrap = 0
        self.type = 0  # 0 PS/2, 3 IntelliMouse, 4 IntelliMouse Explorer
        self.detect = 0
        self.dx = self.dy = self.dz = 0
        self.buttons = 0

    def _defaults(self) -> None:
        self.sample_rate = 100
        self.resolution = 2
        self.status = 0
        self.data.clear()

    def write(self, val: int) -> None:
        self.replies.clear()
        cmd, self.write_cmd = self.write_cmd, -1
        if cmd == 0xF3:
            self.sample_rate = val
            self._detect(val)
            self.reply(ACK)
            return
        if cmd == 0xE8:
            self.resolution = val & 3
            self.reply(ACK)
            return
        if self.wrap:  # wrap mode echoes everything but "reset wrap" and "reset"
            if val == 0xEC:
                self.wrap = 0
                self.reply(ACK)
                return
            if val != 0xFF:
                self.reply(val)
                return
        if val == 0xE6:
            self.status &= ~MOUSE_STATUS_SCALE21
            self.reply(ACK)
        elif val == 0xE7:
            self.status |= MOUSE_STATUS_SCALE21
            self.reply(ACK)
        elif val in (0xE8, 0xF3):
            self.write_cmd = val
            self.reply(ACK)
        elif val == 0xE9:  # status request
            self.reply(ACK, self.status, self.resolution, self.sample_rate)
        elif val == 0xEA:
            self.status &= ~MOUSE_STATUS_REMOTE
            self.reply(ACK)
        elif val == 0xEB:  # read data: one packet, in any mode
            self.replies.append(ACK)
            self.replies.extend(self._packet())
            self.notify()
        elif val == 0xEE:
            self.wrap = 1
            self.reply(ACK)
        elif val == 0xF0:
            self.status |= MOUSE_STATUS_REMOTE
            self.reply(ACK)
        elif val == 0xF2:
            self.reply(ACK, self.type)
        elif val == 0xF4:
            self.status |= MOUSE_STATUS_ENABLED
            self.reply(ACK)
        elif val == 0xF5:
            self.status &= ~MOUSE_STATUS_ENABLED
            self.reply(ACK)
        elif val == 0xF6:
            self._defaults()
            self.reply(ACK)
        elif val == 0xFF:
            self._defaults()
            self.type = 0
            self.wrap = 0
            self.detect = 0
            self.reply(ACK, POR, self.type)
        else:
            self.reply(RESEND)

    def _detect(self, rate: int) -> None:
        """IntelliMouse knock: sample rates 200,100,80 -> ID 3; 200,200,80 -> ID 4."""
        d = self.detect
        if d == 0:
            self.detect = 1 if rate == 200 else 0
        elif d == 1:
            self.detect = {100: 2, 200: 3}.get(rate, 0)
        else:
            if rate == 80:
                self.type = 3 if d == 2 else 4
            self.detect = 0

    def packet_size(self) -> int:
        return 4 if self.type in (3, 4) else 3

    def _packet(self) -> list[int]:
        dx = max(-255, min(255, self.dx))
        dy = max(-255, min(255, self.dy))
        b0 = 0x08 | (dx < 0) << 4 | (dy < 0) << 5 | (self.buttons & 0x07)
        out = [b0, dx & 0xFF, dy & 0xFF]
        dz = self.dz
        if self.type == 3:
            dz = max(-127, min(127, dz))
            out.append(dz & 0xFF)
        elif self.type == 4:
            dz = max(-7, min(7, dz))
            out.append((dz & 0x0F) | (self.buttons & 0x18) << 1)
        else:
            dz = 0
        self.dx -= dx
        self.dy -= dy
        self.dz -= dz
        return out

    def event(self, dx: int, dy: int, dz: int, buttons: int) -> bool:
        """Relative motion (dy > 0 is down the screen, dz > 0 is the wheel turned towards the
        user) and the new button state. Ignored while reporting is disabled (QEMU)."""
        if not self.status & MOUSE_STATUS_ENABLED:
            return False
        self.dx += dx
        self.dy -= dy  # PS/2 counts up the screen
        self.dz += dz
        self.buttons = buttons & 0x1F
        # Bound accumulated motion so a flood cannot grow the integers without limit.
        self.dx = max(-65536, min(65536, self.dx))
        self.dy = max(-65536, min(65536, self.dy))
        self.dz = max(-256, min(256, self.dz))
        if self.status & MOUSE_STATUS_REMOTE:
            return True
        size = self.packet_size()
        sent = False
        for _ in range(MAX_PACKETS_PER_EVENT):
            if len(self.data) + size > PS2_QUEUE_SIZE:
                self.dropped += 0 if sent else 1
                break
            self.data.extend(self._packet())
            sent = True
            if not (self.dx or self.dy or self.dz):
                break
        if sent:
            self.notify()
        return sent

    def state(self) -> dict:
        st = self.common_state()
        st.update(status=self.status, resolution=self.resolution, sample_rate=self.sample_rate,
                  wrap=self.wrap, type=self.type, detect=self.detect, dx=self.dx, dy=self.dy,
                  dz=self.dz, buttons=self.buttons)
        return st

    def restore(self, st: dict) -> None:
        self.restore_common(st)
        self.status = int(st["status"]) & 0x70
        self.resolution = int(st["resolution"]) & 3
        self.sample_rate = int(st["sample_rate"]) & 0xFF
        self.wrap = int(st["wrap"]) & 1
        t = int(st["type"])
        self.type = t if t in (0, 3, 4) else 0
        self.detect = int(st["detect"]) if int(st["detect"]) in (0, 1, 2, 3) else 0
        self.dx = max(-65536, min(65536, int(st["dx"])))
        self.dy = max(-65536, min(65536, int(st["dy"])))
        self.dz = max(-256, min(256, int(st["dz"])))
        self.buttons = int(st["buttons"]) & 0x1F
