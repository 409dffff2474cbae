"""Bochs VBE DISPI: identification, modes, banks, the LFB; and the hostile-guest catalog
entries for VGA/VBE (30-35): every geometry is clamped to VRAM and drawing never raises."""

from __future__ import annotations

import pytest
from vgahelp import MODE3, MODE13, WINDOW, Bus, make, set_mode

from devmodel.vga import capture, render, text_screen
from devmodel.vga import regs as R
from devmodel.vga.render import MAX_FRAME_HEIGHT, MAX_FRAME_WIDTH


@pytest.fixture
def vga():
    m, dev = make(4)
    return Bus(m), dev, m


def vbe_mode(bus, x: int, y: int, bpp: int, flags: int = R.VBE_LFB_ENABLED) -> None:
    bus.vbe(R.VBE_INDEX_ENABLE, 0)
    bus.vbe(R.VBE_INDEX_XRES, x)
    bus.vbe(R.VBE_INDEX_YRES, y)
    bus.vbe(R.VBE_INDEX_BPP, bpp)
    bus.vbe(R.VBE_INDEX_ENABLE, R.VBE_ENABLED | flags)


def geometry_ok(dev) -> None:
    r = dev.vbe_regs
    bytespp = (r[R.VBE_INDEX_BPP] + 7) // 8
    line = r[R.VBE_INDEX_VIRT_WIDTH] * bytespp
    assert line == dev.vbe_line_offset
    assert (r[R.VBE_INDEX_Y_OFFSET] + r[R.VBE_INDEX_YRES]) * line <= dev.vram_size
    assert r[R.VBE_INDEX_X_OFFSET] + r[R.VBE_INDEX_XRES] <= r[R.VBE_INDEX_VIRT_WIDTH]
    assert dev.vbe_start_addr + (r[R.VBE_INDEX_YRES] - 1) * line \
        + r[R.VBE_INDEX_XRES] * bytespp <= dev.vram_size


def test_id_negotiation_and_memory_size(vga) -> None:
    bus, dev, _ = vga
    assert bus.vbe_read(R.VBE_INDEX_ID) == R.VBE_ID5
    bus.vbe(R.VBE_INDEX_ID, R.VBE_ID0)
    assert bus.vbe_read(R.VBE_INDEX_ID) == R.VBE_ID0
    bus.vbe(R.VBE_INDEX_ID, 0x1234)  # not an ID: ignored
    assert bus.vbe_read(R.VBE_INDEX_ID) == R.VBE_ID0
    bus.vbe(R.VBE_INDEX_ID, R.VBE_ID5)
    assert bus.vbe_read(R.VBE_INDEX_VIDEO_MEMORY_64K) == 64  # 4 MiB
    assert bus.vbe_read(0x20) == 0
    assert bus.inw(0x1CE) == 0x20  # the index reads back


def test_getcaps_reports_maxima(vga) -> None:
    bus, _, _ = vga
    bus.vbe(R.VBE_INDEX_XRES, 640)
    bus.vbe(R.VBE_INDEX_ENABLE, R.VBE_GETCAPS)
    assert [bus.vbe_read(i) for i in (1, 2, 3)] == [R.VBE_MAX_XRES, R.VBE_MAX_YRES, 32]
    bus.vbe(R.VBE_INDEX_ENABLE, 0)
    assert bus.vbe_read(R.VBE_INDEX_XRES) == 640


