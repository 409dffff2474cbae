"""Smoke test: Debian's SeaBIOS runs its POST on the simulator against the in-process fake
device model (debug port, CMOS, CF8/CF9, an i440FX host bridge; no fw_cfg, no disks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hvsim_fakes import FakeDeviceModel

from devmodel.hvsim import DEFAULT_BIOS, Simulator, StopReason

pytestmark = pytest.mark.skipif(
    not Path(DEFAULT_BIOS).exists(),
    reason=f"{DEFAULT_BIOS} missing (apt-get install seabios)",
)

RAM = 64 << 20


def machine() -> tuple[Simulator, FakeDeviceModel]:
    dm = FakeDeviceModel(RAM)
    sim = Simulator(dm, RAM)
    dm.announce()
    return sim, dm


def boot(until: bytes) -> tuple[Simulator, FakeDeviceModel, object]:
    sim, dm = machine()
    stop = sim.run(until=lambda s: until in dm.console, max_insns=60_000_000)
    return sim, dm, stop


def test_post_reaches_no_bootable_device() -> None:
    sim, dm, stop = boot(b"No bootable device.")
    try:
        console = dm.console.decode()
        assert stop.reason is StopReason.REQUESTED, (stop, console[-500:])
        for line in ("SeaBIOS (version", "Running on QEMU (i440fx)", "RamSize: 0x04000000 [cmos]",
                     "Found 1 PCI devices", "CPU Mhz=1000", "Booting from Hard Disk...",
                     "No bootable device."):
            assert line in console
        # The boot-menu wait ran on timer interrupts delivered at HLT.
        assert sim.stats.irqs > 10 and sim.stats.soft_ints.get(0x1C, 0) == sim.stats.irqs
        # SeaBIOS unlocked the shadow, then locked it except the UMB at 0xE8000-0xEFFFF;
        # the fake turned that into set_mem_type, which the simulator applied.
        assert dm.bridge is not None
        assert bytes(dm.bridge.cfg[0x59:0x60]) == bytes.fromhex("10111111111133")
        writable = {pfn for pfn, (_, t) in sim.mem_types.items() if t == 0}
        assert writable == {0xE8, 0xEC} and sim.mem_types[0xF0] == (16, 1)
        assert sim.stats.rom_writes_dropped == 0
        assert sim.stats.cpuid.get(0x40000000) == 2
        # Determinism: a second machine takes exactly the same path.
        sim2, dm2, stop2 = boot(b"No bootable device.")
        try:
            assert dm2.console == dm.console
            assert (sim2.clock.ns, sim2.stats.exits) == (sim.clock.ns, sim.stats.exits)
        finally:
            sim2.close()
            dm2.close()
    finally:
        sim.close()
        dm.close()


def test_reboot_after_boot_failure_and_second_post() -> None:
    sim, dm = machine()
    try:
        # "Retrying in 60 seconds", then "Rebooting." and a write of 6 to 0xCF9.
        stop = sim.run(until_ns=70_000_000_000)
        assert stop.reason is StopReason.SHUTDOWN and stop.code == 1, stop
        assert 60e9 < sim.clock.ns < 65e9
        assert b"Rebooting." in dm.console
        mark = len(dm.console)
        sim.reset()
        dm.reset()
        stop = sim.run(until=lambda s: b"No bootable device." in dm.console[mark:])
        assert stop.reason is StopReason.REQUESTED, (stop, dm.console[mark:][-300:])
        assert dm.console[mark:].startswith(b"SeaBIOS (version")
    finally:
        sim.close()
        dm.close()
