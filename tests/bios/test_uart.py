"""16550A UART through its eight ports, `receive()` and the virtual clock."""

from __future__ import annotations

import pytest

from devmodel.bios.uart import COM_PORTS, FIFO_SIZE, Uart, com
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.wire.constants import DmOp

READ = 0x21
WRITE = 0x01
RBR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)
FCR = IIR
CHAR_NS_9600 = 1_000_000_000 // 9600 * 10


class Sink:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> int:
        self.out += data
        return len(data)


class Com:
    def __init__(self, n: int = 1) -> None:
        self.sink = Sink()
        self.m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
        self.dev = self.m.add(com(n, self.sink))
        self.base, self.irq = COM_PORTS[n]
        self.space: list[int] = []
        self.dev.on_rx_space = lambda: self.space.append(1)
        self.m.outbox.clear()

    def inb(self, reg: int) -> int:
        return self.m.handle_ioreq(0, self.base + reg, 0, 1, 1, READ)

    def outb(self, reg: int, v: int) -> None:
        self.m.handle_ioreq(0, self.base + reg, v, 1, 1, WRITE)

    def irqs(self) -> list[int]:
        got = [f[1] for op, f, _ in self.m.outbox if op == DmOp.SET_ISA_IRQ_LEVEL]
        self.m.outbox.clear()
        return got

    @property
    def level(self) -> int:
        return self.m.irqs.levels().get(f"isa{self.irq}", 0)

    def advance(self, ns: int) -> None:
        self.m.clock.set_virtual(self.m.clock.now() + ns)
        self.m.clock.run_due()


@pytest.fixture
def u() -> Com:
    return Com()


def test_reset_values(u):
    assert u.inb(LSR) == 0x60
    assert u.inb(IIR) == 0x01
    assert u.inb(MSR) == 0xB0
    assert u.inb(MCR) == 0x08
    assert u.inb(LCR) == 0 and u.inb(IER) == 0 and u.inb(SCR) == 0


def test_scratch_register(u):
    u.outb(SCR, 0x5A)
    assert u.inb(SCR) == 0x5A


def test_divisor_latch(u):
    u.outb(IER, 0x05)
    u.outb(LCR, 0x83)
    u.outb(RBR, 0x01)
    u.outb(IER, 0x00)
    assert u.inb(RBR) == 0x01 and u.inb(IER) == 0x00
    u.outb(LCR, 0x03)
    assert u.inb(IER) == 0x05  # IER untouched behind the latch
    assert u.dev.baud == 115200
    assert u.sink.out == b""  # a DLL write is not a transmit


def test_transmit_goes_to_backend(u):
    for b in b"hi\n":
        u.outb(RBR, b)
    assert bytes(u.sink.out) == b"hi\n"
    assert u.inb(LSR) & 0x60 == 0x60


def test_word_access_is_split(u):
    u.m.handle_ioreq(0, u.base + SCR - 1, 0xAB00, 1, 2, WRITE)  # MSR (read-only) + SCR
    assert u.inb(SCR) == 0xAB


def test_thre_interrupt_rules(u):
    u.outb(IER, 0x02)  # ETBEI with THR empty: raised
    assert u.irqs() == [1]
    assert u.inb(IIR) == 0x02
    assert u.irqs() == [0]  # reading IIR with THRE as the source clears it
    assert u.inb(IIR) == 0x01
    u.outb(IER, 0x02)  # no edge: stays cleared
    assert u.irqs() == []
    u.outb(IER, 0x00)
    u.outb(IER, 0x02)  # re-enabling with THR empty re-raises
    assert u.irqs() == [1]
    u.inb(IIR)
    u.irqs()
    u.outb(RBR, 0x41)  # a transmit: THR empties again -> raised
    assert u.irqs() == [1]
    assert u.level == 1
    u.outb(IER, 0x00)
    assert u.irqs() == [0]


def test_thr_write_lowers_then_raises(u):
    u.outb(IER, 0x02)
    u.irqs()
    u.outb(RBR, 0x41)
    assert u.irqs() == [0, 1]


def test_fifo_enable_and_iir_bits(u):
    u.outb(FCR, 0x01)
    assert u.inb(IIR) & 0xC0 == 0xC0
    u.outb(FCR, 0x00)
    assert u.inb(IIR) & 0xC0 == 0


