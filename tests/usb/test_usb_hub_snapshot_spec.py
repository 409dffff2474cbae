"""The hub (more than two devices), snapshot round trips, and `--usb` spec parsing."""

from __future__ import annotations

import struct

import pytest
from uhci_driver import IN, OUT, UhciDriver

from devmodel.core.clock import Clock
from devmodel.core.device import SnapshotError
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.usb import UsbHub, UsbKeyboard, UsbMassStorage, UsbMouse, UsbTablet, build_usb
from devmodel.usb.usbspec import UsbSpec, parse_usbspec, parse_usbspecs

HUB = 1


def _hub_port_reset(d, port: int) -> int:
    d.control(HUB, 0x23, 3, 4, port)  # SetPortFeature(PORT_RESET)
    st = d.control(HUB, 0xA3, 0, 0, port, length=4)
    d.control(HUB, 0x23, 1, 20, port)  # ClearPortFeature(C_PORT_RESET)
    d.control(HUB, 0x23, 1, 16, port)  # ClearPortFeature(C_PORT_CONNECTION)
    return int.from_bytes(st[:2], "little")


def test_three_devices_get_a_hub():
    tablet, kbd, mouse = UsbTablet(), UsbKeyboard(), UsbMouse()
    d = UhciDriver([tablet, kbd, mouse])
    assert d.uhci.ports[0] is tablet and isinstance(d.uhci.ports[1], UsbHub)
    d.reset_port(1)
    info = d.enumerate(HUB)
    assert info["device"][4] == 9  # hub class
    desc = d.control(HUB, 0xA0, 6, 0x2900, 0, length=16)
    assert desc[1] == 0x29 and desc[2] == 8
    # status change endpoint: ports 1 and 2 have connections
    assert d.interrupt_in(HUB, 1, 2) == bytes([0b110, 0])
    for port in (1, 2, 3):
        d.control(HUB, 0x23, 3, 8, port)  # PORT_POWER
    st = _hub_port_reset(d, 1)
    assert st & 0x0103 == 0x0103  # connection, enable, power
    assert d.enumerate(2)["device"][15] == 2
    st = _hub_port_reset(d, 2)
    assert d.enumerate(3)["config"][9 + 7] == 2  # mouse protocol
    assert _hub_port_reset(d, 3) & 1 == 0  # empty port
    assert d.interrupt_in(HUB, 1, 2) is None  # nothing changed any more
    # reports travel through the hub
    kbd.key("b", True)
    assert d.interrupt_in(2, 1, 8)[2] == 0x05
    mouse.event(3, 4)
    assert d.interrupt_in(3, 1, 4) == bytes([0, 3, 4, 0])
    # a disabled hub port hides its device
    d.control(HUB, 0x23, 1, 1, 1)  # ClearPortFeature(PORT_ENABLE)
    assert d.uhci._find(2) is None


def test_too_many_devices():
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    with pytest.raises(ValueError):
        build_usb(m, [UsbTablet() for _ in range(10)])


def _snap_machine(d):
    return d.uhci.snapshot()


