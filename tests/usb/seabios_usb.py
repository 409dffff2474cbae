"""Boot real SeaBIOS with USB devices: devmodel.boot's BootSession, but with the daemon run
in-process on a machine built here (build_pc + build_usb), so that a test can look at the USB
device objects after the boot (`--usb` on a daemon process is tested too)."""

from __future__ import annotations

import os

from devmodel.boot import BootConfig, BootResult, BootSession, FileTail
from devmodel.client import Hypervisor, InProcessDaemon
from devmodel.daemon import DaemonConfig
from devmodel.hvsim import Simulator
from devmodel.pc import PcOptions, build_pc

SEABIOS = "/usr/share/seabios/bios-256k.bin"


class UsbBootSession(BootSession):
    def __init__(self, config: BootConfig, usb: list, disks: list[str] | None = None) -> None:
        self.usb = usb
        self.ide_disks = disks or []
        self.daemon: InProcessDaemon | None = None
        super().__init__(config)

    def _factory(self, debugcon: str):
        c = self.config

        def build():
            # build_pc maps the shadow area for DMA (SeaBIOS's UHCI queues live there).
            return build_pc(PcOptions(virtual_clock=True, bios=c.bios, memory=c.memory, serial=[],
                                      debugcon=f"file:{debugcon}", disks=list(self.ide_disks),
                                      usb=list(self.usb)))
        return build

    def _start(self) -> None:
        c = self.config
        path = os.path.join(self.tmpdir, "debugcon.log")
        self.tails.append(FileTail(path, self.outputs["debugcon"]))
        self._observe_debugcon = False
        self.outputs["e9"].echo = None
        self.daemon = InProcessDaemon(self._factory(path), DaemonConfig(domid=1, virtual_clock=True))
        self.hv = Hypervisor.connect(self.daemon.socket_path, handshake=False)
        # PM_TMR reads are answered by the simulator (as Xen does); while SeaBIOS polls a TD
        # in RAM the simulator still sends the time every CLOCK_PERIOD_NS of virtual time, so
        # the UHCI frame timer runs during a USB-disk INT 13h read.
        self.sim = Simulator(self.hv, c.memory)
        self.sim.observers.append(self._observe)
        self.hv.hello()
        for rid, region in enumerate(self.sim.ram.regions()):
            self.hv.mem_add(rid, region.gpa, region.size, self.sim.ram.fd, region.offset, region.flags)
        self.hv.wait_enabled()

    def close(self) -> None:
        super().close()
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None


def boot_with_usb(usb: list, until: str | None = None, timeout: float = 30.0,
                  disks: list[str] | None = None) -> tuple[BootResult, object]:
    cfg = BootConfig(bios=SEABIOS, timeout=timeout, until=until, demo_disk=False)
    with UsbBootSession(cfg, usb, disks) as s:
        result = s.run()
        machine = s.daemon.machine if s.daemon else None
    return result, machine
