"""The cached renderers (text cells, planar groups) against a per-pixel reference written from
the hardware rules, on random VRAM, and the bounds of their caches."""

from __future__ import annotations

import random
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from vgahelp import MODE3, MODE12, Bus, load_ega_dac, make, set_mode

from devmodel.vga import capture, render
from devmodel.vga.render import DUP9_FIRST, DUP9_LAST, palette16, text_geometry

RM = sys.modules["devmodel.vga.render"]  # the package exports a function of that name


def reference_text(s, blink_on: bool) -> bytes:
    """Pixel by pixel: character/attribute at 4*cell, glyph lines in plane 2 at 128*code + 4*line
    from the SR03 map base, fg/bg with AR10 blink, the 9th column, the cursor lines."""
    g = text_geometry(s)
    pal = palette16(s)
    mask = s.vram_size - 1
    v = s.sr[3]
    bases = ((((v >> 4) & 1) | ((v << 1) & 6)) * 8192 * 4 + 2,
             (((v >> 5) & 1) | ((v >> 1) & 6)) * 8192 * 4 + 2)
    blink_attr = bool(s.ar[0x10] & 8)
    line_gfx = bool(s.ar[0x10] & 4)
    cs, ce = s.cr[0x0A] & 0x1F, s.cr[0x0B] & 0x1F
    cursor_on = blink_on and not s.cr[0x0A] & 0x20 and cs <= ce
    out = bytearray()
    for r in range(g.rows):
        for y in range(g.cell_h):
            for c in range(g.cols):
                a = (g.start * 4 + r * g.line_offset + 4 * c) & mask
                code, attr = s.vram[a], s.vram[(a + 1) & mask]
                fg, bg = attr & 15, attr >> 4
                if blink_attr:
                    bg &= 7
                    if attr & 0x80 and not blink_on:
                        fg = bg
                bits = s.vram[(bases[(attr >> 3) & 1] + 128 * code + 4 * y) & mask]
                nine = line_gfx and DUP9_FIRST <= code <= DUP9_LAST and bits & 1
                if cursor_on and r * g.cols + c == g.cursor - g.start and cs <= y <= ce:
                    bits, nine = 0xFF, True
                for x in range(g.cell_w):
                    on = bits >> (7 - x) & 1 if x < 8 else nine
                    out += bytes(pal[fg if on else bg])
    return bytes(out)


