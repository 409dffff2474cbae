"""A test guest for the PV switch against a real daemon process: an e1000 driver (rings in guest
RAM, frames out through TDT, frames in through the RX ring), an ATAPI PIO driver for the CD-ROM,
and what the toolstack side looks at (the daemon's open files). All through
devmodel.client.Hypervisor, i.e. real ioreqs on the daemon's socket."""

from __future__ import annotations

import os
import struct
import time

from devmodel.ide import ata
from devmodel.nic import e1000_defs as d

E1000_ID = 0x100E8086  # 82540EM
NIC_BAR = 0xF2000000
TX_RING, TX_BUF = 0x200000, 0x210000
RX_RING, RX_BUF = 0x300000, 0x310000
RING = 16  # descriptors per ring
BUF_SIZE = 2048
CMD1, CTL1 = 0x170, 0x376
CD_BLOCK = 2048
ATAPI_GPA = 0x400000
POLLS = 200_000  # a driver's bound on BSY polls


def find_function(hv, ident: int) -> int:
    return next(df for df in range(0, 256, 8) if hv.pci_cfg_read(df, 0, 4) == ident)


class E1000Driver:
    def __init__(self, hv, devfn: int, mac: bytes) -> None:
        self.hv = hv
        self.devfn = devfn
        self.mac = mac
        self.tx_tail = 0
        self.rx_next = 0

    def rd(self, off: int) -> int:
        return self.hv.mmio_read(NIC_BAR + off, 4)

    def wr(self, off: int, v: int) -> None:
        self.hv.mmio_write(NIC_BAR + off, 4, v)

    def up(self, timeout: float = 5.0) -> None:
        hv = self.hv
        hv.pci_cfg_write(self.devfn, 0x10, 4, NIC_BAR)
        hv.pci_cfg_write(self.devfn, 0x04, 2, 0x0006)  # memory + bus master
        self.wr(d.CTRL, self.rd(d.CTRL) | d.CTRL_SLU)
        deadline = time.monotonic() + timeout
        while not self.rd(d.STATUS) & d.STATUS_LU:
            assert time.monotonic() < deadline, "link never came up"
            hv.poll(0.02)
        hv.ram.write(TX_RING, bytes(16 * RING))
        self.wr(d.TDBAL, TX_RING)
        self.wr(d.TDBAH, 0)
        self.wr(d.TDLEN, 16 * RING)
        self.wr(d.TDH, 0)
        self.wr(d.TDT, 0)
        self.wr(d.TCTL, d.TCTL_EN | d.TCTL_PSP)
        for i in range(RING):
            hv.ram.write(RX_RING + 16 * i, struct.pack("<QHHBBH", RX_BUF + i * BUF_SIZE, 0, 0, 0, 0, 0))
        self.wr(d.RDBAL, RX_RING)
        self.wr(d.RDBAH, 0)
        self.wr(d.RDLEN, 16 * RING)
        self.wr(d.RDH, 0)
        self.wr(d.RDT, RING - 1)
        self.wr(d.RCTL, d.RCTL_EN | d.RCTL_BAM | d.RCTL_SECRC)  # 2048-byte buffers

    def send(self, frame: bytes, timeout: float = 5.0) -> None:
        """One legacy descriptor; returns when the NIC has written it back (DD)."""
        hv = self.hv
        i = self.tx_tail
        buf = TX_BUF + i * BUF_SIZE
        hv.ram.write(buf, frame)
        desc = TX_RING + 16 * i
        hv.ram.write(desc, struct.pack("<QHBBBBH", buf, len(frame), 0,
                                       d.TXD_CMD_EOP | d.TXD_CMD_RS, 0, 0, 0))
        self.tx_tail = (i + 1) % RING
        self.wr(d.TDT, self.tx_tail)
        deadline = time.monotonic() + timeout
        while not hv.ram.read(desc + 12, 1)[0] & 1:  # STA.DD
            assert time.monotonic() < deadline, "TX descriptor never written back"
            hv.poll(0.005)

    def receive(self, timeout: float = 5.0) -> bytes:
        """The next frame the NIC put in the RX ring; the descriptor goes back to the NIC."""
        hv = self.hv
        i = self.rx_next
        desc = RX_RING + 16 * i
        deadline = time.monotonic() + timeout
        while True:
            _, length, _, status, _, _ = struct.unpack("<QHHBBH", hv.ram.read(desc, 16))
            if status & d.RXD_STAT_DD:
                break
            assert time.monotonic() < deadline, "no frame in the RX ring"
            hv.poll(0.005)
        frame = hv.ram.read(RX_BUF + i * BUF_SIZE, length)
        hv.ram.write(desc, struct.pack("<QHHBBH", RX_BUF + i * BUF_SIZE, 0, 0, 0, 0, 0))
        self.rx_next = (i + 1) % RING
        self.wr(d.RDT, i)
        return frame


    def receive_matching(self, want: bytes, limit: int = 4 * RING, timeout: float = 5.0) -> int:
        """Harvest frames until one starts with `want` (others may be in the ring too);
        returns how many others came first."""
        for n in range(limit):
            if self.receive(timeout)[: len(want)] == want:
                return n
        raise AssertionError(f"{want!r} not among {limit} frames")