@pytest.mark.parametrize("bpp", R.VBE_BPPS)
def test_enable_mode_sets_virtual_size_and_clears(vga, bpp: int) -> None:
    bus, dev, _ = vga
    dev.vram[0:16] = b"\xAA" * 16
    vbe_mode(bus, 640, 480, bpp)
    assert dev.vbe_enabled()
    assert bus.vbe_read(R.VBE_INDEX_VIRT_WIDTH) == 640
    assert bus.vbe_read(R.VBE_INDEX_VIRT_HEIGHT) == 480
    assert dev.vbe_line_offset == 640 * ((bpp + 7) // 8)
    assert bytes(dev.vram[0:16]) == bytes(16)
    frame = render(capture(dev))
    assert (frame.width, frame.height, frame.mode) == (640, 480, f"vbe{bpp}")


def test_noclearmem_keeps_vram(vga) -> None:
    bus, dev, _ = vga
    dev.vram[0:4] = b"\x01\x02\x03\x04"
    vbe_mode(bus, 320, 200, 32, R.VBE_LFB_ENABLED | R.VBE_NOCLEARMEM)
    assert bytes(dev.vram[0:4]) == b"\x01\x02\x03\x04"


def test_bank_switching_through_the_window(vga) -> None:
    bus, dev, _ = vga
    vbe_mode(bus, 640, 480, 8, 0)
    bus.vbe(R.VBE_INDEX_BANK, 3)
    bus.writeb(WINDOW + 0x10, 0x5A)
    assert dev.vram[3 * 0x10000 + 0x10] == 0x5A
    assert bus.readb(WINDOW + 0x10) == 0x5A
    assert bus.readb(WINDOW + 0x10000) == 0xFF  # only A0000-AFFFF decodes with VBE


def test_8bit_dac(vga) -> None:
    bus, dev, _ = vga
    vbe_mode(bus, 64, 8, 8, R.VBE_8BIT_DAC)
    bus.dac(1, (0xFF, 0x80, 0x01))
    assert dev.palette[3:6] == bytes([0xFF, 0x80, 0x01])
    bus.vbe(R.VBE_INDEX_ENABLE, 0)
    bus.dac(1, (0xFF, 0x80, 0x01))
    assert dev.palette[3:6] == bytes([0x3F, 0x00, 0x01])


def test_trapped_lfb_reads_and_writes_vram(vga) -> None:
    bus, dev, m = vga
    bus.cfg_write(0x10, 0xE0000000)
    bus.cfg_write(0x04, 0x2, 2)
    bus.writeb(0xE0000000 + 0x1000, 0x11223344, 4)
    assert bytes(dev.vram[0x1000:0x1004]) == bytes([0x44, 0x33, 0x22, 0x11])
    assert bus.readb(0xE0000000 + 0x1002, 2) == 0x1122


# ---- hostile guests -------------------------------------------------------------------------
@pytest.mark.parametrize("x,y,bpp", [(0xFFFF, 0xFFFF, 32), (16000, 12000, 32), (8, 0xFFFF, 8),
                                     (0, 0, 0), (1, 1, 7), (0xFFF8, 1, 24)])
def test_cve_2014_3615_huge_modes_are_clamped(vga, x: int, y: int, bpp: int) -> None:
    bus, dev, _ = vga
    vbe_mode(bus, x, y, bpp)
    geometry_ok(dev)
    frame = render(capture(dev))
    assert frame.width <= MAX_FRAME_WIDTH and frame.height <= MAX_FRAME_HEIGHT
    assert len(frame.rgb) == 3 * frame.width * frame.height


@pytest.mark.parametrize("reg,val", [(R.VBE_INDEX_X_OFFSET, 0xFFFF), (R.VBE_INDEX_Y_OFFSET, 0xFFFF),
                                     (R.VBE_INDEX_VIRT_WIDTH, 0xFFFF),
                                     (R.VBE_INDEX_VIRT_HEIGHT, 0xFFFF)])
def test_offsets_and_virtual_sizes_past_vram_are_clamped(vga, reg: int, val: int) -> None:
    bus, dev, _ = vga
    vbe_mode(bus, 1024, 768, 32)
    bus.vbe(reg, val)
    geometry_ok(dev)
    render(capture(dev))


def test_tiny_vram_with_widest_line() -> None:
    m, dev = make(1)
    bus = Bus(m)
    vbe_mode(bus, 16000, 12000, 32)
    geometry_ok(dev)
    assert render(capture(dev)).height >= 1


def test_cve_2016_3710_bank_cannot_reach_past_vram(vga) -> None:
    bus, dev, _ = vga
    vbe_mode(bus, 640, 480, 8, 0)
    bus.vbe(R.VBE_INDEX_BANK, 0xFFFF)  # masked to the banks VRAM has
    assert dev.bank_offset + 0xFFFF < dev.vram_size
    bus.writeb(WINDOW + 0xFFFF, 0x77)
    assert dev.vram[dev.vram_size - 1] == 0x77
    # legacy mode 1 with a stale bank offset after VBE is disabled: still one bounds check
    bus.vbe(R.VBE_INDEX_BANK, 63)
    bus.vbe(R.VBE_INDEX_ENABLE, 0)
    set_mode(bus, MODE13)
    dev.bank_offset = dev.vram_size  # as if a bank register had been left pointing past VRAM
    bus.gfx(6, 0x05)
    bus.writeb(WINDOW + 0x20, 1)
    assert bus.readb(WINDOW + 0x20) == 0xFF
    assert any("past VRAM" in k for k in dev.counters)


def test_cve_2016_3712_vga_writes_cannot_change_vbe_geometry(vga) -> None:
    bus, dev, _ = vga
    vbe_mode(bus, 800, 600, 32)
    before = (render(capture(dev)).width, render(capture(dev)).height, dev.vbe_line_offset)
    bus.seq(4, 0x00)  # chain-4 off
    bus.crtc(0x11, 0)
    bus.crtc(0x01, 0xFF)
    bus.crtc(0x13, 0xFF)
    bus.crtc(0x12, 0xFF)
    bus.gfx(6, 0x0C)
    frame = render(capture(dev))
    assert (frame.width, frame.height, dev.vbe_line_offset) == before
    bus.writeb(WINDOW + 4, 0x99)  # the window stays linear and banked
    assert dev.vram[4] == 0x99


@pytest.mark.parametrize("mode", [MODE3, MODE13])
@pytest.mark.parametrize("crtc", [
    {0x0C: 0xFF, 0x0D: 0xFF},  # start address at the end of VRAM
    {0x13: 0xFF},  # huge line offset
    {0x18: 0x00, 0x07: 0x00, 0x09: 0x00},  # line compare 0: split screen at the top
    {0x12: 0xFF, 0x07: 0xFF, 0x01: 0xFF, 0x09: 0x00},  # 1024 lines, 256 columns
    {0x0E: 0xFF, 0x0F: 0xFF, 0x0A: 0x00, 0x0B: 0x1F},  # cursor far away, full height
    {0x09: 0x1F, 0x12: 0x00, 0x07: 0x00},  # 32-line cells, 1 scanline
])
def test_cve_2017_13672_13673_2018_5683_crtc_wraps(mode: dict, crtc: dict) -> None:
    m, dev = make(1)
    bus = Bus(m)
    set_mode(bus, mode)
    dev.vram[0 : dev.vram_size] = bytes(range(256)) * (dev.vram_size // 256)
    bus.crtc(0x11, 0)
    for i, v in crtc.items():
        bus.crtc(i, v)
    bus.seq(3, 0x3F)  # font maps at the top of plane 2
    frame = render(capture(dev))
    assert len(frame.rgb) == 3 * frame.width * frame.height
    assert frame.width <= MAX_FRAME_WIDTH and frame.height <= MAX_FRAME_HEIGHT
    lines = text_screen(capture(dev))
    assert len(lines) <= 256


@pytest.mark.parametrize("size", [2, 4, 8])
def test_wide_posted_stores_in_the_bank_window(vga, size: int) -> None:
    """2/4/8-byte stores (what Xen posts for a VBE frame buffer) land little-endian at the
    bank offset; one that runs past A0000-AFFFF keeps only the bytes that decode."""
    bus, dev, _ = vga
    vbe_mode(bus, 640, 480, 32, 0)
    bus.vbe(R.VBE_INDEX_BANK, 2)
    value = int.from_bytes(bytes(range(0x11, 0x11 + size)), "little")
    bus.writeb(WINDOW + 0x100, value, size)
    assert bytes(dev.vram[0x20100 : 0x20100 + size]) == bytes(range(0x11, 0x11 + size))
    assert bus.readb(WINDOW + 0x100, size) == value
    dev.vram[0x30000 : 0x30008] = bytes(8)
    bus.writeb(WINDOW + 0x10000 - 1, value, size)  # the first byte decodes, the rest do not
    assert dev.vram[0x2FFFF] == 0x11 and bytes(dev.vram[0x30000 : 0x30008]) == bytes(8)
    assert bus.readb(WINDOW + 0x10000 - 1, size) == 0x11 | (((1 << 8 * size) - 1) & ~0xFF)
    # the last bank of VRAM: a store at its end stays inside
    bus.vbe(R.VBE_INDEX_BANK, dev.vram_size // 0x10000 - 1)
    bus.writeb(WINDOW + 0x10000 - size, value, size)
    assert bytes(dev.vram[dev.vram_size - size :]) == bytes(range(0x11, 0x11 + size))
