"""SeaBIOS runs the VGA BIOS (vgabios-stdvga.bin, the standard VGA's ROM BAR) on the simulated
CPU, through the real daemon (in a thread, on a real socket): the SeaBIOS banner it prints
through int 10h ends up in VRAM, and the rendered text screen shows it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devmodel.backends.display import encode_png
from devmodel.client import Hypervisor, InProcessDaemon
from devmodel.daemon import DaemonConfig
from devmodel.hvsim import Simulator
from devmodel.pc import PcOptions, build_pc
from devmodel.vga import capture, render, text_screen

BIOS = Path("/usr/share/seabios/bios-256k.bin")
VGABIOS = Path("/usr/share/seabios/vgabios-stdvga.bin")
RAM = 32 << 20
TIMEOUT = 60.0  # wall seconds

pytestmark = pytest.mark.skipif(not (BIOS.exists() and VGABIOS.exists()),
                                reason="SeaBIOS missing (apt-get install seabios)")


def test_seabios_banner_on_the_vga_text_screen() -> None:
    def factory():
        # build_pc adds the standard VGA (00:03.0 after the Xen platform device) by default.
        return build_pc(PcOptions(virtual_clock=True, bios=str(BIOS), serial=[], memory=RAM))

    daemon = InProcessDaemon(factory, DaemonConfig(domid=1, virtual_clock=True))
    hv = Hypervisor.connect(daemon.socket_path, handshake=False)
    sim = Simulator(hv, RAM)
    try:
        hv.hello()
        for rid, region in enumerate(sim.ram.regions()):
            hv.mem_add(rid, region.gpa, region.size, sim.ram.fd, region.offset, region.flags)
        hv.wait_enabled()
        vga = daemon.machine.device("vga")
        deadline = time.monotonic() + TIMEOUT
        seen: list[str] = []

        def banner(_sim) -> bool:
            if time.monotonic() > deadline:
                return True
            seen[:] = text_screen(capture(vga))
            return any("SeaBIOS (version" in line for line in seen)  # the whole banner line

        stop = None
        for _ in range(200):
            stop = sim.run(max_insns=2_000_000, until=banner)
            if banner(sim) or stop.reason.value not in ("budget", "requested"):
                break
        hv.barrier()
        lines = text_screen(capture(vga))
        assert any("SeaBIOS (version" in line for line in lines), (stop, lines)
        frame = render(capture(vga))
        assert (frame.width, frame.height, frame.mode) == (720, 400, "text")
        assert any(frame.rgb)  # glyphs from the font the VGA BIOS loaded are drawn
        assert encode_png(frame.width, frame.height, frame.rgb)[:4] == b"\x89PNG"
    finally:
        sim.close()
        hv.close()
        daemon.stop()
