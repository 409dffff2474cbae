"""i8042 + PS/2 keyboard/mouse, driven only through ports 0x60/0x64 and the input API."""

from __future__ import annotations

import pytest

from devmodel.bios.i8042 import I8042
from devmodel.bios.ps2 import PS2_QUEUE_SIZE
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.wire.constants import SHUTDOWN_REBOOT, DmOp

READ = 0x21
WRITE = 0x01


class Kbc:
    def __init__(self) -> None:
        self.a20: list[int] = []
        self.leds: list[int] = []
        self.m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
        self.dev = I8042(on_a20=self.a20.append, on_leds=self.leds.append)
        self.m.add(self.dev)
        self.m.outbox.clear()

    def inb(self, port: int) -> int:
        return self.m.handle_ioreq(0, port, 0, 1, 1, READ)

    def outb(self, port: int, v: int) -> None:
        self.m.handle_ioreq(0, port, v, 1, 1, WRITE)

    def status(self) -> int:
        return self.inb(0x64)

    def cmd(self, c: int, data: int | None = None) -> None:
        self.outb(0x64, c)
        if data is not None:
            self.outb(0x60, data)

    def drain(self, limit: int = 64) -> list[int]:
        out = []
        for _ in range(limit):
            if not self.status() & 1:
                break
            out.append(self.inb(0x60))
        return out

    def kbd(self, *bytes_: int) -> list[int]:
        out = []
        for b in bytes_:
            self.outb(0x60, b)
            out += self.drain()
        return out

    def aux(self, *bytes_: int) -> list[int]:
        out = []
        for b in bytes_:
            self.cmd(0xD4, b)
            out += self.drain()
        return out

    def irqs(self) -> list[tuple[int, int]]:
        got = [f for op, f, _ in self.m.outbox if op == DmOp.SET_ISA_IRQ_LEVEL]
        self.m.outbox.clear()
        return got

    def shutdowns(self) -> list[int]:
        return [f[0] for op, f, _ in self.m.outbox if op == DmOp.REMOTE_SHUTDOWN]


@pytest.fixture
def k() -> Kbc:
    return Kbc()


# ---- controller ---------------------------------------------------------------------------
def test_power_on_state(k):
    assert k.status() == 0x18  # CMD | UNLOCKED, buffer empty
    k.cmd(0x20)
    assert k.drain() == [0x03]  # KBD INT | AUX INT


def test_self_test_sets_sys_and_raises_irq1(k):
    k.cmd(0xAA)
    st = k.status()
    assert st & 0x01 and st & 0x04 and not st & 0x20
    assert k.irqs() == [(1, 1)]
    assert k.inb(0x60) == 0x55
    assert k.irqs() == [(1, 0)]
    assert not k.status() & 1


def test_interface_tests_and_ports(k):
    for c, want in ((0xA9, 0x00), (0xAB, 0x00), (0xC0, 0x80), (0xD0, 0xCF), (0xE0, 0x00)):
        k.cmd(c)
        assert k.drain() == [want], hex(c)


def test_command_byte_write_read_and_status_bits(k):
    k.cmd(0x60, 0x65)
    assert k.status() & 0x08 == 0  # last write went to the data port
    k.cmd(0x20)
    assert k.status() & 0x08
    assert k.drain() == [0x65]
    assert k.status() & 0x04  # SYS follows the command byte


def test_command_byte_irq_enable_bits(k):
    k.cmd(0x60, 0x00)  # no interrupts
    k.irqs()
    k.cmd(0xAA)
    assert k.status() & 1 and k.irqs() == []
    k.cmd(0x60, 0x01)  # enabling KBD INT acts on the line at once
    assert k.irqs() == [(1, 1)]
    assert k.inb(0x60) == 0x55
    assert k.irqs() == [(1, 0)]


def test_unknown_command_is_counted(k):
    k.cmd(0xB7)
    assert k.dev.counters
    assert not k.status() & 1


