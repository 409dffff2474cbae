"""Hot-unplug and replug of USB devices (hostile-guest-catalog 28, CVE-2016-7466: per-device
state must go with the device, pending work must not survive a detach). The in-process UHCI
driver of uhci_driver.py queues transfers, the machine unplugs the device under them; a real
daemon takes QMP device_del of a USB device."""

from __future__ import annotations

import gc
import os
import struct
import tracemalloc
import weakref

import pytest
from uhci_driver import (
    ACTIVE,
    CRC_TO,
    IN,
    OUT,
    PORTSC1,
    PORTSC2,
    QH_ADDR,
    USBSTS,
    TransferError,
    UhciDriver,
)

from devmodel.backends.disk import RawFileDisk
from devmodel.controller import ControlError, Controller
from devmodel.usb import UsbKeyboard, UsbMassStorage, UsbMouse, UsbTablet, plug_usb, unplug_usb
from devmodel.usb.hub import PORT_STAT_C_CONNECTION, PORT_STAT_CONNECTION
from devmodel.usb.storage import MODE_CBW, MODE_DATA_IN

ADDR = 2
CCS, CSC, PE, PEC = 1, 2, 4, 8
NSECT = 256


def image(tmp_path) -> str:
    img = tmp_path / "stick.img"
    img.write_bytes(b"".join(struct.pack("<I", s) * 128 for s in range(NSECT)))
    return str(img)


