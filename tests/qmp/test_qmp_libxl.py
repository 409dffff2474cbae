"""The exact sequences libxl sends (xen-protocol.md 6.1-6.5), framed as libxl frames them: a
new connection per operation, CRLF after each message, integer ids, events ignored, fds with
SCM_RIGHTS next to add-fd and then named /dev/fdset/N."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest
from qmp_support import (
    BMIBA,
    PM_BASE,
    RawQmp,
    atapi_read10,
    dmops,
    fingerprint,
    ide_dma_read,
    ide_enable,
    machine_of,
    make_disk,
    mutate,
    start,
    wait_for,
)

from devmodel.client import Hypervisor
from devmodel.wire.constants import DmOp


def op(path: str, *cmds: tuple, fds: dict[int, list[int]] | None = None) -> list[dict]:
    """One libxl operation: connect, greeting, qmp_capabilities, the commands, close."""
    q = RawQmp(path)
    q.negotiate()
    out = []
    for i, (name, args) in enumerate(cmds, start=2):
        r = q.cmd(name, args, id=i, fds=(fds or {}).get(i - 2))
        assert r.get("id") == i
        out.append(r)
    q.close()
    return out


def test_option_probe_then_quit_exits_0():
    """libxl's probe: capabilities, query-command-line-options, quit (no hypervisor)."""
    d = start(hypervisor=False)
    (opts, quit_) = op(d.qmp, ("query-command-line-options", None), ("quit", None))
    assert opts == {"return": [], "id": 2} and quit_ == {"return": {}, "id": 3}
    assert d.proc.wait_exit(10) == 0


def test_start_paused_then_cont_then_post_start_queries():
    """-S start: query-status says prelaunch and the ioreq server stays disabled until cont;
    then query-chardev (serial pty for xenstore serial/0/tty) and query-vnc."""
    d = start(["--paused", "--serial", "pty"], hypervisor=False)
    (st,) = op(d.qmp, ("query-status", None))
    assert st["return"]["status"] == "prelaunch" and st["return"]["running"] is False
    hv = Hypervisor.connect(d.proc.socket_path, process=d.proc, handshake=False)
    d.hv = hv
    hv.hello()
    wait_for(hv, lambda: hv.state.server_created and len(hv.state.pci) > 0)
    hv.poll(0.1)
    assert not hv.state.server_enabled
    assert not dmops(hv, DmOp.SET_IOREQ_SERVER_STATE)
    (cont,) = op(d.qmp, ("cont", None))
    assert cont == {"return": {}, "id": 2}
    wait_for(hv, lambda: hv.state.server_enabled)
    hv.add_ram(16 << 20)
    assert hv.pci_cfg_read(0, 0, 2) == 0x8086
    chardev, vnc = op(d.qmp, ("query-chardev", None), ("query-vnc", None))
    serial = {c["label"]: c["filename"] for c in chardev["return"]}["serial0"]
    assert serial.startswith("pty:") and os.path.exists(serial[4:])
    assert vnc["return"] == {"enabled": False}
    d.close()


def test_live_save_then_restore_then_cont(tmp_path):
    """Save (6.5): dirty log on -> DMA reported -> stop -> add-fd -> xen-save-devices-state
    /dev/fdset/N live -> remove-fd; dirty log off. Restore: --restore, paused, cont."""
    disk = make_disk(str(tmp_path))
    a = start(["--disk", f"format=raw,vdev=hda,access=rw,target={disk}"])
    hv = a.hv
    mutate(hv)
    ide_enable(hv)
    (r,) = op(a.qmp, ("xen-set-global-dirty-log", {"enable": True}))
    assert r["return"] == {}
    ide_dma_read(hv, 2, 8, 0x70000)
    wait_for(hv, lambda: {0x70} <= hv.state.dirty_pages)
    (stop,) = op(a.qmp, ("stop", None))
    assert stop["return"] == {}
    wait_for(hv, lambda: not hv.state.server_enabled)
    state = tmp_path / "qemu-save.1"
    fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    add, save, rm = op(a.qmp, ("add-fd", {}),
                       ("xen-save-devices-state", {"filename": "/dev/fdset/0", "live": True}),
                       ("remove-fd", {"fdset-id": 0}), fds={0: [fd]})
    os.close(fd)
    assert add["return"]["fdset-id"] == 0 and save == {"return": {}, "id": 3} and rm["return"] == {}
    (off,) = op(a.qmp, ("xen-set-global-dirty-log", {"enable": False}))
    assert off["return"] == {}
    (fds,) = op(a.qmp, ("query-fdsets", None))
    assert fds["return"] == []
    # what the guest would read next in the saved daemon ...
    (cont,) = op(a.qmp, ("cont", None))
    wait_for(hv, lambda: hv.state.server_enabled)
    fp_a = fingerprint(hv)
    a.close()

    b = start(["--restore", str(state), "--disk", f"format=raw,vdev=hda,access=rw,target={disk}"],
              hypervisor=False)
    (st,) = op(b.qmp, ("query-status", None))
    assert st["return"]["status"] == "paused"
    hv = Hypervisor.connect(b.proc.socket_path, process=b.proc, handshake=False)
    b.hv = hv
    hv.hello()
    wait_for(hv, lambda: hv.state.server_created and hv.state.ports.contains(PM_BASE, PM_BASE + 63))
    assert hv.state.ports.contains(BMIBA, BMIBA + 15)
    (cont,) = op(b.qmp, ("cont", None))
    assert cont["return"] == {}
    wait_for(hv, lambda: hv.state.server_enabled)
    hv.add_ram(16 << 20)
    # ... is what the restored one reads
    assert fingerprint(hv) == fp_a
    b.close()


