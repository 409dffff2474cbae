"""VRAM as shared memory: BAR0 is not claimed while shared, and every BAR0 move becomes a
share_region (MEM_ADD, same region id) or unshare_region effect; snapshot round trip."""

from __future__ import annotations

import mmap

import pytest
from vgahelp import MODE3, Bus, make, set_mode

from devmodel.core.clock import Clock
from devmodel.core.device import SnapshotError
from devmodel.core.machine import OUTBOX_MEM_ADD, OUTBOX_MEM_DEL, Machine
from devmodel.core.memory import GuestMemory
from devmodel.vga import build_vga, text_screen
from devmodel.vga import regs as R
from devmodel.vga.render import capture
from devmodel.wire.constants import IO_RANGE_MEMORY, MEM_RAM, MEM_VRAM


def shared():
    m, dev = make(16, shared=True, sharing_machine=True)
    m.start_announcing()
    m.outbox.clear()
    return m, dev, Bus(m)


def test_shared_vram_is_a_memfd_and_bar0_is_never_claimed() -> None:
    m, dev, bus = shared()
    assert dev.shared and isinstance(dev.vram, mmap.mmap)
    bus.cfg_write(0x10, 0xFD000000)
    bus.cfg_write(0x18, 0xFEBF0000)
    bus.cfg_write(0x04, 0x3, 2)
    assert m.mmio.find(0xFD000000) is None  # LFB writes do not trap
    assert m.mmio.find(0xFEBF0400) is not None  # BAR2 does
    assert m.mmio.find(0xB8000) is not None  # and the legacy window
    claimed = [(s, e) for t, s, e in m.claimed() if t == IO_RANGE_MEMORY]
    assert all(not (s <= 0xFD000000 <= e) for s, e in claimed)
    kind, region = m.shared_log[-1]
    assert kind == "add"
    assert (region.region_id, region.gpa, region.size, region.fd, region.flags) == (
        R.REGION_VRAM, 0xFD000000, 16 << 20, dev.vram_fd, MEM_RAM | MEM_VRAM)


def test_bar0_moves_and_unmaps_are_reported() -> None:
    m, dev, bus = shared()
    bus.cfg_write(0x10, 0xFD000000)
    bus.cfg_write(0x04, 0x2, 2)
    bus.cfg_write(0x10, 0xE0000000)  # moved while decoding
    bus.cfg_write(0x10, 0xE0000000)  # no change: nothing new
    bus.cfg_write(0x04, 0x0, 2)  # memory decode off
    bus.cfg_write(0x10, 0xFFFFFFFF)  # sizing while off: nothing
    assert bus.cfg_read(0x10) == 0xFF000008
    bus.cfg_write(0x10, 0xD0000000)
    bus.cfg_write(0x04, 0x2, 2)
    log = [(k, r.gpa if k == "add" else r) for k, r in m.shared_log]
    assert log == [("add", 0xFD000000), ("add", 0xE0000000), ("del", R.REGION_VRAM),
                   ("add", 0xD0000000)]
    m.reset()  # a reset stops BAR0 decoding
    assert m.shared_log[-1] == ("del", R.REGION_VRAM)
    assert bus.cfg_read(0x10) == 0x8  # type bits back


def test_nothing_is_reported_before_announcing_but_hello_sees_the_region() -> None:
    m, dev = make(16, shared=True, sharing_machine=True)
    bus = Bus(m)
    assert dev.shared_regions() == []
    bus.cfg_write(0x10, 0xFD000000)
    bus.cfg_write(0x04, 0x2, 2)
    assert m.shared_log == []
    assert [r.gpa for r in dev.shared_regions()] == [0xFD000000]
    m.start_announcing()
    bus.cfg_write(0x10, 0xFD000000)
    assert m.shared_log == []  # the hypervisor already has it there