def test_snapshot_round_trip(tmp_path):
    img = tmp_path / "s.img"
    img.write_bytes(bytes(64 * 512))
    from devmodel.backends.disk import RawFileDisk

    disk = RawFileDisk(img)
    tablet, kbd, msd = UsbTablet(), UsbKeyboard(), UsbMassStorage(disk)
    d = UhciDriver([tablet, kbd, msd])
    d.reset_port(0)
    d.enumerate(5)
    d.reset_port(1)
    d.enumerate(HUB)
    d.control(HUB, 0x23, 3, 4, 2)
    d.enumerate(6)
    tablet.event(10, 20, 1)
    kbd.key("x", True)
    # a mass-storage command left in its data stage
    d.bulk(6, 2, OUT, struct.pack("<IIIBBB16s", 0x43425355, 9, 36, 0x80, 0, 6,
                                  bytes([0x12, 0, 0, 0, 36, 0]).ljust(16, b"\0")))
    d.out(4, 0x0005)
    snap = d.uhci.snapshot()
    before = (dict(d.uhci.rf.values), list(tablet.queue), list(kbd.keys), msd.mode, msd.host_left,
              d.uhci.config[:])
    # mutate everything
    tablet.event(1, 1)
    kbd.key("x", False)
    d.bulk(6, 1, IN, length=36)
    d.out(0, 0x0002)  # HCRESET
    d.step(5)
    d.uhci.restore(snap)
    after = (dict(d.uhci.rf.values), list(tablet.queue), list(kbd.keys), msd.mode, msd.host_left,
             d.uhci.config[:])
    assert after == before
    assert d.uhci.snapshot() == snap
    assert d.uhci.frame_timer.armed  # RS was set: frames run again
    # and the restored state works
    assert d.bulk(6, 1, IN, length=36)[8:16] == b"QEMU    "
    disk.close()


def test_snapshot_is_validated():
    d = UhciDriver([UsbTablet()])
    snap = d.uhci.snapshot()
    bad = {**snap, "state": {**snap["state"], "usb_state": {"0": None, "1": None}}}
    with pytest.raises(SnapshotError):
        d.uhci.restore(bad)
    st = dict(snap["state"]["usb_state"]["0"])
    st["addr"] = 300
    bad = {**snap, "state": {**snap["state"], "usb_state": {"0": st, "1": None}}}
    with pytest.raises(SnapshotError):
        d.uhci.restore(bad)
    bad = {**snap, "state": {**snap["state"], "regs": {"NOPE": 1}}}
    with pytest.raises(SnapshotError):
        d.uhci.restore(bad)


def test_usbspec_parsing():
    assert parse_usbspec("tablet") == UsbSpec("tablet")
    assert parse_usbspec("kbd") == UsbSpec("keyboard")
    assert parse_usbspec("Mouse") == UsbSpec("mouse")
    assert parse_usbspec("disk:/a/b.img") == UsbSpec("disk", "/a/b.img")
    assert parse_usbspec("disk:/a/b,c.img,ro") == UsbSpec("disk", "/a/b,c.img", True)
    assert parse_usbspec("disk:/x.img,rw") == UsbSpec("disk", "/x.img", False)
    assert parse_usbspec("disk:format=qcow2:/q.img,ro") == UsbSpec("disk", "/q.img", True, "qcow2")
    for bad in ("", "joystick", "tablet:1", "disk:", "disk:,ro", "disk:format=qcow2", "disk:format=:/a"):
        with pytest.raises(ValueError):
            parse_usbspec(bad)
    with pytest.raises(ValueError):
        parse_usbspecs(["tablet"] * 10)


def test_build_usb_from_specs(tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(bytes(4096))
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    uhci = build_usb(m, ["tablet", "keyboard", f"disk:{img}"])
    kinds = [type(x).__name__ for x in uhci.all_devices()]
    assert sorted(kinds) == ["UsbHub", "UsbKeyboard", "UsbMassStorage", "UsbTablet"]
    assert len(m.backends) == 1
    with pytest.raises(ValueError):
        build_usb(Machine(GuestMemory.fake(1 << 20)), [f"disk:{tmp_path}/missing.img"])
    m.close_backends()


def test_reset_of_machine_clears_controller_and_devices():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(3)
    tablet.event(1, 2)
    d.m.reset()
    assert tablet.addr == 0 and not tablet.queue
    assert not d.uhci.frame_timer.armed
    assert d.inp(0) == 0xFFFF  # BAR unmapped after reset
    assert d.uhci.config[0x60] == 0x10


def test_in_packets_interleaved_with_interrupt_transfers():
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(3)
    for i in range(5):
        tablet.event(i, i)
        assert d.interrupt_in(3, 1, 8)[1] == i
    assert d.uhci.counters["IN data toggle mismatch"] == 0