def test_save_through_fdset_opened_read_only_is_refused(tmp_path):
    a = start()
    path = tmp_path / "ro"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    add, save = op(a.qmp, ("add-fd", {"fdset-id": 3}),
                   ("xen-save-devices-state", {"filename": "/dev/fdset/3"}), fds={0: [fd]})
    os.close(fd)
    assert add["return"]["fdset-id"] == 3
    assert save["error"]["class"] == "GenericError" and "fdset 3" in save["error"]["desc"]
    (bad,) = op(a.qmp, ("xen-save-devices-state", {"filename": "/dev/fdset/9"}))
    assert bad["error"]["class"] == "GenericError"
    a.close()


def test_colo_style_load_devices_state(tmp_path):
    """xen-load-devices-state (COLO restore): stop, load, cont."""
    a = start()
    mutate(a.hv)
    fd = os.open(tmp_path / "s", os.O_WRONLY | os.O_CREAT, 0o600)
    op(a.qmp, ("add-fd", {}), ("xen-save-devices-state", {"filename": "/dev/fdset/0"}),
       fds={0: [fd]})
    os.close(fd)
    a.close()
    b = start()
    stop, load, cont = op(b.qmp, ("stop", None),
                          ("xen-load-devices-state", {"filename": str(tmp_path / "s")}),
                          ("cont", None))
    assert load == {"return": {}, "id": 3} and cont["return"] == {}
    hv = b.hv
    wait_for(hv, lambda: [r.fields for r in dmops(hv, DmOp.SET_IOREQ_SERVER_STATE)][-2:]
             == [(0, 0), (0, 1)])
    assert hv.state.server_enabled
    assert hv.state.link_route.get(0) == 10  # PIRQA route re-announced from the state
    op(b.qmp, ("xen-save-devices-state", {"filename": str(tmp_path / "t")}))
    assert machine_of(str(tmp_path / "t")) == machine_of(str(tmp_path / "s"))
    b.close()


def test_cd_change_and_pci_passthrough_requests(tmp_path):
    """libxl's CD insert (add-fd + blockdev-change-medium id=ide-<devnum>) and eject, and
    PCI passthrough hot-add (device_add xen-pci-passthrough, then query-pci): without
    CD-ROM drives or passthrough, clear errors in QEMU's classes."""
    d = start()
    iso = tmp_path / "cd.iso"
    iso.write_bytes(bytes(2048))
    fd = os.open(iso, os.O_RDONLY)
    add, change, eject = op(d.qmp, ("add-fd", {}),
                            ("blockdev-change-medium", {"id": "ide-5632", "filename": "/dev/fdset/0",
                                                        "format": "raw"}),
                            ("eject", {"id": "ide-5632"}), fds={0: [fd]})
    os.close(fd)
    assert change["error"]["class"] == "DeviceNotFound" and eject["error"]["class"] == "DeviceNotFound"
    dev_add, pci = op(d.qmp, ("device_add", {"driver": "xen-pci-passthrough", "id": "pci-pt-03_00.0",
                                             "hostaddr": "0000:03:00.0"}), ("query-pci", None))
    assert dev_add["error"]["class"] == "GenericError"
    assert all(dev["qdev_id"] != "pci-pt-03_00.0" for dev in pci["return"][0]["devices"])
    (rm,) = op(d.qmp, ("device_del", {"id": "pci-pt-03_00.0"}))
    assert rm["error"]["class"] == "DeviceNotFound"
    (hmp,) = op(d.qmp, ("human-monitor-command", {"command-line": "info version"}))
    assert "devmodel" in hmp["return"]
    d.close()


