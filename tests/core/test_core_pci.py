"""PCI configuration space: masks (QEMU pci_init_wmask / w1cmask), BAR and ROM sizing,
decode rules, and the bus turning BAR/command changes into range changes."""

from __future__ import annotations

import pytest
from dmsupport import BAR_DEVFN, BAR_SLOT, BarDevice

from devmodel.core.bus import ALL_SIZES
from devmodel.core.machine import Machine
from devmodel.core.pci import Bar, PciDevice
from devmodel.wire.constants import IO_RANGE_MEMORY, IO_RANGE_PCI, IO_RANGE_PORT, DmOp


def nop_r(off, size):
    return 0


def nop_w(off, size, value):
    return None


def machine_with(*devs_slots):
    m = Machine()
    for dev, slot in devs_slots:
        m.add(dev, slot=slot)
    return m


def cfg_r(m, devfn, off, size):
    return m.pci.config_read(devfn, off, size)


def cfg_w(m, devfn, off, size, v):
    m.pci.config_write(devfn, off, size, v)


def size_bar(m, devfn, off, pattern=0xFFFFFFFF):
    old = cfg_r(m, devfn, off, 4)
    cfg_w(m, devfn, off, 4, pattern)
    v = cfg_r(m, devfn, off, 4)
    cfg_w(m, devfn, off, 4, old)
    return v


def test_identity_and_readonly_ids():
    m = machine_with((BarDevice(), BAR_SLOT))
    cfg_w(m, BAR_DEVFN, 0, 4, 0)
    cfg_w(m, BAR_DEVFN, 8, 4, 0)
    assert cfg_r(m, BAR_DEVFN, 0, 4) == 0x56781234
    assert cfg_r(m, BAR_DEVFN, 8, 4) == 0xFF000001
    assert cfg_r(m, BAR_DEVFN, 0x2C, 4) == 0x11001AF4
    assert cfg_r(m, BAR_DEVFN, 0x3D, 1) == 1  # pin, read-only
    cfg_w(m, BAR_DEVFN, 0x3D, 1, 3)
    assert cfg_r(m, BAR_DEVFN, 0x3D, 1) == 1
    cfg_w(m, BAR_DEVFN, 0x3C, 1, 0x0B)  # interrupt line, writable
    assert cfg_r(m, BAR_DEVFN, 0x3C, 1) == 0x0B


def test_command_wmask_0x0507():
    m = machine_with((BarDevice(), BAR_SLOT))
    cfg_w(m, BAR_DEVFN, 4, 2, 0xFFFF)
    assert cfg_r(m, BAR_DEVFN, 4, 2) == 0x0507
    cfg_w(m, BAR_DEVFN, 5, 1, 0x00)
    assert cfg_r(m, BAR_DEVFN, 4, 2) == 0x0007


def test_status_w1c():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    dev.config[6:8] = (0xF900 | 0x0200 | 0x0010).to_bytes(2, "little")
    cfg_w(m, BAR_DEVFN, 6, 2, 0x2000)  # clear received master abort only
    assert cfg_r(m, BAR_DEVFN, 6, 2) == 0xD910 | 0x0200
    cfg_w(m, BAR_DEVFN, 6, 2, 0xFFFF)  # error bits clear; DEVSEL / cap list are read-only
    assert cfg_r(m, BAR_DEVFN, 6, 2) == 0x0210
    cfg_w(m, BAR_DEVFN, 4, 4, 0xFFFF0000)  # dword write: command 0, w1c all status
    assert cfg_r(m, BAR_DEVFN, 6, 2) == 0x0210


