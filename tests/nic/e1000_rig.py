"""A test rig for the 82540EM: a strict Machine with fake RAM and virtual time, and a guest
driver that does the register dance Linux's e1000 does (config ioreqs for the BARs, 32-bit
MMIO, the IOADDR/IODATA window, Microwire bit-banging, MDIC, descriptor rings in RAM).

Also packet builders and an independent checksum (a plain loop, not devmodel's) so that the
frames the device produces are checked against something it does not share code with.
"""

from __future__ import annotations

import struct

from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.nic import build_e1000
from devmodel.nic import e1000_defs as d
from devmodel.wire.constants import DmOp

PIO, COPY, PCI_CONFIG = 0, 1, 2
READY, DIR_READ = 0x01, 0x20
SLOT = 4
DEVFN = SLOT << 3
MMIO_BASE = 0xFEB00000
IO_BASE = 0xC000
RAM_SIZE = 8 << 20
MAC = bytes.fromhex("525400123456")
TX_RING, RX_RING = 0x10000, 0x20000
TX_BUFS, RX_BUFS = 0x100000, 0x400000


class Rig:
    def __init__(self, mac: bytes = MAC, ram: int = RAM_SIZE, rom: str | None = None,
                 backend=None, enable: bool = True, split: int | None = None) -> None:
        """`split`: guest RAM as two regions meeting at that address (a ring across it is
        not one view, so the device takes its general per-descriptor path)."""
        if split is None:
            memory = GuestMemory.fake(ram)
        else:
            memory = GuestMemory()
            memory.add_buffer(0, 0, bytearray(split))
            memory.add_buffer(1, split, bytearray(ram - split))
        self.m = Machine(memory, Clock(virtual=True), strict=True)
        self.mem = self.m.memory
        self.nic = build_e1000(self.m, SLOT, mac, backend, rom=rom)
        self.sent: list[bytes] = []
        if backend is None:
            self.nic.transmit = lambda frame: self.sent.append(bytes(frame))
        if enable:
            self.cfg_write(0x10, 4, MMIO_BASE)
            self.cfg_write(0x14, 4, IO_BASE | 1)
            self.cfg_write(0x04, 2, 0x0007)  # I/O, memory, bus master
        self.m.outbox.clear()

    # ---- raw ioreqs -----------------------------------------------------------------------
    def cfg_read(self, reg: int, size: int) -> int:
        return self.m.handle_ioreq(PCI_CONFIG, DEVFN << 32 | reg, 0, 1, size, READY | DIR_READ)

    def cfg_write(self, reg: int, size: int, value: int) -> None:
        self.m.handle_ioreq(PCI_CONFIG, DEVFN << 32 | reg, value, 1, size, READY)

    def rd(self, off: int, size: int = 4) -> int:
        return self.m.handle_ioreq(COPY, MMIO_BASE + off, 0, 1, size, READY | DIR_READ)

    def wr(self, off: int, value: int, size: int = 4) -> None:
        self.m.handle_ioreq(COPY, MMIO_BASE + off, value & 0xFFFFFFFF, 1, size, READY)

    def io_rd(self, off: int, size: int = 4) -> int:
        return self.m.handle_ioreq(PIO, IO_BASE + off, 0, 1, size, READY | DIR_READ)

    def io_wr(self, off: int, value: int, size: int = 4) -> None:
        self.m.handle_ioreq(PIO, IO_BASE + off, value, 1, size, READY)

    # ---- time and interrupts --------------------------------------------------------------
    def advance(self, ns: int) -> None:
        clock = self.m.clock
        clock.set_virtual(clock.now() + ns)
        clock.run_due()

    def irq_events(self) -> list[int]:
        out = [f[-1] for op, f, _ in self.m.outbox if op == DmOp.SET_PCI_INTX_LEVEL]
        self.m.outbox.clear()
        return out

    @property
    def irq(self) -> int:
        return self.nic.irq_line.level

    # ---- EEPROM and PHY -------------------------------------------------------------------
    def eeprom_bitbang(self, addr: int) -> int:
        """Linux e1000_read_eeprom for a Microwire part: REQ/GNT, CS, READ opcode, 6 address
        bits, 16 data bits in, each clocked by SK rising then falling."""
        eecd = self.rd(d.EECD) | d.EECD_REQ
        self.wr(d.EECD, eecd)
        assert self.rd(d.EECD) & d.EECD_GNT
        eecd &= ~(d.EECD_DI | d.EECD_SK)
        self.wr(d.EECD, eecd | d.EECD_CS)
        eecd |= d.EECD_CS

        def clock_out(value: int, count: int) -> None:
            nonlocal eecd
            for i in range(count - 1, -1, -1):
                eecd = (eecd & ~d.EECD_DI) | (d.EECD_DI if value >> i & 1 else 0)
                self.wr(d.EECD, eecd)
                self.wr(d.EECD, eecd | d.EECD_SK)
                self.wr(d.EECD, eecd)

        clock_out(0b110, 3)
        clock_out(addr, 6)
        word = 0
        for _ in range(16):
            self.wr(d.EECD, eecd | d.EECD_SK)
            word = word << 1 | (1 if self.rd(d.EECD) & d.EECD_DO else 0)
            self.wr(d.EECD, eecd)
        self.wr(d.EECD, eecd & ~(d.EECD_CS | d.EECD_REQ))
        return word

    def eerd(self, addr: int) -> int:
        self.wr(d.EERD, addr << 8 | d.EERD_START)
        v = self.rd(d.EERD)
        assert v & d.EERD_DONE
        return v >> 16

    def mdic_read(self, reg: int, phy: int = 1) -> tuple[int, bool]:
        self.wr(d.MDIC, d.MDIC_OP_READ | phy << 21 | reg << 16)
        v = self.rd(d.MDIC)
        assert v & d.MDIC_READY
        return v & 0xFFFF, bool(v & d.MDIC_ERROR)

    def mdic_write(self, reg: int, value: int, phy: int = 1) -> bool:
        self.wr(d.MDIC, d.MDIC_OP_WRITE | phy << 21 | reg << 16 | value)
        v = self.rd(d.MDIC)
        assert v & d.MDIC_READY
        return not v & d.MDIC_ERROR

    # ---- the Linux-like bring-up ----------------------------------------------------------
    def linux_init(self) -> None:
        """e1000_reset_hw, e1000_init_hw, e1000_setup_copper_link, e1000_configure."""
        self.wr(d.IMC, 0xFFFFFFFF)
        self.wr(d.RCTL, 0)
        self.wr(d.TCTL, d.TCTL_PSP)
        ctrl = self.rd(d.CTRL)
        self.io_wr(0, d.CTRL)  # 82540: reset through the I/O window (e1000_reset_hw)
        self.io_wr(4, ctrl | d.CTRL_RST)
        self.wr(d.IMC, 0xFFFFFFFF)
        self.rd(d.ICR)
        words = [self.eeprom_bitbang(i) for i in range(64)]
        assert sum(words) & 0xFFFF == 0xBABA
        for i in range(128):
            self.wr(d.MTA + 4 * i, 0)
        self.wr(d.CTRL, (self.rd(d.CTRL) | d.CTRL_SLU) & ~(d.CTRL_FRCSPD | d.CTRL_FRCDPX))
        ids = self.mdic_read(d.MII_PHYID1)[0] << 16 | self.mdic_read(d.MII_PHYID2)[0]
        assert ids & 0xFFFFFFF0 == 0x01410C20
        self.mdic_write(d.M88_PHY_SPEC_CTRL, 0x0068)
        self.mdic_write(d.MII_BMCR, d.BMCR_ANENABLE | d.BMCR_RESET)
        self.mdic_write(d.MII_ANAR, 0x01E1)
        self.mdic_write(d.MII_BMCR, d.BMCR_ANENABLE | d.BMCR_ANRESTART)
        self.advance(600_000_000)
        assert self.rd(d.STATUS) & d.STATUS_LU
        self.rd(d.ICR)

    def setup_tx(self, n: int = 64) -> None:
        self.tx_n = n
        self.tx_tail = 0
        self.mem.write(TX_RING, bytes(16 * n))
        self.wr(d.TDBAL, TX_RING)
        self.wr(d.TDBAH, 0)
        self.wr(d.TDLEN, 16 * n)
        self.wr(d.TDH, 0)
        self.wr(d.TDT, 0)
        self.wr(d.TIPG, 0x0060200A)
        self.wr(d.TCTL, d.TCTL_EN | d.TCTL_PSP | 0x0F << 4 | 0x40 << 12)

    def setup_rx(self, n: int = 64, rctl: int = 0, bufsize: int = 2048) -> None:
        self.rx_n = n
        self.rx_bufsize = bufsize
        self.rx_next = 0
        for i in range(n):
            self.mem.write(RX_RING + 16 * i, struct.pack("<QQ", RX_BUFS + i * bufsize, 0))
        self.wr(d.RDBAL, RX_RING)
        self.wr(d.RDBAH, 0)
        self.wr(d.RDLEN, 16 * n)
        self.wr(d.RDH, 0)
        self.wr(d.RDT, n - 1)
        self.wr(d.RCTL, d.RCTL_EN | d.RCTL_BAM | d.RCTL_SECRC | rctl)

    # ---- transmit helpers -----------------------------------------------------------------
    def put_tx(self, raw: bytes) -> None:
        self.mem.write(TX_RING + 16 * self.tx_tail, raw)
        self.tx_tail = (self.tx_tail + 1) % self.tx_n

    def legacy(self, data: bytes, cmd: int = d.TXD_CMD_EOP | d.TXD_CMD_RS, cso: int = 0,
               css: int = 0, special: int = 0, buf: int | None = None) -> None:
        buf = TX_BUFS + self.tx_tail * 0x10000 % 0x300000 if buf is None else buf
        self.mem.write(buf, data)
        self.put_tx(d.TX_LEGACY.pack(buf, len(data), cso, cmd, 0, css, special))

    def context(self, ipcss=14, ipcso=24, ipcse=0, tucss=34, tucso=50, tucse=0, paylen=0,
                tucmd=d.TUCMD_IP | d.TUCMD_TCP, hdrlen=0, mss=0, rs: bool = False) -> None:
        cmdlen = paylen | (tucmd | d.TXD_CMD_DEXT | (d.TXD_CMD_RS if rs else 0)) << 24
        self.put_tx(d.TX_CONTEXT.pack(ipcss, ipcso, ipcse, tucss, tucso, tucse, cmdlen, 0,
                                      hdrlen, mss))

    def data(self, data: bytes, dcmd: int = d.TXD_CMD_EOP | d.TXD_CMD_RS, popts: int = 0,
             special: int = 0, buf: int | None = None, length: int | None = None) -> None:
        buf = TX_BUFS + self.tx_tail * 0x10000 % 0x300000 if buf is None else buf
        self.mem.write(buf, data)
        n = len(data) if length is None else length
        lower = n | d.DTYP_DATA << 20 | (dcmd | d.TXD_CMD_DEXT) << 24
        self.put_tx(struct.pack("<QII", buf, lower, popts << 8 | special << 16))

    def kick(self) -> None:
        self.wr(d.TDT, self.tx_tail)

    def tx_status(self, i: int) -> int:
        return self.mem.read(TX_RING + 16 * i + 12, 1)[0]

    # ---- receive helpers ------------------------------------------------------------------
    def rx_desc(self, i: int) -> tuple[int, int, int, int, int, int]:
        return d.RX_DESC.unpack(self.mem.read(RX_RING + 16 * i, 16))

    def rx_frames(self) -> list[tuple[bytes, int, int, int]]:
        """Completed frames since the last call: (data, status of EOP, errors, special);
        the descriptors are handed back (RDT advanced) as a driver does."""
        out = []
        data = b""
        while True:
            buf, length, _csum, status, errors, special = self.rx_desc(self.rx_next)
            if not status & d.RXD_STAT_DD:
                break
            data += self.mem.read(buf, length)
            self.mem.write(RX_RING + 16 * self.rx_next + 8, bytes(8))
            done = self.rx_next
            self.rx_next = (self.rx_next + 1) % self.rx_n
            self.wr(d.RDT, done)
            if status & d.RXD_STAT_EOP:
                out.append((data, status, errors, special))
                data = b""
        return out