def test_receive_is_bounded_by_fifo(u):
    u.outb(FCR, 0x07)
    assert u.space == [1]  # clearing the receiver makes room
    u.space.clear()
    assert u.dev.receive(bytes(range(20))) == FIFO_SIZE
    assert u.dev.receive(b"x") == 0
    got = []
    while u.inb(LSR) & 1:
        got.append(u.inb(RBR))
    assert got == list(range(16))
    assert len(u.space) == 16
    assert u.inb(LSR) & 0x02 == 0  # taking only what fits never overruns


def test_receive_without_fifo_takes_one_byte(u):
    assert u.dev.receive(b"ab") == 1
    assert u.dev.receive(b"b") == 0
    assert u.inb(RBR) == ord("a")
    assert u.dev.receive(b"b") == 1


@pytest.mark.parametrize("fcr,level", [(0x01, 1), (0x41, 4), (0x81, 8), (0xC1, 14)])
def test_trigger_levels(u, fcr, level):
    u.outb(FCR, fcr)
    u.outb(IER, 0x01)
    u.irqs()
    if level > 1:
        u.dev.receive(bytes(level - 1))
        assert u.irqs() == [] and u.inb(IIR) == 0xC1
    u.dev.receive(b"z")
    assert u.irqs() == [1]
    assert u.inb(IIR) == 0xC4


def test_character_timeout(u):
    u.outb(FCR, 0xC1)  # trigger 14
    u.outb(IER, 0x01)
    u.dev.receive(b"abc")
    assert u.irqs() == []
    u.advance(4 * CHAR_NS_9600 - 1)
    assert u.irqs() == []
    u.advance(1)
    assert u.irqs() == [1]
    assert u.inb(IIR) == 0xCC
    assert u.inb(RBR) == ord("a")
    assert u.irqs() == [0]  # a read clears the timeout and re-arms it
    u.advance(4 * CHAR_NS_9600)
    assert u.inb(IIR) == 0xCC
    u.inb(RBR)
    u.inb(RBR)
    u.advance(10 * CHAR_NS_9600)
    assert u.inb(IIR) == 0xC1  # empty FIFO: no timeout


