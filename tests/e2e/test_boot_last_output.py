"""The last bytes a guest writes to the debug console before it halts are in the result, even
without a newline: the daemon keeps a partial line until it exits, so `devmodel boot` reads the
console file again after the daemon has gone (BootSession.close)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmodel.boot import BootConfig, boot

SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
pytestmark = pytest.mark.skipif(not SEABIOS.exists(), reason="SeaBIOS missing (apt-get install seabios)")

TAIL = b"no newline after this"


def boot_sector() -> bytes:
    code = bytearray((0xFA, 0xFC, 0x31, 0xC0, 0x8E, 0xD8))  # cli; cld; ds=0
    code += bytes((0xBE,)) + (0x7C00 + 64).to_bytes(2, "little")  # mov si, text
    code += bytes((0xBA, 0xE9, 0x00))  # mov dx, 0xe9
    loop = len(code)
    code += bytes((0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB))  # lodsb; test al,al; jz +3; out dx,al; jmp
    code.append((loop - (len(code) + 1)) & 0xFF)  # ... back to lodsb
    code += bytes((0xFA, 0xF4))  # cli; hlt
    sector = bytearray(512)
    sector[: len(code)] = code
    sector[64: 64 + len(TAIL) + 1] = TAIL + b"\0"
    sector[510:] = b"\x55\xaa"
    return bytes(sector)


def test_a_partial_last_line_is_not_lost(tmp_path: Path) -> None:
    disk = tmp_path / "tail.img"
    disk.write_bytes(boot_sector() + bytes(1 << 20))
    result = boot(BootConfig(bios=str(SEABIOS), disks=[f"{disk},raw,hda,rw"], timeout=30.0))
    assert result.outcome == "halted", result.message
    # The daemon's --debugcon file carries port 0xE9 too; the simulator's own copy ("e9") saw
    # the bytes as they were written, the file only has them once the daemon flushed at exit.
    assert result.outputs["e9"].endswith(TAIL)
    assert result.outputs["debugcon"].endswith(TAIL), result.outputs["debugcon"][-200:]
