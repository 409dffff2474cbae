"""Linux's unplug sequence over a real socket (a real daemon in a thread) against the PC
machine with an IDE disk on a real file and the platform device at 00:02.0: DMA and PIO writes
acknowledged before the unplug are in the file, after it no ioreq reaches the drive, the range
dm_ops the hypervisor saw say what went, and the daemon stays healthy."""

from __future__ import annotations

import os

from dmsupport import inprocess
from xen_helpers import BMIBA, CMD0, IDE_DEVFN, XEN_DEVFN, XEN_IO, Guest, HvPort, make_image, pattern

from devmodel.ide import ata
from devmodel.pc import PcOptions, build_machine_none, build_pc
from devmodel.wire.constants import IO_RANGE_PORT, DmOp
from devmodel.xen import build_xen_platform

NSECT = 256


def factory(img, **platform_kw):
    def build():
        m = build_pc(PcOptions(virtual_clock=True, serial=[], xen_platform=False, vga="none",
                               disks=[f"format=raw, vdev=hda, access=rw, target={img}"]))
        build_xen_platform(m, **platform_kw)
        return m
    return build


def run_guest(tmp_path, mask=1, **platform_kw):
    img = make_image(tmp_path / "disk.img", NSECT)
    return img, inprocess(factory(img, **platform_kw), ram=16 << 20)


def test_linux_sequence_with_writes_in_flight(tmp_path):
    img, ctx = run_guest(tmp_path)
    with ctx as (d, hv):
        g = Guest(HvPort(hv))
        g.program_bars()
        hv.barrier()
        ide_dev = d.machine.device("piix3-ide")
        backend = ide_dev.drive(0, 0).backend
        # a DMA write storm, then PIO writes, all acknowledged
        for i in range(24):
            g.dma_write(8 * i, pattern(8, seed=i + 1))
        g.pio_write(NSECT - 1, pattern(1, seed=99))
        g.dma_write_issue(200, pattern(4, seed=77))  # in flight: never acknowledged
        before = len(hv.state.dmops)
        assert g.linux_unplug(1) == "unplugged"
        hv.barrier()
        data = img.read_bytes()
        for i in range(24):
            assert data[8 * i * 512 : (8 * i + 8) * 512] == pattern(8, seed=i + 1), i
        assert data[(NSECT - 1) * 512 :] == pattern(1, seed=99)
        assert data[200 * 512 : 204 * 512] == pattern(NSECT)[200 * 512 : 204 * 512]
        # the backend is closed: no path from the emulated side reaches the image
        assert getattr(backend, "_raw", backend)._fd is None and backend not in d.machine.backends
        unmaps = [(r.fields[2], r.fields[3], r.fields[4]) for r in hv.state.dmops[before:]
                  if r.op == DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER]
        assert unmaps == [(IO_RANGE_PORT, BMIBA, BMIBA + 15)]
        # absent-drive values; the legacy ports stay (the controller stays, for a CD-ROM)
        assert g.status() == 0 and hv.pio_read(CMD0 + 1, 1) == 0
        assert hv.pio_read(CMD0, 2) == 0xFFFF
        hv.pio_write(CMD0 + 7, 1, ata.CMD_WRITE)
        hv.pio_write(CMD0, 2, 0x5555)
        # touching the old BAR4 and the platform device afterwards
        hv.pio_write(BMIBA, 1, ata.BM_CMD_START)
        assert hv.pio_read(BMIBA + 2, 1) == 0xFF
        assert hv.pci_cfg_read(IDE_DEVFN, 0, 4) == 0x7010_8086
        assert g.linux_unplug(1) == "unplugged"  # again: nothing left, nothing breaks
        hv.barrier()
        assert img.read_bytes() == data
        m = d.machine
        assert m.counters["device_failure"] == 0
        assert hv.pci_cfg_read(XEN_DEVFN, 0, 4) == 0x0001_5853  # healthy daemon


def test_blacklisted_driver_keeps_its_disks(tmp_path):
    img, ctx = run_guest(tmp_path, blacklist=[3])
    with ctx as (d, hv):
        g = Guest(HvPort(hv))
        g.program_bars()
        assert g.linux_unplug(1) == "blacklist"
        hv.pio_write(0x10, 2, 1)  # a driver that does not look at the answer
        g.pio_write(4, pattern(1, seed=4))
        hv.barrier()
        assert img.read_bytes()[4 * 512 : 5 * 512] == pattern(1, seed=4)
        assert d.machine.device("piix3-ide").drive(0, 0).present


