"""USB mass storage on the asynchronous disk port (devmodel.backends.asyncdisk), the IDE disks'
backends: no disk I/O inside an ioreq. Completions are held in a QueuedCompletions port, so the
test sees the device while a read or write is in flight: data-in packets and the CSW are NAKed
(the TDs stay active with NAK set), the host controller retries them every frame, and a reset
or unplug drops the old command's completion."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest
from uhci_driver import ACTIVE, ERRMASK, HEAP, IN, NAKBIT, OUT, QH_ADDR, T, UhciDriver

from devmodel.backends.asyncdisk import QueuedCompletions, ThreadedRawDisk
from devmodel.usb import UsbMassStorage, unplug_usb
from devmodel.usb.storage import MODE_CBW

ADDR = 2
NSECT = 256


def make(tmp_path, **kw):
    img = tmp_path / "stick.img"
    img.write_bytes(os.urandom(NSECT * 512))
    port = QueuedCompletions()
    disk = ThreadedRawDisk(img, completions=port, **kw)
    msd = UsbMassStorage(disk)
    d = UhciDriver([msd])
    d.reset_port(0)
    d.enumerate(ADDR)
    return d, msd, disk, port, img


def cbw(op: int, lba: int, nsect: int, dir_in: bool, tag: int = 1) -> bytes:
    cdb = struct.pack(">BBIBHB", op, 0, lba, 0, nsect, 0)
    return struct.pack("<IIIBBB16s", 0x43425355, tag, nsect * 512, 0x80 if dir_in else 0, 0,
                       len(cdb), cdb.ljust(16, b"\0"))


def schedule(d: UhciDriver, packets: list[tuple[int, int, bytes | int]]) -> list:
    """One depth-first chain: (pid, endpoint, OUT data or IN length) per TD, toggles from the
    driver's bookkeeping."""
    d.heap = HEAP
    tds = []
    for pid, ep, what in packets:
        key = (ADDR, ep | (0x80 if pid == IN else 0))
        tog = d.toggles.get(key, 0)
        d.toggles[key] = tog ^ 1
        if pid == OUT:
            assert isinstance(what, bytes)
            tds.append(d.make_td(OUT, ADDR, ep, tog, len(what), what))
        else:
            assert isinstance(what, int)
            tds.append(d.make_td(IN, ADDR, ep, tog, what))
    d.chain(tds)
    d.w32(QH_ADDR + 4, tds[0].addr)
    return tds


def run_until_nak(d: UhciDriver, tds: list, frames: int = 20):
    """Frames until the chain waits on a NAKed TD; returns it (None if the chain finished)."""
    for _ in range(frames):
        d.step(1)
        for td in tds:
            c = d.ctrl_of(td)
            assert not (c & ERRMASK and not c & ACTIVE), f"TD failed: {c:#x}"
        active = [td for td in tds if d.ctrl_of(td) & ACTIVE]
        if not active:
            return None
        if d.ctrl_of(active[0]) & NAKBIT:
            return active[0]
    raise AssertionError("the chain neither finished nor waited")


def settle(port: QueuedCompletions) -> None:
    assert port.wait(1)
    port.run_pending()


