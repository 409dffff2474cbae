"""The Xen platform PCI device through the bus: identity, BARs, every fixed port and width,
the log port, the flags byte, product/build registration and the blacklist."""

from __future__ import annotations

import pytest
from xen_helpers import (
    XEN_DEVFN,
    XEN_IO,
    XEN_MMIO,
    Guest,
    MachinePort,
    ide_machine,
)

from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.wire.constants import DmOp
from devmodel.xen import XenPlatform, build_xen_platform, parse_blacklist_entry


def rig(**kw):
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    dev = build_xen_platform(m, **kw)
    p = MachinePort(m)
    m.outbox.clear()
    return m, dev, p


def mem_types(m):
    out = [f for op, f, _ in m.outbox if op == DmOp.SET_MEM_TYPE]
    m.outbox.clear()
    return out


def test_identity_as_qemu_xen_platform():
    m, dev, p = rig()
    assert p.cfg_read(XEN_DEVFN, 0x00, 4) == 0x0001_5853
    assert p.cfg_read(XEN_DEVFN, 0x08, 4) == 0xFF80_0001  # class FF80, prog-if 0, rev 1
    assert p.cfg_read(XEN_DEVFN, 0x2C, 4) == 0x0001_5853  # subsystem
    assert p.cfg_read(XEN_DEVFN, 0x3D, 1) == 1  # INTA
    assert p.cfg_read(XEN_DEVFN, 0x0E, 1) == 0
    # QEMU's system reset clears the COMMAND bits realize set
    assert p.cfg_read(XEN_DEVFN, 0x04, 2) == 0


def test_bar_sizing():
    m, dev, p = rig()
    p.cfg_write(XEN_DEVFN, 0x10, 4, 0xFFFFFFFF)
    assert p.cfg_read(XEN_DEVFN, 0x10, 4) == 0xFFFFFF01  # 256 bytes of I/O
    p.cfg_write(XEN_DEVFN, 0x14, 4, 0xFFFFFFFF)
    assert p.cfg_read(XEN_DEVFN, 0x14, 4) == 0xFF000008  # 16 MiB, 32-bit, prefetchable
    for reg in range(0x18, 0x28, 4):
        p.cfg_write(XEN_DEVFN, reg, 4, 0xFFFFFFFF)
        assert p.cfg_read(XEN_DEVFN, reg, 4) == 0


def test_fixed_ports_every_width():
    m, dev, p = rig()
    assert p.inp(0x10, 2) == 0x49D2
    assert p.inp(0x10, 1) == 0  # flags
    assert p.inp(0x12, 1) == 1  # protocol version
    assert p.inp(0x10, 4) == 0xFFFFFFFF
    assert p.inp(0x12, 2) == 0xFFFF
    for port in range(0x10, 0x20):
        if port not in (0x10, 0x12):
            assert p.inp(port, 1) == 0xFF
        if port != 0x10:
            assert p.inp(port, 2) == 0xFFFF, hex(port)
        assert p.inp(port, 4) == 0xFFFFFFFF
    # protocol-version-2 ports of XenServer's qemu-traditional: not there, as upstream
    p.out(0x13, 2, 1)
    assert p.inp(0x12, 1) == 1
    p.out(0x11, 1, 1)
    p.out(0x13, 0, 1)
    assert not dev.reports
    assert m.counters["guest_error"] == 0


def test_flags_byte_locks_the_rom_area():
    m, dev, p = rig()
    p.out(0x10, 0xFF, 1)
    assert p.inp(0x10, 1) == 1  # only PFFLAG_ROM_LOCK is kept
    assert mem_types(m) == [(0x40, 1, 0, 0xC0)]  # ram_ro, 64 pages from gfn 0xC0
    p.out(0x10, 0, 1)
    assert p.inp(0x10, 1) == 0
    assert mem_types(m) == [(0x40, 0, 0, 0xC0)]
    p.out(0x10, 1, 1)
    mem_types(m)
    m.reset()  # QEMU platform_fixed_ioport_reset writes 0
    assert p.inp(0x10, 1) == 0
    assert mem_types(m) == [(0x40, 0, 0, 0xC0)]
    m.reset()
    assert mem_types(m) == []  # nothing to undo


def test_log_port_lines():
    m, dev, p = rig()
    for ch in b"hello from the guest\n":
        p.out(0x12, ch, 1)
    assert list(dev.log_lines) == ["hello from the guest"]
    # a line is cut at 4095 characters; the character that finds the buffer full is lost
    for _ in range(4095):
        p.out(0x12, ord("x"), 1)
    p.out(0x12, ord("y"), 1)
    assert dev.log_lines[-1] == "x" * 4095
    assert dev.log_buffer == b""


