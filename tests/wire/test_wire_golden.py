"""Golden bytes for every message of the wire contract, written by hand from the Xen layouts in
shared/docs/xen-protocol.md (sections 1.1, 2.1, 3.2, 7.1, 7.2, 7.7). Each literal is checked in
both directions: our encoder produces it, and our decoder reads the right fields out of it.
"""

from __future__ import annotations

import pytest

from devmodel.wire import codec
from devmodel.wire.codec import (
    BufIoreq,
    DecodeError,
    Header,
    Ioreq,
    decode_bufioreq,
    decode_dmop,
    decode_error,
    encode_buf_slots,
    encode_bufioreq,
    encode_dmop,
    encode_dmop_reply,
    encode_error,
    frame,
)
from devmodel.wire.constants import (
    FLAG_HAS_FDS,
    FLAG_NO_REPLY,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_TYPE_TIMEOFFSET,
    DmOp,
    ErrorCode,
    MsgType,
    sbdf,
)
from devmodel.wire.framing import Deframer


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def one_message(data: bytes):
    d = Deframer()
    d.feed(data)
    msgs = list(d.messages())
    assert len(msgs) == 1 and d.buffered == 0
    return msgs[0]


# ---- header (7.1): <HHIII type, flags, payload_len, tag, chan --------------------------------

def test_header_layout():
    data = frame(0x0102, b"\xaa" * 3, tag=0x11223344, chan=0x55667788, flags=0x0003)
    assert data == h("02 01 | 03 00 | 03 00 00 00 | 44 33 22 11 | 88 77 66 55 | aa aa aa")
    hd = Header.unpack(data)
    assert (hd.type, hd.flags, hd.length, hd.tag, hd.chan) == (0x0102, 3, 3, 0x11223344, 0x55667788)


# ---- HELLO -----------------------------------------------------------------------------------

HELLO_GOLDEN = h(
    "01 00 00 00 18 00 00 00 07 00 00 00 00 00 00 00"  # HELLO, flags 0, len 24, tag 7, chan 0
    "01 00 00 00"  # version 1
    "00 10 00 00"  # page_size 4096
    "02 00 00 00"  # nr_vcpus 2
    "07 00 00 00"  # features: buffered ring | memfd RAM | PCI_CONFIG routing
    "05 00 00 00"  # domid 5
    "00 00 00 00"  # pad
)


def test_hello_golden():
    assert frame(MsgType.HELLO, codec.HELLO.pack(1, 4096, 2, 7, 5, 0), tag=7) == HELLO_GOLDEN
    msg = one_message(HELLO_GOLDEN)
    assert (msg.type, msg.tag, msg.chan, msg.flags) == (MsgType.HELLO, 7, 0, 0)
    assert codec.HELLO.unpack(msg.payload) == (1, 4096, 2, 7, 5, 0)


# ---- MEM_ADD / MEM_DEL -----------------------------------------------------------------------

MEM_ADD_GOLDEN = h(
    "02 00 02 00 20 00 00 00 03 00 00 00 00 00 00 00"  # MEM_ADD, HAS_FDS, len 32, tag 3
    "00 00 10 00 00 00 00 00"  # gpa 0x100000
    "00 00 f0 03 00 00 00 00"  # size 0x3f00000
    "00 00 10 00 00 00 00 00"  # fd_offset = gpa
    "01 00 00 00"  # flags RAM
    "02 00 00 00"  # region_id 2
)


def test_mem_add_golden():
    payload = codec.MEM_ADD.pack(0x100000, 0x3F00000, 0x100000, 1, 2)
    assert frame(MsgType.MEM_ADD, payload, tag=3, flags=FLAG_HAS_FDS) == MEM_ADD_GOLDEN
    msg = one_message(MEM_ADD_GOLDEN)
    assert msg.type == MsgType.MEM_ADD and msg.flags == FLAG_HAS_FDS
    assert codec.MEM_ADD.unpack(msg.payload) == (0x100000, 0x3F00000, 0x100000, 1, 2)


