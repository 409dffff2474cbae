"""Every QMP command through qemu.qmp against a daemon with a hypervisor connected: results in
QEMU's shapes, errors in QEMU's classes, events, and what the hypervisor sees."""

from __future__ import annotations

import os

import pytest
from qemu.qmp.qmp_client import ExecuteError
from qmp_support import (
    BMIBA,
    IDE_DEVFN,
    PM_BASE,
    client,
    dmops,
    enable_power_button,
    ide_enable,
    make_disk,
    next_event,
    start,
    wait_for,
)

from devmodel.wire.constants import DmOp


@pytest.fixture
def dm():
    d = start()
    yield d
    d.close()


async def err(c, cmd, args=None) -> tuple[str, str]:
    with pytest.raises(ExecuteError) as ei:
        await c.execute(cmd, args)
    return ei.value.error_class, ei.value.error.error.desc


async def test_status_version_and_stop_cont_drive_the_ioreq_server(dm):
    hv = dm.hv
    c = await client(dm.qmp)
    assert await c.execute("query-status") == {"status": "running", "singlestep": False,
                                               "running": True}
    v = await c.execute("query-version")
    assert v["qemu"]["major"] >= 2 and v["package"].startswith("devmodel")
    assert hv.state.server_enabled

    await c.execute("stop")
    assert (await next_event(c, "STOP"))["data"] == {}
    wait_for(hv, lambda: not hv.state.server_enabled)
    assert (await c.execute("query-status"))["status"] == "paused"
    ev_ops = [r.fields for r in dmops(hv, DmOp.SET_IOREQ_SERVER_STATE)]
    assert ev_ops[-1] == (0, 0)
    await c.execute("stop")  # already stopped: nothing, no event, no dm_op
    hv.poll(0.1)
    assert [r.fields for r in dmops(hv, DmOp.SET_IOREQ_SERVER_STATE)] == ev_ops

    await c.execute("cont")
    ev = await next_event(c, "RESUME")
    assert set(ev["timestamp"]) == {"seconds", "microseconds"}
    wait_for(hv, lambda: hv.state.server_enabled)
    assert dmops(hv, DmOp.SET_IOREQ_SERVER_STATE)[-1].fields == (0, 1)
    assert hv.inb(0x92) is not None  # served again
    assert (await c.execute("query-status"))["running"] is True
    await c.disconnect()


async def test_system_reset_resets_devices_and_asks_the_toolstack_to_reboot(dm):
    hv = dm.hv
    enable_power_button(hv)
    assert hv.pci_cfg_read(1 << 3 | 3, 0x80, 1) == 1
    c = await client(dm.qmp)
    await c.execute("system_reset")
    ev = await next_event(c, "RESET")
    assert ev["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    wait_for(hv, lambda: hv.state.shutdowns == [1])  # remote_shutdown(SHUTDOWN_reboot)
    assert hv.pci_cfg_read(1 << 3 | 3, 0x80, 1) == 0  # PMREGMISC back to its reset value
    assert not hv.state.ports.contains(PM_BASE, PM_BASE + 63)  # PM block unmapped
    await c.disconnect()


async def test_system_powerdown_presses_the_acpi_power_button(dm):
    hv = dm.hv
    c = await client(dm.qmp)
    # Not enabled by the guest: the event is still reported, nothing reaches the guest.
    await c.execute("system_powerdown")
    await next_event(c, "POWERDOWN")
    hv.poll(0.1)
    assert hv.state.isa_irq.get(9, 0) == 0
    enable_power_button(hv)
    await c.execute("system_powerdown")
    assert (await next_event(c, "POWERDOWN"))["data"] == {}
    wait_for(hv, lambda: hv.state.isa_irq.get(9) == 1)  # SCI
    assert hv.inw(PM_BASE) & 0x0100  # PWRBTN_STS
    hv.outw(PM_BASE, 0x0100)  # the OS acknowledges
    assert hv.state.isa_irq[9] == 0
    await c.disconnect()


async def test_guest_poweroff_and_reboot_are_reported_as_events(dm):
    hv = dm.hv
    c = await client(dm.qmp)
    enable_power_button(hv)
    hv.outw(PM_BASE + 4, 0x2000)  # SLP_EN, SLP_TYP 0: soft-off
    assert (await next_event(c, "SHUTDOWN"))["data"] == {"guest": True, "reason": "guest-shutdown"}
    hv.outb(0x92, 0x01)  # fast reset through port 0x92
    assert (await next_event(c, "RESET"))["data"] == {"guest": True, "reason": "guest-reset"}
    assert hv.state.shutdowns == [0, 1]
    await c.disconnect()


async def test_quit_reports_shutdown_and_exits_0():
    d = start()
    c = await client(d.qmp)
    assert await c.execute("quit") == {}
    ev = await next_event(c, "SHUTDOWN")
    assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}
    try:
        await c.disconnect()
    except EOFError:
        pass  # the daemon went first, as QEMU does after quit
    assert d.proc.wait_exit(10) == 0, d.proc.log()
    assert not os.path.exists(d.qmp)
    for _ in range(1000):  # the teardown dm_ops were sent before the close
        try:
            d.hv.recv()
        except BrokenPipeError:
            continue
        except ConnectionError:
            break
    ops = [r.op for r in d.hv.state.dmops]
    assert ops[-2:] == [DmOp.SET_IOREQ_SERVER_STATE, DmOp.DESTROY_IOREQ_SERVER]
    d.hv.close()


