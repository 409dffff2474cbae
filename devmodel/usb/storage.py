"""USB mass storage, Bulk-Only Transport (USB MSC BOT 1.0) with a SCSI disk on a DiskBackend:
QEMU's usb-storage (hw/usb/dev-storage.c) as seen by the guest (IDs, strings, endpoints).

CBW (31 bytes on bulk OUT, endpoint 2) -> optional data stage -> CSW (13 bytes on bulk IN,
endpoint 1). The host's and the device's ideas of the data stage are reconciled as the BOT
"thirteen cases" (section 6.7) say, with QEMU's choices where the spec offers two:
- host expects more than the device has: the device pads IN data with zeros / drops the
  extra OUT data, and reports the difference as dCSWDataResidue;
- host expects less than the device wants, no data, or the other direction: phase error
  (bCSWStatus 2), and the data stage carries padding only.
A CBW that is not valid or not meaningful (length != 31, bad signature, LUN != 0, CB length 0
or > 16) halts both bulk endpoints until the host does the reset recovery (section 5.3.4):
Bulk-Only Mass Storage Reset, then CLEAR_FEATURE(ENDPOINT_HALT) on both endpoints; before
the reset, CLEAR_FEATURE leaves them halted (section 6.6.1).

dCBWDataTransferLength comes from the guest and is never used to size an allocation: reads
stream from the backend through a buffer of at most IO_CHUNK bytes, writes collect at most
IO_CHUNK bytes before they go to the backend.

On an asynchronous backend (devmodel.backends.asyncdisk: ThreadedRawDisk, qemu-nbd images, the
IDE disks' port) no disk I/O runs inside an ioreq: a data-in packet the buffer cannot serve
submits the read of the next chunk and is NAKed until it completes (the host controller retries
it every frame, as a real stick NAKs while its flash is busy); a full write buffer is submitted
and the OUT packet that would overflow the next one is NAKed while a write is in flight, as is
the CSW until the command's writes (or SYNCHRONIZE CACHE's flush) are done, so the CSW's
status covers them. A bus reset, a
BOT reset or a detach starts a new generation: completions of the old one are dropped. On a
synchronous DiskBackend (RawFileDisk) the same paths read and write inline.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from devmodel.backends.asyncdisk import DiskBusy
from devmodel.backends.disk import DiskBackend

from .core import ACK, NAK, STALL, Endpoint, UsbDevice
from .desc import CFG_ATT_ONE, CFG_ATT_SELFPOWER, EP_BULK, DeviceDesc, EndpointDesc, InterfaceDesc
from .scsi import CHECK_CONDITION, DIR_IN, DIR_NONE, DIR_OUT, SENSE_READ_ERROR, SENSE_WRITE_ERROR, ScsiDisk

CBW_SIGNATURE = 0x43425355
CSW_SIGNATURE = 0x53425355
CBW_LEN = 31
CSW_LEN = 13
CSW_GOOD = 0
CSW_FAILED = 1
CSW_PHASE_ERROR = 2

REQ_BOT_RESET = 0xFF
REQ_GET_MAX_LUN = 0xFE

IO_CHUNK = 64 * 1024  # the most the device buffers between the bus and the backend
EP_IN = 0x81
EP_OUT = 0x02

MODE_CBW = "cbw"
MODE_DATA_IN = "data_in"
MODE_DATA_OUT = "data_out"
MODE_CSW = "csw"

_CBW = struct.Struct("<IIIBBB16s")
_CSW = struct.Struct("<IIIB")


class UsbMassStorage(UsbDevice):
    def __init__(self, backend: DiskBackend, name: str = "usb-storage") -> None:
        iface = InterfaceDesc(0, 0x08, 0x06, 0x50, (EndpointDesc(EP_IN, EP_BULK, 64),
                                                    EndpointDesc(EP_OUT, EP_BULK, 64)))
        desc = DeviceDesc(vendor=0x46F4, product=0x0001, bcd_usb=0x0200,
                          product_name="QEMU USB HARDDRIVE", serial="1",
                          config_name="Full speed config (usb 1.1)", interfaces=(iface,),
                          attributes=CFG_ATT_ONE | CFG_ATT_SELFPOWER, max_power=0)
        self.backend = backend
        self.scsi = ScsiDisk(backend)
        self.is_async = callable(getattr(backend, "submit_read", None))
        self.generation = 0  # completions of an older generation are dropped
        super().__init__(name, desc)

    def device_reset(self) -> None:
        self._bot_reset()
        self.reset_required = False
        self.scsi.reset()

    def _bot_reset(self) -> None:
        self.generation += 1
        self.rd_pending = False  # a backend read of this generation is in flight
        self.wr_pending = 0  # backend writes of this generation in flight
        self.mode = MODE_CBW
        self.tag = 0
        self.host_left = 0  # data-stage bytes the host still moves
        self.dev_left = 0  # of those, bytes that carry real data (the rest is padding)
        self.residue = 0
        self.csw_status = CSW_GOOD
        self.data = b""  # reply of a small IN command
        self.data_pos = 0
        self.disk_pos = -1  # READ/WRITE: backend offset of the next byte
        self.rd_buf = b""
        self.rd_off = 0
        self.wr_buf = bytearray()
        self.wr_off = 0

    # ---- class requests -------------------------------------------------------------------
    def class_request(self, rtype: int, req: int, value: int, index: int, length: int,
                      data: bytes | None) -> bytes | None:
        if index != 0:
            return None
        if rtype == 0x21 and req == REQ_BOT_RESET and value == 0 and length == 0:
            self._bot_reset()
            self.reset_required = False
            return b""
        if rtype == 0xA1 and req == REQ_GET_MAX_LUN and value == 0:
            return b"\0"
        return None

    def may_clear_halt(self, ep: Endpoint) -> bool:
        return not self.reset_required

    def _halt_both(self, why: str) -> int:
        self.count(why)
        self.reset_required = True
        for ep in self.endpoints.values():
            ep.halted = True
        self._bot_reset()
        return STALL

    # ---- bulk OUT: CBW and data out -------------------------------------------------------
    def data_out(self, ep: Endpoint, data: bytes) -> int:
        if self.mode == MODE_CBW:
            return self._cbw(data)
        if self.mode != MODE_DATA_OUT:
            self.count("bulk OUT outside a data-out stage")
            return STALL
        if len(data) > self.host_left:
            self.count("bulk OUT beyond dCBWDataTransferLength")
            return STALL
        real = min(len(data), self.dev_left)
        if real and self.wr_pending and (len(self.wr_buf) + real >= IO_CHUNK or real == self.dev_left):
            return NAK  # one write in flight at a time: the host sends this packet again
        if real:
            self.wr_buf += data[:real]
            self.dev_left -= real
            if len(self.wr_buf) >= IO_CHUNK or not self.dev_left:
                self._flush_writes()
        self.host_left -= len(data)
        if not self.host_left:
            self.mode = MODE_CSW
        return ACK

    def _flush_writes(self) -> None:
        if not self.wr_buf:
            return
        buf, self.wr_buf = self.wr_buf, bytearray()
        off = self.wr_off
        self.wr_off += len(buf)
        if self.csw_status != CSW_GOOD:
            return  # an earlier chunk failed: the command already failed
        if not self.is_async:
            try:
                self.backend.write_from(off, [buf])
            except OSError:
                self._io_failed("backend write error", SENSE_WRITE_ERROR)
            return
        backend: Any = self.backend  # asynchronous: submit_write
        self._submit_pending("backend write error",
                             lambda done: backend.submit_write(off, [memoryview(buf)], done))

    def _submit_flush(self) -> None:
        """SYNCHRONIZE CACHE on an asynchronous backend: the CSW waits for the flush (it covers
        the writes of earlier commands, which completed before their own CSW)."""
        backend: Any = self.backend
        self._submit_pending("backend flush error", backend.submit_flush)

    def _submit_pending(self, what: str, submit: Callable[[Callable[[OSError | None], None]], None]) -> None:
        """One write-side request (a chunk's write, a flush) the CSW waits for (wr_pending):
        `submit(done)` hands it to the backend; a failure, at submission or completion, fails
        the command with a write error counted as `what`."""
        generation = self.generation

        def done(err: OSError | None) -> None:
            if generation != self.generation:
                return  # the command was reset meanwhile
            self.wr_pending -= 1
            if err is not None:
                self._io_failed(what, SENSE_WRITE_ERROR)

        self.wr_pending += 1
        try:
            submit(done)
        except OSError:  # DiskBusy (a reset command's write still in flight), EBADF, EROFS
            self.wr_pending -= 1
            self._io_failed(what, SENSE_WRITE_ERROR)

    def _io_failed(self, what: str, sense: tuple[int, int, int]) -> None:
        self.count(what)
        self.scsi.sense = sense
        self.csw_status = CSW_FAILED

    def _cbw(self, data: bytes) -> int:
        if len(data) != CBW_LEN:
            return self._halt_both("CBW not 31 bytes")
        sig, tag, host_len, flags, lun, cblen, cb = _CBW.unpack(data)
        if sig != CBW_SIGNATURE:
            return self._halt_both("CBW signature invalid")
        if lun & 0x0F or not 1 <= cblen <= 16:
            return self._halt_both("CBW not meaningful (LUN or CB length)")
        cmd = self.scsi.start(cb[:cblen].ljust(16, b"\0"))
        host_dir = DIR_IN if flags & 0x80 else DIR_OUT
        phase_error = False
        real = 0
        if host_len == 0 or cmd.direction == DIR_NONE or cmd.length == 0:
            phase_error = cmd.length > 0 and host_len == 0
        elif cmd.direction != host_dir:
            phase_error = True
        else:
            real = min(host_len, cmd.length)
            phase_error = cmd.length > host_len
        self.tag = tag
        self.host_left = host_len
        self.dev_left = real
        self.residue = host_len - real
        if phase_error:
            self.count("BOT phase error")
            self.csw_status = CSW_PHASE_ERROR
        else:
            self.csw_status = CSW_FAILED if cmd.status == CHECK_CONDITION else CSW_GOOD
        self.data = cmd.data
        self.data_pos = 0
        self.disk_pos = cmd.disk_offset
        self.rd_buf = b""
        self.wr_buf = bytearray()
        self.wr_off = cmd.disk_offset
        if cmd.flush:
            self._submit_flush()
        if host_len == 0:
            self.mode = MODE_CSW
        else:
            self.mode = MODE_DATA_IN if host_dir == DIR_IN else MODE_DATA_OUT
        return ACK

    # ---- bulk IN: data in and CSW ---------------------------------------------------------
    def data_in(self, ep: Endpoint, max_len: int) -> tuple[int, bytes]:
        if self.mode == MODE_CSW:
            if self.wr_pending:
                return NAK, b""  # the status must cover the writes: wait for them
            if max_len < CSW_LEN:
                self.count("CSW read into a buffer under 13 bytes")
                return STALL, b""
            csw = _CSW.pack(CSW_SIGNATURE, self.tag, self.residue, self.csw_status)
            self._bot_reset()
            return ACK, csw
        if self.mode != MODE_DATA_IN:
            # QEMU stalls an IN that comes before a CBW or during a data-out stage.
            self.count("bulk IN outside a data-in or status stage")
            return STALL, b""
        n = min(max_len, self.host_left)
        real = min(n, self.dev_left)
        if real and self.is_async and not self._have(real):
            return NAK, b""  # the backend read is in flight: the host retries next frame
        out = self._read_real(real) if real else b""
        self.dev_left -= real
        self.host_left -= n
        if not self.host_left:
            self.mode = MODE_CSW
        return ACK, out + bytes(n - len(out))

    def _have(self, n: int) -> bool:
        """Whether the next n data-in bytes can be served now (asynchronous backend); starts
        the read of the next chunk if not and none is in flight."""
        pos = self.disk_pos
        if pos < 0 or self.csw_status != CSW_GOOD:
            return True
        start = pos - self.rd_off
        if 0 <= start and start + n <= len(self.rd_buf):
            return True
        if self.rd_pending:
            return False
        want = max(n, min(IO_CHUNK, self.dev_left))
        buf = bytearray(want)
        generation = self.generation

        def done(err: OSError | None) -> None:
            if generation != self.generation:
                return  # the command was reset meanwhile
            self.rd_pending = False
            if err is not None:
                self._io_failed("backend read error", SENSE_READ_ERROR)
                self.rd_buf = b""
            else:
                self.rd_buf = bytes(buf)
                self.rd_off = pos

        self.rd_pending = True
        try:
            self.backend.submit_read(pos, [memoryview(buf)], done)  # type: ignore[attr-defined]
        except DiskBusy:
            self.rd_pending = False  # a reset command's read still in flight: retry later
            return False
        except OSError:
            self.rd_pending = False
            self._io_failed("backend read error", SENSE_READ_ERROR)
            return True
        return not self.rd_pending  # completed inline (SyncCompletions, the page cache)

    def _read_real(self, n: int) -> bytes:
        if self.disk_pos < 0:
            out = self.data[self.data_pos : self.data_pos + n]
            self.data_pos += n
            return out
        pos = self.disk_pos
        self.disk_pos += n
        if self.csw_status != CSW_GOOD:
            return b""
        start = pos - self.rd_off
        if not (0 <= start and start + n <= len(self.rd_buf)):
            # refill: at most IO_CHUNK, never more than the command still moves
            want = max(n, min(IO_CHUNK, self.dev_left))
            buf = bytearray(want)
            try:
                self.backend.read_into(pos, [buf])
            except OSError:
                self.count("backend read error")
                self.scsi.sense = SENSE_READ_ERROR
                self.csw_status = CSW_FAILED
                self.rd_buf = b""
                return b""
            self.rd_buf = bytes(buf)
            self.rd_off = pos
            start = 0
        return self.rd_buf[start : start + n]

    # ---- snapshot -------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"mode": self.mode, "reset_required": int(self.reset_required), "tag": self.tag,
                "host_left": self.host_left, "dev_left": self.dev_left, "residue": self.residue,
                "csw_status": self.csw_status, "data": bytes(self.data), "data_pos": self.data_pos,
                "disk_pos": self.disk_pos, "wr_buf": bytes(self.wr_buf), "wr_off": self.wr_off,
                "sense": list(self.scsi.sense)}

    def restore_extra(self, st: dict[str, Any]) -> None:
        if st["mode"] not in (MODE_CBW, MODE_DATA_IN, MODE_DATA_OUT, MODE_CSW):
            raise ValueError(f"{self.name}: bad BOT mode {st['mode']!r}")
        if len(st["wr_buf"]) > IO_CHUNK or len(st["data"]) > 4096:
            raise ValueError(f"{self.name}: oversized buffers in snapshot")
        for k in ("host_left", "dev_left", "residue", "tag"):
            if not 0 <= int(st[k]) <= 0xFFFFFFFF:
                raise ValueError(f"{self.name}: {k} out of range")
        self.mode = st["mode"]
        self.reset_required = bool(st["reset_required"])
        self.tag = int(st["tag"])
        self.host_left = int(st["host_left"])
        self.dev_left = min(int(st["dev_left"]), self.host_left)
        self.residue = int(st["residue"])
        self.csw_status = int(st["csw_status"]) & 3
        self.data = bytes(st["data"])
        self.data_pos = int(st["data_pos"])
        self.disk_pos = int(st["disk_pos"])
        self.rd_buf = b""
        self.rd_off = 0
        self.rd_pending = False  # snapshots are taken with nothing in flight (drain)
        self.wr_pending = 0
        self.wr_buf = bytearray(st["wr_buf"])
        self.wr_off = int(st["wr_off"])
        key, asc, ascq = (int(v) & 0xFF for v in st["sense"])
        self.scsi.sense = (key, asc, ascq)
