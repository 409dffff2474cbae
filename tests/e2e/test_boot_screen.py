"""The VGA screen of a real boot: SeaBIOS runs the VGA BIOS, the demo boot sector prints its
lines through the VGA BIOS's INT 10h teletype, and the daemon (run by `devmodel boot`) writes
the final screen at exit as PNG (--screendump) and text (--screentext); `devmodel boot` prints
the text screen after the consoles. VRAM is shared with the simulator (the LFB is a daemon
region, docs/protocol.md 4.7).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from devmodel.boot import BootConfig, boot
from devmodel.demo_disk import DONE, GREETING

SEABIOS = Path("/usr/share/seabios")
TIMEOUT = 30.0
MESSAGE = GREETING.strip()

pytestmark = pytest.mark.skipif(
    not ((SEABIOS / "bios-256k.bin").exists() and (SEABIOS / "vgabios-stdvga.bin").exists()),
    reason="SeaBIOS missing (apt-get install seabios)")


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of an 8-bit RGB PNG, decoded with zlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + n)
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack_from(">IIBB", body)
            assert (depth, ctype) == (8, 2)
            size = (w, h)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert size is not None
    raw = zlib.decompress(idat)
    w, h = size
    assert len(raw) == (3 * w + 1) * h
    return w, h, raw


def test_cli_boot_prints_the_vga_screen_and_writes_png_and_text(tmp_path: Path) -> None:
    png, txt = tmp_path / "screen.png", tmp_path / "screen.txt"
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--timeout", str(TIMEOUT),
                        "--screendump", str(png), "--screentext", str(txt)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    vga = [line[len("[vga] "):] for line in p.stdout.splitlines() if line.startswith("[vga] ")]
    assert any(line.startswith(MESSAGE) for line in vga), p.stdout[-2000:]
    # below SeaBIOS's banner, as on a PC: the teletype moved the cursor past the BIOS's lines
    assert vga[0].startswith("SeaBIOS (version") and vga[-1] == DONE.strip(), vga
    # after the consoles: the screen is the last thing on stdout
    assert p.stdout.rstrip().splitlines()[-len(vga):] == [f"[vga] {v}" for v in vga]
    w, h, raw = png_pixels(png.read_bytes())
    assert (w, h) == (720, 400)  # 80x25 cells of 9x16
    assert raw.count(b"\0") < len(raw)  # something is drawn
    assert MESSAGE in txt.read_text()


def test_cli_no_screen_leaves_the_screen_out() -> None:
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--timeout", str(TIMEOUT),
                        "--no-screen"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "[vga]" not in p.stdout and MESSAGE in p.stdout  # the consoles still show it


def test_vram_is_shared_with_the_simulator_during_the_boot() -> None:
    result = boot(BootConfig(bios=str(SEABIOS / "bios-256k.bin"), timeout=TIMEOUT, screen=True,
                             daemon_log_level="info"))
    assert result.outcome == "halted", result.message
    assert result.screen is not None and any(MESSAGE in line for line in result.screen)
    # SeaBIOS maps BAR0 and turns memory decoding on: the daemon shares VRAM there.
    assert "sharing region 0x80000010" in result.daemon_log


def test_cli_vga_none_boots_without_a_screen_and_refuses_screen_files(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--timeout", str(TIMEOUT),
                        "--vga", "none"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "[vga]" not in p.stdout and MESSAGE in p.stdout  # no VGA BIOS, the consoles still work
    assert "PCI: No VGA devices found" in p.stdout and "SeaVGABIOS" not in p.stdout
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--vga", "none",
                        "--screendump", str(tmp_path / "s.png")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "need the VGA" in p.stderr
    assert not (tmp_path / "s.png").exists()
