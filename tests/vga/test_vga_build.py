"""build_vga: slot choice (pc vs xenfv layout), VRAM size validation, the ROM check."""

from __future__ import annotations

import pytest

from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.core.pci import PciDevice
from devmodel.vga import SLOT_PC, SLOT_XENFV, build_vga
from devmodel.vga.build import load_rom


def machine() -> Machine:
    return Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)


def test_slot_follows_the_layout() -> None:
    m = machine()
    assert build_vga(m, rom_path=None, shared=False).devfn == SLOT_PC << 3
    m = machine()
    m.add(PciDevice("xen-platform", vendor_id=0x5853, device_id=0x0001, class_code=0xFF8000),
          slot=SLOT_PC)
    assert build_vga(m, rom_path=None, shared=False).devfn == SLOT_XENFV << 3


@pytest.mark.parametrize("mb", [0, 3, 512, -1])
def test_vram_size_must_be_a_power_of_two(mb: int) -> None:
    with pytest.raises(ValueError):
        build_vga(machine(), vram_mb=mb, rom_path=None)


def test_shared_vram_is_a_machine_backend_and_closes() -> None:
    m = machine()
    dev = build_vga(m, vram_mb=1, rom_path=None)
    assert dev.vram_fd is not None and len(m.backends) == 1
    m.close_backends()


def test_rom_must_be_an_option_rom(tmp_path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 512)
    with pytest.raises(ValueError):
        load_rom(str(bad))
    with pytest.raises(ValueError):
        load_rom(str(tmp_path / "missing.bin"))
