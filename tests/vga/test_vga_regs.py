"""Register groups of the standard VGA, driven only through the bus (ports, BAR2, config)."""

from __future__ import annotations

import pytest
from vgahelp import Bus, make

from devmodel.vga import regs as R


@pytest.fixture
def vga():
    m, dev = make()
    return Bus(m), dev, m


def test_pci_identity_and_bars(vga) -> None:
    bus, dev, m = vga
    assert bus.cfg_read(0, 4) == 0x11111234
    assert bus.cfg_read(0x08, 4) == 0x03000002  # class 030000, revision 2 (qext)
    assert bus.cfg_read(0x2C, 4) == 0x11001AF4
    assert bus.cfg_read(0x3D, 1) == 0  # no interrupt pin
    bus.cfg_write(0x10, 0xFFFFFFFF)
    assert bus.cfg_read(0x10) == (~((16 << 20) - 1) & 0xFFFFFFFF) | 0x8  # prefetchable
    bus.cfg_write(0x18, 0xFFFFFFFF)
    assert bus.cfg_read(0x18) == 0xFFFFF000  # BAR2: 4 KiB MMIO
    assert bus.cfg_read(0x14) == 0  # BAR1 absent


def test_rom_bar_holds_the_vga_bios() -> None:
    m, dev = make(rom=True)
    bus = Bus(m)
    bus.cfg_write(0x30, 0xFFFFFFFF)
    size = (~(bus.cfg_read(0x30) & ~1) & 0xFFFFFFFF) + 1
    assert size == dev.rom_size >= 32 << 10
    bus.cfg_write(0x30, 0xFE000001)
    bus.cfg_write(0x04, 0x2, 2)
    assert bus.readb(0xFE000000, 2) == 0xAA55


def test_sequencer_index_data_and_masks(vga) -> None:
    bus, dev, _ = vga
    for i, mask in enumerate(R.SR_MASK):
        bus.seq(i, 0xFF)
        bus.outb(0x3C4, i)
        assert bus.inb(0x3C5) == mask
    bus.outb(0x3C4, 0xFA)
    assert bus.inb(0x3C4) == 0x02  # the index has 3 bits
    bus.outw(0x3C4, 0x0A02)  # the outw idiom: index then data
    bus.outb(0x3C4, 2)
    assert bus.inb(0x3C5) == 0x0A


def test_graphics_controller_masks(vga) -> None:
    bus, _, _ = vga
    for i in range(9):
        bus.gfx(i, 0xFF)
        bus.outb(0x3CE, i)
        assert bus.inb(0x3CF) == R.GR_MASK[i]


def test_crtc_follows_misc_output_and_protection(vga) -> None:
    bus, _, _ = vga
    bus.outb(0x3C2, 0x67)  # colour
    assert bus.inb(0x3CC) == 0x67
    bus.crtc(0x0A, 0x0D)
    bus.outb(0x3D4, 0x0A)
    assert bus.inb(0x3D5) == 0x0D
    assert bus.inb(0x3B5) == 0xFF  # mono ports are dead in colour mode
    bus.outb(0x3B4, 0x0A)
    bus.outb(0x3B5, 0x77)  # dropped
    bus.outb(0x3D4, 0x0A)
    assert bus.inb(0x3D5) == 0x0D
    bus.outb(0x3C2, 0x66)  # mono
    bus.outb(0x3B4, 0x0A)
    assert bus.inb(0x3B5) == 0x0D
    assert bus.inb(0x3D5) == 0xFF
    bus.outb(0x3C2, 0x67)
    # protection: CR11 bit 7 locks CR00-CR07 but CR07 bit 4 (line compare bit 8)
    bus.crtc(0x11, 0x00)
    bus.crtc(0x01, 0x4F)
    bus.crtc(0x07, 0x00)
    bus.crtc(0x11, 0x80)
    bus.crtc(0x01, 0x12)
    bus.crtc(0x07, 0xFF)
    bus.crtc(0x09, 0x4F)  # not protected
    got = {}
    for i in (0x01, 0x07, 0x09):
        bus.outb(0x3D4, i)
        got[i] = bus.inb(0x3D5)
    assert got == {0x01: 0x4F, 0x07: 0x10, 0x09: 0x4F}


def test_attribute_flip_flop(vga) -> None:
    bus, dev, _ = vga
    bus.outb(0x3C2, 0x67)
    bus.inb(0x3DA)
    bus.outb(0x3C0, 0x10)  # index
    bus.outb(0x3C0, 0x0C)  # data
    bus.outb(0x3C0, 0x31)  # index again: PAS + 0x11
    bus.outb(0x3C0, 0x05)
    assert bus.inb(0x3C0) == 0x31
    assert bus.inb(0x3C1) == 0x05
    bus.outb(0x3C0, 0x12)  # now an index (the flip-flop toggled twice)
    bus.inb(0x3DA)  # reset the flip-flop: the next write is an index
    bus.outb(0x3C0, 0x10)
    assert bus.inb(0x3C1) == 0x0C
    bus.outb(0x3C0, 0xFF)  # data: AR10 bit 4 is reserved
    assert bus.inb(0x3C1) == 0xEF
    bus.outb(0x3C0, 0x3F)  # index 0x1F: no register
    assert bus.inb(0x3C1) == 0


