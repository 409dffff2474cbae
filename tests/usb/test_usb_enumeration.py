"""Port reset/enable and enumeration of every device through the UHCI, driven like a guest."""

from __future__ import annotations

import pytest
from uhci_driver import PORTSC1, PORTSC2, TransferError, UhciDriver

from devmodel.usb import UsbKeyboard, UsbMouse, UsbTablet
from devmodel.usb.hid import KEYBOARD_REPORT_DESCRIPTOR, MOUSE_REPORT_DESCRIPTOR, TABLET_REPORT_DESCRIPTOR


def test_pci_identity():
    d = UhciDriver([], start=False)
    assert d.cfg_read(0, 4) == 0x70208086
    assert d.cfg_read(0x08, 4) >> 8 == 0x0C0300
    assert d.cfg_read(0x08, 1) == 0x01
    assert d.cfg_read(0x3D, 1) == 4  # INTD
    assert d.cfg_read(0x60, 1) == 0x10
    assert d.cfg_read(0x20, 4) == 0xC040 | 1
    # BAR4 sizing: 32 bytes of I/O
    d.cfg_write(0x20, 4, 0xFFFFFFFF)
    assert d.cfg_read(0x20, 4) == 0xFFFFFFE1


def test_port_connect_reset_enable():
    d = UhciDriver([UsbTablet()], start=False)
    assert d.inp(PORTSC1) == 0x0083  # CCS | CSC | bit 7
    assert d.inp(PORTSC2) == 0x0080  # nothing connected
    v = d.reset_port(0)
    assert v & 0x0004 and v & 0x0001 and not v & 0x000A
    # an empty port cannot be enabled
    d.out(PORTSC2, 0x0004)
    assert not d.inp(PORTSC2) & 0x0004
    # past the two ports: all-ones, which ends Linux's port count
    assert d.inp(0x14) == 0xFFFF


@pytest.mark.parametrize("cls,report,pid_name", [
    (UsbTablet, TABLET_REPORT_DESCRIPTOR, "QEMU USB Tablet"),
    (UsbKeyboard, KEYBOARD_REPORT_DESCRIPTOR, "QEMU USB Keyboard"),
    (UsbMouse, MOUSE_REPORT_DESCRIPTOR, "QEMU USB Mouse"),
])
def test_enumerate_hid(cls, report, pid_name):
    d = UhciDriver([cls()])
    d.reset_port(0)
    info = d.enumerate(5)
    dev = info["device"]
    assert dev[0] == 18 and dev[1] == 1 and dev[7] == 8
    assert int.from_bytes(dev[8:10], "little") == 0x0627
    cfg = info["config"]
    assert cfg[1] == 2 and cfg[9 + 5] == 3  # interface class HID
    # HID descriptor then endpoint 0x81 interrupt
    assert cfg[18 + 1] == 0x21 and int.from_bytes(cfg[18 + 7 : 18 + 9], "little") == len(report)
    assert cfg[27 + 2] == 0x81 and cfg[27 + 3] == 3
    # report descriptor (interface recipient)
    assert d.get_descriptor(5, 0x22, len(report), rtype=0x81) == report
    # strings
    lang = d.get_descriptor(5, 3, 4)
    assert lang == bytes([4, 3, 0x09, 0x04])
    s = d.get_descriptor(5, 3, 255, index=dev[15])
    assert s[2:].decode("utf-16-le") == pid_name
    assert d.control(5, 0x80, 8, length=1) == b"\x01"  # GET_CONFIGURATION
    assert d.control(5, 0x80, 0, length=2) == b"\x00\x00"  # GET_STATUS device
    assert d.control(5, 0x81, 10, length=1) == b"\x00"  # GET_INTERFACE
    d.control(5, 0x01, 11, 0, 0)  # SET_INTERFACE alt 0
    # the old address no longer answers
    with pytest.raises(TransferError):
        d.get_descriptor(0, 1, 8)


def test_stall_on_bad_request_and_recovery():
    d = UhciDriver([UsbTablet()])
    d.reset_port(0)
    d.enumerate(3)
    with pytest.raises(TransferError) as e:
        d.control(3, 0x80, 0x77, length=4)  # unknown standard request
    assert e.value.ctrl & (1 << 22)  # Stalled
    assert d.inp(2) & 0x0002  # USBERRINT
    with pytest.raises(TransferError):
        d.get_descriptor(3, 0x42, 8)  # unknown descriptor type
    with pytest.raises(TransferError):
        d.control(3, 0x00, 9, 7)  # SET_CONFIGURATION to a value that does not exist
    # SET_DESCRIPTOR is a request error (optional request, QEMU has none)
    with pytest.raises(TransferError):
        d.control(3, 0x00, 7, 0x0100, 0, data=bytes(18))
    # the next SETUP works again
    assert d.get_descriptor(3, 1, 18)[0] == 18


def test_endpoint_halt_feature_and_status():
    d = UhciDriver([UsbTablet()])
    d.reset_port(0)
    d.enumerate(2)
    d.control(2, 0x02, 3, 0, 0x81)  # SET_FEATURE(ENDPOINT_HALT) ep 0x81
    assert d.control(2, 0x82, 0, 0, 0x81, length=2) == b"\x01\x00"
    d.uhci.ports[0].event(100, 200)
    with pytest.raises(TransferError) as e:
        d.interrupt_in(2, 1, 8)
    assert e.value.ctrl & (1 << 22)
    d.control(2, 0x02, 1, 0, 0x81)  # CLEAR_FEATURE(ENDPOINT_HALT)
    d.toggles[(2, 0x81)] = 0
    assert d.control(2, 0x82, 0, 0, 0x81, length=2) == b"\x00\x00"
    assert d.interrupt_in(2, 1, 8) == bytes([0, 100, 0, 200, 0, 0])
    with pytest.raises(TransferError):
        d.control(2, 0x82, 0, 0, 0x85, length=2)  # no such endpoint


def test_remote_wakeup_feature():
    d = UhciDriver([UsbKeyboard()])
    d.reset_port(0)
    d.enumerate(2)
    d.control(2, 0x00, 3, 1)  # SET_FEATURE(DEVICE_REMOTE_WAKEUP)
    assert d.control(2, 0x80, 0, length=2) == b"\x02\x00"
    d.control(2, 0x00, 1, 1)
    assert d.control(2, 0x80, 0, length=2) == b"\x00\x00"


def test_oversized_wlength_is_stalled_without_state_change():
    """hostile-guest-catalog 17 (CVE-2020-14364)."""
    d = UhciDriver([UsbTablet()])
    d.reset_port(0)
    d.enumerate(4)
    dev = d.uhci.ports[0]
    before = (dev.ctl_stage, dev.ctl_len, bytes(dev.ctl_setup))
    with pytest.raises(TransferError):
        d.control(4, 0x80, 6, 0x0100, 0, length=0x1001)
    assert (dev.ctl_stage, dev.ctl_len, bytes(dev.ctl_setup)) == before
    assert d.get_descriptor(4, 1, 18)[0] == 18


def test_two_devices_on_two_ports():
    d = UhciDriver([UsbTablet(), UsbKeyboard()])
    d.reset_port(0)
    d.enumerate(1)
    d.reset_port(1)
    info = d.enumerate(2)
    assert info["config"][9 + 7] == 1  # keyboard protocol
