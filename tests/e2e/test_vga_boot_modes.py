"""Graphics modes set by the real VGA BIOS, end to end: `devmodel boot` (SeaBIOS with
vgabios-stdvga.bin from the ROM BAR, the daemon, the simulator) boots a disk whose boot
sector asks INT 10h for mode 13h or for VBE mode 0x142 (640x480x32) with the linear frame
buffer, draws a known pattern, and halts; `--screendump` must then hold exactly that pattern,
pixel for pixel (decoded by Pillow, an independent PNG decoder).

- mode 13h: AX=0013h, then the 256 DAC entries through ports 0x3C8/0x3C9, a pattern built in
  RAM and copied to A000:0000 with `rep movsw` (chain-4 stores through the legacy window).
- VBE: AX=4F01h for the mode's PhysBasePtr, AX=4F02h BX=4142h, then 32-bit stores through
  "unreal mode" FS (a 4 GiB data segment loaded in protected mode, kept after returning to
  real mode) into the linear frame buffer -- which the daemon shares with the hypervisor, so
  these stores never trap.
The boot sector is assembled here, byte by byte (no assembler needed), like demo_disk's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devmodel.demo_disk import BOOT_ADDR, _Asm

SEABIOS = Path("/usr/share/seabios")
TIMEOUT = 60.0
pytestmark = pytest.mark.skipif(
    not ((SEABIOS / "bios-256k.bin").exists() and (SEABIOS / "vgabios-stdvga.bin").exists()),
    reason="SeaBIOS missing (apt-get install seabios)")
Image = pytest.importorskip("PIL.Image", reason="Pillow: pip install -e '.[test]'")

VBE_MODE = 0x142  # SeaVGABIOS svgamodes.c: 640x480, 32 bpp
VBE_W, VBE_H = 640, 480
MODE_INFO = 0x8000  # where INT 10h AX=4F01h writes the ModeInfoBlock (0000:8000)
PHYS_BASE_PTR = 0x28  # its offset of the linear frame buffer address
PIXEL_STEP = 0x00010203  # VBE pattern: pixel i holds i * PIXEL_STEP (32-bit, XRGB)


def boot_sector(kind: str) -> bytes:
    a = _Asm(BOOT_ADDR)
    a.emit(0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0)  # cli; ax=0; ds=es=ss=0
    a.emit(0xBC, b"\x00\x7c", 0xFB, 0xFC)  # mov sp,0x7c00; sti; cld
    if kind == "13h":
        a.emit(0xB8, b"\x13\x00", 0xCD, 0x10)  # mov ax,0013h; int 10h
        # DAC entry i = (i & 63, i >> 2, 63 - (i & 63)), written from index 0 on
        a.emit(0xBA, b"\xc8\x03", 0x30, 0xC0, 0xEE, 0x42)  # mov dx,3C8h; xor al,al; out; inc dx
        a.emit(0x31, 0xDB)  # xor bx,bx
        a.label("pal")
        a.emit(0x88, 0xD8, 0x24, 0x3F, 0xEE)  # mov al,bl; and al,3Fh; out dx,al
        a.emit(0x88, 0xD8, 0xD0, 0xE8, 0xD0, 0xE8, 0xEE)  # mov al,bl; shr al,1 (x2); out
        a.emit(0x88, 0xD8, 0xF6, 0xD0, 0x24, 0x3F, 0xEE)  # mov al,bl; not al; and al,3Fh; out
        a.emit(0xFE, 0xC3, 0x75)  # inc bl; jnz pal
        a.rel8("pal")
        # 64000 bytes at 1000:0000, byte o = (o & 0xFF) ^ (o >> 8), then rep movsw to A000:0
        a.emit(0xB8, b"\x00\x10", 0x8E, 0xC0, 0x31, 0xFF)  # mov ax,1000h; mov es,ax; xor di,di
        a.emit(0xB9, b"\x00\xfa")  # mov cx,64000
        a.label("fill")
        a.emit(0x89, 0xF8, 0x30, 0xE0, 0xAA, 0xE2)  # mov ax,di; xor al,ah; stosb; loop fill
        a.rel8("fill")
        a.emit(0xB8, b"\x00\x10", 0x8E, 0xD8)  # mov ax,1000h; mov ds,ax
        a.emit(0xB8, b"\x00\xa0", 0x8E, 0xC0)  # mov ax,0A000h; mov es,ax
        a.emit(0x31, 0xF6, 0x31, 0xFF, 0xB9, b"\x00\x7d")  # xor si,si; xor di,di; mov cx,32000
        a.emit(0xF3, 0xA5)  # rep movsw
        a.emit(0x31, 0xC0, 0x8E, 0xD8)  # xor ax,ax; mov ds,ax
    else:
        a.emit(0xB8, b"\x01\x4f", 0xB9, VBE_MODE.to_bytes(2, "little"))  # ax=4F01h; cx=mode
        a.emit(0xBF, MODE_INFO.to_bytes(2, "little"), 0xCD, 0x10)  # mov di,8000h; int 10h
        a.emit(0xB8, b"\x02\x4f", 0xBB, (0x4000 | VBE_MODE).to_bytes(2, "little"))  # 4F02h, LFB
        a.emit(0xCD, 0x10)
        # unreal mode: FS gets a flat 4 GiB data descriptor in protected mode and keeps it
        a.emit(0xFA, 0x0F, 0x01, 0x16)  # cli; lgdt [gdtr]
        a.abs16("gdtr")
        a.emit(0x0F, 0x20, 0xC0, 0x0C, 0x01, 0x0F, 0x22, 0xC0)  # mov eax,cr0; or al,1; cr0=eax
        a.emit(0xEB, 0x00)  # jmp $+2
        a.emit(0xBB, b"\x08\x00", 0x8E, 0xE3)  # mov bx,8; mov fs,bx
        a.emit(0x24, 0xFE, 0x0F, 0x22, 0xC0, 0xEB, 0x00)  # and al,0FEh; mov cr0,eax; jmp $+2
        a.emit(0x31, 0xDB, 0x8E, 0xE3, 0xFB)  # xor bx,bx; mov fs,bx (base 0, limit kept); sti
        a.emit(0x66, 0x8B, 0x3E, (MODE_INFO + PHYS_BASE_PTR).to_bytes(2, "little"))  # edi=LFB
        a.emit(0x66, 0x31, 0xC0)  # xor eax,eax
        a.emit(0x66, 0xB9, (VBE_W * VBE_H).to_bytes(4, "little"))  # mov ecx, pixels
        a.label("px")
        a.emit(0x64, 0x67, 0x66, 0x89, 0x07)  # mov [fs:edi],eax
        a.emit(0x66, 0x83, 0xC7, 0x04)  # add edi,4
        a.emit(0x66, 0x05, PIXEL_STEP.to_bytes(4, "little"))  # add eax, PIXEL_STEP
        a.emit(0x66, 0x49, 0x75)  # dec ecx; jnz px
        a.rel8("px")
    a.emit(0xFA, 0xF4)  # cli; hlt: ends `devmodel boot` with exit 0
    a.label("gdt")
    a.emit(bytes(8), bytes((0xFF, 0xFF, 0, 0, 0, 0x92, 0xCF, 0)))  # null; flat data, 4 GiB
    a.label("gdtr")
    a.emit(b"\x0f\x00")  # limit: two descriptors
    a.abs16("gdt")
    a.emit(b"\x00\x00")  # base bits 16-31
    code = a.assemble()
    assert len(code) <= 510
    return code.ljust(510, b"\0") + b"\x55\xaa"


def c6(v: int) -> int:
    """A 6-bit DAC value as 8 bits (as the renderer and QEMU widen it)."""
    return (v << 2) | ((v & 1) << 1) | (v & 1)


def expected_13h() -> bytes:
    pal = [(c6(i & 63), c6(i >> 2), c6(63 - (i & 63))) for i in range(256)]
    return b"".join(bytes(pal[(o & 0xFF) ^ (o >> 8)]) for o in range(320 * 200))


def expected_vbe() -> bytes:
    out = bytearray()
    for i in range(VBE_W * VBE_H):
        v = (i * PIXEL_STEP) & 0xFFFFFFFF
        out += bytes(((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF))
    return bytes(out)


@pytest.mark.parametrize("kind,size,expected", [("13h", (320, 200), expected_13h),
                                                ("vbe", (VBE_W, VBE_H), expected_vbe)])
def test_boot_sector_draws_a_mode_and_the_screendump_matches(tmp_path: Path, kind: str, size,
                                                             expected) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(boot_sector(kind).ljust(1 << 20, b"\0"))
    png = tmp_path / "screen.png"
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--timeout", str(TIMEOUT),
                        "--disk", f"format=raw,vdev=hda,access=rw,target={img}",
                        "--screendump", str(png), "--no-screen"],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "hlt with interrupts disabled" in p.stderr  # it got to the end of the drawing
    with Image.open(png) as im:
        assert im.size == size
        got = im.convert("RGB").tobytes()
    want = expected()
    assert got == want, next(f"first difference at pixel {i // 3}" for i in range(len(want))
                             if got[i] != want[i])
