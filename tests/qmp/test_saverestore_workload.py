"""Save -> restore -> identical guest-visible behaviour (issue 9), with a guest workload over
the devices whose state is more than registers: IDE bus-master DMA, e1000 descriptor rings
with frames both ways over a real UDP backend, the VGA in a VBE mode, the RTC, and the UHCI
with a USB tablet addressed by the guest.

Daemon A runs phase 1 of the workload, is stopped and saved (xen-save-devices-state), and its
guest RAM copied as libxc would. Phase 2 then runs on A, and again on a fresh daemon B
started with --restore and given the copied RAM. Both must observe exactly the same: register
reads, descriptor write-backs, frames on the wire, DMA'd data, the screen size.

A DMA still in flight at save time is a separate test: the state file holds the command
finished (snapshots settle in-flight I/O first, as QEMU drains block I/O when it stops)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess

import pytest
from qmp_support import (
    BMIBA,
    client,
    ide_dma_read,
    ide_dma_write,
    ide_enable,
    machine_of,
    make_disk,
    next_event,
    sector,
    start,
    wait_for,
)
from test_qmp_saverestore import restored_hv, save

from devmodel.client import Hypervisor
from devmodel.nic import e1000_defs as d

RAM = 16 << 20
MS = 1_000_000
T0 = 1_000 * MS  # A's virtual time at the save; phase 2 runs T1 - T0 past its start on both
T1 = 5_000 * MS
MAC = bytes.fromhex("52540012abcd")
MMIO = 0xFEB00000
TX_RING, RX_RING, TX_BUFS, RX_BUFS = 0x100000, 0x101000, 0x110000, 0x140000
NTX = NRX = 8
UHCI_DEVFN, UHCI_IO = 1 << 3 | 2, 0xC040
FRAME_LIST, QH, TDS, USB_BUF = 0x200000, 0x201000, 0x201100, 0x202000
TD_ACTIVE, TD_LS = 1 << 23, 1 << 26
PID_SETUP, PID_IN, PID_OUT = 0x2D, 0x69, 0xE1


def _udp_pair() -> tuple[socket.socket, int]:
    """The test's end of the NIC's UDP backend, and a free port for the daemon's end."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    local = s.getsockname()[1]
    s.close()
    return peer, local


def _find(hv: Hypervisor, ident: int) -> int:
    for devfn in range(256):
        if hv.pci_cfg_read(devfn, 0, 4) == ident:
            return devfn
    raise AssertionError(f"no PCI device {ident:#010x}")


