"""Rendering: pure functions from VGA state and VRAM to RGB frames and text (no I/O).

`capture(vga)` copies the registers into an immutable `DisplayState` (the validated geometry
hand-off the catalog asks for, entry 40); `render(state)` draws it as QEMU's vga_draw_text /
vga_draw_graphic do, at the mode's logical resolution (mode 13h is 320x200, text is cells
times the glyph size). Every VRAM address is wrapped modulo the VRAM size and every loop is
bounded by the geometry limits below, whatever the registers say (catalog 33-35).
`text_screen(state)` reads the characters of a text mode; `TileTracker` finds the tiles that
changed since the last frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from . import regs as R

MAX_FRAME_WIDTH = 4096  # pixels drawn per line at most; wider modes are clipped
MAX_FRAME_HEIGHT = 4096
MAX_TEXT_COLS = 256
MAX_TEXT_ROWS = 256
TILE = 16
BLANK_SIZE = (640, 480)

MAX_CELL_CACHE = 8192  # drawn text cells kept per text state (a guest cycling attributes
# and characters costs drawing time, never unbounded memory)
MAX_GROUP_CACHE = 1 << 16  # planar 8-pixel groups kept (a full-screen photo costs misses)
MAX_TEXT_STATES = 4  # text states (fonts, palette, geometry, blink phase) with a cell cache
FONT_MAP_BYTES = 256 * 32 * 4  # one character map: 256 glyphs of 32 lines, in plane 2
# The 9th column repeats the 8th for the line-drawing characters when AR10 bit 2 is set
# (QEMU: 0xB0-0xDF).
DUP9_FIRST, DUP9_LAST = 0xB0, 0xDF


@dataclass(frozen=True)
class DisplayState:
    sr: bytes
    gr: bytes
    ar: bytes
    cr: bytes
    ar_index: int
    misc: int
    palette: bytes
    pel_mask: int
    dac_8bit: bool
    vbe_enabled: bool
    vbe_xres: int
    vbe_yres: int
    vbe_bpp: int
    vbe_line_offset: int
    vbe_start_addr: int
    vram: bytes  # a copy (or read-only view) of VRAM
    vram_size: int


@dataclass(frozen=True)
class Frame:
    width: int
    height: int
    rgb: bytes  # width * height * 3
    mode: str  # "text", "planar", "cga", "256", "vbe8", ..., "blank"


def capture(vga, copy_vram: bool = True) -> DisplayState:
    """The display-relevant state of a StdVga, frozen (VRAM copied unless told not to)."""
    r = vga.vbe_regs
    vram = bytes(vga.vram[0 : vga.vram_size]) if copy_vram else vga.vram
    return DisplayState(
        sr=bytes(vga.sr), gr=bytes(vga.gr), ar=bytes(vga.ar), cr=bytes(vga.cr),
        ar_index=vga.ar_index, misc=vga.misc, palette=bytes(vga.palette),
        pel_mask=vga.pel_mask, dac_8bit=bool(vga.dac_8bit), vbe_enabled=vga.vbe_enabled(),
        vbe_xres=r[R.VBE_INDEX_XRES], vbe_yres=r[R.VBE_INDEX_YRES], vbe_bpp=r[R.VBE_INDEX_BPP],
        vbe_line_offset=vga.vbe_line_offset, vbe_start_addr=vga.vbe_start_addr,
        vram=vram, vram_size=vga.vram_size)


# ---- colours ---------------------------------------------------------------------------------
def c6_to_8(v: int) -> int:
    v &= 0x3F
    b = v & 1
    return (v << 2) | (b << 1) | b


def dac_rgb(s: DisplayState, index: int) -> tuple[int, int, int]:
    i = (index & 0xFF) * 3
    r, g, b = s.palette[i], s.palette[i + 1], s.palette[i + 2]
    if s.dac_8bit:
        return r, g, b
    return c6_to_8(r), c6_to_8(g), c6_to_8(b)


def palette256(s: DisplayState) -> list[tuple[int, int, int]]:
    return [dac_rgb(s, i & s.pel_mask) for i in range(256)]


def palette16(s: DisplayState) -> list[tuple[int, int, int]]:
    """The 16 attribute-controller colours through AR14 colour select into the DAC."""
    ar = s.ar
    out = []
    for i in range(16):
        v = ar[i]
        if ar[R.AR_MODE] & 0x80:
            v = ((ar[R.AR_COLOR_SELECT] & 0x0F) << 4) | (v & 0x0F)
        else:
            v = ((ar[R.AR_COLOR_SELECT] & 0x0C) << 4) | (v & 0x3F)
        out.append(dac_rgb(s, v & s.pel_mask))
    return out


def indexed_to_rgb(idx: bytes | bytearray, pal: list[tuple[int, int, int]]) -> bytes:
    """Palette indexes (one byte per pixel) to RGB, channel by channel with translate()."""
    n = len(idx)
    tables = [bytes(c[k] for c in pal) + bytes(256 - len(pal)) for k in range(3)]
    out = bytearray(3 * n)
    for k in range(3):
        out[k::3] = bytes(idx).translate(tables[k])
    return bytes(out)


# ---- geometry --------------------------------------------------------------------------------
def _vde(cr: bytes) -> int:
    """Vertical display end + 1: visible scanlines (10 bits over CR12 and CR07)."""
    return (cr[R.CR_VDISP_END] | ((cr[R.CR_OVERFLOW] & 0x02) << 7)
            | ((cr[R.CR_OVERFLOW] & 0x40) << 3)) + 1


def _line_compare(cr: bytes) -> int:
    return (cr[R.CR_LINE_COMPARE] | ((cr[R.CR_OVERFLOW] & 0x10) << 4)
            | ((cr[R.CR_MAX_SCAN] & 0x40) << 3))


def _start_addr(cr: bytes) -> int:
    return (cr[R.CR_START_HI] << 8) | cr[R.CR_START_LO]


def is_blank(s: DisplayState) -> bool:
    return not s.ar_index & R.AR_PAS or bool(s.sr[R.SR_CLOCK] & R.SR01_SCREEN_OFF)


def is_text(s: DisplayState) -> bool:
    return not s.vbe_enabled and not s.gr[R.GR_MISC] & R.GR06_GRAPHICS


def _read_wrapped(vram: bytes, size: int, addr: int, n: int) -> bytes:
    addr &= size - 1
    if addr + n <= size:
        return bytes(vram[addr : addr + n])
    out = bytearray()
    while len(out) < n:  # bounded: n is at most a clipped line
        take = min(n - len(out), size - addr)
        out += vram[addr : addr + take]
        addr = (addr + take) & (size - 1)
    return bytes(out)


# ---- text mode -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextGeometry:
    cols: int
    rows: int
    cell_w: int  # 8 or 9 dots (doubled with SR01 bit 3 is not drawn; logical cells)
    cell_h: int
    line_offset: int  # VRAM bytes per text row (4 per character: planes interleaved)
    start: int  # character index of the top left
    cursor: int  # character index


def text_geometry(s: DisplayState) -> TextGeometry:
    cr = s.cr
    cell_h = (cr[R.CR_MAX_SCAN] & 0x1F) + 1
    lines = _vde(cr)
    if cr[R.CR_MAX_SCAN] & 0x80:
        lines //= 2
    return TextGeometry(
        cols=min(cr[R.CR_HDISP_END] + 1, MAX_TEXT_COLS),
        rows=min(max(lines // cell_h, 1), MAX_TEXT_ROWS),
        cell_w=8 if s.sr[R.SR_CLOCK] & R.SR01_8DOT else 9,
        cell_h=cell_h,
        line_offset=cr[R.CR_OFFSET] << 3,
        start=_start_addr(cr),
        cursor=(cr[R.CR_CURSOR_HI] << 8) | cr[R.CR_CURSOR_LO],
    )


def text_cells(s: DisplayState) -> list[list[tuple[int, int]]]:
    """(character, attribute) per cell, rows of columns, read as the CRTC does."""
    g = text_geometry(s)
    mask = s.vram_size - 1
    vram = s.vram
    rows = []
    for r in range(g.rows):
        base = g.start * 4 + r * g.line_offset
        row = []
        for c in range(g.cols):
            a = (base + c * 4) & mask
            row.append((vram[a], vram[(a + 1) & mask]))
        rows.append(row)
    return rows


def text_screen(s: DisplayState) -> list[str]:
    """The text screen as strings (CP437 decoded, NUL as space, trailing blanks dropped);
    [] when the display is not in a text mode."""
    if not is_text(s):
        return []
    out = []
    for row in text_cells(s):
        raw = bytes(ch for ch, _ in row).replace(b"\0", b" ")
        out.append(raw.decode("cp437").rstrip())
    return out


def _font_bases(s: DisplayState) -> tuple[int, int]:
    """Plane-2 byte offsets of character maps B (attr bit 3 = 0) and A (QEMU)."""
    v = s.sr[R.SR_CHARMAP]
    b = (((v >> 4) & 1) | ((v << 1) & 6)) * 8192 * 4 + 2
    a = (((v >> 5) & 1) | ((v >> 1) & 6)) * 8192 * 4 + 2
    return b, a


class _CellCache(dict):
    """(character | attribute << 8) -> the cell's scanlines as RGB bytes, for one text state
    (fonts, palette, cell size, attribute mode bits, blink phase). Misses are drawn here, so
    a frame is a C-level map over the character cells. Bounded: MAX_CELL_CACHE entries."""

    def __init__(self, fonts: tuple[bytes, bytes], pal: list[bytes], cw: int, ch_h: int,
                 line_gfx: bool, blink_attr: bool, blink_on: bool) -> None:
        super().__init__()
        self.fonts = fonts
        self.pal = pal
        self.cw = cw
        self.ch_h = ch_h
        self.line_gfx = line_gfx
        self.blink_attr = blink_attr
        self.blink_on = blink_on
        self._runs: dict[int, list[bytes]] = {}  # at most 256 colour pairs

    def colours(self, attr: int) -> tuple[int, int]:
        fg, bg = attr & 0x0F, attr >> 4
        if self.blink_attr:  # AR10 bit 3: attribute bit 7 blinks, the background has 3 bits
            bg &= 0x07
            if attr & 0x80 and not self.blink_on:
                fg = bg
        return fg, bg

    def _nibbles(self, fg: int, bg: int) -> list[bytes]:
        """The 16 four-dot RGB runs of a colour pair (a scanline is two of them)."""
        t = self._runs.get(fg | bg << 4)
        if t is None:
            f, b = self.pal[fg], self.pal[bg]
            t = self._runs[fg | bg << 4] = [b"".join(f if n >> (3 - i) & 1 else b for i in range(4))
                                             for n in range(16)]
        return t

    def __missing__(self, key: int) -> tuple[bytes, ...]:
        code, attr = key & 0xFF, key >> 8
        fg, bg = self.colours(attr)
        font = self.fonts[(attr >> 3) & 1]
        g = 32 * code
        t = self._nibbles(fg, bg)
        if self.cw == 8:
            cell = tuple(t[bits >> 4] + t[bits & 15] for bits in font[g : g + self.ch_h])
        else:  # the 9th column: background, or the 8th dot for line graphics (0xB0-0xDF)
            f, b = self.pal[fg], self.pal[bg]
            dup9 = self.line_gfx and DUP9_FIRST <= code <= DUP9_LAST
            cell = tuple(t[bits >> 4] + t[bits & 15] + (f if dup9 and bits & 1 else b)
                         for bits in font[g : g + self.ch_h])
        if len(self) >= MAX_CELL_CACHE:
            self.clear()
        self[key] = cell
        return cell


# The cell caches of the last few text states (fonts, palette, geometry, blink phase): the
# VNC server and the screen recorder alternate blink phases, so two or more stay useful.
_cell_caches: dict[tuple, _CellCache] = {}


def _cell_cache(key: tuple, fonts: tuple[bytes, bytes], pal: list[bytes], cw: int, ch_h: int,
                line_gfx: bool, blink_attr: bool, blink_on: bool) -> _CellCache:
    cache = _cell_caches.get(key)
    if cache is None:
        if len(_cell_caches) >= MAX_TEXT_STATES:
            _cell_caches.pop(next(iter(_cell_caches)))
        cache = _cell_caches[key] = _CellCache(fonts, pal, cw, ch_h, line_gfx, blink_attr, blink_on)
    return cache


def render_text(s: DisplayState, blink_on: bool = True) -> Frame:
    """Text mode as QEMU's vga_draw_text draws it. Each distinct (character, attribute) cell
    is drawn once into RGB scanlines and kept (_CellCache, keyed by the fonts' bytes in
    plane 2, so a font change starts a new cache); a frame is then a lookup per cell and one
    bytes join per scanline, about 1 ms for 80x25 instead of tens of ms pixel by pixel."""
    g = text_geometry(s)
    pal = [bytes(c) for c in palette16(s)]
    size = s.vram_size
    vram = s.vram
    fb, fa = _font_bases(s)
    font_b = _read_wrapped(vram, size, fb, FONT_MAP_BYTES)[0::4]  # plane 2 only
    font_a = font_b if fa == fb else _read_wrapped(vram, size, fa, FONT_MAP_BYTES)[0::4]
    line_gfx = bool(s.ar[R.AR_MODE] & 0x04)
    blink_attr = bool(s.ar[R.AR_MODE] & 0x08)
    cr = s.cr
    cur_start, cur_end = cr[R.CR_CURSOR_START] & 0x1F, cr[R.CR_CURSOR_END] & 0x1F
    cursor_on = blink_on and not cr[R.CR_CURSOR_START] & 0x20 and cur_start <= cur_end
    cursor_cell = g.cursor - g.start
    cw, ch_h = g.cell_w, g.cell_h
    cols = min(g.cols * cw, MAX_FRAME_WIDTH) // cw
    rows = min(g.rows * ch_h, MAX_FRAME_HEIGHT) // ch_h
    key = (font_b, font_a, b"".join(pal), cw, ch_h, line_gfx, blink_attr,
           blink_on or not blink_attr)
    cache = _cell_cache(key, (font_b, font_a), pal, cw, ch_h, line_gfx, blink_attr, blink_on)
    lookup = cache.__getitem__
    # Cell keys character | attribute << 8 as native 16-bit integers, from the plane 0/1
    # bytes of each 4-byte VRAM group (odd/even text: plane 0 characters, plane 1 attributes).
    lo, hi = (0, 1) if sys.byteorder == "little" else (1, 0)
    keys = bytearray(2 * cols)
    lines: list[bytes] = []
    for r in range(rows):
        row = _read_wrapped(vram, size, g.start * 4 + r * g.line_offset, 4 * cols)
        keys[lo::2] = row[0::4]
        keys[hi::2] = row[1::4]
        cells = list(map(lookup, memoryview(keys).cast("H")))
        c = cursor_cell - r * g.cols
        if cursor_on and 0 <= c < cols:
            code, attr = row[4 * c], row[4 * c + 1]
            fg, _ = cache.colours(attr)
            bar = pal[fg] * cw  # the cursor lines: every dot, the 9th too, in the foreground
            cells[c] = tuple(bar if cur_start <= y <= cur_end else line
                             for y, line in enumerate(cache[code | attr << 8]))
        lines.extend(map(b"".join, zip(*cells, strict=True)))
    return Frame(cols * cw, rows * ch_h, b"".join(lines), "text")


# ---- graphics modes --------------------------------------------------------------------------
def _expand_tables() -> list[list[int]]:
    """EXPAND[p][byte]: 8 pixels (MSB first) as a 64-bit big-endian int, bit p set per pixel."""
    tabs = []
    for p in range(4):
        tab = []
        for b in range(256):
            v = 0
            for i in range(8):
                if b >> (7 - i) & 1:
                    v |= (1 << p) << (8 * (7 - i))
            tab.append(v)
        tabs.append(tab)
    return tabs


EXPAND = _expand_tables()


def _graphic_rows(s: DisplayState, bytes_per_row: int, height: int, multi_scan: int) -> list[bytes]:
    """The VRAM bytes of each drawn row, addressing as QEMU's vga_draw_graphic: start
    address, line offset, CGA/Hercules address bit substitution (CR17 bits 0-1), line
    compare (split screen) and scan doubling, wrapped modulo VRAM."""
    cr = s.cr
    line_offset = cr[R.CR_OFFSET] << 3
    line_compare = _line_compare(cr)
    addr1 = _start_addr(cr) * 4
    y1 = 0
    multi_run = multi_scan
    rows: list[bytes] = []
    first = True
    for y in range(_vde(cr)):  # at most 1024 scanlines
        if len(rows) >= height:
            break
        addr = addr1
        if not cr[R.CR_MODE] & 1:
            addr = (addr & ~(1 << 15)) | ((y1 & 1) << 15)
        if not cr[R.CR_MODE] & 2:
            addr = (addr & ~(1 << 16)) | ((y1 & 2) << 15)
        if first:
            rows.append(_read_wrapped(s.vram, s.vram_size, addr, bytes_per_row))
        if multi_run == 0:
            m = (cr[R.CR_MODE] & 3) ^ 3
            if (y1 & m) == m:
                addr1 += line_offset
            y1 += 1
            multi_run = multi_scan
            first = True
        else:
            multi_run -= 1
            first = False
        if y == line_compare:
            addr1 = 0
    return rows


def render_graphic(s: DisplayState) -> Frame:
    cr = s.cr
    shift = (s.gr[R.GR_MODE] >> 5) & 3
    double_scan = cr[R.CR_MAX_SCAN] >> 7
    if shift != 1:
        multi_scan = (((cr[R.CR_MAX_SCAN] & 0x1F) + 1) << double_scan) - 1
    else:
        multi_scan = double_scan  # CGA modes ignore the max scan line (QEMU)
    height = min(_vde(cr) // (multi_scan + 1), MAX_FRAME_HEIGHT)
    if shift >= 2:  # 256 colours, one byte per pixel (chain-4)
        width = min((cr[R.CR_HDISP_END] + 1) * 4, MAX_FRAME_WIDTH)
        rows = _graphic_rows(s, width, height, multi_scan)
        idx = b"".join(rows)
        return Frame(width, len(rows), indexed_to_rgb(idx, palette256(s)), "256")
    width = min((cr[R.CR_HDISP_END] + 1) * 8, MAX_FRAME_WIDTH) & ~7
    groups = width // 8
    rows = _graphic_rows(s, groups * 4, height, multi_scan)
    data = bytearray(b"".join(rows))
    plane_mask = s.ar[R.AR_PLANE_ENABLE] & 0x0F
    for p in range(4):  # AR12: a disabled plane contributes 0 bits
        if not plane_mask >> p & 1:
            data[p::4] = bytes(len(data) // 4)
    # Each 4-byte group (planes 0-3 of 8 pixels) is one native 32-bit key: a C-level map
    # over the groups through a memo of their 8 palette indexes.
    cache = _CGA_GROUPS if shift == 1 else _PLANAR_GROUPS
    idx = b"".join(map(cache.__getitem__, memoryview(data).cast("I")))
    return Frame(width, len(rows), indexed_to_rgb(idx, palette16(s)),
                 "planar" if shift == 0 else "cga")


class _GroupCache(dict):
    """32-bit VRAM group -> the 8 palette indexes it shows, computed on a miss (QEMU's
    vga_draw_line4 / line2 rules) and kept; at most MAX_GROUP_CACHE entries."""

    def __init__(self, cga: bool) -> None:
        super().__init__()
        self.cga = cga

    def __missing__(self, key: int) -> bytes:
        b0, b1, b2, b3 = key.to_bytes(4, sys.byteorder)
        if not self.cga:
            px = (EXPAND[0][b0] | EXPAND[1][b1] | EXPAND[2][b2] | EXPAND[3][b3]).to_bytes(8, "big")
        else:  # CGA 2 bpp: planes 0/1 hold pixels, planes 2/3 the high bits (QEMU)
            out = []
            for lo, hi in ((b0, b2), (b1, b3)):
                for k in range(4):
                    sh = 6 - 2 * k
                    out.append(((lo >> sh) & 3) | (((hi >> sh) & 3) << 2))
            px = bytes(out)
        if len(self) >= MAX_GROUP_CACHE:
            self.clear()
        self[key] = px
        return px


_PLANAR_GROUPS = _GroupCache(cga=False)
_CGA_GROUPS = _GroupCache(cga=True)


def render_vbe(s: DisplayState) -> Frame:
    bpp = s.vbe_bpp
    bytespp = (bpp + 7) // 8
    width = min(s.vbe_xres, MAX_FRAME_WIDTH)
    height = min(s.vbe_yres, MAX_FRAME_HEIGHT)
    rows = [_read_wrapped(s.vram, s.vram_size, s.vbe_start_addr + y * s.vbe_line_offset,
                          width * bytespp) for y in range(height)]
    data = b"".join(rows)
    n = width * height
    if bpp == 8:
        return Frame(width, height, indexed_to_rgb(data, palette256(s)), "vbe8")
    out = bytearray(3 * n)
    if bpp == 32:
        out[0::3], out[1::3], out[2::3] = data[2::4], data[1::4], data[0::4]
    elif bpp == 24:
        out[0::3], out[1::3], out[2::3] = data[2::3], data[1::3], data[0::3]
    else:
        lo, hi = data[0::2], data[1::2]
        if bpp == 16:  # RGB565
            r5 = hi.translate(_T_HI_R565)
            g6 = _lane_or(hi.translate(_T_HI_G565), lo.translate(_T_LO_G))
        else:  # 15: XRGB1555
            r5 = hi.translate(_T_HI_R555)
            g6 = _lane_or(hi.translate(_T_HI_G555), lo.translate(_T_LO_G))
        b5 = lo.translate(_T_LO_B)
        out[0::3] = r5.translate(_T_5TO8)
        out[1::3] = g6.translate(_T_6TO8 if bpp == 16 else _T_5TO8)
        out[2::3] = b5.translate(_T_5TO8)
    return Frame(width, height, bytes(out), f"vbe{bpp}")


def _lane_or(a: bytes, b: bytes) -> bytes:
    """Byte-wise OR of two equal-length byte strings with disjoint bits (one big-int op)."""
    n = len(a)
    return (int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(n, "big")


def _table(fn) -> bytes:
    return bytes(fn(i) & 0xFF for i in range(256))


_T_HI_R565 = _table(lambda h: h >> 3)
_T_HI_G565 = _table(lambda h: (h & 7) << 3)
_T_HI_R555 = _table(lambda h: (h >> 2) & 0x1F)
_T_HI_G555 = _table(lambda h: (h & 3) << 3)
_T_LO_G = _table(lambda lo: lo >> 5)
_T_LO_B = _table(lambda lo: lo & 0x1F)
_T_5TO8 = _table(lambda v: ((v & 0x1F) << 3) | ((v & 0x1F) >> 2))
_T_6TO8 = _table(lambda v: ((v & 0x3F) << 2) | ((v & 0x3F) >> 4))


def render(s: DisplayState, blink_on: bool = True) -> Frame:
    """The frame the monitor shows. Never raises on register contents: a drawing problem
    costs a black frame, not the daemon (catalog 34)."""
    try:
        if s.vbe_enabled:
            return render_vbe(s)
        if is_blank(s):
            return blank_frame(s)
        if is_text(s):
            return render_text(s, blink_on)
        return render_graphic(s)
    except (IndexError, ValueError, ZeroDivisionError):
        return blank_frame(s)


def blank_frame(s: DisplayState | None = None) -> Frame:
    w, h = BLANK_SIZE
    return Frame(w, h, bytes(3 * w * h), "blank")


# ---- dirty tracking --------------------------------------------------------------------------
class TileTracker:
    """Compares each frame with a shadow copy of the last one in TILE x TILE tiles."""

    def __init__(self, tile: int = TILE) -> None:
        self.tile = tile
        self.shadow: Frame | None = None

    def update(self, frame: Frame) -> list[tuple[int, int, int, int]]:
        """Rectangles (x, y, w, h) that changed; the whole frame on a size change."""
        old = self.shadow
        self.shadow = frame
        if old is None or (old.width, old.height) != (frame.width, frame.height):
            return [(0, 0, frame.width, frame.height)] if frame.width and frame.height else []
        t = self.tile
        w, h = frame.width, frame.height
        stride = 3 * w
        a_rgb, b_rgb = old.rgb, frame.rgb
        dirty = []
        for ty in range(0, h, t):
            th = min(t, h - ty)
            band = slice(ty * stride, (ty + th) * stride)
            if a_rgb[band] == b_rgb[band]:  # most of a frame: one compare per tile row
                continue
            cols = -(-w // t)
            hit = bytearray(cols)
            for y in range(ty, ty + th):
                a = y * stride
                if a_rgb[a : a + stride] == b_rgb[a : a + stride]:
                    continue
                for tx in range(cols):
                    if not hit[tx]:
                        o = a + 3 * t * tx
                        n = 3 * min(t, w - t * tx)
                        if a_rgb[o : o + n] != b_rgb[o : o + n]:
                            hit[tx] = 1
                if all(hit):
                    break
            dirty.extend((t * tx, ty, min(t, w - t * tx), th) for tx in range(cols) if hit[tx])
        return dirty
