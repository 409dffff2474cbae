"""Debug console ports 0x402 / 0xE9 and POST codes at 0x80, and the bounded BufferSink."""

from __future__ import annotations

import logging

import pytest

from devmodel.bios.debugport import POST_HISTORY, BufferSink, DebugPorts
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.wire.constants import IOREQ_TYPE_PIO


class Rig:
    def __init__(self, **kw) -> None:
        self.sink = BufferSink(**kw.pop("sink_kw", {}))
        self.m = Machine(clock=Clock(virtual=True), strict=True)
        self.dev = self.m.add(DebugPorts(self.sink, **kw))

    def out(self, port: int, value: int, size: int = 1) -> None:
        self.m.handle_ioreq(IOREQ_TYPE_PIO, port, value, 1, size, 0)

    def inp(self, port: int, size: int = 1) -> int:
        return self.m.handle_ioreq(IOREQ_TYPE_PIO, port, 0, 1, size, 0x20)

    def puts(self, port: int, text: bytes) -> None:
        for b in text:
            self.out(port, b)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_debugcon_readback_is_0xe9(rig: Rig) -> None:
    # SeaBIOS keeps printing to 0x402 only if this read returns 0xE9.
    assert rig.inp(0x402) == 0xE9
    assert rig.inp(0xE9) == 0xE9


def test_debugcon_output_lines(rig: Rig) -> None:
    rig.puts(0x402, b"SeaBIOS (version 1.16.2)\r\nRunning on QEMU\nparti")
    assert rig.sink.lines("debugcon") == ["SeaBIOS (version 1.16.2)", "Running on QEMU"]
    assert rig.sink.partial("debugcon") == "parti"
    assert rig.sink.data("debugcon").endswith(b"QEMU\nparti")
    assert rig.dev.bytes_out["debugcon"] == len(b"SeaBIOS (version 1.16.2)\r\nRunning on QEMU\nparti")
    assert rig.sink.lines("e9") == []


def test_e9_channel_is_separate(rig: Rig) -> None:
    rig.puts(0xE9, b"HELLO\n")
    assert rig.sink.lines("e9") == ["HELLO"]
    assert rig.sink.total("debugcon") == 0


def test_post_codes(rig: Rig) -> None:
    assert rig.dev.last_post is None
    for code in range(100):
        rig.out(0x80, code)
    assert rig.dev.last_post == 99
    assert rig.dev.post_codes == list(range(100 - POST_HISTORY, 100))
    # QEMU's ioport80_read returns all-ones; there is no latch on the pc machine.
    assert rig.inp(0x80) == 0xFF
    assert rig.sink.data("post")[-3:] == bytes([97, 98, 99])


def test_wide_accesses_fall_outside_the_byte_ports(rig: Rig) -> None:
    assert rig.inp(0x402, 2) == 0xFFFF
    rig.out(0x402, 0x4142, 2)
    assert rig.sink.total("debugcon") == 0


def test_ports_can_be_left_out() -> None:
    r = Rig(e9=False, post=False)
    assert r.inp(0xE9) == 0xFF
    assert r.inp(0x402) == 0xE9
    assert r.m.pio.find(0x80) is None


def test_buffer_sink_is_bounded_whatever_the_guest_writes() -> None:
    sink = BufferSink(max_bytes=1024, max_lines=10, max_line=80, log_lines=False)
    blob = (b"x" * 1000 + b"\n") * 1000 + b"y" * 100_000
    for i in range(0, len(blob), 4096):
        sink.write("debugcon", blob[i : i + 4096])
    assert len(sink.data("debugcon")) == 1024
    assert len(sink._channels["debugcon"].raw) <= 2 * 1024
    assert len(sink.lines("debugcon")) == 10
    assert all(len(line) <= 80 for line in sink.lines("debugcon"))
    assert len(sink.partial("debugcon")) <= 80
    assert sink.total("debugcon") == len(blob)


def test_over_long_line_is_cut() -> None:
    sink = BufferSink(max_line=4, log_lines=False)
    sink.write("e9", b"abcdefghij\nk")
    assert sink.lines("e9") == ["abcd", "efgh", "ij"]
    assert sink.partial("e9") == "k"


def test_lines_are_logged_once_and_capped(caplog: pytest.LogCaptureFixture) -> None:
    sink = BufferSink(max_log_lines=3)
    with caplog.at_level(logging.INFO, logger="devmodel.console"):
        sink.write("debugcon", b"one\ntwo\nthree\nfour\nfive\n")
    msgs = [r.getMessage() for r in caplog.records if r.name == "devmodel.console"]
    assert msgs[:3] == ["[debugcon] one", "[debugcon] two", "[debugcon] three"]
    assert len(msgs) == 4 and "not logged" in msgs[3]
    assert sink.lines("debugcon")[-1] == "five"


def test_invalid_utf8_does_not_raise() -> None:
    sink = BufferSink(log_lines=False)
    sink.write("debugcon", b"\xff\xfe\x80\n")
    assert len(sink.lines("debugcon")) == 1


def test_snapshot_round_trip(rig: Rig) -> None:
    for code in (0x10, 0x20, 0x30):
        rig.out(0x80, code)
    snap = rig.dev.snapshot()
    rig.out(0x80, 0x99)
    rig.dev.restore(snap)
    assert rig.dev.snapshot() == snap
    assert rig.dev.last_post == 0x30
    assert rig.dev.post_codes == [0x10, 0x20, 0x30]
    # A hostile snapshot cannot grow the history beyond its bound.
    big = {**snap, "state": {"last_post": 1, "post_history": list(range(1000))}}
    rig.dev.restore(big)
    assert len(rig.dev.post_codes) == POST_HISTORY
