"""Malformed input over a real socket to a real daemon subprocess. Every bad message gets an
ERROR with the right code and the offending tag, and the daemon keeps serving ioreqs after it;
only an untrustworthy header closes the connection, and then the process still exits 0."""

from __future__ import annotations

import itertools
import os
import struct

import pytest
from dmsupport import RawPeer, error_of, raw_ioreq

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.wire import codec
from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import (
    FLAG_HAS_FDS,
    FLAG_NO_REPLY,
    MAX_PAYLOAD,
    MEM_RAM,
    ErrorCode,
    MsgType,
)

_tags = itertools.count(1000)


@pytest.fixture(scope="module")
def hv():
    h = Hypervisor.spawn(["--domid", "3"], ram=16 << 20, nr_vcpus=2)
    yield h
    proc = h.process
    proc.signal()
    h.close()
    assert proc.proc.returncode == 0, proc.log()


def assert_alive(hv: Hypervisor) -> None:
    assert hv.pci_cfg_read(0, 0, 4) == 0x12378086
    hv.outb(0x92, 0x02)
    assert hv.inb(0x92) == 0x02
    hv.outb(0x92, 0x00)
    assert hv.process.proc.poll() is None


def expect_error(hv, mtype, payload, code, *, flags=0, chan=0, fds=()):
    tag = next(_tags)
    if fds:
        hv.send(mtype, payload, tag=tag, chan=chan, flags=flags, fds=fds)
        while True:
            msg = hv.recv()
            if msg.tag == tag:
                break
    else:
        msg = raw_ioreq(hv, payload, tag=tag, chan=chan, flags=flags, mtype=mtype)
    assert msg.tag == tag and msg.chan == chan
    got_code, text = error_of(msg)
    assert got_code == code, text
    assert text
    assert_alive(hv)
    return text


GOOD_IOREQ = Ioreq(addr=0x92, size=1, dir=1).pack()


@pytest.mark.parametrize("mtype, payload, code", [
    (MsgType.IOREQ, GOOD_IOREQ[:31], ErrorCode.BAD_LENGTH),  # short payload
    (MsgType.IOREQ, GOOD_IOREQ + b"\0", ErrorCode.BAD_LENGTH),
    (MsgType.IOREQ, b"", ErrorCode.BAD_LENGTH),
    (MsgType.MEM_ADD, bytes(31), ErrorCode.BAD_LENGTH),
    (MsgType.MEM_ADD, bytes(40), ErrorCode.BAD_LENGTH),
    (MsgType.MEM_DEL, bytes(4), ErrorCode.BAD_LENGTH),
    (MsgType.MEM_DEL, bytes(12), ErrorCode.BAD_LENGTH),
    (MsgType.BUFIOREQ, bytes(4), ErrorCode.BAD_LENGTH),
    (MsgType.BUFIOREQ, struct.pack("<II", 2, 0) + bytes(8), ErrorCode.BAD_LENGTH),
    (MsgType.CLOCK, bytes(4), ErrorCode.BAD_LENGTH),
    (MsgType.CLOCK, bytes(16), ErrorCode.BAD_LENGTH),
    (MsgType.DMOP_REPLY, bytes(39), ErrorCode.BAD_LENGTH),
], ids=lambda v: v.name if hasattr(v, "name") else None)
def test_wrong_payload_length_per_type(hv, mtype, payload, code):
    expect_error(hv, mtype, payload, code)


@pytest.mark.parametrize("mtype", [0, 11, 12, 0x7FFF, 0xFFFF])
def test_unknown_type(hv, mtype):
    expect_error(hv, mtype, b"abc", ErrorCode.UNKNOWN_TYPE)


@pytest.mark.parametrize("mtype", [MsgType.IORESP, MsgType.DMOP])
def test_daemon_to_hypervisor_types_refused(hv, mtype):
    expect_error(hv, mtype, bytes(32), ErrorCode.BAD_STATE)


def test_second_hello(hv):
    text = expect_error(hv, MsgType.HELLO, codec.HELLO.pack(1, 4096, 1, 7, 1, 0), ErrorCode.BAD_STATE)
    assert "HELLO" in text


def test_clock_needs_virtual_time(hv):
    expect_error(hv, MsgType.CLOCK, codec.CLOCK.pack(10), ErrorCode.BAD_STATE, flags=FLAG_NO_REPLY)


def test_dmop_reply_for_unknown_tag(hv):
    expect_error(hv, MsgType.DMOP_REPLY, bytes(40), ErrorCode.BAD_FIELD)


def test_bufioreq_lone_qword_half_refused(hv):
    payload = struct.pack("<II", 1, 0) + struct.pack("<II", 1 | 3 << 10 | 0xA0000 << 12, 5)
    expect_error(hv, MsgType.BUFIOREQ, payload, ErrorCode.BAD_FIELD, flags=FLAG_NO_REPLY)


