"""SeaBIOS (Debian's bios-256k.bin) POSTs with the Xen platform device at 00:02.0, through the
real daemon (in a thread) on the simulated CPU: it enumerates the device and maps both BARs.
And `devmodel boot` (BootConfig.xen_platform, or `--xen-platform` on its command line) turns
the device on and off as `devmodel run` does: the Xen layout (platform 00:02.0, VGA 00:03.0)
or the plain pc one (VGA 00:02.0), and the demo disk boots either way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dmsupport import run_until, simulated

from devmodel.boot import BootConfig, boot, machine_argv
from devmodel.pc import PcOptions, build_pc
from devmodel.xen import build_xen_platform

BIOS = Path("/usr/share/seabios/bios-256k.bin")
RAM = 32 << 20
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(not BIOS.exists(), reason="SeaBIOS missing (apt-get install seabios)")


def test_seabios_posts_with_the_platform_device() -> None:
    def factory():
        m = build_pc(PcOptions(virtual_clock=True, bios=str(BIOS), serial=[], memory=RAM,
                               xen_platform=False, vga="none"))
        build_xen_platform(m)
        return m

    with simulated(factory, RAM) as (daemon, hv, sim):
        sink = daemon.machine.debug_sink
        deadline = time.monotonic() + TIMEOUT

        def done(_sim) -> bool:
            return time.monotonic() > deadline or "No bootable device" in sink.text()

        run_until(sim, done)
        hv.barrier()
        log = sink.text()
        assert "No bootable device" in log, log[-2000:]
        assert "00:02.0" in log and "5853:0001" in log, log[:3000]
        plat = daemon.machine.device("xen-platform")
        bars = daemon.machine.pci.mapped(plat)
        assert bars[0].length == 0x100 and bars[1].length == 0x1000000, bars
        assert plat.command & 3 == 3
        assert daemon.machine.counters["device_failure"] == 0


@pytest.mark.parametrize("on", [True, False])
def test_boot_chooses_the_platform_device(on: bool) -> None:
    res = boot(BootConfig(bios=str(BIOS), xen_platform=on, timeout=TIMEOUT))
    assert res.exit_code == 0 and res.outcome == "halted", res.message
    log = res.text("debugcon")
    init = [line for line in log.splitlines() if line.startswith("PCI: init bdf=00:0")]
    if on:
        assert "PCI: init bdf=00:02.0 id=5853:0001" in init, init
        assert "PCI: init bdf=00:03.0 id=1234:1111" in init, init
    else:
        assert not any("5853:" in line for line in init), init
        assert "PCI: init bdf=00:02.0 id=1234:1111" in init, init
    assert "Booting from Hard Disk" in log, log[-2000:]


def test_boot_command_line_forwards_the_choice() -> None:
    forward, refused = machine_argv(["boot", "--xen-platform", "off", "--unplug-policy", "ignore"])
    assert forward == ["--xen-platform", "off", "--unplug-policy", "ignore"] and refused == []