# ---- the guest's drivers, minimal and written from the datasheets --------------------------
class Guest:
    def __init__(self, hv: Hypervisor, nic_devfn: int) -> None:
        self.hv = hv
        self.nic = nic_devfn

    def rd(self, reg: int) -> int:
        return self.hv.readl(MMIO + reg)

    def wr(self, reg: int, v: int) -> None:
        self.hv.writel(MMIO + reg, v)

    def tick(self, now: int) -> None:
        self.hv.clock(now, sync=True)
        self.hv.poll(0.02)

    # phase 1: everything set up and used once
    def setup(self) -> None:
        hv = self.hv
        # RTC: 24-hour binary mode, then an alarm the RTC has to keep across the save
        hv.outb(0x70, 0x0B)
        hv.outb(0x71, 0x06)
        for reg, v in ((0x01, 30), (0x03, 59), (0x05, 23)):
            hv.outb(0x70, reg)
            hv.outb(0x71, v)
        # VGA: Bochs VBE 800x600x32 with the linear frame buffer
        for idx, v in ((4, 0), (1, 800), (2, 600), (3, 32), (4, 0x41)):
            hv.outw(0x1CE, idx)
            hv.outw(0x1CF, v)
        # e1000: BARs, link, rings (Linux's order, shortened)
        hv.pci_cfg_write(self.nic, 0x10, 4, MMIO)
        hv.pci_cfg_write(self.nic, 0x04, 2, 0x0006)
        self.wr(d.IMC, 0xFFFFFFFF)
        self.wr(d.CTRL, self.rd(d.CTRL) | d.CTRL_SLU)
        assert hv.ram is not None
        hv.ram.write(TX_RING, bytes(16 * NTX))
        for i in range(NRX):
            hv.ram.write(RX_RING + 16 * i, struct.pack("<QQ", RX_BUFS + i * 2048, 0))
        for reg, v in ((d.TDBAL, TX_RING), (d.TDBAH, 0), (d.TDLEN, 16 * NTX), (d.TDH, 0),
                       (d.TDT, 0), (d.RDBAL, RX_RING), (d.RDBAH, 0), (d.RDLEN, 16 * NRX),
                       (d.RDH, 0), (d.RDT, NRX - 1)):
            self.wr(reg, v)
        self.wr(d.TCTL, d.TCTL_EN | d.TCTL_PSP | 0x0F << 4 | 0x40 << 12)
        self.wr(d.RCTL, d.RCTL_EN | d.RCTL_BAM | d.RCTL_SECRC)
        self.wr(d.IMS, 0x9D)  # TXDW, LSC, RXDMT0, RXO, RXT0
        ide_enable(hv)  # PIIX3 IDE: BAR4 (bus master) and bus mastering
        # UHCI: frame list of one QH, run, reset and enable port 1 (the tablet)
        hv.pci_cfg_write(UHCI_DEVFN, 0x20, 4, UHCI_IO | 1)
        hv.pci_cfg_write(UHCI_DEVFN, 0x04, 2, 0x0005)
        hv.ram.write(QH, struct.pack("<II", 1, 1))
        hv.ram.write(FRAME_LIST, struct.pack("<I", QH | 2) * 1024)
        hv.outl(UHCI_IO + 8, FRAME_LIST)
        hv.outw(UHCI_IO + 0, 0x00C1)  # RS, CF, MAXP
        hv.outw(UHCI_IO + 0x10, 0x0200)  # port reset
        self.tick(T0 - 50 * MS)
        hv.outw(UHCI_IO + 0x10, 0x0000)
        hv.outw(UHCI_IO + 0x10, 0x0004 | 0x000A)  # enable, clear change bits
        self.tick(T0 - 40 * MS)

    def usb_control(self, addr: int, setup: bytes, length: int, now: int) -> tuple[bytes, list[int]]:
        """A control transfer on the low-speed tablet's endpoint 0 (8-byte packets): SETUP,
        IN data packets, OUT status. Returns the data and every TD's status word."""
        hv = self.hv
        assert hv.ram is not None
        tds: list[tuple[int, int, int]] = [(PID_SETUP, 0, 8)]
        toggle = 1
        for _ in range(0, length, 8):
            tds.append((PID_IN, toggle, 8))
            toggle ^= 1
        tds.append((PID_OUT, 1, 0))
        hv.ram.write(USB_BUF, setup)
        for i, (pid, tog, n) in enumerate(tds):
            link = TDS + 32 * (i + 1) | 4 if i + 1 < len(tds) else 1
            token = ((n - 1) & 0x7FF) << 21 | tog << 19 | addr << 8 | pid
            buf = USB_BUF if pid == PID_SETUP else USB_BUF + 0x100 + 8 * (i - 1)
            hv.ram.write(TDS + 32 * i, struct.pack("<IIII", link, TD_ACTIVE | TD_LS | 3 << 27,
                                                   token, buf))
        hv.ram.write(QH + 4, struct.pack("<I", TDS))
        self.tick(now)
        status = [struct.unpack("<I", hv.ram.read(TDS + 32 * i + 4, 4))[0]
                  for i in range(len(tds))]
        return bytes(hv.ram.read(USB_BUF + 0x100, length)), status

    def nic_send(self, i: int, frame: bytes) -> None:
        hv = self.hv
        assert hv.ram is not None
        hv.ram.write(TX_BUFS + i * 2048, frame)
        hv.ram.write(TX_RING + 16 * i, d.TX_LEGACY.pack(TX_BUFS + i * 2048, len(frame), 0,
                                                        d.TXD_CMD_EOP | d.TXD_CMD_RS, 0, 0, 0))
        self.wr(d.TDT, (i + 1) % NTX)


def _frame(n: int) -> bytes:
    return b"\xff" * 6 + MAC + b"\x88\xb5" + bytes((n + i) & 0xFF for i in range(64))


def phase1(g: Guest, peer: socket.socket, disk: str) -> None:
    g.setup()
    data, _ = g.usb_control(0, bytes((0x80, 6, 0, 1, 0, 0, 18, 0)), 18, T0 - 30 * MS)
    assert data[:2] == b"\x12\x01", data  # GET_DESCRIPTOR(device) at address 0
    _, st = g.usb_control(0, bytes((0, 5, 7, 0, 0, 0, 0, 0)), 0, T0 - 20 * MS)  # SET_ADDRESS 7
    assert not any(s & TD_ACTIVE for s in st)
    g.nic_send(0, _frame(1))
    assert peer.recv(2048) == _frame(1)
    ide_dma_read(g.hv, 3, 4, 0x300000)
    assert g.hv.ram is not None and bytes(g.hv.ram.read(0x300000, 2048)) == sector(disk, 3, 4)
    g.tick(T0)