MEM_DEL_GOLDEN = h("03 00 00 00 08 00 00 00 04 00 00 00 00 00 00 00" "09 00 00 00 00 00 00 00")


def test_mem_del_golden():
    assert frame(MsgType.MEM_DEL, codec.MEM_DEL.pack(9, 0), tag=4) == MEM_DEL_GOLDEN
    assert codec.MEM_DEL.unpack(one_message(MEM_DEL_GOLDEN).payload) == (9, 0)


# ---- IOREQ / IORESP (1.1) --------------------------------------------------------------------

IOREQ_GOLDEN = h(
    "04 00 00 00 20 00 00 00 2a 00 00 00 01 00 00 00"  # IOREQ, len 32, tag 42, chan (vCPU) 1
    "f8 0c 00 00 00 00 00 00"  # addr 0xcf8
    "00 00 00 80 00 00 00 00"  # data 0x80000000
    "01 00 00 00"  # count 1
    "04 00 00 00"  # size 4
    "01 00 00 00"  # vp_eport 1
    "00 00"  # pad0
    "01"  # bits: state READY, data_is_ptr 0, dir WRITE, df 0
    "00"  # type PIO
)
IORESP_GOLDEN = h(
    "05 00 00 00 20 00 00 00 2a 00 00 00 01 00 00 00"
    "fc 0c 00 00 00 00 00 00"  # addr 0xcfc
    "86 80 37 12 00 00 00 00"  # data 0x12378086 (answer)
    "01 00 00 00 04 00 00 00 01 00 00 00 00 00"
    "23"  # state IORESP_READY (3) | dir READ (0x20)
    "00"
)


def test_ioreq_golden_encode_decode():
    req = Ioreq(addr=0xCF8, data=0x80000000, count=1, size=4, vp_eport=1, state=1, type=0)
    assert frame(MsgType.IOREQ, req.pack(), tag=42, chan=1) == IOREQ_GOLDEN
    msg = one_message(IOREQ_GOLDEN)
    assert (msg.type, msg.tag, msg.chan) == (MsgType.IOREQ, 42, 1)
    assert Ioreq.unpack(msg.payload) == req


def test_ioresp_golden_encode_decode():
    resp = Ioreq(addr=0xCFC, data=0x12378086, count=1, size=4, vp_eport=1, state=3, dir=1)
    assert frame(MsgType.IORESP, resp.pack(), tag=42, chan=1) == IORESP_GOLDEN
    got = Ioreq.unpack(one_message(IORESP_GOLDEN).payload)
    assert got == resp and got.state == 3 and got.dir == 1


@pytest.mark.parametrize(
    "fields, byte30",
    [
        (dict(state=0xF), 0x0F),  # measured in xen-protocol.md 1.1
        (dict(state=0, data_is_ptr=1), 0x10),
        (dict(state=0, dir=1), 0x20),
        (dict(state=0, df=1), 0x40),
        (dict(state=0, pad1=1), 0x80),
        (dict(state=1, data_is_ptr=1, dir=1, df=1), 0x71),
    ],
)
def test_ioreq_bitfield_byte30(fields, byte30):
    req = Ioreq(**fields)
    raw = req.pack()
    assert len(raw) == 32
    assert raw[30] == byte30
    assert codec.ioreq_bits(req.state, req.data_is_ptr, req.dir, req.df) == byte30 & 0x7F
    back = Ioreq.unpack(raw)
    for k, v in fields.items():
        assert getattr(back, k) == v


def test_ioreq_rep_ptr_copy_golden():
    """REP MOVS RAM->MMIO, df=1: COPY, dir WRITE, data_is_ptr, count 3, size 8."""
    raw = h(
        "00 10 00 e0 00 00 00 00"  # addr 0xe0001000 (MMIO destination)
        "00 20 00 00 00 00 00 00"  # data = GPA 0x2000 (RAM source)
        "03 00 00 00 08 00 00 00 00 00 00 00 00 00"
        "51"  # READY | data_is_ptr | df
        "01"  # COPY
    )
    req = Ioreq(addr=0xE0001000, data=0x2000, count=3, size=8, state=1, data_is_ptr=1, df=1,
                type=IOREQ_TYPE_COPY)
    assert req.pack() == raw
    assert Ioreq.unpack(raw) == req


