"""The VNC server with an independent, real VNC client, as a user would use it: `vncdo` from
vncdotool (a Twisted RFB client nobody here wrote), run as a separate program against
`devmodel run --vnc` (a daemon process, the hypervisor played by the client library).

The guest draws a known picture in a Bochs VBE mode through the shared linear framebuffer;
`vncdo capture` must save exactly those pixels, and exactly what QMP `screendump` writes;
`vncdo key a` / `type` must reach the guest's i8042 as scancodes it reads from port 0x60.
A session through vncdotool's API (vncdo_session.py, another program) asks for ZRLE and
follows a mode change (DesktopSize) to a new picture.
"""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys

import pytest

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(_TESTS, "qmp") not in sys.path:
    sys.path.insert(0, os.path.join(_TESTS, "qmp"))

from qmp_support import RawQmp, start, wait_for  # noqa: E402

from devmodel.vga import regs as R  # noqa: E402

Image = pytest.importorskip("PIL.Image", reason="vncdotool and Pillow: pip install -e '.[test]'")
VNCDO = shutil.which("vncdo", path=os.path.dirname(sys.executable)) or shutil.which("vncdo")
pytestmark = pytest.mark.skipif(VNCDO is None, reason="vncdotool missing (pip install -e '.[test]')")

LFB = 0xE0000000
W, H = 640, 480
DISPLAYS = (57, 99)  # --vnc 127.0.0.1:57,to=99: the first free display from port 5957 on


