"""The VNC server (devmodel.backends.vnc) against an RFB client written here on an asyncio
socket: handshake, security None and VNC authentication, ServerInit, Raw/ZLIB/ZRLE updates
whose pixels match render(capture(vga)) of what the guest wrote through the bus, incremental
updates of the dirty tiles only, pixel formats, DesktopSize on a mode change, key and pointer
events reaching the i8042 and the USB tablet, and a client that never reads staying bounded."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import zlib

import pytest

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _d in ("vga", "usb"):
    if os.path.join(_TESTS, _d) not in sys.path:
        sys.path.insert(0, os.path.join(_TESTS, _d))

from uhci_driver import UhciDriver  # noqa: E402
from vgahelp import WINDOW, Bus, make  # noqa: E402

from devmodel.backends import vnc as V  # noqa: E402
from devmodel.backends.vncauth import des_encrypt_block, vnc_key, vnc_response  # noqa: E402
from devmodel.bios.i8042 import I8042  # noqa: E402
from devmodel.input import router_for  # noqa: E402
from devmodel.usb import UsbTablet  # noqa: E402
from devmodel.vga import build_vga, capture, render  # noqa: E402
from devmodel.vga import regs as R  # noqa: E402

READ = 0x21


# ---- the guest side -------------------------------------------------------------------------------
def vbe_mode(bus: Bus, x: int, y: int, bpp: int = 32) -> None:
    bus.vbe(R.VBE_INDEX_ENABLE, 0)
    bus.vbe(R.VBE_INDEX_XRES, x)
    bus.vbe(R.VBE_INDEX_YRES, y)
    bus.vbe(R.VBE_INDEX_BPP, bpp)
    bus.vbe(R.VBE_INDEX_ENABLE, R.VBE_ENABLED)


def put_pixel(bus: Bus, w: int, x: int, y: int, rgb: tuple[int, int, int]) -> None:
    """A 32 bpp pixel through the banked VBE window at 0xA0000 (bank 0)."""
    r, g, b = rgb
    bus.writeb(WINDOW + 4 * (y * w + x), (r << 16) | (g << 8) | b, size=4)


def pattern(bus: Bus, w: int, h: int) -> None:
    for y in range(h):
        for x in range(w):
            put_pixel(bus, w, x, y, ((x * 4) & 0xFF, (y * 5) & 0xFF, (x ^ y) * 3 & 0xFF))


def expected_rgb(vga) -> tuple[int, int, bytes]:
    f = render(capture(vga))
    return f.width, f.height, f.rgb


class Env:
    def __init__(self, machine, vga, tmp_path, **kw) -> None:
        self.m = machine
        self.vga = vga
        self.bus = Bus(machine)
        self.path = str(tmp_path / "vnc.sock")
        spec = V.parse_vnc_spec(f"unix:{self.path}" + (",password" if kw.pop("auth", False) else ""))
        listener = V.open_listener(spec)
        kw.setdefault("blink", False)
        kw.setdefault("rate_hz", 200)
        self.inputs = 0
        self.server = V.VncServer(listener, spec, vga, router_for(machine), **kw)
        machine.backends.append(self.server)

    def start(self) -> None:
        self.server.attach(asyncio.get_running_loop(), self._on_input)

    def _on_input(self) -> None:
        self.inputs += 1

    def close(self) -> None:
        self.server.close()


def make_env(tmp_path, **kw) -> Env:
    m, vga = make(4)
    m.add(I8042())
    return Env(m, vga, tmp_path, **kw)


def make_tablet_env(tmp_path, **kw) -> tuple[Env, UhciDriver, UsbTablet]:
    tablet = UsbTablet()
    d = UhciDriver([tablet])
    d.reset_port(0)
    d.enumerate(1)  # the guest configures the tablet: the router sends it absolute positions
    vga = build_vga(d.m, 2, 4, rom_path=None, shared=False)
    d.m.add(I8042())
    return Env(d.m, vga, tmp_path, **kw), d, tablet


# ---- the RFB client -------------------------------------------------------------------------------
def decode_pixels(data: bytes, pf: dict) -> list[tuple[int, int, int]]:
    """Client pixels back to 8-bit RGB (scaled as the client would)."""
    n = pf["bpp"] // 8
    order = "big" if pf["be"] else "little"
    out = []
    for i in range(0, len(data), n):
        v = int.from_bytes(data[i : i + n], order)
        out.append(tuple(((v >> pf[c + "s"]) & pf[c + "m"]) for c in "rgb"))
    return out


def scale_down(rgb: bytes, pf: dict) -> list[tuple[int, int, int]]:
    return [tuple((rgb[i + k] * pf[c + "m"] + 127) // 255 for k, c in enumerate("rgb"))
            for i in range(0, len(rgb), 3)]


PF32 = dict(bpp=32, depth=24, be=0, tc=1, rm=255, gm=255, bm=255, rs=16, gs=8, bs=0)
PF16 = dict(bpp=16, depth=16, be=0, tc=1, rm=31, gm=63, bm=31, rs=11, gs=5, bs=0)
PF32BE = dict(bpp=32, depth=24, be=1, tc=1, rm=255, gm=255, bm=255, rs=0, gs=8, bs=16)


class Rfb:
    def __init__(self) -> None:
        self.pf = dict(PF32)
        self.zlib = zlib.decompressobj()
        self.zrle = zlib.decompressobj()
        self.fb: dict[tuple[int, int], tuple[int, int, int]] = {}

    async def connect(self, path: str) -> None:
        self.r, self.w = await asyncio.open_unix_connection(path)

    async def read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.r.readexactly(n), 5)

    async def handshake(self, password: bytes | None = None, shared: bool = True,
                        version: bytes = b"RFB 003.008\n") -> None:
        assert await self.read(12) == b"RFB 003.008\n"
        self.w.write(version)
        if version == b"RFB 003.003\n":
            (sec,) = struct.unpack(">I", await self.read(4))
        else:
            (n,) = await self.read(1)
            types = await self.read(n)
            assert len(types) == 1
            sec = types[0]
            self.w.write(bytes((sec,)))
        self.security = sec
        if sec == V.SEC_VNC:
            challenge = await self.read(16)
            self.w.write(vnc_response(password or b"", challenge))
        if sec == V.SEC_VNC or version == b"RFB 003.008\n":
            (result,) = struct.unpack(">I", await self.read(4))
            if result:
                (n,) = struct.unpack(">I", await self.read(4))
                raise PermissionError((await self.read(n)).decode())
        self.w.write(bytes((1 if shared else 0,)))
        w, h = struct.unpack(">HH", await self.read(4))
        pf = struct.unpack(">BBBBHHHBBB3x", await self.read(16))
        (n,) = struct.unpack(">I", await self.read(4))
        self.name = await self.read(n)
        self.width, self.height, self.server_pf = w, h, pf

    def set_pixel_format(self, pf: dict) -> None:
        self.pf = dict(pf)
        self.w.write(b"\x00\x00\x00\x00" + struct.pack(
            ">BBBBHHHBBB3x", pf["bpp"], pf["depth"], pf["be"], pf["tc"], pf["rm"], pf["gm"],
            pf["bm"], pf["rs"], pf["gs"], pf["bs"]))

    def set_encodings(self, encs: list[int]) -> None:
        self.w.write(struct.pack(f">BxH{len(encs)}i", 2, len(encs), *encs))

    def request(self, incremental: bool, x: int = 0, y: int = 0, w: int | None = None,
                h: int | None = None) -> None:
        self.w.write(struct.pack(">BBHHHH", 3, int(incremental), x, y,
                                 self.width if w is None else w, self.height if h is None else h))

    def key(self, down: bool, sym: int) -> None:
        self.w.write(struct.pack(">BBxxI", 4, int(down), sym))

    def pointer(self, mask: int, x: int, y: int) -> None:
        self.w.write(struct.pack(">BBHH", 5, mask, x, y))

    async def update(self) -> list[tuple[int, int, int, int, int]]:
        """One FramebufferUpdate: rectangles (x, y, w, h, encoding), pixels into self.fb."""
        (mtype,) = await self.read(1)
        assert mtype == 0, f"message type {mtype}"
        (n,) = struct.unpack(">xH", await self.read(3))
        rects = []
        bpp = self.pf["bpp"] // 8
        for _ in range(n):
            x, y, w, h, enc = struct.unpack(">HHHHi", await self.read(12))
            rects.append((x, y, w, h, enc))
            if enc == V.ENC_RAW:
                data = await self.read(w * h * bpp)
            elif enc == V.ENC_ZLIB:
                (ln,) = struct.unpack(">I", await self.read(4))
                data = self.zlib.decompress(await self.read(ln))
            elif enc == V.ENC_ZRLE:
                (ln,) = struct.unpack(">I", await self.read(4))
                data = self._zrle(self.zrle.decompress(await self.read(ln)), w, h)
            elif enc == V.ENC_DESKTOP_SIZE:
                self.width, self.height = w, h
                continue
            else:
                continue  # pseudo-encodings without data
            assert len(data) == w * h * bpp
            px = decode_pixels(data, self.pf)
            for j in range(h):
                for i in range(w):
                    self.fb[(x + i, y + j)] = px[j * w + i]
        return rects

    def _zrle(self, data: bytes, w: int, h: int) -> bytes:
        """Decode ZRLE tiles (raw and solid subencodings; CPIXEL = 3 bytes in 32 bpp)."""
        cp = 3 if self.pf["bpp"] == 32 else self.pf["bpp"] // 8
        full = self.pf["bpp"] // 8
        out = bytearray(w * h * full)
        pos = 0
        for ty in range(0, h, 64):
            th = min(64, h - ty)
            for tx in range(0, w, 64):
                tw = min(64, w - tx)
                sub = data[pos]
                pos += 1
                if sub == 1:
                    tile = data[pos : pos + cp] * (tw * th)
                    pos += cp
                else:
                    assert sub == 0, f"subencoding {sub}"
                    tile = data[pos : pos + cp * tw * th]
                    pos += cp * tw * th
                for j in range(th):
                    for i in range(tw):
                        c = tile[(j * tw + i) * cp : (j * tw + i + 1) * cp]
                        if cp != full:
                            c = c + b"\x00" if not self.pf["be"] else b"\x00" + c
                        o = ((ty + j) * w + tx + i) * full
                        out[o : o + full] = c
        assert pos == len(data)
        return bytes(out)

    def screen(self) -> list[tuple[int, int, int]]:
        return [self.fb.get((x, y)) for y in range(self.height) for x in range(self.width)]

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except OSError:
            pass


async def connected(env: Env, **kw) -> Rfb:
    c = Rfb()
    await c.connect(env.path)
    await c.handshake(**kw)
    return c


async def until(pred, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


# ---- tests ------------------------------------------------------------------------------------------
def test_parse_vnc_spec() -> None:
    s = V.parse_vnc_spec(":1")
    assert (s.family, s.host, s.port, s.password) == ("ipv4", "127.0.0.1", 5901, False)
    s = V.parse_vnc_spec("0.0.0.0:3,password,to=9")
    assert (s.host, s.display, s.to_display, s.password) == ("0.0.0.0", 3, 9, True)
    assert V.parse_vnc_spec("[::1]:0").family == "ipv6"
    assert V.parse_vnc_spec("unix:/run/x.sock").host == "/run/x.sock"
    for bad in ("5900", "host:x", "unix:", ":1,bogus", ":5,to=2", ":70000"):
        with pytest.raises(ValueError):
            V.parse_vnc_spec(bad)


def test_vnc_auth_des_known_answers() -> None:
    """The DES under VNC authentication (vncauth's own, the only one) against the textbook
    FIPS 46 example, and the VNC key: password bytes bit-reversed, zero padded to 8."""
    key, plain = bytes.fromhex("133457799BBCDFF1"), bytes.fromhex("0123456789ABCDEF")
    assert des_encrypt_block(key, plain) == bytes.fromhex("85E813540F0AB405")
    assert vnc_key(b"\x01\x80\x0f") == b"\x80\x01\xf0" + bytes(5)
    assert vnc_key(b"123456789") == vnc_key(b"12345678")
    challenge = bytes(range(16))
    assert vnc_response(b"pw", challenge) == b"".join(
        des_encrypt_block(vnc_key(b"pw"), challenge[i : i + 8]) for i in (0, 8))


async def test_handshake_server_init_and_raw_update_match_the_render(tmp_path) -> None:
    env = make_env(tmp_path, name="guest1")
    vbe_mode(env.bus, 64, 48)
    pattern(env.bus, 64, 48)
    env.start()
    c = await connected(env)
    assert c.security == V.SEC_NONE
    assert (c.width, c.height) == (64, 48) and c.name == b"guest1"
    assert c.server_pf == (32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    c.request(False)
    rects = await c.update()
    assert all(r[4] == V.ENC_RAW for r in rects)
    w, h, rgb = expected_rgb(env.vga)
    assert (w, h) == (64, 48)
    assert c.screen() == scale_down(rgb, PF32)
    assert env.server.query()["clients"][0]["family"] == "unix"
    await c.close()
    env.close()


async def test_incremental_updates_cover_only_dirty_tiles(tmp_path) -> None:
    env = make_env(tmp_path)
    vbe_mode(env.bus, 64, 48)
    pattern(env.bus, 64, 48)
    env.start()
    c = await connected(env)
    c.request(False)
    await c.update()
    # An incremental request with nothing changed gets no answer until something changes.
    c.request(True)
    await asyncio.sleep(0.05)
    assert env.server.clients[0].want
    put_pixel(env.bus, 64, 40, 20, (255, 0, 0))  # tile (2, 1)
    put_pixel(env.bus, 64, 41, 21, (0, 255, 0))  # same tile
    put_pixel(env.bus, 64, 5, 40, (0, 0, 255))  # tile (0, 2)
    rects = await c.update()
    assert sorted(r[:4] for r in rects) == [(0, 32, 16, 16), (32, 16, 16, 16)]
    assert c.screen() == scale_down(expected_rgb(env.vga)[2], PF32)
    await c.close()
    env.close()


@pytest.mark.parametrize("pf", [PF16, PF32BE], ids=["16bpp-565", "32bpp-big-endian"])
@pytest.mark.parametrize("enc", [V.ENC_RAW, V.ENC_ZLIB, V.ENC_ZRLE], ids=["raw", "zlib", "zrle"])
async def test_pixel_formats_and_encodings(tmp_path, pf, enc) -> None:
    env = make_env(tmp_path)
    vbe_mode(env.bus, 80, 70)  # not a multiple of the tile sizes
    pattern(env.bus, 80, 70)
    env.start()
    c = await connected(env)
    c.set_pixel_format(pf)
    c.set_encodings([enc, V.ENC_RAW])
    c.request(False)
    rects = await c.update()
    assert {r[4] for r in rects} == {enc}
    assert c.screen() == scale_down(expected_rgb(env.vga)[2], pf)
    # a second update on the same compression stream
    put_pixel(env.bus, 80, 79, 69, (1, 2, 3))
    c.request(True)
    await c.update()
    assert c.screen() == scale_down(expected_rgb(env.vga)[2], pf)
    await c.close()
    env.close()


async def test_text_mode_then_desktop_size_on_mode_change(tmp_path) -> None:
    from vgahelp import MODE3, set_mode

    env = make_env(tmp_path)
    set_mode(env.bus, MODE3)
    env.start()
    c = await connected(env)
    assert (c.width, c.height) == (720, 400)
    c.set_encodings([V.ENC_ZRLE, V.ENC_DESKTOP_SIZE])
    c.request(False)
    await c.update()
    vbe_mode(env.bus, 64, 48)
    pattern(env.bus, 64, 48)
    c.request(True)
    rects = await c.update()
    assert rects == [(0, 0, 64, 48, V.ENC_DESKTOP_SIZE)]
    assert (c.width, c.height) == (64, 48)
    await c.update()  # the pixels of the new mode, answering the request
    assert c.screen() == scale_down(expected_rgb(env.vga)[2], PF32)
    await c.close()
    env.close()


async def test_key_event_reaches_the_i8042(tmp_path) -> None:
    env = make_env(tmp_path)
    env.start()
    c = await connected(env)
    c.key(True, ord("a"))
    c.key(False, ord("a"))
    c.key(True, 0xFF0D)  # Return
    await until(lambda: env.inputs >= 3)
    m = env.m
    out = []
    while m.handle_ioreq(0, 0x64, 0, 1, 1, READ) & 1:
        out.append(m.handle_ioreq(0, 0x60, 0, 1, 1, READ))
    assert out == [0x1C, 0xF0, 0x1C, 0x5A]  # scan code set 2: a make, a break, Enter make
    # 'A' without Shift held: the router wraps it in a Shift press (0x12 = left shift)
    c.key(True, ord("A"))
    await until(lambda: env.inputs >= 4)
    out = []
    while m.handle_ioreq(0, 0x64, 0, 1, 1, READ) & 1:
        out.append(m.handle_ioreq(0, 0x60, 0, 1, 1, READ))
    assert out == [0x12, 0x1C, 0xF0, 0x12]
    await c.close()
    env.close()


async def test_pointer_event_reaches_the_usb_tablet(tmp_path) -> None:
    env, d, tablet = make_tablet_env(tmp_path)
    vbe_mode(env.bus, 64, 48)
    env.start()
    c = await connected(env)
    c.pointer(0x01, 63, 0)  # left button at the right edge
    c.pointer(0x04, 32, 47)  # right button (RFB bit 2), bottom
    c.pointer(0x08, 32, 47)  # wheel up
    await until(lambda: env.inputs >= 3)
    reports = list(tablet.queue)
    assert reports[0] == bytes([1, 0xFF, 0x7F, 0, 0, 0])
    x = 32 * 0x7FFF // 63
    assert reports[1] == bytes([2, x & 0xFF, x >> 8, 0xFF, 0x7F, 0])
    assert reports[2][5] == 1  # wheel: +1 (away from the user)
    assert d.interrupt_in(1, 1, 8) == reports[0]  # what the guest's driver reads
    await c.close()
    env.close()


async def test_pointer_without_tablet_moves_the_ps2_mouse(tmp_path) -> None:
    env = make_env(tmp_path)
    env.start()
    m = env.m
    # guest: enable the aux port and mouse data reporting (0xD4 0xF4), drain the ACK
    m.handle_ioreq(0, 0x64, 0xA8, 1, 1, 0x01)
    m.handle_ioreq(0, 0x64, 0xD4, 1, 1, 0x01)
    m.handle_ioreq(0, 0x60, 0xF4, 1, 1, 0x01)
    assert m.handle_ioreq(0, 0x60, 0, 1, 1, READ) == 0xFA
    c = await connected(env)
    c.pointer(0, 10, 10)
    c.pointer(1, 15, 7)  # +5 right, 3 up, left button
    await until(lambda: env.inputs >= 2)
    out = []
    while m.handle_ioreq(0, 0x64, 0, 1, 1, READ) & 1:
        out.append(m.handle_ioreq(0, 0x60, 0, 1, 1, READ))
    assert out == [0x09, 5, 3]  # left button + always-1 bit; dx 5; dy +3 (PS/2 y is up)
    await c.close()
    env.close()


async def test_slow_client_gets_fewer_updates_and_bounded_memory(tmp_path) -> None:
    env = make_env(tmp_path, high_water=64 << 10, max_update=128 << 10)
    vbe_mode(env.bus, 320, 240)
    env.start()
    c = await connected(env)
    client = env.server.clients[0]
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    c.set_pixel_format(PF32)
    vga = env.vga
    peak = 0
    for i in range(60):  # the client asks but never reads; the screen changes every time
        vga.vram[0 : 320 * 240 * 4] = bytes([i & 0xFF, 0x55, (i * 7) & 0xFF, 0]) * (320 * 240)
        c.request(i > 0)
        await asyncio.sleep(0.01)
        peak = max(peak, client.queued())
    bound = (64 << 10) + (128 << 10) + V.MAX_RECT_BYTES
    assert peak <= bound
    assert client.updates_deferred > 0
    assert client.updates_sent < 60
    # the dirty state is one byte per tile, whatever was missed
    assert len(client.dirty) == (320 // 16) * (240 // 16)
    await c.close()
    env.close()


async def test_password_authentication(tmp_path) -> None:
    env = make_env(tmp_path, password=b"secret")
    env.start()
    c = await connected(env, password=b"secret")
    assert c.security == V.SEC_VNC
    bad = Rfb()
    await bad.connect(env.path)
    with pytest.raises(PermissionError, match="authentication failed"):
        await bad.handshake(password=b"wrong")
    assert env.server.counters["authentication failures"] == 1
    assert env.server.query()["auth"] == "vnc"
    await c.close()
    await bad.close()
    env.close()


async def test_password_option_without_password_refuses_until_set(tmp_path) -> None:
    env = make_env(tmp_path, auth=True)
    env.start()
    c = Rfb()
    await c.connect(env.path)
    with pytest.raises(PermissionError):
        await c.handshake(password=b"")
    assert env.server.set_password("pw12345678")  # QMP change-vnc-password
    ok = await connected(env, password=b"pw123456")  # 8 bytes count
    assert ok.security == V.SEC_VNC
    await ok.close()
    env.close()


async def test_rfb_33_client_and_exclusive_access(tmp_path) -> None:
    env = make_env(tmp_path)
    env.start()
    a = await connected(env)
    b = await connected(env, version=b"RFB 003.003\n")
    await until(lambda: len(env.server.clients) == 2)
    x = await connected(env, shared=False)  # exclusive: the others are disconnected
    await until(lambda: len(env.server.clients) == 1)
    assert await a.r.read() == b""
    await a.close()
    await b.close()
    await x.close()
    env.close()


async def test_protocol_errors_close_only_that_client(tmp_path) -> None:
    env = make_env(tmp_path)
    env.start()
    good = await connected(env)
    bad = await connected(env)
    bad.w.write(b"\x07")  # no such message
    assert await asyncio.wait_for(bad.r.read(), 5) == b""
    huge = await connected(env)
    huge.w.write(struct.pack(">BxxxI", 6, V.MAX_CUT_TEXT + 1))
    assert await asyncio.wait_for(huge.r.read(), 5) == b""
    good.request(False)
    await good.update()
    assert env.server.counters["protocol errors"] == 2
    for c in (good, bad, huge):
        await c.close()
    env.close()


async def test_tcp_listener_and_query(tmp_path) -> None:
    m, vga = make(4)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    spec = V.VncSpec("ipv4", "127.0.0.1")
    server = V.VncServer(s, spec, vga, router_for(m), blink=False)
    server.attach(asyncio.get_running_loop())
    port = s.getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await r.readexactly(12) == b"RFB 003.008\n"
    w.write(b"RFB 003.008\n")
    assert await r.readexactly(2) == b"\x01\x01"
    w.write(b"\x01")
    assert await r.readexactly(4) == bytes(4)
    w.write(b"\x01")
    await r.readexactly(24)
    await until(lambda: len(server.clients) == 1)
    q = server.query()
    assert q["enabled"] and q["family"] == "ipv4" and q["service"] == str(port)
    assert q["auth"] == "none" and q["clients"][0]["host"] == "127.0.0.1"
    w.close()
    server.close()


def test_build_vnc_via_pc_options(tmp_path) -> None:
    from devmodel.pc import PcOptions, build_pc

    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    sock = str(tmp_path / "v.sock")
    m = build_pc(PcOptions(virtual_clock=True, vnc=f"unix:{sock}", vnc_password_file=str(pw)))
    try:
        server = V.find_vnc(m)
        assert server is not None and server.password == b"hunter2"
        assert server.source.vga is not None and os.path.exists(sock)
        assert len(m.io_hooks) >= 1
        assert server.query()["auth"] == "vnc"
    finally:
        m.close_backends()
    assert not os.path.exists(sock)
    with pytest.raises(ValueError, match="needs --vnc"):
        build_pc(PcOptions(virtual_clock=True, vnc_password_file=str(pw)))


def test_daemon_with_vnc_key_reaches_the_guest_and_query_vnc(tmp_path) -> None:
    """`devmodel run --vnc unix:PATH` as a user runs it: a VNC client connects, gets the frame,
    types a key the guest reads from port 0x60; QMP query-vnc shows the client."""
    if os.path.join(_TESTS, "qmp") not in sys.path:
        sys.path.insert(0, os.path.join(_TESTS, "qmp"))
    from qmp_support import RawQmp, start, wait_for

    path = str(tmp_path / "vnc.sock")
    d = start(["--vnc", f"unix:{path}"])
    try:
        hv = d.hv
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)

        def recv(n: int) -> bytes:
            out = b""
            while len(out) < n:
                chunk = s.recv(n - len(out))
                assert chunk, "server closed"
                out += chunk
            return out

        assert recv(12) == b"RFB 003.008\n"
        s.sendall(b"RFB 003.008\n")
        assert recv(2) == b"\x01\x01"
        s.sendall(b"\x01")
        assert recv(4) == bytes(4)
        s.sendall(b"\x01")
        w, h = struct.unpack(">HH", recv(4))
        recv(16)
        (n,) = struct.unpack(">I", recv(4))
        recv(n)
        assert (w, h) == (640, 480)  # nothing drawn yet: the blank frame
        s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, w, h))
        mtype, nrects = struct.unpack(">BxH", recv(4))
        assert mtype == 0 and nrects >= 1
        q = RawQmp(d.qmp)
        q.negotiate()
        vnc = q.cmd("query-vnc")["return"]
        assert vnc["enabled"] and vnc["family"] == "unix" and vnc["host"] == path
        assert vnc["auth"] == "none" and len(vnc["clients"]) == 1
        assert q.cmd("change-vnc-password", {"password": "x"})["error"]["desc"] == \
            "Could not set password"
        q.close()
        s.sendall(struct.pack(">BBxxI", 4, 1, ord("a")) + struct.pack(">BBxxI", 4, 0, ord("a")))
        wait_for(hv, lambda: hv.state.isa_irq.get(1) == 1)
        assert [hv.inb(0x60) for _ in range(3)] == [0x1C, 0xF0, 0x1C]
        s.close()
    finally:
        d.close()