def test_bar_and_rom_sizing_values():
    m = machine_with((BarDevice(), BAR_SLOT))
    assert size_bar(m, BAR_DEVFN, 0x10) == 0xFFFFFFF1  # 16-byte I/O
    assert size_bar(m, BAR_DEVFN, 0x14) == 0  # unimplemented
    assert size_bar(m, BAR_DEVFN, 0x18) == 0xFFFFC004  # 16 KiB, 64-bit, non-prefetch
    assert size_bar(m, BAR_DEVFN, 0x1C) == 0xFFFFFFFF  # upper half of the 64-bit BAR
    assert size_bar(m, BAR_DEVFN, 0x20) == 0
    assert size_bar(m, BAR_DEVFN, 0x24) == 0
    assert size_bar(m, BAR_DEVFN, 0x30, 0xFFFFF800) == 0xFFFFF800  # 2 KiB ROM
    assert size_bar(m, BAR_DEVFN, 0x30, 0xFFFFFFFF) == 0xFFFFF801  # with the enable bit
    # sizing restores the old values
    assert cfg_r(m, BAR_DEVFN, 0x10, 4) == 1 and cfg_r(m, BAR_DEVFN, 0x18, 4) == 4


@pytest.mark.parametrize(
    "bar, expect_lo, expect_hi",
    [
        (Bar(0, 4, True, nop_r, nop_w), 0xFFFFFFFD, None),
        (Bar(0, 256, True, nop_r, nop_w), 0xFFFFFF01, None),
        (Bar(0, 16, False, nop_r, nop_w), 0xFFFFFFF0, None),
        (Bar(0, 1 << 20, False, nop_r, nop_w, prefetch=True), 0xFFF00008, None),
        (Bar(0, 1 << 20, False, nop_r, nop_w, prefetch=True, is64=True), 0xFFF0000C, 0xFFFFFFFF),
        (Bar(0, 1 << 33, False, nop_r, nop_w, prefetch=True, is64=True), 0x0000000C, 0xFFFFFFFE),
        (Bar(0, 1 << 32, False, nop_r, nop_w, is64=True), 0x00000004, 0xFFFFFFFF),
    ],
)
def test_sizing_patterns(bar, expect_lo, expect_hi):
    dev = PciDevice("d", vendor_id=1, device_id=2, class_code=0)
    dev.add_bar(bar)
    m = machine_with((dev, 4))
    assert size_bar(m, 4 << 3, 0x10) == expect_lo
    if expect_hi is not None:
        assert size_bar(m, 4 << 3, 0x14) == expect_hi


def test_invalid_bars_refused():
    with pytest.raises(ValueError):
        Bar(0, 24, True, nop_r, nop_w)
    with pytest.raises(ValueError):
        Bar(0, 8, False, nop_r, nop_w)
    dev = PciDevice("d", vendor_id=1, device_id=2, class_code=0)
    dev.add_bar(Bar(1, 16, False, nop_r, nop_w, is64=True))
    with pytest.raises(ValueError):
        dev.add_bar(Bar(2, 16, False, nop_r, nop_w))  # upper half of BAR1
    with pytest.raises(ValueError):
        dev.add_bar(Bar(5, 16, False, nop_r, nop_w, is64=True))


def _program(m, io=0xC000, mem=0xFEB00000, mem_hi=0, rom=0xFEB40000, cmd=0x3):
    cfg_w(m, BAR_DEVFN, 0x10, 4, io)
    cfg_w(m, BAR_DEVFN, 0x18, 4, mem)
    cfg_w(m, BAR_DEVFN, 0x1C, 4, mem_hi)
    cfg_w(m, BAR_DEVFN, 0x30, 4, rom | 1)
    cfg_w(m, BAR_DEVFN, 4, 2, cmd)


def test_decode_follows_command_bits():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    _program(m, cmd=0)
    assert m.pci.mapped(dev) == {}
    cfg_w(m, BAR_DEVFN, 4, 2, 1)
    assert {i: (r.start, r.length) for i, r in m.pci.mapped(dev).items()} == {0: (0xC000, 16)}
    cfg_w(m, BAR_DEVFN, 4, 2, 2)
    assert {i: (r.start, r.length) for i, r in m.pci.mapped(dev).items()} == {
        2: (0xFEB00000, 0x4000), 6: (0xFEB40000, 0x800)}
    assert m.pci.mapped(dev)[2].sizes == ALL_SIZES


