"""QMP through qemu.qmp: BLOCK_IO_ERROR from a real I/O error, and the libxl commands this
daemon (like a QEMU built without them) does not have."""

from __future__ import annotations

import os
import subprocess

import pytest
from qemu.qmp.qmp_client import ExecuteError
from qmp_support import client, ide_dma_read, ide_dma_write, next_event, sector, start


@pytest.fixture
def full_fs(tmp_path):
    """A 64 KiB tmpfs filled to the last block: a sparse disk image on it has its size but
    no room for new blocks, so a guest write fails with ENOSPC as on a full volume."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        img = mnt / "disk.img"
        with open(img, "wb") as f:
            f.write(bytes((i * 7) & 0xFF for i in range(4096)))  # sector 0..7 allocated
            f.truncate(1 << 20)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, bytes(4096)) == 4096:
                pass
        except OSError as e:
            assert e.errno == 28  # ENOSPC: full
        finally:
            os.close(fd)
        yield str(img)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_block_io_error_event_on_enospc(full_fs):
    """QEMU's default werror=report: the guest gets the error status, the toolstack a
    BLOCK_IO_ERROR with nospace set (libxl/xl users grow the volume on it); the drive keeps
    working for what still fits."""
    d = start(["--disk", f"format=raw,vdev=hda,access=rw,target={full_fs}"])
    try:
        c = await client(d.qmp)
        status = ide_dma_write(d.hv, 64, bytes(range(256)) * 16)  # 8 sectors, unallocated
        assert status & 0x01, f"the write should fail (status {status:#x})"
        ev = await next_event(c, "BLOCK_IO_ERROR")
        assert ev["data"] == {"device": "ide0-hd0", "node-name": "ide0-hd0", "operation": "write",
                              "action": "report", "nospace": True,
                              "reason": os.strerror(28)}  # ENOSPC
        # Reading what is there still works, and no second event comes from it.
        ide_dma_read(d.hv, 0, 8, 0x40000)
        assert d.hv.ram is not None
        assert bytes(d.hv.ram.read(0x40000, 4096)) == sector(full_fs, 0, 8)
        status = await c.execute("query-status")
        assert status["status"] == "running"  # report, not stop
        await c.disconnect()
    finally:
        d.close()


@pytest.mark.parametrize("cmd,args", [
    # COLO (libxl_colo_*): QEMU has them only with CONFIG_REPLICATION (qapi/migration.json).
    ("xen-set-replication", {"enable": True, "primary": True}),
    ("query-xen-replication-status", None),
    ("xen-colo-do-checkpoint", None),
    # vCPU hot-plug of old QEMUs (removed in QEMU 5.2); libxl falls back to it only after
    # query-hotpluggable-cpus, which is answered.
    ("cpu-add", {"id": 1}),
])
async def test_libxl_commands_absent_as_in_a_qemu_without_them(cmd, args):
    d = start(hypervisor=False)
    try:
        c = await client(d.qmp)
        with pytest.raises(ExecuteError) as ei:
            await c.execute(cmd, args)
        assert ei.value.error_class == "CommandNotFound"
        assert ei.value.error.error.desc == f"The command {cmd} has not been found"
        names = {x["name"] for x in await c.execute("query-commands")}
        assert cmd not in names and "query-hotpluggable-cpus" in names
        await c.disconnect()
    finally:
        d.close()


async def test_vnc_and_the_other_hmp_infos_through_qemu_qmp(tmp_path):
    """What libxl reads after start-up (query-vnc for console/vnc-listen and vnc-port) with a
    VNC server configured, and the `info` commands `xl qemu-monitor-command` users type."""
    vnc = str(tmp_path / "vnc.sock")
    d = start(["--vnc", f"unix:{vnc}", "--uuid", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"],
              hypervisor=False)
    try:
        c = await client(d.qmp)
        q = await c.execute("query-vnc")
        assert q["enabled"] is True and q["family"] == "unix" and q["host"] == vnc
        assert q["auth"] == "none" and q["clients"] == []
        with pytest.raises(ExecuteError) as ei:  # no password auth configured: QEMU's answer
            await c.execute("change-vnc-password", {"password": "secret"})
        assert ei.value.error_class == "GenericError"
        hmp = {w: await c.execute("human-monitor-command", {"command-line": f"info {w}"})
               for w in ("uuid", "kvm", "status")}
        assert hmp["uuid"] == "6ba7b810-9dad-11d1-80b4-00c04fd430c8\r\n"
        assert hmp["kvm"] == "kvm support: not compiled\r\n"
        assert hmp["status"] == "VM status: running\r\n"
        assert (await c.execute("query-uuid"))["UUID"] == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
        await c.disconnect()
    finally:
        d.close()


async def test_set_link_takes_the_e1000_cable_out_and_back():
    """set_link on a real e1000 (named as query-pci shows it): the guest sees STATUS.LU go
    and come back (after autonegotiation) with a link-status-change interrupt cause each
    time."""
    from devmodel.nic import e1000_defs as d

    mmio = 0xFEB00000
    dm = start(["--nic", "model=e1000,backend=null,mac=52:54:00:00:00:01"])
    try:
        hv = dm.hv
        c = await client(dm.qmp)
        (bus,) = await c.execute("query-pci")
        (nic,) = [x for x in bus["devices"] if (x["id"]["vendor"], x["id"]["device"]) == (0x8086, 0x100E)]
        assert nic["qdev_id"]  # the name set_link (and device_del) take
        devfn = nic["slot"] << 3 | nic["function"]
        hv.pci_cfg_write(devfn, 0x10, 4, mmio)
        hv.pci_cfg_write(devfn, 0x04, 2, 0x0006)
        hv.writel(mmio + d.CTRL, hv.readl(mmio + d.CTRL) | d.CTRL_SLU)
        now = 0

        def run(ms: int) -> None:
            nonlocal now
            now += ms * 1_000_000
            hv.clock(now, sync=True)
            hv.poll(0.02)

        run(3000)
        assert hv.readl(mmio + d.STATUS) & d.STATUS_LU
        hv.readl(mmio + d.ICR)  # clear the causes so far
        await c.execute("set_link", {"name": nic["qdev_id"], "up": False})
        assert not hv.readl(mmio + d.STATUS) & d.STATUS_LU
        assert hv.readl(mmio + d.ICR) & d.ICR_LSC
        await c.execute("set_link", {"name": nic["qdev_id"], "up": True})
        run(3000)
        assert hv.readl(mmio + d.STATUS) & d.STATUS_LU
        assert hv.readl(mmio + d.ICR) & d.ICR_LSC
        await c.disconnect()
    finally:
        dm.close()