def picture() -> tuple[bytes, bytes]:
    """A 640x480 test image as BGRX (what the guest stores) and as RGB (what a client sees):
    gradients, a checkerboard and single-pixel marks at the corners."""
    bgrx = bytearray(4 * W * H)
    for y in range(H):
        row = bytearray(4 * W)
        for x in range(W):
            r, g, b = (x * 255 // (W - 1), y * 255 // (H - 1), 0xC0 if (x // 8 + y // 8) & 1 else 0x20)
            row[4 * x : 4 * x + 3] = bytes((b, g, r))
        bgrx[4 * W * y : 4 * W * (y + 1)] = row
    for x, y, rgb in ((0, 0, (255, 0, 255)), (W - 1, 0, (1, 2, 3)), (0, H - 1, (4, 5, 6)),
                      (W - 1, H - 1, (255, 255, 255))):
        o = 4 * (y * W + x)
        bgrx[o : o + 3] = bytes(reversed(rgb))
    rgb_out = bytearray(3 * W * H)
    rgb_out[0::3], rgb_out[1::3], rgb_out[2::3] = bgrx[2::4], bgrx[1::4], bgrx[0::4]
    return bytes(bgrx), bytes(rgb_out)


class Guest:
    """The guest's side of the VGA through the hypervisor client: BAR0 mapped (the daemon
    shares VRAM there), VBE modes set through the DISPI ports, pixels stored into the linear
    framebuffer -- the client library's view of the same memfd."""

    def __init__(self, hv) -> None:
        self.hv = hv
        devfn = next(s << 3 for s in range(32) if hv.pci_cfg_read(s << 3, 0, 4)
                     == R.DEVICE_STDVGA << 16 | R.VENDOR_QEMU)
        hv.pci_program_bar(devfn, 0, LFB)
        hv.pci_enable(devfn, io=True, mem=True)
        gpa, size, _flags, fd = hv.state.dm_regions[R.REGION_VRAM]
        assert gpa == LFB
        self.vram = mmap.mmap(fd, size)

    def vbe_mode(self, w: int, h: int, bgrx: bytes) -> None:
        for index, value in ((R.VBE_INDEX_ENABLE, 0), (R.VBE_INDEX_XRES, w), (R.VBE_INDEX_YRES, h),
                             (R.VBE_INDEX_BPP, 32),
                             (R.VBE_INDEX_ENABLE, R.VBE_ENABLED | R.VBE_LFB_ENABLED)):
            self.hv.outw(0x1CE, index)
            self.hv.outw(0x1CF, value)
        self.vram[0 : len(bgrx)] = bgrx

    def close(self) -> None:
        self.vram.close()


def vnc_server(d) -> tuple[RawQmp, str]:
    q = RawQmp(d.qmp)
    q.negotiate()
    vnc = q.cmd("query-vnc")["return"]
    assert vnc["enabled"] and vnc["family"] == "ipv4" and vnc["host"] == "127.0.0.1"
    port = int(vnc["service"])
    assert 5900 + DISPLAYS[0] <= port <= 5900 + DISPLAYS[1]
    return q, f"127.0.0.1::{port}"


def vncdo(server: str, *cmd: str) -> subprocess.CompletedProcess:
    p = subprocess.run([VNCDO, "-s", server, "-t", "30", *cmd], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, f"vncdo {' '.join(cmd)}: {p.stdout}{p.stderr}"
    return p


def scancodes(hv) -> list[int]:
    """What the guest's keyboard driver reads: each byte while the i8042 has output."""
    out = []
    wait_for(hv, lambda: hv.state.isa_irq.get(1) == 1)
    for _ in range(64):  # bounded: a key is at most a few bytes
        if not hv.inb(0x64) & 0x01:
            break
        out.append(hv.inb(0x60))
    return out


def test_vncdotool_captures_the_guest_picture_and_types_into_the_i8042(tmp_path) -> None:
    d = start(["--vnc", f"127.0.0.1:{DISPLAYS[0]},to={DISPLAYS[1]}"])
    try:
        hv = d.hv
        guest = Guest(hv)
        bgrx, want = picture()
        guest.vbe_mode(W, H, bgrx)
        q, server = vnc_server(d)

        shot = tmp_path / "vnc.png"
        vncdo(server, "capture", str(shot))
        dump = tmp_path / "dump.png"
        r = q.cmd("screendump", {"filename": str(dump), "format": "png"})
        assert r == {"return": {}, "id": 1}
        with Image.open(shot) as im:
            assert im.size == (W, H)
            got = im.convert("RGB").tobytes()
        with Image.open(dump) as im:
            dumped = im.convert("RGB").tobytes()
        assert got == want, "the VNC client's picture is not what the guest drew"
        assert dumped == got, "screendump and the VNC client disagree"

        # A key typed in the client reaches the guest's keyboard controller (scan code set 2,
        # no translation: nothing programmed the i8042).
        vncdo(server, "key", "a")
        assert scancodes(hv) == [0x1C, 0xF0, 0x1C]
        # vncdotool types 'H' as the keysym alone; the router wraps Shift around its press
        # (shift make, h make, shift break), then h break and i (devmodel.input.keysym).
        vncdo(server, "type", "Hi")
        assert scancodes(hv) == [0x12, 0x33, 0xF0, 0x12, 0xF0, 0x33, 0x43, 0xF0, 0x43]
        q.close()
        guest.close()
    finally:
        d.close()


def test_vncdotool_zrle_session_follows_a_mode_change(tmp_path) -> None:
    d = start(["--vnc", f"127.0.0.1:{DISPLAYS[0]},to={DISPLAYS[1]}"])
    try:
        guest = Guest(d.hv)
        bgrx, want = picture()
        guest.vbe_mode(W, H, bgrx)
        q, server = vnc_server(d)
        first, expected, second = (tmp_path / f"{n}.png" for n in ("first", "expected", "second"))
        w2, h2 = 800, 600
        small = bytes(range(256)) * (w2 * h2 * 4 // 256)
        want2 = bytearray(3 * w2 * h2)
        want2[0::3], want2[1::3], want2[2::3] = small[2::4], small[1::4], small[0::4]
        Image.frombytes("RGB", (w2, h2), bytes(want2)).save(expected)
        session = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), "vncdo_session.py"), server,
             str(first), str(expected), str(second)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert session.stdout.readline().strip() == "captured", session.stderr.read()
            with Image.open(first) as im:
                assert im.size == (W, H) and im.convert("RGB").tobytes() == want
            # A new mode of another size: the client is told (DesktopSize) and redraws.
            guest.vbe_mode(w2, h2, small)
            session.stdin.write("go\n")
            session.stdin.flush()
            assert session.wait(60) == 0, session.stderr.read()
        finally:
            if session.poll() is None:
                session.kill()
                session.wait()
        with Image.open(second) as im:
            assert im.size == (w2, h2)
            assert im.convert("RGB").tobytes() == want2
        stats = q.cmd("query-vnc")["return"]
        assert stats["clients"] == []
        q.close()
        guest.close()
    finally:
        d.close()