def test_a20_via_output_port_and_dd_df(k):
    k.cmd(0xD1, 0xCD)  # A20 off, reset line high
    assert k.a20 == [0] and k.dev.a20 == 0
    k.cmd(0xD0)
    assert k.drain() == [0xCD]
    k.cmd(0xDF)
    assert k.a20 == [0, 1]
    k.cmd(0xDD)
    assert k.a20 == [0, 1, 0]
    assert k.shutdowns() == []


def test_reset_via_output_port_write(k):
    k.cmd(0xD1, 0xCE)  # bit 0 low: CPU reset
    assert k.shutdowns() == [SHUTDOWN_REBOOT]


def test_reset_via_pulse_fe(k):
    k.cmd(0xFE)
    assert k.shutdowns() == [SHUTDOWN_REBOOT]


def test_pulse_ff_and_odd_values_do_nothing(k):
    k.cmd(0xFF)
    k.cmd(0xF1)
    assert k.shutdowns() == []
    k.cmd(0xF0)  # bit 0 pulsed: reset
    assert k.shutdowns() == [SHUTDOWN_REBOOT]


def test_write_kbd_and_aux_output_buffer(k):
    k.cmd(0xD2, 0x42)
    assert k.status() & 0x21 == 0x01
    assert k.irqs() == [(1, 1)]
    assert k.inb(0x60) == 0x42
    k.irqs()
    k.cmd(0xD3, 0x43)
    assert k.status() & 0x21 == 0x21
    assert k.irqs() == [(12, 1)]
    assert k.inb(0x60) == 0x43
    assert k.irqs() == [(12, 0)]


def test_empty_read_returns_last_byte(k):
    k.cmd(0xAA)
    assert k.inb(0x60) == 0x55
    assert k.inb(0x60) == 0x55


# ---- keyboard -----------------------------------------------------------------------------
def test_leds_ack_sequence_and_callback(k):
    assert k.kbd(0xED) == [0xFA]
    assert k.kbd(0x05) == [0xFA]
    assert k.leds == [0x05]


def test_echo_identify_and_resend(k):
    assert k.kbd(0xEE) == [0xEE]
    assert k.kbd(0xF2) == [0xFA, 0xAB, 0x83]
    assert k.kbd(0x01) == [0xFE]


def test_identify_with_translation(k):
    k.cmd(0x60, 0x41)
    assert k.kbd(0xF2) == [0xFA, 0xAB, 0x41]


def test_irq_drops_and_rises_between_bytes(k):
    k.outb(0x60, 0xF2)
    assert k.irqs() == [(1, 1)]
    assert k.inb(0x60) == 0xFA
    assert k.irqs() == [(1, 0), (1, 1)]
    assert k.inb(0x60) == 0xAB
    assert k.inb(0x60) == 0x83
    assert k.irqs()[-1] == (1, 0)


def test_scan_code_set_get_and_set(k):
    assert k.kbd(0xF0, 0x00) == [0xFA, 0xFA, 0x02]
    assert k.kbd(0xF0, 0x01) == [0xFA, 0xFA]
    assert k.kbd(0xF0, 0x00) == [0xFA, 0xFA, 0x01]
    assert k.kbd(0xF0, 0x07) == [0xFA, 0xFE]


def test_scan_code_set_query_translated(k):
    k.cmd(0x60, 0x41)
    assert k.kbd(0xF0, 0x00) == [0xFA, 0xFA, 0x41]


def test_typematic_enable_disable_defaults_reset(k):
    assert k.kbd(0xF3, 0x20) == [0xFA, 0xFA]
    assert k.dev.kbd.typematic == 0x20
    assert k.kbd(0xF5) == [0xFA]
    assert not k.dev.key_event("a", True)
    assert k.drain() == []
    assert k.kbd(0xF4) == [0xFA]
    assert k.dev.key_event("a", True)
    assert k.drain() == [0x1C]
    assert k.kbd(0xF6) == [0xFA]
    assert k.dev.kbd.typematic == 0x2B
    assert k.kbd(0xFF) == [0xFA, 0xAA]


