"""HID reports through interrupt IN, NAK when idle, the HID class requests, and INTx on IOC."""

from __future__ import annotations

from uhci_driver import ACTIVE, IN, NAKBIT, QH_ADDR, T, UhciDriver

from devmodel.usb import UsbKeyboard, UsbMouse, UsbTablet
from devmodel.usb.hid import HID_QUEUE_LEN


def _ready(dev):
    d = UhciDriver([dev])
    d.reset_port(0)
    d.enumerate(1)
    return d


def test_tablet_reports_absolute_position():
    tablet = UsbTablet()
    d = _ready(tablet)
    assert d.interrupt_in(1, 1, 8) is None  # idle: NAK
    tablet.event(0x1234, 0x7FFF, buttons=1, wheel=-1)
    assert d.interrupt_in(1, 1, 8) == bytes([1, 0x34, 0x12, 0xFF, 0x7F, 0xFF])
    tablet.event(99999, -5)  # clamped to 0..0x7FFF
    assert d.interrupt_in(1, 1, 8) == bytes([0, 0xFF, 0x7F, 0, 0, 0])
    assert d.interrupt_in(1, 1, 8) is None


def test_nak_sets_nak_bit_and_keeps_td_active():
    d = _ready(UsbTablet())
    d.heap = 0x12000
    td = d.make_td(IN, 1, 1, 0, 8, ioc=True)
    d.w32(QH_ADDR + 4, td.addr)
    d.step(3)
    c = d.ctrl_of(td)
    assert c & ACTIVE and c & NAKBIT
    d.uhci.ports[0].event(1, 2)
    d.step(1)
    c = d.ctrl_of(td)
    assert not c & ACTIVE and not c & NAKBIT
    assert d.actual(td) == 6
    d.w32(QH_ADDR + 4, T)


def test_keyboard_reports_and_leds():
    leds = []
    kbd = UsbKeyboard(on_leds=leds.append)
    d = _ready(kbd)
    kbd.key("shift", True)
    kbd.key("a", True)
    kbd.key("a", False)
    kbd.key("shift", False)
    assert d.interrupt_in(1, 1, 8) == bytes([0x02, 0, 0, 0, 0, 0, 0, 0])
    assert d.interrupt_in(1, 1, 8) == bytes([0x02, 0, 0x04, 0, 0, 0, 0, 0])
    assert d.interrupt_in(1, 1, 8) == bytes([0x02, 0, 0, 0, 0, 0, 0, 0])
    assert d.interrupt_in(1, 1, 8) == bytes(8)
    assert d.interrupt_in(1, 1, 8) is None
    kbd.key(0xC8, True)  # qnum of "up" (E0 48)
    assert d.interrupt_in(1, 1, 8)[2] == 0x52
    assert not kbd.key("no-such-key", True)
    # SET_REPORT(output): LEDs
    d.control(1, 0x21, 0x09, 0x0200, 0, data=b"\x03")
    assert leds == [3] and kbd.leds == 3
    assert d.control(1, 0xA1, 0x01, 0x0200, 0, length=1) == b"\x03"  # GET_REPORT output
    # GET_REPORT(input) returns the current state
    assert d.control(1, 0xA1, 0x01, 0x0100, 0, length=8)[2] == 0x52


def test_keyboard_rollover():
    kbd = UsbKeyboard()
    d = _ready(kbd)
    for k in "qwertyu":
        kbd.key(k, True)
    reports = [d.interrupt_in(1, 1, 8) for _ in range(7)]
    assert reports[-1][2:] == bytes([1] * 6)  # phantom state with 7 keys down


def test_protocol_and_idle_requests():
    kbd = UsbKeyboard()
    d = _ready(kbd)
    assert d.control(1, 0xA1, 0x03, 0, 0, length=1) == b"\x01"  # report protocol after reset
    d.control(1, 0x21, 0x0B, 0, 0)  # SET_PROTOCOL boot
    assert d.control(1, 0xA1, 0x03, 0, 0, length=1) == b"\x00"
    assert d.control(1, 0xA1, 0x02, 0, 0, length=1) == b"\x00"
    d.control(1, 0x21, 0x0A, 2 << 8, 0)  # SET_IDLE 8 ms
    assert d.control(1, 0xA1, 0x02, 0, 0, length=1) == b"\x02"
    # with an idle rate the current report repeats without input
    assert d.interrupt_in(1, 1, 8, frames=12) == bytes(8)
    d.control(1, 0x21, 0x0A, 0, 0)
    assert d.interrupt_in(1, 1, 8, frames=20) is None


def test_mouse_relative_split_and_queue_bound():
    mouse = UsbMouse()
    d = _ready(mouse)
    mouse.event(300, -5, 1, buttons=2)
    r = [d.interrupt_in(1, 1, 4) for _ in range(3)]
    assert r[0] == bytes([2, 127, 0xFB, 1])
    assert r[1] == bytes([2, 127, 0, 0])
    assert r[2] == bytes([2, 46, 0, 0])
    for _ in range(HID_QUEUE_LEN + 10):
        mouse.event(1, 0)
    assert len(mouse.queue) == HID_QUEUE_LEN and mouse.dropped == 10
    # a boot-protocol read of 3 bytes gets the first three
    assert d.interrupt_in(1, 1, 3) == bytes([0, 1, 0])
    # SET_REPORT is the keyboard's only
    try:
        d.control(1, 0x21, 0x09, 0x0200, 0, data=b"\x01")
        raise AssertionError("expected a STALL")
    except Exception as e:  # TransferError
        assert "TD failed" in str(e)


def test_tablet_flood_keeps_latest_position():
    tablet = UsbTablet()
    d = _ready(tablet)
    for i in range(100):
        tablet.event(i, i)
    assert len(tablet.queue) == HID_QUEUE_LEN
    got = [d.interrupt_in(1, 1, 8) for _ in range(HID_QUEUE_LEN)]
    assert got[-1][1] == 99


def test_ioc_raises_intx_and_usbsts_clears_it():
    tablet = UsbTablet()
    d = _ready(tablet)
    d.out(4, 0x0004)  # USBINTR: IOC
    d.out(2, 0x003F)
    d.m.outbox.clear()
    tablet.event(5, 5)
    assert d.interrupt_in(1, 1, 8) is not None
    assert d.inp(2) & 1
    assert d.irq_level() == 1
    d.m.outbox.clear()
    d.out(2, 0x0001)
    assert d.irq_level() == 0
    assert not d.inp(2) & 1


def test_short_packet_interrupt():
    tablet = UsbTablet()
    d = _ready(tablet)
    d.out(4, 0x0008)  # USBINTR: short packet only
    d.m.outbox.clear()
    tablet.event(5, 5)
    d.heap = 0x12000
    td = d.make_td(IN, 1, 1, 0, 8, spd=True)
    d.w32(QH_ADDR + 4, td.addr)
    d.step(2)
    assert d.actual(td) == 6
    assert d.irq_level() == 1
    # the QH element still points at the short TD (SPD: not advanced)
    assert d.r32(QH_ADDR + 4) == td.addr
    d.w32(QH_ADDR + 4, T)
