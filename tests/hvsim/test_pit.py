"""8254 PIT and port 0x61 on the virtual clock."""

from __future__ import annotations

from devmodel.hvsim.clock import VirtualClock
from devmodel.hvsim.pit import PIT_HZ, Pit


def make() -> tuple[VirtualClock, Pit, list[tuple[int, int]]]:
    clock = VirtualClock()
    edges: list[tuple[int, int]] = []
    pit = Pit(clock, lambda level: edges.append((clock.ns, level)))
    return clock, pit, edges


def ns_for_ticks(ticks: int) -> int:
    return -(-ticks * 1_000_000_000 // PIT_HZ)


def test_channel2_mode0_calibration_like_seabios() -> None:
    clock, pit, _ = make()
    pit.portb_write(0x01)  # gate on, speaker off
    pit.io_write(0x43, 0xB0)  # ch2, lobyte/hibyte, mode 0
    pit.io_write(0x42, 0x00)
    pit.io_write(0x42, 0x08)  # 2048
    assert not pit.portb_read() & 0x20
    clock.advance(ns_for_ticks(2047))
    assert not pit.portb_read() & 0x20
    clock.advance(ns_for_ticks(1) + 1)
    assert pit.portb_read() & 0x20
    assert pit.portb_read() & 0x01


def test_refresh_toggle_follows_clock() -> None:
    clock, pit, _ = make()
    first = pit.portb_read() & 0x10
    clock.advance(15_085)
    assert pit.portb_read() & 0x10 != first


def test_channel0_mode2_rate_and_edges() -> None:
    clock, pit, edges = make()
    assert pit.next_deadline() is None  # unprogrammed: silent
    pit.io_write(0x43, 0x34)  # ch0, lobyte/hibyte, mode 2
    pit.io_write(0x40, 0x00)
    pit.io_write(0x40, 0x00)  # 0 = 65536
    # Walk one second of virtual time deadline by deadline, as a halted CPU would.
    for _ in range(100):
        deadline = pit.next_deadline()
        assert deadline is not None
        if deadline > 1_000_000_000:
            break
        clock.advance_to(deadline)
        pit.run_until(deadline)
    rises = [t for t, level in edges if level == 1]
    assert len(rises) == 18  # 1193182 / 65536 = 18.2 Hz
    assert all(level in (0, 1) for _, level in edges)
    assert edges[0][1] == 1 and edges[1][1] == 0  # a one-tick pulse each period


def test_run_until_replays_skipped_edges_and_coalesces_floods() -> None:
    clock, pit, edges = make()
    pit.io_write(0x43, 0x34)
    pit.io_write(0x40, 100)
    pit.io_write(0x40, 0)
    clock.advance(ns_for_ticks(350))
    pit.run_until(clock.ns)
    assert [level for _, level in edges] == [1, 0, 1, 0, 1, 0]
    edges.clear()
    pit.io_write(0x40, 2)  # count 2: an edge every input clock
    pit.io_write(0x40, 0)
    clock.advance(1_000_000_000)
    pit.run_until(clock.ns)
    assert len(edges) <= 65  # bounded, the rest coalesced
    assert pit.coalesced == 1


def test_latch_and_word_reads() -> None:
    clock, pit, _ = make()
    pit.io_write(0x43, 0x30)  # ch0, lobyte/hibyte, mode 0
    pit.io_write(0x40, 0x34)
    pit.io_write(0x40, 0x12)  # 0x1234
    clock.advance(ns_for_ticks(0x34))
    pit.io_write(0x43, 0x00)  # latch ch0
    clock.advance(ns_for_ticks(0x100))
    assert pit.io_read(0x40) == 0x00
    assert pit.io_read(0x40) == 0x12
    live_lo = pit.io_read(0x40)
    live_hi = pit.io_read(0x40)
    assert live_hi << 8 | live_lo == 0x1234 - 0x34 - 0x100


def test_readback_status_and_count() -> None:
    clock, pit, _ = make()
    pit.io_write(0x43, 0xB6)  # ch2, lobyte/hibyte, mode 3
    pit.io_write(0x42, 0x00)
    pit.io_write(0x42, 0x01)
    pit.io_write(0x43, 0xC8)  # read-back: count and status of ch2
    status = pit.io_read(0x42)
    assert status & 0x3F == 0x36
    assert pit.io_read(0x42) == 0x00 and pit.io_read(0x42) == 0x01


def test_lsb_only_and_mode_aliases() -> None:
    clock, pit, _ = make()
    pit.io_write(0x43, 0x5C)  # ch1, LSB only, mode 6 (= 2)
    pit.io_write(0x41, 0x80)
    assert pit.channels[1].mode == 2
    assert pit.channels[1].count == 0x80
    assert pit.io_read(0x41) == 0x80


def test_tsc_follows_the_same_clock() -> None:
    clock = VirtualClock(tsc_hz=2_000_000_000)
    clock.advance(1_000)
    assert clock.tsc() == 2_000
    clock.reset_tsc()
    clock.advance(500)
    assert clock.tsc() == 1_000