def test_set2_scancodes_raw(k):
    k.dev.key_event("a", True)
    k.dev.key_event("a", False)
    k.dev.key_event("up", True)
    k.dev.key_event("up", False)
    assert k.drain() == [0x1C, 0xF0, 0x1C, 0xE0, 0x75, 0xE0, 0xF0, 0x75]


def test_set2_translated_to_set1(k):
    k.cmd(0x60, 0x61)  # XLATE | AUX disabled | KBD INT
    for key in ("a", "ret", "f7", "up", "ctrl_r"):
        k.dev.key_event(key, True)
        k.dev.key_event(key, False)
    assert k.drain() == [0x1E, 0x9E, 0x1C, 0x9C, 0x41, 0xC1, 0xE0, 0x48, 0xE0, 0xC8,
                         0xE0, 0x1D, 0xE0, 0x9D]


def test_qnum_input_and_set1_and_set3(k):
    k.kbd(0xF0, 0x01)
    k.dev.key_event(0x9C, True)  # qnum of keypad enter (E0 1C)
    k.dev.key_event(0x2A, False)  # left shift release
    assert k.drain() == [0xE0, 0x1C, 0xAA]
    k.kbd(0xF0, 0x03)
    k.dev.key_event("esc", True)
    k.dev.key_event("left", False)
    assert k.drain() == [0x08, 0xF0, 0x61]
    assert not k.dev.key_event("no-such-key", True)


def test_keyboard_queue_is_bounded(k):
    for _ in range(PS2_QUEUE_SIZE + 10):
        k.dev.key_event("b", True)
    assert len(k.drain()) == PS2_QUEUE_SIZE
    assert k.dev.kbd.dropped == 10


def test_disable_keyboard_interface_holds_data(k):
    k.cmd(0xAD)
    k.dev.key_event("a", True)
    assert not k.status() & 1
    k.cmd(0xAE)
    assert k.drain() == [0x1C]


def test_writing_to_keyboard_reenables_interface(k):
    k.cmd(0xAD)
    assert k.kbd(0xF4) == [0xFA]
    k.cmd(0x20)
    assert k.drain() == [0x03]


def test_controller_reply_waits_for_full_buffer(k):
    k.dev.key_event("a", True)
    k.cmd(0x20)
    assert k.drain() == [0x1C, 0x03]


# ---- mouse --------------------------------------------------------------------------------
def test_mouse_reset_and_id(k):
    assert k.aux(0xFF) == [0xFA, 0xAA, 0x00]
    assert k.aux(0xF2) == [0xFA, 0x00]


def test_mouse_irq12_and_aux_obf(k):
    k.cmd(0xD4, 0xF2)
    assert k.status() & 0x21 == 0x21
    assert k.irqs() == [(12, 1)]
    k.inb(0x60)
    assert k.irqs() == [(12, 0), (12, 1)]
    k.inb(0x60)
    assert k.irqs() == [(12, 0)]


def test_mouse_irq_needs_aux_int_bit(k):
    k.cmd(0x60, 0x01)
    k.irqs()
    k.cmd(0xD4, 0xF2)
    assert k.status() & 0x21 == 0x21 and k.irqs() == []


def test_intellimouse_sequence_and_4_byte_packets(k):
    assert k.aux(0xF3, 200, 0xF3, 100, 0xF3, 80) == [0xFA] * 6
    assert k.aux(0xF2) == [0xFA, 0x03]
    assert k.aux(0xF4) == [0xFA]
    assert k.dev.mouse_event(5, 3, 1, 0x01)
    # dy positive (down) is sent as negative: sign bit 5 set, 0xFD.
    assert k.drain() == [0x29, 0x05, 0xFD, 0x01]


def test_intellimouse_explorer_sequence(k):
    k.aux(0xF3, 200, 0xF3, 200, 0xF3, 80)
    assert k.aux(0xF2) == [0xFA, 0x04]
    k.aux(0xF4)
    k.dev.mouse_event(-2, 0, -1, 0x08)
    assert k.drain() == [0x18, 0xFE, 0x00, 0x0F | 0x10]


