"""Posted writes to the VGA, as Xen sends them: BUFIOREQ batches over a real socket to a real
daemon (in a thread), mixing VGA port writes (Xen's stdvga intercept posts those too) and
1/2/4/8-byte window stores, in planar, chain-4 and VBE banked modes. The VRAM afterwards must
be what the same accesses made one synchronous ioreq at a time -- order and latches included
(write mode 1 copies the latches the previous read loaded)."""

from __future__ import annotations

import random

import pytest
from vgahelp import MODE12, MODE13, PIO, SLOT, Bus, make

from devmodel.client import Hypervisor, InProcessDaemon
from devmodel.daemon import DaemonConfig
from devmodel.pc import PcOptions, build_pc
from devmodel.vga import regs as R

COPY = 1
WINDOW = 0xA0000
RAM = 16 << 20


@pytest.fixture
def rig():
    daemon = InProcessDaemon(lambda: build_pc(PcOptions(virtual_clock=True, serial=[], memory=RAM,
                                                        vga_mem=1)),
                             DaemonConfig(domid=1, virtual_clock=True))
    hv = Hypervisor.connect(daemon.socket_path)
    hv.add_ram(RAM)
    try:
        assert hv.buffered  # the daemon took the BUFIOREQ feature
        yield hv, daemon.machine.device("vga")
    finally:
        hv.close()
        daemon.stop()


def workload(seed: int, mode: str) -> list[tuple[int, int, int, int]]:
    """(type, addr, size, value) accesses a driver of `mode` might post."""
    rnd = random.Random(seed)
    out: list[tuple[int, int, int, int]] = []
    for _ in range(1500):
        r = rnd.random()
        if mode == "planar" and r < 0.15:  # write mode, bit mask, map mask, set/reset, rotate
            reg, val = rnd.choice([(5, rnd.randrange(4)), (8, rnd.randrange(256)),
                                   (0, rnd.randrange(16)), (1, rnd.randrange(16)),
                                   (3, rnd.randrange(32))])
            out += [(PIO, 0x3CE, 1, reg), (PIO, 0x3CF, 1, val)]
        elif mode == "planar" and r < 0.2:
            out += [(PIO, 0x3C4, 1, 2), (PIO, 0x3C5, 1, rnd.randrange(16))]
        elif mode == "vbe" and r < 0.05:
            out += [(PIO, 0x1CE, 2, R.VBE_INDEX_BANK), (PIO, 0x1CF, 2, rnd.randrange(16))]
        else:
            size = rnd.choice([1, 1, 2, 4, 8]) if mode != "planar" else 1
            off = rnd.randrange(0x10000 - size + 1)
            out.append((COPY, WINDOW + off, size, rnd.getrandbits(8 * size)))
    return out


@pytest.mark.parametrize("mode", ["planar", "chain4", "vbe"])
def test_posted_batches_equal_synchronous_ioreqs(rig, mode: str) -> None:
    hv, vga = rig
    m, ref = make(1)  # the reference: the same accesses, one strict ioreq each
    bus = Bus(m)

    def setup(outb, outw) -> None:
        if mode == "vbe":
            for i, v in ((R.VBE_INDEX_XRES, 640), (R.VBE_INDEX_YRES, 480), (R.VBE_INDEX_BPP, 32),
                         (R.VBE_INDEX_ENABLE, R.VBE_ENABLED)):
                outw(0x1CE, i)
                outw(0x1CF, v)
            return
        table = MODE12 if mode == "planar" else MODE13
        outb(0x3C2, table["misc"])
        for i, v in enumerate(table["seq"]):
            outb(0x3C4, i)
            outb(0x3C5, v)
        for i, v in enumerate(table["gfx"]):
            outb(0x3CE, i)
            outb(0x3CF, v)

    setup(hv.outb, hv.outw)
    setup(bus.outb, bus.outw)
    assert ref.devfn == SLOT << 3 and vga.vram_size == ref.vram_size
    accesses = workload(7, mode)
    reads = [WINDOW + 0x40 * i for i in range(8)]  # loads the latches between batches
    for n, start in enumerate(range(0, len(accesses), 400)):
        batch = accesses[start : start + 400]
        hv.bufioreq(batch)
        for typ, addr, size, value in batch:
            m.handle_ioreq(typ, addr, value, 1, size, 0x01)
        assert hv.readb(reads[n % 8]) == bus.readb(reads[n % 8])  # synchronous, after the batch
    hv.barrier()
    assert bytes(vga.vram) == bytes(ref.vram)
    assert any(ref.vram)

