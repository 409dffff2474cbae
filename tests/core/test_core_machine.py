"""The Machine's one dispatch path, at unit level: sizes, rep forms, containment and strict
mode, TIMEOFFSET / INVALIDATE, buffered writes, snapshots of every device, and a property test
that no ioreq can make handle_ioreq raise."""

from __future__ import annotations

import copy
import logging

import pytest
from dmsupport import (
    BAR_DEVFN,
    FAULT_MMIO,
    FAULT_PORT,
    REC_MMIO,
    REC_PORT,
    TIMER_IRQ,
    TIMER_PORT,
    VGA_BASE,
    BarDevice,
    make_machine,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.core.device import Device, SnapshotError
from devmodel.core.machine import DeviceFailure, Machine
from devmodel.core.memory import GuestMemory
from devmodel.pc import PcOptions, build_pc
from devmodel.wire.constants import (
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_INVALIDATE,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_TYPE_TIMEOFFSET,
    SHUTDOWN_REBOOT,
    DmOp,
)

READ = 0x21  # READY | dir READ
WRITE = 0x01
PTR = 0x10
DF = 0x40
U64 = 2**64 - 1


def machine_with_ram(size=0x20000, **kw):
    m = make_machine(**kw)
    m.memory.add_buffer(0, 0, bytearray(size))
    return m


def io(m, typ, addr, size, bits, data=0, count=1):
    return m.handle_ioreq(typ, addr, data, count, size, bits)


# ---- dispatch basics -------------------------------------------------------------------------

def test_unclaimed_reads_all_ones_of_size():
    m = make_machine()
    assert io(m, IOREQ_TYPE_PIO, 0x7F00, 1, READ) == 0xFF
    assert io(m, IOREQ_TYPE_PIO, 0x7F00, 2, READ) == 0xFFFF
    assert io(m, IOREQ_TYPE_COPY, 0xD0000000, 8, READ) == U64
    assert io(m, IOREQ_TYPE_PCI_CONFIG, (7 << 3) << 32, 4, READ) == 0xFFFFFFFF
    assert m.counters["guest_error"] == 0


def test_write_data_masked_to_size_before_the_device():
    m = make_machine()
    io(m, IOREQ_TYPE_PIO, REC_PORT, 1, WRITE, data=0xFFFFFF42)
    io(m, IOREQ_TYPE_COPY, REC_MMIO, 2, WRITE, data=0x12345678)
    rec = m.device("recorder")
    assert rec.log == [("pio", "w", 0, 1, 0x42), ("mmio", "w", 0, 2, 0x5678)]


def test_write_answer_echoes_data():
    m = make_machine()
    assert io(m, IOREQ_TYPE_PIO, REC_PORT, 4, WRITE, data=0xDEAD) == 0xDEAD


@pytest.mark.parametrize("typ, size", [(IOREQ_TYPE_PIO, 8), (IOREQ_TYPE_PIO, 3), (IOREQ_TYPE_COPY, 16),
                                       (IOREQ_TYPE_PCI_CONFIG, 8)])
def test_bad_sizes_counted_read_ones(typ, size):
    m = make_machine()
    assert io(m, typ, REC_PORT, size, READ) == U64
    io(m, typ, REC_PORT, size, WRITE, data=5)
    assert m.counters["guest_error"] == 2
    assert m.device("recorder").log == []


def test_unknown_ioreq_type_counted():
    m = make_machine()
    assert io(m, 3, 0, 4, READ) == U64
    assert io(m, 9, 0, 4, WRITE, data=7) == 7
    assert m.counters["guest_error"] == 2


def test_pci_config_outside_segment0_bus0():
    m = make_machine()
    assert io(m, IOREQ_TYPE_PCI_CONFIG, 0x100 << 32, 4, READ) == 0xFFFFFFFF  # bus 1
    assert io(m, IOREQ_TYPE_PCI_CONFIG, 0x10000 << 32, 2, READ) == 0xFFFF  # segment 1
    assert m.counters["guest_error"] == 2


def test_pci_config_with_pointer():
    m = machine_with_ram()
    assert io(m, IOREQ_TYPE_PCI_CONFIG, 0, 4, READ | PTR, data=0x100) == 0x100
    assert m.memory.read_u32(0x100) == 0x12378086
    m.memory.write_int(0x200, 1, 0x0B)
    io(m, IOREQ_TYPE_PCI_CONFIG, (1 << 3) << 32 | 0x60, 1, WRITE | PTR, data=0x200)
    assert m.pci.config_read(8, 0x60, 1) == 0x0B
    io(m, IOREQ_TYPE_PCI_CONFIG, 0, 4, READ | PTR, data=0xFFFF0000)  # outside RAM
    assert m.counters["guest_error"] == 1


# ---- rep forms (unit level; the socket-level proofs are in tests/protocol) -------------------

def test_rep_stos_fills_every_mmio_element():
    m = make_machine()
    io(m, IOREQ_TYPE_COPY, REC_MMIO + 0x10, 4, WRITE, data=0xAABBCCDD, count=3)
    rec = m.device("recorder")
    assert [(e[2], e[4]) for e in rec.log] == [(0x10, 0xAABBCCDD), (0x14, 0xAABBCCDD),
                                              (0x18, 0xAABBCCDD)]
    assert bytes(rec.mem[0x10:0x1C]) == bytes.fromhex("ddccbbaa") * 3


def test_rep_movs_into_the_vga_window_is_one_block_with_the_same_result():
    """A forward REP MOVS from RAM into a range with write_rep (the VGA window) is one block
    call; VRAM ends as with the backward form, which goes element by element (a font glyph
    loaded into plane 2, as the VGA BIOS does). A buffer that is not RAM is counted."""
    glyphs = bytes(range(1, 33)) * 4
    vrams = []
    for bits, gpa, ptr in ((WRITE | PTR, 0xA0000, 0x1000),
                           (WRITE | PTR | DF, 0xA0000 + len(glyphs) - 1, 0x1000 + len(glyphs) - 1)):
        m = machine_with_ram()
        vga = m.device("vga")
        m.memory.write(0x1000, glyphs)
        for port, value in ((0x3C4, 0x02), (0x3C5, 0x04), (0x3C4, 0x04), (0x3C5, 0x06),
                            (0x3CE, 0x05), (0x3CF, 0x00), (0x3CE, 0x06), (0x3CF, 0x04),
                            (0x3CE, 0x08), (0x3CF, 0xFF)):
            io(m, IOREQ_TYPE_PIO, port, 1, WRITE, data=value)  # plane 2, planar, A0000 64 KiB
        calls = []
        r = m.mmio.find(0xA0000)
        block = r.write_rep
        r.write_rep = lambda off, size, data, _b=block, _c=calls: (_c.append(len(data)),
                                                                   _b(off, size, data))
        io(m, IOREQ_TYPE_COPY, gpa, 1, bits, data=ptr, count=len(glyphs))
        assert calls == ([len(glyphs)] if not bits & DF else [])
        vrams.append(bytes(vga.vram[: 4 * len(glyphs)]))
        assert m.counters["guest_error"] == 0
    assert vrams[0] == vrams[1] and vrams[0][2::4] == glyphs and not any(vrams[0][0::4])
    m = machine_with_ram()
    io(m, IOREQ_TYPE_COPY, 0xA0000, 1, WRITE | PTR, data=0xF0000000, count=16)
    assert m.counters["guest_error"] == 1


def test_rep_stos_backwards():
    m = make_machine()
    io(m, IOREQ_TYPE_COPY, REC_MMIO + 0x10, 2, WRITE | DF, data=0x1234, count=3)
    assert [e[2] for e in m.device("recorder").log] == [0x10, 0x0E, 0x0C]


def test_rep_read_without_pointer_returns_last_value():
    m = make_machine()
    assert io(m, IOREQ_TYPE_PIO, REC_PORT, 1, READ, count=3) == 0x33
    assert [e[4] for e in m.device("recorder").log] == [0x11, 0x22, 0x33]


def test_rep_count_zero_touches_nothing():
    m = machine_with_ram()
    io(m, IOREQ_TYPE_PIO, REC_PORT, 1, READ | PTR, data=0x100, count=0)
    assert m.device("recorder").log == []


# ---- containment and strict mode -------------------------------------------------------------

def test_strict_mode_raises_device_failure():
    m = make_machine(strict=True)
    with pytest.raises(DeviceFailure) as ei:
        io(m, IOREQ_TYPE_PIO, FAULT_PORT, 1, READ)
    assert "faulty" in str(ei.value)
    assert ei.value.__cause__ is not None
    with pytest.raises(DeviceFailure):
        io(m, IOREQ_TYPE_COPY, FAULT_MMIO, 4, READ)


def test_contained_failure_answers_marks_failed_and_silences_device(caplog):
    m = make_machine()
    dev = m.device("faulty")
    with caplog.at_level(logging.ERROR, logger="devmodel.machine"):
        assert io(m, IOREQ_TYPE_PIO, FAULT_PORT, 2, READ) == 0xFFFF  # all-ones of the size
    assert dev.failed and m.counters["device_failure"] == 1
    assert any("faulty" in r.getMessage() and r.exc_info for r in caplog.records)
    attempts = dev.reads_attempted
    # its ranges are dead now: reads all-ones, writes dropped, the device is not called
    assert io(m, IOREQ_TYPE_PIO, FAULT_PORT, 1, READ) == 0xFF
    assert io(m, IOREQ_TYPE_COPY, FAULT_MMIO, 8, READ) == U64
    io(m, IOREQ_TYPE_PIO, FAULT_PORT, 1, WRITE, data=1)
    assert dev.reads_attempted == attempts and dev.writes == 0
    # other devices carry on
    assert io(m, IOREQ_TYPE_PCI_CONFIG, 0, 4, READ) == 0x12378086


def test_a_failed_device_is_not_reached_through_its_string_hooks():
    """After a device failure its ranges' whole-string and block hooks are dropped too: a
    REP OUTSB, a run of posted console bytes, a REP STOS and a REP MOVS into the VGA window
    reach nobody."""
    from devmodel.wire.codec import BufIoreq

    m = machine_with_ram()
    m.memory.write(0x1000, b"late")
    for r in (m.pio.find(0x402), m.mmio.find(0xA0000)):
        m._fail(r.owner)
    vram = bytes(m.device("vga").vram[:64])
    io(m, IOREQ_TYPE_PIO, 0x402, 1, WRITE | PTR, data=0x1000, count=4)
    m.handle_buffered_batch([BufIoreq(IOREQ_TYPE_PIO, 0x402, 1, b) for b in b"more"])
    io(m, IOREQ_TYPE_COPY, 0xA0000, 2, WRITE, data=0x0741, count=16)
    io(m, IOREQ_TYPE_COPY, 0xA0000, 1, WRITE | PTR, data=0x1000, count=4)
    assert m.debug_sink.data() == b"" and bytes(m.device("vga").vram[:64]) == vram


def test_contained_failure_in_a_pointer_request_answers_data():
    m = machine_with_ram()
    assert io(m, IOREQ_TYPE_PIO, FAULT_PORT, 1, READ | PTR, data=0x300, count=4) == 0x300
    assert m.device("faulty").failed


def test_failing_reset_is_contained():
    class BadReset(Device):
        def reset(self):
            if self.ctx is not None and self.ctx.machine.counters["armed"]:
                raise RuntimeError("reset bug")

    m = build_pc(PcOptions())
    dev = m.add(BadReset("badreset"))
    m.counters["armed"] = 1
    io(m, IOREQ_TYPE_PIO, 0xCF9, 1, WRITE, data=0x06)
    assert dev.failed
    assert m.outbox[-1] == (DmOp.REMOTE_SHUTDOWN, (SHUTDOWN_REBOOT,), None)


# ---- TIMEOFFSET, INVALIDATE, buffered writes -------------------------------------------------

def test_timeoffset_accumulates_signed_deltas_and_notifies():
    m = make_machine()
    seen: list[int] = []
    m.timeoffset_listeners.append(seen.append)
    for delta in (3600, -7200, 5):
        assert io(m, IOREQ_TYPE_TIMEOFFSET, 0, 8, WRITE, data=delta & U64) == delta & U64
    assert m.rtc_offset == -3595 and seen == [3600, -7200, 5]
    m.handle_buffered(IOREQ_TYPE_TIMEOFFSET, 0, 8, (-5) & U64)
    assert m.rtc_offset == -3600
    assert m.snapshot()["rtc_offset"] == -3600


def test_invalidate_is_served():
    m = machine_with_ram()
    gen = m.memory.generation
    assert io(m, IOREQ_TYPE_INVALIDATE, 0, 4, WRITE, data=U64, count=0) == U64
    assert m.counters["invalidate"] == 1 and m.memory.generation == gen + 1


def test_buffered_write_is_a_plain_write():
    m = make_machine()
    m.handle_buffered(IOREQ_TYPE_COPY, VGA_BASE + 8, 8, 0x1122334455667788)
    m.handle_buffered(IOREQ_TYPE_PIO, 0x92, 1, 0x02)
    assert io(m, IOREQ_TYPE_COPY, VGA_BASE + 8, 8, READ) == 0x1122334455667788
    assert io(m, IOREQ_TYPE_PIO, 0x92, 1, READ) == 0x02


def test_buffered_batch_joins_debug_console_runs_and_keeps_slot_order():
    """Runs of posted single-byte writes to a port with a string hook (the debug console)
    become one write_rep call; the bytes and their order relative to other slots are what
    slot-by-slot handle_buffered gives."""
    from devmodel.wire.codec import BufIoreq

    def batch() -> list[BufIoreq]:
        out = [BufIoreq(IOREQ_TYPE_PIO, 0x402, 1, b) for b in b"SeaBIOS "]
        out.append(BufIoreq(IOREQ_TYPE_PIO, REC_PORT, 1, 0x41))  # another port in between
        out += [BufIoreq(IOREQ_TYPE_PIO, 0x402, 1, b | 0x100) for b in b"(version)\n"]
        out += [BufIoreq(IOREQ_TYPE_PIO, REC_PORT, 1, v) for v in (1, 2)]  # no string hook
        out.append(BufIoreq(IOREQ_TYPE_PIO, 0x402, 2, 0x4142))  # a 2-byte write: not joined
        out.append(BufIoreq(IOREQ_TYPE_COPY, VGA_BASE, 2, 0x0741))
        return out

    joined, single = make_machine(), make_machine()
    calls: list[int] = []
    r = joined.pio.find(0x402)
    rep = r.write_rep
    r.write_rep = lambda off, size, data: (calls.append(len(data)), rep(off, size, data))
    joined.handle_buffered_batch(batch())
    for b in batch():
        single.handle_buffered(b.type, b.addr, b.size, b.data)
    assert calls == [8, 10]
    assert joined.debug_sink.data() == single.debug_sink.data() == b"SeaBIOS (version)\n"
    rec_j, rec_s = joined.device("recorder"), single.device("recorder")
    assert rec_j.log == rec_s.log == [("pio", "w", 0, 1, v) for v in (0x41, 1, 2)]
    assert (io(joined, IOREQ_TYPE_COPY, VGA_BASE, 2, READ)
            == io(single, IOREQ_TYPE_COPY, VGA_BASE, 2, READ) == 0x0741)
    assert joined.counters == single.counters


def test_buffered_mmio_write_bug_is_contained_or_raises_in_strict_mode():
    """The posted-MMIO fast path keeps handle_ioreq's containment (design rule 6)."""
    from devmodel.core.bus import ALL_SIZES, Range

    class BadWrite(Device):
        def __init__(self) -> None:
            super().__init__("badwrite")

        def mmio_ranges(self):
            def write(off, size, value):
                raise RuntimeError("injected write fault")

            return [Range(0xC8200000, 0x1000, lambda off, size: 0, write, self.name, self, ALL_SIZES)]

    for strict in (False, True):
        m = make_machine(strict=strict)
        dev = BadWrite()
        m.add(dev)
        if strict:
            with pytest.raises(DeviceFailure):
                m.handle_buffered(IOREQ_TYPE_COPY, 0xC8200010, 4, 1)
        else:
            m.handle_buffered(IOREQ_TYPE_COPY, 0xC8200010, 4, 1)
            assert dev.failed and m.counters["device_failure"] == 1
            m.handle_buffered(IOREQ_TYPE_COPY, 0xC8200010, 4, 1)  # dead range: dropped
            assert m.counters["device_failure"] == 1


# ---- timers through the machine --------------------------------------------------------------

def test_device_timer_raises_irq_on_virtual_time():
    m = make_machine(virtual_clock=True)
    io(m, IOREQ_TYPE_PIO, TIMER_PORT, 4, WRITE, data=1000)
    assert m.clock.next_deadline() == 1000
    m.clock.set_virtual(999)
    assert m.clock.run_due(m.clock.now()) == 0 and m.outbox == []
    m.clock.set_virtual(1000)
    assert m.clock.run_due(m.clock.now()) == 1
    assert m.outbox == [(DmOp.SET_ISA_IRQ_LEVEL, (TIMER_IRQ, 1), None)]


# ---- reset via the chipset (unit level) ------------------------------------------------------

def test_cf9_reboot_resets_devices_then_reports():
    m = make_machine()
    m.start_announcing()
    bar = m.device("bardev")
    m.pci.config_write(BAR_DEVFN, 0x10, 4, 0xC000)
    m.pci.config_write(BAR_DEVFN, 4, 2, 1)
    m.outbox.clear()
    io(m, IOREQ_TYPE_PIO, 0xCF9, 1, WRITE, data=0x06)
    ops = [op for op, _, _ in m.outbox]
    assert ops[-1] == DmOp.REMOTE_SHUTDOWN and m.outbox[-1][1] == (SHUTDOWN_REBOOT,)
    assert DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER in ops  # BARs went away with the reset
    assert ops.index(DmOp.UNMAP_IO_RANGE_FROM_IOREQ_SERVER) < ops.index(DmOp.REMOTE_SHUTDOWN)
    assert bar.command == 0 and m.pci.mapped(bar) == {}
    assert m.counters["reset"] == 1


# ---- snapshot -> mutate -> restore -> equal, every device of build_pc() ----------------------

def _pio_w(m, port, size, v):
    m.handle_ioreq(IOREQ_TYPE_PIO, port, v, 1, size, WRITE)


def _cfg_w(m, devfn, reg, size, v):
    m.handle_ioreq(IOREQ_TYPE_PCI_CONFIG, devfn << 32 | reg, v, 1, size, WRITE)


MUTATIONS = {
    "i440fx": lambda m: (_cfg_w(m, 0, 0x59, 4, 0x33333330), _cfg_w(m, 0, 0x3C, 1, 0x0A),
                         _cfg_w(m, 0, 4, 2, 0x0106), _cfg_w(m, 0, 0x72, 1, 0x0A)),
    "piix3": lambda m: (_cfg_w(m, 8, 0x60, 4, 0x0B0A0509), _pio_w(m, 0x4D0, 2, 0xFFFF),
                        _pio_w(m, 0xCF9, 1, 0x02)),
    "pci-host": lambda m: _pio_w(m, 0xCF8, 4, 0x80000810),
    "port92": lambda m: _pio_w(m, 0x92, 1, 0x02),
}
# Snapshots of timed devices (RTC, PM timer) carry time: with a virtual clock it stands still.
VIRTUAL = PcOptions(virtual_clock=True)
PC_DEVICES = [d.name for d in build_pc(VIRTUAL).devices]


def _plain(v):
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return isinstance(v, (int, str, bytes, bool, float, type(None)))


CORE_CHIPSET = {"i440fx", "piix3", "pci-host", "port92"}


def _generic_mutation(m, dev):
    """For devices added to build_pc() without a dedicated entry in MUTATIONS: poke every
    register the device decodes. A dedicated mutation is better: add one with the device."""
    from devmodel.core.pci import PciDevice

    if isinstance(dev, PciDevice):
        _cfg_w(m, dev.devfn, 0x3C, 1, 0x0E)
    for r in m.pio:
        if r.owner is dev:
            for port in range(r.start, r.end + 1):
                if 1 in r.sizes and port not in (0xCF9, 0x92):
                    _pio_w(m, port, 1, 0x5A)


def test_core_chipset_devices_have_dedicated_mutations():
    assert CORE_CHIPSET <= set(PC_DEVICES) and CORE_CHIPSET <= set(MUTATIONS)


@pytest.mark.parametrize("name", PC_DEVICES)
def test_snapshot_mutate_restore_equal(name):
    m = build_pc(VIRTUAL)
    m.start_announcing()
    dev = m.device(name)
    before = dev.snapshot()
    assert before["version"] == dev.SNAPSHOT_VERSION and _plain(before)
    whole_before = m.snapshot()
    frozen = copy.deepcopy(before)
    if name in MUTATIONS:
        MUTATIONS[name](m)
    else:
        _generic_mutation(m, dev)
    after = dev.snapshot()
    if name in MUTATIONS:
        assert after != before, "the mutation must change the device's state"
    assert before == frozen  # the snapshot is a copy, not a live view
    assert whole_before["devices"][name] == before
    dev.restore(before)
    assert dev.snapshot() == before
    # and a restore onto a fresh machine reproduces the mutated state
    m2 = build_pc(VIRTUAL)
    m2.device(name).restore(after)
    assert m2.device(name).snapshot() == after


def test_restore_brings_back_guest_visible_state():
    m = build_pc(VIRTUAL)
    snap = m.snapshot()
    for mutate in MUTATIONS.values():
        mutate(m)
    m.restore(snap)
    assert m.snapshot() == snap
    assert m.handle_ioreq(IOREQ_TYPE_PCI_CONFIG, 8 << 32 | 0x60, 0, 1, 4, READ) == 0x80808080
    assert m.handle_ioreq(IOREQ_TYPE_PIO, 0x4D0, 0, 1, 2, READ) == 0
    assert m.handle_ioreq(IOREQ_TYPE_PIO, 0xCF8, 0, 1, 4, READ) == 0
    assert m.handle_ioreq(IOREQ_TYPE_PIO, 0x92, 0, 1, 1, READ) == 0
    assert m.handle_ioreq(IOREQ_TYPE_PCI_CONFIG, 0x59, 0, 1, 4, READ) == 0


def test_machine_snapshot_restore_remaps_bars():
    m = make_machine(virtual_clock=True)
    bar = m.device("bardev")
    _cfg_w(m, BAR_DEVFN, 0x10, 4, 0xC000)
    _cfg_w(m, BAR_DEVFN, 4, 2, 1)
    snap = m.snapshot()
    m.reset()
    assert m.pci.mapped(bar) == {}
    m.restore(snap)
    assert m.pci.mapped(bar)[0].start == 0xC000
    assert m.snapshot() == snap


def test_restore_validates():
    m = build_pc(PcOptions())
    dev = m.device("piix3")
    good = dev.snapshot()
    with pytest.raises(SnapshotError):
        dev.restore({**good, "device": "I440FX"})
    with pytest.raises(SnapshotError):
        dev.restore({**good, "version": 99})
    with pytest.raises(SnapshotError):
        dev.restore({**good, "state": {"config": good["state"]["config"]}})
    with pytest.raises(SnapshotError):
        dev.restore({**good, "state": {**good["state"], "config": b"\0" * 10}})
    assert dev.snapshot() == good


# ---- property: handle_ioreq never raises (non-strict) ----------------------------------------

INTERESTING_ADDRS = [0, 0x92, 0x4D0, 0x4D1, 0xCF8, 0xCF9, 0xCFA, 0xCFC, 0xCFD, 0xCFE, 0xCFF,
                     REC_PORT, FAULT_PORT, TIMER_PORT, 0xC000, REC_MMIO, REC_MMIO + 0x1FFF,
                     FAULT_MMIO, VGA_BASE, 0xFEB00000, 0xFFFF, 0x10000, U64, U64 - 3]
for _devfn in (0, 8, BAR_DEVFN, 0xFF):
    for _reg in (0, 4, 6, 0x10, 0x18, 0x1C, 0x30, 0x3C, 0x60, 0xFC, 0xFF, 0x100):
        INTERESTING_ADDRS.append(_devfn << 32 | _reg)

ioreqs = st.tuples(
    st.one_of(st.sampled_from([0, 1, 2, 7, 8]), st.integers(0, 255)),
    st.one_of(st.sampled_from(INTERESTING_ADDRS), st.integers(0, U64)),
    st.one_of(st.sampled_from([0, 1, 0xFF, 0x80000000, 0x80001800, 0x06, 0x100, 0xC000, U64]),
              st.integers(0, U64)),
    st.one_of(st.sampled_from([0, 1, 2, 4096, 4097, 2**32 - 1]), st.integers(0, 2**32 - 1)),
    st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**32 - 1)),
    st.integers(0, 255),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ioreqs, min_size=1, max_size=12))