def test_character_timeout_follows_divisor(u):
    u.outb(LCR, 0x80)
    u.outb(RBR, 1)  # 115200 baud
    u.outb(LCR, 0x03)
    u.outb(FCR, 0xC1)
    u.outb(IER, 0x01)
    u.dev.receive(b"a")
    u.advance(4 * (1_000_000_000 // 115200 * 10))
    assert u.inb(IIR) == 0xCC


def test_fifo_clear_rx(u):
    u.outb(FCR, 0x01)
    u.dev.receive(b"abc")
    u.space.clear()
    u.outb(FCR, 0x03)
    assert u.inb(LSR) & 1 == 0
    assert u.space == [1]
    assert u.dev.receive(b"d") == 1 and u.inb(RBR) == ord("d")


def test_fifo_disable_flushes(u):
    u.outb(FCR, 0x01)
    u.dev.receive(b"abc")
    u.outb(FCR, 0x00)
    assert u.inb(LSR) & 1 == 0


def test_loopback_tx_to_rx_and_msr(u):
    u.outb(MCR, 0x10)
    u.outb(RBR, 0x33)
    assert u.sink.out == b""
    assert u.inb(LSR) & 1
    assert u.inb(RBR) == 0x33
    assert u.dev.receive(b"x") == 0  # the serial input is disconnected
    u.outb(MCR, 0x10 | 0x0F)
    assert u.inb(MSR) == 0xF0
    u.outb(MCR, 0x10 | 0x01)  # DTR -> DSR
    assert u.inb(MSR) == 0x20
    u.outb(MCR, 0x10 | 0x02)  # RTS -> CTS
    assert u.inb(MSR) == 0x10
    u.outb(MCR, 0x10 | 0x08)  # OUT2 -> DCD
    assert u.inb(MSR) == 0x80
    u.outb(MCR, 0x00)
    assert u.inb(MSR) == 0xB0


def test_overrun_counted_without_fifo(u):
    u.outb(MCR, 0x10)
    u.outb(IER, 0x04)
    u.irqs()
    u.outb(RBR, 1)
    u.outb(RBR, 2)
    assert u.dev.overruns == 1
    assert u.irqs() == [1]
    assert u.inb(IIR) == 0x06  # receiver line status
    assert u.inb(LSR) & 0x03 == 0x03
    assert u.inb(LSR) & 0x02 == 0  # read-to-clear
    assert u.irqs() == [0]
    assert u.inb(RBR) == 2


def test_overrun_counted_with_fifo(u):
    u.outb(FCR, 0x01)
    u.outb(MCR, 0x10)
    for i in range(FIFO_SIZE + 3):
        u.outb(RBR, i)
    assert u.dev.overruns == 3
    assert u.inb(LSR) & 0x02
    got = [u.inb(RBR) for _ in range(FIFO_SIZE)]
    assert got == list(range(FIFO_SIZE))  # an overrun does not overwrite the FIFO


def test_break(u):
    u.outb(IER, 0x04)
    u.dev.receive_break()
    assert u.inb(IIR) == 0x06
    assert u.inb(LSR) & 0x11 == 0x11
    assert u.inb(RBR) == 0


def test_modem_status_deltas_and_msi(u):
    u.outb(IER, 0x08)
    u.irqs()
    u.dev.set_modem_lines(cts=True, dsr=True, dcd=False, ri=True)
    assert u.irqs() == [1]
    assert u.inb(IIR) == 0x00
    assert u.inb(MSR) == 0x70 | 0x08  # DDCD; RI rising gives no TERI
    assert u.irqs() == [0]
    assert u.inb(MSR) == 0x70
    u.dev.set_modem_lines(cts=True, dsr=True, dcd=False, ri=False)
    assert u.inb(MSR) == 0x30 | 0x04  # TERI on the trailing edge


def test_interrupt_priority(u):
    u.outb(FCR, 0x01)
    u.outb(IER, 0x0F)
    u.dev.set_modem_lines(cts=False, dsr=True, dcd=True, ri=False)  # MSI pending
    assert u.inb(IIR) & 0x0F == 0x02  # THRE beats MSI
    assert u.inb(IIR) & 0x0F == 0x00  # THRE cleared by the read: MSI
    u.dev.receive(b"a")
    assert u.inb(IIR) & 0x0F == 0x04  # data beats MSI
    u.dev.receive_break()
    assert u.inb(IIR) & 0x0F == 0x06  # line status beats everything
    u.inb(LSR)
    assert u.inb(IIR) & 0x0F == 0x04


def test_com_ports_addresses_and_shared_irq():
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    devs = [m.add(com(n)) for n in (1, 2, 3, 4)]
    for d, (base, irq) in zip(devs, COM_PORTS.values(), strict=True):
        assert d.base == base and d.irq_number == irq
        m.handle_ioreq(0, base + SCR, 0x10 + irq, 1, 1, WRITE)
        assert m.handle_ioreq(0, base + SCR, 0, 1, 1, READ) == 0x10 + irq
    m.outbox.clear()
    m.handle_ioreq(0, 0x3F8 + IER, 2, 1, 1, WRITE)
    m.handle_ioreq(0, 0x3E8 + IER, 2, 1, 1, WRITE)  # COM3 shares IRQ 4: no second DMOP
    m.handle_ioreq(0, 0x3F8 + IER, 0, 1, 1, WRITE)  # still asserted by COM3
    assert [f for _, f, _ in m.outbox] == [(4, 1)]
    with pytest.raises(ValueError):
        com(5)


def test_system_reset(u):
    u.outb(FCR, 0x01)
    u.outb(IER, 0x02)
    u.dev.receive(b"abc")
    u.m.reset()
    assert u.inb(LSR) == 0x60 and u.inb(IIR) == 0x01 and u.level == 0


def test_snapshot_round_trip_with_timer(u):
    u.outb(LCR, 0x80)
    u.outb(RBR, 0x03)
    u.outb(LCR, 0x1B)
    u.outb(FCR, 0xC1)
    u.outb(IER, 0x03)
    u.outb(SCR, 0x77)
    u.dev.receive(b"hello")
    snap = u.dev.snapshot()
    assert snap["state"]["cti_deadline"] > 0
    u.inb(RBR)
    u.outb(FCR, 0x00)
    u.outb(SCR, 0)
    u.dev.restore(snap)
    assert u.dev.snapshot() == snap
    u.advance(4 * (1_000_000_000 // 38400 * 11))
    assert u.inb(IIR) == 0xCC  # the restored timeout still fires
    assert bytes(u.inb(RBR) for _ in range(5)) == b"hello"


def test_restore_into_fresh_device_recomputes_irq():
    a = Com()
    a.outb(IER, 0x02)
    snap = a.dev.snapshot()
    b = Com()
    b.dev.restore(snap)
    assert b.irqs() == [1]
    assert b.inb(IIR) == 0x02


def test_uart_class_custom_address():
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    d = m.add(Uart("ttyx", 0x100, 5))
    m.handle_ioreq(0, 0x107, 0x42, 1, 1, WRITE)
    assert m.handle_ioreq(0, 0x107, 0, 1, 1, READ) == 0x42
    assert d.irq_number == 5
