"""Asynchronous disk I/O in the IDE device: commands in flight, seen through QueuedCompletions.

A ThreadedRawDisk with a QueuedCompletions port does the I/O on its worker thread and holds
the completion until the test runs it, so the guest-visible state in between (BSY, the bus
master's Active bit, no interrupt yet, writes ignored) can be looked at, as a vCPU polling
the drive on the daemon would see it."""

from __future__ import annotations

import errno

import pytest
from ide_helpers import (
    CD_BLOCK,
    Rig,
    cdb,
    file_bytes,
    iso_bytes,
    make_image,
    make_iso,
    pattern,
    request_sense,
    send_packet,
)

from devmodel.backends.asyncdisk import QueuedCompletions, ThreadedRawDisk
from devmodel.ide import Cdrom, ata

OK = ata.READY_STAT | ata.SEEK_STAT
BSY = ata.BUSY_STAT
TABLE = 0x1000
INT = ata.BM_STATUS_INT
ACTIVE = ata.BM_STATUS_ACTIVE


class FailingThreadedDisk(ThreadedRawDisk):
    def _do_read(self, offset, views):
        raise OSError(errno.EIO, "injected EIO")

    def _do_write(self, offset, views, fua=False):
        raise OSError(errno.EIO, "injected EIO")


def queued_rig(tmp_path, nsectors=64, cls=ThreadedRawDisk):
    img = make_image(tmp_path / "disk.img", nsectors)
    q = QueuedCompletions()
    disk = cls(img, completions=q)
    r = Rig({(0, 0): disk})
    return r, q, img, disk


def complete(q: QueuedCompletions, n: int = 1) -> None:
    assert q.wait(n), "the backend request did not finish"
    assert q.run_pending() == n


def test_read_dma_in_flight_shows_bsy_and_active(tmp_path):
    r, q, _, disk = queued_rig(tmp_path)
    r.prd_table(TABLE, [(0x20000, 4096)])
    r.bm_setup(TABLE, to_memory=True)
    r.taskfile(8, 8)
    r.command(ata.CMD_READ_DMA)
    r.bm_start(to_memory=True)  # the ioreq returns with the read in flight
    assert r.altstatus() & BSY
    assert r.bm_status() == ACTIVE
    assert r.irqs() == []
    assert q.wait(1)
    assert r.altstatus() & BSY  # the data is there, but nobody told the device yet
    assert q.run_pending() == 1
    assert r.irqs() == [(14, 1)]
    assert r.bm_status() == INT
    assert r.status() == OK
    assert r.ram(0x20000, 4096) == pattern(64)[8 * 512 : 16 * 512]
    disk.close()


def test_write_dma_in_flight_then_acknowledged(tmp_path):
    r, q, img, disk = queued_rig(tmp_path)
    payload = bytes((i * 5) & 0xFF for i in range(2048))
    r.poke(0x50000, payload)
    r.prd_table(TABLE, [(0x50000, 2048)])
    r.bm_setup(TABLE, to_memory=False)
    r.taskfile(3, 4)
    r.command(ata.CMD_WRITE_DMA)
    r.bm_start(to_memory=False)
    assert r.altstatus() & BSY and r.bm_status() & ACTIVE
    complete(q)
    assert r.irqs() == [(14, 1)] and r.status() == OK
    assert file_bytes(img, 3 * 512, 2048) == payload
    disk.close()


def test_pio_read_each_block_waits_for_its_completion(tmp_path):
    r, q, _, disk = queued_rig(tmp_path)
    r.taskfile(5, 2)
    r.command(ata.CMD_READ)
    assert r.altstatus() & BSY and not r.altstatus() & ata.DRQ_STAT
    assert r.inp(0x1F0, 2) == 0xFFFF  # no data phase yet
    complete(q)
    assert r.irqs() == [(14, 1)]
    assert r.altstatus() == OK | ata.DRQ_STAT
    assert r.read_block(0x30000, 512) == pattern(64)[5 * 512 : 6 * 512]
    assert r.altstatus() & BSY  # the second sector is being read
    complete(q)
    assert r.read_block(0x30000, 512) == pattern(64)[6 * 512 : 7 * 512]
    assert r.status() == OK
    disk.close()


