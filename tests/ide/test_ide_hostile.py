"""Hostile sequences: random port, bus-master and rep traffic never raises (the machine is
strict, so a device exception fails the test), never hangs, and keeps counters bounded."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ide_helpers import BMIBA, RAM_SIZE, Rig, make_image

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import ata

PORTS = [0x1F0 + i for i in range(8)] + [0x3F6] + [0x170 + i for i in range(8)] + [0x376] + [
    BMIBA + i for i in range(16)]
COMMANDS = [ata.CMD_READ, ata.CMD_WRITE, ata.CMD_READ_MULTIPLE, ata.CMD_WRITE_MULTIPLE,
            ata.CMD_READ_DMA, ata.CMD_WRITE_DMA, ata.CMD_READ_EXT, ata.CMD_WRITE_DMA_EXT,
            ata.CMD_IDENTIFY, ata.CMD_SET_MULTIPLE, ata.CMD_SET_FEATURES, ata.CMD_DIAGNOSE]

op = st.one_of(
    st.tuples(st.just("in"), st.sampled_from(PORTS), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("out"), st.sampled_from(PORTS), st.sampled_from([1, 2, 4]),
              st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("cmd"), st.sampled_from([0x1F7, 0x177]), st.sampled_from(COMMANDS)),
    st.tuples(st.just("rep"), st.sampled_from([0x1F0, 0x170]), st.sampled_from([2, 4]),
              st.integers(1, 1024), st.booleans(), st.integers(0, RAM_SIZE + 0x1000)),
    st.tuples(st.just("poke"), st.integers(0, RAM_SIZE // 8 - 1), st.integers(0, (1 << 64) - 1)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, max_size=60))
def test_random_traffic_is_survivable(tmp_path, ops):
    img = make_image(tmp_path / "h.img", 64)
    r = Rig({(0, 0): RawFileDisk(img), (1, 1): RawFileDisk(img)})
    r.poke(0, struct.pack("<II", 0x8000, 0x80000200))  # a plausible PRD table at 0
    for o in ops:
        kind = o[0]
        if kind == "in":
            r.inp(o[1], o[2])
        elif kind == "out":
            r.out(o[1], o[3] & ((1 << 8 * o[2]) - 1), o[2])
        elif kind == "cmd":
            r.out(o[1], o[2])
        elif kind == "rep":
            _, port, size, count, read, gpa = o
            (r.rep_ins if read else r.rep_outs)(port, gpa, min(count, 4096 // size), size)
        else:
            r.poke(o[1] * 8, struct.pack("<Q", o[2]))
    assert not r.dev.failed
    assert len(r.dev.counters) < 32


def test_many_bad_dma_addresses_do_not_grow_counters(tmp_path):
    r = Rig.with_file(tmp_path, 64)
    for i in range(200):
        r.prd_table(0x1000, [(0xE0000000 + 512 * i, 512)])
        r.bm_setup(0x1000, to_memory=True)
        r.taskfile(0, 1)
        r.command(ata.CMD_READ_DMA)
        r.bm_start(to_memory=True)
        r.status()
        r.bm_stop()
    assert r.dev.counters["DMA to memory that is not guest RAM"] == 200
    assert len(r.dev.counters) == 1


CD_PORTS = [0x170 + i for i in range(8)] + [0x376] + [BMIBA + 8 + i for i in range(8)]
MMC_OPCODES = [0x00, 0x03, 0x12, 0x1B, 0x1E, 0x25, 0x28, 0x2B, 0x43, 0x46, 0x4A, 0x51, 0x5A,
               0xA8, 0xBB, 0xBD, 0xBE, 0xAD, 0x01, 0xFF]

cd_op = st.one_of(
    st.tuples(st.just("packet"), st.sampled_from(MMC_OPCODES), st.binary(min_size=11, max_size=11),
              st.integers(0, 0xFFFF), st.booleans()),
    st.tuples(st.just("in"), st.sampled_from(CD_PORTS), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("out"), st.sampled_from(CD_PORTS), st.sampled_from([1, 2, 4]),
              st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("cmd"), st.integers(0, 0xFF)),
    st.tuples(st.just("rep"), st.sampled_from([2, 4]), st.integers(1, 2048), st.booleans()),
    st.tuples(st.just("media"), st.booleans()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(cd_op, max_size=40))
def test_random_atapi_traffic_is_survivable(tmp_path, ops):
    """Random packets (any opcode and parameters, any byte-count limit, PIO or DMA), ATA
    commands, register and data-port traffic and media changes on an ATAPI drive: no
    exception (strict machine), the PIO cursor never leaves the buffer."""
    from devmodel.ide import Cdrom, MediaLockedError

    iso = tmp_path / "h.iso"
    iso.write_bytes(bytes(range(256)) * 8 * 16)
    r = Rig({(1, 0): Cdrom(RawFileDisk(iso, readonly=True))})
    r.poke(0, struct.pack("<II", 0x8000, 0x80001000))
    drive = r.dev.drive(1, 0)
    for o in ops:
        kind = o[0]
        if kind == "packet":
            _, opcode, rest, bcl, dma = o
            r.out(0x176, 0xA0)
            r.out(0x171, int(dma))
            r.out(0x174, bcl & 0xFF)
            r.out(0x175, bcl >> 8)
            r.out(0x177, ata.CMD_PACKET)
            packet = bytes([opcode]) + rest
            for i in range(0, 12, 2):
                r.out(0x170, int.from_bytes(packet[i : i + 2], "little"), 2)
        elif kind == "in":
            r.inp(o[1], o[2])
        elif kind == "out":
            r.out(o[1], o[3] & ((1 << 8 * o[2]) - 1), o[2])
        elif kind == "cmd":
            r.out(0x177, o[1])
        elif kind == "rep":
            _, size, count, read = o
            (r.rep_ins if read else r.rep_outs)(0x170, 0x10000, min(count, 4096 // size), size)
        else:
            try:
                old = (drive.insert_media(RawFileDisk(iso, readonly=True)) if o[1]
                       else drive.eject_media())
            except MediaLockedError:
                old = None
            if old is not None:
                old.close()
        assert 0 <= drive.pos <= drive.end <= len(drive.buf)
    assert not r.dev.failed
