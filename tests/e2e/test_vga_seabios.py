"""SeaBIOS runs the VGA BIOS (vgabios-stdvga.bin, the standard VGA's ROM BAR) on the simulated
CPU, through the real daemon (in a thread, on a real socket): the SeaBIOS banner it prints
through int 10h ends up in VRAM, the text screen reads it, and the PNG shows it: each cell of
"SeaBIOS" is the VGA BIOS's own 8x16 glyph (as stored in the ROM file) in the cell's colours,
decoded from the PNG by Pillow."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dmsupport import run_until, simulated

from devmodel.backends.display import encode_png
from devmodel.pc import PcOptions, build_pc
from devmodel.vga import capture, render, text_screen
from devmodel.vga.render import palette16, text_geometry

BIOS = Path("/usr/share/seabios/bios-256k.bin")
VGABIOS = Path("/usr/share/seabios/vgabios-stdvga.bin")
RAM = 32 << 20
TIMEOUT = 60.0  # wall seconds

pytestmark = pytest.mark.skipif(not (BIOS.exists() and VGABIOS.exists()),
                                reason="SeaBIOS missing (apt-get install seabios)")


def test_seabios_banner_on_the_vga_text_screen() -> None:
    def factory():
        # build_pc adds the standard VGA (00:03.0 after the Xen platform device) by default.
        return build_pc(PcOptions(virtual_clock=True, bios=str(BIOS), serial=[], memory=RAM))

    with simulated(factory, RAM) as (daemon, hv, sim):
        vga = daemon.machine.device("vga")
        deadline = time.monotonic() + TIMEOUT
        seen: list[str] = []

        def banner(_sim) -> bool:
            if time.monotonic() > deadline:
                return True
            seen[:] = text_screen(capture(vga))
            return any("SeaBIOS (version" in line for line in seen)  # the whole banner line

        stop = run_until(sim, banner)
        hv.barrier()
        lines = text_screen(capture(vga))
        assert any("SeaBIOS (version" in line for line in lines), (stop, lines)
        frame = render(capture(vga))
        assert (frame.width, frame.height, frame.mode) == (720, 400, "text")
        assert any(frame.rgb)  # glyphs from the font the VGA BIOS loaded are drawn
        png = encode_png(frame.width, frame.height, frame.rgb)
        check_banner_pixels(png, capture(vga), lines)


def check_banner_pixels(png: bytes, s, lines: list[str]) -> None:
    """The cells of "SeaBIOS" in the PNG are the ROM font's glyphs, fg on bg, 9 dots wide."""
    import io

    image = pytest.importorskip("PIL.Image", reason="Pillow: pip install -e '.[test]'")
    with image.open(io.BytesIO(png)) as im:
        width, height = im.size
        rgb = im.convert("RGB").tobytes()
    g = text_geometry(s)
    assert (g.cell_w, g.cell_h, width, height) == (9, 16, 720, 400)
    row = next(i for i, line in enumerate(lines) if "SeaBIOS (version" in line)
    col = lines[row].index("SeaBIOS")
    rom = VGABIOS.read_bytes()
    pal = palette16(s)
    font_at = None
    for i, ch in enumerate(b"SeaBIOS"):
        cell = 4 * (g.start + row * (g.line_offset // 4) + col + i)
        assert s.vram[cell] == ch
        attr = s.vram[cell + 1]
        fg, bg = bytes(pal[attr & 0x0F]), bytes(pal[attr >> 4 & 0x07])
        assert fg != bg
        if font_at is None:  # where the VGA BIOS keeps its 8x16 font: find 'S' in the ROM
            glyph = bytes(s.vram[2 + 128 * ch : 2 + 128 * ch + 64 : 4])
            font_at = rom.find(glyph) - 16 * ch
            assert font_at >= 0 and any(glyph), "plane 2 does not hold the ROM's font"
        glyph = rom[font_at + 16 * ch : font_at + 16 * ch + 16]
        for y in range(16):
            o = 3 * ((row * 16 + y) * width + (col + i) * 9)
            want = b"".join(fg if glyph[y] >> (7 - x) & 1 else bg for x in range(8)) + bg
            assert rgb[o : o + 27] == want, (chr(ch), y)
