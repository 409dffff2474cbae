"""Register-level (and wire-level) tests for hostile-guest-catalog entries that had none in
their device's test file; the catalog -> test map is tests/fuzz/CATALOG.md."""

from __future__ import annotations

import logging
import sys
import tracemalloc
from pathlib import Path

from devmodel.bios.i8042 import I8042
from devmodel.client import Hypervisor
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.wire import codec
from devmodel.wire.constants import MsgType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "usb"))

from uhci_driver import USBSTS, UhciDriver  # noqa: E402

from devmodel.usb import UsbKeyboard, UsbTablet  # noqa: E402

PIO, READ, WRITE = 0, 0x21, 0x01


def _machine(*devs) -> Machine:
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    for d in devs:
        m.add(d)
    return m


# ---- 44: CVE-2017-16845, the PS/2 queue restored from a crafted state ---------------------------
def test_44_i8042_restore_of_a_hostile_ps2_queue_is_clamped():
    dev = I8042()
    m = _machine(dev)
    snap = dev.snapshot()
    st = snap["state"]
    kbd = dict(st["kbd_state"])
    kbd["data"] = list(range(100_000))  # far past the 16-byte queue, values past a byte
    kbd["replies"] = [0x1FA] * 5000
    kbd["last"] = -7
    st["kbd_state"] = kbd
    mouse = dict(st["mouse_state"])
    mouse["data"] = [0xFFFF] * 4096
    st["mouse_state"] = mouse
    dev.restore(snap)
    assert len(dev.kbd.data) <= 16 and all(0 <= b <= 0xFF for b in dev.kbd.data)
    assert len(dev.mouse.data) <= 16
    # the guest drains the port: bounded, byte values, then the last byte again (empty queue)
    values = [m.handle_ioreq(PIO, 0x60, 0, 1, 1, READ) for _ in range(200)]
    assert all(0 <= v <= 0xFF for v in values)
    assert values[-1] == values[-2]


# ---- 48: XSA-180, logging the guest can trigger is rate-limited ---------------------------------
def test_48_guest_errors_are_counted_not_logged_each(caplog):
    dev = I8042()
    m = _machine(dev)
    with caplog.at_level(logging.WARNING, logger="devmodel"):
        for i in range(5000):
            m.handle_ioreq(PIO, 0x64, 0x08 + (i & 1) * 0x10, 1, 1, WRITE)  # unsupported commands
    assert sum(dev.counters.values()) >= 5000
    lines = [r for r in caplog.records if "guest error" in r.getMessage()]
    assert 1 <= len(lines) <= 5, len(lines)  # one per LOG_INTERVAL_S, whatever the rate
    assert all(len(r.getMessage()) < 300 for r in lines)


# ---- 49: XSA-262, the answer echoes the request: only data and state change ---------------------
def test_49_ioresp_echoes_every_field_but_data_and_state():
    hv = Hypervisor.spawn(["--domid", "1", "--vga", "none"], ram=16 << 20)
    try:
        cases = [
            (0x71, 0, 1, 1, 0x1234, 0x20, 0),  # PIO read: count, size, vp_eport echoed
            (0x70, 0x0E, 1, 1, 7, 0x00, 0),  # PIO write
            (0x80, 0x55, 1, 1, 0xFFFFFFFF, 0x00, 0),
            (0xFEE00000, 0, 1, 4, 3, 0x20, 1),  # MMIO read of nothing
            (0x1F0, 0x2000, 3, 2, 9, 0x30, 0),  # rep insw into RAM (data_is_ptr)
        ]
        for i, (addr, data, count, size, eport, bits, typ) in enumerate(cases):
            tag = 0x4000 + i
            req = codec.IOREQ.pack(addr, data, count, size, eport, 0, bits | 0x01, typ)
            hv.send_raw(codec.frame(MsgType.IOREQ, req, tag=tag))
            reply = hv.recv_reply(tag)
            assert reply.type == MsgType.IORESP
            got = codec.IOREQ.unpack(reply.payload)
            want = codec.IOREQ.unpack(req)
            # (addr, data, count, size, vp_eport, pad, bits, type): all but data and the
            # state nibble of bits come back as sent
            assert got[0] == want[0] and got[2:6] == want[2:6] and got[7] == want[7], (got, want)
            assert got[6] & 0xF0 == want[6] & 0xF0 and got[6] & 0x0F == 3  # IORESP_READY
            if not bits & 0x20 or bits & 0x10:
                assert got[1] == want[1]  # writes and data_is_ptr keep data
    finally:
        hv.close()
    assert hv.process.proc.returncode == 0


