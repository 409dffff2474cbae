"""A guest-side e1000 driver over the client library: it drives a REAL daemon (separate
process, real socket, shared guest RAM) with the register dance Linux's e1000 does on this
part: reset, EEPROM MAC through EERD, PHY IDs through MDIC, link up, rings, interrupts."""

from __future__ import annotations

import struct
import time

from devmodel.client import Hypervisor
from devmodel.nic import e1000_defs as d

MMIO = 0xF0000000
TX_RING, RX_RING = 0x100000, 0x110000
TX_BUFS, RX_BUFS = 0x200000, 0x400000
RING = 64
BUF = 2048


class GuestE1000:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.devfn = next(df for df, info in hv.pci_scan().items()
                          if (info["vendor"], info["device"]) == (d.VENDOR_INTEL, d.DEVICE_82540EM))
        hv.pci_program_bar(self.devfn, 0, MMIO)
        hv.pci_enable(self.devfn, io=False, mem=True, master=True)
        self.mm = hv.ram.mm
        self.tx_tail = 0
        self.rx_next = 0

    def rd(self, off: int) -> int:
        return self.hv.readl(MMIO + off)

    def wr(self, off: int, value: int) -> None:
        self.hv.writel(MMIO + off, value)

    @property
    def irq(self) -> int:
        return self.hv.state.pci_intx.get((self.devfn >> 3, 0), 0)

    def init(self) -> bytes:
        """e1000_reset_hw, e1000_read_mac_addr, e1000_setup_copper_link, e1000_configure;
        returns the MAC address read from the EEPROM."""
        self.wr(d.IMC, 0xFFFFFFFF)
        self.wr(d.RCTL, 0)
        self.wr(d.TCTL, d.TCTL_PSP)
        self.wr(d.CTRL, self.rd(d.CTRL) | d.CTRL_RST)
        self.wr(d.IMC, 0xFFFFFFFF)
        self.rd(d.ICR)
        words = []
        for i in range(3):
            self.wr(d.EERD, i << d.EERD_ADDR_SHIFT | d.EERD_START)
            v = self.rd(d.EERD)
            assert v & d.EERD_DONE
            words.append(v >> d.EERD_DATA_SHIFT)
        mac = struct.pack("<3H", *words)
        self.wr(d.MDIC, d.MDIC_OP_READ | 1 << d.MDIC_PHY_SHIFT | d.MII_PHYID1 << d.MDIC_REG_SHIFT)
        assert self.rd(d.MDIC) & 0xFFFF == 0x0141  # Marvell 88E1011 (QEMU's PHY ID too)
        self.wr(d.CTRL, self.rd(d.CTRL) | d.CTRL_SLU)
        for i in range(RING):
            self.mm[RX_RING + 16 * i : RX_RING + 16 * i + 16] = struct.pack("<QQ", RX_BUFS + i * BUF, 0)
        self.mm[TX_RING : TX_RING + 16 * RING] = bytes(16 * RING)
        for off, val in ((d.TDBAL, TX_RING), (d.TDBAH, 0), (d.TDLEN, RING * 16), (d.TDH, 0),
                         (d.TDT, 0), (d.TIPG, 0x0060200A),
                         (d.TCTL, d.TCTL_EN | d.TCTL_PSP | 0x0F << 4 | 0x40 << 12),
                         (d.RDBAL, RX_RING), (d.RDBAH, 0), (d.RDLEN, RING * 16), (d.RDH, 0),
                         (d.RDT, RING - 1), (d.RDTR, 0),
                         (d.RCTL, d.RCTL_EN | d.RCTL_BAM | d.RCTL_SECRC),
                         (d.IMS, d.ICR_RXT0 | d.ICR_RXO | d.ICR_TXDW | d.ICR_LSC)):
            self.wr(off, val)
        assert self.rd(d.STATUS) & d.STATUS_LU
        return mac

    def send(self, frame: bytes) -> None:
        i = self.tx_tail
        buf = TX_BUFS + i * BUF
        self.mm[buf : buf + len(frame)] = frame
        cmd = d.TXD_CMD_EOP | d.TXD_CMD_IFCS | d.TXD_CMD_RS
        self.mm[TX_RING + 16 * i : TX_RING + 16 * i + 16] = d.TX_LEGACY.pack(buf, len(frame), 0, cmd, 0, 0, 0)
        self.tx_tail = (i + 1) % RING
        self.wr(d.TDT, self.tx_tail)
        # the doorbell is a posted write: a register read returns after the walk it started
        assert self.rd(d.TDH) == self.tx_tail
        assert self.mm[TX_RING + 16 * i + 12] & d.TXD_STAT_DD

    def receive(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Frames in RX order, waiting for the interrupt the way a driver does: INTx, ICR
        read, then the descriptors with DD, handed back with one RDT write."""
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            if not self.irq:
                self.hv.poll(0.02)
                continue
            self.rd(d.ICR)
            while True:
                at = RX_RING + 16 * self.rx_next
                buf, length, _csum, status, _err, _sp = d.RX_DESC.unpack(self.mm[at : at + 16])
                if not status & d.RXD_STAT_DD:
                    break
                assert status & d.RXD_STAT_EOP
                out.append(bytes(self.mm[buf : buf + length]))
                self.mm[at + 12] = 0
                self.wr(d.RDT, self.rx_next)
                self.rx_next = (self.rx_next + 1) % RING
        return out
