"""A real daemon subprocess with a QMP socket and (usually) a connected hypervisor, qemu.qmp
clients, a raw QMP peer framed as libxl frames it, and the guest-side register dances the QMP
tests need (PM power button, IDE DMA, state fingerprints)."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import struct
import tempfile
import time
from dataclasses import dataclass

from qemu.qmp import QMPClient

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.statefile import HEADER, decode_state

BASE_ARGS = ["--clock", "virtual", "--rtc-base", "1700000000"]
PM_DEVFN = 1 << 3 | 3
IDE_DEVFN = 1 << 3 | 1
PM_BASE = 0xB000
BMIBA = 0xC000


@dataclass
class Dm:
    proc: DaemonProcess
    hv: Hypervisor | None
    qmp: str
    tmp: str

    def close(self) -> int:
        if self.hv is not None:
            self.hv.close()  # the daemon exits when its hypervisor goes
            return self.proc.proc.returncode
        return self.proc.stop()


def start(args: list[str] | tuple[str, ...] = (), *, hypervisor: bool = True,
          handshake: bool = True, ram: int = 16 << 20) -> Dm:
    tmp = tempfile.mkdtemp(prefix="devmodel-qmp-")
    qmp = os.path.join(tmp, "qmp.sock")
    proc = DaemonProcess.start(["--qmp", qmp, *BASE_ARGS, *args])
    hv = None
    if hypervisor:
        hv = Hypervisor.connect(proc.socket_path, process=proc, handshake=handshake)
        if handshake and ram:
            hv.add_ram(ram)
    return Dm(proc, hv, qmp, tmp)


async def client(path: str) -> QMPClient:
    c = QMPClient("test")
    await c.connect(path)
    return c


async def next_event(c: QMPClient, name: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {name} event"
        ev = await asyncio.wait_for(c.events.get(), left)
        if ev["event"] == name:
            return ev


def wait_for(hv: Hypervisor, pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        hv.poll(0.02)


def dmops(hv: Hypervisor, op: int) -> list:
    return [r for r in hv.state.dmops if r.op == op]


# ---- raw QMP, framed as libxl frames it (CRLF after each message, integer ids) ----------
class RawQmp:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def recv(self) -> dict:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("monitor closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return json.loads(line)

    def send(self, obj: dict | bytes, fds: list[int] | None = None) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\r\n"
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.sendall(data)

    def reply(self) -> dict:
        """The next message that is not an event (libxl ignores events)."""
        while True:
            msg = self.recv()
            if "event" not in msg:
                return msg

    def cmd(self, name: str, args: dict | None = None, id: int = 1, fds=None) -> dict:
        msg: dict = {"execute": name, "id": id}
        if args is not None:
            msg["arguments"] = args
        self.send(msg, fds)
        return self.reply()

    def negotiate(self) -> dict:
        greeting = self.recv()
        assert self.cmd("qmp_capabilities") == {"return": {}, "id": 1}
        return greeting

    def close(self) -> None:
        self.sock.close()


# ---- guest-side dances ----------------------------------------------------------------------
def enable_power_button(hv: Hypervisor) -> None:
    """What an ACPI OS does: PM I/O block at 0xB000 (PMBA, PMREGMISC), PWRBTN_EN in PM1_EN."""
    hv.pci_cfg_write(PM_DEVFN, 0x40, 4, PM_BASE | 1)
    hv.pci_cfg_write(PM_DEVFN, 0x80, 1, 1)
    hv.outw(PM_BASE + 2, 0x0100)


def ide_enable(hv: Hypervisor, bmiba: int = BMIBA) -> None:
    hv.pci_cfg_write(IDE_DEVFN, 0x20, 4, bmiba | 1)
    hv.pci_cfg_write(IDE_DEVFN, 0x04, 2, 0x0005)  # I/O decode + bus master


def _ide_dma(hv: Hypervisor, lba: int, nsectors: int, gpa: int, prd: int, bmiba: int,
             write: bool) -> int:
    """READ DMA (or WRITE DMA) of `nsectors` between hda at `lba` and guest RAM at `gpa`
    (one PRD entry); the ATA status once the guest would see IRQ 14."""
    assert hv.ram is not None
    hv.ram.write(prd, struct.pack("<II", gpa, (nsectors * 512) | 0x80000000))
    hv.outl(bmiba + 4, prd)
    direction = 0x00 if write else 0x08  # from memory / to memory
    hv.outb(bmiba, direction)  # not started
    hv.outb(0x1F6, 0xE0 | (lba >> 24 & 0xF))
    hv.outb(0x1F2, nsectors)
    hv.outb(0x1F3, lba & 0xFF)
    hv.outb(0x1F4, lba >> 8 & 0xFF)
    hv.outb(0x1F5, lba >> 16 & 0xFF)
    hv.outb(0x1F7, 0xCA if write else 0xC8)  # WRITE DMA / READ DMA
    hv.outb(bmiba, direction | 0x01)  # start
    # The disk completes asynchronously (on the daemon's loop): wait for the bus-master
    # Interrupt bit as a driver waits for IRQ 14, bounded.
    for _ in range(500):
        if hv.inb(bmiba + 2) & 0x04:
            break
        hv.poll(0.01)
    assert hv.inb(bmiba + 2) & 0x04, "no DMA interrupt"
    hv.outb(bmiba, 0x00)
    hv.outb(bmiba + 2, 0x04)  # clear the interrupt bit
    return hv.inb(0x1F7)


def ide_dma_read(hv: Hypervisor, lba: int, nsectors: int, gpa: int, prd: int = 0x20000,
                 bmiba: int = BMIBA) -> None:
    """READ DMA of `nsectors` from `lba` of hda into guest RAM at `gpa` (one PRD entry)."""
    _ide_dma(hv, lba, nsectors, gpa, prd, bmiba, write=False)


def ide_dma_write(hv: Hypervisor, lba: int, data: bytes, gpa: int = 0x10000, prd: int = 0x20000,
                  bmiba: int = BMIBA) -> int:
    """WRITE DMA of `data` (whole sectors) from guest RAM at `gpa` to hda at `lba`; returns
    the ATA status once the guest would see IRQ 14 (bus-master Interrupt bit): the write is
    acknowledged then, successfully unless the status has ERR (bit 0)."""
    assert hv.ram is not None and len(data) % 512 == 0
    ide_enable(hv, bmiba)
    hv.ram.write(gpa, data)
    return _ide_dma(hv, lba, len(data) // 512, gpa, prd, bmiba, write=True)


def make_disk(tmp: str, nsectors: int = 64) -> str:
    path = os.path.join(tmp, "disk.img")
    with open(path, "wb") as f:
        for s in range(nsectors):
            f.write(struct.pack("<I", s) + bytes((s * 7 + i) & 0xFF for i in range(508)))
    return path


def sector(path: str, lba: int, n: int = 1) -> bytes:
    with open(path, "rb") as f:
        f.seek(lba * 512)
        return f.read(n * 512)


def mutate(hv: Hypervisor) -> None:
    """Guest-visible state worth saving: CMOS NVRAM, a BAR, the PM block, PCI link routes,
    a half-read fw_cfg item."""
    for i, v in ((0x50, 0xAB), (0x51, 0xCD), (0x7F, 0x5A)):
        hv.outb(0x70, i)
        hv.outb(0x71, v)
    ide_enable(hv)
    enable_power_button(hv)
    hv.pci_cfg_write(1 << 3, 0x60, 1, 10)  # PIRQA -> IRQ 10
    hv.outw(0x510, 0x19)  # fw_cfg file directory
    for _ in range(3):
        hv.inb(0x511)


def fingerprint(hv: Hypervisor) -> dict:
    """Guest-visible register reads (reading advances the fw_cfg offset: take it once)."""
    nvram = []
    for i in range(0x0E, 0x80):
        hv.outb(0x70, i)
        nvram.append(hv.inb(0x71))
    cfg = {devfn: [hv.pci_cfg_read(devfn, off, 4) for off in range(0, 0x100, 4)]
           for devfn in (0, 1 << 3, IDE_DEVFN, PM_DEVFN)}
    return {"nvram": nvram, "pci": cfg, "fw_cfg": [hv.inb(0x511) for _ in range(8)],
            "pm1_en": hv.inw(PM_BASE + 2), "bm_prd": hv.inl(BMIBA + 4)}


def machine_of(path: str) -> dict:
    with open(path, "rb") as f:
        return decode_state(f.read())["machine"]


def rewrite(path: str, mutate_doc=None, *, version: int | None = None, flip: int | None = None) -> None:
    """Edit a state file: change its document (and fix the checksum), its format version, or
    flip one byte at offset `flip` (leaving the checksum stale)."""
    import hashlib

    with open(path, "rb") as f:
        data = bytearray(f.read())
    magic, ver, flags, length, digest = HEADER.unpack_from(data, 0)
    body = bytes(data[HEADER.size:])
    if mutate_doc is not None:
        doc = json.loads(body)
        mutate_doc(doc)
        body = json.dumps(doc).encode()
        digest = hashlib.sha256(body).digest()
        length = len(body)
    if version is not None:
        ver = version
    data = bytearray(HEADER.pack(magic, ver, flags, length, digest) + body)
    if flip is not None:
        data[flip] ^= 0x40
    with open(path, "wb") as f:
        f.write(data)


def atapi_read_pio(hv: Hypervisor, packet: bytes, gpa: int = 0x40000, ch_base: int = 0x170,
                   ctl: int = 0x376) -> tuple[int, bytes]:
    """One ATAPI command on the secondary master (hdc) by PIO, as a polling driver sends it:
    PACKET, the 12-byte packet by 16-bit writes, then every DRQ block by rep insw (one page
    per ioreq, as Xen splits them). The medium is read asynchronously, so BSY is waited
    for, bounded. Returns (final status, data)."""
    assert hv.ram is not None and len(packet) == 12
    hv.outb(ch_base + 6, 0xA0)
    hv.outb(ch_base + 1, 0)  # PIO data phase
    hv.outb(ch_base + 4, 0xFE)
    hv.outb(ch_base + 5, 0xFF)  # byte-count limit 0xFFFE
    hv.outb(ch_base + 7, 0xA0)  # PACKET
    assert hv.inb(ctl) & 0x08, "no DRQ for the command packet"
    for i in range(0, 12, 2):
        hv.outw(ch_base, int.from_bytes(packet[i : i + 2], "little"))
    data = bytearray()
    for _ in range(64):  # DRQ blocks, bounded
        for _ in range(500):  # the medium read completes on the daemon's loop
            st = hv.inb(ctl)
            if not st & 0x80:
                break
            hv.poll(0.01)
        if st & 0x80 or not st & 0x08:
            break
        n = hv.inb(ch_base + 4) | hv.inb(ch_base + 5) << 8
        words = (n + 1) // 2
        for off in range(0, words, 2048):
            hv.ins(ch_base, 2, min(2048, words - off), gpa + 2 * off)
        data += hv.ram.read(gpa, n)
    return hv.inb(ch_base + 7), bytes(data)


def atapi_read10(hv: Hypervisor, lba: int, blocks: int = 1) -> bytes:
    """READ(10) of 2048-byte blocks from hdc; a UNIT ATTENTION (the medium changed) is
    read with REQUEST SENSE and the command repeated, as drivers do."""
    read10 = bytes([0x28, 0, *lba.to_bytes(4, "big"), 0, *blocks.to_bytes(2, "big"), 0, 0, 0])
    for _ in range(3):
        st, data = atapi_read_pio(hv, read10)
        if not st & 0x01:
            return data
        _, sense = atapi_read_pio(hv, bytes([0x03, 0, 0, 0, 18]).ljust(12, b"\0"))
        # UNIT ATTENTION / medium changed (or NOT READY while it becomes ready)
        assert sense[2] & 0x0F in (2, 6), f"sense {sense.hex()}"
    raise AssertionError("READ(10) keeps failing")