# ---- 28: CVE-2016-7466, attach/detach cycles leak nothing ---------------------------------------
CYCLES = 300


def test_28_port_reset_and_reenumeration_cycles_do_not_grow_memory():
    """The guest cannot pull the cable of a root-port device, but it can reset and disable the
    port and enumerate the device again, which is what a detach/attach is to the device model.
    Memory after many cycles is what it was after the first few."""
    d = UhciDriver([UsbTablet(), UsbKeyboard()])

    def cycle(k: int) -> None:
        port = k & 1
        d.reset_port(port)
        d.enumerate(1 + port)
        d.out(USBSTS, 0x3F)
        d.m.outbox.clear()

    for k in range(20):  # warm-up: caches, first allocations
        cycle(k)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for k in range(CYCLES):
            cycle(k)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after {CYCLES} reset/enumerate cycles"


# ---- 20 / 50: CVE-2016-2198, CVE-2015-7549, CVE-2020-15469: every BAR answers every access -------
def _offsets(size: int) -> list[int]:
    """Every offset of small BARs; of big ones the first 1 KiB, then a stride with unaligned
    neighbours, up to 1 MiB (VRAM-sized BARs are plain memory past that)."""
    if size <= 0x400:
        return list(range(size))
    out = list(range(0x400))
    for off in range(0x400, min(size, 1 << 20), 0x40):
        out += [off, off + 1, off + 3]
    return out


def test_50_every_bar_of_the_full_pc_answers_every_offset_and_size():
    from devmodel.fuzz.machine import FuzzSetup, build_fuzz_machine, parse_devices

    m = build_fuzz_machine(FuzzSetup(devices=parse_devices("all")), strict=True)
    io_next, mem_next = 0xC000, 0xE0000000
    checked = 0
    try:
        for dev in [d for d in m.devices if hasattr(d, "bars")]:
            for bar in (b for b in dev.bars if b is not None):
                if bar.io:
                    base = io_next = (io_next + bar.size - 1) & ~(bar.size - 1)
                    io_next += bar.size
                else:
                    base = mem_next = (mem_next + bar.size - 1) & ~(bar.size - 1)
                    mem_next += bar.size
                cfg = dev.devfn << 32 | (0x10 + 4 * bar.index)
                m.handle_ioreq(2, cfg, base | int(bar.io), 1, 4, WRITE)
                m.handle_ioreq(2, dev.devfn << 32 | 0x04, 0x0003, 1, 2, WRITE)  # decode, no DMA
                typ = PIO if bar.io else 1
                for off in _offsets(bar.size):
                    for size in (1, 2, 4) if bar.io else (1, 2, 4, 8):
                        v = m.handle_ioreq(typ, base + off, 0, 1, size, READ)
                        assert 0 <= v < 1 << (8 * size)
                        # writing back what was read: every write path runs, and no device is
                        # told to reset or start DMA by a value the test made up
                        m.handle_ioreq(typ, base + off, v, 1, size, WRITE)
                        checked += 1
                m.outbox.clear()
                m.handle_ioreq(2, dev.devfn << 32 | 0x04, 0, 1, 2, WRITE)
        assert checked > 10_000
        assert not m.counters.get("device_failure")
    finally:
        m.close_backends()
        m.memory.close()


# ---- lesson of 21 / 48: guest errors cannot mint counter keys ---------------------------------
def test_guest_error_counters_do_not_grow_with_guest_values():
    """Messages carry guest values; the counters are keyed without them, so a guest making a
    new value per ioreq (here: fw_cfg DMA descriptors at addresses outside RAM, each one
    "fw_cfg DMA descriptor 0x... is not RAM") cannot grow the device's memory."""
    from devmodel.fuzz.machine import FuzzSetup, build_fuzz_machine

    m = build_fuzz_machine(FuzzSetup(devices=("fw_cfg",), disks={}), strict=True)
    fw = next(d for d in m.devices if d.name.startswith("fw_cfg"))
    try:
        for i in range(3000):
            addr = 0x4000_0000 + i * 0x1000  # past the 2 MiB of RAM
            m.handle_ioreq(PIO, 0x514, int.from_bytes((addr >> 32).to_bytes(4, "big"), "little"),
                           1, 4, WRITE)
            m.handle_ioreq(PIO, 0x518, int.from_bytes((addr & 0xFFFFFFFF).to_bytes(4, "big"),
                                                      "little"), 1, 4, WRITE)
        assert sum(fw.counters.values()) >= 3000, fw.counters
        assert len(fw.counters) < 10, list(fw.counters)[:10]
    finally:
        m.close_backends()
        m.memory.close()