def test_cd_eject_and_insert_through_an_fdset(tmp_path):
    """libxl's CD change on an emulated IDE CD-ROM (hdc = ide-5632): eject, then add-fd +
    blockdev-change-medium /dev/fdset/N, then query-block shows the new medium."""
    iso = tmp_path / "a.iso"
    iso.write_bytes(bytes(2048 * 16))
    try:
        d = start(["--disk", f"vdev=hdc,devtype=cdrom,format=raw,access=ro,target={iso}"])
    except RuntimeError as e:
        pytest.skip(f"no CD-ROM drives in this build: {e}")
    (blk,) = op(d.qmp, ("query-block", None))
    (cd,) = blk["return"]
    assert cd["device"] == "ide1-cd0" and cd["qdev"] == "ide-5632" and cd["removable"]
    assert cd["inserted"]["file"] == str(iso) and cd["inserted"]["ro"] is True
    ej, blk = op(d.qmp, ("eject", {"id": "ide-5632"}), ("query-block", None))
    assert ej["return"] == {} and "inserted" not in blk["return"][0]
    assert blk["return"][0]["tray_open"] is True
    other = tmp_path / "b.iso"
    other.write_bytes(cd_blocks(32))
    fd = os.open(other, os.O_RDONLY)
    add, change, blk = op(d.qmp, ("add-fd", {}),
                          ("blockdev-change-medium", {"id": "ide-5632", "filename": "/dev/fdset/0",
                                                      "format": "raw"}),
                          ("query-block", None), fds={0: [fd]})
    os.close(fd)
    assert change["return"] == {}
    ins = blk["return"][0]["inserted"]
    assert ins["file"] == "/dev/fdset/0" and ins["image"]["virtual-size"] == 2048 * 32
    assert ins["drv"] == "raw"
    assert blk["return"][0]["tray_open"] is False
    # the guest reads the new medium (block 20 is beyond the old one's end)
    assert atapi_read10(d.hv, 20, 2) == cd_blocks(32)[20 * 2048 : 22 * 2048]
    d.close()


def cd_blocks(n: int, seed: int = 0) -> bytes:
    """n 2048-byte CD blocks, each starting with its number (and a per-image seed)."""
    return b"".join(struct.pack("<II", i, seed) + bytes((i + seed + k) & 0xFF for k in range(2040))
                    for i in range(n))


def test_cd_change_to_a_qcow2_medium_goes_through_qemu_nbd(tmp_path):
    """blockdev-change-medium format=qcow2: the medium is served by a private qemu-nbd, as a
    qcow2 start-up disk is; query-block names the format and the guest reads the data the
    image holds (not the qcow2 file's own bytes), then an eject stops the server."""
    if shutil.which("qemu-img") is None or shutil.which("qemu-nbd") is None:
        pytest.skip("qemu-utils is not installed")
    raw = tmp_path / "src.iso"
    raw.write_bytes(cd_blocks(24, seed=3))
    img = tmp_path / "cd.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(img)], check=True)
    d = start(["--disk", "vdev=hdc,devtype=cdrom,format=raw,access=ro,target="])
    change, blk = op(d.qmp, ("blockdev-change-medium", {"id": "ide-5632", "filename": str(img),
                                                         "format": "qcow2"}),
                     ("query-block", None))
    assert change["return"] == {}, change
    ins = blk["return"][0]["inserted"]
    assert ins["drv"] == "qcow2" and ins["file"] == str(img) and ins["ro"] is True
    assert ins["image"]["virtual-size"] == 24 * 2048
    assert atapi_read10(d.hv, 5, 3) == cd_blocks(24, seed=3)[5 * 2048 : 8 * 2048]
    (bad,) = op(d.qmp, ("blockdev-change-medium", {"id": "ide-5632", "filename": str(img),
                                                   "format": "vhdx"}))
    assert bad["error"]["class"] == "GenericError"  # the file is not a vhdx: qemu-nbd refuses it
    (ej,) = op(d.qmp, ("eject", {"id": "ide-5632"}))
    assert ej["return"] == {}
    d.close()


def test_cd_change_with_completions_on_the_loop(tmp_path):
    """With a monotonic clock the new medium's completions run on the daemon's loop (as a
    start-up disk's do): a read the page cache does not hold goes to the disk's thread pool,
    the command stays BSY meanwhile and completes with its interrupt."""
    iso = tmp_path / "a.iso"
    iso.write_bytes(cd_blocks(16))
    d = start(["--clock", "monotonic",
               "--disk", f"vdev=hdc,devtype=cdrom,format=raw,access=ro,target={iso}"])
    other = tmp_path / "b.iso"
    data = cd_blocks(64, seed=9)
    other.write_bytes(data)
    fd = os.open(other, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # make the guest's read a cache miss
    add, change = op(d.qmp, ("add-fd", {}),
                     ("blockdev-change-medium", {"id": "ide-5632", "filename": "/dev/fdset/0"}),
                     fds={0: [fd]})
    os.close(fd)
    assert change["return"] == {}, change
    assert atapi_read10(d.hv, 40, 4) == data[40 * 2048 : 44 * 2048]
    assert atapi_read10(d.hv, 0) == data[:2048]
    d.close()
