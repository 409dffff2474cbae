"""One device position on an IDE channel: an ATA hard disk, or nothing (QEMU's IDEState).

The task-file registers, the command table and the PIO transfer state of QEMU hw/ide/core.c,
for the `ide-hd` kind only. The drive calls its `DiskBackend` port synchronously (see
devmodel/backends/disk.py for why); every command finishes inside the ioreq that started it
or that moved its last data word, so there is never I/O in flight to cancel or snapshot.

Where this model departs from QEMU, on purpose:
- a backend read error reports ERR with UNC (uncorrectable data, ATA-6 8.27.6), a write or
  flush error ERR with ABRT; QEMU's rerror=report gives ABRT for both;
- SMART and DATA SET MANAGEMENT abort, and IDENTIFY does not advertise them;
- a command to an empty master position aborts (QEMU runs a few housekeeping commands);
- data-port reads outside a PIO data phase return all-ones (hostile-guest-catalog entry 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devmodel.backends.disk import DiskBackend

from . import ata
from .identify import (
    MAX_MULT_SECTORS,
    W_CMDSET_ENABLED1,
    W_MULT_SETTING,
    W_MWDMA,
    W_SWDMA,
    W_UDMA,
    Geometry,
    build_identify,
    guess_geometry,
    set_word,
)

if TYPE_CHECKING:
    from .channel import IdeChannel

# The PIO buffer holds one READ/WRITE MULTIPLE block at most (the IDENTIFY page fits too).
PIO_BUFFER_SIZE = MAX_MULT_SECTORS * ata.SECTOR_SIZE

# What happens when the guest has moved the last byte of a PIO block (QEMU end_transfer_func).
END_STOP = 0  # ide_transfer_stop: the data phase is over
END_SECTOR_READ = 1  # ide_sector_read: fetch the next block of a read
END_SECTOR_WRITE = 2  # ide_sector_write: store the block just received

DMA_NONE = 0
DMA_READ = 1
DMA_WRITE = 2

# Command-table flags (QEMU ide_cmd_table): set DSC in the status on success.
SET_DSC = 1

MODEL = "QEMU HARDDISK"
FIRMWARE = "2.5+"  # qemu_hw_version()


class AtaDrive:
    """Task file + command engine of one device. `backend is None` means no device here."""

    def __init__(self, channel: IdeChannel, unit: int, backend: DiskBackend | None,
                 serial: str, geometry: Geometry | None = None) -> None:
        self.channel = channel
        self.unit = unit
        self.backend = backend
        self.present = backend is not None
        self.nb_sectors = backend.size // ata.SECTOR_SIZE if backend is not None else 0
        self.geometry = geometry or guess_geometry(self.nb_sectors)
        self.serial = serial
        # PIO data buffer and its fast views: the data port reads a 16-bit word by indexing
        # a memoryview cast, the cheapest per-access path Python has (no struct, no slicing).
        self.buf = bytearray(PIO_BUFFER_SIZE)
        self.w16 = memoryview(self.buf).cast("H")
        self.w32 = memoryview(self.buf).cast("I")
        self.power_on()

    # ---- power-on / reset -----------------------------------------------------------------
    def power_on(self) -> None:
        self.write_cache = True
        self.mult_sectors = MAX_MULT_SECTORS
        self.identify = self._build_identify()
        self.reset()

    def _build_identify(self) -> bytearray:
        return build_identify(
            self.nb_sectors, self.geometry, serial=self.serial, model=MODEL, firmware=FIRMWARE,
            mult_sectors=self.mult_sectors, write_cache=self.write_cache)

    def reset(self) -> None:
        """QEMU ide_reset: registers, signature, no data phase, no DMA."""
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
    def transfer_start(self, size: int, end_fn: int) -> None:
        """Open a data phase of `size` bytes of `buf` (QEMU ide_transfer_start)."""
        self.pos = 0
        self.end = size
        self.end_fn = end_fn
        if end_fn == END_SECTOR_WRITE:
            self.rd_end, self.wr_end = 0, size
        else:
            self.rd_end, self.wr_end = size, 0
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
        if fn == END_SECTOR_READ:
            self.sector_read()
        elif fn == END_SECTOR_WRITE:
            self.sector_write()
        else:
            self.transfer_stop()

    # ---- addressing -----------------------------------------------------------------------
    def get_sector(self) -> int:
        if self.select & ata.DEV_LBA:
            if self.lba48:
                return (self.hob_hcyl << 40 | self.hob_lcyl << 32 | self.hob_sector << 24
                        | self.hcyl << 16 | self.lcyl << 8 | self.sector)
            return (self.select & ata.DEV_HS) << 24 | self.hcyl << 16 | self.lcyl << 8 | self.sector
        g = self.geometry
        # CHS; sector 0 is invalid and gives -1, which the range check refuses.
        return ((self.hcyl << 8 | self.lcyl) * g.heads * g.sectors
                + (self.select & ata.DEV_HS) * g.sectors + self.sector - 1)

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
            g = self.geometry
            per_cyl = g.heads * g.sectors  # never 0: guess_geometry gives >= 1 head, sector
            cyl, r = divmod(lba, per_cyl)
            self.hcyl = (cyl >> 8) & 0xFF
            self.lcyl = cyl & 0xFF
            self.select = (self.select & ~ata.DEV_HS & 0xFF) | ((r // g.sectors) & ata.DEV_HS)
            self.sector = (r % g.sectors) + 1

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
    def abort_command(self) -> None:
        self.transfer_stop()
        self.status = ata.READY_STAT | ata.ERR_STAT
        self.error = ata.ABRT_ERR

    def rw_error(self) -> None:
        """Address outside the medium (QEMU ide_rw_error: ABRT plus an interrupt)."""
        self.abort_command()
        self.channel.set_irq()

    def io_error(self, is_read: bool) -> None:
        """The backend failed: report it to the guest and carry on."""
        self.transfer_stop()
        self.status = ata.READY_STAT | ata.ERR_STAT
        self.error = ata.UNC_ERR if is_read else ata.ABRT_ERR
        self.channel.dev.counters["backend_read_error" if is_read else "backend_write_error"] += 1
        self.channel.set_irq()

    # ---- command dispatch -----------------------------------------------------------------
    def exec_cmd(self, cmd: int) -> None:
        """QEMU ide_exec_cmd for an ATA disk."""
        if self.unit == 1 and not self.present:
            return  # commands to a non-existent device 1 are ignored
        if self.status & (ata.BUSY_STAT | ata.DRQ_STAT):
            self.channel.dev.guest_error("command while BSY/DRQ")
            return
        entry = _COMMANDS.get(cmd) if self.present else _ABSENT_COMMANDS.get(cmd)
        if entry is None:
            self.abort_command()
            self.channel.set_irq()
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
            set_word(self.identify, W_CMDSET_ENABLED1, (1 << 14) | (1 << 5))
            return True
        if f == ata.FEAT_WCACHE_OFF:
            self.write_cache = False
            set_word(self.identify, W_CMDSET_ENABLED1, 1 << 14)
            self.flush_cache()
            return False
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
        try:
            self.backend.read_into(lba * ata.SECTOR_SIZE, [memoryview(self.buf)[:nbytes]])
        except OSError:
            self.io_error(is_read=True)
            return
        self.set_sector(lba + n)
        self.nsector -= n
        self.transfer_start(nbytes, END_SECTOR_READ)
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
        try:
            self.backend.write_from(lba * ata.SECTOR_SIZE, [memoryview(self.buf)[:nbytes]])
            if not self.write_cache:
                self.backend.flush()
        except OSError:
            self.io_error(is_read=False)
            return
        self.nsector -= n
        self.set_sector(lba + n)
        if self.nsector == 0:
            self.transfer_stop()
        else:
            self.transfer_start(min(self.nsector, self.req_nb_sectors) * ata.SECTOR_SIZE,
                                END_SECTOR_WRITE)
        self.channel.set_irq()

    def flush_cache(self) -> None:
        if self.backend is not None:
            try:
                self.backend.flush()
            except OSError:
                self.io_error(is_read=False)
                return
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.channel.set_irq()

    def _start_dma(self, kind: int) -> None:
        """QEMU ide_sector_start_dma: DRQ up, then the bus master moves the data when (or as
        soon as) its start bit is set."""
        self.status = ata.READY_STAT | ata.SEEK_STAT | ata.DRQ_STAT
        self.dma_cmd = kind
        self.channel.dma_requested(self)

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
        _check_int(st, "end_fn", END_STOP, END_SECTOR_WRITE, bad)
        _check_int(st, "dma_cmd", DMA_NONE, DMA_WRITE, bad)
        _check_int(st, "end", 0, PIO_BUFFER_SIZE, bad)
        _check_int(st, "pos", 0, st["end"], bad)
        if st["pos"] & 1:
            raise bad(f"drive {self.unit}: odd PIO position")
        for name, size in (("identify", 512), ("buf", PIO_BUFFER_SIZE)):
            v = st.get(name)
            if not isinstance(v, (bytes, bytearray)) or len(v) != size:
                raise bad(f"drive {self.unit}: {name} must be {size} bytes")
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
        # Derived: which direction the open data phase (if any) moves.
        live = self.end if self.status & ata.DRQ_STAT else 0
        if self.end_fn == END_SECTOR_WRITE:
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
    ata.CMD_SPECIFY: (D._nop, SET_DSC),
    ata.CMD_STANDBY_NOW2: (D._nop, 0),
    ata.CMD_IDLE_IMMEDIATE2: (D._nop, 0),
    ata.CMD_STANDBY2: (D._nop, 0),
    ata.CMD_SET_IDLE2: (D._nop, 0),
    ata.CMD_CHECK_POWER_MODE2: (D._check_power_mode, SET_DSC),
    ata.CMD_SLEEP_NOW2: (D._nop, 0),
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
del D
