"""SeaBIOS boots an El Torito CD-ROM on the ATAPI drive (hdc) through the real daemon on the
simulated CPU, and reaches the loader on it.

The ISO is built here with Debian's xorriso. Its boot image is a tiny no-emulation program
assembled with devmodel.demo_disk's mini assembler: it prints to port 0xE9, reads the ISO's
primary volume descriptor (block 16) through INT 13h AH=42h (SeaBIOS turns that into an
ATAPI READ(10)), prints the "CD001" it finds there, and halts. If isolinux is installed, a
second ISO boots isolinux.bin, which loads ldlinux.c32 and reads isolinux.cfg through more
ATAPI reads, and tries to load the kernel its config names, saying so on COM1 (the
SERIAL directive: there is no VGA yet).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devmodel.boot import BootConfig, BootResult, boot
from devmodel.demo_disk import _Asm

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
XORRISO = shutil.which("xorriso")
TIMEOUT = 30.0
BOOT_ADDR = 0x7C00
GREETING = "devmodel cdrom: El Torito boot image running\r\n"
PVD_TEXT = "devmodel cdrom: block 16 says "
DONE = "devmodel cdrom: done, halting\r\n"
# isolinux.cfg names a kernel that is not there; ldlinux says it tried to load it.
ISOLINUX_LABEL = "devmodel-cfg-was-read"
ISOLINUX_SAYS = f"Loading {ISOLINUX_LABEL}... failed"

pytestmark = [
    pytest.mark.skipif(not SEABIOS.exists(), reason="SeaBIOS missing (apt-get install seabios)"),
    pytest.mark.skipif(XORRISO is None, reason="xorriso missing (apt-get install xorriso), "
                       "needed to build the El Torito ISO"),
]


def boot_image() -> bytes:
    """2048 bytes (one CD block; SeaBIOS loads -boot-load-size 4 sectors = 2048 bytes)."""
    a = _Asm(BOOT_ADDR)
    a.emit(0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0)  # cli; ds=es=ss=0
    a.emit(0xBC, b"\x00\x7c", 0xFB, 0xFC)  # mov sp,0x7c00; sti; cld
    a.emit(0xEA)  # jmp 0000:start (SeaBIOS may enter at 07C0:0000)
    a.abs16("start")
    a.emit(b"\x00\x00")
    a.label("start")
    a.emit(0x88, 0x16)  # mov [drive], dl
    a.abs16("drive")
    a.print_msg("greeting")
    # INT 13h AH=42h: extended read of the disk address packet at `dap`
    a.emit(0xB4, 0x42, 0x8A, 0x16)  # mov ah,42h; mov dl,[drive]
    a.abs16("drive")
    a.emit(0xBE)  # mov si, dap
    a.abs16("dap")
    a.emit(0xCD, 0x13, 0x72)  # int 13h; jc fail
    a.rel8("fail")
    a.print_msg("pvd_msg")
    a.emit(0xBE, b"\x01\x80", 0xB9, b"\x05\x00")  # mov si,0x8001; mov cx,5 ("CD001")
    a.label("pvd_loop")
    a.emit(0xAC, 0xE6, 0xE9, 0xE2)  # lodsb; out 0xe9,al; loop pvd_loop
    a.rel8("pvd_loop")
    a.print_msg("crlf")
    a.emit(0xEB)
    a.rel8("finish")
    a.fail_finish_halt()
    a.label("print")  # DS:SI zero-terminated string to port 0xE9
    a.emit(0xAC, 0x84, 0xC0, 0x74)  # lodsb; test al,al; jz ret
    a.rel8("print_ret")
    a.emit(0xE6, 0xE9, 0xEB)  # out 0xe9,al; jmp print
    a.rel8("print")
    a.label("print_ret")
    a.emit(0xC3)
    a.label("dap")  # size 16, 1 block, to 0000:8000, LBA 16
    a.emit(0x10, 0x00, b"\x01\x00", b"\x00\x80", b"\x00\x00", (16).to_bytes(8, "little"))
    a.asciz(("greeting", GREETING), ("pvd_msg", PVD_TEXT), ("crlf", "\r\n"),
            ("fail_msg", "devmodel cdrom: INT 13h AH=42h FAILED\r\n"),
            ("done_msg", DONE))
    a.label("drive")
    a.emit(0)
    code = a.assemble()
    assert len(code) <= 2048
    return code.ljust(2048, b"\0")


def xorriso(*args: str) -> None:
    assert XORRISO is not None
    p = subprocess.run([XORRISO, "-as", "mkisofs", *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]


def run(iso: Path, **kw) -> BootResult:
    return boot(BootConfig(bios=str(SEABIOS), timeout=TIMEOUT,
                           disks=[f"devtype=cdrom,vdev=hdc,access=ro,target={iso}"],
                           daemon_args=["--boot", "d"], **kw))


@pytest.fixture(scope="module")
def own_loader(tmp_path_factory) -> BootResult:
    d = tmp_path_factory.mktemp("eltorito")
    root = d / "root"
    root.mkdir()
    (root / "boot.img").write_bytes(boot_image())
    (root / "README.TXT").write_text("devmodel El Torito test\n")
    iso = d / "boot.iso"
    xorriso("-quiet", "-o", str(iso), "-b", "boot.img", "-no-emul-boot", "-boot-load-size", "4",
            "-V", "DEVMODEL", str(root))
    return run(iso)


def test_seabios_finds_the_atapi_cdrom(own_loader: BootResult) -> None:
    log = own_loader.text("debugcon")
    assert "DVD/CD [ata1-0: QEMU DVD-ROM ATAPI-4 DVD/CD]" in log, log[-3000:]
    assert "Booting from DVD/CD" in log


def test_el_torito_image_runs_reads_the_cd_and_halts(own_loader: BootResult) -> None:
    assert own_loader.outcome == "halted", (own_loader.message, own_loader.text("debugcon")[-3000:])
    e9 = own_loader.text("e9")
    assert GREETING in e9
    assert PVD_TEXT + "CD001\r\n" in e9  # the primary volume descriptor, read by ATAPI READ(10)
    assert DONE in e9


@pytest.mark.skipif(not (ISOLINUX_BIN.exists() and LDLINUX_C32.exists()),
                    reason="isolinux missing (apt-get install isolinux syslinux-common)")
def test_isolinux_is_loaded_and_reads_its_config(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "isolinux").mkdir(parents=True)
    shutil.copy(ISOLINUX_BIN, root / "isolinux" / "isolinux.bin")
    shutil.copy(LDLINUX_C32, root / "isolinux" / "ldlinux.c32")
    (root / "isolinux" / "isolinux.cfg").write_text(
        f"SERIAL 0 115200\nDEFAULT {ISOLINUX_LABEL}\nPROMPT 0\nTIMEOUT 0\n")
    iso = tmp_path / "isolinux.iso"
    xorriso("-quiet", "-o", str(iso), "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
            "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(root))
    result = run(iso, until=ISOLINUX_SAYS)
    assert result.outcome == "until", (result.message, result.text("debugcon")[-3000:],
                                       result.text("com1")[-2000:])
    com1 = result.text("com1")
    assert "ISOLINUX" in com1 and "Copyright (C)" in com1  # isolinux.bin's banner
    assert "Booting from DVD/CD" in result.text("debugcon")
