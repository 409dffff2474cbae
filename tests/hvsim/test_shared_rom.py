"""Expansion ROMs as memory, end to end: a real daemon (in a thread, on a real socket), the
client and the simulator. Enabling the VGA's ROM BAR sends a daemon->hypervisor MEM_ADD that
the simulator maps read-only; reading the ROM then makes no ioreq; disabling it is a MEM_DEL
(docs/protocol.md 4.7). A ROM BAR the guest puts over memory already mapped (VRAM, guest RAM)
is counted and not mapped, and the vCPU goes on."""

from __future__ import annotations

import pytest
from dmsupport import simulated

from devmodel.core.pci import REGION_ROM_BASE
from devmodel.pc import PcOptions, build_pc
from devmodel.vga import regs as R
from devmodel.wire.constants import MEM_RAM, MEM_READONLY

RAM = 16 << 20
ROM_AT = 0xFEBE0000
LFB = 0xFD000000


@pytest.fixture
def rig():
    def factory():
        return build_pc(PcOptions(virtual_clock=True, serial=[], memory=RAM))

    with simulated(factory, RAM) as (daemon, hv, sim):
        vga = daemon.machine.device("vga")
        if not vga.rom:
            pytest.skip("no VGA BIOS (apt-get install seabios)")
        yield hv, sim, vga


def test_rom_bar_is_mapped_read_only(rig) -> None:
    hv, sim, vga = rig
    rid = REGION_ROM_BASE | vga.devfn
    assert not hv.claims_mmio(ROM_AT, 4)
    hv.pci_cfg_write(vga.devfn, 0x30, 4, ROM_AT | 1)
    hv.pci_cfg_write(vga.devfn, 0x04, 2, 0x3)
    region = sim.dm_regions[rid]  # mapped before the config write's IORESP came back
    assert (region.gpa, region.size, region.flags) == (ROM_AT, vga.rom_size,
                                                      MEM_RAM | MEM_READONLY)
    assert not hv.claims_mmio(ROM_AT, 4)  # never a trapped range
    # What the vCPU's loads see there is the ROM, as memory (no MMIO callback behind it).
    assert bytes(sim.cpu.uc.mem_read(ROM_AT, 64)) == vga.rom[:64]
    assert bytes(sim.cpu.uc.mem_read(ROM_AT + 0x1000, 16)) == vga.rom[0x1000:0x1010]
    assert ROM_AT >> 12 not in sim.router.mmio_counts
    hv.pci_cfg_write(vga.devfn, 0x30, 4, ROM_AT)  # enable bit off: MEM_DEL
    assert rid not in sim.dm_regions


def test_rom_bar_over_mapped_memory_is_counted_not_mapped(rig) -> None:
    hv, sim, vga = rig
    rid = REGION_ROM_BASE | vga.devfn
    hv.pci_cfg_write(vga.devfn, 0x10, 4, LFB)
    hv.pci_cfg_write(vga.devfn, 0x04, 2, 0x3)
    assert R.REGION_VRAM in sim.dm_regions
    hv.pci_cfg_write(vga.devfn, 0x30, 4, LFB | 1)  # over VRAM
    assert rid not in sim.dm_regions and sim.stats.region_conflicts == 1
    hv.pci_cfg_write(vga.devfn, 0x30, 4, 0x00100001)  # over guest RAM
    assert rid not in sim.dm_regions and sim.stats.region_conflicts == 2
    hv.pci_cfg_write(vga.devfn, 0x30, 4, ROM_AT | 1)  # moved to a free place: mapped
    assert sim.dm_regions[rid].gpa == ROM_AT
    assert sim.dm_regions[R.REGION_VRAM].gpa == LFB  # VRAM untouched throughout
