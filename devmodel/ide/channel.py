"""One IDE channel (QEMU IDEBus): the command block (0x1F0-0x1F7 / 0x170-0x177), the
control block (0x3F6 / 0x376), two device positions, the channel's interrupt line and its
bus master.

Register semantics follow QEMU hw/ide/core.c ide_ioport_read/write, ide_status_read,
ide_ctrl_write and ide_data_*, because SeaBIOS and Linux libata were tested against them:
writes to registers 1-6 reach both devices and are dropped while the selected one is BSY or
DRQ; reads from an empty channel, or of the error/status of an absent device 1, return 0.

Interrupts (ATA-6 5.2.9, legacy ISA level semantics): a device sets INTRQ when a command or
data block completes; reading the status register (not the alternate status) or writing a
command clears it; nIEN in the device control register masks the pin without forgetting the
pending interrupt. Every interrupt presented to the controller also sets the bus master's
Interrupt bit, which is what Linux ata_bmdma_port_intr and ata_sff_irq_clear look at.

SRST: setting bit 2 of device control puts both devices in reset (BSY); clearing it runs
the reset and the diagnostic, leaving the signatures in the task file (QEMU does the same
work in a bottom half after the rising edge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devmodel.core.irq import IrqLine

from . import ata
from .bmdma import BusMaster
from .drive import DMA_NONE, AtaDrive

if TYPE_CHECKING:
    from .piix import PiixIde

ALL_ONES = (0, 0xFF, 0xFFFF, 0, 0xFFFFFFFF)
# One rep ins/outs moves at most a page (Xen splits at page boundaries; the machine clamps
# count to a page); every PIO block is >= 512 bytes, so each pass of the rep loops consumes a
# block or stops. The bound only has to exceed 4096 / 512 + 1.
MAX_REP_BLOCKS = 64


class IdeChannel:
    def __init__(self, dev: PiixIde, index: int) -> None:
        self.dev = dev
        self.index = index
        self.bm = BusMaster()
        self.line: IrqLine | None = None
        self.drives: list[AtaDrive] = []
        self.unit = 0
        self.devctl = 0
        self.irq_pending = False
        self.dma_unit = -1  # the device whose DMA command waits for (or runs on) the bus master

    def set_drives(self, drives: list[AtaDrive]) -> None:
        self.drives = drives
        self.cur = drives[0]
        self.empty = not any(d.present for d in drives)

    def reset(self) -> None:
        """QEMU ide_bus_reset plus the bus-master reset."""
        self.unit = 0
        self.devctl = 0
        self.dma_unit = -1
        for d in self.drives:
            d.reset()
        self.cur = self.drives[0]
        self.bm.reset()
        self.irq_pending = False
        self._update_line()

    # ---- interrupt ------------------------------------------------------------------------
    def set_irq(self) -> None:
        self.irq_pending = True
        if not self.devctl & ata.CTRL_NIEN:
            self.bm.status |= ata.BM_STATUS_INT
        self._update_line()

    def lower_irq(self) -> None:
        if self.irq_pending:
            self.irq_pending = False
            self._update_line()

    def _update_line(self) -> None:
        if self.line is not None:
            self.line.set_level(self.irq_pending and not self.devctl & ata.CTRL_NIEN)

    # ---- command block: 8 ports, the data port takes 16/32-bit accesses ---------------------
    def cmd_read(self, off: int, size: int) -> int:
        if off == 0:
            # The hot path of every PIO sector (rep insw arrives as `count` of these).
            d = self.cur
            p = d.pos
            e = p + size
            if e <= d.rd_end and d.status & ata.DRQ_STAT and size != 1:
                d.pos = e
                if size == 2:
                    v = d.w16[p >> 1]
                elif not p & 3:
                    v = d.w32[p >> 2]
                else:
                    v = int.from_bytes(d.buf[p:e], "little")
                if e >= d.rd_end:
                    d.transfer_done()
                return v
            return ALL_ONES[size] if size != 1 else 0xFF
        if size == 1:
            return self._reg_read(off)
        return sum(self._reg_read(off + i) << (8 * i) for i in range(size) if off + i < 8)

    def cmd_write(self, off: int, size: int, value: int) -> None:
        if off == 0:
            d = self.cur
            p = d.pos
            e = p + size
            if e <= d.wr_end and d.status & ata.DRQ_STAT and size != 1:
                d.pos = e
                if size == 2:
                    d.w16[p >> 1] = value
                elif not p & 3:
                    d.w32[p >> 2] = value
                else:
                    d.buf[p:e] = value.to_bytes(4, "little")
                if e >= d.wr_end:
                    d.transfer_done()
            elif d.inflight:
                d.channel.dev.counters["write_while_busy"] += 1
            return
        for i in range(size):
            if off + i < 8:
                self._reg_write(off + i, (value >> (8 * i)) & 0xFF)

    # ---- whole rep ins/outs at once (for a dispatcher that offers it, see piix.py) ---------
    def cmd_read_rep(self, off: int, size: int, count: int) -> bytes:
        """Exactly what `count` reads of (off, size) would return, concatenated little-endian,
        but moving whole runs of the PIO buffer with one slice each."""
        if off != 0 or size == 1:
            return b"".join(self.cmd_read(off, size).to_bytes(size, "little") for _ in range(count))
        out = bytearray()
        remaining = count * size
        for _ in range(MAX_REP_BLOCKS):
            d = self.cur
            avail = (d.rd_end - d.pos) // size * size if d.status & ata.DRQ_STAT else 0
            if remaining == 0 or avail <= 0:
                break
            take = min(remaining, avail)
            out += d.buf[d.pos : d.pos + take]
            d.pos += take
            remaining -= take
            if d.pos >= d.rd_end:
                d.transfer_done()
        return bytes(out) + b"\xff" * remaining

    def cmd_write_rep(self, off: int, size: int, data: bytes | memoryview) -> None:
        """Exactly what len(data)/size writes of (off, size) would do."""
        n = len(data) - len(data) % size
        if off != 0 or size == 1:
            for i in range(0, n, size):
                self.cmd_write(off, size, int.from_bytes(data[i : i + size], "little"))
            return
        i = 0
        for _ in range(MAX_REP_BLOCKS):
            d = self.cur
            avail = (d.wr_end - d.pos) // size * size if d.status & ata.DRQ_STAT else 0
            if i >= n or avail <= 0:
                if i < n and d.inflight:
                    self.dev.counters["write_while_busy"] += 1
                return
            take = min(n - i, avail)
            d.buf[d.pos : d.pos + take] = data[i : i + take]
            d.pos += take
            i += take
            if d.pos >= d.wr_end:
                d.transfer_done()

    def _reg_read(self, reg: int) -> int:
        s = self.cur
        if reg == 7 or reg == 1:
            v = 0 if self.empty or (s.unit == 1 and not s.present) else (
                s.status if reg == 7 else (s.hob_feature if self.devctl & ata.CTRL_HOB else s.error))
            if reg == 7:
                self.lower_irq()
            return v
        if self.empty:
            return 0
        hob = self.devctl & ata.CTRL_HOB
        if reg == 2:
            return s.hob_nsector if hob else s.nsector & 0xFF
        if reg == 3:
            return s.hob_sector if hob else s.sector
        if reg == 4:
            return s.hob_lcyl if hob else s.lcyl
        if reg == 5:
            return s.hob_hcyl if hob else s.hcyl
        if reg == 6:
            return s.select
        return 0xFF  # reg 0 as a byte

    def _reg_write(self, reg: int, val: int) -> None:
        if reg == 7:
            self.devctl &= ~ata.CTRL_HOB & 0xFF
            self.lower_irq()
            self.cur.exec_cmd(val)
            return
        if self.cur.status & (ata.BUSY_STAT | ata.DRQ_STAT):
            self.dev.guest_error("task file write while BSY/DRQ")
            if self.cur.inflight:
                self.dev.counters["write_while_busy"] += 1
            return
        if reg == 0:
            return  # a byte write to the data port
        self.devctl &= ~ata.CTRL_HOB & 0xFF
        for d in self.drives:  # both devices see every task-file write
            if reg == 1:
                d.hob_feature, d.feature = d.feature, val
            elif reg == 2:
                d.hob_nsector, d.nsector = d.nsector & 0xFF, val
            elif reg == 3:
                d.hob_sector, d.sector = d.sector, val
            elif reg == 4:
                d.hob_lcyl, d.lcyl = d.lcyl, val
            elif reg == 5:
                d.hob_hcyl, d.hcyl = d.hcyl, val
            else:
                d.select = val | ata.DEV_ALWAYS_ON
        if reg == 6:
            self.unit = (val >> 4) & 1
            self.cur = self.drives[self.unit]

    # ---- control block ------------------------------------------------------------------
    def ctl_read(self, off: int, size: int) -> int:
        """Alternate status: the status without clearing the interrupt."""
        s = self.cur
        return 0 if self.empty or (s.unit == 1 and not s.present) else s.status

    def ctl_write(self, off: int, size: int, val: int) -> None:
        old = self.devctl
        self.devctl = val & 0xFF
        if not old & ata.CTRL_SRST and val & ata.CTRL_SRST:
            for d in self.drives:
                d.cancel_io()  # a request in flight: drained, its result dropped
                d.transfer_halt()
                d.status |= ata.BUSY_STAT
        elif old & ata.CTRL_SRST and not val & ata.CTRL_SRST:
            self.dma_unit = -1
            self.unit = 0
            self.cur = self.drives[0]
            for d in self.drives:
                d.perform_srst()
        if old & ata.CTRL_NIEN and not val & ata.CTRL_NIEN and self.irq_pending:
            self.bm.status |= ata.BM_STATUS_INT  # the pending interrupt reaches the controller
        self._update_line()

    # ---- bus master -----------------------------------------------------------------------
    def bm_read(self, off: int, size: int) -> int:
        return self.bm.read(off, size)

    def bm_write(self, off: int, size: int, val: int) -> None:
        if off >= ata.BM_PRD:
            self.bm.write_prd(off, size, val)
        elif size != 1:
            self.dev.guest_error("bus-master command/status write wider than a byte")
        elif off == ata.BM_CMD:
            self._bm_command(val)
        elif off == ata.BM_STATUS:
            self.bm.write_status(val)

    def _bm_command(self, val: int) -> None:
        """QEMU bmdma_cmd_writeb: only a change of the start bit does anything."""
        bm = self.bm
        starting = False
        if (val ^ bm.cmd) & ata.BM_CMD_START:
            if not val & ata.BM_CMD_START:
                # Stop (QEMU ide_cancel_dma_sync): a transfer in flight cannot be cut in the
                # middle, so it is settled: its completion runs now and the command finishes
                # as if the DMA had ended before the stop. Then Active drops; a command
                # still waiting for the bus master keeps waiting (CVE-2020-25743 case).
                if 0 <= self.dma_unit < len(self.drives):
                    self.drives[self.dma_unit].settle_io()
                bm.status &= ~ata.BM_STATUS_ACTIVE & 0xFF
            elif not bm.status & ata.BM_STATUS_ACTIVE:
                bm.status |= ata.BM_STATUS_ACTIVE
                starting = True
        bm.cmd = val & (ata.BM_CMD_START | ata.BM_CMD_READ)
        if starting and self.dma_unit >= 0:
            self.run_dma()

    def dma_requested(self, d: AtaDrive) -> None:
        """A device issued READ/WRITE DMA: it runs now if the bus master is already active."""
        self.dma_unit = d.unit
        if self.bm.status & ata.BM_STATUS_ACTIVE:
            self.run_dma()

    def _dma_finish(self, d: AtaDrive, more: bool) -> None:
        d.dma_cmd = DMA_NONE
        self.dma_unit = -1
        if not more:
            self.bm.status &= ~ata.BM_STATUS_ACTIVE & 0xFF

    def _dma_bus_error(self, d: AtaDrive, what: str, master_abort: bool) -> None:
        """The bus master could not reach memory: Error in the bus-master status, the command
        aborted, and an interrupt so the driver finds out now rather than at its timeout."""
        self.dev.guest_error(what)
        if master_abort:
            self.dev.master_abort()
        d.abort_command()
        self.bm.status |= ata.BM_STATUS_ERROR
        self._dma_finish(d, more=False)
        self.set_irq()

    def run_dma(self) -> None:
        """Move a whole DMA command between the device and guest RAM: one PRD walk, then
        the device's own transfer (AtaDrive.dma_io: one preadv/pwritev through the backend
        straight into/from the RAM mapping; ATAPI: the medium or the reply buffer)."""
        d = self.drives[self.dma_unit]
        if d.inflight:
            return  # a restart while the transfer is in flight: it finishes by itself
        if not d.present or d.dma_cmd == DMA_NONE or not d.status & ata.DRQ_STAT:
            self.dma_unit = -1
            return
        to_memory = d.dma_to_memory()
        if bool(self.bm.cmd & ata.BM_CMD_READ) != to_memory:
            self.dev.guest_error("bus-master direction does not match the ATA command")
        if not self.dev.bus_master:
            self._dma_bus_error(d, "DMA with PCI bus mastering disabled", master_abort=False)
            return
        assert self.dev.ctx is not None
        memory = self.dev.ctx.memory
        need = d.dma_length()
        walk = self.bm.walk_prd(memory, need)
        if walk is None:
            self._dma_bus_error(d, "PRD table outside guest RAM", master_abort=True)
            return
        if walk.got < need:
            # QEMU ide_dma_cb: "PRDs too short: reset Active, don't raise the interrupt".
            # The Error bit is ours, so a driver polling the bus master sees why.
            self.dev.guest_error("PRD table shorter than the transfer")
            d.status = ata.READY_STAT | ata.SEEK_STAT
            d.transfer_stop()
            self.bm.status |= ata.BM_STATUS_ERROR
            self._dma_finish(d, more=False)
            return
        if not d.dma_check():
            self._dma_finish(d, more=False)  # the device reported it (IDNF and an interrupt)
            return
        views: list[memoryview] = []
        for base, length in walk.sg:
            vs = memory.views(base, length, write=to_memory)
            if vs is None:
                # Constant text: guest_error keys its counter by it, and a guest must not be
                # able to mint new counter keys with addresses.
                self._dma_bus_error(d, "DMA to memory that is not guest RAM", master_abort=True)
                return
            views.extend(vs)

        def done(err: OSError | None) -> None:
            # The drive's completion (inline, or on the loop): Active stayed set until now.
            if err is not None:
                d.dma_io_error(err)
                self._dma_finish(d, more=False)
                return
            if to_memory:
                for base, length in walk.sg:
                    memory.mark_dirty(base, length)
            d.dma_complete()
            self._dma_finish(d, walk.more)

        d.dma_io(views, done)

    # ---- snapshot -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "unit": self.unit, "devctl": self.devctl, "irq_pending": self.irq_pending,
            "dma_unit": self.dma_unit, "bm_cmd": self.bm.cmd, "bm_status": self.bm.status,
            "bm_addr": self.bm.addr, "drives": [d.state() for d in self.drives],
        }

    def load_state(self, st: dict[str, Any], bad) -> None:
        from .drive import _check_int

        _check_int(st, "unit", 0, 1, bad)
        _check_int(st, "devctl", 0, 0xFF, bad)
        _check_int(st, "dma_unit", -1, 1, bad)
        _check_int(st, "bm_cmd", 0, 0x09, bad)
        _check_int(st, "bm_status", 0, 0xFF, bad)
        _check_int(st, "bm_addr", 0, 0xFFFFFFFC, bad)
        drives = st.get("drives")
        if not isinstance(drives, list) or len(drives) != len(self.drives):
            raise bad(f"channel {self.index}: drives must be a list of {len(self.drives)}")
        for d, ds in zip(self.drives, drives, strict=True):
            if not isinstance(ds, dict):
                raise bad(f"channel {self.index}: drive state must be a dict")
            d.load_state(ds, bad)
        self.unit = st["unit"]
        self.cur = self.drives[self.unit]
        self.devctl = st["devctl"]
        self.irq_pending = bool(st["irq_pending"])
        self.dma_unit = st["dma_unit"]
        self.bm.cmd = st["bm_cmd"]
        self.bm.status = st["bm_status"]
        self.bm.addr = st["bm_addr"] & 0xFFFFFFFC
        self._update_line()