def test_handle_ioreq_never_raises(reqs):
    logging.getLogger("devmodel").setLevel(logging.CRITICAL)
    m = machine_with_ram(0x10000)
    try:
        for typ, addr, data, count, size, bits in reqs:
            v = m.handle_ioreq(typ, addr, data, count, size, bits)
            assert isinstance(v, int) and 0 <= v < 2**64
            m.outbox.clear()
    finally:
        m.close_backends()
        logging.getLogger("devmodel").setLevel(logging.NOTSET)


def test_machine_without_devices_is_all_ones():
    m = Machine(memory=GuestMemory.fake(0x1000))
    assert m.handle_ioreq(IOREQ_TYPE_PIO, 0x60, 0, 1, 1, READ) == 0xFF
    assert m.claimed() == []
    assert BarDevice().name == "bardev"


def test_posted_work_runs_at_once_without_a_list_and_in_order_after_the_answer_with_one():
    m = Machine()
    dev = Device("poster")
    m.add(dev)
    ran = []
    m.post(dev, lambda: ran.append(1))
    assert ran == [1]  # tests, replay, fuzzing: inside the write
    m.posted = []  # as the daemon sets it
    m.post(dev, lambda: ran.append(2))
    m.post(dev, lambda: ran.append(3))
    assert ran == [1]
    m.run_posted()
    assert ran == [1, 2, 3] and m.posted == []


