"""--nic puts an e1000 in the next free slot of a real daemon, wired to its backend."""

from __future__ import annotations

import socket

from devmodel.client import Hypervisor


def test_nic_option_adds_an_e1000_after_vga():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    port = peer.getsockname()[1]
    try:
        with Hypervisor.spawn(["--domid", "4", "--nic",
                               f"mac=00:16:3e:00:00:01,model=e1000,backend=udp,peer=127.0.0.1:{port}"],
                              ram=8 << 20) as hv:
            found = hv.pci_scan()
            assert (found[2 << 3]["vendor"], found[2 << 3]["device"]) == (0x5853, 0x0001)
            assert (found[3 << 3]["vendor"], found[3 << 3]["device"]) == (0x1234, 0x1111)
            nic = found[4 << 3]
            assert (nic["vendor"], nic["device"], nic["class"]) == (0x8086, 0x100E, 0x020000)
            hv.process.signal()
            assert hv.process.wait_exit() == 0
    finally:
        peer.close()


def test_bad_nic_spec_is_a_clear_error(devmodel_daemon):
    import pytest

    with pytest.raises(RuntimeError, match="unknown key 'colour'"):
        devmodel_daemon("--nic", "colour=blue")
