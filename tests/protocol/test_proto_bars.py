"""BAR programming over a real socket, the way firmware does it: size, program, enable, move,
disable. The hypervisor side must see exactly the unmap of the old range and the map of the new
one (its `state.ports` / `state.mmio`), and accesses must reach the device only where it is."""

from __future__ import annotations

import pytest
from dmsupport import BAR_DEVFN, inprocess

from devmodel.wire.constants import IO_RANGE_MEMORY, IO_RANGE_PORT, DmOp

IO_OLD, IO_NEW = 0xC000, 0xC100
MEM_OLD, MEM_NEW = 0xFEB00000, 0x8_0000_0000
ROM_AT = 0xFEB40000


@pytest.fixture
def env():
    with inprocess() as (d, hv):
        yield d, hv, d.machine.device("bardev")


def range_ops(hv, since):
    out = []
    for r in hv.state.dmops[since:]:
        if r.op in (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER):
            what = "map" if r.op == DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER else "unmap"
            assert r.rc == 0, r
            out.append((what, r.fields[2], r.fields[3], r.fields[4]))
    return out


def size_like_firmware(hv, off, pattern=0xFFFFFFFF):
    old = hv.pci_cfg_read(BAR_DEVFN, off, 4)
    hv.pci_cfg_write(BAR_DEVFN, off, 4, pattern)
    v = hv.pci_cfg_read(BAR_DEVFN, off, 4)
    hv.pci_cfg_write(BAR_DEVFN, off, 4, old)
    return v


def program_and_enable(hv):
    hv.pci_cfg_write(BAR_DEVFN, 0x10, 4, IO_OLD)
    hv.pci_cfg_write(BAR_DEVFN, 0x18, 4, MEM_OLD)
    hv.pci_cfg_write(BAR_DEVFN, 0x1C, 4, 0)
    hv.pci_cfg_write(BAR_DEVFN, 0x30, 4, ROM_AT | 1)
    hv.pci_cfg_write(BAR_DEVFN, 4, 2, 0x0003)


def test_device_is_claimed(env):
    d, hv, dev = env
    assert hv.claims_pci(BAR_DEVFN)
    assert hv.pci_cfg_read(BAR_DEVFN, 0, 4) == 0x56781234


def test_sizing_values(env):
    d, hv, dev = env
    n = len(hv.state.dmops)
    assert size_like_firmware(hv, 0x10) == 0xFFFFFFF1  # 16 bytes of I/O
    assert size_like_firmware(hv, 0x14) == 0x00000000
    assert size_like_firmware(hv, 0x18) == 0xFFFFC004  # 16 KiB memory, 64-bit
    assert size_like_firmware(hv, 0x1C) == 0xFFFFFFFF
    assert size_like_firmware(hv, 0x20) == 0 and size_like_firmware(hv, 0x24) == 0
    assert size_like_firmware(hv, 0x30, 0xFFFFF800) == 0xFFFFF800  # 2 KiB ROM
    assert hv.pci_bar_size(BAR_DEVFN, 0) == (16, 1)
    assert hv.pci_bar_size(BAR_DEVFN, 2) == (0x4000, 4)
    assert hv.pci_bar_size(BAR_DEVFN, 6) == (0x800, 0)
    # sizing while decode is off maps nothing
    assert range_ops(hv, n) == []
    assert not hv.state.ports.contains(IO_OLD, IO_OLD)


