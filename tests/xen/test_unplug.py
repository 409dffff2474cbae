"""Unplug as a machine operation: QEMU's choice of devices, what happens to each, and the
awkward cases (twice, mid-command, stale BARs, passthrough)."""

from __future__ import annotations

from xen_helpers import (
    BMIBA,
    CMD0,
    CMD1,
    IDE_DEVFN,
    Guest,
    MachinePort,
    ide_machine,
    make_image,
    pattern,
)

from devmodel.backends.disk import RawFileDisk
from devmodel.backends.net import NetBackend
from devmodel.ide import ata
from devmodel.nic import build_e1000
from devmodel.wire.constants import IO_RANGE_PCI, IO_RANGE_PORT, DmOp

NIC_SLOT = 4
NIC_DEVFN = NIC_SLOT << 3
OK = ata.READY_STAT | ata.SEEK_STAT


class FakeNet(NetBackend):
    kind = "fake"

    def __init__(self):
        super().__init__()
        self.closed = False
        self.sent = []

    def _send_one(self, frame):
        self.sent.append(frame)

    def close(self):
        self.closed = True
        super().close()


def disks(tmp_path, positions):
    return {pos: RawFileDisk(make_image(tmp_path / f"d{pos[0]}{pos[1]}.img")) for pos in positions}


def setup(tmp_path, positions=((0, 0),), nic=False, **kw):
    m, ide, plat = ide_machine(disks(tmp_path, positions), **kw)
    net = None
    if nic:
        net = FakeNet()
        build_e1000(m, NIC_SLOT, "00:16:3e:00:00:01", net, rom=None, name="nic0")
    g = Guest(MachinePort(m))
    g.program_bars()
    if nic:
        g.p.cfg_write(NIC_DEVFN, 0x10, 4, 0xF1000000)
        g.p.cfg_write(NIC_DEVFN, 0x04, 2, 0x0007)
    heard = []
    m.unplug_listeners.append(lambda dev_id, kind: heard.append((dev_id, kind)))
    m.announcing = True  # range changes become dm_ops, as once the hypervisor knows them
    m.outbox.clear()
    return m, ide, plat, g, net, heard


def range_ops(m):
    out = [(op, f[2], f[3], f[4]) for op, f, _ in m.outbox
           if op in (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER)]
    m.outbox.clear()
    return out


def test_all_disks_keeps_the_controller(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0), (0, 1), (1, 1)])
    g.pio_write(5, pattern(1, seed=9))
    backends = [ide.drive(c, u).backend for c, u in [(0, 0), (0, 1), (1, 1)]]
    assert all(b in m.backends for b in backends)
    assert g.linux_unplug(1) == "unplugged"
    assert heard == [("ide0-hd0", "disk"), ("ide0-hd1", "disk"), ("ide1-hd1", "disk")]
    assert all(b._fd is None and b not in m.backends for b in backends)
    assert not any(d.present for ch in ide.channels for d in ch.drives)
    # The controller stays (config space still answers), reset as pci_device_reset does:
    assert g.p.cfg_read(IDE_DEVFN, 0, 4) == 0x7010_8086
    assert g.p.cfg_read(IDE_DEVFN, 0x04, 2) == 0
    assert range_ops(m) == [(DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER, IO_RANGE_PORT, BMIBA,
                             BMIBA + 15)]
    # An empty channel: status/error/task file read 0, the data port all-ones (QEMU)
    assert g.status(0) == 0 and g.status(1) == 0
    assert g.p.inp(CMD0 + 1) == 0 and g.p.inp(CMD0 + 4) == 0
    assert g.p.inp(CMD0, 2) == 0xFFFF
    g.p.out(CMD0 + 7, ata.CMD_IDENTIFY)
    assert g.status(0) == 0
    # the write acknowledged before the unplug is in the file
    assert (tmp_path / "d00.img").read_bytes()[5 * 512 : 6 * 512] == pattern(1, seed=9)
    assert plat.reports[-1].removed == heard


def test_aux_keeps_the_primary_master(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0), (0, 1), (1, 0)])
    assert g.linux_unplug(4) == "unplugged"
    assert heard == [("ide0-hd1", "disk"), ("ide1-hd0", "disk")]
    assert ide.drive(0, 0).present
    g.program_bars()  # the reset cleared the controller's BARs; the driver sets them again
    g.pio_write(2, pattern(1, seed=3))
    assert (tmp_path / "d00.img").read_bytes()[1024:1536] == pattern(1, seed=3)
    # the bit 0 overrides aux
    assert g.linux_unplug(5) == "unplugged"
    assert heard[-1] == ("ide0-hd0", "disk")