def phase2(g: Guest, peer: socket.socket, local: int, disk: str, start: int) -> dict:
    """What the guest sees from here on: the same on A after its save and on B restored.
    `start` is the daemon's virtual time when phase 2 begins: T0 on A (its save), 0 on B (a
    restored daemon counts device time from its own clock at load, as a migrated one must:
    the old host's clock means nothing on the new one)."""
    hv = g.hv
    assert hv.ram is not None
    out: dict = {}
    g.tick(start + T1 - T0)
    # RTC: the clock ran on from the saved time; mode and alarm registers set before the save
    cmos = []
    for reg in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x01, 0x03, 0x05):
        hv.outb(0x70, reg)
        cmos.append(hv.inb(0x71))
    out["cmos"] = cmos
    # VGA mode
    vbe = []
    for idx in range(10):
        hv.outw(0x1CE, idx)
        vbe.append(hv.inw(0x1CF))
    out["vbe"] = vbe
    # e1000: TX ring continues at descriptor 1; a frame comes in to the RX ring
    g.nic_send(1, _frame(2))
    out["tx_wire"] = peer.recv(2048)
    wait_for(hv, lambda: g.rd(d.TDH) == 2)
    out["txd1"] = bytes(hv.ram.read(TX_RING + 16, 16))
    peer.sendto(MAC + bytes.fromhex("020000000001") + _frame(3)[12:], ("127.0.0.1", local))
    wait_for(hv, lambda: g.rd(d.RDH) == 1)
    out["rxd0"] = bytes(hv.ram.read(RX_RING, 16))
    out["rx_data"] = bytes(hv.ram.read(RX_BUFS, 80))
    out["nic_regs"] = [g.rd(r) for r in (d.STATUS, d.TDH, d.TDT, d.RDH, d.RDT, d.ICR, d.RCTL,
                                         d.TCTL)]
    # USB: the tablet kept the address the guest gave it before the save
    out["usb_desc"] = g.usb_control(7, bytes((0x80, 6, 0, 1, 0, 0, 18, 0)), 18,
                                    start + T1 - T0 + 10 * MS)
    out["usb_regs"] = [hv.inw(UHCI_IO + r) for r in (0, 2, 4, 6, 0x10, 0x12)]  # FRNUM too
    # IDE DMA on the restored bus-master state
    ide_dma_read(hv, 9, 2, 0x300000)
    out["dma"] = bytes(hv.ram.read(0x300000, 1024))
    assert out["dma"] == sector(disk, 9, 2)
    return out


async def test_workload_continues_identically_after_restore(tmp_path):
    disk = make_disk(str(tmp_path))
    peer, local = _udp_pair()
    args = ["--disk", f"format=raw,vdev=hda,access=rw,target={disk}",
            "--nic", f"model=e1000,backend=udp,peer=127.0.0.1:{peer.getsockname()[1]},"
                     f"path=127.0.0.1:{local},mac={MAC.hex(':')}",
            "--usb", "tablet", "--vga", "std"]
    a = start(args, ram=RAM)
    try:
        ga = Guest(a.hv, _find(a.hv, 0x100E8086))
        phase1(ga, peer, disk)
        ca = await client(a.qmp)
        await ca.execute("stop")
        await save(ca, tmp_path / "a.state")
        assert a.hv.ram is not None
        ram = bytes(a.hv.ram.read(0, RAM))  # what libxc saves and restores
        await ca.execute("cont")
        seen_a = phase2(ga, peer, local, disk, T0)
        await ca.disconnect()
    finally:
        a.close()

    b = start([*args, "--restore", str(tmp_path / "a.state")], hypervisor=False)
    try:
        cb = await client(b.qmp)
        hv = restored_hv(b)
        await cb.execute("cont")
        await next_event(cb, "RESUME")
        wait_for(hv, lambda: hv.state.server_enabled)
        hv.add_ram(RAM)
        assert hv.ram is not None
        hv.ram.write(0, ram)
        seen_b = phase2(Guest(hv, _find(hv, 0x100E8086)), peer, local, disk, 0)
        await cb.disconnect()
    finally:
        b.close()
        peer.close()
    assert seen_b == seen_a
    # and the workload did what it says: the state is the one set up before the save
    assert seen_a["vbe"][1:5] == [800, 600, 32, 0x41]
    assert seen_a["usb_desc"][0][:2] == b"\x12\x01"
    assert seen_a["rxd0"][12] & d.RXD_STAT_DD and seen_a["txd1"][12] & d.TXD_STAT_DD


