"""Encoders and decoders for every message of the wire contract. Pure functions, no I/O.

The hot path (IOREQ in, IORESP out) uses the precompiled structs directly; everything else
goes through the small helpers here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    DMOP_SIZE,
    FLAG_HAS_FDS,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    IOREQ_SIZE,
    NO_REPLY_DMOPS,
    DmOp,
    MsgType,
)

HEADER = struct.Struct("<HHIII")
IOREQ = struct.Struct("<QQIIIHBB")
# Header and ioreq in one unpack: the common case of the hot path.
HEADER_IOREQ = struct.Struct("<HHIIIQQIIIHBB")
HELLO = struct.Struct("<IIIIII")
MEM_ADD = struct.Struct("<QQQII")
MEM_DEL = struct.Struct("<II")
BUFIOREQ_HDR = struct.Struct("<II")
BUF_SLOT = struct.Struct("<II")
DMOP_HDR = struct.Struct("<II")
DMOP_BUF1_HDR = struct.Struct("<II")
DMOP_REPLY_HDR = struct.Struct("<iI")
ERROR_HDR = struct.Struct("<II")
CLOCK = struct.Struct("<Q")

# Bodies of the xen_dm_op union (xen-protocol.md 7.7); each is padded to 24 bytes.
DMOP_BODY = {
    DmOp.CREATE_IOREQ_SERVER: struct.Struct("<B3xH"),
    DmOp.GET_IOREQ_SERVER_INFO: struct.Struct("<HHIQQ"),
    DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER: struct.Struct("<HHIQQ"),
    DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER: struct.Struct("<HHIQQ"),
    DmOp.SET_IOREQ_SERVER_STATE: struct.Struct("<HBx"),
    DmOp.DESTROY_IOREQ_SERVER: struct.Struct("<H2x"),
    DmOp.TRACK_DIRTY_VRAM: struct.Struct("<IIQ"),
    DmOp.SET_PCI_INTX_LEVEL: struct.Struct("<HBBBB"),
    DmOp.SET_ISA_IRQ_LEVEL: struct.Struct("<BB"),
    DmOp.SET_PCI_LINK_ROUTE: struct.Struct("<BB"),
    DmOp.MODIFIED_MEMORY: struct.Struct("<II"),
    DmOp.SET_MEM_TYPE: struct.Struct("<IHHQ"),
    DmOp.INJECT_EVENT: struct.Struct("<IBBBxIIQ"),
    DmOp.INJECT_MSI: struct.Struct("<IIQ"),
    DmOp.MAP_MEM_TYPE_TO_IOREQ_SERVER: struct.Struct("<HHIQ"),
    DmOp.REMOTE_SHUTDOWN: struct.Struct("<I"),
    DmOp.RELOCATE_MEMORY: struct.Struct("<IIQQ"),
    DmOp.PIN_MEMORY_CACHEATTR: struct.Struct("<QQII"),
    DmOp.SET_IRQ_LEVEL: struct.Struct("<IB3x"),
    DmOp.NR_VCPUS: struct.Struct("<I"),
}
MODIFIED_MEMORY_EXTENT = struct.Struct("<IIQ")


def frame(mtype: int, payload: bytes = b"", *, tag: int = 0, chan: int = 0, flags: int = 0) -> bytes:
    return HEADER.pack(mtype, flags, len(payload), tag, chan) + payload


@dataclass(slots=True)
class Header:
    type: int
    flags: int
    length: int
    tag: int
    chan: int

    @classmethod
    def unpack(cls, buf: bytes | memoryview, offset: int = 0) -> Header:
        return cls(*HEADER.unpack_from(buf, offset))


@dataclass(slots=True)
class Ioreq:
    """A decoded ioreq_t. Bitfield byte 30: state 0-3, data_is_ptr 4, dir 5, df 6."""

    addr: int = 0
    data: int = 0
    count: int = 1
    size: int = 1
    vp_eport: int = 0
    state: int = 1
    data_is_ptr: int = 0
    dir: int = 0
    df: int = 0
    type: int = 0
    pad0: int = 0
    pad1: int = 0

    def pack(self) -> bytes:
        bits = (
            (self.state & 0xF)
            | (self.data_is_ptr & 1) << 4
            | (self.dir & 1) << 5
            | (self.df & 1) << 6
            | (self.pad1 & 1) << 7
        )
        return IOREQ.pack(
            self.addr & 0xFFFFFFFFFFFFFFFF,
            self.data & 0xFFFFFFFFFFFFFFFF,
            self.count,
            self.size,
            self.vp_eport,
            self.pad0,
            bits,
            self.type,
        )

    @classmethod
    def unpack(cls, buf: bytes | memoryview, offset: int = 0) -> Ioreq:
        addr, data, count, size, eport, pad0, bits, typ = IOREQ.unpack_from(buf, offset)
        return cls(
            addr, data, count, size, eport,
            bits & 0xF, bits >> 4 & 1, bits >> 5 & 1, bits >> 6 & 1, typ, pad0, bits >> 7,
        )


def ioreq_bits(state: int, data_is_ptr: int = 0, dir: int = 0, df: int = 0) -> int:
    return (state & 0xF) | (data_is_ptr & 1) << 4 | (dir & 1) << 5 | (df & 1) << 6


@dataclass(slots=True)
class BufIoreq:
    """One decoded posted write; a 64-bit value has already been joined from its two slots."""

    type: int
    addr: int
    size: int
    data: int
    dir: int = 0


def encode_buf_slots(type_: int, addr: int, size: int, data: int, dir: int = 0) -> list[bytes]:
    """The slot(s) Xen writes for one posted access (two slots for an 8-byte value)."""
    log2 = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    w0 = (type_ & 0xFF) | (dir & 1) << 9 | log2 << 10 | (addr & 0xFFFFF) << 12
    if size == 8:
        return [BUF_SLOT.pack(w0, data & 0xFFFFFFFF), BUF_SLOT.pack(w0, data >> 32 & 0xFFFFFFFF)]
    return [BUF_SLOT.pack(w0, data & 0xFFFFFFFF)]


def encode_bufioreq(items: list[tuple[int, int, int, int]]) -> bytes:
    """Payload of a BUFIOREQ message from (type, addr, size, data) writes."""
    slots: list[bytes] = []
    for typ, addr, size, data in items:
        slots.extend(encode_buf_slots(typ, addr, size, data))
    return BUFIOREQ_HDR.pack(len(slots), 0) + b"".join(slots)


class DecodeError(ValueError):
    """A payload that does not fit its message type. Carries the ERROR code to answer with."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


