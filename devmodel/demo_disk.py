"""The embedded default guest of `devmodel boot`: a small raw disk image built here, byte by
byte, so that no assembler is needed.

SeaBIOS loads its boot sector through INT 13h (which proves the IDE disk path). The boot
sector then prints, to the debug port 0xE9, to COM1 and to the screen through the VGA BIOS's
teletype (INT 10h AH=0Eh, so it lands below SeaBIOS's banner as on a PC):
  - a greeting,
  - the CMOS clock read through INT 1Ah (which proves the RTC),
  - the text of sector 2, read through INT 13h (the disk again),
and halts with interrupts off (`cli; hlt`), which ends a `devmodel boot` run with exit 0.
"""

from __future__ import annotations

import struct

GREETING = "devmodel demo: boot sector running\r\n"
DISK_TEXT = "devmodel demo: sector 2 read through INT 13h\r\n"
DONE = "devmodel demo: done, halting\r\n"
BOOT_ADDR = 0x7C00
DEFAULT_SIZE = 1 << 20


class _Asm:
    """Enough of a two-pass assembler for a boot sector: bytes, labels, rel8/rel16/abs16."""

    def __init__(self, origin: int) -> None:
        self.origin = origin
        self.items: list[bytes | tuple[str, str]] = []
        self.labels: dict[str, int] = {}

    def emit(self, *parts: int | bytes) -> None:
        for p in parts:
            self.items.append(bytes([p]) if isinstance(p, int) else p)

    def label(self, name: str) -> None:
        self.items.append(("label", name))

    def rel8(self, name: str) -> None:
        self.items.append(("rel8", name))

    def rel16(self, name: str) -> None:
        self.items.append(("rel16", name))

    def abs16(self, name: str) -> None:
        self.items.append(("abs16", name))

    def print_msg(self, name: str) -> None:
        """mov si, name; call print (the zero-terminated-string printer at label "print")."""
        self.emit(0xBE)
        self.abs16(name)
        self.emit(0xE8)
        self.rel16("print")

    def fail_finish_halt(self) -> None:
        """Labels "fail" (print fail_msg, fall through) and "finish" (print done_msg), then
        cli; hlt; jmp $."""
        self.label("fail")
        self.print_msg("fail_msg")
        self.label("finish")
        self.print_msg("done_msg")
        self.emit(0xFA, 0xF4, 0xEB, 0xFE)  # cli; hlt; jmp $

    def asciz(self, *texts: tuple[str, str]) -> None:
        """Each (label, text) as a zero-terminated string."""
        for name, text in texts:
            self.label(name)
            self.emit(text.encode() + b"\0")

    def assemble(self) -> bytes:
        sizes = {"label": 0, "rel8": 1, "rel16": 2, "abs16": 2}
        pos = self.origin
        for it in self.items:
            if isinstance(it, bytes):
                pos += len(it)
            else:
                if it[0] == "label":
                    self.labels[it[1]] = pos
                pos += sizes[it[0]]
        out = bytearray()
        for it in self.items:
            here = self.origin + len(out)
            if isinstance(it, bytes):
                out += it
            elif it[0] == "rel8":
                d = self.labels[it[1]] - (here + 1)
                if not -128 <= d <= 127:
                    raise ValueError(f"rel8 to {it[1]} out of range")
                out += struct.pack("<b", d)
            elif it[0] == "rel16":
                out += struct.pack("<h", self.labels[it[1]] - (here + 2))
            elif it[0] == "abs16":
                out += struct.pack("<H", self.labels[it[1]])
        return bytes(out)


