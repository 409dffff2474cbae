"""The linear framebuffer as shared memory, end to end: a real daemon (in a thread, on a real
socket), the client and the simulator. Mapping BAR0 sends a daemon->hypervisor MEM_ADD that the
simulator maps into the vCPU; stores there reach the daemon's VRAM without any ioreq; a BAR0
move is a MEM_ADD with the same region id at the new address, and turning memory decoding off a
MEM_DEL (docs/protocol.md 4.7)."""

from __future__ import annotations

import pytest
from dmsupport import simulated
from unicorn import UcError

from devmodel.client import Hypervisor
from devmodel.pc import PcOptions, build_pc
from devmodel.vga import capture, render
from devmodel.vga import regs as R
from devmodel.wire.constants import MEM_RAM, MEM_VRAM

RAM = 16 << 20
LFB = 0xFD000000
MOVED = 0xE0000000


@pytest.fixture
def rig():
    def factory():
        return build_pc(PcOptions(virtual_clock=True, serial=[], memory=RAM))

    with simulated(factory, RAM) as (daemon, hv, sim):
        yield daemon, hv, sim, daemon.machine.device("vga")


def _vbe(hv: Hypervisor, index: int, value: int) -> None:
    hv.outw(0x1CE, index)
    hv.outw(0x1CF, value)


def test_lfb_stores_reach_vram_without_ioreqs_and_follow_bar0(rig) -> None:
    daemon, hv, sim, vga = rig
    devfn = vga.devfn
    assert vga.shared
    assert R.REGION_VRAM not in sim.dm_regions  # BAR0 does not decode yet
    hv.pci_cfg_write(devfn, 0x10, 4, LFB)
    hv.pci_cfg_write(devfn, 0x04, 2, 0x3)  # I/O + memory decoding
    # The MEM_ADD came before the IORESP of the config write: mapped when the call returns.
    region = sim.dm_regions[R.REGION_VRAM]
    assert (region.gpa, region.size, region.flags) == (LFB, 16 << 20, MEM_RAM | MEM_VRAM)
    gpa, size, flags, _fd = hv.state.dm_regions[R.REGION_VRAM]
    assert (gpa, size, flags) == (LFB, 16 << 20, MEM_RAM | MEM_VRAM)
    assert not hv.claims_mmio(LFB, 4)  # the LFB is not an ioreq range

    # A VBE mode, then pixels stored by the vCPU side straight into its mapping.
    _vbe(hv, R.VBE_INDEX_XRES, 64)
    _vbe(hv, R.VBE_INDEX_YRES, 32)
    _vbe(hv, R.VBE_INDEX_BPP, 32)
    _vbe(hv, R.VBE_INDEX_ENABLE, R.VBE_ENABLED | R.VBE_LFB_ENABLED)
    served: list[tuple[int, int]] = []
    machine = daemon.machine
    inner = machine.handle_ioreq

    def counting(type_: int, addr: int, *rest: int) -> int:
        served.append((type_, addr))
        return inner(type_, addr, *rest)

    machine.handle_ioreq = counting  # the daemon looks it up per read
    hv.barrier()
    served.clear()
    uc = sim.cpu.uc
    uc.mem_write(LFB, bytes((0x30, 0x20, 0x10, 0)))  # pixel (0,0): B G R X
    uc.mem_write(LFB + 4 * (64 * 5 + 7), bytes((0xFF, 0, 0, 0)))  # (7,5) blue
    assert bytes(vga.vram[0:4]) == bytes((0x30, 0x20, 0x10, 0))
    hv.barrier()  # an INVALIDATE: the only ioreq since the stores
    assert served == [(8, 0)]
    frame = render(capture(vga))
    assert (frame.width, frame.height, frame.mode) == (64, 32, "vbe32")
    assert frame.rgb[0:3] == bytes((0x10, 0x20, 0x30))
    o = 3 * (64 * 5 + 7)
    assert frame.rgb[o : o + 3] == bytes((0, 0, 0xFF))

    # The daemon's writes show on the vCPU side too (one memfd).
    vga.vram[8:12] = b"\x01\x02\x03\x04"
    assert bytes(uc.mem_read(LFB + 8, 4)) == b"\x01\x02\x03\x04"

    # BAR0 moves while decoding: MEM_ADD with the same id at the new address.
    hv.pci_cfg_write(devfn, 0x10, 4, MOVED)
    assert sim.dm_regions[R.REGION_VRAM].gpa == MOVED
    assert hv.state.dm_regions[R.REGION_VRAM][0] == MOVED
    assert bytes(uc.mem_read(MOVED, 4)) == bytes((0x30, 0x20, 0x10, 0))
    with pytest.raises(UcError):
        uc.mem_read(LFB, 4)  # the old address is unmapped

    # Memory decoding off: MEM_DEL, the region is gone on both sides.
    hv.pci_cfg_write(devfn, 0x04, 2, 0x1)
    assert R.REGION_VRAM not in sim.dm_regions
    assert R.REGION_VRAM not in hv.state.dm_regions
    with pytest.raises(UcError):
        uc.mem_read(MOVED, 4)
    # ... and back on: the region returns where BAR0 points.
    hv.pci_cfg_write(devfn, 0x04, 2, 0x3)
    assert sim.dm_regions[R.REGION_VRAM].gpa == MOVED
    assert bytes(uc.mem_read(MOVED, 4)) == bytes((0x30, 0x20, 0x10, 0))
    assert hv.state.errors == []
    assert vga.counters["vram_moves"] == 4


def test_client_refuses_a_mem_del_of_a_hypervisor_region() -> None:
    from devmodel.client.state import HypervisorState
    from devmodel.wire import codec
    from devmodel.wire.constants import MsgType
    from devmodel.wire.framing import Message

    st = HypervisorState()
    deleted: list[int] = []
    st.on_mem_del = deleted.append
    st.handle_mem_del(Message(MsgType.MEM_DEL, 0, 7, 0, codec.MEM_DEL.pack(3, 0), []))
    st.handle_mem_del(Message(MsgType.MEM_DEL, 0, 8, 0, codec.MEM_DEL.pack(0x80000010, 0), []))
    st.handle_mem_del(Message(MsgType.MEM_DEL, 0, 9, 0, b"\0" * 4, []))
    assert deleted == [] and [e[0] for e in st.errors] == [7, 8, 9]