def test_log_throttle_drops_lines_not_the_vcpu():
    m, dev, p = rig()
    line = b"z" * 4000 + b"\n"
    for _ in range(40):  # 160 KB with no time passing: past the 128 KiB bucket
        for ch in line:
            p.out(0x12, ch, 1)
    assert dev.counters["log lines dropped (throttled)"] >= 7
    assert len(dev.log_lines) == 64 or dev.counters["log lines dropped (throttled)"] > 0


def test_bar0_and_bar1():
    m, dev, p = rig()
    Guest(p).p.cfg_write(XEN_DEVFN, 0x10, 4, XEN_IO | 1)
    p.cfg_write(XEN_DEVFN, 0x14, 4, XEN_MMIO | 8)
    p.cfg_write(XEN_DEVFN, 0x04, 2, 3)
    p.out(XEN_IO, 1, 1)  # flags through BAR0 offset 0
    assert p.inp(0x10, 1) == 1 and p.inp(XEN_IO, 1) == 1
    for off in (1, 4, 8, 0x80, 0xFF):
        assert p.inp(XEN_IO + off, 1) == 0xFF
    assert p.inp(XEN_IO, 2) == 0xFF01  # byte accesses only: split by the bus
    for ch in b"log\n":
        p.out(XEN_IO + 8, ch, 1)  # offset 8, not 1 or 2: a log character
    assert dev.log_lines[-1] == "log"
    assert p.mmio_read(XEN_MMIO, 4) == 0
    p.mmio_write(XEN_MMIO + 0xFFFFF8, 8, 0x1234)
    assert p.mmio_read(XEN_MMIO + 0xFFFFF8, 8) == 0
    assert m.counters["guest_error"] == 0


def test_product_and_build_registration():
    m, dev, p = rig()
    p.out(0x10, 77, 4)  # build before product: ignored (qemu-traditional)
    assert dev.build == -1 and dev.counters
    p.out(0x12, 3, 2)
    p.out(0x10, 1, 4)
    assert (dev.product, dev.build, dev.blacklisted) == (3, 1, False)
    assert p.inp(0x10, 2) == 0x49D2


@pytest.mark.parametrize("entry,product,build,blacklisted", [
    ("gplpv-windows", 2, 1234, True),
    ("2", 2, 1, True),
    ("gplpv-windows/1234", 2, 1234, True),
    ("gplpv-windows/1234", 2, 1235, False),
    ("linux", 1, 1, False),
])
def test_blacklist(entry, product, build, blacklisted):
    m, dev, p = rig(blacklist=[parse_blacklist_entry(entry)])
    p.out(0x12, product, 2)
    p.out(0x10, build, 4)
    assert p.inp(0x10, 2) == (0xD249 if blacklisted else 0x49D2)
    p.out(0x10, 3, 2)
    assert dev.reports[-1].refused == ("blacklisted" if blacklisted else None)


def test_blacklist_entry_parsing():
    assert parse_blacklist_entry("linux") == 3
    assert parse_blacklist_entry("0xffff/7") == (0xFFFF, 7)
    with pytest.raises(ValueError):
        parse_blacklist_entry("nonsense")
    with pytest.raises(ValueError):
        parse_blacklist_entry("0x10000")


def test_policy_ignore_blacklists_everyone():
    m, dev, p = rig(policy="ignore")
    g = Guest(p)
    assert g.linux_unplug(3) == "blacklist"
    p.out(0x10, 3, 2)  # a driver that does not look
    assert dev.reports[-1].refused == "policy"
    with pytest.raises(ValueError):
        XenPlatform(policy="sometimes")


def test_reset_forgets_the_driver():
    m, dev, p = rig(blacklist=[3])
    p.out(0x12, 3, 2)
    assert p.inp(0x10, 2) == 0xD249
    m.reset()
    assert p.inp(0x10, 2) == 0x49D2 and dev.product == 0


def test_snapshot_roundtrip():
    m, dev, p = rig()
    p.out(0x10, 1, 1)
    p.out(0x12, 3, 2)
    p.out(0x10, 9, 4)
    for ch in b"partial":
        p.out(0x12, ch, 1)
    snap = dev.snapshot()
    p.out(0x10, 0, 1)
    p.out(0x12, 5, 2)
    m.outbox.clear()
    dev.restore(snap)
    assert dev.snapshot() == snap
    assert mem_types(m) == [(0x40, 1, 0, 0xC0)]  # the flags are re-applied, as post_load


def test_sits_at_00_02_0_next_to_ide(tmp_path):
    m, ide, plat = ide_machine({})
    assert m.pci.get(XEN_DEVFN) is plat