def reference_planar(s, width: int, height: int, cga: bool) -> bytes:
    pal = palette16(s)
    line = s.cr[0x13] << 3
    enable = s.ar[0x12] & 15
    out = bytearray()
    for y in range(height):
        for x in range(width):
            o = 4 * ((y * line >> 2) + x // 8)
            b = [s.vram[o + p] if enable >> p & 1 else 0 for p in range(4)]
            if cga:  # pixels 0-3 from planes 0/2, 4-7 from planes 1/3, two bits each
                k = x % 8
                lo, hi = (b[0], b[2]) if k < 4 else (b[1], b[3])
                sh = 6 - 2 * (k % 4)
                i = ((lo >> sh) & 3) | (((hi >> sh) & 3) << 2)
            else:
                i = sum((b[p] >> (7 - x % 8) & 1) << p for p in range(4))
            out += bytes(pal[i])
    return bytes(out)


def random_text_machine(seed: int):
    m, dev = make(1)
    bus = Bus(m)
    set_mode(bus, MODE3)
    load_ega_dac(bus)
    rnd = random.Random(seed)
    dev.vram[0 : 1 << 20] = rnd.randbytes(1 << 20)  # characters, attributes and both fonts
    return bus, dev


def test_text_matches_reference_on_random_vram() -> None:
    bus, dev = random_text_machine(1)
    bus.seq(3, 0x05)  # maps A and B differ: attribute bit 3 picks
    pos = 7 * 80 + 33
    bus.crtc(0x0E, pos >> 8)
    bus.crtc(0x0F, pos & 0xFF)
    bus.crtc(0x0A, 0x03)
    bus.crtc(0x0B, 0x09)
    for ar10, blink_on in ((0x0C, True), (0x0C, False), (0x04, False), (0x08, True)):
        bus.att(0x10, ar10)
        s = capture(dev)
        f = render(s, blink_on)
        assert (f.width, f.height) == (720, 400)
        assert f.rgb == reference_text(s, blink_on), (ar10, blink_on)


def test_text_8_dot_cells_short_font_and_start_address() -> None:
    bus, dev = random_text_machine(2)
    bus.seq(1, 0x01)  # 8-dot cells
    bus.crtc(0x09, 0x07)  # 8 scanlines a cell: 50 rows
    bus.crtc(0x0C, 0x01)  # start address 0x123
    bus.crtc(0x0D, 0x23)
    s = capture(dev)
    f = render(s)
    assert (f.width, f.height) == (640, 400)
    assert f.rgb == reference_text(s, True)


def test_font_change_is_seen_by_the_next_frame() -> None:
    bus, dev = random_text_machine(3)
    before = render(capture(dev))
    dev.vram[2 + 128 * dev.vram[0] : 2 + 128 * dev.vram[0] + 64 : 4] = bytes(16)  # cell 0 blank
    s = capture(dev)
    after = render(s)
    assert after.rgb != before.rgb and after.rgb == reference_text(s, True)


def test_planar_and_cga_match_reference_on_random_vram() -> None:
    m, dev = make(1)
    bus = Bus(m)
    set_mode(bus, MODE12)
    load_ega_dac(bus)
    dev.vram[0 : 640 * 480 // 2] = random.Random(4).randbytes(640 * 480 // 2)
    s = capture(dev)
    f = render(s)
    assert (f.width, f.height, f.mode) == (640, 480, "planar")
    assert f.rgb == reference_planar(s, 640, 480, cga=False)
    bus.att(0x12, 0x05)  # planes 1 and 3 disabled
    s = capture(dev)
    assert render(s).rgb == reference_planar(s, 640, 480, cga=False)
    bus.gfx(5, 0x20)  # shift register mode 1: CGA 2 bits a pixel
    s = capture(dev)
    f = render(s)
    assert f.mode == "cga"
    assert f.rgb == reference_planar(s, 640, 480, cga=True)


def test_caches_stay_bounded(monkeypatch) -> None:
    """A guest showing ever new cells and pixel groups costs drawing time, not memory."""
    monkeypatch.setattr(RM, "MAX_CELL_CACHE", 64)
    monkeypatch.setattr(RM, "MAX_GROUP_CACHE", 64)
    RM._cell_caches.clear()
    bus, dev = random_text_machine(5)
    s = capture(dev)
    assert render(s).rgb == reference_text(s, True)
    assert all(len(c) <= 64 for c in RM._cell_caches.values())
    assert len(RM._cell_caches) <= RM.MAX_TEXT_STATES
    for i in range(2 * RM.MAX_TEXT_STATES):  # palette changes: new text states
        bus.dac(i, (i, 0, 0))
        render(capture(dev))
    assert len(RM._cell_caches) <= RM.MAX_TEXT_STATES
    set_mode(bus, MODE12)
    render(capture(dev))
    assert len(RM._PLANAR_GROUPS) <= 64


_FUZZ_VRAM = random.Random(6).randbytes(1 << 20)


@settings(max_examples=25, deadline=None)
@given(regs=st.binary(min_size=8 + 16 + 21 + 256, max_size=8 + 16 + 21 + 256),
       misc=st.integers(0, 255), vbe=st.booleans(), blink=st.booleans(),
       xres=st.integers(0, 0xFFFF), yres=st.integers(0, 0xFFFF),
       bpp=st.sampled_from([0, 4, 8, 15, 16, 24, 32, 0xFFFF]))
def test_any_register_state_renders_a_consistent_frame(regs, misc, vbe, blink, xres, yres,
                                                       bpp) -> None:
    """Catalog 33-35 for the cached renderers: whatever the registers hold, render returns a
    frame whose bytes match its size, within the frame limits, and never raises."""
    s = RM.DisplayState(
        sr=regs[:8], gr=regs[8:24], ar=regs[24:45], cr=regs[45:], ar_index=0x20, misc=misc,
        palette=_FUZZ_VRAM[:768], pel_mask=0xFF, dac_8bit=False, vbe_enabled=vbe,
        vbe_xres=min(max(xres & ~7, 8), RM.MAX_FRAME_WIDTH), vbe_yres=min(max(yres, 1), 1024),
        vbe_bpp=bpp if bpp in (8, 15, 16, 24, 32) else 8, vbe_line_offset=4096,
        vbe_start_addr=0, vram=_FUZZ_VRAM, vram_size=1 << 20)
    f = render(s, blink)
    assert len(f.rgb) == 3 * f.width * f.height
    # (an empty frame is allowed: the screen recorder and VNC show the blank one instead)
    assert 0 <= f.width <= RM.MAX_FRAME_WIDTH and 0 <= f.height <= RM.MAX_FRAME_HEIGHT