def test_nvme_bit_alone_takes_ide_disks_as_qemu(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0)])
    g.p.out(0x10, 8, 2)
    assert heard == [("ide0-hd0", "disk")]


def test_cdrom_is_never_unplugged(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0), (1, 0)])
    ide.drive(1, 0).unplug_kind = "cdrom"  # the drive protocol an ATAPI drive follows
    g.p.out(0x10, 1, 2)
    assert heard == [("ide0-hd0", "disk")]
    assert ide.drive(1, 0).present and ide.drive(1, 0).backend is not None


def test_real_atapi_cdrom_stays_and_works(tmp_path):
    from devmodel.ide.atapi import Cdrom

    iso = RawFileDisk(make_image(tmp_path / "cd.iso", 64), readonly=True)
    d = disks(tmp_path, [(0, 0)])
    d[(1, 0)] = Cdrom(iso)
    m, ide, plat = ide_machine(d)
    g = Guest(MachinePort(m))
    g.program_bars()
    heard = []
    m.unplug_listeners.append(lambda i, k: heard.append((i, k)))
    assert g.linux_unplug(1) == "unplugged"
    assert heard == [("ide0-hd0", "disk")]
    cd = ide.drive(1, 0)
    assert cd.is_cd and cd.present and cd.backend is iso and iso._fd is not None
    # the CD-ROM answers: ATAPI signature after the controller reset
    g.p.out(CMD1 + 6, 0xA0)
    assert (g.p.inp(CMD1 + 4), g.p.inp(CMD1 + 5)) == (0x14, 0xEB)


def test_nics_go_whole(tmp_path):
    m, ide, plat, g, net, heard = setup(tmp_path, [(0, 0)], nic=True)
    nic = m.device("nic0")
    assert g.p.mmio_read(0xF1000000 + 0x8, 4) != 0xFFFFFFFF  # STATUS
    assert g.linux_unplug(2) == "unplugged"
    assert heard == [("nic0", "nic")]
    assert net.closed and net not in m.backends
    assert g.p.cfg_read(NIC_DEVFN, 0, 4) == 0xFFFFFFFF
    assert g.p.mmio_read(0xF1000000 + 0x8, 4) == 0xFFFFFFFF
    ops = range_ops(m)
    assert (DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER, IO_RANGE_PCI, NIC_DEVFN, NIC_DEVFN) in ops
    assert any(op == DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER and start == 0xF1000000
               for op, _, start, _ in ops)
    assert nic not in m.devices and ide.drive(0, 0).present  # disks untouched by bit 1
    assert not any(t.deadline is not None and getattr(t.callback, "__self__", None) is nic
                   for _, _, t in m.clock._heap)
    # the IRQ line is released: the INTx source is low
    assert all(v == 0 for k, v in m.irqs.levels().items() if "nic0" in k)


def test_unplug_twice_and_late(tmp_path):
    m, ide, plat, g, net, heard = setup(tmp_path, [(0, 0)], nic=True)
    assert g.linux_unplug(3) == "unplugged"
    n = len(heard)
    m.outbox.clear()
    assert g.linux_unplug(3) == "unplugged"  # Linux after resume: finds nothing left
    g.p.out(0x10, 7, 2)
    g.p.out(0x10, 0xFFFF, 2)
    assert len(heard) == n and plat.reports[-1].removed == []
    assert range_ops(m) == []
    assert m.counters["device_failure"] == 0


def test_unplug_with_a_command_in_flight(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0)])
    g.dma_write(0, pattern(2, seed=1))  # acknowledged
    g.dma_write_issue(8, pattern(2, seed=2))  # WRITE DMA issued, bus master not started
    assert g.status() & ata.DRQ_STAT
    g.p.cfg_write(IDE_DEVFN, 0x04, 2, 0)  # nothing special about command; unplug now
    g.p.out(0x10, 1, 2)
    g.p.out(BMIBA, ata.BM_CMD_START)  # the stale start: BAR4 is unmapped, nothing moves
    img = (tmp_path / "d00.img").read_bytes()
    assert img[:1024] == pattern(2, seed=1)
    assert img[8 * 512 : 10 * 512] == pattern(64)[8 * 512 : 10 * 512]  # never acknowledged
    assert g.status() == 0