def test_read_naks_until_the_backend_read_completes(tmp_path):
    d, msd, disk, port, img = make(tmp_path)
    nsect = 8
    tds = schedule(d, [(OUT, 2, cbw(0x28, 16, nsect, True))]
                   + [(IN, 1, 64)] * (nsect * 512 // 64) + [(IN, 1, 13)])
    waiting = run_until_nak(d, tds)
    assert waiting is tds[1] and msd.rd_pending  # the first data packet waits for the disk
    d.step(5)  # still in flight: the same TD is retried every frame, nothing moves
    assert d.ctrl_of(tds[1]) & ACTIVE and msd.rd_pending
    settle(port)
    assert run_until_nak(d, tds) is None
    got = b"".join(bytes(d.mem.read(td.buf, 64) or b"") for td in tds[1:-1])
    assert got == img.read_bytes()[16 * 512 : (16 + nsect) * 512]
    sig, tag, residue, status = struct.unpack("<IIIB", d.mem.read(tds[-1].buf, 13))
    assert (sig, residue, status) == (0x53425355, 0, 0)
    assert not msd.counters


def test_write_naks_the_overflowing_packet_and_the_csw_until_written(tmp_path):
    d, msd, disk, port, img = make(tmp_path)
    nsect = 130  # 65 KiB: one full 64 KiB chunk, then 1 KiB more
    data = os.urandom(nsect * 512)
    tds = schedule(d, [(OUT, 2, cbw(0x2A, 4, nsect, False))]
                   + [(OUT, 2, data[i : i + 64]) for i in range(0, len(data), 64)] + [(IN, 1, 13)])
    waiting = run_until_nak(d, tds, frames=200)
    # the first chunk is on its way; the last packet would need a second write: NAKed
    assert waiting is tds[-2] and msd.wr_pending == 1
    settle(port)
    waiting = run_until_nak(d, tds)
    assert waiting is tds[-1] and msd.wr_pending == 1  # the CSW waits for the second write
    settle(port)
    assert run_until_nak(d, tds) is None
    sig, tag, residue, status = struct.unpack("<IIIB", d.mem.read(tds[-1].buf, 13))
    assert (sig, residue, status) == (0x53425355, 0, 0)
    assert img.read_bytes()[4 * 512 : (4 + nsect) * 512] == data


def test_a_reset_drops_the_old_reads_completion(tmp_path):
    d, msd, disk, port, img = make(tmp_path)
    tds = schedule(d, [(OUT, 2, cbw(0x28, 0, 1, True))] + [(IN, 1, 64)] * 8 + [(IN, 1, 13)])
    assert run_until_nak(d, tds) is tds[1]
    d.w32(QH_ADDR + 4, T)
    d.reset_port(0)  # the host gives up on the command: a bus reset
    assert msd.mode == MODE_CBW and not msd.rd_pending
    assert port.wait(1)  # the old read is done; its completion arrives now
    port.run_pending()
    assert msd.rd_buf == b"" and not msd.rd_pending  # dropped: another generation
    d.toggles.clear()
    d.enumerate(ADDR)
    tds = schedule(d, [(OUT, 2, cbw(0x28, 8, 1, True, tag=2))] + [(IN, 1, 64)] * 8 + [(IN, 1, 13)])
    assert run_until_nak(d, tds) is tds[1] and msd.rd_pending
    settle(port)
    assert run_until_nak(d, tds) is None
    got = b"".join(bytes(d.mem.read(td.buf, 64) or b"") for td in tds[1:-1])
    assert got == img.read_bytes()[8 * 512 : 9 * 512]


def test_unplug_with_a_read_in_flight(tmp_path):
    d, msd, disk, port, img = make(tmp_path)
    d.m.own(msd, disk)
    tds = schedule(d, [(OUT, 2, cbw(0x28, 0, 8, True))] + [(IN, 1, 64)] * 64 + [(IN, 1, 13)])
    assert run_until_nak(d, tds) is tds[1]
    assert unplug_usb(d.m, msd)  # releases the backend: drains the read, then closes
    assert disk.inflight == 0 and not msd.rd_pending and msd.mode == MODE_CBW
    port.run_pending()  # the completion of the unplugged command: dropped
    assert msd.rd_buf == b"" and msd.port_unplug is None


@pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-nbd")),
                    reason="needs qemu-img and qemu-nbd (qemu-utils)")
def test_qcow2_stick_through_qemu_nbd(tmp_path):
    """`--usb disk:format=qcow2:PATH` (QEMU's legacy syntax): the image goes through qemu-nbd
    as an IDE disk's does; a read returns the image's data, a write lands in the qcow2."""
    raw = tmp_path / "src.raw"
    raw.write_bytes(os.urandom(NSECT * 512))
    q = tmp_path / "stick.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)], check=True)
    d = UhciDriver([f"disk:format=qcow2:{q}"])
    msd = d.uhci.ports[0]
    assert msd.is_async and msd.backend in d.m.backends
    d.reset_port(0)
    d.enumerate(ADDR)
    tds = schedule(d, [(OUT, 2, cbw(0x28, 32, 2, True))] + [(IN, 1, 64)] * 16 + [(IN, 1, 13)])
    assert run_until_nak(d, tds, frames=200) is None
    got = b"".join(bytes(d.mem.read(td.buf, 64) or b"") for td in tds[1:-1])
    assert got == raw.read_bytes()[32 * 512 : 34 * 512]
    data = os.urandom(1024)
    tds = schedule(d, [(OUT, 2, cbw(0x2A, 100, 2, False, tag=2))]
                   + [(OUT, 2, data[i : i + 64]) for i in range(0, 1024, 64)] + [(IN, 1, 13)])
    assert run_until_nak(d, tds, frames=200) is None
    assert struct.unpack("<IIIB", d.mem.read(tds[-1].buf, 13))[3] == 0
    assert unplug_usb(d.m, msd)  # flushes and closes: qemu-nbd goes
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(q), str(back)], check=True)
    assert back.read_bytes()[100 * 512 : 102 * 512] == data
    assert back.read_bytes()[:100 * 512] == raw.read_bytes()[:100 * 512]


def test_synchronize_cache_csw_waits_for_the_flush(tmp_path):
    d, msd, disk, port, img = make(tmp_path)
    cdb = bytes([0x35]) + bytes(9)
    sync = struct.pack("<IIIBBB16s", 0x43425355, 9, 0, 0, 0, len(cdb), cdb.ljust(16, b"\0"))
    tds = schedule(d, [(OUT, 2, sync), (IN, 1, 13)])
    assert run_until_nak(d, tds) is tds[1] and msd.wr_pending == 1  # no fdatasync in the ioreq
    settle(port)
    assert run_until_nak(d, tds) is None
    sig, tag, residue, status = struct.unpack("<IIIB", d.mem.read(tds[-1].buf, 13))
    assert (sig, tag, status) == (0x53425355, 9, 0)