def test_program_enable_move_disable(env):
    d, hv, dev = env
    n = len(hv.state.dmops)
    program_and_enable(hv)
    assert sorted(range_ops(hv, n)) == sorted([
        ("map", IO_RANGE_PORT, IO_OLD, IO_OLD + 0xF),
        ("map", IO_RANGE_MEMORY, MEM_OLD, MEM_OLD + 0x3FFF),
        ("map", IO_RANGE_MEMORY, ROM_AT, ROM_AT + 0x7FF),
    ])
    assert hv.state.ports.contains(IO_OLD, IO_OLD + 0xF)
    assert hv.state.mmio.contains(MEM_OLD, MEM_OLD + 0x3FFF)
    assert hv.claims_mmio(ROM_AT, 4)

    # accesses reach the device
    dev.log.clear()
    assert hv.inw(IO_OLD + 4) == 0xA004
    assert hv.readl(MEM_OLD + 0x10) == 0xA210
    hv.writeq(MEM_OLD + 0x20, 0x1122334455667788)
    assert hv.readl(ROM_AT) == 0x03020100
    assert hv.readq(ROM_AT + 0x100) == 0x0706050403020100
    assert dev.log == [(0, "r", 4, 2, 0xA004), (2, "r", 0x10, 4, 0xA210),
                       (2, "w", 0x20, 8, 0x1122334455667788)]

    # move the I/O BAR: exactly one unmap of the old and one map of the new range
    n = len(hv.state.dmops)
    hv.pci_cfg_write(BAR_DEVFN, 0x10, 4, IO_NEW)
    assert range_ops(hv, n) == [("unmap", IO_RANGE_PORT, IO_OLD, IO_OLD + 0xF),
                                ("map", IO_RANGE_PORT, IO_NEW, IO_NEW + 0xF)]
    assert not hv.state.ports.contains(IO_OLD, IO_OLD) and hv.claims_port(IO_NEW, 4)
    dev.log.clear()
    assert hv.inw(IO_OLD + 4) == 0xFFFF
    assert dev.log == []
    assert hv.inw(IO_NEW + 4) == 0xA004 and len(dev.log) == 1

    # move the 64-bit BAR above 4 GiB (low dword, then high dword, as firmware does)
    n = len(hv.state.dmops)
    hv.pci_cfg_write(BAR_DEVFN, 0x18, 4, MEM_NEW & 0xFFFFFFFF)
    hv.pci_cfg_write(BAR_DEVFN, 0x1C, 4, MEM_NEW >> 32)
    ops = range_ops(hv, n)
    assert ops[0] == ("unmap", IO_RANGE_MEMORY, MEM_OLD, MEM_OLD + 0x3FFF)
    assert ops[-1] == ("map", IO_RANGE_MEMORY, MEM_NEW, MEM_NEW + 0x3FFF)
    assert not hv.state.mmio.contains(MEM_OLD, MEM_OLD)
    assert hv.state.mmio.contains(MEM_NEW, MEM_NEW + 0x3FFF)
    assert hv.pci_cfg_read(BAR_DEVFN, 0x18, 4) == 0x00000004
    assert hv.pci_cfg_read(BAR_DEVFN, 0x1C, 4) == 0x8
    dev.log.clear()
    assert hv.readl(MEM_OLD + 0x10) == 0xFFFFFFFF
    assert dev.log == []
    assert hv.readl(MEM_NEW + 0x10) == 0xA210 and len(dev.log) == 1

    # disable decode: everything unmapped, nothing reaches the device
    n = len(hv.state.dmops)
    hv.pci_cfg_write(BAR_DEVFN, 4, 2, 0)
    assert sorted(range_ops(hv, n)) == sorted([
        ("unmap", IO_RANGE_PORT, IO_NEW, IO_NEW + 0xF),
        ("unmap", IO_RANGE_MEMORY, MEM_NEW, MEM_NEW + 0x3FFF),
        ("unmap", IO_RANGE_MEMORY, ROM_AT, ROM_AT + 0x7FF),
    ])
    assert not hv.claims_port(IO_NEW, 1) and not hv.claims_mmio(MEM_NEW, 4)
    assert not hv.claims_mmio(ROM_AT, 4)
    dev.log.clear()
    assert hv.inw(IO_NEW) == 0xFFFF and hv.readl(MEM_NEW) == 0xFFFFFFFF
    assert dev.log == []

    # I/O decode alone brings back only the I/O BAR
    n = len(hv.state.dmops)
    hv.pci_cfg_write(BAR_DEVFN, 4, 2, 1)
    assert range_ops(hv, n) == [("map", IO_RANGE_PORT, IO_NEW, IO_NEW + 0xF)]


def test_rom_enable_bit(env):
    d, hv, dev = env
    program_and_enable(hv)
    n = len(hv.state.dmops)
    hv.pci_cfg_write(BAR_DEVFN, 0x30, 4, ROM_AT)  # enable bit clear
    assert range_ops(hv, n) == [("unmap", IO_RANGE_MEMORY, ROM_AT, ROM_AT + 0x7FF)]
    assert hv.readl(ROM_AT) == 0xFFFFFFFF


def test_reboot_unmaps_bars(env):
    d, hv, dev = env
    program_and_enable(hv)
    n = len(hv.state.dmops)
    hv.outb(0xCF9, 0x06)
    ops = range_ops(hv, n)
    assert {op[0] for op in ops} == {"unmap"} and len(ops) == 3
    assert hv.state.shutdowns == [1]
    assert hv.pci_cfg_read(BAR_DEVFN, 4, 2) == 0
    assert not hv.claims_mmio(MEM_OLD, 4) and not hv.claims_mmio(ROM_AT, 4)
    assert not hv.claims_port(IO_OLD, 1)


def test_sizing_with_decode_on_unmaps_then_restores(env):
    d, hv, dev = env
    program_and_enable(hv)
    n = len(hv.state.dmops)
    assert size_like_firmware(hv, 0x10) == 0xFFFFFFF1  # the all-ones pattern is not decoded
    assert range_ops(hv, n) == [("unmap", IO_RANGE_PORT, IO_OLD, IO_OLD + 0xF),
                                ("map", IO_RANGE_PORT, IO_OLD, IO_OLD + 0xF)]
    assert hv.inw(IO_OLD + 2) == 0xA002