class AtapiDriver:
    """PIO ATAPI on the secondary channel's master, polling as SeaBIOS's ATAPI code does."""

    def __init__(self, hv) -> None:
        self.hv = hv

    def wait(self) -> int:
        for _ in range(POLLS):
            st = self.hv.pio_read(CTL1, 1)
            if not st & ata.BUSY_STAT:
                return st
            self.hv.poll(0)
        raise AssertionError("CD-ROM stayed BSY")

    def packet(self, cdb: bytes, gpa: int = ATAPI_GPA) -> tuple[int, int, bytes]:
        """(status, error, data) of one packet command."""
        hv = self.hv
        cdb = cdb.ljust(12, b"\0")
        hv.pio_write(CMD1 + 6, 1, 0xA0)
        self.wait()
        hv.pio_write(CMD1 + 1, 1, 0)  # PIO
        hv.pio_write(CMD1 + 4, 1, 0xFE)
        hv.pio_write(CMD1 + 5, 1, 0xFF)
        hv.pio_write(CMD1 + 7, 1, ata.CMD_PACKET)
        st = self.wait()
        assert st & ata.DRQ_STAT, f"no DRQ for the packet: {st:#x}"
        for i in range(0, 12, 2):
            hv.pio_write(CMD1, 2, int.from_bytes(cdb[i : i + 2], "little"))
        data = bytearray()
        for _ in range(64):
            st = self.wait()
            if not st & ata.DRQ_STAT:
                break
            n = hv.pio_read(CMD1 + 4, 1) | hv.pio_read(CMD1 + 5, 1) << 8
            hv.ins(CMD1, 2, (n + 1) // 2, gpa)
            data += hv.ram.read(gpa, n)
        else:
            raise AssertionError("ATAPI data phase did not end")
        return hv.pio_read(CMD1 + 7, 1), hv.pio_read(CMD1 + 1, 1), bytes(data)

    def read10(self, lba: int, blocks: int = 1) -> bytes:
        """READ(10), after clearing a pending UNIT ATTENTION (a controller reset may leave
        one) with TEST UNIT READY, as drivers do."""
        for _ in range(3):
            st, err, _ = self.packet(bytes([0x00]))  # TEST UNIT READY
            if not st & ata.ERR_STAT:
                break
        st, err, data = self.packet(struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0))
        assert not st & ata.ERR_STAT, f"READ(10) failed: status {st:#x} error {err:#x}"
        return data


def open_files(pid: int) -> list[str]:
    """What the process's descriptors point at (/proc/PID/fd)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out