# ---- packets --------------------------------------------------------------------------------
def cksum(data: bytes) -> int:
    """RFC 1071 by the book: a loop over big-endian words."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: bytes, src: bytes, etype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0x1234,
         csum: bool = True) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64,
                                proto, 0, src, dst))
    if csum:
        hdr[10:12] = struct.pack("!H", cksum(bytes(hdr)))
    return bytes(hdr) + payload


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def tcp(src: bytes, dst: bytes, payload: bytes, seq: int = 1000, flags: int = 0x18,
        csum: bool = True, seed: int | None = None, sport: int = 40000, dport: int = 80,
        ack: int = 1) -> bytes:
    hdr = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0))
    seg = bytes(hdr) + payload
    if seed is not None:
        hdr[16:18] = struct.pack("!H", seed)
    elif csum:
        hdr[16:18] = struct.pack("!H", cksum(pseudo(src, dst, 6, len(seg)) + seg))
    return bytes(hdr) + payload


def udp(src: bytes, dst: bytes, payload: bytes, csum: bool = True, seed: int | None = None) -> bytes:
    hdr = bytearray(struct.pack("!HHHH", 5000, 53, 8 + len(payload), 0))
    if seed is not None:
        hdr[6:8] = struct.pack("!H", seed)
    elif csum:
        c = cksum(pseudo(src, dst, 17, 8 + len(payload)) + bytes(hdr) + payload) or 0xFFFF
        hdr[6:8] = struct.pack("!H", c)
    return bytes(hdr) + payload


def pseudo_seed(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The un-complemented pseudo-header sum a driver seeds for offload (Linux
    ~csum_tcpudp_magic(..., len, ...))."""
    return ~cksum(pseudo(src, dst, proto, length)) & 0xFFFF


def check_l4(frame: bytes, l3: int = 14) -> bool:
    ihl = (frame[l3] & 0xF) * 4
    total = struct.unpack("!H", frame[l3 + 2 : l3 + 4])[0]
    proto = frame[l3 + 9]
    seg = frame[l3 + ihl : l3 + total]
    return cksum(pseudo(frame[l3 + 12 : l3 + 16], frame[l3 + 16 : l3 + 20], proto, len(seg)) + seg) == 0


def check_ip(frame: bytes, l3: int = 14) -> bool:
    ihl = (frame[l3] & 0xF) * 4
    return cksum(frame[l3 : l3 + ihl]) == 0


BCAST = b"\xff" * 6
PEER = bytes.fromhex("020000000002")
IP_A, IP_B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
