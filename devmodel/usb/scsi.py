"""A SCSI direct-access disk on a DiskBackend, the command set a USB stick needs (SPC-3/SBC-2):
INQUIRY, TEST UNIT READY, REQUEST SENSE, READ CAPACITY(10), READ(10)/WRITE(10), MODE SENSE(6/10),
PREVENT ALLOW MEDIUM REMOVAL, SYNCHRONIZE CACHE(10), START STOP UNIT. Anything else is CHECK
CONDITION with ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE in the sense data, which the
next REQUEST SENSE returns (QEMU hw/scsi/scsi-disk.c answers the same way).

`start(cdb)` decides a command before any data moves and returns a `ScsiCommand`: direction,
the byte count the device intends to move, small reply data, or a disk byte range that the
transport streams in chunks (READ/WRITE never allocate what the guest asks for).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from devmodel.backends.disk import SECTOR_SIZE, DiskBackend

GOOD = 0x00
CHECK_CONDITION = 0x02

# sense keys / additional sense codes
NO_SENSE = 0x0
MEDIUM_ERROR = 0x3
ILLEGAL_REQUEST = 0x5
DATA_PROTECT = 0x7
SENSE_INVALID_OPCODE = (ILLEGAL_REQUEST, 0x20, 0x00)
SENSE_LBA_OUT_OF_RANGE = (ILLEGAL_REQUEST, 0x21, 0x00)
SENSE_INVALID_FIELD = (ILLEGAL_REQUEST, 0x24, 0x00)
SENSE_WRITE_PROTECTED = (DATA_PROTECT, 0x27, 0x00)
SENSE_READ_ERROR = (MEDIUM_ERROR, 0x11, 0x00)
SENSE_WRITE_ERROR = (MEDIUM_ERROR, 0x0C, 0x00)

TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
INQUIRY = 0x12
MODE_SENSE_6 = 0x1A
START_STOP_UNIT = 0x1B
PREVENT_ALLOW = 0x1E
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
SYNCHRONIZE_CACHE_10 = 0x35
MODE_SENSE_10 = 0x5A

DIR_NONE = 0
DIR_IN = 1
DIR_OUT = 2

VENDOR = b"QEMU    "
PRODUCT = b"QEMU HARDDISK   "
REVISION = b"2.5+"


@dataclass
class ScsiCommand:
    direction: int = DIR_NONE
    length: int = 0  # bytes the device intends to move
    data: bytes = b""  # reply of a small IN command
    disk_offset: int = -1  # READ/WRITE: byte offset on the backend
    status: int = GOOD
    write: bool = False
    flush: bool = False  # SYNCHRONIZE CACHE on an asynchronous backend: the transport submits it


class ScsiDisk:
    def __init__(self, backend: DiskBackend, serial: str = "1") -> None:
        self.backend = backend
        self.serial = serial
        self.sense = (NO_SENSE, 0, 0)

    @property
    def blocks(self) -> int:
        return self.backend.size // SECTOR_SIZE

    def reset(self) -> None:
        self.sense = (NO_SENSE, 0, 0)

    def fail(self, sense: tuple[int, int, int]) -> ScsiCommand:
        self.sense = sense
        return ScsiCommand(status=CHECK_CONDITION)

    def start(self, cdb: bytes) -> ScsiCommand:
        op = cdb[0]
        if op != REQUEST_SENSE:
            self.sense = (NO_SENSE, 0, 0)
        if op in (TEST_UNIT_READY, PREVENT_ALLOW, START_STOP_UNIT):
            return ScsiCommand()
        if op == REQUEST_SENSE:
            key, asc, ascq = self.sense
            self.sense = (NO_SENSE, 0, 0)
            data = bytes([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0])
            return self._reply(data, cdb[4])
        if op == INQUIRY:
            return self._inquiry(cdb)
        if op == READ_CAPACITY_10:
            last = min(self.blocks - 1, 0xFFFFFFFF) if self.blocks else 0
            return self._reply(struct.pack(">II", last, SECTOR_SIZE), 8)
        if op in (MODE_SENSE_6, MODE_SENSE_10):
            return self._mode_sense(cdb)
        if op in (READ_10, WRITE_10):
            if len(cdb) < 10:
                return self.fail(SENSE_INVALID_FIELD)
            lba, count = struct.unpack_from(">IxH", cdb, 2)
            if lba + count > self.blocks:
                return self.fail(SENSE_LBA_OUT_OF_RANGE)
            write = op == WRITE_10
            if write and self.backend.readonly:
                return self.fail(SENSE_WRITE_PROTECTED)
            return ScsiCommand(DIR_OUT if write else DIR_IN, count * SECTOR_SIZE,
                               disk_offset=lba * SECTOR_SIZE, write=write)
        if op == SYNCHRONIZE_CACHE_10:
            if callable(getattr(self.backend, "submit_flush", None)):
                return ScsiCommand(flush=True)  # no fdatasync inside an ioreq
            try:
                self.backend.flush()
            except OSError:
                return self.fail(SENSE_WRITE_ERROR)
            return ScsiCommand()
        return self.fail(SENSE_INVALID_OPCODE)

    @staticmethod
    def _reply(data: bytes, alloc: int) -> ScsiCommand:
        data = data[:alloc]
        return ScsiCommand(DIR_IN if data else DIR_NONE, len(data), data)

    def _inquiry(self, cdb: bytes) -> ScsiCommand:
        alloc = int.from_bytes(cdb[3:5], "big")
        if cdb[1] & 1:  # EVPD
            page = cdb[2]
            if page == 0x00:
                body = bytes([0x00, 0x80])
            elif page == 0x80:
                body = self.serial.encode()[:20]
            else:
                return self.fail(SENSE_INVALID_FIELD)
            return self._reply(bytes([0, page, 0, len(body)]) + body, alloc)
        if cdb[2]:
            return self.fail(SENSE_INVALID_FIELD)
        # Direct access, not removable, SPC-3, response format 2, 36 bytes.
        data = bytes([0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0x02]) + VENDOR + PRODUCT + REVISION
        return self._reply(data, alloc)

    def _mode_pages(self, page: int) -> bytes | None:
        pages = {
            # Caching: write cache enabled, as QEMU's default (cache=writeback).
            0x08: bytes([0x08, 0x12, 0x04]) + bytes(17),
            # Control mode page.
            0x0A: bytes([0x0A, 0x0A]) + bytes(10),
        }
        if page == 0x3F:
            return b"".join(pages[k] for k in sorted(pages))
        return pages.get(page)

    def _mode_sense(self, cdb: bytes) -> ScsiCommand:
        ten = cdb[0] == MODE_SENSE_10
        dbd = cdb[1] & 0x08
        page = cdb[2] & 0x3F
        pages = self._mode_pages(page)
        if pages is None or (cdb[2] >> 6) == 3:  # saved values are not supported
            return self.fail(SENSE_INVALID_FIELD)
        wp = 0x80 if self.backend.readonly else 0
        bdesc = b""
        if not dbd:
            nblocks = min(self.blocks, 0xFFFFFF)
            # density code, number of blocks (24 bit), reserved, block length (24 bit)
            bdesc = bytes([0]) + nblocks.to_bytes(3, "big") + struct.pack(">I", SECTOR_SIZE)
        if ten:
            alloc = int.from_bytes(cdb[7:9], "big")
            total = 8 + len(bdesc) + len(pages)
            head = struct.pack(">HBBxxH", total - 2, 0, wp, len(bdesc))
        else:
            alloc = cdb[4]
            total = 4 + len(bdesc) + len(pages)
            head = bytes([total - 1, 0, wp, len(bdesc)])
        return self._reply(head + bdesc + pages, alloc)