def test_rom_needs_enable_bit_and_reads_rom_bytes():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    _program(m)
    assert m.mmio.read(0xFEB40000, 4) == 0x03020100
    assert m.mmio.read(0xFEB40000 + 0x7FE, 2) == 0xFFFE
    m.mmio.write(0xFEB40000, 4, 0)  # ROM writes are guest errors, counted by the device
    assert dev.counters
    cfg_w(m, BAR_DEVFN, 0x30, 4, 0xFEB40000)
    assert 6 not in m.pci.mapped(dev)


@pytest.mark.parametrize("io, mem, hi", [
    (0, 0xFEB00000, 0),  # BAR value 0: unmapped
    (0x10000, 0xFFFFC000, 0xFFFFFFFF),  # I/O BAR past 64 KiB; memory at the top of 64-bit space
])
def test_unmapped_bar_addresses(io, mem, hi):
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    _program(m, io=io, mem=mem, mem_hi=hi)
    assert 0 not in m.pci.mapped(dev)
    if hi:
        assert 2 not in m.pci.mapped(dev)


def test_64bit_bar_above_4g():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    _program(m, mem=0x0, mem_hi=0x8)
    assert m.pci.mapped(dev)[2].start == 0x8_0000_0000
    assert m.mmio.read(0x8_0000_0010, 4) == 0xA210


def test_32bit_bar_touching_4g_is_unmapped():
    dev = PciDevice("d", vendor_id=1, device_id=2, class_code=0)
    dev.add_bar(Bar(0, 0x1000, False, nop_r, nop_w))
    m = machine_with((dev, 4))
    cfg_w(m, 4 << 3, 0x10, 4, 0xFFFFF000)
    cfg_w(m, 4 << 3, 4, 2, 2)
    assert m.pci.mapped(dev) == {}
    cfg_w(m, 4 << 3, 0x10, 4, 0xFFFFE000)
    assert m.pci.mapped(dev)[0].start == 0xFFFFE000


def test_overlapping_bars_counted_not_fatal():
    a, b = BarDevice(), BarDevice()
    b.name = "bardev2"
    m = Machine()
    m.add(a, slot=BAR_SLOT)
    m.add(b, slot=4)
    for devfn in (BAR_DEVFN, 4 << 3):
        cfg_w(m, devfn, 0x10, 4, 0xC000)
        cfg_w(m, devfn, 4, 2, 1)
    assert 0 in m.pci.mapped(a) and 0 not in m.pci.mapped(b)
    assert m.counters["guest_error"] >= 1
    cfg_w(m, 4 << 3, 0x10, 4, 0xC100)  # moved away: now it maps
    assert m.pci.mapped(b)[0].start == 0xC100


def test_bar_move_reported_as_unmap_then_map_when_announcing():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    m.start_announcing()
    m.outbox.clear()
    _program(m, cmd=1)
    assert m.outbox == [(DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, (0, 0, IO_RANGE_PORT, 0xC000, 0xC00F), None)]
    m.outbox.clear()
    cfg_w(m, BAR_DEVFN, 0x10, 4, 0xC040)
    assert m.outbox == [
        (DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER, (0, 0, IO_RANGE_PORT, 0xC000, 0xC00F), None),
        (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, (0, 0, IO_RANGE_PORT, 0xC040, 0xC04F), None),
    ]
    m.outbox.clear()
    cfg_w(m, BAR_DEVFN, 0x10, 4, 0xC040)  # same value: no churn
    assert m.outbox == []


def test_pci_device_added_after_announcing_is_claimed():
    m = Machine()
    m.start_announcing()
    m.add(BarDevice(), slot=BAR_SLOT)
    assert (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, (0, 0, IO_RANGE_PCI, BAR_DEVFN, BAR_DEVFN), None) in m.outbox
    assert (IO_RANGE_PCI, BAR_DEVFN, BAR_DEVFN) in m.claimed()
    assert IO_RANGE_MEMORY not in {k for k, _, _ in m.claimed()}


