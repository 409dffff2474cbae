"""Snapshot -> mutate -> restore -> equal, in the middle of a PIO transfer and of a DMA
command, and restore treated as input (hostile-guest-catalog entry 44)."""

from __future__ import annotations

import copy

import pytest
from ide_helpers import Rig, make_image, pattern

from devmodel.backends.disk import RawFileDisk
from devmodel.core.device import SnapshotError
from devmodel.ide import ata

BUF = 0x20000


def test_round_trip_mid_pio_read(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.out(0x1F2, 4)
    r.command(ata.CMD_SET_MULTIPLE)
    r.taskfile(2, 6)
    r.command(ata.CMD_READ_MULTIPLE)
    r.rep_ins(0x1F0, BUF, 300)  # part-way through the first 4-sector block
    r.devctl(ata.CTRL_NIEN)
    snap = r.m.snapshot()
    saved = copy.deepcopy(snap)
    rest = 6 * 256 - 300

    r.rep_ins(0x1F0, BUF + 600, rest)  # mutate: finish the command, change registers
    first = r.ram(BUF, 6 * 512)
    r.devctl(0)
    r.taskfile(40, 1)
    r.out(r.bm() + 4, 0x12340, 4)
    assert r.dev.snapshot() != snap["devices"]["piix3-ide"]

    r.m.restore(snap)
    assert r.m.snapshot() == saved  # restore -> equal
    r.poke(BUF + 600, bytes(rest * 2))
    r.rep_ins(0x1F0, BUF + 600, rest)
    assert r.ram(BUF, 6 * 512) == first == pattern(64)[2 * 512 : 8 * 512]
    assert r.status() == ata.READY_STAT | ata.SEEK_STAT


def test_round_trip_dma_waiting_for_start(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    r.prd_table(0x1000, [(0x30000, 1024)])
    r.bm_setup(0x1000, to_memory=True)
    r.taskfile(9, 2)
    r.command(ata.CMD_READ_DMA)
    snap = r.m.snapshot()
    r.bm_start(to_memory=True)  # mutate: run it
    r.status()
    r.m.restore(snap)
    r.poke(0x30000, bytes(1024))
    assert r.altstatus() == ata.READY_STAT | ata.SEEK_STAT | ata.DRQ_STAT
    r.bm_start(to_memory=True)
    assert r.bm_status() == ata.BM_STATUS_INT
    assert r.ram(0x30000, 1024) == pattern(64)[9 * 512 : 11 * 512]


def test_restore_validates(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    good = r.dev.snapshot()

    def broken(edit):
        snap = copy.deepcopy(good)
        edit(snap["state"]["ide_state"]["channels"][0])
        return snap

    bad = [
        lambda ch: ch["drives"][0].update(pos=10_000, end=10_000),
        lambda ch: ch["drives"][0].update(end=512, pos=513),
        lambda ch: ch["drives"][0].update(status=0x1FF),
        lambda ch: ch["drives"][0].update(buf=b"short"),
        lambda ch: ch["drives"][0].update(nb_sectors=65),  # a different disk
        lambda ch: ch.update(unit=2),
        lambda ch: ch.update(dma_unit=-2),
        lambda ch: ch.update(drives=[]),
    ]
    for edit in bad:
        with pytest.raises(SnapshotError):
            r.dev.restore(broken(edit))
    r.dev.restore(good)
    assert r.dev.snapshot() == good


def test_snapshot_of_two_channel_machine_is_plain_data(tmp_path):
    img0 = make_image(tmp_path / "a.img", 8)
    img1 = make_image(tmp_path / "b.img", 8)
    r = Rig({(0, 0): RawFileDisk(img0), (1, 1): RawFileDisk(img1)})
    snap = r.dev.snapshot()

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return isinstance(v, (int, bytes, str, bool))

    assert plain(snap)
    assert [len(c["drives"]) for c in snap["state"]["ide_state"]["channels"]] == [2, 2]
