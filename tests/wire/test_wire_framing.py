"""The sans-IO Deframer: partial delivery, fd FIFO, untrustworthy headers; and property tests
that neither it nor the decoders raise anything but their documented errors."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel.wire import codec
from devmodel.wire.codec import DecodeError, decode_bufioreq, decode_dmop, frame
from devmodel.wire.constants import FLAG_HAS_FDS, MAX_PAYLOAD, ErrorCode, MsgType
from devmodel.wire.framing import Deframer, FramingError


def test_byte_by_byte_delivery():
    data = frame(MsgType.IOREQ, bytes(32), tag=1) + frame(MsgType.CLOCK, bytes(8), tag=2)
    d = Deframer()
    got = []
    for b in data:
        d.feed(bytes([b]))
        got += list(d.messages())
    assert [(m.type, m.tag, len(m.payload)) for m in got] == [(4, 1, 32), (10, 2, 8)]
    assert d.buffered == 0


def test_many_messages_in_one_feed_and_trailing_partial():
    data = b"".join(frame(MsgType.ERROR, b"x" * i, tag=i) for i in range(10))
    d = Deframer()
    d.feed(data + frame(MsgType.HELLO, bytes(24))[:20])
    assert [m.tag for m in d.messages()] == list(range(10))
    assert d.buffered == 20


def test_zero_length_payload():
    d = Deframer()
    d.feed(frame(MsgType.HELLO))
    (m,) = d.messages()
    assert m.payload == b""


def test_max_payload_accepted_one_more_refused():
    d = Deframer()
    d.feed(codec.HEADER.pack(MsgType.ERROR, 0, MAX_PAYLOAD, 0, 0))
    assert list(d.messages()) == []  # waits for the payload
    d = Deframer()
    d.feed(codec.HEADER.pack(MsgType.ERROR, 0, MAX_PAYLOAD + 1, 0, 0))
    with pytest.raises(FramingError) as ei:
        list(d.messages())
    assert ei.value.code == ErrorCode.BAD_HEADER


def test_unknown_flags_refused():
    d = Deframer()
    d.feed(codec.HEADER.pack(MsgType.HELLO, 0x8, 0, 0, 0))
    with pytest.raises(FramingError):
        list(d.messages())


def test_fds_consumed_in_order_by_has_fds_messages():
    r1, w1 = os.pipe()
    try:
        d = Deframer()
        d.feed(frame(MsgType.MEM_ADD, bytes(32), flags=FLAG_HAS_FDS, tag=1), [r1])
        d.feed(frame(MsgType.MEM_ADD, bytes(32), flags=FLAG_HAS_FDS, tag=2), [w1])
        d.feed(frame(MsgType.MEM_ADD, bytes(32), flags=FLAG_HAS_FDS, tag=3))
        msgs = list(d.messages())
        assert [m.fds for m in msgs] == [[r1], [w1], []]
        assert d.pending_fds() == []
    finally:
        os.close(r1)
        os.close(w1)


def test_too_many_unclaimed_fds_refused():
    d = Deframer()
    with pytest.raises(FramingError) as ei:
        d.feed(b"", list(range(1000, 1000 + Deframer.MAX_PENDING_FDS + 1)))
    assert ei.value.code == ErrorCode.BAD_FDS
    assert len(d.pending_fds()) == Deframer.MAX_PENDING_FDS + 1


# ---- properties ------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_deframer_on_arbitrary_bytes_raises_only_framing_error(chunks):
    d = Deframer()
    try:
        for c in chunks:
            d.feed(c)
            for m in d.messages():
                assert isinstance(m.payload, bytes)
                assert m.flags & ~3 == 0
    except FramingError:
        pass


header_like = st.builds(
    lambda t, f, n, tag, chan, body: codec.HEADER.pack(t, f, n, tag, chan) + body,
    st.integers(0, 0xFFFF), st.sampled_from([0, 1, 2, 3, 4, 0x8000]),
    st.sampled_from([0, 1, 8, 32, 33, MAX_PAYLOAD, MAX_PAYLOAD + 1, 0xFFFFFFFF]),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(header_like, max_size=6))
def test_deframer_on_header_shaped_garbage(parts):
    d = Deframer()
    try:
        d.feed(b"".join(parts))
        for m in d.messages():
            assert len(m.payload) <= MAX_PAYLOAD
    except FramingError as e:
        assert e.code == ErrorCode.BAD_HEADER


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_decode_dmop_raises_only_decode_error(data):
    try:
        d = decode_dmop(data)
    except DecodeError as e:
        assert e.code in (ErrorCode.BAD_LENGTH, ErrorCode.BAD_FIELD)
    else:
        assert len(data) >= 32
        assert d.buf1 is None or len(data) == 40 + len(d.buf1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_decode_dmop_known_op_any_body(op, pad, rest):
    data = op.to_bytes(4, "little") + pad.to_bytes(4, "little") + rest
    try:
        decode_dmop(data)
    except DecodeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=120),
    st.builds(lambda n, body: n.to_bytes(4, "little") + bytes(4) + body,
              st.integers(0, 20), st.binary(max_size=160)),
))
def test_decode_bufioreq_raises_only_decode_error(data):
    try:
        items = decode_bufioreq(data)
    except DecodeError as e:
        assert e.code in (ErrorCode.BAD_LENGTH, ErrorCode.BAD_FIELD)
    else:
        for b in items:
            assert b.size in (1, 2, 4, 8) and 0 <= b.addr <= 0xFFFFF and 0 <= b.data < 2**64


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=8, max_size=100))
def test_decode_error_any_payload(data):
    code, text = codec.decode_error(data)
    assert isinstance(code, int) and isinstance(text, str)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_ioreq_unpack_pack_roundtrip(raw):
    assert codec.Ioreq.unpack(raw).pack() == raw
