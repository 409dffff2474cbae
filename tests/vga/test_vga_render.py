"""Rendering golden tests: text mode from VRAM (font in plane 2), mode 13h and planar through
a PNG round trip, VBE linear modes, dirty tiles."""

from __future__ import annotations

import pytest
from vgahelp import (
    EGA_PALETTE,
    MODE3,
    MODE12,
    MODE13,
    WINDOW,
    Bus,
    decode_png,
    load_ega_dac,
    load_font,
    make,
    set_mode,
)

from devmodel.backends.display import encode_png, write_png
from devmodel.vga import TileTracker, capture, render, text_screen
from devmodel.vga import regs as R

# A tiny known font: 'H' and 'I' as 8x16 glyphs; a box-drawing char 0xC4 (a full row).
GLYPH_H = [0, 0, 0x66, 0x66, 0x66, 0x7E, 0x66, 0x66, 0x66, 0, 0, 0, 0, 0, 0, 0]
GLYPH_I = [0, 0, 0x3C, 0x18, 0x18, 0x18, 0x18, 0x18, 0x3C, 0, 0, 0, 0, 0, 0, 0]
GLYPH_BAR = [0] * 7 + [0xFF] + [0] * 8


def c6(v: int) -> int:
    """The DAC's 6-bit value as 8 bits (QEMU c6_to_8)."""
    return (v << 2) | ((v & 1) << 1) | (v & 1)


def text_machine():
    m, dev = make(1)
    bus = Bus(m)
    set_mode(bus, MODE3)
    load_ega_dac(bus)
    load_font(bus, {ord("H"): GLYPH_H, ord("I"): GLYPH_I, 0xC4: GLYPH_BAR})
    return bus, dev


def put(bus, row: int, col: int, text: str, attr: int = 0x07) -> None:
    for i, ch in enumerate(text.encode("cp437")):
        bus.writeb(0xB8000 + 2 * (row * 80 + col + i), attr << 8 | ch, 2)


def pixel(frame, x: int, y: int) -> tuple[int, int, int]:
    o = 3 * (y * frame.width + x)
    return tuple(frame.rgb[o : o + 3])


def test_text_screen_reads_what_the_guest_wrote() -> None:
    bus, dev = text_machine()
    put(bus, 0, 0, "HI there")
    put(bus, 24, 70, "bottom")
    put(bus, 3, 2, "\u2500")  # CP437 0xC4
    lines = text_screen(capture(dev))
    assert len(lines) == 25
    assert lines[0] == "HI there"
    assert lines[3] == "  \u2500"
    assert lines[24] == " " * 70 + "bottom"


def test_text_glyphs_attributes_and_9_dot_cells() -> None:
    bus, dev = text_machine()
    bus.crtc(0x0A, 0x20)  # cursor off
    put(bus, 0, 0, "H", 0x1E)  # yellow on blue
    put(bus, 0, 1, "\u2500", 0x07)
    frame = render(capture(dev))
    assert (frame.width, frame.height, frame.mode) == (720, 400, "text")
    yellow, blue, grey = (255, 255, c6(21)), (0, 0, c6(42)), (c6(42),) * 3
    for y, bits in enumerate(GLYPH_H):
        row = [pixel(frame, x, y) for x in range(9)]
        assert row == [yellow if bits >> (7 - i) & 1 else blue for i in range(8)] + [blue]
    # 0xC4 with line graphics (AR10 bit 2, set by mode 3): the 9th column repeats the 8th
    assert [pixel(frame, 9 + x, 7) for x in range(9)] == [grey] * 9
    bus.att(0x10, 0x08)  # line graphics off (and blink on)
    frame = render(capture(dev))
    assert pixel(frame, 17, 7) == (0, 0, 0)
    bus.att(0x10, 0x01)  # 8-dot cells through SR01 instead
    bus.seq(1, 0x01)
    frame = render(capture(dev))
    assert frame.width == 640


def test_cursor_shape_position_and_blink() -> None:
    bus, dev = text_machine()
    bus.crtc(0x0A, 0x0E)
    bus.crtc(0x0B, 0x0F)
    pos = 2 * 80 + 5
    bus.crtc(0x0E, pos >> 8)
    bus.crtc(0x0F, pos & 0xFF)
    put(bus, 2, 5, " ", 0x0F)
    frame = render(capture(dev), blink_on=True)
    x0, y0 = 5 * 9, 2 * 16
    assert pixel(frame, x0, y0 + 13) == (0, 0, 0)
    assert pixel(frame, x0, y0 + 14) == (0xFF, 0xFF, 0xFF)
    assert pixel(frame, x0 + 7, y0 + 15) == (0xFF, 0xFF, 0xFF)
    assert pixel(frame, x0, y0 + 14) != pixel(render(capture(dev), blink_on=False), x0, y0 + 14)
    # blinking character: with AR10 bit 3, attribute bit 7 blinks and bg is 3 bits
    bus.att(0x10, 0x0C)
    put(bus, 0, 0, "H", 0x9E)
    on = render(capture(dev), blink_on=True)
    off = render(capture(dev), blink_on=False)
    assert pixel(on, 1, 2) == (255, 255, c6(21))  # fg
    assert pixel(off, 1, 2) == (0, 0, c6(42))  # fg hidden: the background (bit 7 dropped)


def test_mode7_mono_text_at_b0000() -> None:
    m, dev = make(1)
    bus = Bus(m)
    mode7 = dict(MODE3, misc=0x66, gfx=MODE3["gfx"][:6] + [0x0A] + MODE3["gfx"][7:])
    set_mode(bus, mode7)
    for i, ch in enumerate(b"MONO"):
        bus.writeb(0xB0000 + 2 * i, ch)
    assert text_screen(capture(dev))[0] == "MONO"


