"""Helpers for the VGA tests: a machine with the VGA, and the register dances a VGA BIOS does,
all through the bus API (Machine.handle_ioreq)."""

from __future__ import annotations

import struct
import zlib

from devmodel.bios.firmware import SharedRegion
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.vga import StdVga, build_vga

READ = 0x21
WRITE = 0x01
PIO, MMIO, PCI = 0, 1, 2
SLOT = 2
DEVFN = SLOT << 3
WINDOW = 0xA0000


class SharingMachine(Machine):
    """A Machine with the proposed share_region/unshare_region effects, recorded."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.shared_log: list[tuple[str, object]] = []

    def share_region(self, region: SharedRegion) -> None:
        self.shared_log.append(("add", region))

    def unshare_region(self, region_id: int) -> None:
        self.shared_log.append(("del", region_id))


def make(vram_mb: int = 16, *, shared: bool = False, rom: bool = False,
         sharing_machine: bool = False) -> tuple[Machine, StdVga]:
    cls = SharingMachine if sharing_machine else Machine
    m = cls(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    vga = build_vga(m, SLOT, vram_mb, rom_path="/usr/share/seabios/vgabios-stdvga.bin" if rom
                    else None, shared=shared)
    return m, vga


class Bus:
    """outb/inb/outw/inw, window and PCI config access on a machine."""

    def __init__(self, m: Machine) -> None:
        self.m = m

    def outb(self, port: int, v: int) -> None:
        self.m.handle_ioreq(PIO, port, v, 1, 1, WRITE)

    def outw(self, port: int, v: int) -> None:
        self.m.handle_ioreq(PIO, port, v, 1, 2, WRITE)

    def inb(self, port: int) -> int:
        return self.m.handle_ioreq(PIO, port, 0, 1, 1, READ)

    def inw(self, port: int) -> int:
        return self.m.handle_ioreq(PIO, port, 0, 1, 2, READ)

    def writeb(self, addr: int, v: int, size: int = 1) -> None:
        self.m.handle_ioreq(MMIO, addr, v, 1, size, WRITE)

    def readb(self, addr: int, size: int = 1) -> int:
        return self.m.handle_ioreq(MMIO, addr, 0, 1, size, READ)

    def cfg_read(self, reg: int, size: int = 4) -> int:
        return self.m.handle_ioreq(PCI, DEVFN << 32 | reg, 0, 1, size, READ)

    def cfg_write(self, reg: int, v: int, size: int = 4) -> None:
        self.m.handle_ioreq(PCI, DEVFN << 32 | reg, v, 1, size, WRITE)

    # ---- register groups -----------------------------------------------------------------
    def seq(self, i: int, v: int) -> None:
        self.outb(0x3C4, i)
        self.outb(0x3C5, v)

    def gfx(self, i: int, v: int) -> None:
        self.outb(0x3CE, i)
        self.outb(0x3CF, v)

    def crtc(self, i: int, v: int) -> None:
        self.outb(0x3D4, i)
        self.outb(0x3D5, v)

    def att(self, i: int, v: int) -> None:
        self.inb(0x3DA)  # flip-flop to index
        self.outb(0x3C0, i | 0x20)  # keep PAS set: the display stays on
        self.outb(0x3C0, v)

    def dac(self, i: int, rgb: tuple[int, int, int]) -> None:
        self.outb(0x3C8, i)
        for c in rgb:
            self.outb(0x3C9, c)

    def vbe(self, i: int, v: int) -> None:
        self.outw(0x1CE, i)
        self.outw(0x1CF, v)

    def vbe_read(self, i: int) -> int:
        self.outw(0x1CE, i)
        return self.inw(0x1CF)

    def palette_on(self) -> None:
        self.inb(0x3DA)
        self.outb(0x3C0, 0x20)  # PAS: the display shows


# Register tables of the standard modes (IBM VGA BIOS values, as SeaVGABIOS's stdvga tables).
MODE3 = dict(
    misc=0x67, seq=[0x03, 0x00, 0x03, 0x00, 0x02],
    crtc=[0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00,
          0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF],
    att=[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D,
         0x3E, 0x3F, 0x0C, 0x00, 0x0F, 0x08, 0x00],
    gfx=[0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x0F, 0xFF])
MODE13 = dict(
    misc=0x63, seq=[0x03, 0x01, 0x0F, 0x00, 0x0E],
    crtc=[0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x40, 0x96, 0xB9, 0xA3, 0xFF],
    att=[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
         0x0E, 0x0F, 0x41, 0x00, 0x0F, 0x00, 0x00],
    gfx=[0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0F, 0xFF])
MODE12 = dict(
    misc=0xE3, seq=[0x03, 0x01, 0x0F, 0x00, 0x06],
    crtc=[0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00,
          0x00, 0x00, 0xEA, 0x8C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF],
    att=[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D,
         0x3E, 0x3F, 0x01, 0x00, 0x0F, 0x00, 0x00],
    gfx=[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF])


def set_mode(bus: Bus, mode: dict) -> None:
    bus.outb(0x3C2, mode["misc"])
    for i, v in enumerate(mode["seq"]):
        bus.seq(i, v)
    bus.crtc(0x11, 0)  # unprotect
    crtc_port = 0x3D4 if mode["misc"] & 1 else 0x3B4
    for i, v in enumerate(mode["crtc"]):
        bus.outb(crtc_port, i)
        bus.outb(crtc_port + 1, v)
    for i, v in enumerate(mode["att"]):
        bus.inb(0x3DA if mode["misc"] & 1 else 0x3BA)
        bus.outb(0x3C0, i)
        bus.outb(0x3C0, v)
    for i, v in enumerate(mode["gfx"]):
        bus.gfx(i, v)
    bus.inb(0x3DA if mode["misc"] & 1 else 0x3BA)
    bus.outb(0x3C0, 0x20)


EGA_PALETTE = [(0, 0, 0), (0, 0, 42), (0, 42, 0), (0, 42, 42), (42, 0, 0), (42, 0, 42),
               (42, 21, 0), (42, 42, 42), (21, 21, 21), (21, 21, 63), (21, 63, 21),
               (21, 63, 63), (63, 21, 21), (63, 21, 63), (63, 63, 21), (63, 63, 63)]


def load_ega_dac(bus: Bus) -> None:
    """DAC entries as the BIOS's 64-colour EGA palette for the AR values of mode 3/12h."""
    ar_values = MODE3["att"][:16]
    for i, v in enumerate(ar_values):
        bus.dac(v, EGA_PALETTE[i])


def load_font(bus: Bus, glyphs: dict[int, list[int]], height: int = 16) -> None:
    """Write glyphs into plane 2 as a VGA BIOS does (sequential planar access), then restore
    text-mode addressing."""
    bus.seq(2, 0x04)  # map mask: plane 2
    bus.seq(4, 0x07)  # sequential, no odd/even
    bus.gfx(4, 0x02)
    bus.gfx(5, 0x00)
    bus.gfx(6, 0x04)  # A0000, 64K
    for ch, rows in glyphs.items():
        for line in range(32):
            bus.writeb(WINDOW + ch * 32 + line, rows[line] if line < len(rows) else 0)
    bus.seq(2, 0x03)
    bus.seq(4, 0x02)
    bus.gfx(4, 0x00)
    bus.gfx(5, 0x10)
    bus.gfx(6, 0x0E)


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB of a PNG from encode_png (8-bit RGB, filter 0 rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    idat = b""
    w = h = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, _ = struct.unpack(">IIBBBBB", body)
            assert (depth, ctype) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = 3 * w
    out = bytearray()
    for y in range(h):
        row = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        assert row[0] == 0
        out += row[1:]
    return w, h, bytes(out)
