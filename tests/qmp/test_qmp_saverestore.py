"""Save and restore: xen-save-devices-state / --restore / xen-load-devices-state, the
state file's checks (nothing applied from a bad file), and dirty logging of DMA."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from qemu.qmp.qmp_client import ExecuteError
from qmp_support import (
    BMIBA,
    IDE_DEVFN,
    PM_BASE,
    client,
    dmops,
    fingerprint,
    ide_dma_read,
    ide_enable,
    machine_of,
    make_disk,
    mutate,
    next_event,
    rewrite,
    sector,
    start,
    wait_for,
)

from devmodel.client import Hypervisor
from devmodel.statefile import HEADER, StateFileError, decode_state, encode_value
from devmodel.wire import codec
from devmodel.wire.constants import DmOp


def restored_hv(d) -> Hypervisor:
    """A hypervisor for a daemon started paused: HELLO, server created but disabled."""
    hv = Hypervisor.connect(d.proc.socket_path, process=d.proc, handshake=False)
    hv.hello()
    wait_for(hv, lambda: hv.state.server_created and len(hv.state.pci) > 0)
    hv.poll(0.1)
    assert not hv.state.server_enabled
    d.hv = hv
    return hv


async def save(c, path) -> None:
    assert await c.execute("xen-save-devices-state", {"filename": str(path), "live": False}) == {}


async def test_save_restore_into_a_fresh_daemon_is_identical(tmp_path):
    a = start()
    mutate(a.hv)
    ca = await client(a.qmp)
    await ca.execute("stop")
    await save(ca, tmp_path / "a.state")
    assert os.stat(tmp_path / "a.state").st_mode & 0o777 == 0o600
    await ca.execute("cont")
    fp_a = fingerprint(a.hv)
    await ca.disconnect()
    a.close()

    b = start(["--restore", str(tmp_path / "a.state")], hypervisor=False)
    cb = await client(b.qmp)
    assert (await cb.execute("query-status"))["status"] == "paused"
    hv = restored_hv(b)
    # BAR4 and the PM block were claimed from the restored state, before the guest runs
    assert hv.state.ports.contains(BMIBA, BMIBA + 15)
    assert hv.state.ports.contains(PM_BASE, PM_BASE + 63)
    await save(cb, tmp_path / "b.state")
    assert machine_of(str(tmp_path / "b.state")) == machine_of(str(tmp_path / "a.state"))
    await cb.execute("cont")
    await next_event(cb, "RESUME")
    wait_for(hv, lambda: hv.state.server_enabled)
    hv.add_ram(16 << 20)
    assert fingerprint(hv) == fp_a
    await cb.disconnect()
    b.close()


async def test_save_needs_no_stop_and_writes_to_a_plain_path(tmp_path):
    a = start()
    c = await client(a.qmp)
    await save(c, tmp_path / "s")
    doc = decode_state((tmp_path / "s").read_bytes())
    assert doc["layout"]["piix3-ide"] == ["PiixIde", 1]
    assert set(doc["machine"]["devices"]) == set(doc["layout"])
    cls = None
    try:
        await c.execute("xen-save-devices-state", {"filename": str(tmp_path / "no/such/dir")})
    except ExecuteError as e:
        cls = e.error_class
    assert cls == "GenericError"
    await c.disconnect()
    a.close()


def _bad_restore(path) -> str:
    tmp = os.path.dirname(path)
    p = subprocess.run([sys.executable, "-m", "devmodel", "run", "--domid", "1", "--socket",
                        os.path.join(tmp, "x.sock"), "--restore", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert not os.path.exists(os.path.join(tmp, "x.sock"))  # never served
    return p.stderr


@pytest.fixture
def state_file(tmp_path):
    a = start()
    mutate(a.hv)
    yield a, tmp_path / "good.state"
    a.close()


async def _write_state(a, path) -> None:
    c = await client(a.qmp)
    await save(c, path)
    await c.disconnect()


@pytest.mark.parametrize("damage,expect", [
    (dict(flip=HEADER.size + 40), "checksum mismatch"),
    (dict(flip=2), "bad magic"),
    (dict(version=2), "format version 2 is not supported"),
    (dict(mutate_doc=lambda d: d["machine"]["devices"]["rtc"].update(version=99)),
     "device rtc: state version 99"),
    (dict(mutate_doc=lambda d: d["machine"]["devices"]["i8042"].update(device="Uart")),
     "device i8042: file holds a 'Uart'"),
    (dict(mutate_doc=lambda d: d["machine"]["devices"].pop("port92")),
     "device port92 (Port92) is missing"),
    (dict(mutate_doc=lambda d: d["machine"]["devices"].update(e1000={"device": "E1000"})),
     "device e1000 in the file does not exist"),
    (dict(mutate_doc=lambda d: d["machine"]["devices"]["piix3-ide"]["state"].update(
        ide_state={"channels": []})), "ide_state needs two channels"),
])
async def test_bad_files_are_clear_errors_and_nothing_is_applied(state_file, damage, expect):
    a, path = state_file
    await _write_state(a, path)
    rewrite(str(path), **damage)
    assert expect in _bad_restore(path)
    # the same file into a live (stopped) daemon: an error, and its state unchanged
    c = await client(a.qmp)
    await c.execute("stop")
    before = a.tmp + "/before.state"
    await save(c, before)
    with pytest.raises(ExecuteError) as ei:
        await c.execute("xen-load-devices-state", {"filename": str(path)})
    assert ei.value.error_class == "GenericError" and expect in ei.value.error.error.desc
    after = a.tmp + "/after.state"
    await save(c, after)
    assert machine_of(after) == machine_of(before)
    await c.execute("cont")
    await c.disconnect()


async def test_load_into_a_live_daemon_remaps_bars_and_tells_the_hypervisor(tmp_path):
    a = start()
    hv = a.hv
    ide_enable(hv, BMIBA)
    c = await client(a.qmp)
    await save(c, tmp_path / "s")
    hv.pci_cfg_write(IDE_DEVFN, 0x20, 4, 0xD001)  # the guest moves BAR4
    assert hv.state.ports.contains(0xD000, 0xD00F) and not hv.state.ports.contains(BMIBA, BMIBA)
    with pytest.raises(ExecuteError) as ei:
        await c.execute("xen-load-devices-state", {"filename": str(tmp_path / "s")})
    assert "running" in ei.value.error.error.desc
    await c.execute("stop")
    await c.execute("xen-load-devices-state", {"filename": str(tmp_path / "s")})
    wait_for(hv, lambda: hv.state.ports.contains(BMIBA, BMIBA + 15))
    assert not hv.state.ports.contains(0xD000, 0xD000)
    await c.execute("cont")
    wait_for(hv, lambda: hv.state.server_enabled)
    assert hv.pci_cfg_read(IDE_DEVFN, 0x20, 4) == BMIBA | 1
    await c.disconnect()
    a.close()


async def test_dirty_log_reports_dma_writes_as_modified_memory(tmp_path):
    disk = make_disk(str(tmp_path))
    d = start(["--disk", f"format=raw,vdev=hda,access=rw,target={disk}"])
    hv = d.hv
    ide_enable(hv)
    ide_dma_read(hv, 0, 1, 0x30000)  # logging off: nothing reported
    hv.poll(0.1)
    assert not dmops(hv, DmOp.MODIFIED_MEMORY)
    c = await client(d.qmp)
    await c.execute("xen-set-global-dirty-log", {"enable": True})
    ide_dma_read(hv, 4, 16, 0x41000)  # 8 KiB: pfns 0x41, 0x42
    wait_for(hv, lambda: hv.state.dirty_pages)
    assert hv.ram.read(0x41000, 16 * 512) == sector(disk, 4, 16)
    assert hv.state.dirty_pages == {0x41, 0x42}
    (rec,) = dmops(hv, DmOp.MODIFIED_MEMORY)
    assert rec.fields == (1, 0)
    assert codec.MODIFIED_MEMORY_EXTENT.unpack(rec.buf1) == (2, 0, 0x41)
    ide_dma_read(hv, 0, 1, 0x50800)  # half a page at an offset: pfn 0x50
    ide_dma_read(hv, 0, 1, 0x52000)
    wait_for(hv, lambda: 0x52 in hv.state.dirty_pages)
    assert hv.state.dirty_pages == {0x41, 0x42, 0x50, 0x52}
    await c.execute("xen-set-global-dirty-log", {"enable": False})
    n = len(dmops(hv, DmOp.MODIFIED_MEMORY))
    ide_dma_read(hv, 0, 1, 0x60000)
    hv.poll(0.1)
    assert len(dmops(hv, DmOp.MODIFIED_MEMORY)) == n
    await c.disconnect()
    d.close()


def test_value_encoding_round_trips_what_json_cannot_hold():
    from devmodel.statefile import decode_value

    v = {"b": b"\x00\xff", "t": (1, b"x"), 3: "int key", "$b": "tag-like key", "l": [None, 1.5],
         "n": {"deep": bytearray(b"ab")}}
    out = decode_value(encode_value(v))
    assert out == {"b": b"\x00\xff", "t": (1, b"x"), 3: "int key", "$b": "tag-like key",
                   "l": [None, 1.5], "n": {"deep": b"ab"}}
    with pytest.raises(TypeError):
        encode_value({1, 2})
    with pytest.raises(StateFileError):
        decode_value({"$b": "!!notbase64"})


async def test_restore_of_a_nic_with_a_libxl_devid(tmp_path):
    """A vif's devid names the NIC (nicN); the scratch machine that checks the state file
    names it the same, or --restore refuses the file as another machine's."""
    nic = "mac=00:16:3e:00:00:07,model=e1000,backend=null,devid=3"
    a = start(["--nic", nic])
    c = await client(a.qmp)
    await c.execute("stop")
    await save(c, tmp_path / "a.state")
    await c.disconnect()
    a.close()
    assert "nic3" in decode_state((tmp_path / "a.state").read_bytes())["layout"]
    b = start(["--nic", nic, "--restore", str(tmp_path / "a.state")], hypervisor=False)
    cb = await client(b.qmp)
    assert (await cb.execute("query-status"))["status"] == "paused"
    await cb.disconnect()
    b.close()


def test_a_scratch_machine_that_cannot_be_built_is_a_state_file_error():
    """The scratch machine failing to open a backend (an image another process locked, say)
    is a StateFileError, which QMP answers and --restore reports, not an exception that
    leaves the QMP client without a reply."""
    from devmodel.pc import PcOptions, build_pc
    from devmodel.statefile import check_state, encode_state

    m = build_pc(PcOptions(virtual_clock=True))
    try:
        def scratch():
            raise ValueError("qemu-nbd: Failed to get 'write' lock")

        with pytest.raises(StateFileError, match="write' lock"):
            check_state(m, encode_state(m), scratch)
    finally:
        m.close_backends()
        m.memory.close()