def test_ioreq_pci_config_address_golden():
    """1.6: addr = SBDF << 32 | reg; 00:01.0 register 0x60."""
    raw = h("60 00 00 00 08 00 00 00" + " 00" * 8 + " 01 00 00 00 01 00 00 00 00 00 00 00 00 00 21 02")
    req = Ioreq(addr=sbdf(0, 1, 0) << 32 | 0x60, count=1, size=1, state=1, dir=1,
                type=IOREQ_TYPE_PCI_CONFIG)
    assert req.pack() == raw
    assert sbdf(0, 1, 0) == 8 and sbdf(1, 2, 3, seg=4) == 0x0004_0113


def test_ioreq_wraps_addr_and_data_to_64_bits():
    raw = Ioreq(addr=-1, data=1 << 64 | 5).pack()
    assert raw[:16] == h("ff ff ff ff ff ff ff ff 05 00 00 00 00 00 00 00")


# ---- BUFIOREQ (2.1) --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args, slot0",
    [
        ((0xFF, 0, 1, 0), "ff 00 00 00"),  # type = 0xff
        ((0, 0, 1, 0, 1), "00 02 00 00"),  # dir
        ((0, 0, 8, 0), "00 0c 00 00"),  # size 8 -> log2 3
        ((0, 0xFFFFF, 1, 0), "00 f0 ff ff"),  # 20-bit address
    ],
)
def test_buf_ioreq_measured_bitfields(args, slot0):
    """The four measurements quoted in xen-protocol.md 2.1."""
    slots = encode_buf_slots(*args)
    assert slots[0][:4] == h(slot0)


def test_buf_ioreq_sizes_log2():
    for size, bits in ((1, 0), (2, 1), (4, 2), (8, 3)):
        w0 = int.from_bytes(encode_buf_slots(IOREQ_TYPE_COPY, 0, size, 0)[0][:4], "little")
        assert w0 >> 10 & 3 == bits


BUFIOREQ_GOLDEN = h(
    "06 00 01 00 28 00 00 00 00 00 00 00 00 00 00 00"  # BUFIOREQ, NO_REPLY, len 8 + 4 slots
    "04 00 00 00 00 00 00 00"  # count 4 slots, pad
    "01 00 00 a0 | 41 00 00 00"  # COPY, size 1, addr 0xa0000, data 0x41
    "01 84 00 a0 | 34 12 00 00"  # COPY, size 2 (log2 1 -> 0x400), addr 0xa0008, data 0x1234
    "01 8c 01 a0 | 88 77 66 55"  # COPY, size 8 (0xc00), addr 0xa0018: low half
    "01 8c 01 a0 | 44 33 22 11"  # second slot of the qword: high half
)


def test_bufioreq_golden_with_qword():
    payload = encode_bufioreq([
        (IOREQ_TYPE_COPY, 0xA0000, 1, 0x41),
        (IOREQ_TYPE_COPY, 0xA0008, 2, 0x1234),
        (IOREQ_TYPE_COPY, 0xA0018, 8, 0x1122334455667788),
    ])
    assert frame(MsgType.BUFIOREQ, payload, flags=FLAG_NO_REPLY) == BUFIOREQ_GOLDEN
    msg = one_message(BUFIOREQ_GOLDEN)
    assert decode_bufioreq(msg.payload) == [
        BufIoreq(IOREQ_TYPE_COPY, 0xA0000, 1, 0x41),
        BufIoreq(IOREQ_TYPE_COPY, 0xA0008, 2, 0x1234),
        BufIoreq(IOREQ_TYPE_COPY, 0xA0018, 8, 0x1122334455667788),
    ]


