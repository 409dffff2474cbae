"""The toolstack hears the guest's unplug: a real daemon process with an IDE disk, a CD-ROM and an
e1000, a qemu.qmp client on its QMP socket, and the guest's Linux unplug sequence on the
hypervisor socket. QMP gets one DEVICE_DELETED per removed device, shaped as QEMU sends it,
then the XEN_PLATFORM_UNPLUG summary; query-pci and query-block no longer list what went; the
daemon's log says what happened. A blacklisted driver's request yields only the summary."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qmp"))

from pv_guest import E1000_ID, find_function  # noqa: E402
from qmp_support import client, next_event  # noqa: E402
from xen_helpers import Guest, HvPort, make_image  # noqa: E402

from devmodel.client import DaemonProcess, Hypervisor  # noqa: E402

RAM = 16 << 20
MAC = "52:54:00:12:34:99"


def start(tmp_path, *extra):
    img = make_image(tmp_path / "disk.img", 64)
    iso = make_image(tmp_path / "cd.iso", 64)
    qmp = str(tmp_path / "qmp.sock")
    proc = DaemonProcess.start([
        "--qmp", qmp, "--vga", "none",
        "--disk", f"format=raw,vdev=hda,access=rw,target={img}",
        "--disk", f"vdev=hdc,devtype=cdrom,target={iso}",
        "--nic", f"model=e1000,mac={MAC},backend=unix,path={tmp_path / 'nic.sock'},rom=off,devid=0",
        *extra])
    hv = Hypervisor.connect(proc.socket_path, process=proc)
    hv.add_ram(RAM)
    return proc, hv, qmp


async def drain_events(c, timeout: float = 0.3) -> list[dict]:
    out = []
    try:
        while True:
            out.append(await asyncio.wait_for(c.events.get(), timeout))
    except TimeoutError:
        return out


def test_guest_unplug_events_reach_qmp(tmp_path):
    proc, hv, qmp = start(tmp_path)
    loop = asyncio.new_event_loop()
    try:
        c = loop.run_until_complete(client(qmp))
        nic_devfn = find_function(hv, E1000_ID)
        nic_id = "nic0"  # libxl's -device e1000,id=nic<devid>
        pci = loop.run_until_complete(c.execute("query-pci"))
        assert any(dev["slot"] == nic_devfn >> 3 for dev in pci[0]["devices"])
        g = Guest(HvPort(hv))
        g.program_bars()
        assert g.linux_unplug(3) == "unplugged"
        hv.barrier()
        first = loop.run_until_complete(next_event(c, "DEVICE_DELETED"))
        rest = loop.run_until_complete(drain_events(c))
        events = [first, *rest]
        deleted = [e["data"] for e in events if e["event"] == "DEVICE_DELETED"]
        # the hard disk (an ide-hd without a qdev id: path only, as QEMU), then the NIC
        assert deleted == [{"path": "/machine/unattached/device[768]"},
                           {"device": nic_id, "path": f"/machine/peripheral/{nic_id}"}]
        (summary,) = [e["data"] for e in events if e["event"] == "XEN_PLATFORM_UNPLUG"]
        assert summary == {
            "mask": 3, "source": "port", "product": 3, "product-name": "linux", "build": 1,
            "removed": [{"device": "ide0-hd0", "kind": "disk",
                         "path": "/machine/unattached/device[768]"},
                        {"device": nic_id, "kind": "nic", "path": f"/machine/peripheral/{nic_id}"}]}
        assert [e["event"] for e in events].index("XEN_PLATFORM_UNPLUG") == len(events) - 1
        # what the toolstack queries agrees
        pci = loop.run_until_complete(c.execute("query-pci"))
        assert not any(dev["slot"] == nic_devfn >> 3 for dev in pci[0]["devices"])
        blocks = [b["device"] for b in loop.run_until_complete(c.execute("query-block"))]
        assert "ide0-hd0" not in blocks and "ide1-cd0" in blocks
        # a second request (Linux after resume) removes nothing: a summary, no DEVICE_DELETED
        assert g.linux_unplug(3) == "unplugged"
        hv.barrier()
        again = loop.run_until_complete(next_event(c, "XEN_PLATFORM_UNPLUG"))
        assert again["data"]["removed"] == []
        assert not [e for e in loop.run_until_complete(drain_events(c))
                    if e["event"] == "DEVICE_DELETED"]
        loop.run_until_complete(c.disconnect())
    finally:
        hv.close()
        loop.close()
    assert proc.proc.returncode == 0
    log = proc.log()
    assert "unplug request 0x3 (port, product 0x0003): removed disk ide0-hd0, " \
           f"nic {nic_id}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_blacklisted_request_is_only_a_summary(tmp_path):
    proc, hv, qmp = start(tmp_path, "--xen-driver-blacklist", "linux")
    loop = asyncio.new_event_loop()
    try:
        c = loop.run_until_complete(client(qmp))
        g = Guest(HvPort(hv))
        g.program_bars()
        assert g.linux_unplug(1) == "blacklist"
        hv.pio_write(0x10, 2, 1)  # a driver that ignores the 0xD249 answer
        hv.barrier()
        ev = loop.run_until_complete(next_event(c, "XEN_PLATFORM_UNPLUG"))
        assert ev["data"]["refused"] == "blacklisted" and ev["data"]["removed"] == []
        assert not [e for e in loop.run_until_complete(drain_events(c))
                    if e["event"] == "DEVICE_DELETED"]
        blocks = [b["device"] for b in loop.run_until_complete(c.execute("query-block"))]
        assert "ide0-hd0" in blocks
        loop.run_until_complete(c.disconnect())
    finally:
        hv.close()
        loop.close()
    assert proc.proc.returncode == 0
