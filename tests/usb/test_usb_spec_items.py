"""Issue 7 items the other USB tests did not reach: USBCMD software debug (single step), port
suspend/resume carrying no traffic, low-speed indication on root and hub ports, babble, and
SET_INTERFACE (unknown alternate setting, toggle reset), QMP input-send-event reaching the USB
tablet and keyboard."""

from __future__ import annotations

import struct

import pytest
from uhci_driver import (
    ACTIVE,
    BABBLE,
    CRC_TO,
    FRNUM,
    HEAP,
    IN,
    OUT,
    PORTSC1,
    PORTSC2,
    QH_ADDR,
    SETUP,
    STALLED,
    USBCMD,
    USBSTS,
    TransferError,
    UhciDriver,
)

from devmodel.usb import UsbKeyboard, UsbMouse, UsbTablet
from devmodel.usb.hub import PORT_STAT_LOW_SPEED

HCH = 0x20
LSDA = 0x100
SUSP = 0x1000
PE = 0x4
RUN_SWDBG = 0x00E1  # RS | SWDBG | CF | MAXP


def test_software_debug_mode_runs_one_transaction_per_run_stop():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(1)
    d.heap = HEAP
    setup = struct.pack("<BBHHH", 0x80, 6, 0x0100, 0, 18)  # GET_DESCRIPTOR(device)
    tds = [d.make_td(SETUP, 1, 0, 0, 8, setup)]
    tds += [d.make_td(IN, 1, 0, tog, n) for tog, n in ((1, 8), (0, 8), (1, 2))]
    tds.append(d.make_td(OUT, 1, 0, 1, 0))
    d.chain(tds)
    d.w32(QH_ADDR + 4, tds[0].addr)
    d.out(USBCMD, RUN_SWDBG)
    for i in range(len(tds)):
        frame = d.inp(FRNUM)
        d.step(3)  # however long software takes, the controller waits for Run/Stop
        assert [not d.ctrl_of(td) & ACTIVE for td in tds] == [k <= i for k in range(len(tds))]
        assert d.inp(USBSTS) & HCH and not d.inp(USBCMD) & 1
        assert d.inp(FRNUM) == frame
        d.out(USBCMD, RUN_SWDBG)
    got = b"".join(bytes(d.mem.read(td.buf, d.actual(td)) or b"") for td in tds[1:4])
    assert got == tablet.device_descriptor
    # without the bit, a whole control transfer runs in one frame again
    d.out(USBCMD, 0x00C1)
    assert d.get_descriptor(1, 1, 18) == tablet.device_descriptor


def test_suspended_port_carries_no_traffic_until_resumed():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(1)
    tablet.event(100, 200)
    d.out(PORTSC1, SUSP | PE)
    assert d.inp(PORTSC1) & SUSP
    with pytest.raises(TransferError) as err:  # nobody answers behind a suspended port
        d.interrupt_in(1, 1, 6)
    assert err.value.ctrl & CRC_TO and not err.value.ctrl & ACTIVE
    d.out(PORTSC1, PE)  # resume
    assert not d.inp(PORTSC1) & SUSP
    report = d.interrupt_in(1, 1, 6)
    assert report is not None and report[1:5] == struct.pack("<HH", 100, 200)  # kept meanwhile


class LowSpeedKeyboard(UsbKeyboard):
    speed_low = True


def test_low_speed_devices_show_on_root_and_hub_ports():
    d = UhciDriver([UsbTablet(), LowSpeedKeyboard()])
    assert not d.inp(PORTSC1) & LSDA and d.inp(PORTSC2) & LSDA
    d = UhciDriver([UsbTablet(), LowSpeedKeyboard(), UsbMouse()])
    hub = d.uhci.ports[1]
    assert not d.inp(PORTSC2) & LSDA  # the hub itself is full speed
    d.reset_port(1)
    d.enumerate(5)
    status = [struct.unpack("<HH", d.control(5, 0xA3, 0, 0, port, 4))[0] for port in (1, 2)]
    assert status[0] & PORT_STAT_LOW_SPEED and not status[1] & PORT_STAT_LOW_SPEED
    assert hub.port_status[0] & PORT_STAT_LOW_SPEED


def test_babble_stalls_the_td_and_keeps_the_data():
    """More data than the TD's MaxLen: Babble + Stalled, USBERRINT, the frame ends (QEMU
    uhci_complete_td); the hub's change bitmap is still there for a proper read."""
    d = UhciDriver([UsbKeyboard(), UsbTablet(), UsbMouse()])
    d.reset_port(1)
    d.enumerate(5)  # the hub: both of its ports report a connection change
    d.heap = HEAP
    td = d.make_td(IN, 5, 1, 0, 0)  # MaxLen 0x7FF: a zero-length IN
    d.w32(QH_ADDR + 4, td.addr)
    d.step(1)
    c = d.ctrl_of(td)
    assert c & BABBLE and c & STALLED and not c & ACTIVE
    assert d.inp(USBSTS) & 0x02
    d.w32(QH_ADDR + 4, 1)
    assert d.interrupt_in(5, 1, 1) == bytes([0b110])


def test_set_interface_resets_the_toggle_and_refuses_unknown_settings():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(1)
    tablet.event(1, 1)
    assert d.interrupt_in(1, 1, 6) is not None
    assert tablet.endpoints[0x81].toggle == 1
    with pytest.raises(TransferError) as err:
        d.control(1, 0x01, 11, 1, 0)  # SET_INTERFACE alternate setting 1: there is none
    assert err.value.ctrl & STALLED
    assert tablet.endpoints[0x81].toggle == 1  # a refused request changes nothing
    d.control(1, 0x01, 11, 0, 0)
    assert tablet.endpoints[0x81].toggle == 0
    assert d.control(1, 0x81, 10, length=1) == b"\x00"  # GET_INTERFACE
    d.toggles[(1, 0x81)] = 0  # the host resets its side too
    tablet.event(2, 2)
    assert d.interrupt_in(1, 1, 6) is not None
    assert not d.uhci.counters.get("IN data toggle mismatch")


def test_qmp_input_send_event_reaches_the_usb_tablet_and_keyboard():
    """QMP input-send-event (the command as the QMP server runs it) through the input router
    to the configured USB tablet and keyboard, and from there through the UHCI into guest RAM."""
    from types import SimpleNamespace

    from devmodel.controller import Controller
    from devmodel.qmp.commands import run_command

    tablet, kbd = UsbTablet(), UsbKeyboard()
    d = UhciDriver([tablet, kbd])
    for port, addr in ((0, 1), (1, 2)):
        d.reset_port(port)
        d.enumerate(addr)
    session = SimpleNamespace(controller=Controller(d.m), negotiated=True)

    def send(*events: dict) -> None:
        run_command(session, {"execute": "input-send-event", "arguments": {"events": list(events)}})

    send({"type": "abs", "data": {"axis": "x", "value": 0x4000}},
         {"type": "abs", "data": {"axis": "y", "value": 0x1234}},
         {"type": "btn", "data": {"button": "left", "down": True}})
    report = d.interrupt_in(1, 1, 6)
    assert report is not None
    buttons, x, y = struct.unpack_from("<BHH", report)
    assert (buttons, x, y) == (1, 0x4000, 0x1234)
    send({"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "a"}}})
    assert d.interrupt_in(2, 1, 8) == bytes([0, 0, 0x04, 0, 0, 0, 0, 0])  # usage 'a'
    send({"type": "key", "data": {"down": False, "key": {"type": "qcode", "data": "a"}}})
    assert d.interrupt_in(2, 1, 8) == bytes(8)