def test_dac_read_write_indexes_6bit_and_autoincrement(vga) -> None:
    bus, dev, _ = vga
    bus.outb(0x3C8, 0xFE)
    for v in (0x3F, 0x40, 0xFF, 1, 2, 3, 7, 8, 9):  # three entries, FE FF 00 (wraps)
        bus.outb(0x3C9, v)
    assert bus.inb(0x3C8) == 0x01
    assert bus.inb(0x3C7) == 0  # DAC state: write mode
    bus.outb(0x3C7, 0xFE)
    assert bus.inb(0x3C7) == 3
    got = [bus.inb(0x3C9) for _ in range(9)]
    assert got == [0x3F, 0x00, 0x3F, 1, 2, 3, 7, 8, 9]
    # a partial entry is not committed until its third value
    bus.outb(0x3C8, 5)
    bus.outb(0x3C9, 10)
    bus.outb(0x3C9, 11)
    assert dev.palette[15:18] == b"\0\0\0"
    bus.outb(0x3C8, 6)  # a new write index restarts the step count
    assert dev.palette[15:18] == b"\0\0\0"
    bus.outb(0x3C6, 0x0F)
    assert bus.inb(0x3C6) == 0x0F


def test_input_status1_retrace_advances_with_time(vga) -> None:
    bus, dev, m = vga
    bus.outb(0x3C2, 0x67)
    seen = set()
    for t in range(0, R.FRAME_NS, R.LINE_NS // 3):
        m.clock.set_virtual(t)
        dev.poll_skew = 0
        seen.add(bus.inb(0x3DA) & 0x09)
    assert seen == {0x00, 0x01, 0x09}  # active, blank, vertical retrace (within blank)
    # deterministic: the same time gives the same answer
    m.clock.set_virtual(12345)
    dev.poll_skew = 0
    a = bus.inb(0x3DA)
    dev.poll_skew = 0
    assert bus.inb(0x3DA) == a


@pytest.mark.parametrize("wanted", [0x08, 0x00, 0x01])
def test_tight_poll_loop_terminates_with_frozen_clock(vga, wanted: int) -> None:
    bus, _, m = vga
    bus.outb(0x3C2, 0x67)
    m.clock.set_virtual(5_000_000)
    bound = R.FRAME_NS // R.POLL_SKEW_NS + 2
    for _ in range(bound):  # e.g. SeaVGABIOS / DOS: wait for (no) retrace
        v = bus.inb(0x3DA)
        if wanted == 0x08 and v & 0x08 or wanted == 0x00 and not v & 0x09 or (
                wanted == 0x01 and v & 0x01 and not v & 0x08):
            break
    else:
        pytest.fail("poll loop never saw the phase")


def test_bar2_mmio_vga_ports_dispi_and_qext(vga) -> None:
    bus, dev, m = vga
    bus.cfg_write(0x18, 0xFEBF0000)
    bus.cfg_write(0x04, 0x2, 2)
    base = 0xFEBF0000
    bus.writeb(base + 0x400 + 2, 0x67)  # misc output through MMIO
    assert dev.misc == 0x67
    bus.writeb(base + 0x404, 0x0F02, 2)  # SEQ index 2, data 0x0F in one 16-bit access
    assert dev.sr[2] == 0x0F
    assert bus.readb(base + 0x500, 2) == R.VBE_ID5
    assert bus.readb(base + 0x500 + 2 * R.VBE_INDEX_VIDEO_MEMORY_64K, 2) == 256
    bus.writeb(base + 0x500 + 2 * R.VBE_INDEX_XRES, 800, 2)
    assert dev.vbe_regs[R.VBE_INDEX_XRES] == 800
    assert bus.readb(base + 0x600, 4) == R.QEXT_SIZE
    assert bus.readb(base + 0x604, 4) == R.QEXT_LITTLE_ENDIAN
    bus.writeb(base + 0x604, R.QEXT_BIG_ENDIAN, 4)  # refused and counted
    assert bus.readb(base + 0x604, 4) == R.QEXT_LITTLE_ENDIAN
    assert dev.counters


def test_reset_restores_power_on_state(vga) -> None:
    bus, dev, m = vga
    bus.outb(0x3C2, 0x67)
    bus.seq(2, 0x0F)
    bus.vbe(R.VBE_INDEX_ENABLE, R.VBE_ENABLED)
    m.reset()
    assert dev.misc == 0 and dev.sr[2] == 0 and not dev.vbe_enabled()
    assert dev.vbe_regs[R.VBE_INDEX_ID] == R.VBE_ID5