@pytest.mark.parametrize("how", ["no fd", "no share_region"])
def test_without_sharing_support_bar0_is_trapped(how: str) -> None:
    if how == "no fd":
        m, dev = make(16, shared=False)  # VRAM in a bytearray: nothing to share
    else:
        m = NoShareMachine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
        dev = build_vga(m, 2, 16, rom_path=None, shared=True)
    bus = Bus(m)
    assert not dev.shared
    bus.cfg_write(0x10, 0xFD000000)
    bus.cfg_write(0x04, 0x2, 2)
    assert m.mmio.find(0xFD000000) is not None
    bus.writeb(0xFD000010, 0xAB)
    assert dev.vram[0x10] == 0xAB


class NoShareMachine(Machine):
    """A machine that cannot share memory with its hypervisor."""

    share_region = None
    unshare_region = None


def test_the_machine_queues_region_effects_in_order_with_the_dm_ops() -> None:
    m, dev = make(16, shared=True)  # the real Machine.share_region / unshare_region
    m.start_announcing()
    m.outbox.clear()
    bus = Bus(m)
    bus.cfg_write(0x10, 0xFD000000)
    bus.cfg_write(0x04, 0x2, 2)
    bus.cfg_write(0x10, 0xE0000000)
    bus.cfg_write(0x04, 0x0, 2)
    effects = [(op, f) for op, f, _ in m.outbox if op < 0]
    assert effects == [
        (OUTBOX_MEM_ADD, (R.REGION_VRAM, 0xFD000000, 16 << 20, MEM_RAM | MEM_VRAM, dev.vram_fd)),
        (OUTBOX_MEM_ADD, (R.REGION_VRAM, 0xE0000000, 16 << 20, MEM_RAM | MEM_VRAM, dev.vram_fd)),
        (OUTBOX_MEM_DEL, (R.REGION_VRAM,)),
    ]
    with pytest.raises(ValueError):
        m.unshare_region(5)  # not a daemon region id


@pytest.mark.parametrize("use_shared", [False, True])
def test_snapshot_round_trip(use_shared: bool) -> None:
    m, dev = make(4, shared=use_shared, sharing_machine=use_shared)
    m.start_announcing()
    bus = Bus(m)
    set_mode(bus, MODE3)
    for i, ch in enumerate(b"SNAPSHOT"):
        bus.writeb(0xB8000 + 2 * i, 0x0700 | ch, 2)
    bus.dac(3, (1, 2, 3))
    bus.vbe(R.VBE_INDEX_XRES, 800)
    bus.cfg_write(0x10, 0xE0000000)
    bus.cfg_write(0x04, 0x2, 2)
    snap = dev.snapshot()
    before = (capture(dev), dict(snap["state"]))
    # mutate
    bus.writeb(0xB8000, 0x0758, 2)
    bus.seq(2, 0x0F)
    bus.dac(3, (9, 9, 9))
    bus.cfg_write(0x10, 0xD0000000)
    dev.restore(snap)
    m.pci.update_mappings(dev)
    after = capture(dev)
    assert after == before[0]
    assert text_screen(after)[0] == "SNAPSHOT"
    assert dev.snapshot()["state"] == before[1]
    if use_shared:
        assert m.shared_log[-1][1].gpa == 0xE0000000


def test_restore_rejects_bad_state() -> None:
    import zlib

    m, dev = make(1)
    snap = dev.snapshot()
    bad = {**snap, "state": {**snap["state"], "vram_z": b"not zlib"}}
    with pytest.raises(SnapshotError):
        dev.restore(bad)
    bad = {**snap, "state": {**snap["state"], "vram_z": zlib.compress(bytes(100))}}  # too short
    with pytest.raises(SnapshotError):
        dev.restore(bad)
    bad = {**snap, "state": {**snap["state"], "cr": b"\0" * 3}}
    with pytest.raises(SnapshotError):
        dev.restore(bad)
    hostile = {**snap, "state": {**snap["state"], "sr_index": 0x99, "vbe_regs": [0xFFFFF] * 10}}
    dev.restore(hostile)
    assert dev.sr_index == 1 and dev.bank_offset < dev.vram_size