def test_protocol_version_mismatch(tmp_path):
    """A driver that wants the XenServer version-2 protocol asks at 0x13 and reads the
    version: it gets 1 (upstream), so a v2-only driver stops; the v2 per-device ports do
    nothing; Linux's v1 driver then works."""
    img, ctx = run_guest(tmp_path)
    with ctx as (d, hv):
        g = Guest(HvPort(hv))
        g.program_bars()
        hv.pio_write(0x13, 1, 2)
        assert hv.pio_read(0x12, 1) == 1
        hv.pio_write(0x11, 1, 1)  # v2: "unplug IDE disk"...
        hv.pio_write(0x13, 1, 0)  # ...index 0
        hv.barrier()
        assert d.machine.device("piix3-ide").drive(0, 0).present
        assert g.linux_unplug(1) == "unplugged"


def test_machine_none_claims_nothing(tmp_path):
    with inprocess(lambda: build_machine_none(PcOptions(virtual_clock=True)), ram=1 << 20) as (d, hv):
        hv.barrier()
        assert len(hv.state.ports) == 0 and len(hv.state.mmio) == 0 and len(hv.state.pci) == 0
        assert hv.pio_read(0x10, 2) == 0xFFFF  # were Xen to forward anything: nobody home
        assert d.machine.devices == []


def test_platform_bars_reach_the_hypervisor(tmp_path):
    img, ctx = run_guest(tmp_path)
    with ctx as (d, hv):
        Guest(HvPort(hv)).program_bars()
        hv.barrier()
        assert hv.state.ports.contains(0x10, 0x1F)
        assert hv.state.ports.contains(XEN_IO, XEN_IO + 0xFF)
        assert hv.state.mmio.contains(0xF0000000, 0xF0FFFFFF)
        assert hv.state.pci.contains(XEN_DEVFN, XEN_DEVFN)
        assert os.path.exists(img)


SLOW = 0.6  # seconds each write of the slow disk takes


def test_unplug_waits_for_the_dma_in_flight_on_a_slow_disk(tmp_path):
    """QEMU's disk unplug starts with blk_drain + blk_flush: a WRITE DMA the backend is still
    working on completes (its data reaches the image) before the drive goes, the port write
    that asked for the unplug returns only then, and the controller reset that follows leaves
    the guest no completion (no IRQ, the bus master gone). Monotonic clock: disk I/O really is
    asynchronous here (a worker thread that sleeps, as tests/e2e/test_ide_integrity.py)."""
    import time

    img = make_image(tmp_path / "disk.img", NSECT)

    def build():
        m = build_pc(PcOptions(virtual_clock=False, serial=[], xen_platform=False, vga="none",
                               disks=[f"format=raw, vdev=hda, access=rw, target={img}"]))
        build_xen_platform(m)
        disk = m.device("piix3-ide").drive(0, 0).backend
        inner = disk._do_write

        def slow_write(*a, **kw):  # on the disk's worker thread
            time.sleep(SLOW)
            inner(*a, **kw)

        disk._do_write = slow_write
        return m

    with inprocess(build, ram=16 << 20) as (d, hv):
        g = Guest(HvPort(hv))
        g.program_bars()
        backend = d.machine.device("piix3-ide").drive(0, 0).backend
        g.dma_write(8, pattern(4, seed=5))  # acknowledged (slowly)
        g.dma_write_issue(100, pattern(8, seed=6))
        t0 = time.monotonic()
        hv.pio_write(BMIBA, 1, ata.BM_CMD_START)
        assert hv.pio_read(BMIBA + 2, 1) & ata.BM_STATUS_ACTIVE  # in flight
        assert hv.pio_read(CMD0 + 7, 1) & ata.BUSY_STAT
        assert g.linux_unplug(1) == "unplugged"
        waited = time.monotonic() - t0
        hv.barrier()
        data = img.read_bytes()
        assert data[8 * 512 : 12 * 512] == pattern(4, seed=5)
        assert data[100 * 512 : 108 * 512] == pattern(8, seed=6)  # drained, then flushed
        assert waited >= SLOW * 0.9, waited  # the unplug ended after the write (vCPU waited)
        assert getattr(backend, "_raw", backend)._fd is None
        hv.poll(SLOW)  # a late completion, if any, would arrive now
        hv.barrier()
        assert hv.state.isa_irq.get(14, 0) == 0  # no completion interrupt for the guest
        assert hv.pio_read(BMIBA + 2, 1) == 0xFF  # BAR4 unmapped by the controller reset
        assert g.status() == 0  # an empty position
        assert img.read_bytes() == data
        assert d.machine.counters["device_failure"] == 0
        assert hv.pci_cfg_read(IDE_DEVFN, 0, 4) == 0x7010_8086  # the controller stays