def test_reset_clears_command_bars_rom_and_unmaps():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    _program(m)
    cfg_w(m, BAR_DEVFN, 0x3C, 1, 0x0A)
    m.reset()
    assert cfg_r(m, BAR_DEVFN, 4, 2) == 0
    assert cfg_r(m, BAR_DEVFN, 0x10, 4) == 1 and cfg_r(m, BAR_DEVFN, 0x18, 4) == 4
    assert cfg_r(m, BAR_DEVFN, 0x1C, 4) == 0 and cfg_r(m, BAR_DEVFN, 0x30, 4) == 0
    assert cfg_r(m, BAR_DEVFN, 0x3C, 1) == 0
    assert m.pci.mapped(dev) == {}


def test_intx_status_bit_and_disable():
    dev = BarDevice()
    m = machine_with((dev, BAR_SLOT))
    dev.set_irq(1)
    assert m.outbox[-1] == (DmOp.SET_PCI_INTX_LEVEL, (0, 0, BAR_SLOT, 0, 1), None)
    assert cfg_r(m, BAR_DEVFN, 6, 2) & 0x08
    cfg_w(m, BAR_DEVFN, 4, 2, 0x400)  # INTx disable: line drops, status still shows it
    assert m.outbox[-1] == (DmOp.SET_PCI_INTX_LEVEL, (0, 0, BAR_SLOT, 0, 0), None)
    assert cfg_r(m, BAR_DEVFN, 6, 2) & 0x08
    cfg_w(m, BAR_DEVFN, 4, 2, 0)
    assert m.outbox[-1] == (DmOp.SET_PCI_INTX_LEVEL, (0, 0, BAR_SLOT, 0, 1), None)
    dev.set_irq(0)
    assert not cfg_r(m, BAR_DEVFN, 6, 2) & 0x08


def test_capability_list():
    dev = PciDevice("d", vendor_id=1, device_id=2, class_code=0)
    dev.add_capability(0x05, 0x50, 14)
    dev.add_capability(0x11, 0x60, 12)
    m = machine_with((dev, 4))
    devfn = 4 << 3
    assert cfg_r(m, devfn, 6, 2) & 0x10
    assert cfg_r(m, devfn, 0x34, 1) == 0x60
    assert cfg_r(m, devfn, 0x60, 2) == 0x5011
    assert cfg_r(m, devfn, 0x50, 2) == 0x0005
    cfg_w(m, devfn, 0x60, 2, 0)  # id and next are read-only
    assert cfg_r(m, devfn, 0x60, 2) == 0x5011
    with pytest.raises(ValueError):
        dev.add_capability(1, 0x30, 4)


def test_multifunction_bit_and_absent_functions():
    m = Machine()
    f0 = PciDevice("f0", vendor_id=1, device_id=2, class_code=0)
    f1 = PciDevice("f1", vendor_id=1, device_id=3, class_code=0)
    m.add(f0, slot=5)
    assert cfg_r(m, 5 << 3, 0x0E, 1) == 0
    m.add(f1, slot=5, fn=1)
    assert cfg_r(m, 5 << 3, 0x0E, 1) == 0x80
    assert cfg_r(m, 5 << 3 | 2, 0, 4) == 0xFFFFFFFF
    assert cfg_r(m, 5 << 3, 0xFE, 4) == 0xFFFFFFFF  # past the 256-byte space
    with pytest.raises(ValueError):
        m.add(PciDevice("dup", vendor_id=1, device_id=2, class_code=0), slot=5)
    with pytest.raises(ValueError):
        m.add(PciDevice("noslot", vendor_id=1, device_id=2, class_code=0))


# ---- expansion ROM as memory the hypervisor maps (PciDevice.share_rom, protocol.md 4.7) ----
def _rom_device(rom: bytes, size: int | None = None) -> tuple[Machine, BarDevice]:
    from devmodel.backends.memfd import share_rom

    dev = BarDevice()
    dev.set_rom(rom, size)
    m = machine_with((dev, BAR_SLOT))
    assert share_rom(m, dev, "test-rom")
    m.start_announcing()
    m.outbox.clear()
    return m, dev