def test_half_written_pio_block_is_dropped(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0)])
    g.taskfile(3, 1)
    g.p.out(CMD0 + 7, ata.CMD_WRITE)
    for _ in range(100):
        g.p.out(CMD0, 0xABCD, 2)
    g.p.out(0x10, 1, 2)
    for _ in range(156):
        g.p.out(CMD0, 0xABCD, 2)  # the rest of the block goes nowhere
    assert (tmp_path / "d00.img").read_bytes()[3 * 512 : 4 * 512] == pattern(64)[3 * 512 : 4 * 512]


def test_old_bars_after_unplug_are_harmless(tmp_path):
    m, ide, plat, g, net, heard = setup(tmp_path, [(0, 0)], nic=True)
    g.p.out(0x10, 3, 2)
    m.outbox.clear()
    for port in (BMIBA, BMIBA + 2, BMIBA + 4, CMD1 + 7):
        g.p.inp(port, 1)
        g.p.out(port, 0xFF, 1)
    g.p.mmio_write(0xF1000000 + 0x400, 4, 0x2)  # TCTL of the removed NIC
    g.p.cfg_write(NIC_DEVFN, 0x10, 4, 0xF2000000)
    g.p.cfg_write(NIC_DEVFN, 0x04, 2, 7)
    assert g.p.cfg_read(NIC_DEVFN, 0x10, 4) == 0xFFFFFFFF
    assert range_ops(m) == []
    assert net.sent == []
    assert m.counters["device_failure"] == 0


def test_passthrough_functions_are_skipped(tmp_path):
    m, ide, plat, g, net, heard = setup(tmp_path, [(0, 0)], nic=True)
    m.device("nic0").passthrough = True
    g.p.out(0x10, 2, 2)
    assert heard == [] and not net.closed


def test_legacy_bar0_hooks(tmp_path):
    m, ide, plat, g, net, heard = setup(tmp_path, [(0, 0)], nic=True)
    from xen_helpers import XEN_IO

    g.p.out(XEN_IO + 8, 2, 1)  # old VMDP: NICs only
    assert heard == [("nic0", "nic")]
    g.p.out(XEN_IO + 4, 0, 1)  # offset 4 with anything but 1: nothing
    assert len(heard) == 1
    g.p.out(XEN_IO + 4, 1, 1)  # SUSE xen-kmp: disks and NICs
    assert heard[-1] == ("ide0-hd0", "disk")
    assert [r.source for r in plat.reports] == ["bar0", "bar0"]


def test_summary_listener(tmp_path):
    m, ide, plat, g, _, heard = setup(tmp_path, [(0, 0)])
    got = []
    plat.summary_listeners.append(got.append)
    g.linux_unplug(1)
    (r,) = got
    assert (r.mask, r.source, r.product, r.build, r.refused) == (1, "port", 3, 1, None)
    assert r.removed == [("ide0-hd0", "disk")]


def test_nic_rom_mapping_and_memfd_go_with_the_nic(tmp_path):
    """The e1000's iPXE ROM is memory the hypervisor maps at the ROM BAR (a daemon MEM_ADD of
    a memfd): unplugging the NIC unmaps it (MEM_DEL) and closes the memfd with the tap."""
    import os

    import pytest

    from devmodel.core.machine import OUTBOX_MEM_ADD, OUTBOX_MEM_DEL
    from devmodel.core.pci import REGION_ROM_BASE
    from devmodel.nic import E1000_ROMS

    rom = next((p for p in E1000_ROMS if os.path.exists(p)), None)
    if rom is None:
        pytest.skip("no e1000 option ROM (apt-get install ipxe-qemu)")
    m, ide, plat = ide_machine(disks(tmp_path, [(0, 0)]))
    net = FakeNet()
    build_e1000(m, NIC_SLOT, "00:16:3e:00:00:01", net, rom=rom, name="nic0")
    mem = next(b for b in m.backends if getattr(b, "name", "").startswith("devmodel-rom-nic0"))
    g = Guest(MachinePort(m))
    g.program_bars()
    m.announcing = True
    g.p.cfg_write(NIC_DEVFN, 0x30, 4, 0xFEB00000 | 1)  # ROM BAR enabled
    g.p.cfg_write(NIC_DEVFN, 0x04, 2, 0x0002)
    rid = REGION_ROM_BASE | NIC_DEVFN
    assert [f[0] for op, f, _ in m.outbox if op == OUTBOX_MEM_ADD] == [rid]
    m.outbox.clear()
    assert g.linux_unplug(2) == "unplugged"
    assert [f for op, f, _ in m.outbox if op == OUTBOX_MEM_DEL] == [(rid,)]
    assert net.closed and mem not in m.backends
    with pytest.raises(OSError):
        os.fstat(mem.fd)  # closed
