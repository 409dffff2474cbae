"""The rate-limited screen renderer (devmodel.backends.screen): renders on a loop timer at most
rate_hz times a second and only when something shown changed, tracks dirty tiles, keeps the
latest frame for screendump, and writes --screendump/--screentext at close."""

from __future__ import annotations

import asyncio

import pytest
from vgahelp import MODE3, Bus, decode_png, load_ega_dac, make, set_mode

from devmodel.backends.screen import ScreenRecorder, build_screen


def text_machine():
    m, vga = make(4, shared=True)
    bus = Bus(m)
    set_mode(bus, MODE3)
    load_ega_dac(bus)
    for i, ch in enumerate(b"HELLO"):
        bus.writeb(0xB8000 + 2 * i, 0x0700 | ch, 2)
    return m, vga, bus


def test_renders_at_most_rate_hz_and_only_on_change(tmp_path) -> None:
    m, vga, bus = text_machine()
    rec = ScreenRecorder(vga, rate_hz=50)

    async def main() -> None:
        rec.attach(asyncio.get_running_loop())
        await asyncio.sleep(0.3)
        renders_idle = rec.renders
        bus.writeb(0xB8000 + 2 * 79, 0x7000 | ord("Z"), 2)  # top right cell, grey background
        await asyncio.sleep(0.1)
        rec.close()
        assert renders_idle == 1  # the first tick rendered; nothing changed after
        assert rec.renders == 2

    asyncio.run(main())
    assert rec.ticks <= 0.4 * 50 + 2  # bounded by the rate
    assert rec.text[0].startswith("HELLO") and rec.text[0].endswith("Z")
    dirty = rec.take_dirty()
    assert dirty[0] == (0, 0, 720, 400)  # the first frame: all of it
    assert dirty[1:] and all(x >= 79 * 9 - 16 and y == 0 for x, y, _w, _h in dirty[1:])
    assert rec.take_dirty() == []


def test_files_are_written_at_close_and_screendump_uses_the_renderer(tmp_path) -> None:
    m, vga, bus = text_machine()
    png, txt = tmp_path / "s.png", tmp_path / "s.txt"
    rec = build_screen(m, rate_hz=0, screendump=str(png), screentext=str(txt))
    assert rec is not None and vga.renderer is rec and rec in m.backends
    assert png.exists() and png.read_bytes() == b""  # opened at set-up, written at exit
    assert vga.screendump("ppm").startswith(b"P6\n720 400\n255\n")
    w, h, _rgb = decode_png(vga.screendump("png"))
    assert (w, h) == (720, 400)
    m.close_backends()  # what the daemon does at exit
    assert txt.read_text().splitlines()[0] == "HELLO"
    w, h, _rgb = decode_png(png.read_bytes())
    assert (w, h) == (720, 400)


def test_outputs_need_a_vga_and_a_writable_path(tmp_path) -> None:
    from devmodel.core.clock import Clock
    from devmodel.core.machine import Machine
    from devmodel.core.memory import GuestMemory

    bare = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True))
    assert build_screen(bare) is None
    with pytest.raises(ValueError, match="VGA"):
        build_screen(bare, screendump=str(tmp_path / "x.png"))
    m, _vga = make(1)
    with pytest.raises(ValueError, match="screendump"):
        build_screen(m, screendump=str(tmp_path / "no" / "such" / "x.png"))
    with pytest.raises(ValueError):
        build_screen(m, rate_hz=1000)
