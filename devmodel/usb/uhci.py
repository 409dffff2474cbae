"""The PIIX3 USB function, 00:01.2 (8086:7020, class 0C0300, INTD): a UHCI host controller
(Intel UHCI design guide 1.1) as QEMU's piix3-usb-uhci (hw/usb/hcd-uhci.c) shows it.

I/O BAR4, 32 bytes: USBCMD (0), USBSTS (2, write 1 to clear), USBINTR (4), FRNUM (6, writable
while halted), FLBASEADD (8, 4 KiB aligned), SOFMOD (0x0C, one byte), PORTSC1/2 (0x10/0x12).
Offsets past the two ports read as all-ones, which stops Linux's port counting as QEMU's 0xff7f
does (bit 7 of a real port always reads 1).

Frames. While USBCMD.RS is set a 1 ms Timer walks one frame-list entry per frame; while it is
clear there is no timer at all. If the daemon falls behind (a stall, a paused VM), at most
MAX_CATCHUP_FRAMES frames are run in one go and the rest are skipped (FRNUM jumps, as QEMU's
maxframes does). The walk (QEMU uhci_process_frame) follows horizontal links (breadth first),
enters QHs, and after a TD completes inside a QH writes the QH element pointer and goes on
vertically only if the TD's link has Vf set (depth first). Every walk is bounded
(hostile-guest-catalog 18, 19, 29):
- FRAME_MAX_LOOPS link steps per frame;
- a visited set of QHs: coming back to a QH with no transaction done since ends the frame
  (a QH loop is legal for bandwidth reclamation, so a lap that did work may go round again,
  still under the loop limit; QEMU's QhDb with UHCI_MAX_QUEUES entries);
- a visited set of TDs executed in this lap: a TD executed twice in one lap ends the frame;
- FRAME_BYTE_BUDGET bytes per frame (QEMU's default bandwidth, 1280 = USB 1.1 full speed).
A TD or QH outside guest RAM, or a frame list entry outside RAM, is a host system error
(USBSTS.HSE, the controller halts, PCI status "received master abort"); a MaxLen of 0x500 to
0x7FE is a consistency error (USBSTS.HCPE, halt; UHCI 1.1 section 3.2.2). Both interrupt
regardless of USBINTR, as the spec and QEMU do.

With USBCMD.SWDBG set the controller single-steps: Run/Stop clears after each transaction
(UHCI 1.1 section 2.1.1; QEMU ignores the bit).

Transactions complete synchronously (no async packets). TD status is written back: actual
length, Active, Stalled, Data Buffer Error, Babble, NAK, CRC/Timeout, Bitstuff (never set:
there is no wire), and the C_ERR counter, decremented on a timeout (no device at the address)
and on a NAKed SETUP; reaching 0 retires the TD with USBERRINT. IOC and short-packet
interrupts are raised at the end of the frame through USBSTS.USBINT and the INTx pin, with
QEMU's hidden status2 to tell IOC (USBINTR bit 2) from SPD (bit 3).
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from devmodel.core.device import DeviceContext, SnapshotError
from devmodel.core.pci import STATUS, STATUS_REC_MASTER_ABORT, Bar, PciDevice
from devmodel.core.regs import Reg, RegisterFile

from .core import ACK, BABBLE, NAK, NODEV, PID_IN, PID_OUT, PID_SETUP, STALL, UsbDevice, walk

log = logging.getLogger("devmodel.usb.uhci")

PCI_SLOT = 1
PCI_FN = 2
NB_PORTS = 2
IO_SIZE = 32

FRAME_NS = 1_000_000
FRAME_MAX_LOOPS = 256  # QEMU FRAME_MAX_LOOPS: link steps per frame
MAX_QH_PER_LAP = 128  # QEMU UHCI_MAX_QUEUES: QH visited-set size
FRAME_BYTE_BUDGET = 1280  # QEMU's default "bandwidth" property: bytes per frame
MAX_CATCHUP_FRAMES = 64  # frames run at once after a stall; older ones are skipped
MAX_PACKET_LEN = 0x500  # TD MaxLen values above 0x4FF (but 0x7FF) are invalid

# USBCMD
CMD_RS = 1 << 0
CMD_HCRESET = 1 << 1
CMD_GRESET = 1 << 2
CMD_EGSM = 1 << 3
CMD_FGR = 1 << 4
CMD_SWDBG = 1 << 5
CMD_CF = 1 << 6
CMD_MAXP = 1 << 7

# USBSTS
STS_USBINT = 1 << 0
STS_USBERRINT = 1 << 1
STS_RD = 1 << 2
STS_HSE = 1 << 3
STS_HCPE = 1 << 4
STS_HCH = 1 << 5

# USBINTR
INTR_TIMEOUT_CRC = 1 << 0
INTR_RESUME = 1 << 1
INTR_IOC = 1 << 2
INTR_SP = 1 << 3

# PORTSC
PORT_CCS = 1 << 0
PORT_CSC = 1 << 1
PORT_PE = 1 << 2
PORT_PEC = 1 << 3
PORT_ALWAYS1 = 1 << 7
PORT_RD = 1 << 6
PORT_LSDA = 1 << 8
PORT_PR = 1 << 9
PORT_SUSP = 1 << 12
PORT_WMASK = PORT_PE | PORT_RD | PORT_PR | PORT_SUSP
PORT_W1C = PORT_CSC | PORT_PEC

# TD control/status
TD_SPD = 1 << 29
TD_CERR_SHIFT = 27
TD_LS = 1 << 26
TD_IOS = 1 << 25
TD_IOC = 1 << 24
TD_ACTIVE = 1 << 23
TD_STALLED = 1 << 22
TD_DBE = 1 << 21
TD_BABBLE = 1 << 20
TD_NAK = 1 << 19
TD_CRC_TIMEOUT = 1 << 18
TD_BITSTUFF = 1 << 17

LINK_TERMINATE = 1
LINK_QH = 2
LINK_VF = 4

# walk results
_NEXT_QH = 0
_COMPLETE = 1
_STOP = 2

_TD = struct.Struct("<IIII")
_QH = struct.Struct("<II")


class Uhci(PciDevice):
    # expire_ns is not state: it is on the clock of the process that took the snapshot; a
    # restored running controller starts its next frame 1 ms after the restore.
    SNAPSHOT_FIELDS = ("config", "irq_level", "regs", "status2", "usb_state")

    def __init__(self, name: str = "piix3-usb-uhci") -> None:
        super().__init__(name, vendor_id=0x8086, device_id=0x7020, class_code=0x0C0300, revision=0x01,
                         irq_pin=4)  # QEMU usb_uhci_common_realize: pin D for PIIX
        self.add_bar(Bar(4, IO_SIZE, True, self._io_read, self._io_write, "uhci"))
        self.rf = RegisterFile([
            Reg("USBCMD", 0x00, 2, 0, 0x00FF, on_write=self._cmd_written),
            Reg("USBSTS", 0x02, 2, STS_HCH, 0, w1c=0x3F, on_write=self._sts_written),
            Reg("USBINTR", 0x04, 2, 0, 0x000F, on_write=lambda o, n: self._update_irq_state()),
            Reg("FRNUM", 0x06, 2, 0, 0x07FF, on_write=self._frnum_written),
            Reg("FLBASEADD", 0x08, 4, 0, 0xFFFFF000),
            Reg("SOFMOD", 0x0C, 1, 0x40, 0x7F),
            Reg("PORTSC1", 0x10, 2, PORT_ALWAYS1, PORT_WMASK, w1c=PORT_W1C,
                on_write=lambda o, n: self._port_written(0, o, n)),
            Reg("PORTSC2", 0x12, 2, PORT_ALWAYS1, PORT_WMASK, w1c=PORT_W1C,
                on_write=lambda o, n: self._port_written(1, o, n)),
        ], on_hole=self._hole, hole=0xFF)
        self.ports: list[UsbDevice | None] = [None] * NB_PORTS
        self.status2 = 0
        self.expire_ns = 0
        self.frame_timer = None
        self.pending_int = 0
        self._init_config()

    def _init_config(self) -> None:
        self.config[0x60] = 0x10  # SBRN: USB 1.0 (QEMU USB_SBRN = USB_RELEASE_1)
        self.config[0x6A] = 0x01  # QEMU uhci_reset: "usb clock"

    # ---- wiring ---------------------------------------------------------------------------
    def attach(self, ctx: DeviceContext) -> None:
        super().attach(ctx)
        self.frame_timer = ctx.clock.timer(self._on_frame_timer, f"{self.name}-frame")
        for n, dev in enumerate(self.ports):
            if dev is not None:
                dev.bind(ctx.clock.now, lambda n=n: self._wakeup(n))

    def plug(self, port: int, dev: UsbDevice) -> None:
        """Connect a device to root port 0 or 1 (before or after the machine is built)."""
        if self.ports[port] is not None:
            raise ValueError(f"{self.name}: port {port + 1} is taken")
        self.ports[port] = dev
        if self.ctx is not None:
            dev.bind(self.ctx.clock.now, lambda n=port: self._wakeup(n))
        self._port_connect(port)

    def unplug(self, port: int) -> UsbDevice | None:
        """Disconnect root port `port` (QEMU uhci_detach): CCS clears with CSC set, an
        enabled port is disabled with PEC set, and a globally suspended controller resumes.
        TDs the guest still has queued for the device are answered by nobody from the next
        frame on (CRC/timeout, C_ERR counts down), as on a real bus; the device model keeps
        no packet for it (transactions complete synchronously), and the device gets
        `detached()`. Returns the device, or None if the port was empty."""
        dev = self.ports[port]
        if dev is None:
            return None
        self.ports[port] = None
        key = f"PORTSC{port + 1}"
        v = self.rf[key]
        if v & PORT_CCS:
            v = (v & ~PORT_CCS) | PORT_CSC
        if v & PORT_PE:
            v = (v & ~PORT_PE) | PORT_PEC
        self.rf[key] = v
        dev.detached()
        self._resume()
        return dev

    def detach(self, dev: UsbDevice) -> bool:
        """Disconnect `dev` wherever it is plugged in (a root port or a hub port)."""
        for n, d in enumerate(self.ports):
            if d is dev:
                self.unplug(n)
                return True
        for parent in self.all_devices():
            for n, child in enumerate(getattr(parent, "ports", ())):
                if child is dev:
                    parent.unplug(n)  # type: ignore[attr-defined]
                    return True
        return False

    def _port_connect(self, n: int) -> None:
        dev = self.ports[n]
        if dev is None:
            return
        key = f"PORTSC{n + 1}"
        v = self.rf[key] | PORT_CCS | PORT_CSC
        v = v | PORT_LSDA if dev.speed_low else v & ~PORT_LSDA
        self.rf[key] = v
        self._resume()

    def reset(self) -> None:
        super().reset()
        self._init_config()
        self._hc_reset()

    def _hc_reset(self) -> None:
        """QEMU uhci_reset: registers to their defaults, ports show connections again."""
        if self.frame_timer is not None:
            self.frame_timer.cancel()
        self.rf.reset()
        self.status2 = 0
        self.pending_int = 0
        self.expire_ns = 0
        for n, dev in enumerate(self.ports):
            if dev is not None:
                dev.usb_reset()
                self._port_connect(n)
        self._update_irq_state()

    # ---- register access ------------------------------------------------------------------
    def _hole(self, what: str) -> None:
        self.counters[f"uhci {what}"] += 1

    def _io_read(self, off: int, size: int) -> int:
        return self.rf.read(off, size)

    def _io_write(self, off: int, size: int, value: int) -> None:
        self.rf.write(off, size, value)

    def _cmd_written(self, old: int, new: int) -> None:
        if new & CMD_GRESET:
            # Global reset: a USB reset on every port plus a controller reset (QEMU does both
            # at once; software holding GRESET for 10 ms sees the same result).
            self._hc_reset()
            self.rf["USBCMD"] = CMD_GRESET & new
            return
        if new & CMD_HCRESET:
            self._hc_reset()  # HCRESET reads back 0: the reset is already over
            return
        if new & CMD_RS and not old & CMD_RS:
            self.rf["USBSTS"] = self.rf["USBSTS"] & ~STS_HCH
            self._start_frames()
        elif not new & CMD_RS:
            self._stop_frames()
        if new & CMD_FGR and not old & CMD_FGR:
            pass  # resume signalling: nothing to drive on an emulated bus
        self._update_irq_state()

    def _start_frames(self) -> None:
        assert self.ctx is not None and self.frame_timer is not None
        self.expire_ns = self.ctx.clock.now() + FRAME_NS
        self.frame_timer.arm(self.expire_ns)

    def _stop_frames(self) -> None:
        if self.frame_timer is not None:
            self.frame_timer.cancel()
        self.rf["USBSTS"] = self.rf["USBSTS"] | STS_HCH

    def _halt(self) -> None:
        self.rf["USBCMD"] = self.rf["USBCMD"] & ~CMD_RS
        self._stop_frames()

    def _sts_written(self, old: int, new: int) -> None:
        cleared = old & ~new
        if cleared & STS_USBINT:
            self.status2 = 0  # QEMU: the hidden IOC/SPD latch goes with USBINT
        # HCHalted is read-only status: writing 1 does not clear it while halted
        if old & STS_HCH and not self.rf["USBCMD"] & CMD_RS:
            self.rf["USBSTS"] = self.rf["USBSTS"] | STS_HCH
        self._update_irq_state()

    def _frnum_written(self, old: int, new: int) -> None:
        if not self.rf["USBSTS"] & STS_HCH:
            self.rf["FRNUM"] = old  # QEMU: FRNUM is writable only while halted
            self.counters["FRNUM write while running"] += 1

    def _port_written(self, n: int, old: int, new: int) -> None:
        key = f"PORTSC{n + 1}"
        dev = self.ports[n]
        if dev is not None and new & PORT_PR and not old & PORT_PR:
            dev.usb_reset()
        if not new & PORT_CCS and new & PORT_PE:
            new &= ~PORT_PE  # nothing connected: the port cannot be enabled
        self.rf[key] = new

    def _resume(self) -> None:
        """QEMU uhci_resume: a connect or remote wakeup while globally suspended."""
        if self.rf["USBCMD"] & CMD_EGSM:
            self.rf["USBCMD"] = self.rf["USBCMD"] | CMD_FGR
            self.rf["USBSTS"] = self.rf["USBSTS"] | STS_RD
            self._update_irq_state()

    def _wakeup(self, n: int) -> None:
        key = f"PORTSC{n + 1}"
        v = self.rf[key]
        if v & PORT_SUSP and not v & PORT_RD:
            self.rf[key] = v | PORT_RD
            self._resume()

    def _update_irq_state(self) -> None:
        """QEMU uhci_update_irq."""
        sts = self.rf["USBSTS"]
        intr = self.rf["USBINTR"]
        level = ((self.status2 & 1 and intr & INTR_IOC) or (self.status2 & 2 and intr & INTR_SP)
                 or (sts & STS_USBERRINT and intr & INTR_TIMEOUT_CRC)
                 or (sts & STS_RD and intr & INTR_RESUME) or sts & (STS_HSE | STS_HCPE))
        if bool(level) != bool(self.irq_level):
            self.set_irq(1 if level else 0)

    # ---- the frame clock ------------------------------------------------------------------
    def _on_frame_timer(self, deadline: int) -> None:
        if not self.rf["USBCMD"] & CMD_RS:
            return
        assert self.ctx is not None and self.frame_timer is not None
        now = self.ctx.clock.now()
        due = (now - self.expire_ns) // FRAME_NS + 1 if now >= self.expire_ns else 0
        if due > MAX_CATCHUP_FRAMES:
            skipped = due - MAX_CATCHUP_FRAMES
            self.counters["frames skipped after a stall"] += skipped
            self.rf["FRNUM"] = (self.rf["FRNUM"] + skipped) & 0x7FF
            self.expire_ns += skipped * FRAME_NS
            due = MAX_CATCHUP_FRAMES
        for _ in range(due):
            self.expire_ns += FRAME_NS
            self.run_frame()
            if not self.rf["USBCMD"] & CMD_RS:
                return  # halted inside the frame (HSE, HCPE, guest cleared RS in a callback)
        self.frame_timer.arm(self.expire_ns)

    def run_frame(self) -> None:
        """Process the frame FRNUM points at, then advance FRNUM (one 1 ms frame)."""
        if self.bus_master:
            self.pending_int = 0
            self._process_frame()
            if self.pending_int:
                self.status2 |= self.pending_int
                self.rf["USBSTS"] = self.rf["USBSTS"] | STS_USBINT
                self._update_irq_state()
        else:
            self.counters["frame without bus mastering"] += 1
        if self.rf["USBCMD"] & CMD_RS:
            self.rf["FRNUM"] = (self.rf["FRNUM"] + 1) & 0x7FF

    def _dma_error(self, what: str, addr: int) -> None:
        self.guest_error(f"uhci {what}")
        log.debug("%s: %s at %#x", self.name, what, addr)
        self.rf["USBSTS"] = self.rf["USBSTS"] | STS_HSE
        self.config[STATUS + 1] |= STATUS_REC_MASTER_ABORT >> 8
        self._halt()
        self._update_irq_state()

    def _process_error(self, what: str, value: int) -> None:
        self.guest_error(f"uhci {what}")
        log.debug("%s: %s: %#x", self.name, what, value)
        self.rf["USBSTS"] = self.rf["USBSTS"] | STS_HCPE
        self._halt()
        self._update_irq_state()

    def _process_frame(self) -> None:
        assert self.ctx is not None
        mem = self.ctx.memory
        frame_addr = self.rf["FLBASEADD"] + ((self.rf["FRNUM"] & 0x3FF) << 2)
        link = mem.read_int(frame_addr, 4)
        if link is None:
            self._dma_error("frame list entry outside RAM", frame_addr)
            return
        qh_seen: set[int] = set()
        td_seen: set[int] = set()
        progress = 0
        frame_bytes = 0
        curr_qh = 0
        qh_link = 0
        for _ in range(FRAME_MAX_LOOPS):
            if link & LINK_TERMINATE:
                return
            if frame_bytes >= FRAME_BYTE_BUDGET:
                self.counters["frame byte budget reached"] += 1
                return
            addr = link & ~0xF & 0xFFFFFFFF
            if link & LINK_QH:
                if addr in qh_seen or len(qh_seen) >= MAX_QH_PER_LAP:
                    if not progress:
                        self.counters["QH loop without progress: frame ended"] += 1
                        return
                    progress = 0  # another lap is allowed after work was done
                    qh_seen.clear()
                    td_seen.clear()
                qh_seen.add(addr)
                raw = mem.read(addr, 8)
                if raw is None:
                    self._dma_error("QH outside RAM", addr)
                    return
                qh_link, el_link = _QH.unpack(raw)
                if el_link & LINK_TERMINATE:
                    curr_qh = 0
                    link = qh_link
                else:
                    curr_qh = addr
                    link = el_link
                continue
            if addr in td_seen:
                self.counters["TD revisited in one lap: frame ended"] += 1
                return
            td_seen.add(addr)
            raw = mem.read(addr, 16)
            if raw is None:
                self._dma_error("TD outside RAM", addr)
                return
            td_link, ctrl, token, buf = _TD.unpack(raw)
            executed = bool(ctrl & TD_ACTIVE)  # an inactive TD is skipped, no transaction
            result, new_ctrl, nbytes = self._handle_td(ctrl, token, buf)
            if result == _STOP:
                if new_ctrl != ctrl and not self.rf["USBSTS"] & STS_HSE:
                    mem.write_int(addr + 4, 4, new_ctrl)
                return
            if new_ctrl != ctrl and not mem.write_int(addr + 4, 4, new_ctrl):
                self._dma_error("TD status write outside RAM", addr)
                return
            if result == _NEXT_QH:
                if executed and self._single_step():
                    return
                link = qh_link if curr_qh else td_link
                continue
            # completed
            progress += 1
            frame_bytes += nbytes
            link = td_link
            if curr_qh:
                if not mem.write_int(curr_qh + 4, 4, td_link):
                    self._dma_error("QH element write outside RAM", curr_qh)
                    return
                if td_link & LINK_TERMINATE or not td_link & LINK_VF:
                    curr_qh = 0  # breadth first: done with this queue for this frame
                    link = qh_link
            if self._single_step():
                return
        self.counters["frame loop limit reached"] += 1

    def _single_step(self) -> bool:
        """Software debug mode (USBCMD.SWDBG, UHCI 1.1 section 2.1.1): the controller clears
        Run/Stop after each transaction, so software can step the schedule one TD at a time;
        setting RS again runs the next one. QEMU ignores the bit. True if it stopped."""
        if not self.rf["USBCMD"] & CMD_SWDBG:
            return False
        self._halt()
        return True

    def _find(self, addr: int) -> UsbDevice | None:
        for n, dev in enumerate(self.ports):
            if dev is None:
                continue
            v = self.rf[f"PORTSC{n + 1}"]
            if v & PORT_PE and not v & (PORT_SUSP | PORT_PR):
                found = dev.find(addr)
                if found is not None:
                    return found
        return None

    def _handle_td(self, ctrl: int, token: int, buf: int) -> tuple[int, int, int]:
        """One TD (QEMU uhci_handle_td + uhci_complete_td). Returns (result, new ctrl,
        bytes moved)."""
        if not ctrl & TD_ACTIVE:
            if ctrl & TD_IOC:
                self.pending_int |= 1  # UHCI 1.1: IOC even for an inactive TD
            return _NEXT_QH, ctrl, 0
        pid = token & 0xFF
        field = token >> 21
        if MAX_PACKET_LEN <= field < 0x7FF:
            self._process_error("TD MaxLen invalid", field)
            return _STOP, ctrl, 0
        max_len = (field + 1) & 0x7FF
        if pid not in (PID_IN, PID_OUT, PID_SETUP):
            self._process_error("TD PID invalid", pid)  # QEMU: frame interrupted
            return _STOP, ctrl, 0
        assert self.ctx is not None
        mem = self.ctx.memory
        devaddr = (token >> 8) & 0x7F
        epnum = (token >> 15) & 0xF
        toggle = (token >> 19) & 1
        dev = self._find(devaddr)
        data = b""
        if pid != PID_IN and max_len:
            got = mem.read(buf, max_len)
            if got is None:
                self._dma_error("TD buffer outside RAM", buf)
                return _STOP, ctrl, 0
            data = bytes(got)
        if dev is None:
            res, payload, sent = NODEV, b"", 0
        else:
            res, payload, sent = dev.handle_packet(pid, epnum, toggle, data, max_len)
        if res == ACK:
            if pid == PID_IN:
                n = len(payload)
                if n > max_len:
                    res = BABBLE
                else:
                    if sent != toggle:
                        self.counters["IN data toggle mismatch"] += 1
                    if n and not mem.write(buf, payload):
                        self._dma_error("TD buffer outside RAM", buf)
                        return _STOP, ctrl, 0
            else:
                n = max_len
        if res == ACK:
            ctrl = (ctrl & ~0x7FF) | ((n - 1) & 0x7FF)
            # QEMU: NAK may be left over from an earlier frame; win2k relies on it cleared
            ctrl &= ~(TD_ACTIVE | TD_NAK)
            if ctrl & TD_IOC:
                self.pending_int |= 1
            if pid == PID_IN and ctrl & TD_SPD and n < max_len:
                self.pending_int |= 2
                return _NEXT_QH, ctrl, n  # short packet: the QH element is not advanced
            return _COMPLETE, ctrl, max(n, 1)
        if res == STALL or res == BABBLE:
            ctrl |= TD_STALLED | (TD_BABBLE if res == BABBLE else 0)
            ctrl &= ~TD_ACTIVE
            self._error_done(ctrl)
            return (_STOP if res == BABBLE else _NEXT_QH), ctrl, 0
        if res == NAK:
            ctrl |= TD_NAK
            if pid != PID_SETUP:
                return _NEXT_QH, ctrl, 0
        # timeout (nobody answered) or a NAKed SETUP: count down C_ERR (0 = retry forever)
        ctrl |= TD_CRC_TIMEOUT
        err = (ctrl >> TD_CERR_SHIFT) & 3
        if err:
            err -= 1
            if not err:
                ctrl &= ~TD_ACTIVE
                self._error_done(ctrl)
        ctrl = (ctrl & ~(3 << TD_CERR_SHIFT)) | (err << TD_CERR_SHIFT)
        return _NEXT_QH, ctrl, 0

    def _error_done(self, ctrl: int) -> None:
        self.rf["USBSTS"] = self.rf["USBSTS"] | STS_USBERRINT
        if ctrl & TD_IOC:
            self.pending_int |= 1
        self._update_irq_state()

    # ---- snapshot -------------------------------------------------------------------------
    @property
    def regs(self) -> dict[str, int]:
        return self.rf.snapshot()

    @regs.setter
    def regs(self, values: dict[str, int]) -> None:
        try:
            self.rf.restore(values)
        except ValueError as e:
            raise SnapshotError(f"{self.name}: {e}") from None

    @property
    def usb_state(self) -> dict[str, Any]:
        return {str(n): None if d is None else d.snapshot_state() for n, d in enumerate(self.ports)}

    @usb_state.setter
    def usb_state(self, st: dict[str, Any]) -> None:
        for n, d in enumerate(self.ports):
            cst = st.get(str(n))
            if (d is None) != (cst is None):
                raise SnapshotError(f"{self.name}: snapshot has a different device on port {n + 1}")
            if d is not None:
                try:
                    d.restore_state(cst)
                except (ValueError, KeyError, TypeError) as e:
                    raise SnapshotError(f"{self.name}: port {n + 1}: {e}") from None

    def post_restore(self) -> None:
        super().post_restore()
        self.status2 &= 3
        if self.frame_timer is not None:
            self.frame_timer.cancel()
            if self.rf["USBCMD"] & CMD_RS and self.ctx is not None:
                self._start_frames()
        self._update_irq_state()

    def all_devices(self) -> list[UsbDevice]:
        return walk([d for d in self.ports if d is not None])