def _regions(m: Machine) -> list[tuple]:
    from devmodel.core.machine import OUTBOX_MEM_ADD

    out = [(op, fields[:4] if op == OUTBOX_MEM_ADD else fields) for op, fields, _ in m.outbox
           if op < 0]
    m.outbox.clear()
    return out


def test_shared_rom_is_mapped_memory_not_a_trapped_range():
    import os

    from devmodel.core.machine import OUTBOX_MEM_ADD, OUTBOX_MEM_DEL
    from devmodel.core.pci import REGION_ROM_BASE
    from devmodel.wire.constants import MEM_RAM, MEM_READONLY

    rom = bytes(range(256)) * 24  # 6 KiB: an 8 KiB ROM BAR
    m, dev = _rom_device(rom)
    rid = REGION_ROM_BASE | BAR_DEVFN
    assert size_bar(m, BAR_DEVFN, 0x30) == 0xFFFFE001  # sizing unchanged (enable bit too)
    _program(m)
    assert 6 not in m.pci.mapped(dev) and m.mmio.find(0xFEB40000) is None
    assert all(not s <= 0xFEB40000 <= e for t, s, e in m.claimed() if t == IO_RANGE_MEMORY)
    assert _regions(m) == [(OUTBOX_MEM_ADD, (rid, 0xFEB40000, 0x2000, MEM_RAM | MEM_READONLY))]
    fd = dev.rom_fd
    assert fd is not None
    assert os.pread(fd, 0x2000, 0) == rom + b"\0" * 0x800  # what the hypervisor maps
    cfg_w(m, BAR_DEVFN, 0x30, 4, 0xFEB40001)  # the same address again: nothing new
    assert _regions(m) == []
    cfg_w(m, BAR_DEVFN, 0x30, 4, 0xFEB50001)  # moved: the same id again
    assert _regions(m) == [(OUTBOX_MEM_ADD, (rid, 0xFEB50000, 0x2000, MEM_RAM | MEM_READONLY))]
    cfg_w(m, BAR_DEVFN, 0x30, 4, 0xFEB50000)  # enable bit off
    assert _regions(m) == [(OUTBOX_MEM_DEL, (rid,))]
    cfg_w(m, BAR_DEVFN, 0x30, 4, 0xFEB50001)
    m.reset()  # a reset disables the ROM BAR
    assert _regions(m) == [(OUTBOX_MEM_ADD, (rid, 0xFEB50000, 0x2000, MEM_RAM | MEM_READONLY)),
                           (OUTBOX_MEM_DEL, (rid,))]
    m.pci.config_write(BAR_DEVFN, 0x30, 4, 0xFEB50001)
    m.pci.config_write(BAR_DEVFN, 4, 2, 2)
    m.pci.remove(dev)  # hot-unplug takes the mapping away too
    assert _regions(m)[-1] == (OUTBOX_MEM_DEL, (rid,))


def test_shared_rom_before_announcing_goes_with_hello():
    from devmodel.backends.memfd import share_rom

    dev = BarDevice()
    dev.set_rom(bytes(4096))
    m = machine_with((dev, BAR_SLOT))
    assert share_rom(m, dev, "test-rom")
    _program(m)
    assert _regions(m) == []  # not announcing yet: the HELLO exchange sends it
    assert [(r.gpa, r.size) for r in dev.shared_regions()] == [(0xFEB40000, 0x1000)]
    m.start_announcing()
    cfg_w(m, BAR_DEVFN, 0x30, 4, 0xFEB40001)
    assert _regions(m) == []  # the hypervisor already has it there


def test_rom_smaller_than_a_page_stays_trapped():
    from devmodel.backends.memfd import share_rom

    dev = BarDevice()  # a 2 KiB ROM
    m = machine_with((dev, BAR_SLOT))
    assert not share_rom(m, dev, "test-rom") and dev.rom_fd is None
    with pytest.raises(ValueError):
        dev.share_rom(0)
    _program(m)
    assert m.mmio.read(0xFEB40000, 4) == 0x03020100