async def test_query_pci_reports_functions_and_bars_as_qemu(dm):
    hv = dm.hv
    c = await client(dm.qmp)
    (bus,) = await c.execute("query-pci")
    devs = {(d["slot"], d["function"]): d for d in bus["devices"]}
    assert bus["bus"] == 0 and set(devs) >= {(0, 0), (1, 0), (1, 1), (1, 3)}
    host = devs[(0, 0)]
    assert host["id"]["vendor"] == 0x8086 and host["id"]["device"] == 0x1237
    assert host["class_info"] == {"class": 0x0600, "desc": "Host bridge"}
    ide = devs[(1, 1)]
    assert ide["regions"] == [{"bar": 4, "type": "io", "address": -1, "size": 16}]
    ide_enable(hv)
    hv.pci_cfg_write(1 << 3 | 3, 0x3C, 1, 9)
    (bus,) = await c.execute("query-pci")
    devs = {(d["slot"], d["function"]): d for d in bus["devices"]}
    assert devs[(1, 1)]["regions"][0]["address"] == BMIBA
    assert devs[(1, 3)]["irq"] == 9 and devs[(1, 3)]["irq_pin"] == 1
    assert "irq" not in devs[(0, 0)]
    text = await c.execute("human-monitor-command", {"command-line": "info pci"})
    assert "IDE controller: PCI device 8086:7010" in text and f"BAR4: I/O at {BMIBA:#x}" in text
    await c.disconnect()


async def test_query_block_and_media_commands(tmp_path):
    disk = make_disk(str(tmp_path))
    d = start(["--disk", f"format=raw,vdev=hda,access=rw,target={disk}"])
    c = await client(d.qmp)
    (blk,) = await c.execute("query-block")
    assert blk["device"] == "ide0-hd0" and blk["removable"] is False and blk["locked"] is False
    ins = blk["inserted"]
    assert ins["file"] == disk and ins["ro"] is False and ins["drv"] == "raw"
    assert ins["image"] == {"filename": disk, "format": "raw", "virtual-size": 64 * 512,
                            "dirty-flag": False}
    text = await c.execute("human-monitor-command", {"command-line": "info block"})
    assert text.startswith(f"ide0-hd0 (#block0): {disk} (raw)")
    assert await err(c, "eject", {"device": "ide0-hd0"}) == (
        "GenericError", "Device 'ide0-hd0' is not removable")
    assert await err(c, "eject", {"id": "ide-5632"}) == ("DeviceNotFound", "Device 'ide-5632' not found")
    assert (await err(c, "eject", {}))[0] == "GenericError"
    assert await err(c, "blockdev-change-medium", {"id": "ide-5632", "filename": disk,
                                                   "format": "raw"}) == (
        "DeviceNotFound", "Device 'ide-5632' not found")
    assert (await err(c, "change", {"device": "ide0-hd0", "target": disk}))[0] == "GenericError"
    await c.disconnect()
    d.close()


