"""`devmodel demo`: start a real daemon and play the hypervisor's part against it, printing
what a hypervisor sees: the handshake, the ranges claimed, the PCI bus, a guest-requested
reset, and a clean SIGTERM exit."""

from __future__ import annotations

import argparse
import time

from devmodel.client import Hypervisor
from devmodel.wire.constants import IO_RANGE_MEMORY, IO_RANGE_PCI, IO_RANGE_PORT

CLASS_NAMES = {0x0600: "Host bridge", 0x0601: "ISA bridge", 0x0101: "IDE interface",
               0x0C03: "USB controller", 0x0680: "Bridge", 0x0300: "VGA compatible controller",
               0x0200: "Ethernet controller", 0xFF80: "Unassigned class"}


def main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    daemon_args = ["--domid", "1", "--log-level", args.log_level]
    with Hypervisor.spawn(daemon_args, ram=64 << 20) as hv:
        assert hv.process is not None
        print(f"daemon pid {hv.process.pid}, socket {hv.process.socket_path}")
        v = hv.hello_reply
        assert v is not None
        print(f"HELLO: protocol {v[0]}, page {v[1]}, {v[2]} vCPU, features {v[3]:#x}, domid {v[4]}")
        st = hv.state
        print(f"ioreq server {st.server_id}: enabled={st.server_enabled}, "
              f"buffered mode {st.bufioreq_mode}")
        for kind, rs in ((IO_RANGE_PORT, st.ports), (IO_RANGE_MEMORY, st.mmio)):
            for start, end in rs:
                what = "port" if kind == IO_RANGE_PORT else "mmio"
                print(f"  claims {what} {start:#06x}-{end:#06x}")
        for start, _ in st.pci:
            print(f"  claims PCI 00:{start >> 3:02x}.{start & 7}")
        assert IO_RANGE_PCI == 2
        print("PCI bus 0 (via PCI_CONFIG ioreqs):")
        for devfn, info in hv.pci_scan().items():
            cls = info["class"] >> 8
            print(f"  00:{devfn >> 3:02x}.{devfn & 7} {CLASS_NAMES.get(cls, f'Class {cls:04x}')}: "
                  f"[{info['vendor']:04x}:{info['device']:04x}] rev {info['revision']:02x} "
                  f"header {info['header_type']:02x} "
                  f"subsystem [{info['subsystem_vendor']:04x}:{info['subsystem']:04x}]")
        print(f"PIRQ routes after reset: {st.link_route}")
        hv.outb(0xCF9, 0x02)
        hv.outb(0xCF9, 0x06)  # SeaBIOS's qemu_reboot sequence
        hv.poll(0.2)
        print(f"guest wrote 0x06 to 0xCF9 -> remote_shutdown reasons seen: {st.shutdowns} (1 = reboot)")
        hv.process.signal()
        rc = hv.process.wait_exit()
        print(f"SIGTERM -> daemon exit code {rc} after {time.monotonic() - t0:.2f} s")
        return 0 if rc == 0 and st.shutdowns == [1] else 1
