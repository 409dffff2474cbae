"""The input router: where keyboard and pointer events from the outside (VNC, QMP
input-send-event and send-key) go inside the machine. One place decides, so every front end
behaves the same.

Keys go to the USB keyboard once the guest has configured it (a guest driving it reads its
reports; QEMU activates usb-kbd the same way), otherwise to the PS/2 keyboard behind the
i8042. Absolute pointer events go to a USB tablet the guest has configured (QEMU activates the
tablet when the guest first polls it); otherwise motion becomes relative deltas for the USB
mouse (if configured) or the PS/2 mouse. Button bits everywhere: 0 left, 1 right, 2 middle,
3 side, 4 extra; the tablet and USB mouse see the first three.

Keys are QEMU qcode names or qnums (the set-1 make code, +0x80 for E0 keys; devmodel.bios.ps2).
VNC's X keysyms are translated here (`keysym_to_qnum`), for a US layout, as QEMU's en-us
keymap does; a keysym that needs Shift while the client holds none gets a Shift around it.

The router holds no device state of its own beyond the pointer position and button mask it
last sent (both re-derived by the next event); it looks devices up on each event, so it
follows hot-unplug and a machine built in any order.
"""

from __future__ import annotations

from typing import Any

from devmodel.bios.ps2 import qnum_of

ABS_MAX = 0x7FFF  # QEMU INPUT_EVENT_ABS_MAX; the tablet's logical range
BUTTON_BITS = {"left": 0x01, "right": 0x02, "middle": 0x04, "side": 0x08, "extra": 0x10}

# qcodes QEMU has that devmodel.bios.ps2.QCODES lacks (keypad and a few more), as qnums.
EXTRA_QCODES: dict[str, int] = {
    "kp_0": 0x52, "kp_1": 0x4F, "kp_2": 0x50, "kp_3": 0x51, "kp_4": 0x4B, "kp_5": 0x4C,
    "kp_6": 0x4D, "kp_7": 0x47, "kp_8": 0x48, "kp_9": 0x49, "kp_add": 0x4E,
    "kp_subtract": 0x4A, "kp_decimal": 0x53, "less": 0x56, "sysrq": 0xB7, "print": 0xB7,
}

SHIFT_QNUM = 0x2A
_SHIFTS = frozenset({0x2A, 0x36})


def resolve_key(key: str | int) -> int | None:
    """A qcode name or qnum -> qnum (None when unknown)."""
    if isinstance(key, str):
        q = qnum_of(key)
        return q if q is not None else EXTRA_QCODES.get(key.lower())
    if isinstance(key, int) and not isinstance(key, bool):
        return qnum_of(key)
    return None


# ---- X keysyms (RFB KeyEvent) -----------------------------------------------------------------
_UNSHIFTED = {
    "`": "grave_accent", "-": "minus", "=": "equal", "[": "bracket_left", "]": "bracket_right",
    "\\": "backslash", ";": "semicolon", "'": "apostrophe", ",": "comma", ".": "dot",
    "/": "slash", " ": "spc",
}
_SHIFTED = {
    "~": "grave_accent", "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7",
    "*": "8", "(": "9", ")": "0", "_": "minus", "+": "equal", "{": "bracket_left",
    "}": "bracket_right", "|": "backslash", ":": "semicolon", '"': "apostrophe", "<": "comma",
    ">": "dot", "?": "slash",
}
_FUNCTION_KEYSYMS = {
    0xFF08: "backspace", 0xFF09: "tab", 0xFF0D: "ret", 0xFF13: 0xC6, 0xFF14: "scroll_lock",
    0xFF15: "sysrq", 0xFF1B: "esc", 0xFF50: "home", 0xFF51: "left", 0xFF52: "up",
    0xFF53: "right", 0xFF54: "down", 0xFF55: "pgup", 0xFF56: "pgdn", 0xFF57: "end",
    0xFF61: "sysrq", 0xFF63: "insert", 0xFF67: "menu", 0xFF7F: "num_lock", 0xFFFF: "delete",
    # keypad (with and without Num Lock)
    0xFF8D: "kp_enter", 0xFFAA: "kp_multiply", 0xFFAB: "kp_add", 0xFFAC: "kp_decimal",
    0xFFAD: "kp_subtract", 0xFFAE: "kp_decimal", 0xFFAF: "kp_divide",
    0xFF95: "kp_7", 0xFF96: "kp_4", 0xFF97: "kp_8", 0xFF98: "kp_6", 0xFF99: "kp_2",
    0xFF9A: "kp_9", 0xFF9B: "kp_3", 0xFF9C: "kp_1", 0xFF9D: "kp_5", 0xFF9E: "kp_0",
    0xFF9F: "kp_decimal",
    # modifiers
    0xFFE1: "shift", 0xFFE2: "shift_r", 0xFFE3: "ctrl", 0xFFE4: "ctrl_r", 0xFFE5: "caps_lock",
    0xFFE7: "meta_l", 0xFFE8: "meta_r", 0xFFE9: "alt", 0xFFEA: "alt_r", 0xFFEB: "meta_l",
    0xFFEC: "meta_r", 0xFE03: "alt_r",
}
_FUNCTION_KEYSYMS.update({0xFFB0 + i: f"kp_{i}" for i in range(10)})
_FUNCTION_KEYSYMS.update({0xFFBE + i: f"f{i + 1}" for i in range(12)})