async def test_chardev_vnc_screendump_and_hmp(tmp_path):
    d = start(["--serial", "pty", "--name", "guest1"])
    c = await client(d.qmp)
    chardevs = {x["label"]: x for x in await c.execute("query-chardev")}
    assert chardevs["serial0"]["filename"].startswith("pty:/dev/pts/")
    assert os.path.exists(chardevs["serial0"]["filename"][4:])
    assert chardevs["qmp0"]["filename"] == f"unix:{d.qmp},server=on"
    assert await c.execute("query-vnc") == {"enabled": False}
    assert await err(c, "change-vnc-password", {"password": "x"}) == (
        "GenericError", "Could not set password")
    await c.execute("screendump", {"filename": str(tmp_path / "s.ppm")})  # the VGA's
    assert (tmp_path / "s.ppm").read_bytes().startswith(b"P6\n")
    hmp = {}
    for what in ("status", "chardev", "version", "name", "nope"):
        hmp[what] = await c.execute("human-monitor-command", {"command-line": f"info {what}"})
    assert hmp["status"] == "VM status: running\r\n"
    assert "serial0: filename=pty:/dev/pts/" in hmp["chardev"]
    assert "devmodel" in hmp["version"] and hmp["name"] == "guest1\r\n"
    assert hmp["nope"].startswith("unknown command")
    assert await c.execute("query-name") == {"name": "guest1"}
    assert await c.execute("human-monitor-command", {"command-line": "stop"}) == ""
    assert await c.execute("human-monitor-command", {"command-line": "info status"}) == \
        "VM status: paused\r\n"
    await c.disconnect()
    d.close()


async def test_device_commands_without_such_devices(dm):
    c = await client(dm.qmp)
    assert await err(c, "device_del", {"id": "nic0"}) == ("DeviceNotFound", "Device 'nic0' not found")
    assert (await err(c, "device_del", {"id": "piix3-ide"}))[0] == "GenericError"
    assert await err(c, "set_link", {"name": "nic0", "up": False}) == (
        "DeviceNotFound", "Device 'nic0' not found")
    cls, desc = await err(c, "device_add", {"driver": "xen-pci-passthrough", "id": "pci-pt-03_00.0",
                                            "hostaddr": "0000:03:00.0", "permissive": True})
    assert cls == "GenericError" and "passthrough" in desc
    assert (await err(c, "device_add", {"driver": "qemu64-x86_64-cpu", "id": "cpu-1"}))[0] == "GenericError"
    assert (await err(c, "system_wakeup"))[0] == "GenericError"
    cpus = await c.execute("query-cpus-fast")
    assert [x["cpu-index"] for x in cpus] == [0]
    hot = await c.execute("query-hotpluggable-cpus")
    assert hot[0]["props"] == {"socket-id": 0, "core-id": 0, "thread-id": 0} and "qom-path" in hot[0]
    await c.disconnect()


async def test_input_send_event_reaches_the_ps2_keyboard(dm):
    hv = dm.hv
    c = await client(dm.qmp)
    await c.execute("input-send-event", {"events": [
        {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "a"}}},
        {"type": "key", "data": {"down": False, "key": {"type": "qcode", "data": "a"}}}]})
    wait_for(hv, lambda: hv.state.isa_irq.get(1) == 1)
    assert hv.inb(0x64) & 1
    assert [hv.inb(0x60) for _ in range(3)] == [0x1C, 0xF0, 0x1C]  # set 2: make, break
    await c.execute("input-send-event", {"events": [
        {"type": "rel", "data": {"axis": "x", "value": 5}},
        {"type": "btn", "data": {"down": True, "button": "left"}}]})
    assert await err(c, "input-send-event", {"events": [
        {"type": "abs", "data": {"axis": "x", "value": 100}}]}) == (
        "GenericError", "Input handler not found for event type abs")
    assert (await err(c, "input-send-event", {"events": [{"type": "key", "data": {
        "down": True, "key": {"type": "qcode", "data": 7}}}]}))[0] == "GenericError"
    await c.execute("send-key", {"keys": [{"type": "qcode", "data": "b"}]})
    wait_for(hv, lambda: hv.inb(0x64) & 1)
    assert [hv.inb(0x60) for _ in range(3)] == [0x32, 0xF0, 0x32]
    await c.disconnect()