def test_mode13h_pattern_png_round_trip(tmp_path) -> None:
    m, dev = make(1)
    bus = Bus(m)
    set_mode(bus, MODE13)
    for i in range(256):
        bus.dac(i, (i & 0x3F, (i >> 2) & 0x3F, 63 - (i & 0x3F)))
    for y in range(200):
        for x in range(0, 320, 8):
            bus.writeb(WINDOW + y * 320 + x, int.from_bytes(bytes((x + y + k) & 0xFF
                                                                  for k in range(8)), "little"), 8)
    frame = render(capture(dev))
    assert (frame.width, frame.height, frame.mode) == (320, 200, "256")
    path = tmp_path / "m13.png"
    write_png(str(path), frame.width, frame.height, frame.rgb)
    w, h, rgb = decode_png(path.read_bytes())
    assert (w, h) == (320, 200)

    for x, y in [(0, 0), (319, 0), (17, 100), (319, 199), (200, 55)]:
        i = (x + y) & 0xFF
        o = 3 * (y * 320 + x)
        assert tuple(rgb[o : o + 3]) == (c6(i & 0x3F), c6((i >> 2) & 0x3F), c6(63 - (i & 0x3F)))
    assert rgb == frame.rgb


def test_planar_16_colour_mode12() -> None:
    m, dev = make(1)
    bus = Bus(m)
    set_mode(bus, MODE12)
    load_ega_dac(bus)
    bus.gfx(5, 0x02)  # write mode 2: colour per pixel under the bit mask
    for x in range(16):
        bus.gfx(8, 0x80 >> (x % 8))
        bus.readb(WINDOW + x // 8)  # load latches
        bus.writeb(WINDOW + x // 8, x)
    frame = render(capture(dev))
    assert (frame.width, frame.height, frame.mode) == (640, 480, "planar")
    got = [pixel(frame, x, 0) for x in range(16)]
    expected = [tuple(c6(c) for c in rgb) for rgb in EGA_PALETTE]
    assert got == expected
    bus.att(0x12, 0x01)  # colour plane enable: plane 0 only
    assert pixel(render(capture(dev)), 3, 0) == expected[1]


@pytest.mark.parametrize("bpp,encode", [
    (32, lambda r, g, b: bytes((b, g, r, 0))),
    (24, lambda r, g, b: bytes((b, g, r))),
    (16, lambda r, g, b: ((r >> 3) << 11 | (g >> 2) << 5 | b >> 3).to_bytes(2, "little")),
    (15, lambda r, g, b: ((r >> 3) << 10 | (g >> 3) << 5 | b >> 3).to_bytes(2, "little")),
])
def test_vbe_linear_direct_colour(bpp: int, encode) -> None:
    m, dev = make(4)
    bus = Bus(m)
    bus.vbe(R.VBE_INDEX_XRES, 64)
    bus.vbe(R.VBE_INDEX_YRES, 4)
    bus.vbe(R.VBE_INDEX_BPP, bpp)
    bus.vbe(R.VBE_INDEX_ENABLE, R.VBE_ENABLED | R.VBE_LFB_ENABLED)
    colours = [(0xF8, 0x00, 0x00), (0x00, 0xFC, 0x00), (0x00, 0x00, 0xF8), (0xFF, 0xFF, 0xFF)]
    px = b"".join(encode(*colours[i % 4]) for i in range(64 * 4))
    dev.vram[0 : len(px)] = px
    frame = render(capture(dev))
    assert (frame.width, frame.height) == (64, 4)
    for i in range(8):
        want = colours[i % 4]
        got = pixel(frame, i, 1)
        assert all(abs(a - b) <= 7 for a, b in zip(got, want, strict=True)), (i, got, want)
    assert pixel(frame, 3, 0) == (255, 255, 255)


def test_vbe_8bpp_and_offsets() -> None:
    m, dev = make(4)
    bus = Bus(m)
    bus.dac(7, (63, 0, 0))
    bus.vbe(R.VBE_INDEX_XRES, 16)
    bus.vbe(R.VBE_INDEX_YRES, 4)
    bus.vbe(R.VBE_INDEX_BPP, 8)
    bus.vbe(R.VBE_INDEX_ENABLE, R.VBE_ENABLED)
    bus.vbe(R.VBE_INDEX_VIRT_WIDTH, 32)
    bus.vbe(R.VBE_INDEX_X_OFFSET, 8)
    bus.vbe(R.VBE_INDEX_Y_OFFSET, 1)
    dev.vram[1 * 32 + 8] = 7
    frame = render(capture(dev))
    assert pixel(frame, 0, 0) == (255, 0, 0)
    assert pixel(frame, 1, 0) == (0, 0, 0)


def test_blank_when_palette_source_is_off() -> None:
    bus, dev = text_machine()
    bus.inb(0x3DA)
    bus.outb(0x3C0, 0x00)  # PAS cleared: the screen goes black
    assert render(capture(dev)).mode == "blank"
    assert text_screen(capture(dev))  # the text is still there to read


def test_tile_tracker() -> None:
    bus, dev = text_machine()
    tracker = TileTracker()
    first = render(capture(dev))
    assert tracker.update(first) == [(0, 0, 720, 400)]
    assert tracker.update(render(capture(dev))) == []
    put(bus, 1, 2, "H")  # cell at x 18-26, y 16-31
    dirty = tracker.update(render(capture(dev)))
    assert dirty and all(16 <= y < 32 for _, y, _, _ in dirty)
    assert {x for x, _, _, _ in dirty} <= {16}


def test_png_encoder_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        encode_png(2, 2, b"\0" * 11)
    assert decode_png(encode_png(1, 1, b"\1\2\3")) == (1, 1, b"\1\2\3")
