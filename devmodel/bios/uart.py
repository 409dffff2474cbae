"""16550A UART (QEMU hw/char/serial.c) for COM1-COM4.

Transmission is immediate, as in QEMU: a THR write goes to the backend (or, in loopback, back
into the receiver) before the access completes, so THRE/TEMT are set again at once and a
THRE interrupt follows. Received bytes come from the daemon through `receive(data)`, which
takes only what fits the receiver (the FIFO, or the single RBR) and returns how many bytes it
took; the daemon keeps the rest and retries when `on_rx_space` is called (QEMU
qemu_chr_accept_input after a guest read). The character timeout (CTI) runs on the machine
clock: 4 character times after the last receive or read with data still in the FIFO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from devmodel.core.bus import Range
from devmodel.core.clock import Timer
from devmodel.core.device import Device
from devmodel.core.irq import IrqLine

FIFO_SIZE = 16
BAUD_BASE = 115200  # 1.8432 MHz / 16
NS_PER_S = 1_000_000_000

IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_ID = 0x01, 0x06
IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_CTI = 0x00, 0x02, 0x04, 0x06, 0x0C
IIR_FE = 0xC0  # "FIFOs enabled" bits
FCR_FE, FCR_RFR, FCR_XFR = 0x01, 0x02, 0x04
FCR_STICKY = 0xC9  # enable, DMA mode, trigger level; the reset bits self-clear
LCR_DLAB = 0x80
MCR_LOOP = 0x10
LSR_DR, LSR_OE, LSR_PE, LSR_FE, LSR_BI, LSR_THRE, LSR_TEMT = 1, 2, 4, 8, 0x10, 0x20, 0x40
LSR_INT_ANY = 0x1E
MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 1, 2, 4, 8
MSR_ANY_DELTA = 0x0F
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
TRIGGER_LEVELS = (1, 4, 8, 14)  # FCR bits 7:6

COM_PORTS = {1: (0x3F8, 4), 2: (0x2F8, 3), 3: (0x3E8, 4), 4: (0x2E8, 3)}


class CharBackend(Protocol):
    """The transmit side the UART needs (devmodel.backends.chardev implements it)."""

    def write(self, data: bytes) -> int: ...


class Uart(Device):
    SNAPSHOT_FIELDS = ("rbr", "thr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr", "fcr",
                       "divider", "rx_fifo", "thr_ipending", "timeout_ipending", "lines",
                       "cti_deadline", "overruns")

    def __init__(self, name: str = "com1", base: int = 0x3F8, irq: int = 4,
                 backend: CharBackend | None = None) -> None:
        super().__init__(name)
        self.base = base
        self.irq_number = irq
        self.backend = backend
        # Called (from inside an ioreq) when the guest made room in the receiver.
        self.on_rx_space: Callable[[], None] | None = None
        self.irq: IrqLine | None = None
        self._cti: Timer | None = None
        self.tx_bytes = 0
        self.overruns = 0
        self.lines = MSR_DCD | MSR_DSR | MSR_CTS  # modem inputs from the backend
        self._power_on()

    def _power_on(self) -> None:
        # QEMU serial_reset: 9600 8N1, OUT2 set, THR/transmitter empty, DCD/DSR/CTS up.
        self.rbr = 0
        self.thr = 0
        self.ier = 0
        self.iir = IIR_NO_INT
        self.lcr = 0
        self.mcr = 0x08
        self.lsr = LSR_TEMT | LSR_THRE
        self.msr = self.lines & 0xF0
        self.scr = 0
        self.fcr = 0
        self.divider = 0x0C
        self.rx_fifo: list[int] = []
        self.thr_ipending = 0
        self.timeout_ipending = 0
        self._itl = 1
        # QEMU serial_reset: 9600 baud, 10-bit frames, until the guest programs LCR/divisor.
        self._char_ns = NS_PER_S // 9600 * 10

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx) -> None:
        super().attach(ctx)
        self.irq = ctx.irqs.isa(self.irq_number, self.name)
        self._cti = ctx.clock.timer(self._cti_fired, f"{self.name}-cti")

    def pio_ranges(self) -> list[Range]:
        return [Range(self.base, 8, self._read, self._write, self.name, self, frozenset({1}))]

    def reset(self) -> None:
        self._power_on()
        if self._cti is not None:
            self._cti.cancel()
        if self.irq is not None:
            self.irq.lower()

    # ---- derived state ------------------------------------------------------------------
    def _char_time(self) -> int:
        """Nanoseconds per character frame at the current divisor and line format."""
        if self.divider == 0:
            return getattr(self, "_char_ns", NS_PER_S // 9600 * 10)
        frame = 1 + (self.lcr & 3) + 5 + (2 if self.lcr & 4 else 1) + (1 if self.lcr & 8 else 0)
        speed = BAUD_BASE // self.divider
        return (NS_PER_S // max(speed, 1)) * frame

    @property
    def baud(self) -> int:
        return BAUD_BASE // self.divider if self.divider else 0

    def _update_irq(self) -> None:
        """Highest priority first: line status, RX timeout/data, THR empty, modem status."""
        ier, lsr = self.ier, self.lsr
        if ier & IER_RLSI and lsr & LSR_INT_ANY:
            iid = IIR_RLSI
        elif ier & IER_RDI and self.timeout_ipending:
            iid = IIR_CTI  # QEMU (and real parts): IER.RDI masks the timeout too
        elif ier & IER_RDI and lsr & LSR_DR and (
                not self.fcr & FCR_FE or len(self.rx_fifo) >= self._itl):
            iid = IIR_RDI
        elif ier & IER_THRI and self.thr_ipending:
            iid = IIR_THRI
        elif ier & IER_MSI and self.msr & MSR_ANY_DELTA:
            iid = IIR_MSI
        else:
            iid = IIR_NO_INT
        self.iir = iid | (self.iir & 0xF0)
        if self.irq is not None:
            self.irq.set_level(iid != IIR_NO_INT)

    def _arm_cti(self) -> None:
        if self._cti is not None:
            self._cti.arm_in(4 * self._char_ns)

    def _cti_fired(self, deadline: int) -> None:
        if self.rx_fifo:
            self.timeout_ipending = 1
            self._update_irq()

    # ---- receive side (called by the daemon) --------------------------------------------
    def can_receive(self) -> int:
        if self.mcr & MCR_LOOP:
            return 0  # the serial input is disconnected in loopback
        if self.fcr & FCR_FE:
            return FIFO_SIZE - len(self.rx_fifo)
        return 0 if self.lsr & LSR_DR else 1

    def receive(self, data: bytes) -> int:
        """Take as many bytes as the receiver has room for; returns how many were taken."""
        n = min(len(data), self.can_receive())
        if n:
            self._receive(data[:n])
        return n

    def receive_break(self) -> None:
        """A break condition on the line: a NUL with BI (QEMU serial_receive_break)."""
        self.rbr = 0
        self._fifo_put(0)
        self.lsr |= LSR_BI | LSR_DR
        self._update_irq()

    def set_modem_lines(self, cts: bool, dsr: bool, dcd: bool, ri: bool) -> None:
        """Modem status inputs from the backend (a socket's peer coming and going: DCD)."""
        new = (MSR_CTS if cts else 0) | (MSR_DSR if dsr else 0) | (MSR_DCD if dcd else 0) | (
            MSR_RI if ri else 0)
        old, self.lines = self.lines, new
        if self.mcr & MCR_LOOP or old == new:
            return
        delta = (old ^ new) >> 4
        if not (old & MSR_RI and not new & MSR_RI):
            delta &= ~MSR_TERI  # TERI only on the trailing (1 -> 0) edge of RI
        self.msr = new | (self.msr & MSR_ANY_DELTA) | delta
        self._update_irq()

    def _fifo_put(self, b: int) -> None:
        # Receive overruns do not overwrite FIFO contents (QEMU recv_fifo_put).
        if len(self.rx_fifo) < FIFO_SIZE:
            self.rx_fifo.append(b)
        else:
            self.lsr |= LSR_OE
            self.overruns += 1

    def _receive(self, data: bytes) -> None:
        if self.fcr & FCR_FE:
            for b in data:
                self._fifo_put(b)
            self.lsr |= LSR_DR
            self._arm_cti()
        else:
            for b in data:
                if self.lsr & LSR_DR:
                    self.lsr |= LSR_OE
                    self.overruns += 1
                self.rbr = b
                self.lsr |= LSR_DR
        self._update_irq()

    # ---- transmit -----------------------------------------------------------------------
    def _transmit(self, b: int) -> None:
        if self.mcr & MCR_LOOP:
            self._receive(bytes((b,)))
        elif self.backend is not None:
            self.backend.write(bytes((b,)))
        self.tx_bytes += 1
        self.lsr |= LSR_THRE | LSR_TEMT
        if not self.thr_ipending:
            self.thr_ipending = 1
            self._update_irq()

    # ---- registers ----------------------------------------------------------------------
    def _write(self, off: int, size: int, val: int) -> None:
        val &= 0xFF
        if off == 0:
            if self.lcr & LCR_DLAB:
                self.divider = (self.divider & 0xFF00) | val
                self._char_ns = self._char_time()
                return
            self.thr = val
            self.thr_ipending = 0
            self.lsr &= ~(LSR_THRE | LSR_TEMT)
            self._update_irq()
            self._transmit(val)
        elif off == 1:
            if self.lcr & LCR_DLAB:
                self.divider = (self.divider & 0x00FF) | val << 8
                self._char_ns = self._char_time()
                return
            changed = (self.ier ^ val) & 0x0F
            self.ier = val & 0x0F
            # Enabling ETBEI with THR empty raises THRE even if an IIR read cleared it before
            # (QEMU, after Bochs: Windows toggles IER to get it); only on the rising edge.
            if changed & IER_THRI:
                self.thr_ipending = 1 if self.ier & IER_THRI and self.lsr & LSR_THRE else 0
            if changed:
                self._update_irq()
        elif off == 2:
            self._write_fcr(val)
        elif off == 3:
            self.lcr = val
            self._char_ns = self._char_time()
        elif off == 4:
            self.mcr = val & 0x1F
        elif off == 7:
            self.scr = val
        else:  # LSR, MSR: read-only
            self.guest_error(f"write to read-only UART register {off}")

    def _write_fcr(self, val: int) -> None:
        if (val ^ self.fcr) & FCR_FE:
            val |= FCR_XFR | FCR_RFR  # toggling the enable flushes both FIFOs
        if val & FCR_RFR:
            self.lsr &= ~(LSR_DR | LSR_BI)
            if self._cti is not None:
                self._cti.cancel()
            self.timeout_ipending = 0
            self.rx_fifo.clear()
        if val & FCR_XFR:
            self.lsr |= LSR_THRE
            self.thr_ipending = 1
        self.fcr = val & FCR_STICKY
        self._itl = TRIGGER_LEVELS[val >> 6 & 3]
        if self.fcr & FCR_FE:
            self.iir |= IIR_FE
        else:
            self.iir &= ~IIR_FE
        self._update_irq()
        if val & FCR_RFR and self.on_rx_space is not None and not self.mcr & MCR_LOOP:
            self.on_rx_space()

    def _read(self, off: int, size: int) -> int:
        if off == 0:
            if self.lcr & LCR_DLAB:
                return self.divider & 0xFF
            return self._read_rbr()
        if off == 1:
            return self.divider >> 8 if self.lcr & LCR_DLAB else self.ier
        if off == 2:
            ret = self.iir
            if ret & IIR_ID == IIR_THRI and not ret & 0x08:
                self.thr_ipending = 0
                self._update_irq()
            return ret
        if off == 3:
            return self.lcr
        if off == 4:
            return self.mcr
        if off == 5:
            ret = self.lsr
            if self.lsr & (LSR_BI | LSR_OE):
                self.lsr &= ~(LSR_BI | LSR_OE)
                self._update_irq()
            return ret
        if off == 6:
            if self.mcr & MCR_LOOP:
                # Outputs wired to inputs: OUT2->DCD, OUT1->RI, RTS->CTS, DTR->DSR.
                m = self.mcr
                return (m & 0x0C) << 4 | (m & 0x02) << 3 | (m & 0x01) << 5
            ret = self.msr
            if self.msr & MSR_ANY_DELTA:
                self.msr &= 0xF0
                self._update_irq()
            return ret
        return self.scr

    def _read_rbr(self) -> int:
        if self.fcr & FCR_FE:
            ret = self.rx_fifo.pop(0) if self.rx_fifo else 0
            if not self.rx_fifo:
                self.lsr &= ~(LSR_DR | LSR_BI)
                if self._cti is not None:
                    self._cti.cancel()
            else:
                self._arm_cti()
            self.timeout_ipending = 0
        else:
            ret = self.rbr
            self.lsr &= ~(LSR_DR | LSR_BI)
        self._update_irq()
        if not self.mcr & MCR_LOOP and self.on_rx_space is not None:
            self.on_rx_space()
        return ret

    # ---- snapshot -----------------------------------------------------------------------
    @property
    def cti_deadline(self) -> int:
        t = self._cti
        return t.deadline if t is not None and t.deadline is not None else -1

    @cti_deadline.setter
    def cti_deadline(self, v: int) -> None:
        if self._cti is None:
            return
        if v is None or v < 0:
            self._cti.cancel()
        else:
            self._cti.arm(int(v))

    def post_restore(self) -> None:
        for f in ("rbr", "thr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr", "fcr"):
            setattr(self, f, int(getattr(self, f)) & 0xFF)
        self.ier &= 0x0F
        self.mcr &= 0x1F
        self.fcr &= FCR_STICKY
        self.divider &= 0xFFFF
        self.lines &= 0xF0
        self.rx_fifo = [int(b) & 0xFF for b in self.rx_fifo][:FIFO_SIZE]
        self.thr_ipending = 1 if self.thr_ipending else 0
        self.timeout_ipending = 1 if self.timeout_ipending else 0
        self._itl = TRIGGER_LEVELS[self.fcr >> 6 & 3]
        self._char_ns = self._char_time()
        self._update_irq()


def com(n: int, backend: CharBackend | None = None) -> Uart:
    """COMn (1-4) at its ISA address and IRQ: 0x3F8/4, 0x2F8/3, 0x3E8/4, 0x2E8/3."""
    if n not in COM_PORTS:
        raise ValueError(f"COM{n}: only COM1-COM4 exist")
    base, irq = COM_PORTS[n]
    return Uart(f"com{n}", base, irq, backend)