async def test_add_fd_remove_fd_query_fdsets(dm, tmp_path):
    c = await client(dm.qmp)
    assert await err(c, "add-fd") == ("GenericError", "No file descriptor supplied via SCM_RIGHTS")
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    c.send_fd_scm(fd)
    r = await c.execute("add-fd", {"opaque": "state"})
    assert r["fdset-id"] == 0 and isinstance(r["fd"], int)
    c.send_fd_scm(fd)
    r2 = await c.execute("add-fd", {"fdset-id": 5})
    assert r2["fdset-id"] == 5
    assert await c.execute("query-fdsets") == [
        {"fdset-id": 0, "fds": [{"fd": r["fd"], "opaque": "state"}]},
        {"fdset-id": 5, "fds": [{"fd": r2["fd"]}]}]
    await c.execute("remove-fd", {"fdset-id": 0})
    assert await err(c, "remove-fd", {"fdset-id": 0}) == (
        "GenericError", "File descriptor named 'fdset-id:0' not found")
    os.close(fd)
    await c.disconnect()
    # fds a connection added are released when it goes (libxl: one connection per operation)
    c = await client(dm.qmp)
    assert await c.execute("query-fdsets") == []
    await c.disconnect()


async def test_bm_status_port_unaffected_by_qmp_queries(dm):
    """Queries are read-only: the guest sees the same registers before and after."""
    hv = dm.hv
    ide_enable(hv)
    before = [hv.pci_cfg_read(IDE_DEVFN, off, 4) for off in range(0, 64, 4)]
    c = await client(dm.qmp)
    for q in ("query-pci", "query-block", "query-chardev", "query-status"):
        await c.execute(q)
    assert [hv.pci_cfg_read(IDE_DEVFN, off, 4) for off in range(0, 64, 4)] == before
    await c.disconnect()


async def test_screendump_without_a_display_is_refused(tmp_path):
    d = start(["--vga", "none"])
    c = await client(d.qmp)
    cls, desc = await err(c, "screendump", {"filename": str(tmp_path / "s.ppm")})
    assert cls == "GenericError" and "no console" in desc
    await c.disconnect()
    d.close()


async def test_screendump_writes_the_current_vga_frame_as_ppm_and_png(tmp_path):
    import zlib

    d = start(["--screen-rate", "20"])
    hv = d.hv
    c = await client(d.qmp)

    def vbe(i: int, v: int) -> None:
        hv.outw(0x1CE, i)
        hv.outw(0x1CF, v)

    # A 64x32x32 VBE mode; pixels through the banked legacy window (BAR0 is shared memory,
    # not mapped by this hypervisor).
    for i, v in ((1, 64), (2, 32), (3, 32), (4, 0x01)):
        vbe(i, v)
    hv.writel(0xA0000, 0x00102030)  # (0,0): R 0x10 G 0x20 B 0x30
    hv.writel(0xA0000 + 4 * (64 * 31 + 63), 0x00FF0000)  # bottom right: red
    ppm, png = tmp_path / "s.ppm", tmp_path / "s.png"
    await c.execute("screendump", {"filename": str(ppm)})
    data = ppm.read_bytes()
    header = b"P6\n64 32\n255\n"
    assert data.startswith(header) and len(data) == len(header) + 64 * 32 * 3
    rgb = data[len(header):]
    assert rgb[:3] == bytes((0x10, 0x20, 0x30)) and rgb[-3:] == bytes((0xFF, 0, 0))
    await c.execute("screendump", {"filename": str(png), "format": "png"})
    blob = png.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert blob[16:24] == (64).to_bytes(4, "big") + (32).to_bytes(4, "big")
    idat_len = int.from_bytes(blob[33:37], "big")
    raw = zlib.decompress(blob[41 : 41 + idat_len])
    assert len(raw) == (64 * 3 + 1) * 32 and raw[1:4] == bytes((0x10, 0x20, 0x30))
    cls, desc = await err(c, "screendump", {"filename": str(png), "format": "jpeg"})
    assert cls == "GenericError" and "format" in desc
    await c.disconnect()
    d.close()
