"""The switch to PV drivers, end to end with real components (issue 8, first Proof bullet).

A real daemon process (`devmodel run`, monotonic clock, so disk I/O is truly asynchronous) with
an IDE disk on a raw image file, an ATAPI CD-ROM on an ISO file and an e1000 on a REAL tap: a
persistent `dmpv0` the test creates in a private network namespace, as the toolstack creates
`vifN.M-emu`. A qemu.qmp client listens on the QMP socket. The test guest (devmodel.client on
the hypervisor socket):

1. runs a DMA write storm on the disk while frames flow through the e1000 both ways: each
   transmitted frame is read on the kernel side of the tap (an AF_PACKET socket in the
   namespace), each frame the kernel side sends lands in the guest's RX ring, and a thread on
   the kernel side keeps sending broadcast frames into the tap all along (before, during and
   after the unplug);
2. mid-storm, with one more WRITE DMA started and not yet acknowledged and a last frame just
   queued, performs Linux's unplug sequence (magic 0x49D2, protocol version, product number 3,
   driver build 1, unplug mask IDE disks | NICs).

Then, as the issue asks:
- every write acknowledged before the unplug is in the image file (byte compare), and so is
  the write in flight (QEMU drains the disk before it detaches it: blk_drain + blk_flush);
- no ioreq can reach the IDE disk or the e1000: the hypervisor was told to stop routing their
  ranges (UNMAP dm_ops: the client's routing table no longer has the bus-master BAR, the NIC's
  BAR or its PCI function), and ioreqs sent anyway read all-ones, the NIC's config space reads
  all-ones, writes change nothing (the image file is unchanged by a PIO write and a stale
  bus-master start; a stale TX doorbell produces no frame);
- the removed NIC writes nothing more into guest RAM although frames keep arriving at the
  tap (the RX ring and buffers stay as they were at the unplug);
- the CD-ROM still answers: ATAPI READ(10) returns the ISO's blocks;
- the tap has been released: no descriptor of the daemon points at /dev/net/tun any more
  (/proc/PID/fd) nor at the disk image (the ISO stays open), and someone else can attach the
  tap and then delete it (before the unplug the attach fails with EBUSY);
- the daemon counted those stale ioreqs (its counters line at exit: unclaimed MMIO/PIO);
- QMP got DEVICE_DELETED for the disk and the NIC and the XEN_PLATFORM_UNPLUG summary; query-pci
  and query-block agree; the daemon's log has the unplug line;
- the daemon stays healthy (CMOS still answers) and exits 0 when the hypervisor goes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qmp"))

from netns_support import ip, private_netns, tap_skip_reason  # noqa: E402
from pv_guest import (  # noqa: E402
    E1000_ID,
    NIC_BAR,
    RX_BUF,
    RX_RING,
    AtapiDriver,
    E1000Driver,
    find_function,
    open_files,
)
from qmp_support import client, next_event  # noqa: E402
from xen_helpers import BMIBA, CMD0, Guest, HvPort, make_image, pattern  # noqa: E402

from devmodel.backends.net import _in_netns, open_tap  # noqa: E402
from devmodel.client import DaemonProcess, Hypervisor  # noqa: E402
from devmodel.ide import ata  # noqa: E402
from devmodel.nic import e1000_defs as d  # noqa: E402

RAM = 16 << 20
TAP = "dmpv0"
MAC = bytes.fromhex("5254000a0b0c")
DISK_SECTORS = 2048  # 1 MiB image
CHUNK = 32  # sectors per WRITE DMA (16 KiB)
STORM = 24  # acknowledged writes before the unplug
ETH_P_ALL = 0x0003
ETHERTYPE = 0x88B5  # IEEE local experimental
PACKET_OUTGOING = 4
CD_BLOCKS = 32
INJECT_S = 0.002


pytestmark = pytest.mark.skipif(tap_skip_reason() is not None, reason=tap_skip_reason() or "")


@pytest.fixture
def netns():
    with private_netns("dmpv", ("link", "set", "lo", "up"),
                       ("tuntap", "add", "dev", TAP, "mode", "tap"),  # persistent, as a vif's -emu
                       ("link", "set", TAP, "up")) as name:
        yield name


def kernel_side(ns: str) -> socket.socket:
    """An AF_PACKET socket on the tap inside the namespace: what the host's network sees."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((TAP, 0))
        return s

    s = _in_netns(ns, make)
    s.settimeout(3)
    return s


def frame(dst: bytes, src: bytes, text: bytes) -> bytes:
    return dst + src + struct.pack("!H", ETHERTYPE) + text.ljust(46, b".")


def from_guest(s: socket.socket, want: bytes) -> None:
    """Wait until the kernel side of the tap receives `want` (its own sends are skipped)."""
    while True:
        data, addr = s.recvfrom(65536)
        if addr[2] != PACKET_OUTGOING and data[: len(want)] == want:
            return