def test_pio_write_block_in_flight_then_next_drq(tmp_path):
    r, q, img, disk = queued_rig(tmp_path)
    r.taskfile(9, 2)
    r.command(ata.CMD_WRITE)
    assert r.altstatus() == OK | ata.DRQ_STAT
    r.poke(0x30000, b"\xaa" * 512 + b"\xbb" * 512)
    r.rep_outs(0x1F0, 0x30000, 256)
    assert r.altstatus() & BSY
    r.rep_outs(0x1F0, 0x30200, 256)  # while BSY: dropped and counted
    assert r.dev.counters["write_while_busy"] == 1
    complete(q)
    assert r.altstatus() == OK | ata.DRQ_STAT
    r.rep_outs(0x1F0, 0x30200, 256)
    complete(q)
    assert r.status() == OK
    assert file_bytes(img, 9 * 512, 1024) == b"\xaa" * 512 + b"\xbb" * 512
    disk.close()


def test_commands_and_task_file_writes_while_busy_are_ignored(tmp_path):
    r, q, _, disk = queued_rig(tmp_path)
    r.command(ata.CMD_FLUSH_CACHE)
    assert r.altstatus() & BSY
    r.out(0x1F3, 0x55)  # task file: dropped
    r.command(ata.CMD_IDENTIFY)  # command: dropped
    assert r.dev.counters["write_while_busy"] == 2
    complete(q)
    assert r.irqs() == [(14, 1)] and r.status() == OK
    assert r.inp(0x1F3) != 0x55
    disk.close()


def test_read_error_completes_with_unc(tmp_path):
    r, q, _, disk = queued_rig(tmp_path, cls=FailingThreadedDisk)
    r.taskfile(0, 1)
    r.command(ata.CMD_READ)
    assert r.altstatus() & BSY
    complete(q)
    assert r.irqs() == [(14, 1)]
    assert r.status() == ata.READY_STAT | ata.ERR_STAT
    assert r.error() == ata.UNC_ERR
    assert r.dev.counters["backend_read_error"] == 1
    # a DMA write error: ABRT, bus master stopped
    r.prd_table(TABLE, [(0x50000, 512)])
    r.bm_setup(TABLE, to_memory=False)
    r.taskfile(0, 1)
    r.command(ata.CMD_WRITE_DMA)
    r.bm_start(to_memory=False)
    complete(q)
    assert r.status() == ata.READY_STAT | ata.ERR_STAT and r.error() == ata.ABRT_ERR
    assert not r.bm_status() & ACTIVE
    disk.close()


def test_srst_drains_and_drops_the_completion(tmp_path):
    r, q, _, disk = queued_rig(tmp_path)
    r.taskfile(0, 1)
    r.command(ata.CMD_READ)
    assert r.altstatus() & BSY
    r.devctl(ata.CTRL_SRST)
    r.devctl(0)
    assert disk.inflight == 0  # drained before the reset went on
    assert r.inp(0x1F2) == 1 and r.inp(0x1F3) == 1  # the signature
    r.irqs()
    assert q.run_pending() == 1  # the old completion: dropped
    assert r.dev.counters["io_completion_dropped"] == 1
    assert r.irqs() == [] and not r.altstatus() & (BSY | ata.DRQ_STAT)
    # the drive works again
    r.taskfile(2, 1)
    r.command(ata.CMD_READ)
    complete(q)
    assert r.read_block(0x30000, 512) == pattern(64)[2 * 512 : 3 * 512]
    disk.close()


def test_bus_master_stop_settles_the_transfer(tmp_path):
    """QEMU ide_cancel_dma_sync: the transfer cannot be cut, so it finishes during the stop."""
    r, q, _, disk = queued_rig(tmp_path)
    r.prd_table(TABLE, [(0x20000, 512)])
    r.bm_setup(TABLE, to_memory=True)
    r.taskfile(1, 1)
    r.command(ata.CMD_READ_DMA)
    r.bm_start(to_memory=True)
    assert r.altstatus() & BSY
    r.bm_stop()
    assert r.bm_status() == INT and r.status() == OK
    assert r.ram(0x20000, 512) == pattern(64)[512:1024]
    assert q.queued == 0
    disk.close()


def test_snapshot_settles_io_in_flight(tmp_path):
    r, q, _, disk = queued_rig(tmp_path)
    r.command(ata.CMD_FLUSH_CACHE)
    assert r.altstatus() & BSY
    q.wait(1)
    snap = r.dev.snapshot()
    assert not r.altstatus() & BSY
    assert not snap["state"]["ide_state"]["channels"][0]["drives"][0]["status"] & BSY
    disk.close()