def _ioreq(**kw) -> bytes:
    f = dict(addr=0x92, size=1, dir=1, state=1, type=0)
    f.update(kw)
    return Ioreq(**f).pack()


@pytest.mark.parametrize("payload", [
    _ioreq(state=0), _ioreq(state=2), _ioreq(state=3), _ioreq(state=0xF),
    _ioreq(size=0), _ioreq(size=3), _ioreq(size=16), _ioreq(size=0xFFFFFFFF),
    _ioreq(type=3), _ioreq(type=6), _ioreq(type=9), _ioreq(type=0xFF),
], ids=["state0", "state2", "state3", "state15", "size0", "size3", "size16", "sizeMax", "type3",
        "type6", "type9", "type255"])
def test_ioreq_bad_fields(hv, payload):
    expect_error(hv, MsgType.IOREQ, payload, ErrorCode.BAD_FIELD)


@pytest.mark.parametrize("typ", [0, 1, 2, 7])
def test_ioreq_chan_beyond_nr_vcpus(hv, typ):
    size = 8 if typ == 7 else 1
    text = expect_error(hv, MsgType.IOREQ, _ioreq(type=typ, size=size, dir=typ != 7), ErrorCode.BAD_FIELD,
                        chan=2)
    assert "chan" in text


def test_ioreq_on_second_vcpu_is_answered_on_its_chan(hv):
    msg = raw_ioreq(hv, _ioreq(addr=0x4D0), tag=next(_tags), chan=1)
    assert msg.type == MsgType.IORESP and msg.chan == 1


def test_ioreq_with_no_reply_flag_is_served_silently(hv):
    hv.send(MsgType.IOREQ, _ioreq(dir=0, data=0x02), flags=FLAG_NO_REPLY)
    assert hv.inb(0x92) == 0x02
    hv.outb(0x92, 0)


def test_mem_add_without_fd(hv):
    payload = codec.MEM_ADD.pack(0x2000000, 0x1000, 0, MEM_RAM, 50)
    expect_error(hv, MsgType.MEM_ADD, payload, ErrorCode.BAD_FDS, flags=FLAG_HAS_FDS)
    expect_error(hv, MsgType.MEM_ADD, payload, ErrorCode.BAD_FDS)


def _memfd(size=0x2000):
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


@pytest.mark.parametrize("gpa, size, off, flags, rid, why", [
    (0x100000, 0x1000, 0, MEM_RAM, 60, "overlaps existing RAM"),
    (0x0, 0x1000, 0, MEM_RAM, 61, "overlaps region 0"),
    (0x2000000, 0x1000, 0, MEM_RAM, 0, "duplicate region id"),
    (0x2000000, 0x1000, 0, 0x80, 62, "unknown flags"),
    (0x2000800, 0x1000, 0, MEM_RAM, 63, "unaligned gpa"),
    (0x2000000, 0x800, 0, MEM_RAM, 64, "unaligned size"),
    (0x2000000, 0x4000, 0, MEM_RAM, 65, "bigger than the fd"),
])
def test_mem_add_refused(hv, gpa, size, off, flags, rid, why):
    fd = _memfd()
    try:
        expect_error(hv, MsgType.MEM_ADD, codec.MEM_ADD.pack(gpa, size, off, flags, rid),
                     ErrorCode.BAD_FIELD, flags=FLAG_HAS_FDS, fds=[fd])
    finally:
        os.close(fd)
    # guest RAM is still the one we shared: a rep ins lands in it
    hv.ram.write(0x5000, b"\0" * 4)
    hv.ins(0x92, 1, 1, 0x5000)
    assert hv.ram.read(0x5000, 1) == b"\0"


def test_mem_add_then_del_then_del_again(hv):
    fd = _memfd(0x1000)
    try:
        hv.mem_add(70, 0x3000000, 0x1000, fd, 0)
    finally:
        os.close(fd)
    assert_alive(hv)
    hv.mem_del(70)
    assert_alive(hv)
    expect_error(hv, MsgType.MEM_DEL, codec.MEM_DEL.pack(70, 0), ErrorCode.BAD_FIELD)


def test_error_from_hypervisor_is_only_logged(hv):
    hv.send(MsgType.ERROR, codec.encode_error(1, "hv says hi"))
    hv.send(MsgType.ERROR, b"")
    assert_alive(hv)