def boot_sector() -> bytes:
    a = _Asm(BOOT_ADDR)
    a.emit(0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0)  # cli; xor ax,ax; ds=es=ss=0
    a.emit(0xBC, b"\x00\x7c", 0xFB, 0xFC)  # mov sp,0x7c00; sti; cld
    a.emit(0x88, 0x16)  # mov [drive], dl  (the BIOS passes the boot drive in DL)
    a.abs16("drive")
    a.print_msg("greeting")
    # RTC: INT 1Ah AH=02 -> CH hours, CL minutes, DH seconds (BCD)
    a.emit(0xB4, 0x02, 0xCD, 0x1A)
    a.emit(0x88, 0x2E)  # mov [hours], ch
    a.abs16("hours")
    a.emit(0x88, 0x0E)  # mov [minutes], cl
    a.abs16("minutes")
    a.emit(0x88, 0x36)  # mov [seconds], dh
    a.abs16("seconds")
    a.print_msg("rtc_msg")
    for i, field in enumerate(("hours", "minutes", "seconds")):
        if i:
            a.emit(0xB0, ord(":"), 0xE8)  # mov al,':'; call putc
            a.rel16("putc")
        a.emit(0xA0)  # mov al, [field]
        a.abs16(field)
        a.emit(0xE8)
        a.rel16("printbcd")
    a.print_msg("crlf")
    # INT 13h AH=02: read 1 sector, cylinder 0 sector 2 head 0, into 0:0x7e00
    a.emit(0xB8, b"\x01\x02", 0xBB, b"\x00\x7e", 0xB9, b"\x02\x00", 0xB6, 0x00)
    a.emit(0x8A, 0x16)  # mov dl, [drive]
    a.abs16("drive")
    a.emit(0xCD, 0x13, 0x72)  # int 13h; jc fail
    a.rel8("fail")
    a.emit(0xBE, b"\x00\x7e", 0xE8)  # mov si,0x7e00; call print
    a.rel16("print")
    a.emit(0xEB)  # jmp finish
    a.rel8("finish")
    a.fail_finish_halt()
    # print: DS:SI zero-terminated string to port 0xE9 and COM1
    a.label("print")
    a.emit(0xAC, 0x84, 0xC0, 0x74)  # lodsb; test al,al; jz .ret
    a.rel8("print_ret")
    a.emit(0xE8)
    a.rel16("putc")
    a.emit(0xEB)
    a.rel8("print")
    a.label("print_ret")
    a.emit(0xC3)
    # printbcd: AL as two BCD digits
    a.label("printbcd")
    a.emit(0x50, 0xC0, 0xE8, 0x04, 0xE8)  # push ax; shr al,4; call nib
    a.rel16("nib")
    a.emit(0x58, 0x24, 0x0F)  # pop ax; and al,0x0f
    a.label("nib")
    a.emit(0x04, 0x30)  # add al,'0'
    a.label("putc")
    a.emit(0x52, 0x50, 0x53)  # push dx; push ax; push bx
    a.emit(0xE6, 0xE9, 0xBA, b"\xf8\x03", 0xEE)  # out 0xe9,al; out 0x3f8,al (first: bench/boot.py stops here)
    # and on the screen, through the VGA BIOS's teletype (INT 10h AH=0Eh, page 0, colour 7)
    a.emit(0xB4, 0x0E, 0xBB, b"\x07\x00", 0xCD, 0x10)
    a.emit(0x5B, 0x58, 0x5A, 0xC3)  # pop bx; pop ax; pop dx; ret
    a.asciz(("greeting", GREETING), ("rtc_msg", "devmodel demo: RTC time "),
            ("crlf", "\r\n"), ("fail_msg", "devmodel demo: INT 13h read FAILED\r\n"),
            ("done_msg", DONE))
    for name in ("drive", "hours", "minutes", "seconds"):
        a.label(name)
        a.emit(0)
    code = a.assemble()
    if len(code) > 446:
        raise AssertionError(f"boot sector code is {len(code)} bytes, more than 446")
    return code.ljust(510, b"\0") + b"\x55\xaa"


def build_image(size: int = DEFAULT_SIZE) -> bytes:
    """The whole disk: boot sector, the text of sector 2, zeros."""
    sector2 = (DISK_TEXT.encode() + b"\0").ljust(512, b"\0")
    return (boot_sector() + sector2).ljust(size, b"\0")


def write_image(path: str, size: int = DEFAULT_SIZE) -> str:
    with open(path, "wb") as f:
        f.write(build_image(size))
    return path