def test_trim_through_the_data_port_in_flight(tmp_path):
    r, q, img, disk = queued_rig(tmp_path)
    r.taskfile48(0, 1)
    r.out(0x1F1, ata.DSM_TRIM)
    r.command(ata.CMD_DSM)
    entries = (4 | 2 << 48).to_bytes(8, "little") + (10 | 1 << 48).to_bytes(8, "little")
    r.poke(0x30000, entries.ljust(512, b"\0"))
    r.rep_outs(0x1F0, 0x30000, 256)
    assert r.altstatus() & BSY
    complete(q, 1)  # first range
    assert r.altstatus() & BSY
    complete(q, 1)  # second range
    assert r.status() == OK
    assert file_bytes(img, 4 * 512, 1024) == bytes(1024)
    assert file_bytes(img, 10 * 512, 512) == bytes(512)
    assert file_bytes(img, 6 * 512, 512) == pattern(64)[6 * 512 : 7 * 512]
    disk.close()


# ---- ATAPI -----------------------------------------------------------------------------
def cd_rig(tmp_path, nblocks=16):
    iso = make_iso(tmp_path / "cd.iso", nblocks)
    q = QueuedCompletions()
    medium = ThreadedRawDisk(iso, readonly=True, completions=q)
    return Rig({(1, 0): Cdrom(medium)}), q, medium


def clear_unit_attention(r):
    request_sense(r)


def test_atapi_pio_read_in_flight(tmp_path):
    r, q, medium = cd_rig(tmp_path)
    send_packet(r, cdb(0x28, 0, 0, 0, 0, 3, 0, 0, 1), ch=1)  # READ(10) block 3
    assert r.altstatus(1) & BSY
    complete(q)
    assert r.altstatus(1) == OK | ata.DRQ_STAT
    assert r.inp(0x174) | r.inp(0x175) << 8 == CD_BLOCK
    r.rep_ins(0x170, 0x40000, CD_BLOCK // 2)
    assert r.ram(0x40000, CD_BLOCK) == iso_bytes(16)[3 * CD_BLOCK : 4 * CD_BLOCK]
    assert r.status(1) == OK
    medium.close()


def test_atapi_read_error_is_medium_error(tmp_path):
    iso = make_iso(tmp_path / "cd.iso", 16)
    q = QueuedCompletions()
    medium = FailingThreadedDisk(iso, readonly=True, completions=q)
    r = Rig({(1, 0): Cdrom(medium)})
    send_packet(r, cdb(0x28, 0, 0, 0, 0, 0, 0, 0, 1), ch=1)
    complete(q)
    assert r.status(1) & ata.ERR_STAT
    assert r.error(1) >> 4 == 3  # MEDIUM ERROR
    r.inp(0x177)
    key, asc, _ = request_sense(r)
    assert (key, asc) == (3, 0x11)
    medium.close()


def test_atapi_dma_read_in_flight(tmp_path):
    r, q, medium = cd_rig(tmp_path)
    r.prd_table(TABLE, [(0x60000, 2 * CD_BLOCK)])
    r.bm_setup(TABLE, to_memory=True, ch=1)
    send_packet(r, cdb(0x28, 0, 0, 0, 0, 5, 0, 0, 2), ch=1, dma=True)
    r.bm_start(to_memory=True, ch=1)
    assert r.altstatus(1) & BSY and r.bm_status(1) & ACTIVE
    complete(q)
    assert r.bm_status(1) == INT and r.status(1) == OK
    assert r.ram(0x60000, 2 * CD_BLOCK) == iso_bytes(16)[5 * CD_BLOCK : 7 * CD_BLOCK]
    medium.close()


@pytest.mark.parametrize("busy_cmd", [ata.CMD_DEVICE_RESET])
def test_atapi_device_reset_is_taken_while_busy(tmp_path, busy_cmd):
    r, q, medium = cd_rig(tmp_path)
    send_packet(r, cdb(0x28, 0, 0, 0, 0, 0, 0, 0, 1), ch=1)
    assert r.altstatus(1) & BSY
    r.command(busy_cmd, ch=1)
    assert not r.altstatus(1) & BSY
    assert (r.inp(0x174), r.inp(0x175)) == (ata.ATAPI_SIG_LCYL, ata.ATAPI_SIG_HCYL)
    q.run_pending()
    assert r.dev.counters["io_completion_dropped"] == 1
    medium.close()
