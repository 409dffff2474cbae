"""Hypothesis stateful tests, one per device family of build_pc: register accesses (biased to
the family's own ports, all sizes), PCI config writes, clock steps; after every step, in
strict mode (an escape fails the step), invariants: internal queues and buffers stay within
their bounds and the IRQ line agrees with the device's own status."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from devmodel.core.pci import PciDevice
from devmodel.fuzz.engine import DIR, PCI_CONFIG, PIO
from devmodel.fuzz.machine import FuzzSetup, Targets, build_fuzz_machine

logging.getLogger("devmodel").setLevel(logging.ERROR)

SETTINGS = settings(max_examples=40, stateful_step_count=40, deadline=None,
                    suppress_health_check=list(HealthCheck))
PS2_QUEUE_MAX = 256  # QEMU's PS2_QUEUE_SIZE; ours is smaller or equal
UART_FIFO = 16


def _check_chipset(m, devs):
    # the host bridge's identity never changes, whatever was written
    assert m.pci.config_read(0, 0, 4) == 0x12378086
    host = m.device("pci-host")
    assert 0 <= host.config_address < 1 << 32


def _check_rtc(m, devs):
    rtc = m.device("rtc")
    assert len(rtc.cmos) == 128 and len(rtc.ext) == 128
    assert rtc.irq.level == bool(rtc.cmos[0x0C] & 0x80)  # IRQ8 follows REG_C.IRQF


def _check_fw_cfg(m, devs):
    fw = m.device("fw_cfg")
    assert fw.cur_offset >= 0


def _check_i8042(m, devs):
    kbc = m.device("i8042")
    for p in (kbc.kbd, kbc.mouse):
        assert len(p.replies) + len(p.data) <= PS2_QUEUE_MAX
    if kbc.irq_kbd.level or kbc.irq_mouse.level:
        assert kbc.status & 0x01  # an IRQ only with a byte in the output buffer


def _check_uart(m, devs):
    u = m.device("com1")
    assert len(u.rx_fifo) <= UART_FIFO
    assert u.irq.level == ((u.iir & 0x0F) != 0x01)  # IRQ4 iff IIR names a pending cause


def _check_pm(m, devs):
    pm = m.device("piix4-pm")
    if pm.sci.level:
        assert pm.regs["pm1_en"] or pm.gpe_en[0]


def _check_ide(m, devs):
    ide = m.device("piix3-ide")
    for ch in ide.channels:
        if ch.line.level:
            assert not ch.devctl & 0x02  # nIEN masks the line
        for d in ch.drives:
            assert len(d.buf) == d.BUFFER_SIZE


CHECKS = {"chipset": _check_chipset, "rtc": _check_rtc, "fw_cfg": _check_fw_cfg,
          "i8042": _check_i8042, "uart": _check_uart, "pm": _check_pm, "ide": _check_ide}


def make_machine_class(family: str):
    class DeviceFamily(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.setup = FuzzSetup(devices=(family, "chipset") if family != "chipset"
                                   else ("chipset",), ram=1 << 20,
                                   disks={"hda": 1 << 20} if family == "ide" else {})
            self.m = build_fuzz_machine(self.setup)
            self.t = Targets(self.m, (family,))
            self.now = 0

        def teardown(self) -> None:
            self.m.close_backends()
            self.m.memory.close()

        def _io(self, typ, addr, data, size, read):
            self.m.handle_ioreq(typ, addr, data, 1, size, 0x01 | (DIR if read else 0))
            self.m.outbox.clear()
            self.t.refresh()

        @rule(i=st.integers(0, 255), off=st.integers(0, 255), size=st.sampled_from([1, 2, 4]),
              value=st.integers(0, 0xFFFFFFFF), read=st.booleans())
        def port(self, i, off, size, value, read):
            rs = self.t.pio
            r = rs[i % len(rs)]
            self._io(PIO, r.start + off % r.length, value & ((1 << 8 * size) - 1), size, read)

        @rule(value=st.sampled_from([0x00, 0x01, 0x08, 0x20, 0x55, 0x80, 0xA0, 0xAA, 0xC8, 0xEC,
                                     0xEE, 0xF2, 0xF4, 0xFF]), i=st.integers(0, 255),
              off=st.integers(0, 255))
        def port_magic(self, value, i, off):
            rs = self.t.pio
            r = rs[i % len(rs)]
            self._io(PIO, r.start + off % r.length, value, 1, False)

        @rule(i=st.integers(0, 15), reg=st.integers(0, 255), size=st.sampled_from([1, 2, 4]),
              value=st.integers(0, 0xFFFFFFFF), read=st.booleans())
        def pci_config(self, i, reg, size, value, read):
            devs = [d for d in self.t.devices if isinstance(d, PciDevice)]
            if not devs:
                return
            d = devs[i % len(devs)]
            reg &= ~(size - 1) & 0xFF
            self._io(PCI_CONFIG, d.devfn << 32 | reg, value & ((1 << 8 * size) - 1), size, read)

        @rule(ns=st.sampled_from([1_000, 100_000, 10_000_000, 1_000_000_000]))
        def clock(self, ns):
            self.now += ns
            self.m.clock.set_virtual(self.now)
            self.m.clock.run_due(self.now)
            self.m.outbox.clear()

        @invariant()
        def family_invariants(self):
            CHECKS[family](self.m, self.t.devices)
            assert len(self.m.clock._heap) <= 4096 + 64  # the timer heap stays compacted

    DeviceFamily.__name__ = f"{family}_machine"
    return DeviceFamily


@pytest.mark.parametrize("family", sorted(CHECKS))
def test_stateful(family):
    cls = make_machine_class(family)
    cls.TestCase.settings = SETTINGS
    cls.TestCase().runTest()
