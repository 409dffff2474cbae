"""Display outputs: PNG encoding with zlib and struct (no Pillow needed) and the text dump.

Frames come from devmodel.vga.render as packed RGB bytes; writing files happens here, never
in a device."""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_DIMENSION = 1 << 16


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, rgb: bytes, level: int = 6) -> bytes:
    """An 8-bit truecolour PNG of `rgb` (width * height * 3 bytes, rows top to bottom)."""
    if not (0 < width < MAX_PNG_DIMENSION and 0 < height < MAX_PNG_DIMENSION):
        raise ValueError(f"PNG size {width}x{height} out of range")
    stride = 3 * width
    if len(rgb) != stride * height:
        raise ValueError(f"{len(rgb)} bytes of RGB for {width}x{height}")
    raw = bytearray((stride + 1) * height)  # filter type 0 (None) per row
    for y in range(height):
        o = y * (stride + 1)
        raw[o + 1 : o + 1 + stride] = rgb[y * stride : (y + 1) * stride]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(raw), level))
            + _chunk(b"IEND", b""))


def write_png(path: str, width: int, height: int, rgb: bytes) -> None:
    data = encode_png(width, height, rgb)
    with open(path, "wb") as f:
        f.write(data)


def encode_text(lines: list[str]) -> bytes:
    """The text dump: one line per screen row, each ended by a newline (nothing if empty)."""
    return ("\n".join(lines) + ("\n" if lines else "")).encode()
