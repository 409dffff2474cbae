"""Fuzz-ish: hypothesis throws correctly framed garbage at one real daemon subprocess. After each
batch the daemon must still answer a normal ioreq, and it must never report an internal error
(a bug of ours) or die."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.client import Hypervisor
from devmodel.wire import codec
from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import ErrorCode, MsgType

# Garbage tags live far above the ones the client and the daemon allocate, so an ERROR for
# garbage can never be mistaken for the answer to a real request.
_tags = itertools.count(0x8000_0000)


@pytest.fixture(scope="module")
def hv():
    h = Hypervisor.spawn(["--domid", "9"], ram=8 << 20, nr_vcpus=2)
    yield h
    proc = h.process
    proc.signal()
    h.close()
    assert proc.proc.returncode == 0
    log = proc.log()
    assert "Traceback" not in log and "internal error" not in log


u64 = st.integers(0, 2**64 - 1)
addrs = st.one_of(u64, st.sampled_from([0x92, 0xCF8, 0xCF9, 0xCFC, 0x4D0, 0x10000, 0xA0000]),
                  st.builds(lambda devfn, reg: devfn << 32 | reg, st.integers(0, 0x1FF),
                            st.integers(0, 0x104)))
ioreq_payload = st.builds(
    lambda addr, data, count, size, bits, typ: Ioreq(
        addr=addr, data=data, count=count, size=size, state=bits & 0xF, data_is_ptr=bits >> 4 & 1,
        dir=bits >> 5 & 1, df=bits >> 6 & 1, pad1=bits >> 7, type=typ).pack(),
    addrs, u64, st.one_of(st.sampled_from([0, 1, 2, 4096, 2**32 - 1]), st.integers(0, 2**32 - 1)),
    st.sampled_from([0, 1, 2, 3, 4, 8, 16]),
    st.one_of(st.sampled_from([0x01, 0x21, 0x11, 0x31, 0x51, 0x71]), st.integers(0, 255)),
    st.one_of(st.sampled_from([0, 1, 2, 7, 8]), st.integers(0, 255)),
)
bufioreq_payload = st.builds(
    lambda slots, extra: struct.pack("<II", max(0, len(slots) + extra), 0) + b"".join(
        struct.pack("<II", w0, d) for w0, d in slots),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=6),
    st.sampled_from([0, 0, 0, 1, -1]),
)
frames = st.builds(
    lambda mtype, flags, chan, payload: (mtype, flags, chan, payload),
    st.one_of(st.sampled_from(list(MsgType)), st.integers(0, 0xFFFF)),
    st.integers(0, 3),  # known flags only: unknown ones end the connection by design
    st.sampled_from([0, 0, 1, 2, 7]),
    st.one_of(st.binary(max_size=72), ioreq_payload, bufioreq_payload,
              st.binary(min_size=32, max_size=32), st.binary(min_size=40, max_size=48)),
)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(frames, min_size=1, max_size=12))
def test_garbage_frames_never_kill_the_daemon(hv, batch):
    data = b"".join(codec.frame(t, p, tag=next(_tags), chan=c, flags=f) for t, f, c, p in batch)
    hv.send_raw(data)
    assert hv.pci_cfg_read(0, 0, 4) == 0x12378086  # still answering, in order
    assert hv.process.proc.poll() is None
    internal = [m for m in hv.unmatched
                if m.type == MsgType.ERROR and codec.decode_error(m.payload)[0] == ErrorCode.INTERNAL]
    assert internal == [], [codec.decode_error(m.payload) for m in internal]
    hv.unmatched.clear()