def test_frame_split_across_many_writes(hv):
    tag = next(_tags)
    data = codec.frame(MsgType.IOREQ, _ioreq(addr=0x0CF8, size=4), tag=tag)
    for i in range(0, len(data), 5):
        hv.send_raw(data[i : i + 5])
    while True:
        msg = hv.recv()
        if msg.tag == tag:
            break
    assert msg.type == MsgType.IORESP


# ---- errors that end the connection, each on a fresh daemon ----------------------------------

@pytest.mark.parametrize("header", [
    codec.HEADER.pack(MsgType.IOREQ, 0, MAX_PAYLOAD + 1, 77, 0),
    codec.HEADER.pack(MsgType.IOREQ, 0, 0xFFFFFFFF, 77, 0),
    codec.HEADER.pack(MsgType.IOREQ, 0x10, 32, 77, 0),  # unknown flag bit
], ids=["1MiB+1", "4GiB", "flags"])
def test_untrustworthy_header_closes_connection_and_process_exits_0(header):
    proc = DaemonProcess.start(["--domid", "4"])
    peer = RawPeer.connect(proc.socket_path)
    try:
        peer.hello()
        peer.send(header)
        msg = peer.reply_to(77)
        code, text = error_of(msg)
        assert code == ErrorCode.BAD_HEADER and text
        assert peer.recv_msg() is None  # then EOF
    finally:
        peer.close()
        rc = proc.wait_exit()
    assert rc == 0, proc.log()
    assert "Traceback" not in proc.log()


def test_max_payload_is_not_oversized():
    """A header announcing exactly MAX_PAYLOAD bytes is legal: the daemon reads it all and
    answers with a per-message ERROR (unknown type), then goes on."""
    proc = DaemonProcess.start(["--domid", "4"])
    hv = Hypervisor.connect(proc.socket_path, process=proc)
    try:
        hv.send(0x77, bytes(MAX_PAYLOAD), tag=5)
        while True:
            msg = hv.recv()
            if msg.tag == 5:
                break
        assert error_of(msg)[0] == ErrorCode.UNKNOWN_TYPE
        assert hv.pci_cfg_read(8, 0, 4) == 0x70008086
    finally:
        proc.signal()
        hv.close()
    assert proc.proc.returncode == 0


def test_messages_before_hello_and_bad_hellos():
    proc = DaemonProcess.start(["--domid", "4"])
    hv = Hypervisor.connect(proc.socket_path, process=proc, handshake=False)

    def err(mtype, payload, code):
        tag = next(_tags)
        msg = raw_ioreq(hv, payload, tag=tag, mtype=mtype)
        assert msg.tag == tag
        got, text = error_of(msg)
        assert got == code, text
        return text

    try:
        assert "before HELLO" in err(MsgType.IOREQ, GOOD_IOREQ, ErrorCode.BAD_STATE)
        err(MsgType.MEM_DEL, codec.MEM_DEL.pack(0, 0), ErrorCode.BAD_STATE)
        err(MsgType.BUFIOREQ, struct.pack("<II", 0, 0), ErrorCode.BAD_STATE)
        err(MsgType.CLOCK, codec.CLOCK.pack(1), ErrorCode.BAD_STATE)
        err(0x55, b"", ErrorCode.UNKNOWN_TYPE)
        err(MsgType.HELLO, codec.HELLO.pack(1, 4096, 1, 7, 1, 0)[:16], ErrorCode.BAD_LENGTH)
        err(MsgType.HELLO, codec.HELLO.pack(2, 4096, 1, 7, 1, 0), ErrorCode.BAD_FIELD)
        err(MsgType.HELLO, codec.HELLO.pack(1, 8192, 1, 7, 1, 0), ErrorCode.BAD_FIELD)
        err(MsgType.HELLO, codec.HELLO.pack(1, 4096, 0, 7, 1, 0), ErrorCode.BAD_FIELD)
        err(MsgType.HELLO, codec.HELLO.pack(1, 4096, 129, 7, 1, 0), ErrorCode.BAD_FIELD)
        # now a proper handshake: the daemon reports its domid and the features both support
        hv.features = 0xFF
        version, page, nr, features, domid, _ = hv.hello()
        assert (version, page, nr, features, domid) == (1, 4096, 1, 7, 4)
        hv.wait_enabled()
        assert hv.state.server_created and hv.state.bufioreq_mode == 2
        assert hv.pci_cfg_read(0, 0, 4) == 0x12378086
    finally:
        proc.signal()
        hv.close()
    assert proc.proc.returncode == 0


def test_hello_without_buffered_feature_creates_server_without_ring():
    proc = DaemonProcess.start(["--domid", "4"])
    hv = Hypervisor.connect(proc.socket_path, process=proc, features=0)
    try:
        assert hv.hello_reply[3] == 0 and hv.state.bufioreq_mode == 0
    finally:
        proc.signal()
        hv.close()
