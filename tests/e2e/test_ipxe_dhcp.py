"""iPXE's e1000 option ROM (Debian's ipxe-qemu) runs under SeaBIOS on the simulated CPU, through
the real daemon (in a thread, on a real socket), initialises the 82540EM and gets an address
by DHCP from dnsmasq over a real tap device.

The network is a namespace the test creates and deletes: a bridge with 10.77.0.1/24 on which
dnsmasq serves DHCP (nothing else: no DNS, no TFTP), and a persistent tap enslaved to it, the
way the toolstack bridges a `vifN.M-emu`. The daemon attaches to that tap inside the namespace
(`--nic ...,backend=tap,ifname=...,netns=...,capture=FILE`), so no frame can leave it. Boot
order `n` (QEMU's -boot n): SeaBIOS boots the ROM from the e1000's ROM BAR first.

Proof, from both sides: the screen (int 10h into the VGA's text mode) shows iPXE finding the
82540EM and starting "Configuring (net0 MAC)"; the NIC's capture holds iPXE's DHCPDISCOVER,
dnsmasq's OFFER, iPXE's DHCPREQUEST for the offered address (it parsed the OFFER it received
through the RX ring) and dnsmasq's DHCPACK to our MAC.

Two settings keep the run short:
- dnsmasq sends iPXE's own option 175.176 (`no-pxedhcp`), so iPXE requests the offer at once
  instead of waiting two (virtual) seconds for ProxyDHCP offers. iPXE's timer works: its BIOS
  timer opens the interrupt window with `sti; nop; nop; cli`, which has no exit, and hvsim's
  interrupt-window watch delivers IRQ 0 there; without the option the run takes about 60 s
  and ends with "Configuring (net0 ...)...... ok" and "Nothing to boot" (checked by hand);
`exit_ns` is raised so the firmware's timed waits (Ctrl-B prompt, link-up) pass in fewer exits.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from dmsupport import simulated, stop_process
from netns_support import private_netns, tap_skip_reason

from devmodel.backends.net import read_pcap
from devmodel.nic import E1000_ROMS
from devmodel.pc import PcOptions, build_pc
from devmodel.vga import capture, text_screen

BIOS = Path("/usr/share/seabios/bios-256k.bin")
RAM = 32 << 20
MAC = "52:54:00:12:34:56"
SUBNET = "10.77.0"
TIMEOUT = 40.0  # wall seconds for the guest part; it takes about 10-15
EXIT_NS = 50_000  # virtual time per exit (hvsim's default is 1 us)
DHCPDISCOVER, DHCPOFFER, DHCPREQUEST, DHCPACK = 1, 2, 3, 5


def _why_skip() -> str | None:
    if not BIOS.exists():
        return "SeaBIOS missing (apt-get install seabios)"
    if not any(os.path.exists(p) for p in E1000_ROMS):
        return "iPXE's e1000 ROM missing (apt-get install ipxe-qemu)"
    if shutil.which("dnsmasq") is None:
        return "dnsmasq missing (apt-get install dnsmasq-base)"
    return tap_skip_reason()  # a network namespace, a bridge and a tap


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


@pytest.fixture
def netns(tmp_path):
    """A namespace with br0 (SUBNET.1/24), a persistent tap0 in it, and dnsmasq on br0."""
    with private_netns("dm-ipxe-", ("link", "set", "lo", "up"),
                       ("link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"),
                       ("addr", "add", f"{SUBNET}.1/24", "dev", "br0"),
                       ("link", "set", "br0", "up"),
                       ("tuntap", "add", "dev", "tap0", "mode", "tap"),
                       ("link", "set", "tap0", "master", "br0"),
                       ("link", "set", "tap0", "up")) as name:
        dnsmasq = None
        try:
            log = tmp_path / "dnsmasq.log"
            dnsmasq = subprocess.Popen(
                ["ip", "netns", "exec", name, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
                 "--port=0", "--interface=br0", "--bind-interfaces", "--pid-file",
                 f"--dhcp-range={SUBNET}.50,{SUBNET}.60,1h",
                 f"--dhcp-leasefile={tmp_path / 'leases'}", "--dhcp-option=encap:175,176,1b",
                 "--log-dhcp", f"--log-facility={log}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 10
            while not (log.exists() and "DHCP, sockets bound" in log.read_text()):
                if dnsmasq.poll() is not None:
                    pytest.skip(f"dnsmasq did not start: {dnsmasq.stderr.read().strip()}")
                assert time.monotonic() < deadline, "dnsmasq did not start in 10 s"
                time.sleep(0.05)
            yield name, log
        finally:
            if dnsmasq is not None:
                stop_process(dnsmasq)


def dhcp_messages(frames: list[bytes]) -> list[tuple[int, bytes, bytes, bytes]]:
    """(message type, Ethernet source, client hardware address, your-IP) of every DHCP frame."""
    out = []
    for f in frames:
        if len(f) < 14 + 20 + 8 + 240 or f[12:14] != b"\x08\x00" or f[23] != 17:
            continue
        l4 = 14 + (f[14] & 0xF) * 4
        sport, dport = struct.unpack("!HH", f[l4 : l4 + 4])
        if {sport, dport} != {67, 68}:
            continue
        bootp = f[l4 + 8 :]
        if bootp[236:240] != b"\x63\x82\x53\x63":
            continue
        i, mtype = 240, None
        while i < len(bootp) and bootp[i] != 255:
            if bootp[i] == 0:
                i += 1
                continue
            if bootp[i] == 53 and i + 2 < len(bootp):
                mtype = bootp[i + 2]
            i += 2 + bootp[i + 1] if i + 1 < len(bootp) else 1
        if mtype is not None:
            out.append((mtype, f[6:12], bootp[28:34], bootp[16:20]))
    return out


def test_ipxe_rom_gets_a_dhcp_lease_over_a_tap(netns, tmp_path) -> None:
    ns, dnsmasq_log = netns
    pcap = str(tmp_path / "nic.pcap")
    mac = bytes.fromhex(MAC.replace(":", ""))

    def factory():
        return build_pc(PcOptions(
            virtual_clock=True, bios=str(BIOS), serial=[], memory=RAM, boot_order="n",
            nics=[f"model=e1000,mac={MAC},backend=tap,ifname=tap0,netns={ns},capture={pcap}"]))

    with simulated(factory, RAM, exit_ns=EXIT_NS) as (daemon, hv, sim):
        vga = daemon.machine.device("vga")
        deadline = time.monotonic() + TIMEOUT

        def acked(_sim) -> bool:
            if time.monotonic() > deadline:
                return True
            try:
                msgs = dhcp_messages(read_pcap(pcap))
            except (OSError, ValueError):
                return False
            return any(t == DHCPACK and chaddr == mac for t, _, chaddr, _ in msgs)

        stop = None
        while not acked(sim):
            stop = sim.run(max_insns=20_000_000, until=acked)
            if stop.reason.value not in ("budget", "requested"):
                break
        hv.barrier()
        screen = "\n".join(line.rstrip() for line in text_screen(capture(vga)) if line.strip())
        msgs = dhcp_messages(read_pcap(pcap))
        log = dnsmasq_log.read_text()
        context = (stop, screen, [(t, s.hex(), c.hex(), y.hex()) for t, s, c, y in msgs], log[-1500:])
        assert "iPXE" in screen and "82540em" in screen, context
        assert f"Configuring (net0 {MAC})" in screen, context
        ours = [(t, yiaddr) for t, src, chaddr, yiaddr in msgs if chaddr == mac]
        sent = [t for t, src, chaddr, _ in msgs if src == mac]
        assert DHCPDISCOVER in sent and DHCPREQUEST in sent, context
        offer = next(y for t, y in ours if t == DHCPOFFER)
        ack = next(y for t, y in ours if t == DHCPACK)
        assert offer == ack and ack[:3] == bytes(int(x) for x in SUBNET.split(".")), context
        # the REQUEST came after the OFFER: iPXE took the OFFER out of the RX ring
        kinds = [t for t, _ in ours]
        assert kinds.index(DHCPOFFER) < kinds.index(DHCPREQUEST) < kinds.index(DHCPACK), context
        assert f"DHCPACK(br0) {'.'.join(str(b) for b in ack)} {MAC}" in log, context