async def test_dma_in_flight_is_finished_before_the_state_is_saved(tmp_path):
    """A READ DMA started and not yet completed when the toolstack saves: the state file has
    the command finished (bus-master interrupt, drive not busy), the data is in RAM, and a
    daemon restored from it shows the guest the completed command."""
    disk = make_disk(str(tmp_path), nsectors=256)
    # Real time (not the virtual clock): disk completions come from the I/O threads.
    a = start(["--disk", f"format=raw,vdev=hda,access=rw,target={disk}", "--clock", "monotonic"],
              ram=RAM)
    try:
        hv = a.hv
        assert hv is not None and hv.ram is not None
        hv.pci_cfg_write(1 << 3 | 1, 0x20, 4, BMIBA | 1)
        hv.pci_cfg_write(1 << 3 | 1, 0x04, 2, 0x0005)
        hv.ram.write(0x20000, struct.pack("<II", 0x400000, 0x80000000 | 0xFFFF & (128 * 512)))
        hv.outl(BMIBA + 4, 0x20000)
        hv.outb(BMIBA, 0x08)
        hv.outb(0x1F6, 0xE0)
        hv.outb(0x1F2, 128)
        for port in (0x1F3, 0x1F4, 0x1F5):
            hv.outb(port, 0)
        hv.outb(0x1F7, 0xC8)  # READ DMA
        hv.outb(BMIBA, 0x09)  # start; the save follows without waiting for the interrupt
        c = await client(a.qmp)
        await c.execute("stop")
        await save(c, tmp_path / "s")
        m = machine_of(str(tmp_path / "s"))
        chan = m["devices"]["piix3-ide"]["state"]["ide_state"]["channels"][0]
        assert chan["bm_status"] & 0x04 and chan["dma_unit"] == -1  # transfer over, interrupt
        assert chan["drives"][0]["status"] & 0x88 == 0  # neither BSY nor DRQ
        assert bytes(hv.ram.read(0x400000, 128 * 512)) == sector(disk, 0, 128)
        await c.disconnect()
    finally:
        a.close()
    b = start(["--disk", f"format=raw,vdev=hda,access=rw,target={disk}",
               "--restore", str(tmp_path / "s")], hypervisor=False)
    try:
        hv = restored_hv(b)
        c = await client(b.qmp)
        await c.execute("cont")
        wait_for(hv, lambda: hv.state.server_enabled)
        hv.add_ram(RAM)
        assert hv.inb(BMIBA + 2) & 0x04  # the interrupt of the finished transfer
        assert hv.inb(0x1F7) & 0x88 == 0  # neither BSY nor DRQ: nothing half done
        await c.disconnect()
    finally:
        b.close()


@pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-nbd")),
                    reason="needs qemu-img and qemu-nbd")
async def test_restore_with_a_qcow2_disk_and_a_nic(tmp_path):
    """--restore checks the file against a scratch machine built like the live one. With a
    qcow2 disk (served by qemu-nbd, which locks the image) and a NIC on a bound UDP port the
    scratch machine used to fail to open them a second time, so such a daemon could never be
    restored. Now it starts, and what the guest wrote before the save reads back after it."""
    img = str(tmp_path / "d.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    peer, local = _udp_pair()
    args = ["--disk", f"format=qcow2,vdev=hda,access=rw,target={img}",
            "--nic", f"model=e1000,backend=udp,peer=127.0.0.1:{peer.getsockname()[1]},"
                     f"path=127.0.0.1:{local}"]
    payload = bytes((i * 31 + 7) & 0xFF for i in range(8 * 512))
    a = start(args, ram=RAM)
    try:
        assert ide_dma_write(a.hv, 40, payload) & 0x01 == 0
        ca = await client(a.qmp)
        await ca.execute("stop")
        await save(ca, tmp_path / "s")
        await ca.disconnect()
    finally:
        a.close()
    b = start([*args, "--restore", str(tmp_path / "s")], hypervisor=False)
    try:
        cb = await client(b.qmp)
        (blk,) = await cb.execute("query-block")
        assert blk["inserted"]["drv"] == "qcow2"
        hv = restored_hv(b)
        await cb.execute("cont")
        wait_for(hv, lambda: hv.state.server_enabled)
        hv.add_ram(RAM)
        ide_dma_read(hv, 40, 8, 0x300000)  # BAR4 and bus mastering came from the state file
        assert hv.ram is not None and bytes(hv.ram.read(0x300000, len(payload))) == payload
        await cb.disconnect()
    finally:
        b.close()
        peer.close()
