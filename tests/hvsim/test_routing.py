"""Port/MMIO/PCI-config routing (xen-protocol.md 1.5) and the ISA IRQ wired-OR (4.6)."""

from __future__ import annotations

from devmodel.hvsim.apic import IoapicStub, LapicStub
from devmodel.hvsim.clock import VirtualClock
from devmodel.hvsim.irq import IrqRouter, intx_link
from devmodel.hvsim.pic import DualPic
from devmodel.hvsim.pit import Pit
from devmodel.hvsim.ports import NullPort
from devmodel.hvsim.routing import IoRouter, Route


class RecordingPort(NullPort):
    """Claims 0x3F8-0x3FF, 0xCF8 (4 bytes), 0xCFC-0xCFF as a port range, MMIO at 1 MiB pages
    0xE0000000, and PCI 00:01.0; records every call that reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def claims_port(self, port: int, size: int) -> bool:
        last = port + size - 1
        return (0x3F8 <= port and last <= 0x3FF) or (port == 0xCF8 and size == 4) or (
            0xCFC <= port and last <= 0xCFF
        ) or (0x20 <= port <= 0x21) or (  # a DM claiming a PIC port must still not get it
            0x70 <= port and last <= 0x71)

    def claims_mmio(self, gpa: int, size: int) -> bool:
        return 0xE0000000 <= gpa and gpa + size <= 0xE0100000

    def claims_pci(self, sbdf: int) -> bool:
        return sbdf == 0x0008

    def pio_read(self, port: int, size: int) -> int:
        self.calls.append(("pio_read", port, size))
        return 0x12345678

    def pio_write(self, port: int, size: int, value: int) -> None:
        self.calls.append(("pio_write", port, size, value))

    def mmio_read(self, gpa: int, size: int) -> int:
        self.calls.append(("mmio_read", gpa, size))
        return 0xAB

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        self.calls.append(("mmio_write", gpa, size, value))

    def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int:
        self.calls.append(("pci_read", sbdf, reg, size))
        return 0x7000_8086

    def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        self.calls.append(("pci_write", sbdf, reg, size, value))


def make() -> tuple[IoRouter, RecordingPort, list[int]]:
    port = RecordingPort()
    syncs: list[int] = []  # one entry per before_dm call (the simulator's time sync)
    clock = VirtualClock()
    pic = DualPic()
    pit = Pit(clock, lambda level: None)
    router = IoRouter(port, pic, pit, LapicStub(), IoapicStub(), lambda: syncs.append(1))
    return router, port, syncs


def test_unclaimed_reads_all_ones_and_never_asks() -> None:
    router, port, _ = make()
    assert router.pio_read(0x80, 1) == 0xFF
    assert router.pio_read(0x1F0, 2) == 0xFFFF
    router.pio_write(0x80, 1, 0x55)
    assert router.mmio_read(0xD0000000, 4) == 0xFFFFFFFF
    assert port.calls == []
    assert router.unclaimed == 4


def test_whole_access_must_lie_in_a_claimed_range() -> None:
    router, port, _ = make()
    assert router.pio_read(0x3FE, 2) == 0x5678
    assert router.pio_read(0x3FE, 4) == 0xFFFFFFFF  # 0x3FE-0x401 is not all claimed
    assert port.calls == [("pio_read", 0x3FE, 2)]


def test_platform_ports_stay_in_the_hypervisor() -> None:
    router, port, _ = make()
    assert router.port_route(0x20, 1) is Route.PLATFORM
    router.pio_write(0x21, 1, 0xFB)
    assert router.pio_read(0x21, 1) == 0xFB
    assert router.pio_read(0x21, 2) == 0xFFFF  # byte-only, as Xen's vpic
    assert router.bad_size == 1
    assert port.calls == []


def test_rtc_index_reads_answered_locally_as_xen_does() -> None:
    router, port, syncs = make()
    assert router.pio_read(0x70, 1) == 0x78  # forwarded unless switched on
    router.rtc_index_local = True
    assert router.pio_read(0x70, 1) == 0xFF and router.rtc_index_reads == 1
    assert port.calls == [("pio_read", 0x70, 1)] and len(syncs) == 1
    router.pio_write(0x70, 1, 0x8F)  # the index write and the data port still go
    assert router.pio_read(0x71, 1) == 0x78
    assert router.pio_read(0x70, 2) == 0x5678  # not a byte read: the device model's
    assert [c[:2] for c in port.calls[1:]] == [("pio_write", 0x70), ("pio_read", 0x71),
                                               ("pio_read", 0x70)]


def test_cf8_is_latched_and_forwarded() -> None:
    router, port, _ = make()
    router.pio_write(0xCF8, 4, 0x80000800)
    assert router.cf8 == 0x80000800
    assert port.calls == [("pio_write", 0xCF8, 4, 0x80000800)]
    port.calls.clear()
    router.pio_write(0xCF8, 2, 0x1234)  # not a 4-byte write: not latched (and not claimed)
    assert router.cf8 == 0x80000800
    assert port.calls == []


def test_cfc_under_latch_becomes_pci_config() -> None:
    router, port, syncs = make()
    router.pio_write(0xCF8, 4, 0x80000800 | 0x3C)  # 00:01.0 reg 0x3C
    port.calls.clear()
    syncs.clear()
    assert router.pio_read(0xCFE, 2) == 0x8086
    router.pio_write(0xCFD, 1, 0x0B)
    assert port.calls == [("pci_read", 0x0008, 0x3E, 2), ("pci_write", 0x0008, 0x3D, 1, 0x0B)]
    assert len(syncs) == 2  # the time is sent before each access the device model serves


def test_unclaimed_sbdf_is_all_ones_even_if_the_port_is_claimed() -> None:
    router, port, _ = make()
    router.pio_write(0xCF8, 4, 0x80001000)  # 00:02.0, not claimed
    port.calls.clear()
    assert router.pio_read(0xCFC, 4) == 0xFFFFFFFF
    router.pio_write(0xCFC, 4, 0)
    assert port.calls == []


def test_cfc_without_enable_bit_is_an_ordinary_port() -> None:
    router, port, _ = make()
    router.pio_write(0xCF8, 4, 0x00000800)
    port.calls.clear()
    assert router.pio_read(0xCFC, 4) == 0x12345678
    assert port.calls == [("pio_read", 0xCFC, 4)]


def test_mmio_routes_apic_stubs_locally_and_claims_to_the_dm() -> None:
    router, port, _ = make()
    assert router.mmio_read(0xFEE00030, 4) == 0x00050014
    router.mmio_write(0xFEE00300, 4, 0xC4500)
    assert router.lapic.ipis == [0xC4500]
    router.mmio_write(0xFEC00000, 4, 1)
    assert router.mmio_read(0xFEC00010, 4) == 0x00170011
    assert router.mmio_read(0xE0000010, 1) == 0xAB
    router.mmio_write(0xE00FFFFC, 4, 7)
    assert router.mmio_read(0xE00FFFFE, 4) == 0xFFFFFFFF  # straddles the claimed range
    assert port.calls == [("mmio_read", 0xE0000010, 1), ("mmio_write", 0xE00FFFFC, 4, 7)]


def test_observers_see_accesses() -> None:
    router, _, _ = make()
    seen: list[tuple] = []
    router.observers.append(lambda *a: seen.append(a))
    router.pio_write(0x3F8, 1, 0x41)
    router.pio_read(0x80, 1)
    assert seen == [("pio", 0x3F8, 1, 0x41, True), ("pio", 0x80, 1, 0xFF, False)]


# ---- IRQ wiring --------------------------------------------------------------------------

def make_irq() -> tuple[IrqRouter, list[tuple[int, int]]]:
    changes: list[tuple[int, int]] = []
    return IrqRouter(lambda irq, level: changes.append((irq, level))), changes


def test_intx_link_formula() -> None:
    assert [intx_link(3, pin) for pin in range(4)] == [3, 0, 1, 2]
    assert intx_link(1, 0) == 1 and intx_link(4, 0) == 0


def test_pci_intx_goes_through_the_link_route() -> None:
    irq, changes = make_irq()
    irq.set_pci_intx(3, 0, 1)  # link 3, not routed yet
    assert changes == []
    irq.set_link_route(3, 11)
    assert changes == [(11, 1)]
    irq.set_link_route(3, 10)  # re-route moves the level
    assert changes[-2:] == [(11, 0), (10, 1)]
    irq.set_link_route(3, 0)  # disabled
    assert changes[-1] == (10, 0)


def test_wired_or_of_all_sources() -> None:
    irq, changes = make_irq()
    irq.set_link_route(0, 11)
    irq.set_link_route(1, 11)
    irq.set_pci_intx(4, 0, 1)  # link 0
    irq.set_pci_intx(1, 0, 1)  # link 1
    irq.set_isa_level(11, 1)
    irq.set_pci_intx(4, 0, 0)
    irq.set_isa_level(11, 0)
    assert changes == [(11, 1)]  # still held by slot 1
    irq.set_pci_intx(1, 0, 0)
    assert changes == [(11, 1), (11, 0)]


def test_out_of_range_requests_are_counted() -> None:
    irq, changes = make_irq()
    irq.set_isa_level(16, 1)
    irq.set_pci_intx(32, 0, 1)
    irq.set_link_route(4, 5)
    assert irq.bad_requests == 3 and changes == []
