"""One device position on an IDE channel: an ATA hard disk, or nothing (QEMU's IDEState).

The task-file registers, the command table and the PIO transfer state of QEMU hw/ide/core.c,
for the `ide-hd` kind (the ATAPI CD-ROM, devmodel/ide/atapi.py, subclasses it).

Disk I/O is asynchronous (devmodel/backends/asyncdisk.py): a command that reads, writes,
flushes or trims validates everything in the ioreq that started it (or that moved the last
word of a PIO block), sets BSY (a DMA command also keeps the bus master's Active bit),
submits ONE backend request and returns, so the ioreq is answered without waiting for the
disk. The completion `done(err)` runs later on the daemon's loop and finishes the command as
the synchronous code did: final status, UNC/ABRT on an OSError, INTRQ, and the next phase (a
PIO read's DRQ with the data buffer, a PIO write's next DRQ block). While a request is in
flight (`inflight`), status reads show BSY and command, task-file and data-port writes are
ignored and counted. SRST, DEVICE RESET and a controller reset drain the backend (the buffer
and the guest RAM views stop being used) and drop the result (`io_gen` changes); a bus-master
stop settles it (the command completes, as QEMU's ide_cancel_dma_sync). With inline
completions (SyncCompletions, or a plain synchronous DiskBackend such as RawFileDisk, which
`_io_seq` calls directly) the completion runs inside the submit, so unit tests see the
command finished when the ioreq returns, exactly as before.

Where this model departs from QEMU, on purpose:
- an address outside the medium (or a CHS address under an invalid translation) reports ERR
  with IDNF (ATA-6 8.27.6, "ID not found"); QEMU's ide_rw_error gives ABRT;
- a backend read error reports ERR with UNC (uncorrectable data, ATA-6 8.27.6), a write or
  flush error ERR with ABRT; QEMU's rerror=report gives ABRT for both;
- SMART has no self-test, offline collection or logs: EXECUTE OFFLINE IMMEDIATE and the log
  commands abort (hostile-guest-catalog entry 6 is about exactly that ring buffer); word 85
  bit 0 follows SMART ENABLE/DISABLE;
- DATA SET MANAGEMENT takes its range list by DMA (as QEMU and ACS-2) or, as the issue asks,
  through the data port: both paths are open and the one the host uses first wins; at most
  MAX_DSM_BLOCKS blocks (advertised in word 105, which QEMU leaves 0);
- INITIALIZE DEVICE PARAMETERS with a sector count of 0 sets an invalid translation (CHS
  commands then fail with IDNF, ATA-6 8.16) instead of dividing by zero later; IDENTIFY words
  53-58 follow the current translation (QEMU leaves them stale);
- a command to an empty master position aborts (QEMU runs a few housekeeping commands);
- data-port reads outside a PIO data phase return all-ones (hostile-guest-catalog entry 4).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devmodel.backends.disk import DiskBackend

from . import ata
from .identify import (
    CMDSET1_SMART,
    CMDSET1_WCACHE,
    MAX_DSM_BLOCKS,
    MAX_MULT_SECTORS,
    W_CMDSET_ENABLED1,
    W_MULT_SETTING,
    W_MWDMA,
    W_SWDMA,
    W_UDMA,
    W_VALIDITY,
    Geometry,
    build_identify,
    chs_words,
    guess_geometry,
    set_word,
    set_word_bits,
)

if TYPE_CHECKING:
    from .channel import IdeChannel

# The PIO buffer holds one READ/WRITE MULTIPLE block at most (the IDENTIFY page fits too).
PIO_BUFFER_SIZE = MAX_MULT_SECTORS * ata.SECTOR_SIZE

# What happens when the guest has moved the last byte of a PIO block (QEMU end_transfer_func).
END_STOP = 0  # ide_transfer_stop: the data phase is over
END_SECTOR_READ = 1  # ide_sector_read: fetch the next block of a read
END_SECTOR_WRITE = 2  # ide_sector_write: store the block just received
END_DSM = 3  # DATA SET MANAGEMENT range list received through the data port
END_PACKET = 4  # ATAPI: the 12-byte command packet received (ide_atapi_cmd)
END_ATAPI_REPLY = 5  # ATAPI: next DRQ block of a reply (ide_atapi_cmd_reply_end)
END_MAX = END_ATAPI_REPLY
# Data phases in which the host writes the data port (the others are reads).
WRITE_END_FNS = frozenset({END_SECTOR_WRITE, END_DSM, END_PACKET})

DMA_NONE = 0
DMA_READ = 1
DMA_WRITE = 2
DMA_TRIM = 3  # DATA SET MANAGEMENT payload, memory to device
DMA_ATAPI = 4  # an ATAPI data-in phase, device to memory
DMA_MAX = DMA_ATAPI

# DSM LBA range entry (ACS-2 7.10.3.2): bits 47:0 LBA, 63:48 sector count (0 = unused).
DSM_ENTRY_SIZE = 8
DSM_MAX_ENTRIES = MAX_DSM_BLOCKS * ata.SECTOR_SIZE // DSM_ENTRY_SIZE

# SMART attributes of QEMU's ide-hd (id, flags, hflags, value, worst, raw[6], threshold).
SMART_ATTRIBUTES = (
    (0x01, 0x03, 0x00, 0x64, 0x64, 0, 0, 0, 0, 0, 0, 0x06),  # raw read error rate
    (0x03, 0x03, 0x00, 0x64, 0x64, 0, 0, 0, 0, 0, 0, 0x00),  # spin-up time
    (0x04, 0x02, 0x00, 0x64, 0x64, 0, 0, 0, 0, 0, 0, 0x14),  # start/stop count
    (0x05, 0x03, 0x00, 0x64, 0x64, 0, 0, 0, 0, 0, 0, 0x24),  # reallocated sectors
    (0x09, 0x03, 0x00, 0x64, 0x64, 0, 0, 0, 0, 0, 0, 0x00),  # power-on hours
    (0x0C, 0x03, 0x00, 0x64, 0x64, 0, 0, 0, 0, 0, 0, 0x00),  # power cycle count
    (190, 0x03, 0x00, 0x45, 0x45, 0x1F, 0x00, 0x1F, 0x1F, 0, 0, 0x32),  # airflow temperature
)
SMART_ENTRY_SIZE = 12

# Command-table flags (QEMU ide_cmd_table): set DSC in the status on success.
SET_DSC = 1

MODEL = "QEMU HARDDISK"
FIRMWARE = "2.5+"  # qemu_hw_version()


class AtaDrive:
    """Task file + command engine of one device. `backend is None` means no device here."""

    COMMANDS: dict[int, tuple[Callable[[AtaDrive, int], bool], int]]
    # Commands taken while BSY/DRQ (a packet device's DEVICE RESET, QEMU ide_exec_cmd).
    BUSY_COMMANDS: frozenset[int] = frozenset()
    is_cd = False

    def __init__(self, channel: IdeChannel, unit: int, backend: DiskBackend | None,
                 serial: str, geometry: Geometry | None = None) -> None:
        self.channel = channel
        self.unit = unit
        self.backend = backend
        self.present = backend is not None
        self.nb_sectors = backend.size // ata.SECTOR_SIZE if backend is not None else 0
        self.geometry = geometry or guess_geometry(self.nb_sectors)
        self.serial = serial
        # TRIM is advertised when the medium can take it (QEMU: discard_granularity set).
        self.trim = backend is not None and not backend.readonly
        # PIO data buffer and its fast views: the data port reads a 16-bit word by indexing
        # a memoryview cast, the cheapest per-access path Python has (no struct, no slicing).
        self.buf = bytearray(self.BUFFER_SIZE)
        self.w16 = memoryview(self.buf).cast("H")
        self.w32 = memoryview(self.buf).cast("I")
        # The backend request in flight (never state: snapshots settle it first).
        self.inflight = False
        self.io_gen = 0
        self.power_on()

    BUFFER_SIZE = PIO_BUFFER_SIZE

    # ---- power-on / reset -----------------------------------------------------------------
    def power_on(self) -> None:
        self.write_cache = True
        self.smart_enabled = True
        self.smart_autosave = True
        self.mult_sectors = MAX_MULT_SECTORS
        # The CHS translation (INITIALIZE DEVICE PARAMETERS): the default one at power-on.
        self.chs_heads = self.geometry.heads
        self.chs_sectors = self.geometry.sectors
        self.reset_reverts = False
        self.identify = self._build_identify()
        self.reset()

    def _build_identify(self) -> bytearray:
        return build_identify(
            self.nb_sectors, self.geometry, serial=self.serial, model=MODEL, firmware=FIRMWARE,
            mult_sectors=self.mult_sectors, write_cache=self.write_cache, trim=self.trim)

    def reset(self) -> None:
        """QEMU ide_reset: registers, signature, no data phase, no DMA."""
        self.cancel_io()
        if self.reset_reverts:  # SET FEATURES CCh: the translation reverts at reset
            self.reset_reverts = False
            self._set_translation(self.geometry.heads, self.geometry.sectors)
        self.mult_sectors = MAX_MULT_SECTORS
        self.feature = self.error = 0
        self.nsector = self.sector = self.lcyl = self.hcyl = 0
        self.hob_feature = self.hob_nsector = self.hob_sector = self.hob_lcyl = self.hob_hcyl = 0
        self.select = ata.DEV_ALWAYS_ON
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.lba48 = 0
        self.req_nb_sectors = 0
        self.dma_cmd = DMA_NONE
        set_word(self.identify, W_MULT_SETTING, 0x100 | MAX_MULT_SECTORS)
        self.set_signature()
        self.transfer_halt()

    def set_signature(self) -> None:
        """ATA signature (ATA-6 9.12): count 1, LBA low 1, mid/high 00/00; FF/FF if absent."""
        self.select &= ~ata.DEV_HS & 0xFF
        self.nsector = 1
        self.sector = 1
        self.lcyl = self.hcyl = 0 if self.present else 0xFF

    def perform_srst(self) -> None:
        """Software reset, then the diagnostic result (QEMU ide_perform_srst)."""
        self.transfer_halt()
        self.dma_cmd = DMA_NONE
        self.reset()
        self._diagnose()

    # ---- PIO data phase -------------------------------------------------------------------
    def transfer_start(self, size: int, end_fn: int, start: int = 0) -> None:
        """Open a data phase of buf[start:start+size] (QEMU ide_transfer_start)."""
        assert 0 <= start and 0 <= size and start + size <= len(self.buf)
        self.pos = start
        self.end = start + size
        self.end_fn = end_fn
        if end_fn in WRITE_END_FNS:
            self.rd_end, self.wr_end = 0, self.end
        else:
            self.rd_end, self.wr_end = self.end, 0
        if not self.status & ata.ERR_STAT:
            self.status |= ata.DRQ_STAT

    def transfer_halt(self) -> None:
        self.pos = self.end = self.rd_end = self.wr_end = 0
        self.end_fn = END_STOP
        self.status &= ~ata.DRQ_STAT & 0xFF

    transfer_stop = transfer_halt  # cmd_done has nothing to do for the PIIX bus master

    def transfer_done(self) -> None:
        """The guest moved the last byte of the block: DRQ drops, the end function runs."""
        self.status &= ~ata.DRQ_STAT & 0xFF
        fn = self.end_fn
        self.rd_end = self.wr_end = 0
        self.end_transfer(fn)

    def end_transfer(self, fn: int) -> None:
        if fn == END_SECTOR_READ:
            self.sector_read()
        elif fn == END_SECTOR_WRITE:
            self.sector_write()
        elif fn == END_DSM:
            self.dma_cmd = DMA_NONE  # the range list came by PIO: the DMA path closes
            if self.channel.dma_unit == self.unit:
                self.channel.dma_unit = -1
            self.dsm_execute(self.end)
        else:
            self.transfer_stop()

    # ---- addressing -----------------------------------------------------------------------
    def get_sector(self) -> int:
        if self.select & ata.DEV_LBA:
            if self.lba48:
                return (self.hob_hcyl << 40 | self.hob_lcyl << 32 | self.hob_sector << 24
                        | self.hcyl << 16 | self.lcyl << 8 | self.sector)
            return (self.select & ata.DEV_HS) << 24 | self.hcyl << 16 | self.lcyl << 8 | self.sector
        # CHS under the current translation; sector 0, a head or sector beyond the
        # translation, or no valid translation give -1, which the range check refuses (IDNF).
        heads, secs = self.chs_heads, self.chs_sectors
        head = self.select & ata.DEV_HS
        if not secs or not self.sector or self.sector > secs or head >= heads:
            return -1
        return (self.hcyl << 8 | self.lcyl) * heads * secs + head * secs + self.sector - 1

    def set_sector(self, lba: int) -> None:
        if self.select & ata.DEV_LBA:
            if self.lba48:
                self.sector = lba & 0xFF
                self.lcyl = (lba >> 8) & 0xFF
                self.hcyl = (lba >> 16) & 0xFF
                self.hob_sector = (lba >> 24) & 0xFF
                self.hob_lcyl = (lba >> 32) & 0xFF
                self.hob_hcyl = (lba >> 40) & 0xFF
            else:
                self.select = (self.select & ~ata.DEV_HS & 0xFF) | ((lba >> 24) & ata.DEV_HS)
                self.hcyl = (lba >> 16) & 0xFF
                self.lcyl = (lba >> 8) & 0xFF
                self.sector = lba & 0xFF
        else:
            heads, secs = self.chs_heads, self.chs_sectors
            if not heads or not secs:  # no valid translation: nothing to report (never / 0)
                return
            cyl, r = divmod(lba, heads * secs)
            self.hcyl = (cyl >> 8) & 0xFF
            self.lcyl = cyl & 0xFF
            self.select = (self.select & ~ata.DEV_HS & 0xFF) | ((r // secs) & ata.DEV_HS)
            self.sector = (r % secs) + 1

    def _set_translation(self, heads: int, sectors: int) -> None:
        """The CHS translation CHS-addressed commands use, and IDENTIFY words 53-58."""
        self.chs_heads, self.chs_sectors = heads, sectors
        for w, v in chs_words(self.nb_sectors, heads, sectors).items():
            set_word(self.identify, w, v)
        set_word_bits(self.identify, W_VALIDITY, 1, bool(sectors))

    def range_ok(self, lba: int, n: int) -> bool:
        return 0 <= lba <= self.nb_sectors and n <= self.nb_sectors - lba

    def lba48_transform(self, lba48: bool) -> None:
        """The 'magic' zero count: 256 sectors (LBA28) or 65536 (LBA48)."""
        self.lba48 = int(lba48)
        if not lba48:
            if not self.nsector:
                self.nsector = 256
        elif not self.nsector and not self.hob_nsector:
            self.nsector = 65536
        else:
            self.nsector = (self.hob_nsector << 8) | (self.nsector & 0xFF)

    # ---- completions ----------------------------------------------------------------------
    def fail_command(self, error: int) -> None:
        """End the command with ERR: no data phase, `error` in the error register."""
        self.transfer_stop()
        self.status = ata.READY_STAT | ata.ERR_STAT
        self.error = error

    def abort_command(self) -> None:
        self.fail_command(ata.ABRT_ERR)

    def abort_with_irq(self) -> None:
        """ABRT plus an interrupt: a command refused (unknown, bad parameters)."""
        self.fail_command(ata.ABRT_ERR)
        self.channel.set_irq()

    def rw_error(self) -> None:
        """Address outside the medium: ERR with IDNF (ATA-6 8.27.6) plus an interrupt.
        (QEMU's ide_rw_error reports ABRT; the issue asks for IDNF, as real disks do.)"""
        self.fail_command(ata.IDNF_ERR)
        self.channel.set_irq()

    def io_error(self, is_read: bool, err: OSError | None = None) -> None:
        """The backend failed: report it to the guest and carry on (QEMU rerror/werror=report:
        the error status plus a BLOCK_IO_ERROR event through io_error_listeners)."""
        self.fail_command(ata.UNC_ERR if is_read else ata.ABRT_ERR)
        self.report_io_error(is_read, err)
        self.channel.set_irq()

    def report_io_error(self, is_read: bool, err: OSError | None) -> None:
        """Count a backend failure and tell the io_error_listeners (QMP BLOCK_IO_ERROR)."""
        dev = self.channel.dev
        dev.counters["backend_read_error" if is_read else "backend_write_error"] += 1
        for fn in getattr(dev, "io_error_listeners", ()):
            fn(self.channel.index, self.unit, "read" if is_read else "write", err)

    # ---- backend requests -----------------------------------------------------------------
    def cancel_io(self) -> None:
        """Forget the request in flight (SRST, reset): wait until the backend no longer uses
        the buffers, then make sure its completion is dropped."""
        if self.inflight:
            drain = getattr(self.backend, "drain", None)
            if drain is not None:
                drain()
            self.inflight = False
            self.channel.dev.counters["io_cancelled"] += 1
        self.io_gen += 1

    def settle_io(self) -> None:
        """Finish the request in flight now: its completion runs before this returns (a
        bus-master stop, a snapshot). Called on the loop thread."""
        if self.inflight:
            settle = getattr(self.backend, "settle", None)
            if settle is not None:
                settle()

    def _io_seq(self, ops: list[tuple[str, tuple]], then: Callable[[OSError | None], None]) -> None:
        """Run backend requests one after the other ("read", "write", "flush", "discard"
        with their arguments), then `then(None)`, or `then(err)` at the first error. BSY
        meanwhile (`then` sets the final status); with inline completions `then` runs before
        this returns."""
        gen = self.io_gen
        self.status = ata.READY_STAT | ata.SEEK_STAT | ata.BUSY_STAT
        self.inflight = True
        st = [0, False, False]  # next op, inside a submit, completed inside that submit

        def finish(err: OSError | None) -> None:
            self.inflight = False
            # These closures form a reference cycle: drop the buffers (guest-RAM views) now,
            # so a mapping removed meanwhile (MEM_DEL) is unmapped at once, not at the next
            # garbage collection (GuestMemory.remove).
            ops.clear()
            then(err)

        def done(err: OSError | None) -> None:
            if gen != self.io_gen or self.channel.drives[self.unit] is not self:
                self.channel.dev.counters["io_completion_dropped"] += 1
                return
            if err is not None:
                finish(err)
            elif st[1]:
                st[2] = True  # inline: step() goes on (no recursion per request)
            else:
                step()

        def step() -> None:
            while True:
                if st[0] >= len(ops):
                    finish(None)
                    return
                op, args = ops[st[0]]
                st[0] += 1
                st[1], st[2] = True, False
                try:
                    refused = self._submit(op, args, done)
                finally:
                    st[1] = False
                if refused is not None:
                    finish(refused)
                    return
                if not st[2] or gen != self.io_gen or not self.inflight:
                    return  # in flight (done goes on), or failed/cancelled inline

        step()

    def _submit(self, op: str, args: tuple, done: Callable[[OSError | None], None]) -> OSError | None:
        """One request; an OSError returned means it was refused (done is not called)."""
        backend = self.backend
        if backend is None:
            return OSError(errno.ENOMEDIUM, "no medium")
        submit = getattr(backend, "submit_" + op, None)
        if submit is None:  # a synchronous DiskBackend (RawFileDisk): inline completion
            err: OSError | None = None
            try:
                if op == "read":
                    backend.read_into(*args)
                elif op == "write":
                    backend.write_from(args[0], args[1])
                    if args[2]:
                        backend.flush()
                elif op == "flush":
                    backend.flush()
                else:
                    backend.discard(*args)
            except OSError as e:
                err = e
            done(err)
            return None
        try:
            if op == "write":
                submit(args[0], args[1], done, fua=args[2])
            else:
                submit(*args, done)
        except OSError as e:  # DiskBusy, closed, read-only: never accepted
            return e
        return None

    # ---- command dispatch -----------------------------------------------------------------
    def exec_cmd(self, cmd: int) -> None:
        """QEMU ide_exec_cmd for an ATA disk."""
        if self.unit == 1 and not self.present:
            return  # commands to a non-existent device 1 are ignored
        if self.status & (ata.BUSY_STAT | ata.DRQ_STAT) and cmd not in self.BUSY_COMMANDS:
            self.channel.dev.guest_error("command while BSY/DRQ")
            if self.inflight:
                self.channel.dev.counters["write_while_busy"] += 1
            return
        entry = self.COMMANDS.get(cmd) if self.present else _ABSENT_COMMANDS.get(cmd)
        if entry is None:
            self.abort_with_irq()
            return
        handler, flags = entry
        self.status = ata.READY_STAT | ata.BUSY_STAT
        self.error = 0
        if handler(self, cmd):
            self.status &= ~ata.BUSY_STAT & 0xFF
            if flags & SET_DSC and not self.error:
                self.status |= ata.SEEK_STAT
            self.channel.set_irq()

    # -- handlers: return True when the command completed here (status and IRQ by exec_cmd)
    def _nop(self, cmd: int) -> bool:
        return True

    def _identify(self, cmd: int) -> bool:
        self.buf[:512] = self.identify
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.transfer_start(512, END_STOP)
        self.channel.set_irq()
        return False

    def _verify(self, cmd: int) -> bool:
        self.lba48_transform(cmd == ata.CMD_VERIFY_EXT)
        return True

    def _set_multiple(self, cmd: int) -> bool:
        n = self.nsector & 0xFF
        if n and (n > MAX_MULT_SECTORS or n & (n - 1)):
            self.abort_command()
        else:
            self.mult_sectors = n
            # Word 59 reports the current setting (ATA-6 8.15.38; QEMU leaves it stale).
            set_word(self.identify, W_MULT_SETTING, (0x100 | n) if n else 0)
        return True

    def _read_multiple(self, cmd: int) -> bool:
        if not self.mult_sectors:
            self.abort_command()
            return True
        self.lba48_transform(cmd == ata.CMD_READ_MULTIPLE_EXT)
        self.req_nb_sectors = self.mult_sectors
        self.sector_read()
        return False

    def _write_multiple(self, cmd: int) -> bool:
        if not self.mult_sectors:
            self.abort_command()
            return True
        self.lba48_transform(cmd == ata.CMD_WRITE_MULTIPLE_EXT)
        self.req_nb_sectors = self.mult_sectors
        n = min(self.nsector, self.req_nb_sectors)
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.transfer_start(n * ata.SECTOR_SIZE, END_SECTOR_WRITE)
        return False

    def _read_pio(self, cmd: int) -> bool:
        self.lba48_transform(cmd == ata.CMD_READ_EXT)
        self.req_nb_sectors = 1
        self.sector_read()
        return False

    def _write_pio(self, cmd: int) -> bool:
        self.lba48_transform(cmd == ata.CMD_WRITE_EXT)
        self.req_nb_sectors = 1
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.transfer_start(ata.SECTOR_SIZE, END_SECTOR_WRITE)
        return False

    def _read_dma(self, cmd: int) -> bool:
        self.lba48_transform(cmd == ata.CMD_READ_DMA_EXT)
        self._start_dma(DMA_READ)
        return False

    def _write_dma(self, cmd: int) -> bool:
        self.lba48_transform(cmd == ata.CMD_WRITE_DMA_EXT)
        self._start_dma(DMA_WRITE)
        return False

    def _flush(self, cmd: int) -> bool:
        self.flush_cache()
        return False

    def _read_native_max(self, cmd: int) -> bool:
        if self.nb_sectors == 0:
            self.abort_command()
            return True
        self.lba48_transform(cmd == ata.CMD_READ_NATIVE_MAX_EXT)
        self.set_sector(self.nb_sectors - 1)
        return True

    def _check_power_mode(self, cmd: int) -> bool:
        self.nsector = 0xFF  # active or idle
        return True

    def _diagnose(self, cmd: int = ata.CMD_DIAGNOSE) -> bool:
        """EXECUTE DEVICE DIAGNOSTIC: signature, and error 01h = device 0 passed (the error
        register carries the result code, so ERR is not set)."""
        self.set_signature()
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.error = 0x01
        self.channel.set_irq()
        return False

    def _set_features(self, cmd: int) -> bool:
        f = self.feature
        if f == ata.FEAT_WCACHE_ON:
            self.write_cache = True
            self._cmdset1(CMDSET1_WCACHE, True)
            return True
        if f == ata.FEAT_WCACHE_OFF:
            self.write_cache = False
            self._cmdset1(CMDSET1_WCACHE, False)
            self.flush_cache()
            return False
        if f == ata.FEAT_REVERT_ON:
            self.reset_reverts = True
            return True
        if f == ata.FEAT_REVERT_OFF:
            self.reset_reverts = False
            return True
        if f in _SET_FEATURES_ACCEPTED:
            return True
        if f == ata.FEAT_XFER_MODE:
            mode = self.nsector & 0x07
            kind = (self.nsector & 0xFF) >> 3
            sw, mw, udma = 0x07, 0x07, 0x3F
            if kind == 0x02:
                sw |= 1 << (mode + 8)
            elif kind == 0x04:
                mw |= 1 << (mode + 8)
            elif kind == 0x08:
                udma |= 1 << (mode + 8)
            elif kind not in (0x00, 0x01):  # PIO default / PIO flow control modes
                self.abort_command()
                return True
            set_word(self.identify, W_SWDMA, sw)
            set_word(self.identify, W_MWDMA, mw)
            set_word(self.identify, W_UDMA, udma)
            return True
        self.abort_command()
        return True

    def _cmdset1(self, bit: int, on: bool) -> None:
        set_word_bits(self.identify, W_CMDSET_ENABLED1, bit, on)

    def _specify(self, cmd: int) -> bool:
        """INITIALIZE DEVICE PARAMETERS (ATA-6 8.16; QEMU cmd_specify): heads from the
        device/head register + 1, sectors per track from the sector count. A count of 0 is
        accepted and leaves no valid translation: CHS commands then fail with IDNF."""
        self._set_translation((self.select & ata.DEV_HS) + 1, self.nsector & 0xFF)
        return True

    # ---- DATA SET MANAGEMENT ----------------------------------------------------------------
    def _dsm(self, cmd: int) -> bool:
        """DATA SET MANAGEMENT, TRIM only (QEMU cmd_data_set_management). The count register
        pair holds the number of 512-byte blocks of range entries: 1..MAX_DSM_BLOCKS."""
        blocks = (self.hob_nsector << 8) | (self.nsector & 0xFF)
        if not self.feature & ata.DSM_TRIM or not self.trim or not 0 < blocks <= MAX_DSM_BLOCKS:
            self.abort_command()
            return True
        self.nsector = blocks
        self.status = ata.READY_STAT | ata.SEEK_STAT
        # Both paths open: the data port (PIO) and the bus master (DMA, as ACS-2 defines it).
        self.transfer_start(blocks * ata.SECTOR_SIZE, END_DSM)
        self.dma_cmd = DMA_TRIM
        self.channel.dma_requested(self)
        return False

    def dsm_execute(self, nbytes: int) -> None:
        """Discard every range of the payload in buf[:nbytes] (QEMU ide_issue_trim_cb): an
        entry with count 0 is skipped, one outside the medium aborts the command."""
        assert 0 < nbytes <= DSM_MAX_ENTRIES * DSM_ENTRY_SIZE
        ranges = []
        for i in range(nbytes // DSM_ENTRY_SIZE):  # bounded by DSM_MAX_ENTRIES
            entry = int.from_bytes(self.buf[i * DSM_ENTRY_SIZE : (i + 1) * DSM_ENTRY_SIZE], "little")
            lba, count = entry & 0xFFFF_FFFF_FFFF, entry >> 48
            if not count:
                continue
            if not self.range_ok(lba, count):
                self.abort_with_irq()
                return
            ranges.append((lba, count))
        assert self.backend is not None
        self.transfer_halt()
        ops = [("discard", (lba * ata.SECTOR_SIZE, count * ata.SECTOR_SIZE)) for lba, count in ranges]
        self._io_seq(ops, self._dsm_done)

    def _dsm_done(self, err: OSError | None) -> None:
        if err is not None:
            self.io_error(is_read=False, err=err)
            return
        self.transfer_stop()
        self.nsector = 0
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.channel.set_irq()

    # ---- SMART ----------------------------------------------------------------------------
    def _smart(self, cmd: int) -> bool:
        """SMART basics (QEMU cmd_smart without the self-test log): the B0h key in LBA
        mid/high, then ENABLE/DISABLE OPERATIONS, ATTRIBUTE AUTOSAVE, RETURN STATUS, READ
        DATA, READ THRESHOLDS. Everything else, and anything but ENABLE while disabled,
        aborts."""
        f = self.feature
        if self.hcyl != ata.SMART_HCYL or self.lcyl != ata.SMART_LCYL:
            self.abort_command()
            return True
        if not self.smart_enabled and f != ata.SMART_ENABLE:
            self.abort_command()
            return True
        if f in (ata.SMART_ENABLE, ata.SMART_DISABLE):
            self.smart_enabled = f == ata.SMART_ENABLE
            self._cmdset1(CMDSET1_SMART, self.smart_enabled)
            return True
        if f == ata.SMART_ATTR_AUTOSAVE:
            if self.sector not in (0x00, 0xF1):
                self.abort_command()
            else:
                self.smart_autosave = self.sector == 0xF1
            return True
        if f == ata.SMART_STATUS:
            # No attribute is ever below its threshold: "threshold not exceeded".
            self.lcyl, self.hcyl = ata.SMART_LCYL, ata.SMART_HCYL
            return True
        if f in (ata.SMART_READ_DATA, ata.SMART_READ_THRESH):
            self._smart_page(f == ata.SMART_READ_DATA)
            self.status = ata.READY_STAT | ata.SEEK_STAT
            self.transfer_start(ata.SECTOR_SIZE, END_STOP)
            self.channel.set_irq()
            return False
        self.abort_command()
        return True

    def _smart_page(self, data: bool) -> None:
        """The 512-byte SMART data or threshold structure, with its checksum in byte 511."""
        page = memoryview(self.buf)[: ata.SECTOR_SIZE]
        page[:] = bytes(ata.SECTOR_SIZE)
        page[0] = 0x01  # structure revision
        for n, attr in enumerate(SMART_ATTRIBUTES):
            base = 2 + n * SMART_ENTRY_SIZE
            if data:
                page[base : base + 11] = bytes(attr[:11])
            else:
                page[base], page[base + 1] = attr[0], attr[11]
        if data:
            page[362] = 0x02 | (0x80 if self.smart_autosave else 0)  # offline collection status
            page[363] = 0  # self-test execution status: none run
            page[364], page[365] = 0x20, 0x01  # offline collection time (s)
            page[367] = 0x00  # offline collection capability: none (no self-test here)
            page[368], page[369] = 0x03, 0x00  # SMART capability: autosave, saves on standby
            page[370] = 0x00  # error logging not supported
        page[511] = (-sum(page[:511])) & 0xFF

    # ---- sector transfers -----------------------------------------------------------------
    def sector_read(self) -> None:
        """Fetch the next block of a PIO read (QEMU ide_sector_read, synchronously)."""
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.error = 0
        lba = self.get_sector()
        n = self.nsector
        if n == 0:
            self.transfer_stop()
            return
        n = min(n, self.req_nb_sectors)
        if not self.range_ok(lba, n):
            self.rw_error()
            return
        nbytes = n * ata.SECTOR_SIZE
        assert self.backend is not None and 0 < nbytes <= PIO_BUFFER_SIZE
        self._io_seq([("read", (lba * ata.SECTOR_SIZE, [memoryview(self.buf)[:nbytes]]))],
                     lambda err: self._sector_read_done(err, lba, n))

    def _sector_read_done(self, err: OSError | None, lba: int, n: int) -> None:
        if err is not None:
            self.io_error(is_read=True, err=err)
            return
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.set_sector(lba + n)
        self.nsector -= n
        self.transfer_start(n * ata.SECTOR_SIZE, END_SECTOR_READ)
        self.channel.set_irq()

    def sector_write(self) -> None:
        """Store the block the guest just wrote (QEMU ide_sector_write + its callback)."""
        self.status = ata.READY_STAT | ata.SEEK_STAT
        lba = self.get_sector()
        n = min(self.nsector, self.req_nb_sectors)
        if not self.range_ok(lba, n):
            self.rw_error()
            return
        nbytes = n * ata.SECTOR_SIZE
        assert self.backend is not None and 0 < nbytes <= PIO_BUFFER_SIZE
        # Write cache off: the write is durable when it completes (FUA).
        self._io_seq([("write", (lba * ata.SECTOR_SIZE, [memoryview(self.buf)[:nbytes]],
                                 not self.write_cache))],
                     lambda err: self._sector_write_done(err, lba, n))

    def _sector_write_done(self, err: OSError | None, lba: int, n: int) -> None:
        if err is not None:
            self.io_error(is_read=False, err=err)
            return
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.nsector -= n
        self.set_sector(lba + n)
        if self.nsector == 0:
            self.transfer_stop()
        else:
            self.transfer_start(min(self.nsector, self.req_nb_sectors) * ata.SECTOR_SIZE,
                                END_SECTOR_WRITE)
        self.channel.set_irq()

    def flush_cache(self) -> None:
        if self.backend is None:
            self._flush_done(None)
            return
        self._io_seq([("flush", ())], self._flush_done)

    def _flush_done(self, err: OSError | None) -> None:
        if err is not None:
            self.io_error(is_read=False, err=err)
            return
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.channel.set_irq()

    def _start_dma(self, kind: int) -> None:
        """QEMU ide_sector_start_dma: DRQ up, then the bus master moves the data when (or as
        soon as) its start bit is set."""
        self.status = ata.READY_STAT | ata.SEEK_STAT | ata.DRQ_STAT
        self.dma_cmd = kind
        self.channel.dma_requested(self)

    # ---- the bus master's side of a DMA command (called by IdeChannel.run_dma) --------------
    def dma_to_memory(self) -> bool:
        return self.dma_cmd == DMA_READ

    def dma_length(self) -> int:
        return self.nsector * ata.SECTOR_SIZE

    def dma_check(self) -> bool:
        """Before any data moves: False when the command failed (already reported)."""
        if self.dma_cmd == DMA_TRIM:
            self.transfer_halt()  # the PIO path of DSM closes: DMA won
            return True
        self.dma_lba = self.get_sector()
        if not self.range_ok(self.dma_lba, self.nsector):
            self.rw_error()
            return False
        return True

    def dma_io(self, views: list[memoryview], done: Callable[[OSError | None], None]) -> None:
        """Start moving the data between the backend and guest RAM views; `done(err)` when
        it has (inline, or later on the loop). BSY meanwhile; the bus master stays Active."""
        assert self.backend is not None
        if self.dma_cmd == DMA_TRIM:
            pos = 0
            for v in views:  # at most MAX_DSM_BLOCKS * 512 bytes in all (dma_length)
                self.buf[pos : pos + len(v)] = v
                pos += len(v)
            done(None)
            return
        offset = self.dma_lba * ata.SECTOR_SIZE
        if self.dma_cmd == DMA_READ:
            self._io_seq([("read", (offset, views))], done)
        else:
            self._io_seq([("write", (offset, views, not self.write_cache))], done)

    def dma_io_error(self, err: OSError | None = None) -> None:
        self.io_error(is_read=self.dma_cmd == DMA_READ, err=err)

    def dma_complete(self) -> None:
        if self.dma_cmd == DMA_TRIM:
            self.dma_cmd = DMA_NONE
            self.dsm_execute(self.nsector * ata.SECTOR_SIZE)
            return
        self.set_sector(self.dma_lba + self.nsector)
        self.nsector = 0
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.channel.set_irq()

    # ---- snapshot -------------------------------------------------------------------------
    _REG_FIELDS = ("feature", "error", "sector", "lcyl", "hcyl", "hob_feature", "hob_nsector",
                   "hob_sector", "hob_lcyl", "hob_hcyl", "select", "status")

    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = {f: getattr(self, f) for f in self._REG_FIELDS}
        st.update(
            present=self.present, nb_sectors=self.nb_sectors, nsector=self.nsector,
            lba48=self.lba48, mult_sectors=self.mult_sectors, write_cache=self.write_cache,
            identify=bytes(self.identify), buf=bytes(self.buf), pos=self.pos, end=self.end,
            end_fn=self.end_fn, req_nb_sectors=self.req_nb_sectors, dma_cmd=self.dma_cmd,
            smart_enabled=self.smart_enabled, smart_autosave=self.smart_autosave,
            chs_heads=self.chs_heads, chs_sectors=self.chs_sectors,
            reset_reverts=self.reset_reverts,
        )
        return st

    def load_state(self, st: dict[str, Any], bad: Callable[[str], Exception]) -> None:
        """Restore from `state()`, validating as strictly as a register write would
        (hostile-guest-catalog entry 44): a snapshot is input."""
        if st.get("present") != self.present or st.get("nb_sectors") != self.nb_sectors:
            raise bad(f"drive {self.unit}: snapshot is of a different disk")
        for f in self._REG_FIELDS:
            _check_int(st, f, 0, 0xFF, bad)
        _check_int(st, "nsector", 0, 65536, bad)
        _check_int(st, "lba48", 0, 1, bad)
        _check_int(st, "mult_sectors", 0, MAX_MULT_SECTORS, bad)
        _check_int(st, "req_nb_sectors", 0, MAX_MULT_SECTORS, bad)
        _check_int(st, "end_fn", END_STOP, END_MAX, bad)
        _check_int(st, "dma_cmd", DMA_NONE, DMA_MAX, bad)
        _check_int(st, "end", 0, len(self.buf), bad)
        _check_int(st, "pos", 0, st["end"], bad)
        _check_int(st, "chs_heads", 1, 16, bad)
        _check_int(st, "chs_sectors", 0, 0xFF, bad)
        if st["pos"] & 1:
            raise bad(f"drive {self.unit}: odd PIO position")
        for name, size in (("identify", 512), ("buf", len(self.buf))):
            v = st.get(name)
            if not isinstance(v, (bytes, bytearray)) or len(v) != size:
                raise bad(f"drive {self.unit}: {name} must be {size} bytes")
        self.cancel_io()  # a request in flight belongs to the state being replaced
        for f in self._REG_FIELDS:
            setattr(self, f, st[f])
        self.nsector = st["nsector"]
        self.lba48 = st["lba48"]
        self.mult_sectors = st["mult_sectors"]
        self.write_cache = bool(st["write_cache"])
        self.identify = bytearray(st["identify"])
        self.buf[:] = st["buf"]
        self.req_nb_sectors = st["req_nb_sectors"]
        self.dma_cmd = st["dma_cmd"]
        self.end_fn = st["end_fn"]
        self.pos, self.end = st["pos"], st["end"]
        self.smart_enabled = bool(st.get("smart_enabled", True))
        self.smart_autosave = bool(st.get("smart_autosave", True))
        self.chs_heads, self.chs_sectors = st["chs_heads"], st["chs_sectors"]
        self.reset_reverts = bool(st.get("reset_reverts", False))
        # Derived: which direction the open data phase (if any) moves.
        live = self.end if self.status & ata.DRQ_STAT else 0
        if self.end_fn in WRITE_END_FNS:
            self.rd_end, self.wr_end = 0, live
        else:
            self.rd_end, self.wr_end = live, 0


def _check_int(st: dict[str, Any], name: str, lo: int, hi: int,
               bad: Callable[[str], Exception]) -> None:
    v = st.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise bad(f"{name}={v!r} outside {lo}..{hi}")


# SET FEATURES subcommands QEMU accepts and ignores: power-on defaults, read look-ahead,
# APM, acoustic management and vendor NOPs.
_SET_FEATURES_ACCEPTED = frozenset({0xCC, 0x66, 0xAA, 0x55, 0x05, 0x85, 0x69, 0x67, 0x96, 0x9A,
                                    0x42, 0xC2})

_Handler = Callable[[AtaDrive, int], bool]
D = AtaDrive
# The ATA disk's command whitelist (QEMU ide_cmd_table, HD_OK entries). Anything absent
# aborts with ERR/ABRT (hostile-guest-catalog entry 5). NOP (00h) is absent on purpose: per
# ATA-6 8.21 NOP always completes with ABRT.
_COMMANDS: dict[int, tuple[_Handler, int]] = {
    ata.CMD_DSM: (D._dsm, 0),
    ata.CMD_RECALIBRATE: (D._nop, SET_DSC),
    ata.CMD_READ: (D._read_pio, 0),
    ata.CMD_READ_ONCE: (D._read_pio, 0),
    ata.CMD_READ_EXT: (D._read_pio, 0),
    ata.CMD_READ_DMA_EXT: (D._read_dma, 0),
    ata.CMD_READ_NATIVE_MAX_EXT: (D._read_native_max, SET_DSC),
    ata.CMD_READ_MULTIPLE_EXT: (D._read_multiple, 0),
    ata.CMD_WRITE: (D._write_pio, 0),
    ata.CMD_WRITE_ONCE: (D._write_pio, 0),
    ata.CMD_WRITE_EXT: (D._write_pio, 0),
    ata.CMD_WRITE_DMA_EXT: (D._write_dma, 0),
    ata.CMD_WRITE_MULTIPLE_EXT: (D._write_multiple, 0),
    ata.CMD_WRITE_VERIFY: (D._write_pio, 0),
    ata.CMD_VERIFY: (D._verify, SET_DSC),
    ata.CMD_VERIFY_ONCE: (D._verify, SET_DSC),
    ata.CMD_VERIFY_EXT: (D._verify, SET_DSC),
    ata.CMD_SEEK: (D._nop, SET_DSC),
    ata.CMD_DIAGNOSE: (D._diagnose, 0),
    ata.CMD_SPECIFY: (D._specify, SET_DSC),
    ata.CMD_STANDBY_NOW2: (D._nop, 0),
    ata.CMD_IDLE_IMMEDIATE2: (D._nop, 0),
    ata.CMD_STANDBY2: (D._nop, 0),
    ata.CMD_SET_IDLE2: (D._nop, 0),
    ata.CMD_CHECK_POWER_MODE2: (D._check_power_mode, SET_DSC),
    ata.CMD_SLEEP_NOW2: (D._nop, 0),
    ata.CMD_SMART: (D._smart, SET_DSC),
    ata.CMD_READ_MULTIPLE: (D._read_multiple, 0),
    ata.CMD_WRITE_MULTIPLE: (D._write_multiple, 0),
    ata.CMD_SET_MULTIPLE: (D._set_multiple, SET_DSC),
    ata.CMD_READ_DMA: (D._read_dma, 0),
    ata.CMD_READ_DMA_ONCE: (D._read_dma, 0),
    ata.CMD_WRITE_DMA: (D._write_dma, 0),
    ata.CMD_WRITE_DMA_ONCE: (D._write_dma, 0),
    ata.CMD_STANDBY_NOW1: (D._nop, 0),
    ata.CMD_IDLE_IMMEDIATE: (D._nop, 0),
    ata.CMD_STANDBY: (D._nop, 0),
    ata.CMD_SET_IDLE1: (D._nop, 0),
    ata.CMD_CHECK_POWER_MODE1: (D._check_power_mode, SET_DSC),
    ata.CMD_SLEEP_NOW1: (D._nop, 0),
    ata.CMD_FLUSH_CACHE: (D._flush, 0),
    ata.CMD_FLUSH_CACHE_EXT: (D._flush, 0),
    ata.CMD_IDENTIFY: (D._identify, 0),
    ata.CMD_SET_FEATURES: (D._set_features, SET_DSC),
    ata.CMD_READ_NATIVE_MAX: (D._read_native_max, SET_DSC),
}
# An empty position answers only the diagnostic (which reports on the whole channel).
_ABSENT_COMMANDS: dict[int, tuple[_Handler, int]] = {ata.CMD_DIAGNOSE: (D._diagnose, 0)}
AtaDrive.COMMANDS = _COMMANDS
del D