def queue_read(d: UhciDriver, nsect: int, tag: int = 7) -> list:
    """A READ(10) as one depth-first TD chain in the schedule QH: the CBW, 64-byte IN TDs,
    the CSW. Nothing is run."""
    cdb = struct.pack(">BBIBHB", 0x28, 0, 0, 0, nsect, 0)
    cbw = struct.pack("<IIIBBB16s", 0x43425355, tag, nsect * 512, 0x80, 0, len(cdb),
                      cdb.ljust(16, b"\0"))
    d.heap = 0x12000
    tog_out = d.toggles.get((ADDR, 2), 0)
    tog_in = d.toggles.get((ADDR, 0x81), 0)
    tds = [d.make_td(OUT, ADDR, 2, tog_out, 31, cbw)]
    for _ in range(nsect * 512 // 64):
        tds.append(d.make_td(IN, ADDR, 1, tog_in, 64))
        tog_in ^= 1
    tds.append(d.make_td(IN, ADDR, 1, tog_in, 13))
    d.chain(tds)
    d.w32(QH_ADDR + 4, tds[0].addr)
    return tds


def test_unplug_under_a_queued_read_retires_the_tds_and_frees_the_device(tmp_path):
    d = UhciDriver([f"disk:{image(tmp_path)}"])
    msd = d.uhci.ports[0]
    assert isinstance(msd, UsbMassStorage)
    disk = msd.backend
    events: list[tuple[str, str]] = []
    d.m.unplug_listeners.append(lambda dev_id, kind: events.append((dev_id, kind)))
    d.reset_port(0)
    d.enumerate(ADDR)
    tds = queue_read(d, 64)
    d.step(3)  # the CBW and part of the data stage went through: the device is mid-command
    assert msd.mode == MODE_DATA_IN and msd.rd_buf and 0 < msd.host_left < 64 * 512
    pending = next(td for td in tds if d.ctrl_of(td) & ACTIVE)

    assert unplug_usb(d.m, msd)
    # the root port reports it (QEMU uhci_detach): no connection, disabled, both changes set
    v = d.inp(PORTSC1)
    assert not v & (CCS | PE) and v & CSC and v & PEC
    assert d.uhci.ports[0] is None and d.uhci.all_devices() == []
    # the device is back at power-on, with nothing of the command left and no hooks into
    # the controller; its backend was released (closed, out of the machine's list)
    assert msd.mode == MODE_CBW and msd.rd_buf == b"" and not msd.wr_buf and msd.host_left == 0
    assert msd.addr == 0 and msd.config == 0 and msd.port_unplug is None
    assert msd.now() == 0 and msd.wakeup() is None
    assert disk not in d.m.backends and msd not in d.m.resources
    with pytest.raises(OSError):  # closed
        disk.submit_read(0, [memoryview(bytearray(512))], lambda err: None)
    assert events == [("usb-storage0", "usb")]
    # the guest's TDs are answered by nobody: C_ERR counts down from 3 and the TD retires
    # with CRC/timeout and USBERRINT; the queue stops there, the rest stay untouched
    d.step(5)
    c = d.ctrl_of(pending)
    assert not c & ACTIVE and c & CRC_TO
    assert d.inp(USBSTS) & 0x02
    later = tds[tds.index(pending) + 1 :]
    assert all(d.ctrl_of(td) & ACTIVE for td in later)
    # a second unplug finds nothing
    assert not unplug_usb(d.m, msd)


def test_replug_cycles_under_load_leave_nothing_behind(tmp_path):
    """Catalog 28: N attach/detach cycles, each with a transfer in flight, with memory and
    file-descriptor accounting; each cycle's device must be garbage once unplugged."""
    img = image(tmp_path)
    d = UhciDriver([])
    fds_before = len(os.listdir("/proc/self/fd"))
    refs: list[weakref.ref] = []
    cycles, warm = 60, 15
    tracemalloc.start()
    try:
        base = 0
        for n in range(cycles):
            if n == warm:
                gc.collect()
                base = tracemalloc.get_traced_memory()[0]
            disk = RawFileDisk(img)
            msd = UsbMassStorage(disk, f"usb-storage{n}")
            plug_usb(d.m, d.uhci, msd, 0)
            d.m.own(msd, disk)
            v = d.inp(PORTSC1)
            assert v & CCS and v & CSC
            d.reset_port(0)
            d.toggles.clear()
            d.enumerate(ADDR)
            queue_read(d, 8, tag=n)
            d.step(1)
            assert msd.mode == MODE_DATA_IN
            assert unplug_usb(d.m, msd)
            d.w32(QH_ADDR + 4, 1)  # the guest's driver drops its queue on the disconnect
            d.step(1)
            refs.append(weakref.ref(msd))
            refs.append(weakref.ref(disk))
            del msd, disk
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert all(r() is None for r in refs), "an unplugged device or its backend is still referenced"
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert d.m.counters["unplugged"] == cycles
    assert grown < 256 * 1024, f"{grown} bytes more after {cycles - warm} cycles"
    assert not d.uhci.all_devices()


def test_unplug_behind_the_hub_then_the_hub_with_what_is_left():
    kbd, mouse, tablet = UsbKeyboard(), UsbMouse(), UsbTablet()
    d = UhciDriver([kbd, mouse, tablet])  # kbd on root port 1, a hub on port 2 with the others
    hub = d.uhci.ports[1]
    events: list[tuple[str, str]] = []
    d.m.unplug_listeners.append(lambda dev_id, kind: events.append((dev_id, kind)))
    d.reset_port(1)
    d.enumerate(5)
    for port in (1, 2):
        d.control(5, 0x23, 3, 8, port)  # SET_FEATURE(PORT_POWER)
        d.control(5, 0x23, 3, 4, port)  # SET_FEATURE(PORT_RESET): enables the port
        d.control(5, 0x23, 1, 20, port)  # CLEAR_FEATURE(C_PORT_RESET)
        d.control(5, 0x23, 1, 16, port)  # CLEAR_FEATURE(C_PORT_CONNECTION)
    d.enumerate(6)  # the mouse, behind hub port 1
    mouse.queue.append(b"\x01\x02\x03\x00")

    assert unplug_usb(d.m, mouse)
    status, change = struct.unpack("<HH", d.control(5, 0xA3, 0, 0, 1, 4))  # GetPortStatus(1)
    assert not status & PORT_STAT_CONNECTION and change & PORT_STAT_C_CONNECTION
    assert not mouse.queue and mouse.addr == 0 and mouse.port_unplug is None
    with pytest.raises(TransferError) as err:  # nobody answers at the mouse's address
        d.interrupt_in(6, 1, 4)
    assert err.value.ctrl & CRC_TO and not err.value.ctrl & ACTIVE
    # the hub's status change endpoint reports port 1
    assert d.interrupt_in(5, 1, 1) == bytes([1 << 1])

    assert unplug_usb(d.m, hub)  # the tablet goes with it
    assert events == [("usb-mouse", "usb"), ("usb-tablet", "usb"), ("usb-hub", "usb")]
    assert d.uhci.all_devices() == [kbd]
    assert tablet.port_unplug is None and hub.ports == [None] * 8
    v = d.inp(PORTSC2)
    assert not v & (CCS | PE) and v & CSC and v & PEC
    # plugged in again, the hub is a fresh connection on the root port
    plug_usb(d.m, d.uhci, hub, 1)
    assert d.inp(PORTSC2) & CCS and hub.port_unplug is not None
    with pytest.raises(ValueError, match="plugged in already"):
        plug_usb(d.m, d.uhci, kbd, 1, hub=hub)


def test_qmp_device_del_path_unplugs_a_usb_device():
    """Controller.unplug is what QMP device_del calls: the device is found behind the UHCI,
    unplugged, and DEVICE_DELETED goes out as QEMU shapes it."""
    kbd, tablet = UsbKeyboard("usb-kbd0"), UsbTablet("usb-tablet1")
    d = UhciDriver([kbd, tablet])
    ctl = Controller(d.m)
    seen: list[tuple[str, dict]] = []
    ctl.listeners.append(lambda ev, data: seen.append((ev, data)))
    ctl.unplug("usb-tablet1")
    assert ("DEVICE_DELETED", {"device": "usb-tablet1",
                               "path": "/machine/peripheral/usb-tablet1"}) in seen
    assert d.uhci.all_devices() == [kbd]
    with pytest.raises(ControlError, match="not found"):
        ctl.unplug("usb-tablet1")


async def test_qmp_device_del_on_a_real_daemon_closes_the_image(tmp_path):
    """`--usb disk:IMG` on a daemon process; QMP device_del of the stick: DEVICE_DELETED, the
    root port shows the disconnect to the guest, and the daemon holds the image no more."""
    import asyncio

    from qemu.qmp import QMPClient

    from devmodel.client import DaemonProcess, Hypervisor

    img = image(tmp_path)
    qmp = str(tmp_path / "qmp.sock")
    proc = DaemonProcess.start(["--qmp", qmp, "--clock", "virtual", "--vga", "none",
                                "--usb", "tablet", "--usb", f"disk:{img}"])
    hv = Hypervisor.connect(proc.socket_path, process=proc)
    c = QMPClient("usb-unplug")
    try:
        hv.add_ram(16 << 20)
        devfn, iobase = 1 << 3 | 2, 0xC040
        hv.pci_program_bar(devfn, 4, iobase | 1)
        hv.pci_enable(devfn, io=True, mem=False, master=True)
        assert hv.inw(iobase + PORTSC2) & CCS

        def holds_image() -> bool:
            fds = f"/proc/{proc.pid}/fd"
            return any(os.path.realpath(os.path.join(fds, f)) == os.path.realpath(img)
                       for f in os.listdir(fds))

        assert holds_image()
        await c.connect(qmp)
        await c.execute("device_del", {"id": "usb-storage1"})
        ev = await asyncio.wait_for(c.events.get(), 5)
        while ev["event"] != "DEVICE_DELETED":
            ev = await asyncio.wait_for(c.events.get(), 5)
        assert ev["data"] == {"device": "usb-storage1", "path": "/machine/peripheral/usb-storage1"}
        v = hv.inw(iobase + PORTSC2)
        assert not v & (CCS | PE) and v & CSC
        assert hv.inw(iobase + PORTSC1) & CCS  # the tablet stays
        assert not holds_image()
        await c.disconnect()
    finally:
        hv.close()
        proc.stop()
