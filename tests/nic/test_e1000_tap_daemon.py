"""The issue's proof on the client library: a REAL daemon with `--nic ...,backend=tap` in a
network namespace this test creates, the guest driver of e1000_guest.py (reset, EEPROM, PHY,
rings, interrupts through real ioreqs and dm_ops), and the Linux kernel on the other side
answering ARP and ICMP echo. (TSO and checksum offload against the kernel are in
tests/backends/test_net.py, on the in-process rig.) No traffic leaves the namespace."""

from __future__ import annotations

import struct
import time

import pytest
from e1000_guest import GuestE1000
from e1000_rig import cksum, ipv4
from netns_support import ip, private_netns

from devmodel.client import Hypervisor

NS_IP = bytes([10, 214, 0, 1])
GUEST_IP = bytes([10, 214, 0, 2])
MAC = bytes.fromhex("00163e000042")
TAP = "dmtapd0"


@pytest.fixture
def netns():
    with private_netns("dmtapd") as name:
        yield name


def wait_for(g: GuestE1000, pred, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for f in g.receive(1, timeout=0.2):
            seen.append(f)
            if pred(f):
                return f
    raise AssertionError(f"no matching frame; saw {[s[:16].hex() for s in seen]}")


def test_daemon_e1000_talks_arp_and_icmp_with_the_kernel(netns):
    spec = f"model=e1000,mac=00:16:3e:00:00:42,backend=tap,ifname={TAP},netns={netns},create=on,rom=off"
    with Hypervisor.spawn(["--vga", "none", "--nic", spec], ram=16 << 20) as hv:
        for args in (["link", "set", "lo", "up"], ["addr", "add", "10.214.0.1/24", "dev", TAP],
                     ["link", "set", TAP, "up"]):
            ip(netns, *args)
        g = GuestE1000(hv)
        assert g.init() == MAC
        # ARP: who has 10.214.0.1? The kernel answers to our MAC.
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC, GUEST_IP, bytes(6), NS_IP)
        g.send(b"\xff" * 6 + MAC + b"\x08\x06" + arp)
        reply = wait_for(g, lambda f: f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02")
        ns_mac = reply[22:28]
        assert reply[:6] == MAC and reply[28:32] == NS_IP and reply[38:42] == GUEST_IP
        # ICMP echo, three of them, answered in order
        for seq in range(1, 4):
            icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x4243, seq) + b"devmodel-daemon" * 4)
            icmp[2:4] = struct.pack("!H", cksum(bytes(icmp)))
            g.send(ns_mac + MAC + b"\x08\x00" + ipv4(GUEST_IP, NS_IP, 1, bytes(icmp)))
            pong = wait_for(g, lambda f: f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0)
            assert struct.unpack("!HH", pong[38:42]) == (0x4243, seq)
            assert pong[42:].startswith(b"devmodel-daemon") and cksum(pong[34:]) == 0
        hv.process.signal()
        assert hv.process.wait_exit() == 0