def nothing_from_guest(s: socket.socket, timeout: float = 0.3) -> list[bytes]:
    s.settimeout(timeout)
    got = []
    try:
        while True:
            data, addr = s.recvfrom(65536)
            if addr[2] != PACKET_OUTGOING:
                got.append(data)
    except (TimeoutError, OSError):
        return got


class Injector(threading.Thread):
    """The host side keeps talking: a broadcast frame into the tap every INJECT_S."""

    def __init__(self, s: socket.socket, src: bytes) -> None:
        super().__init__(name="tap-injector", daemon=True)
        self.s = s
        self.src = src
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(INJECT_S):
            try:
                self.s.send(frame(b"\xff" * 6, self.src, b"background %d" % self.sent))
                self.sent += 1
            except OSError:
                pass  # no carrier once the daemon let the tap go: the host's frames go nowhere


def tap_attach_error(ns: str) -> str | None:
    """Try to attach the tap as someone else would; the error text, or None (then detached)."""
    try:
        fd, _ = open_tap(TAP, ns, create=False)
    except ValueError as e:
        return str(e)
    os.close(fd)
    return None


def test_unplug_mid_storm_hands_disk_and_tap_over(netns, tmp_path):
    ns = netns
    img = make_image(tmp_path / "disk.img", DISK_SECTORS)
    iso = make_image(tmp_path / "cd.iso", CD_BLOCKS * 4)
    qmp = str(tmp_path / "qmp.sock")
    proc = DaemonProcess.start([
        "--qmp", qmp, "--vga", "none",
        "--disk", f"format=raw,vdev=hda,access=rw,target={img}",
        "--disk", f"vdev=hdc,devtype=cdrom,target={iso}",
        "--nic", f"model=e1000,mac={MAC.hex(':')},backend=tap,ifname={TAP},netns={ns},rom=off"])
    hv = Hypervisor.connect(proc.socket_path, process=proc)
    loop = asyncio.new_event_loop()
    ks = kernel_side(ns)
    pid = proc.pid
    qc = None
    injector = None
    try:
        hv.add_ram(RAM)
        qc = loop.run_until_complete(client(qmp))
        g = Guest(HvPort(hv))
        g.program_bars()
        nic_devfn = find_function(hv, E1000_ID)
        nic_id = f"e1000.{nic_devfn >> 3}"
        nic = E1000Driver(hv, nic_devfn, MAC)
        nic.up()
        # the daemon holds the tap and the image now
        assert "/dev/net/tun" in open_files(pid) and str(img) in open_files(pid)
        assert "busy" in (tap_attach_error(ns) or "").lower()
        peer = bytes.fromhex("02aabbccddee")
        injector = Injector(ks, bytes.fromhex("02ffeeddccbb"))
        injector.start()
        background = 0

        # 1. the storm: DMA writes acknowledged one after the other, frames both ways
        expected = bytearray(img.read_bytes())
        for k in range(STORM):
            data = pattern(CHUNK, seed=k + 1)
            lba = (k * 3 * CHUNK) % (DISK_SECTORS - CHUNK)
            g.dma_write(lba, data)  # returns once the interrupt says it is done
            expected[lba * 512 : (lba + CHUNK) * 512] = data
            out = frame(peer, MAC, b"guest->tap %d" % k)
            nic.send(out)
            from_guest(ks, out[:20])
            inbound = frame(b"\xff" * 6, peer, b"tap->guest %d" % k)
            ks.send(inbound)
            background += nic.receive_matching(inbound)
        assert nic.rd(d.STATUS) & d.STATUS_LU

        # 2. mid-storm: one more write started (not acknowledged), a last frame queued, unplug
        last_lba = DISK_SECTORS - 2 * CHUNK
        last = pattern(CHUNK, seed=99)
        g.dma_write_issue(last_lba, last)
        hv.pio_write(BMIBA, 1, ata.BM_CMD_START)
        last_frame = frame(peer, MAC, b"last before the unplug")
        nic.send(last_frame)  # acknowledged (DD): the host must get it
        assert g.linux_unplug(0x1 | 0x2) == "unplugged"
        hv.barrier()
        rx_area = (hv.ram.read(RX_RING, 16 * 16), hv.ram.read(RX_BUF, 16 * 2048))
        sent_at_unplug = injector.sent

        # every acknowledged write is in the file, and the drained in-flight one too
        expected[last_lba * 512 : (last_lba + CHUNK) * 512] = last
        on_disk = img.read_bytes()
        assert on_disk == bytes(expected)

        # the hypervisor no longer routes anything of the disk's DMA engine or the NIC to us
        assert not hv.claims_port(BMIBA, 1) and not hv.claims_port(BMIBA + 2, 1)
        assert not hv.claims_mmio(NIC_BAR, 4) and not hv.claims_mmio(NIC_BAR + d.TDT, 4)
        assert not hv.claims_pci(nic_devfn)
        assert hv.claims_port(0x170, 1) and hv.claims_port(CMD0, 1)  # legacy IDE (the CD-ROM)

        # ioreqs sent anyway: all-ones, and no effect
        assert nic.rd(d.STATUS) == 0xFFFFFFFF
        assert hv.pci_cfg_read(nic_devfn, 0x00, 4) == 0xFFFFFFFF
        assert hv.pci_cfg_read(nic_devfn, 0x10, 4) == 0xFFFFFFFF
        assert hv.pio_read(BMIBA + 2, 1) == 0xFF
        hv.ram.write(0x210000, frame(peer, MAC, b"stale doorbell"))
        nic.wr(d.TDT, (nic.tx_tail + 1) % 16)
        assert g.status() == 0  # the disk's position is empty
        g.taskfile(0, 1)
        hv.pio_write(CMD0 + 7, 1, ata.CMD_WRITE)
        hv.pio_write(CMD0, 2, 0xDEAD)
        g.dma_write_issue(0, pattern(CHUNK, seed=7))
        hv.pio_write(BMIBA, 1, ata.BM_CMD_START)
        hv.barrier()
        assert img.read_bytes() == on_disk

        # frames kept coming to the tap; none reached guest RAM through the removed NIC
        assert background > 0  # the background frames did reach the guest before
        time.sleep(0.2)
        hv.poll(0.05)
        injector.stop.set()
        injector.join()
        assert injector.sent > sent_at_unplug
        assert (hv.ram.read(RX_RING, 16 * 16), hv.ram.read(RX_BUF, 16 * 2048)) == rx_area

        # the CD-ROM still answers
        cd = AtapiDriver(hv)
        raw_iso = iso.read_bytes()
        assert cd.read10(0) == raw_iso[:2048]
        assert cd.read10(5, 2) == raw_iso[5 * 2048 : 7 * 2048]

        # the tap and the image are released: the PV backend (or anyone) can have them
        files = open_files(pid)
        assert "/dev/net/tun" not in files, files
        assert str(img) not in files and str(iso) in files, files
        from_guest(ks, last_frame[:40])
        assert nothing_from_guest(ks) == []  # the stale doorbell sent nothing
        assert tap_attach_error(ns) is None
        ip(ns, "tuntap", "del", "dev", TAP, "mode", "tap")
        assert ip(ns, "link", "show", TAP, check=False).returncode != 0

        # the toolstack heard it
        ev1 = loop.run_until_complete(next_event(qc, "DEVICE_DELETED"))
        ev2 = loop.run_until_complete(next_event(qc, "DEVICE_DELETED"))
        assert [ev1["data"], ev2["data"]] == [
            {"path": "/machine/unattached/device[768]"},
            {"device": nic_id, "path": f"/machine/peripheral/{nic_id}"}]
        summary = loop.run_until_complete(next_event(qc, "XEN_PLATFORM_UNPLUG"))["data"]
        assert [(r["device"], r["kind"]) for r in summary["removed"]] == [
            ("ide0-hd0", "disk"), (nic_id, "nic")]
        pci = loop.run_until_complete(qc.execute("query-pci"))
        assert not any(dev["slot"] == nic_devfn >> 3 for dev in pci[0]["devices"])
        blocks = [b["device"] for b in loop.run_until_complete(qc.execute("query-block"))]
        assert blocks == ["ide1-cd0"]

        # healthy
        hv.outb(0x70, 0x0E)
        hv.outb(0x71, 0x5A)
        hv.outb(0x70, 0x0E)
        assert hv.inb(0x71) == 0x5A
    finally:
        if injector is not None:
            injector.stop.set()
            injector.join()
        if qc is not None:
            loop.run_until_complete(qc.disconnect())
        ks.close()
        hv.close()
        loop.close()
    assert proc.proc.returncode == 0
    log = proc.log()
    assert f"removed disk ide0-hd0, nic {nic_id}" in log, log[-3000:]
    # The stale ioreqs were counted as served by nothing: MMIO = the NIC's STATUS read and
    # TDT write; PIO = the bus-master status read and the stale DMA's PRD pointer, command and
    # START; PCI = the two config reads of the NIC. Before the unplug every access hit a
    # claimed range or a present function.
    line = next(x for x in log.splitlines() if "machine counters:" in x)
    counters = dict(kv.split("=") for kv in line.split("machine counters: ")[1].rstrip('"').split())
    assert counters["unplugged"] == "2", line
    assert (counters["unclaimed_mmio"], counters["unclaimed_pio"], counters["absent_pci"]) == (
        "2", "4", "2"), line
    assert counters.get("device_failure", "0") == "0", line
    assert "Traceback" not in log and "raised" not in log, log[-3000:]
