"""The ATAPI CD-ROM: QEMU's ide-cd (hw/ide/atapi.c and the IDE_CD paths of hw/ide/core.c).

The ATA side: the packet signature (LBA mid/high 14h/EBh) after every reset, IDENTIFY
PACKET DEVICE, IDENTIFY DEVICE and READ SECTORS aborting with the signature (ATA-4
8.27.5.2), DEVICE RESET, PACKET, SET FEATURES, FLUSH CACHE, EXECUTE DEVICE DIAGNOSTIC.
Everything else aborts: the command whitelist of hostile-guest-catalog entry 5.

PACKET (A0h): the host writes a 12-byte command packet (interrupt reason CoD=1, IO=0, no
interrupt); then either a data-in phase, or straight the completion (CoD=1, IO=1, interrupt).
In PIO, each DRQ block is at most the byte-count limit the host wrote to LBA mid/high
(0 on a data command aborts at the ATA level, FFFFh means FFFEh, an odd limit is rounded
down when the data does not fit), the block size is reported back in LBA mid/high, the
interrupt reason is IO=1/CoD=0, and each block raises an interrupt. Unlike QEMU, a block is
not cut at 2048-byte sector boundaries inside the device: it is read from the medium at its
byte offset, so the guest sees the same registers with fewer internal steps. With feature
bit 0 set the data moves by bus-master DMA instead.

Transfer lengths are bounded before anything moves (hostile-guest-catalog entries 4 and 7,
and QEMU's historic cmd_read / cmd_read_cd length bugs): the block range of READ(10),
READ(12) and READ CD must lie inside the medium; a PIO block never exceeds
MAX_BYTE_COUNT or the reply/medium data left; the data cursor is the ATA drive's, bounded
by the buffer; every completion closes the data phase.

Media: `insert_media(backend)` / `eject_media()` for the toolstack (QMP), QEMU's
ide_cd_change_cb semantics: after a change, the next command that does not allow a unit
attention gets NOT READY / MEDIUM NOT PRESENT (2/3Ah), the one after that UNIT ATTENTION /
MEDIUM MAY HAVE CHANGED (6/28h), and from then until REQUEST SENSE clears it, such commands
get CHECK CONDITION without DRDY (ide_atapi_cmd_check_status). Commands that need a
medium report 2/3Ah while there is none or the tray is open.

Departures from QEMU: READ CD returns user data only (a raw 2352-byte request is ILLEGAL
REQUEST / INVALID FIELD); MODE SENSE also answers page 3Fh (all pages); READ TOC takes the
MMC format field (byte 2) as well as the SFF-8020 one (byte 9); a backend read error is
MEDIUM ERROR / UNRECOVERED READ ERROR (3/11h) where QEMU says ILLEGAL REQUEST / 21h; an odd
PIO block is padded to a whole word; the ATA-level abort of a zero byte-count limit raises an
interrupt (QEMU's leaves the host to time out).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devmodel.backends.disk import DiskBackend

from . import ata, mmc
from .drive import (
    DMA_ATAPI,
    DMA_NONE,
    END_ATAPI_REPLY,
    END_PACKET,
    FIRMWARE,
    SET_DSC,
    AtaDrive,
    _check_int,
)
from .identify import build_atapi_identify

if TYPE_CHECKING:
    from .channel import IdeChannel

ATAPI_PACKET_SIZE = 12
# The largest PIO DRQ block: the byte-count limit is 16 bits and FFFFh means FFFEh.
MAX_BYTE_COUNT = 0xFFFE
# The PIO buffer: one block of MAX_BYTE_COUNT, padded to a word.
ATAPI_BUFFER_SIZE = 0x10000
CD_MODEL = "QEMU DVD-ROM"

# Data source of the reply in progress.
SRC_NONE = 0
SRC_BUFFER = 1  # `reply_buf` holds it all (sense, inquiry, TOC ...)
SRC_MEDIUM = 2  # medium bytes from `xfer_offset`

# Command-table flags (QEMU atapi_cmd_table)
ALLOW_UA = 1  # runs under a pending unit attention
CHECK_READY = 2  # needs a medium: NOT READY otherwise
NONDATA = 4  # no data phase, so a zero byte-count limit is fine
CONDDATA = 8  # a data phase only for some parameters (READ CD): the handler checks


@dataclass
class Cdrom:
    """An ATAPI CD-ROM drive for `build_ide`: `medium` is the ISO (a read-only DiskBackend)
    or None for an empty drive."""

    medium: DiskBackend | None = None


class MediaLockedError(RuntimeError):
    """eject_media() on a drive whose guest set PREVENT MEDIUM REMOVAL."""


class AtapiDrive(AtaDrive):
    is_cd = True
    BUFFER_SIZE = ATAPI_BUFFER_SIZE
    BUSY_COMMANDS = frozenset({ata.CMD_DEVICE_RESET})

    def __init__(self, channel: IdeChannel, unit: int, medium: DiskBackend | None,
                 serial: str) -> None:
        self.medium_size = 0
        super().__init__(channel, unit, None, serial)
        self.present = True  # the drive is there, with or without a medium
        self.backend = medium
        self.cd_sectors = medium.size // mmc.CD_SECTOR_SIZE if medium is not None else 0
        self.tray_open = False
        self.tray_locked = False
        self.cdrom_changed = 0
        self.new_media = False
        self.eject_request = False

    @property
    def locked(self) -> bool:
        return self.tray_locked

    # ---- power-on / reset -----------------------------------------------------------------
    def _build_identify(self) -> bytearray:
        return build_atapi_identify(serial=self.serial, model=CD_MODEL, firmware=FIRMWARE)

    def power_on(self) -> None:
        super().power_on()
        # A machine reset unlocks the tray (QEMU ide_reset: tray_locked is kept across
        # resets only by the block layer, and a new boot starts unlocked).
        self.tray_locked = False

    def reset(self) -> None:
        """ide_reset plus the ATAPI part: no sense, no pending change, no transfer."""
        super().reset()
        self.sense_key = mmc.NO_SENSE
        self.asc = 0
        self.cdrom_changed = 0
        self.atapi_dma = False
        self.reply_buf = b""
        self.xfer_src = SRC_NONE
        self.xfer_offset = 0
        self.xfer_left = 0

    def set_signature(self) -> None:
        self.select &= ~ata.DEV_HS & 0xFF
        self.nsector = 1
        self.sector = 1
        self.lcyl, self.hcyl = ata.ATAPI_SIG_LCYL, ata.ATAPI_SIG_HCYL

    def _diagnose(self, cmd: int = ata.CMD_DIAGNOSE) -> bool:
        """QEMU cmd_exec_dev_diagnostic for a packet device: status 0 (ATAPI-6 9.10: DRDY
        clear), error 01h, and no interrupt."""
        self.set_signature()
        self.status = 0
        self.error = 0x01
        return False

    # ---- ATA commands ---------------------------------------------------------------------
    def _abort_with_signature(self, cmd: int) -> bool:
        """IDENTIFY DEVICE and READ SECTORS to a packet device: the signature, then abort
        (ATA-4 8.27.5.2), so a host probing with them finds the ATAPI signature."""
        self.set_signature()
        self.abort_command()
        return True

    def _device_reset(self, cmd: int) -> bool:
        """DEVICE RESET (QEMU cmd_device_reset): halt any transfer, reset, signature, status
        0; no interrupt."""
        self.transfer_halt()
        self.dma_cmd = DMA_NONE
        if self.channel.dma_unit == self.unit:
            self.channel.dma_unit = -1
        self.reset()
        self.status = 0
        return False

    def _set_features(self, cmd: int) -> bool:
        if self.feature in (ata.FEAT_WCACHE_ON, ata.FEAT_WCACHE_OFF):
            return True  # nothing is cached on a read-only medium
        return super()._set_features(cmd)

    def _flush(self, cmd: int) -> bool:
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.channel.set_irq()
        return False

    def _packet(self, cmd: int) -> bool:
        """PACKET (QEMU cmd_packet): receive the command packet, CoD=1 IO=0, no interrupt."""
        if self.feature & ata.ATAPI_FEAT_OVL:
            self.abort_command()  # overlapped commands are not supported
            return True
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.atapi_dma = bool(self.feature & ata.ATAPI_FEAT_DMA)
        self.nsector = ata.ATAPI_INT_REASON_CD
        self.transfer_start(ATAPI_PACKET_SIZE, END_PACKET)
        return False

    def end_transfer(self, fn: int) -> None:
        if fn == END_PACKET:
            self.atapi_cmd(bytes(self.buf[:ATAPI_PACKET_SIZE]))
        elif fn == END_ATAPI_REPLY:
            self.reply_next()
        else:
            super().end_transfer(fn)

    # ---- completions ----------------------------------------------------------------------
    def _int_reason(self, bits: int) -> None:
        self.nsector = (self.nsector & ~7 & 0xFF) | bits

    def cmd_ok(self) -> None:
        """ide_atapi_cmd_ok: GOOD status, CoD=1 IO=1, interrupt."""
        self.transfer_stop()
        self.xfer_src = SRC_NONE
        self.error = 0
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self._int_reason(ata.ATAPI_INT_REASON_IO | ata.ATAPI_INT_REASON_CD)
        self.channel.set_irq()

    def cmd_error(self, sense_key: int, asc: int) -> None:
        """ide_atapi_cmd_error: CHECK CONDITION, sense key in the error register's high
        nibble, CoD=1 IO=1, interrupt; REQUEST SENSE returns the rest."""
        self.transfer_stop()
        self.xfer_src = SRC_NONE
        self.error = (sense_key << 4) & 0xFF
        self.status = ata.READY_STAT | ata.ERR_STAT
        self._int_reason(ata.ATAPI_INT_REASON_IO | ata.ATAPI_INT_REASON_CD)
        self.sense_key, self.asc = sense_key, asc
        self.channel.set_irq()

    def _check_status(self) -> None:
        """ide_atapi_cmd_check_status: a unit attention is pending."""
        self.transfer_stop()
        self.xfer_src = SRC_NONE
        self.error = ata.MC_ERR | (mmc.UNIT_ATTENTION << 4)
        self.status = ata.ERR_STAT
        self.nsector = 0
        self.channel.set_irq()

    # ---- the packet -----------------------------------------------------------------------
    def media_present(self) -> bool:
        return not self.tray_open and self.cd_sectors > 0

    def atapi_cmd(self, cdb: bytes) -> None:
        """QEMU ide_atapi_cmd: unit attention, media change, not ready, byte-count checks,
        then the command."""
        entry = _MMC.get(cdb[0])
        flags = entry[1] if entry else 0
        if self.sense_key == mmc.UNIT_ATTENTION and not flags & ALLOW_UA:
            self._check_status()
            return
        if not flags & ALLOW_UA and self.media_present() and self.cdrom_changed:
            if self.cdrom_changed == 1:
                self.cmd_error(mmc.NOT_READY, mmc.ASC_MEDIUM_NOT_PRESENT)
                self.cdrom_changed = 2
            else:
                self.cmd_error(mmc.UNIT_ATTENTION, mmc.ASC_MEDIUM_MAY_HAVE_CHANGED)
                self.cdrom_changed = 0
            return
        if flags & CHECK_READY and not self.media_present():
            self.cmd_error(mmc.NOT_READY, mmc.ASC_MEDIUM_NOT_PRESENT)
            return
        if entry is None:
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_ILLEGAL_OPCODE)
            return
        if not flags & (NONDATA | CONDDATA) and not self._bcl_ok():
            return
        entry[0](self, cdb)

    def byte_count_limit(self) -> int:
        bcl = self.lcyl | self.hcyl << 8
        return MAX_BYTE_COUNT if bcl == 0xFFFF else bcl

    def _bcl_ok(self) -> bool:
        """A PIO data command with a zero byte-count limit aborts at the ATA level (ACS-3
        7.17.6.49; QEMU validate_bcl)."""
        if self.atapi_dma or self.byte_count_limit():
            return True
        self.abort_with_irq()
        return False

    # ---- data-in phase --------------------------------------------------------------------
    def reply(self, data: bytes, max_len: int) -> None:
        """ide_atapi_cmd_reply: send `data`, cut to the allocation length."""
        assert len(data) <= mmc.MAX_REPLY
        data = data[: max(max_len, 0)]
        if not data:
            self.cmd_ok()
            return
        self.reply_buf = data
        self._start_data(SRC_BUFFER, 0, len(data))

    def read_medium(self, lba: int, count: int) -> None:
        """ide_atapi_cmd_read: `count` 2048-byte blocks from `lba`, range-checked already."""
        assert 0 <= lba and 0 < count and lba + count <= self.cd_sectors
        self._start_data(SRC_MEDIUM, lba * mmc.CD_SECTOR_SIZE, count * mmc.CD_SECTOR_SIZE)

    def _start_data(self, src: int, offset: int, length: int) -> None:
        self.xfer_src, self.xfer_offset, self.xfer_left = src, offset, length
        if self.atapi_dma:
            # The bus master moves it all (run_dma); QEMU shows BSY while a read runs.
            busy = ata.BUSY_STAT if src == SRC_MEDIUM else 0
            self.status = ata.READY_STAT | ata.SEEK_STAT | ata.DRQ_STAT | busy
            self.dma_cmd = DMA_ATAPI
            self.channel.dma_requested(self)
            return
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.reply_next()

    def reply_next(self) -> None:
        """The next DRQ block of a PIO data-in phase, or the completion after the last one
        (ide_atapi_cmd_reply_end)."""
        left = self.xfer_left
        if left <= 0:
            self.cmd_ok()
            return
        bcl = self.byte_count_limit()
        size = left
        if size > bcl:
            size = bcl & ~1  # the limit must be even when the data does not fit
        if size <= 0:  # a zero limit after the data phase began: nothing sensible to move
            self.abort_with_irq()
            return
        assert 0 < size <= MAX_BYTE_COUNT
        if self.xfer_src == SRC_BUFFER:
            start = len(self.reply_buf) - left
            self.buf[:size] = self.reply_buf[start : start + size]
            self._reply_block(size)
            return
        # From the medium: BSY until the read completes (_io_seq), then the DRQ block.
        self._io_seq([("read", (self.xfer_offset, [memoryview(self.buf)[:size]]))],
                     lambda err: self._medium_block_done(err, size))

    def _medium_block_done(self, err: OSError | None, size: int) -> None:
        if err is not None:
            self.dma_io_error(err)  # the same report, PIO or DMA
            return
        self.xfer_offset += size
        self._reply_block(size)

    def _reply_block(self, size: int) -> None:
        """Offer `size` bytes of buf as the next DRQ block, with an interrupt."""
        self.xfer_left -= size
        window = size + (size & 1)  # an odd block is padded to a whole word
        self.buf[size:window] = bytes(window - size)
        self.lcyl, self.hcyl = size & 0xFF, (size >> 8) & 0xFF
        self._int_reason(ata.ATAPI_INT_REASON_IO)
        self.status = ata.READY_STAT | ata.SEEK_STAT
        self.transfer_start(window, END_ATAPI_REPLY)
        self.channel.set_irq()

    # ---- DMA (IdeChannel.run_dma) ---------------------------------------------------------
    def dma_to_memory(self) -> bool:
        return True

    def dma_length(self) -> int:
        return self.xfer_left

    def dma_check(self) -> bool:
        return True

    def dma_io(self, views: list[memoryview], done: Callable[[OSError | None], None]) -> None:
        if self.xfer_src == SRC_MEDIUM:
            self._io_seq([("read", (self.xfer_offset, views))], done)
            return
        pos = 0
        for v in views:  # the reply is at most MAX_REPLY bytes (dma_length)
            v[:] = self.reply_buf[pos : pos + len(v)]
            pos += len(v)
        done(None)

    def dma_io_error(self, err: OSError | None = None) -> None:
        self.report_io_error(True, err)
        self.cmd_error(mmc.MEDIUM_ERROR, mmc.ASC_UNRECOVERED_READ_ERROR)

    def dma_complete(self) -> None:
        self.xfer_left = 0
        self.cmd_ok()

    # ---- MMC commands ---------------------------------------------------------------------
    def _test_unit_ready(self, cdb: bytes) -> None:
        self.cmd_ok()  # not-ready conditions were handled by atapi_cmd

    def _request_sense(self, cdb: bytes) -> None:
        data = mmc.sense(self.sense_key, self.asc)
        if self.sense_key == mmc.UNIT_ATTENTION:
            self.sense_key = mmc.NO_SENSE
        self.reply(data, cdb[4])

    def _inquiry(self, cdb: bytes) -> None:
        if cdb[1] & 0x01:  # EVPD
            page = mmc.inquiry_vpd(cdb[2], self.serial, CD_MODEL, cdb[4])
            if page is None:
                asc = mmc.ASC_DATA_PHASE_ERROR if cdb[2] == 0x83 else mmc.ASC_INV_FIELD_IN_CMD_PACKET
                self.cmd_error(mmc.ILLEGAL_REQUEST, asc)
                return
            self.reply(page, cdb[4])
            return
        self.reply(mmc.inquiry(FIRMWARE), cdb[4])

    def _read_capacity(self, cdb: bytes) -> None:
        self.reply(mmc.read_capacity(self.cd_sectors), 8)

    def _read(self, cdb: bytes) -> None:
        """READ(10)/READ(12) (QEMU cmd_read, with the range check of its later fix)."""
        if cdb[0] == mmc.READ_10:
            count = struct.unpack_from(">H", cdb, 7)[0]
        else:
            count = struct.unpack_from(">I", cdb, 6)[0]
        if count == 0:
            self.cmd_ok()
            return
        lba = struct.unpack_from(">I", cdb, 2)[0]
        if self._blocks_ok(lba, count):
            self.read_medium(lba, count)

    def _blocks_ok(self, lba: int, count: int) -> bool:
        """The block range lies inside the medium; otherwise the command fails (5/21h)."""
        if lba >= self.cd_sectors or count > self.cd_sectors - lba:
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_LOGICAL_BLOCK_OOR)
            return False
        return True

    def _read_cd(self, cdb: bytes) -> None:
        """READ CD (QEMU cmd_read_cd): user data (2048 bytes per block) or nothing."""
        count = cdb[6] << 16 | cdb[7] << 8 | cdb[8]
        if count == 0:
            self.cmd_ok()
            return
        lba = struct.unpack_from(">I", cdb, 2)[0]
        if not self._blocks_ok(lba, count):
            return
        request = cdb[9] & 0xF8
        if request == 0x00:
            self.cmd_ok()  # no fields selected: nothing to transfer
            return
        if not self._bcl_ok():
            return
        if request == 0x10:  # user data only
            self.read_medium(lba, count)
            return
        self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET)

    def _seek(self, cdb: bytes) -> None:
        if self._blocks_ok(struct.unpack_from(">I", cdb, 2)[0], 1):
            self.cmd_ok()

    def _read_toc(self, cdb: bytes) -> None:
        max_len = struct.unpack_from(">H", cdb, 7)[0]
        fmt = cdb[2] & 0x0F or cdb[9] >> 6
        msf = bool(cdb[1] & 0x02)
        if fmt == 0:
            data = mmc.toc_format0(self.cd_sectors, msf, cdb[6])
        elif fmt == 1:
            data = mmc.toc_format1()
        elif fmt == 2:
            data = mmc.toc_format2(self.cd_sectors, msf)
        else:
            data = None
        if data is None:
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET)
            return
        self.reply(data, max_len)

    def _get_configuration(self, cdb: bytes) -> None:
        if cdb[2] or cdb[3]:  # only from feature 0
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET)
            return
        max_len = min(struct.unpack_from(">H", cdb, 7)[0], mmc.MAX_REPLY)
        self.reply(mmc.configuration(self.cd_sectors if self.media_present() else 0), max_len)

    def _get_event_status(self, cdb: bytes) -> None:
        """GET EVENT STATUS NOTIFICATION, polled only, media class only."""
        if not cdb[1] & 0x01:
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET)
            return
        max_len = struct.unpack_from(">H", cdb, 7)[0]
        if not cdb[4] & (1 << mmc.GESN_MEDIA):
            self.reply(mmc.event_status_none(), max_len)
            return
        event = mmc.MEC_NO_CHANGE
        if not self.tray_open:
            if self.new_media:
                event, self.new_media = mmc.MEC_NEW_MEDIA, False
            elif self.eject_request:
                event, self.eject_request = mmc.MEC_EJECT_REQUESTED, False
        self.reply(mmc.event_status_media(self.tray_open, self.backend is not None, event),
                   max_len)

    def _read_disc_information(self, cdb: bytes) -> None:
        if cdb[1] & 7:  # types 1/2 are for BD
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET)
            return
        self.reply(mmc.disc_information(), struct.unpack_from(">H", cdb, 7)[0])

    def _mode_sense(self, cdb: bytes) -> None:
        max_len = struct.unpack_from(">H", cdb, 7)[0]
        control, code = cdb[2] >> 6, cdb[2] & 0x3F
        if control == 3:
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_SAVING_PARAMETERS_NOT_SUPPORTED)
            return
        data = mmc.mode_sense(code, self.tray_locked) if control == 0 else None
        if data is None:  # changeable/default values, or a page this drive lacks
            self.cmd_error(mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET)
            return
        self.reply(data, max_len)

    def _start_stop_unit(self, cdb: bytes) -> None:
        """START STOP UNIT (QEMU cmd_start_stop_unit): LoEj with Start loads (closes the
        tray), without it ejects (opens it) unless PREVENT is in force. A power condition
        completes without touching the tray (and, unlike old QEMU, does complete:
        hostile-guest-catalog entry 4)."""
        start, loej = bool(cdb[4] & 1), bool(cdb[4] & 2)
        if cdb[4] & 0xF0 or not loej:
            self.cmd_ok()
            return
        if not start and not self.tray_open and self.tray_locked:
            key = mmc.NOT_READY if self.backend is not None else mmc.ILLEGAL_REQUEST
            self.cmd_error(key, mmc.ASC_MEDIA_REMOVAL_PREVENTED)
            return
        self.tray_open = not start
        self.cmd_ok()

    def _prevent_allow(self, cdb: bytes) -> None:
        self.tray_locked = bool(cdb[4] & 1)
        self.cmd_ok()

    def _mechanism_status(self, cdb: bytes) -> None:
        self.reply(mmc.mechanism_status(), struct.unpack_from(">H", cdb, 8)[0])

    def _set_speed(self, cdb: bytes) -> None:
        self.cmd_ok()

    # ---- media (the toolstack's side: QMP eject / blockdev-change-medium) ---------------
    def _media_changed(self) -> None:
        """QEMU ide_cd_change_cb."""
        self.cdrom_changed = 1
        self.new_media = True
        self.eject_request = False
        self.channel.set_irq()

    def insert_media(self, backend: DiskBackend) -> DiskBackend | None:
        """Put `backend` (an ISO, read-only) in the drive and close the tray. Returns the
        medium it replaces, for the caller to close."""
        if backend.size < mmc.CD_SECTOR_SIZE:
            raise ValueError(f"{getattr(backend, 'path', 'medium')} is smaller than one "
                             "2048-byte CD block")
        self.settle_io()  # a read in flight finishes from the medium it started on
        old, self.backend = self.backend, backend
        self.cd_sectors = backend.size // mmc.CD_SECTOR_SIZE
        self.tray_open = False
        self._media_changed()
        return old

    def eject_media(self, force: bool = False) -> DiskBackend | None:
        """Open the tray and take the medium out; returns it for the caller to close.
        A tray the guest locked is not opened unless `force`: the guest is told an eject
        was requested (GET EVENT STATUS) and MediaLockedError raised."""
        if self.tray_locked and not force:
            self.eject_request = True
            self.channel.set_irq()
            raise MediaLockedError("the guest has locked the CD-ROM tray")
        self.tray_locked = False
        self.settle_io()
        old, self.backend = self.backend, None
        self.cd_sectors = 0
        self.tray_open = True
        self._media_changed()
        return old

    # ---- snapshot -------------------------------------------------------------------------
    _ATAPI_INTS = (("sense_key", 0, 0x0F), ("asc", 0, 0xFF), ("cdrom_changed", 0, 2),
                   ("xfer_src", SRC_NONE, SRC_MEDIUM), ("xfer_offset", 0, 1 << 63),
                   ("xfer_left", 0, 1 << 63))
    _ATAPI_BOOLS = ("tray_open", "tray_locked", "new_media", "eject_request", "atapi_dma")

    def state(self) -> dict[str, Any]:
        st = super().state()
        for name, _, _ in self._ATAPI_INTS:
            st[name] = getattr(self, name)
        for name in self._ATAPI_BOOLS:
            st[name] = getattr(self, name)
        st["reply"] = bytes(self.reply_buf)
        st["cd_sectors"] = self.cd_sectors
        return st

    def load_state(self, st: dict[str, Any], bad: Callable[[str], Exception]) -> None:
        if st.get("cd_sectors") != self.cd_sectors:
            raise bad(f"drive {self.unit}: snapshot is of a different CD-ROM medium")
        for name, lo, hi in self._ATAPI_INTS:
            _check_int(st, name, lo, hi, bad)
        reply = st.get("reply")
        if not isinstance(reply, (bytes, bytearray)) or len(reply) > mmc.MAX_REPLY:
            raise bad(f"drive {self.unit}: reply must be at most {mmc.MAX_REPLY} bytes")
        src, off, left = st["xfer_src"], st["xfer_offset"], st["xfer_left"]
        if src == SRC_BUFFER and left > len(reply):
            raise bad(f"drive {self.unit}: reply cursor past the reply")
        if src == SRC_MEDIUM and off + left > self.cd_sectors * mmc.CD_SECTOR_SIZE:
            raise bad(f"drive {self.unit}: read past the medium")
        super().load_state(st, bad)
        for name, _, _ in self._ATAPI_INTS:
            setattr(self, name, st[name])
        for name in self._ATAPI_BOOLS:
            setattr(self, name, bool(st.get(name)))
        self.reply_buf = bytes(reply)


_Mmc = Callable[[AtapiDrive, bytes], None]
A = AtapiDrive
# QEMU atapi_cmd_table, with its flags.
_MMC: dict[int, tuple[_Mmc, int]] = {
    mmc.TEST_UNIT_READY: (A._test_unit_ready, CHECK_READY | NONDATA),
    mmc.REQUEST_SENSE: (A._request_sense, ALLOW_UA),
    mmc.INQUIRY: (A._inquiry, ALLOW_UA),
    mmc.START_STOP_UNIT: (A._start_stop_unit, NONDATA),
    mmc.PREVENT_ALLOW_MEDIUM_REMOVAL: (A._prevent_allow, NONDATA),
    mmc.READ_CAPACITY: (A._read_capacity, CHECK_READY),
    mmc.READ_10: (A._read, CHECK_READY),
    mmc.SEEK_10: (A._seek, CHECK_READY | NONDATA),
    mmc.READ_TOC_PMA_ATIP: (A._read_toc, CHECK_READY),
    mmc.GET_CONFIGURATION: (A._get_configuration, ALLOW_UA),
    mmc.GET_EVENT_STATUS_NOTIFICATION: (A._get_event_status, ALLOW_UA),
    mmc.READ_DISC_INFORMATION: (A._read_disc_information, CHECK_READY),
    mmc.MODE_SENSE_10: (A._mode_sense, 0),
    mmc.READ_12: (A._read, CHECK_READY),
    mmc.SET_CD_SPEED: (A._set_speed, NONDATA),
    mmc.MECHANISM_STATUS: (A._mechanism_status, 0),
    mmc.READ_CD: (A._read_cd, CHECK_READY | CONDDATA),
}

_Ata = Callable[[AtaDrive, int], bool]
# The ATA commands a packet device takes (QEMU ide_cmd_table, CD_OK and ALL_OK entries);
# the rest abort with ABRT, the signature kept.
_CD_COMMANDS: dict[int, tuple[_Ata, int]] = {
    ata.CMD_DEVICE_RESET: (A._device_reset, 0),  # type: ignore[dict-item]
    ata.CMD_READ: (A._abort_with_signature, 0),  # type: ignore[dict-item]
    ata.CMD_DIAGNOSE: (A._diagnose, 0),  # type: ignore[dict-item]
    ata.CMD_PACKET: (A._packet, 0),  # type: ignore[dict-item]
    # IDENTIFY PACKET DEVICE: AtaDrive's IDENTIFY transfer of this drive's packet-device data
    ata.CMD_IDENTIFY_PACKET: (A._identify, 0),  # type: ignore[dict-item]
    ata.CMD_FLUSH_CACHE: (A._flush, 0),  # type: ignore[dict-item]
    ata.CMD_IDENTIFY: (A._abort_with_signature, 0),  # type: ignore[dict-item]
    ata.CMD_SET_FEATURES: (A._set_features, SET_DSC),  # type: ignore[dict-item]
}
AtapiDrive.COMMANDS = _CD_COMMANDS
del A