def decode_bufioreq(payload: bytes | memoryview) -> list[BufIoreq]:
    from .constants import MAX_BUFIOREQ_SLOTS, ErrorCode

    if len(payload) < BUFIOREQ_HDR.size:
        raise DecodeError(ErrorCode.BAD_LENGTH, "BUFIOREQ payload shorter than its 8-byte header")
    count, _ = BUFIOREQ_HDR.unpack_from(payload, 0)
    if count > MAX_BUFIOREQ_SLOTS:
        raise DecodeError(ErrorCode.BAD_FIELD, f"BUFIOREQ count {count} > {MAX_BUFIOREQ_SLOTS}")
    if len(payload) != BUFIOREQ_HDR.size + 8 * count:
        raise DecodeError(
            ErrorCode.BAD_LENGTH,
            f"BUFIOREQ with count {count} needs {8 + 8 * count} bytes, got {len(payload)}",
        )
    out: list[BufIoreq] = []
    i = 0
    while i < count:
        w0, data = BUF_SLOT.unpack_from(payload, 8 + 8 * i)
        size = 1 << (w0 >> 10 & 3)
        if size == 8:
            # The high half is the next slot; a lone first half is a broken producer (QEMU aborts
            # there, we refuse the batch).
            if i + 1 >= count:
                raise DecodeError(ErrorCode.BAD_FIELD, "BUFIOREQ ends in the first half of a qword")
            _, hi = BUF_SLOT.unpack_from(payload, 8 + 8 * (i + 1))
            data |= hi << 32
            i += 2
        else:
            i += 1
        out.append(BufIoreq(w0 & 0xFF, w0 >> 12, size, data, w0 >> 9 & 1))
    return out


