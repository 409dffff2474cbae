"""The cheap REP INS/OUTS filter, posted PIO writes and the local ACPI PM timer."""

from __future__ import annotations

from devmodel.hvsim.apic import IoapicStub, LapicStub
from devmodel.hvsim.clock import VirtualClock
from devmodel.hvsim.pic import DualPic
from devmodel.hvsim.pit import Pit
from devmodel.hvsim.pmtimer import PIIX4_PM_SBDF, PmTimer, pm_timer_value
from devmodel.hvsim.ports import NullPort
from devmodel.hvsim.posted import POSTED_PORTS, VGA_PORTS, PostedWrites, postable_port
from devmodel.hvsim.routing import IoRouter
from devmodel.hvsim.strings import decode_string_insn, is_rep_string
from devmodel.wire.constants import IOREQ_TYPE_COPY, IOREQ_TYPE_PIO

PM_BASE = 0xB000


class Port(NullPort):
    """Claims the debug/CMOS/POST ports, the PM block at 0xB000 and PCI 00:01.3."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.config = {0: 0x7113_8086}

    def claims_port(self, port: int, size: int) -> bool:
        return port in (0x70, 0x71, 0x80, 0xE9, 0x402, 0x3F8) or (
            PM_BASE <= port and port + size <= PM_BASE + 64) or 0xCF8 <= port <= 0xCFF

    def claims_pci(self, sbdf: int) -> bool:
        return sbdf == PIIX4_PM_SBDF

    def pio_read(self, port: int, size: int) -> int:
        self.calls.append(("read", port, size))
        return 0xAB

    def pio_write(self, port: int, size: int, value: int) -> None:
        self.calls.append(("write", port, size, value))

    def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int:
        return self.config.get(reg, 0) & ((1 << 8 * size) - 1)

    def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        self.calls.append(("cfg", reg, size, value))


def make_router() -> tuple[IoRouter, Port, VirtualClock, list]:
    port = Port()
    clock = VirtualClock()
    events: list = []
    router = IoRouter(port, DualPic(), Pit(clock, lambda _level: None), LapicStub(),
                      IoapicStub(), lambda: events.append("before_dm"))
    return router, port, clock, events


def test_rep_filter_matches_full_decode() -> None:
    cases = [b"\xee", b"\xec", b"\xe6\x80", b"\x66\xef", b"\xf3\x6e", b"\xf3\x66\x6d",
             b"\x2e\xf3\x6f", b"\x6c", b"\x66\x6d", b"\xf2\x6c", b"\xf3\x90", b"\xf3" * 15,
             b"\x67\xf3\x26\x6e", b"\xf3\xa4"]
    for code in cases:
        insn = decode_string_insn(code.ljust(15, b"\x90"), False)
        assert is_rep_string(code) == bool(insn is not None and insn.rep), code.hex()


def test_posted_pio_writes_batch_and_flush_before_a_read() -> None:
    router, port, _clock, events = make_router()
    sent: list = []
    posted = PostedWrites(sent.append)
    router.before_dm = lambda: (posted.flush(), events.append("before_dm"))

    def post(addr: int, size: int, value: int, type_: int) -> bool:
        posted.add(addr, size, value, type_)
        return True

    router.post = post
    for b in b"hi\n":
        router.pio_write(0x402, 1, b)
    router.pio_write(0xE9, 1, 0x41)
    router.pio_write(0x80, 1, 0x12)
    router.pio_write(0x70, 1, 0x8F)
    router.pio_write(0x3F8, 1, 0x55)  # not postable: synchronous, after the flush
    assert sent == [[(IOREQ_TYPE_PIO, 0x402, 1, b) for b in b"hi\n"]
                    + [(IOREQ_TYPE_PIO, 0xE9, 1, 0x41), (IOREQ_TYPE_PIO, 0x80, 1, 0x12),
                       (IOREQ_TYPE_PIO, 0x70, 1, 0x8F)]]
    assert port.calls == [("write", 0x3F8, 1, 0x55)]
    router.pio_write(0x70, 1, 0x10)
    assert router.pio_read(0x71, 1) == 0xAB  # a read is synchronous and flushes first
    assert sent[-1] == [(IOREQ_TYPE_PIO, 0x70, 1, 0x10)]
    assert port.calls[-1] == ("read", 0x71, 1)
    assert POSTED_PORTS == {0x70, 0x80, 0xE9, 0x402} | VGA_PORTS
    posted.add(0xB8000, 2, 0x0741)
    assert posted.writes == [(IOREQ_TYPE_COPY, 0xB8000, 2, 0x0741)]


def test_posted_ports_go_synchronously_without_a_ring() -> None:
    router, port, _clock, _events = make_router()
    router.post = lambda *_a: False
    router.pio_write(0x402, 1, 0x41)
    assert port.calls == [("write", 0x402, 1, 0x41)]


def test_cf8_and_vga_register_writes_are_posted_in_order() -> None:
    router, port, _clock, events = make_router()
    sent: list[list] = []
    posted = PostedWrites(sent.append)
    router.before_dm = lambda: (posted.flush(), events.append("before_dm"))
    claims = port.claims_port
    port.claims_port = lambda p, size: claims(p, size) or p in VGA_PORTS  # type: ignore
    router.post = lambda addr, size, value, type_: (posted.add(addr, size, value, type_), True)[1]
    router.pio_write(0x3C8, 1, 0)
    for value in (0x3F, 0x00, 0x15):
        router.pio_write(0x3C9, 1, value)
    router.pio_write(0x3D4, 2, 0x0E0F)  # index and data in one OUTW, as the VGA BIOS does
    router.pio_write(0xCF8, 4, 0x8000_0B00)  # latched here and posted
    router.pio_write(0xCF8, 2, 0x0B00)  # not a latch write: synchronous, after the flush
    assert sent == [[(IOREQ_TYPE_PIO, 0x3C8, 1, 0)]
                    + [(IOREQ_TYPE_PIO, 0x3C9, 1, v) for v in (0x3F, 0x00, 0x15)]
                    + [(IOREQ_TYPE_PIO, 0x3D4, 2, 0x0E0F), (IOREQ_TYPE_PIO, 0xCF8, 4, 0x8000_0B00)]]
    assert port.calls == [("write", 0xCF8, 2, 0x0B00)]
    assert router.cf8 == 0x8000_0B00
    router.pio_write(0xCF8, 4, 0x8000_0B00)
    assert router.pio_read(0xCFC, 4) == 0x7113_8086  # PCI config through the local latch...
    assert sent[-1] == [(IOREQ_TYPE_PIO, 0xCF8, 4, 0x8000_0B00)]  # ...after the latch write
    assert [postable_port(0xCF8, n) for n in (1, 2, 4)] == [False, False, True]
    assert not postable_port(0x3C1, 1) and not postable_port(0x3CC, 1)  # read-only ports
    assert not postable_port(0x3C9, 8)


def enable_pm(router: IoRouter) -> None:
    router.pio_write(0xCF8, 4, 0x8000_0B00)  # 00:01.3, reg 0
    assert router.pio_read(0xCFC, 4) == 0x7113_8086
    router.pio_write(0xCF8, 4, 0x8000_0B40)
    router.pio_write(0xCFC, 4, PM_BASE | 1)
    router.pio_write(0xCF8, 4, 0x8000_0B80)
    router.pio_write(0xCFC, 1, 0x01)


def test_pm_timer_is_local_once_the_block_is_found() -> None:
    router, port, clock, _events = make_router()
    pm = PmTimer(clock)
    router.pm_timer = pm
    clock.advance(123_456_789)
    assert router.pio_read(PM_BASE + 8, 4) == 0xAB  # not enabled yet: the DM answers
    enable_pm(router)
    assert pm.tmr_port == PM_BASE + 8
    port.calls.clear()
    assert router.pio_read(PM_BASE + 8, 4) == pm_timer_value(clock.ns)
    assert pm_timer_value(clock.ns) == 123_456_789 * 3_579_545 // 10**9 & 0xFFFFFF
    assert port.calls == []
    assert router.pio_read(PM_BASE + 8, 2) == 0xAB  # other sizes and registers: the DM
    assert router.pio_read(PM_BASE, 2) == 0xAB
    assert len(port.calls) == 2
    pm.reset()  # the DM's PIIX4 PM reset disables the block
    assert pm.tmr_port == -1


def test_pm_timer_needs_the_piix4_identity() -> None:
    router, port, clock, _events = make_router()
    port.config[0] = 0x1234_8086
    router.pm_timer = PmTimer(clock)
    router.pio_write(0xCF8, 4, 0x8000_0B00)
    router.pio_read(0xCFC, 4)
    router.pio_write(0xCF8, 4, 0x8000_0B40)
    router.pio_write(0xCFC, 4, PM_BASE | 1)
    router.pio_write(0xCF8, 4, 0x8000_0B80)
    router.pio_write(0xCFC, 1, 0x01)
    assert router.pm_timer.tmr_port == -1


def test_pm_timer_matches_the_device_model_formula() -> None:
    from devmodel.bios.acpi_pm import _pm_ticks

    for ns in (0, 1, 279, 10_303_000, 4_687_499_999, 10**12 + 7):
        assert pm_timer_value(ns) == _pm_ticks(ns) & 0xFFFFFF