def test_bufioreq_timeoffset_negative_qword():
    """TIMEOFFSET is buffered as two slots carrying a signed 64-bit delta (1.7)."""
    payload = encode_bufioreq([(IOREQ_TYPE_TIMEOFFSET, 0, 8, -3600 & (2**64 - 1))])
    assert payload == h("02 00 00 00 00 00 00 00" "07 0c 00 00 f0 f1 ff ff" "07 0c 00 00 ff ff ff ff")
    (b,) = decode_bufioreq(payload)
    assert (b.type, b.size, b.data) == (IOREQ_TYPE_TIMEOFFSET, 8, 2**64 - 3600)


def test_bufioreq_decode_measured_fields():
    payload = h("01 00 00 00 00 00 00 00" "ff fa ff ff 78 56 34 12")
    (b,) = decode_bufioreq(payload)
    assert (b.type, b.dir, b.size, b.addr, b.data) == (0xFF, 1, 4, 0xFFFFF, 0x12345678)


@pytest.mark.parametrize(
    "payload, code",
    [
        (h("01 00 00"), ErrorCode.BAD_LENGTH),  # shorter than the count header
        (h("02 00 00 00 00 00 00 00" "01 00 00 a0 41 00 00 00"), ErrorCode.BAD_LENGTH),
        (h("01 00 00 00 00 00 00 00" "01 0c 00 a0 41 00 00 00"), ErrorCode.BAD_FIELD),  # lone half
        ((5000).to_bytes(4, "little") + bytes(4), ErrorCode.BAD_FIELD),  # count over the bound
    ],
)
def test_bufioreq_decode_errors(payload, code):
    with pytest.raises(DecodeError) as ei:
        decode_bufioreq(payload)
    assert ei.value.code == code


# ---- DMOP (3.2, 7.7): every op's 32-byte xen_dm_op -------------------------------------------
# (op, fields, the 24-byte union written out by hand, zero padding included)

DMOP_CASES = [
    (DmOp.CREATE_IOREQ_SERVER, (2, 0x0107),
     "02 00 00 00 07 01" + " 00" * 18),
    (DmOp.GET_IOREQ_SERVER_INFO, (0x0102, 1, 0x11223344, 0x0102030405060708, 0x1112131415161718),
     "02 01 01 00 44 33 22 11 08 07 06 05 04 03 02 01 18 17 16 15 14 13 12 11"),
    (DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER, (1, 0, 1, 0xFEB00000, 0xFEB03FFF),
     "01 00 00 00 01 00 00 00 00 00 b0 fe 00 00 00 00 ff 3f b0 fe 00 00 00 00"),
    (DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER, (0, 0, 0, 0xC000, 0xC00F),
     "00 00 00 00 00 00 00 00 00 c0 00 00 00 00 00 00 0f c0 00 00 00 00 00 00"),
    (DmOp.SET_IOREQ_SERVER_STATE, (3, 1),
     "03 00 01 00" + " 00" * 20),
    (DmOp.DESTROY_IOREQ_SERVER, (3,),
     "03 00 00 00" + " 00" * 20),
    (DmOp.TRACK_DIRTY_VRAM, (0x100, 0, 0xF0000),
     "00 01 00 00 00 00 00 00 00 00 0f 00 00 00 00 00" + " 00" * 8),
    (DmOp.SET_PCI_INTX_LEVEL, (0, 0, 3, 1, 1),
     "00 00 00 03 01 01" + " 00" * 18),
    (DmOp.SET_ISA_IRQ_LEVEL, (12, 1),
     "0c 01" + " 00" * 22),
    (DmOp.SET_PCI_LINK_ROUTE, (2, 11),
     "02 0b" + " 00" * 22),
    (DmOp.MODIFIED_MEMORY, (2, 0),
     "02 00 00 00 00 00 00 00" + " 00" * 16),
    (DmOp.SET_MEM_TYPE, (0x10, 2, 0, 0xA0),
     "10 00 00 00 02 00 00 00 a0 00 00 00 00 00 00 00" + " 00" * 8),
    (DmOp.INJECT_EVENT, (1, 0x0E, 3, 0, 2, 0, 0xDEADBEEF000),
     "01 00 00 00 0e 03 00 00 02 00 00 00 00 00 00 00 00 f0 ee db ea 0d 00 00"),
    (DmOp.INJECT_MSI, (0x4041, 0, 0xFEE01000),
     "41 40 00 00 00 00 00 00 00 10 e0 fe 00 00 00 00" + " 00" * 8),
    (DmOp.MAP_MEM_TYPE_TO_IOREQ_SERVER, (0, 4, 2, 0),
     "00 00 04 00 02 00 00 00 00 00 00 00 00 00 00 00" + " 00" * 8),
    (DmOp.REMOTE_SHUTDOWN, (1,),
     "01 00 00 00" + " 00" * 20),
    (DmOp.RELOCATE_MEMORY, (0x100, 0, 0x80000, 0xF0000),
     "00 01 00 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00 0f 00 00 00 00 00"),
    (DmOp.PIN_MEMORY_CACHEATTR, (0xA0, 0xBF, 1, 0),
     "a0 00 00 00 00 00 00 00 bf 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00"),
    (DmOp.SET_IRQ_LEVEL, (33, 1),
     "21 00 00 00 01 00 00 00" + " 00" * 16),
    (DmOp.NR_VCPUS, (4,),
     "04 00 00 00" + " 00" * 20),
]