def test_plain_mouse_3_byte_packet_and_disabled_reporting(k):
    assert not k.dev.mouse_event(1, 1, 0, 0)  # reporting off after reset
    k.aux(0xF4)
    k.dev.mouse_event(300, 0, 0, 0x02)
    # Motion beyond 255 is split over packets.
    assert k.drain() == [0x0A, 0xFF, 0x00, 0x0A, 45, 0x00]


def test_mouse_status_resolution_scaling(k):
    assert k.aux(0xE8, 3) == [0xFA, 0xFA]
    assert k.aux(0xE7) == [0xFA]
    assert k.aux(0xF3, 40) == [0xFA, 0xFA]
    assert k.aux(0xE9) == [0xFA, 0x10, 3, 40]
    assert k.aux(0xE6, 0xF4, 0xE9) == [0xFA, 0xFA, 0xFA, 0x20, 3, 40]
    assert k.aux(0xF5, 0xE9) == [0xFA, 0xFA, 0x00, 3, 40]
    assert k.aux(0xF6, 0xE9) == [0xFA, 0xFA, 0x00, 2, 100]


def test_mouse_remote_mode_and_read_data(k):
    assert k.aux(0xF0, 0xF4) == [0xFA, 0xFA]
    assert k.dev.mouse_event(3, 0, 0, 0)
    assert k.drain() == []  # remote mode: nothing streamed
    assert k.aux(0xEB) == [0xFA, 0x08, 0x03, 0x00]
    assert k.aux(0xEA) == [0xFA]
    k.dev.mouse_event(1, 0, 0, 0)
    assert k.drain() == [0x08, 0x01, 0x00]


def test_mouse_wrap_mode_and_unknown(k):
    assert k.aux(0xEE, 0x12, 0xEC) == [0xFA, 0x12, 0xFA]
    assert k.aux(0x55) == [0xFE]


def test_mouse_queue_bounded(k):
    k.aux(0xF4)
    for _ in range(20):
        k.dev.mouse_event(1, 0, 0, 0)
    data = k.drain()
    assert len(data) <= PS2_QUEUE_SIZE and len(data) % 3 == 0


def test_aux_disable_masks_mouse_data(k):
    k.aux(0xF4)
    k.cmd(0xA7)
    k.dev.mouse_event(1, 0, 0, 0)
    assert not k.status() & 1
    k.cmd(0xA8)
    assert k.drain() == [0x08, 0x01, 0x00]


# ---- reset and snapshot -------------------------------------------------------------------
def test_system_reset_restores_power_on_state(k):
    k.cmd(0x60, 0x61)
    k.kbd(0xF0, 0x01)
    k.dev.key_event("a", True)
    k.cmd(0xFE)
    assert k.shutdowns() == [SHUTDOWN_REBOOT]
    assert k.status() == 0x18
    assert k.dev.kbd.scancode_set == 2 and not k.dev.kbd.translate


def test_snapshot_round_trip(k):
    k.cmd(0x60, 0x47)  # XLATE | SYS | AUX INT | KBD INT
    k.aux(0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF4)
    k.kbd(0xED, 0x02)
    k.dev.key_event("a", True)
    k.dev.key_event("b", True)
    k.dev.mouse_event(4, 0, 0, 0)
    snap = k.dev.snapshot()
    k.drain()
    k.cmd(0x60, 0x00)
    k.aux(0xFF)
    k.dev.restore(snap)
    assert k.dev.snapshot() == snap
    assert k.drain() == [0x1E, 0x30, 0x08, 0x04, 0x00, 0x00]
    assert k.dev.kbd.translate == 1
    assert k.aux(0xF2) == [0xFA, 0x03]


def test_snapshot_restores_irq_level(k):
    k.cmd(0xAA)
    snap = k.dev.snapshot()
    k.inb(0x60)
    k.irqs()
    k.dev.restore(snap)
    assert k.irqs() == [(1, 1)]
    assert k.inb(0x60) == 0x55