def _build_keysyms() -> dict[int, tuple[int, bool]]:
    out: dict[int, tuple[int, bool]] = {}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        q = resolve_key(ch)
        assert q is not None
        out[ord(ch)] = (q, False)
        out[ord(ch.upper())] = (q, True)
    for ch in "0123456789":
        out[ord(ch)] = (resolve_key(ch) or 0, False)
    for table, shifted in ((_UNSHIFTED, False), (_SHIFTED, True)):
        for ch, name in table.items():
            out[ord(ch)] = (resolve_key(name) or 0, shifted)
    for sym, name in _FUNCTION_KEYSYMS.items():
        q = resolve_key(name)
        assert q is not None, name
        out[sym] = (q, False)
    return out


KEYSYMS: dict[int, tuple[int, bool]] = _build_keysyms()


def keysym_to_qnum(keysym: int) -> tuple[int, bool] | None:
    """(qnum, needs shift) of an X keysym on a US layout, or None."""
    return KEYSYMS.get(keysym)


# ---- the router ----------------------------------------------------------------------------------
def _configured(dev: Any) -> bool:
    from devmodel.usb.core import STATE_CONFIGURED

    return getattr(dev, "state", None) == STATE_CONFIGURED


class InputRouter:
    """Routes events into one machine. Use `router_for(machine)` to share one per machine
    (VNC clients and QMP then see the same button state)."""

    def __init__(self, machine) -> None:
        self.machine = machine
        self.buttons = 0  # the button mask last sent
        self.abs_x = self.abs_y = 0  # the tablet position last sent (0..ABS_MAX)
        self.screen_pos: tuple[int, int] | None = None  # pixel position of pointer_screen
        self.held_shift: set[int] = set()  # shift qnums the client holds down
        self.counters: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # ---- who is there ------------------------------------------------------------------------
    def ps2(self):
        for d in self.machine.devices:
            if callable(getattr(d, "key_event", None)) and callable(getattr(d, "mouse_event", None)):
                return d
        return None

    def usb_devices(self) -> list:
        out = []
        for d in self.machine.devices:
            fn = getattr(d, "all_devices", None)
            if callable(fn):
                out.extend(fn())
        return out

    def _usb(self, cls_name: str, configured: bool = True):
        for d in self.usb_devices():
            if type(d).__name__ == cls_name and (not configured or _configured(d)):
                return d
        return None

    def has(self, kind: str) -> bool:
        """Whether events of `kind` (QMP's key, btn, rel, abs) have somewhere to go."""
        if kind == "abs":
            return self._usb("UsbTablet", configured=False) is not None
        if kind == "key":
            return self.ps2() is not None or self._usb("UsbKeyboard", configured=False) is not None
        return (self.ps2() is not None or self._usb("UsbMouse", configured=False) is not None
                or self._usb("UsbTablet", configured=False) is not None)

    def tablet_active(self) -> bool:
        return self._usb("UsbTablet") is not None

    # ---- keys --------------------------------------------------------------------------------
    def key(self, key: str | int, down: bool) -> bool:
        """A key by qcode name or qnum to the active keyboard. False when unknown or dropped."""
        qnum = resolve_key(key)
        if qnum is None:
            self._count("unknown key")
            return False
        if qnum in _SHIFTS:
            (self.held_shift.add if down else self.held_shift.discard)(qnum)
        kbd = self._usb("UsbKeyboard")
        if kbd is not None:
            return kbd.key(qnum, down)
        ps2 = self.ps2()
        if ps2 is None:
            self._count("key without a keyboard")
            return False
        return ps2.key_event(qnum, down)

    def keysym(self, keysym: int, down: bool) -> bool:
        """An X keysym (RFB KeyEvent). A shifted character typed without Shift held gets a
        Shift press around it (clients such as vncdotool send 'A' alone)."""
        entry = keysym_to_qnum(keysym)
        if entry is None:
            self._count("unknown keysym")
            return False
        qnum, shifted = entry
        if shifted and not self.held_shift and down:
            ok = self.key(SHIFT_QNUM, True)
            ok = self.key(qnum, True) and ok
            self.held_shift.discard(SHIFT_QNUM)
            return self.key(SHIFT_QNUM, False) and ok
        return self.key(qnum, down)

    # ---- pointer -----------------------------------------------------------------------------
    def pointer_abs(self, x: int, y: int, buttons: int | None = None, wheel: int = 0) -> bool:
        """Absolute position in 0..ABS_MAX per axis, to the USB tablet (False without one)."""
        x = max(0, min(ABS_MAX, int(x)))
        y = max(0, min(ABS_MAX, int(y)))
        if buttons is not None:
            self.buttons = buttons & 0x1F
        # The tablet the guest drives; else any tablet (its queue is bounded and coalesces).
        tablet = self._usb("UsbTablet") or self._usb("UsbTablet", configured=False)
        if tablet is None:
            self._count("absolute motion without a tablet")
            return False
        self.abs_x, self.abs_y = x, y
        return tablet.event(x, y, self.buttons & 7, wheel)

    def pointer_screen(self, x: int, y: int, width: int, height: int, buttons: int,
                       wheel: int = 0) -> bool:
        """A pointer on a `width` x `height` screen (VNC): scaled to the tablet's range when the
        guest uses a tablet, else the motion since the last event as relative deltas."""
        x = max(0, min(int(x), max(width - 1, 0)))
        y = max(0, min(int(y), max(height - 1, 0)))
        if self.tablet_active():
            self.screen_pos = (x, y)
            return self.pointer_abs(x * ABS_MAX // max(width - 1, 1),
                                    y * ABS_MAX // max(height - 1, 1), buttons, wheel)
        last = self.screen_pos
        self.screen_pos = (x, y)
        dx, dy = (0, 0) if last is None else (x - last[0], y - last[1])
        if not (dx or dy or wheel) and buttons & 0x1F == self.buttons:
            return True
        return self.pointer_rel(dx, dy, -wheel, buttons)

    def pointer_rel(self, dx: int, dy: int, dz: int = 0, buttons: int | None = None) -> bool:
        """Relative motion (dz > 0 = wheel towards the user, as the PS/2 mouse takes it)."""
        if buttons is not None:
            self.buttons = buttons & 0x1F
        mouse = self._usb("UsbMouse")
        if mouse is not None:
            return mouse.event(dx, dy, dz, self.buttons & 7)
        ps2 = self.ps2()
        if ps2 is None:
            self._count("motion without a mouse")
            return False
        return ps2.mouse_event(dx, dy, dz, self.buttons)

    def button(self, name: str, down: bool) -> None:
        bit = BUTTON_BITS[name]
        self.buttons = (self.buttons | bit) if down else (self.buttons & ~bit)

    def buttons_changed(self) -> bool:
        """Send the current button mask to the active pointer without motion."""
        if self.tablet_active():
            return self.pointer_abs(self.abs_x, self.abs_y)
        return self.pointer_rel(0, 0)


def router_for(machine) -> InputRouter:
    """The machine's one router (created on first use)."""
    r = getattr(machine, "input_router", None)
    if r is None:
        r = InputRouter(machine)
        machine.input_router = r
    return r