def test_dmop_cases_cover_every_op():
    assert {c[0] for c in DMOP_CASES} == set(DmOp)


@pytest.mark.parametrize("op, fields, union", DMOP_CASES, ids=[c[0].name for c in DMOP_CASES])
def test_dmop_golden(op, fields, union):
    golden = int(op).to_bytes(4, "little") + bytes(4) + h(union)
    assert len(golden) == 32
    assert encode_dmop(op, *fields) == golden
    d = decode_dmop(golden)
    assert (d.op, d.fields, d.buf1) == (op, fields, None)


def test_dmop_frame_flags_golden():
    """IRQ dm_ops travel NO_REPLY (7.2 notes); the rest expect a DMOP_REPLY."""
    irq = frame(MsgType.DMOP, encode_dmop(DmOp.SET_ISA_IRQ_LEVEL, 12, 1), tag=9,
                flags=codec.dmop_flags(DmOp.SET_ISA_IRQ_LEVEL))
    assert irq == h("07 00 01 00 20 00 00 00 09 00 00 00 00 00 00 00"
                    "09 00 00 00 00 00 00 00 0c 01" + " 00" * 22)
    assert codec.dmop_flags(DmOp.REMOTE_SHUTDOWN) == 0
    assert {op for op in DmOp if codec.dmop_flags(op)} == {
        DmOp.SET_PCI_INTX_LEVEL, DmOp.SET_ISA_IRQ_LEVEL, DmOp.SET_PCI_LINK_ROUTE, DmOp.INJECT_MSI}


def test_dmop_with_buf1_track_dirty_vram_golden():
    bitmap = bytes([0x01, 0x80]) + bytes(30)
    golden = h(
        "07 00 00 00 00 00 00 00"  # op 7, pad
        "00 01 00 00 00 00 00 00 00 00 0f 00 00 00 00 00" + " 00" * 8 +  # nr 256, first_pfn
        "20 00 00 00 00 00 00 00"  # buf1_len 32, pad
        "01 80" + " 00" * 30
    )
    assert encode_dmop(DmOp.TRACK_DIRTY_VRAM, 0x100, 0, 0xF0000, buf1=bitmap) == golden
    d = decode_dmop(golden)
    assert (d.op, d.fields, d.buf1) == (DmOp.TRACK_DIRTY_VRAM, (0x100, 0, 0xF0000), bitmap)


def test_dmop_with_buf1_modified_memory_extents_golden():
    extents = codec.MODIFIED_MEMORY_EXTENT.pack(1, 0, 0x100) + codec.MODIFIED_MEMORY_EXTENT.pack(
        3, 0, 0x2000)
    assert extents == h("01 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00"
                        "03 00 00 00 00 00 00 00 00 20 00 00 00 00 00 00")
    golden = (h("0b 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00") + bytes(16)
              + h("20 00 00 00 00 00 00 00") + extents)
    assert encode_dmop(DmOp.MODIFIED_MEMORY, 2, 0, buf1=extents) == golden
    d = decode_dmop(golden)
    assert d.fields == (2, 0) and d.buf1 == extents