def encode_dmop(op: int, *fields: int, buf1: bytes | None = None) -> bytes:
    """The xen_dm_op (32 bytes) plus the optional second buffer, as DMOP payload."""
    body = DMOP_BODY[DmOp(op)].pack(*fields)
    payload = DMOP_HDR.pack(op, 0) + body.ljust(24, b"\0")
    if buf1 is not None:
        payload += DMOP_BUF1_HDR.pack(len(buf1), 0) + buf1
    return payload


def dmop_flags(op: int) -> int:
    return FLAG_NO_REPLY if op in NO_REPLY_DMOPS else 0


@dataclass(slots=True)
class DmopMsg:
    op: int
    fields: tuple[int, ...]
    buf1: bytes | None = None


def decode_dmop(payload: bytes | memoryview) -> DmopMsg:
    from .constants import ErrorCode

    if len(payload) < DMOP_SIZE:
        raise DecodeError(ErrorCode.BAD_LENGTH, f"DMOP payload {len(payload)} < 32 bytes")
    op, pad = DMOP_HDR.unpack_from(payload, 0)
    try:
        body = DMOP_BODY[DmOp(op)]
    except ValueError:
        raise DecodeError(ErrorCode.BAD_FIELD, f"unknown dm_op {op}") from None
    fields = body.unpack_from(payload, 8)
    buf1 = None
    if len(payload) > DMOP_SIZE:
        if len(payload) < DMOP_SIZE + 8:
            raise DecodeError(ErrorCode.BAD_LENGTH, "DMOP second-buffer header truncated")
        n, _ = DMOP_BUF1_HDR.unpack_from(payload, DMOP_SIZE)
        if len(payload) != DMOP_SIZE + 8 + n:
            raise DecodeError(ErrorCode.BAD_LENGTH, "DMOP second buffer length mismatch")
        buf1 = bytes(payload[DMOP_SIZE + 8 :])
    return DmopMsg(op, fields, buf1)


def encode_dmop_reply(rc: int, dmop_payload: bytes, buf1: bytes | None = None) -> bytes:
    out = DMOP_REPLY_HDR.pack(rc, 0) + dmop_payload[:DMOP_SIZE]
    if buf1 is not None:
        out += buf1
    return out


def encode_error(code: int, text: str) -> bytes:
    return ERROR_HDR.pack(code, 0) + text.encode("utf-8", "replace")[:4000]


def decode_error(payload: bytes | memoryview) -> tuple[int, str]:
    code, _ = ERROR_HDR.unpack_from(payload, 0)
    return code, bytes(payload[8:]).decode("utf-8", "replace")


__all__ = [
    "HEADER", "IOREQ", "HEADER_IOREQ", "HELLO", "MEM_ADD", "MEM_DEL", "CLOCK", "HEADER_SIZE",
    "IOREQ_SIZE", "FLAG_HAS_FDS", "FLAG_NO_REPLY", "MsgType", "frame", "Header", "Ioreq",
    "ioreq_bits", "BufIoreq", "encode_buf_slots", "encode_bufioreq", "decode_bufioreq",
    "encode_dmop", "dmop_flags", "DmopMsg", "decode_dmop", "encode_dmop_reply", "encode_error",
    "decode_error", "DecodeError", "MODIFIED_MEMORY_EXTENT",
]