def test_posted_work_that_posts_more_runs_in_the_same_round_and_a_reposter_is_bounded():
    from devmodel.core.machine import MAX_POSTED_ROUNDS

    m = Machine()
    dev = Device("poster")
    m.add(dev)
    m.posted = []
    ran = []
    m.post(dev, lambda: (ran.append("walk"), m.post(dev, lambda: ran.append("follow-up"))))
    m.run_posted()
    assert ran == ["walk", "follow-up"] and m.posted == []
    assert m.counters["posted_deferred"] == 0

    def forever():
        ran.append("again")
        m.post(dev, forever)

    ran.clear()
    m.post(dev, forever)
    m.run_posted()
    assert ran == ["again"] * MAX_POSTED_ROUNDS and len(m.posted) == 1
    assert m.counters["posted_deferred"] == 1


def test_posted_work_that_raises_is_contained_or_raises_in_strict_mode(caplog):
    def boom():
        raise RuntimeError("bug")

    for strict in (False, True):
        m = Machine(strict=strict)
        dev = Device("poster")
        m.add(dev)
        m.posted = []
        m.post(dev, boom)
        if strict:
            with pytest.raises(DeviceFailure):
                m.run_posted()
            continue
        with caplog.at_level(logging.ERROR, logger="devmodel.machine"):
            m.run_posted()
        assert dev.failed and m.counters["device_failure"] == 1
        m.post(dev, boom)
        m.run_posted()  # a failed device's work is dropped
        assert m.counters["device_failure"] == 1