@pytest.mark.parametrize(
    "payload, code",
    [
        (bytes(31), ErrorCode.BAD_LENGTH),
        ((99).to_bytes(4, "little") + bytes(28), ErrorCode.BAD_FIELD),  # unknown op
        (h("10 00 00 00") + bytes(28) + h("04 00 00"), ErrorCode.BAD_LENGTH),  # buf1 hdr cut
        (h("10 00 00 00") + bytes(28) + h("04 00 00 00 00 00 00 00 aa"), ErrorCode.BAD_LENGTH),
    ],
)
def test_dmop_decode_errors(payload, code):
    with pytest.raises(DecodeError) as ei:
        decode_dmop(payload)
    assert ei.value.code == code


# ---- DMOP_REPLY, ERROR, CLOCK ----------------------------------------------------------------

def test_dmop_reply_golden():
    union = encode_dmop(DmOp.CREATE_IOREQ_SERVER, 2, 0)
    golden = h(
        "08 00 00 00 28 00 00 00 05 00 00 00 00 00 00 00"  # DMOP_REPLY, len 40, tag 5
        "ef ff ff ff 00 00 00 00"  # rc -17 (-EEXIST), pad
        "01 00 00 00 00 00 00 00 02 00 00 00 00 00" + " 00" * 18  # the xen_dm_op copied back
    )
    assert frame(MsgType.DMOP_REPLY, encode_dmop_reply(-17, union), tag=5) == golden
    msg = one_message(golden)
    rc, pad = codec.DMOP_REPLY_HDR.unpack_from(msg.payload, 0)
    assert (rc, pad) == (-17, 0)
    assert decode_dmop(msg.payload[8:]).fields == (2, 0)


def test_dmop_reply_with_bitmap_golden():
    union = encode_dmop(DmOp.TRACK_DIRTY_VRAM, 16, 0, 0xA0)
    out = encode_dmop_reply(0, union, buf1=b"\x03\x00")
    assert out == h("00 00 00 00 00 00 00 00") + union + h("03 00")


def test_error_golden():
    golden = h("09 00 00 00 0b 00 00 00 0d 00 00 00 02 00 00 00"  # ERROR, len 11, tag 13, chan 2
               "03 00 00 00 00 00 00 00"  # code BAD_LENGTH, pad
               "62 61 64")  # "bad"
    assert frame(MsgType.ERROR, encode_error(ErrorCode.BAD_LENGTH, "bad"), tag=13, chan=2) == golden
    assert decode_error(one_message(golden).payload) == (ErrorCode.BAD_LENGTH, "bad")


def test_error_text_is_bounded():
    assert len(encode_error(1, "x" * 10000)) == 8 + 4000


def test_clock_golden():
    golden = h("0a 00 01 00 08 00 00 00 00 00 00 00 00 00 00 00" "08 07 06 05 04 03 02 01")
    assert frame(MsgType.CLOCK, codec.CLOCK.pack(0x0102030405060708), flags=FLAG_NO_REPLY) == golden
    assert codec.CLOCK.unpack(one_message(golden).payload) == (0x0102030405060708,)


def test_message_type_numbers():
    assert {t.name: int(t) for t in MsgType} == {
        "HELLO": 1, "MEM_ADD": 2, "MEM_DEL": 3, "IOREQ": 4, "IORESP": 5, "BUFIOREQ": 6,
        "DMOP": 7, "DMOP_REPLY": 8, "ERROR": 9, "CLOCK": 10}


def test_raw_ioreq_bytes_helper_matches_codec():
    from devmodel.client import ioreq_bytes

    raw = ioreq_bytes(0x92, 0, 1, read=True)
    assert raw == Ioreq(addr=0x92, size=1, dir=1, type=IOREQ_TYPE_PIO).pack()
