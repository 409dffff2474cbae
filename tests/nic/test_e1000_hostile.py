"""Hostile rings and descriptors: one regression test per applicable entry of
hostile-guest-catalog.md section 3 (10-16), plus the issue's list (TDLEN 0, TDT beyond TDLEN,
descriptors without EOP, zero-length buffers, buffers outside RAM, oversized packets).
Every case must finish, stay bounded, and report as the hardware would; strict mode turns
any exception inside the device into a test failure."""

from __future__ import annotations

import struct

from e1000_rig import BCAST, IP_A, IP_B, MAC, PEER, RX_RING, TX_RING, Rig, d, eth, ipv4, udp

from devmodel.nic.e1000_rx import RX_MAX_DESC_PER_PACKET
from devmodel.nic.e1000_tx import TX_MAX_DESC_PER_KICK, TX_MAX_PACKET

FRAME = eth(BCAST, MAC, 0x0806, bytes(46))


def tx_rig(n: int = 64) -> Rig:
    r = Rig()
    r.setup_tx(n)
    return r


def test_cve_2012_6075_oversized_receive_dropped_and_counted():
    r = Rig()
    r.setup_rx(rctl=3 << 16, bufsize=256)
    frame = eth(MAC, PEER, 0x0800, bytes(1600))
    assert r.nic.receive(frame)
    assert r.rd(d.RDH) == 0  # nothing written
    assert r.rd(d.STATS["ROC"]) == 1
    # with LPE the frame is spread, never written past a 256-byte buffer
    r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_LPE)
    assert r.nic.receive(frame)
    assert all(r.rx_desc(i)[1] <= 256 for i in range(r.rd(d.RDH)))
    assert r.mem.read(0x400000 + 7 * 256, 256) == bytes(256)  # the 8th buffer untouched


def test_cve_2015_6815_tso_context_without_progress():
    r = tx_rig()
    r.context(tucmd=d.TUCMD_IP | d.TUCMD_TCP | d.TUCMD_TSE, hdrlen=54, mss=0)
    r.data(bytes(3000), dcmd=d.TXD_CMD_TSE | d.TXD_CMD_EOP | d.TXD_CMD_RS)
    r.context(tucmd=d.TUCMD_IP | d.TUCMD_TCP | d.TUCMD_TSE, hdrlen=0, mss=1)
    r.data(bytes(3000), dcmd=d.TXD_CMD_TSE | d.TXD_CMD_EOP | d.TXD_CMD_RS)
    r.kick()
    assert r.sent == []
    assert r.rd(d.TDH) == 4
    assert r.tx_status(1) & d.TXD_STAT_DD and r.tx_status(3) & d.TXD_STAT_DD


def test_tso_with_tiny_mss_is_bounded():
    r = tx_rig()
    r.context(tucmd=d.TUCMD_IP | d.TUCMD_TCP | d.TUCMD_TSE, hdrlen=54, mss=1)
    r.data(bytes(54 + 20000), dcmd=d.TXD_CMD_TSE | d.TXD_CMD_EOP)
    r.kick()
    assert r.sent == []  # 20000 segments: refused, not sent one byte at a time
    assert r.rd(d.TDH) == 2


TX_OUTSIDE = "tx ring pointers outside TDLEN"
RX_OUTSIDE = "rx ring pointers outside RDLEN"


def test_cve_2016_1981_head_tail_outside_ring():
    r = tx_rig(8)
    for i in range(8):
        r.mem.write(TX_RING + 16 * i, d.TX_LEGACY.pack(0x100000, 60, 0, d.TXD_CMD_EOP | d.TXD_CMD_RS,
                                                       0, 0, 0))
    r.wr(d.TDH, 9)  # past the last descriptor of an 8-entry ring
    r.wr(d.TDT, 3)
    assert r.sent == [] and r.rd(d.TDH) == 9
    assert r.nic.counters[TX_OUTSIDE] == 1
    r.wr(d.TDH, 0)
    r.wr(d.TDT, 200)  # TDT beyond TDLEN: the head would never meet it
    assert r.sent == [] and r.rd(d.TDH) == 0
    assert r.nic.counters[TX_OUTSIDE] == 2
    assert not any(r.tx_status(i) & d.TXD_STAT_DD for i in range(8))  # nothing written back
    r.wr(d.TDLEN, 0)  # TDLEN 0: no ring at all
    r.wr(d.TDT, 1)
    assert r.sent == [] and r.rd(d.TDH) == 0
    assert r.nic.counters[TX_OUTSIDE] == 3
    r.wr(d.TDLEN, 16 * 8)  # a sane ring again: the walk works
    r.wr(d.TDT, 2)
    assert len(r.sent) == 2 and r.rd(d.TDH) == 2
    # receive side: RDT beyond RDLEN, then RDLEN 0: the frame is missed, nothing walked
    r.setup_rx(8)
    r.wr(d.RDT, 50)
    r.wr(d.IMS, d.ICR_RXO)
    assert r.nic.receive(FRAME)
    assert r.rd(d.STATS["MPC"]) == 1 and r.rd(d.ICR) & d.ICR_RXO
    r.wr(d.RDT, 7)
    r.wr(d.RDLEN, 0)
    assert r.nic.receive_many([FRAME, FRAME]) == 2
    assert r.rd(d.STATS["MPC"]) == 2 and r.rd(d.RDH) == 0
    assert r.nic.counters[RX_OUTSIDE] == 3
    assert not r.rx_desc(0)[3] & d.RXD_STAT_DD


def test_full_ring_walk_is_bounded_per_doorbell():
    n = 8
    r = tx_rig(n)
    for i in range(n):
        r.mem.write(TX_RING + 16 * i, d.TX_LEGACY.pack(0x100000, 60, 0, d.TXD_CMD_EOP, 0, 0, 0))
    r.wr(d.TDT, n - 1)
    assert len(r.sent) == n - 1 and r.rd(d.TDH) == n - 1
    # a big ring: one doorbell walks at most TX_MAX_DESC_PER_KICK, the rest on a timer
    big = 8192
    r2 = Rig(ram=16 << 20)
    r2.mem.write(TX_RING, d.TX_LEGACY.pack(0x100000, 60, 0, d.TXD_CMD_EOP, 0, 0, 0) * big)
    r2.wr(d.TDBAL, TX_RING)
    r2.wr(d.TDLEN, 16 * big)
    r2.wr(d.TCTL, d.TCTL_EN)
    r2.wr(d.TDT, big - 1)
    assert len(r2.sent) == TX_MAX_DESC_PER_KICK
    r2.advance(1)
    assert len(r2.sent) == big - 1


def test_cve_2021_20257_mixed_descriptor_types_drop_packet():
    r = tx_rig()
    r.context(tucmd=d.TUCMD_IP | d.TUCMD_TCP | d.TUCMD_TSE, hdrlen=54, mss=100)
    r.data(bytes(300), dcmd=d.TXD_CMD_TSE)  # no EOP
    r.legacy(bytes(300), cmd=d.TXD_CMD_EOP)  # a legacy descriptor ends it
    r.legacy(FRAME)
    r.kick()
    assert r.sent == [FRAME]  # the mixed packet (through its EOP) is dropped
    assert any("mix" in k for k in r.nic.counters)
    assert r.nic.tx_tso_ctx[-1] == 0  # context reset


def test_cve_2021_3416_loopback_through_own_ring_is_queued_and_bounded():
    r = tx_rig()
    r.setup_rx(8)
    r.wr(d.RCTL, r.rd(d.RCTL) | 0x40 | d.RCTL_UPE)
    # the RX buffers point at the TX ring: delivery rewrites TX descriptors, never re-enters
    for i in range(8):
        r.mem.write(RX_RING + 16 * i, struct.pack("<QQ", TX_RING, 0))
    for _ in range(40):
        r.legacy(FRAME)
    r.kick()
    for _ in range(5):
        r.advance(1)
    assert len(r.nic.loop_queue) <= 64
    assert r.nic.failed is False


def test_cve_2020_28916_null_rx_buffers_count_against_budget():
    n = 256
    r = Rig()
    r.setup_rx(n)
    for i in range(n):
        r.mem.write(RX_RING + 16 * i, bytes(16))  # every buffer address 0
    assert r.nic.receive(FRAME)  # placed nowhere: dropped after the budget, counted
    assert r.rd(d.RDH) == 0
    assert r.rd(d.STATS["MPC"]) == 1
    # a few null buffers are skipped, as the SDM says
    r.setup_rx(8)
    r.mem.write(RX_RING, bytes(16))
    assert r.nic.receive(FRAME)
    assert r.rd(d.RDH) == 2 and r.rx_desc(0)[3] & d.RXD_STAT_DD and r.rx_desc(0)[1] == 0
    assert RX_MAX_DESC_PER_PACKET < n


def test_cve_2020_15859_dma_outside_ram_is_a_master_abort():
    r = tx_rig()
    mmio = 0xFEB00000  # our own BAR0
    r.legacy(FRAME, buf=0x100000)
    r.mem.write(TX_RING + 16, d.TX_LEGACY.pack(mmio + d.CTRL, 60, 0, d.TXD_CMD_EOP | d.TXD_CMD_RS,
                                               0, 0, 0))
    r.tx_tail = 2
    r.legacy(FRAME)
    r.kick()
    assert len(r.sent) == 2  # the bad packet dropped, the ring goes on
    assert r.tx_status(1) & d.TXD_STAT_DD
    assert r.cfg_read(0x06, 2) & 0x2000  # received master abort
    assert r.rd(d.CTRL) & d.CTRL_SLU  # registers untouched
    # a ring outside RAM stops the walk
    r.wr(d.TDBAL, 0xFFFF0000)
    r.wr(d.TDH, 0)
    r.wr(d.TDT, 1)
    assert r.rd(d.TDH) == 0
    # RX buffers outside RAM: RXE on the descriptor
    r.setup_rx(8)
    r.mem.write(RX_RING, struct.pack("<QQ", 0xFFFF0000, 0))
    assert r.nic.receive(FRAME)
    assert r.rx_desc(0)[4] & d.RXD_ERR_RXE


def test_descriptors_without_eop_and_oversized_packets():
    n = 512
    r = Rig(ram=16 << 20)
    r.setup_tx(n)
    for _ in range(n - 1):
        r.legacy(bytes(256), cmd=0)  # no EOP anywhere
    r.kick()
    assert r.sent == [] and r.rd(d.TDH) == n - 1
    r.legacy(FRAME)  # the EOP finally comes: the runaway packet is dropped
    r.kick()
    assert r.sent == []
    r.legacy(FRAME)
    r.kick()
    assert r.sent == [FRAME]
    # one descriptor longer than any packet (a 20-bit length)
    r.data(bytes(16), length=0xFFFFF)
    r.kick()
    assert len(r.sent) == 1
    assert any("longer" in k for k in r.nic.counters)
    assert TX_MAX_PACKET == 0x10000


def test_zero_length_buffers():
    r = tx_rig()
    r.legacy(b"", cmd=0)
    r.legacy(b"", cmd=d.TXD_CMD_EOP | d.TXD_CMD_RS)  # an empty packet: nothing sent
    r.legacy(FRAME[:30], cmd=0)
    r.legacy(b"", cmd=0)
    r.legacy(FRAME[30:])
    r.kick()
    assert r.sent == [FRAME]
    assert r.tx_status(1) & d.TXD_STAT_DD


def test_random_descriptors_never_raise():
    import random

    rnd = random.Random(1234)
    r = Rig()
    r.setup_tx(64)
    r.setup_rx(64)
    for _ in range(300):
        r.mem.write(TX_RING + 16 * rnd.randrange(64), rnd.randbytes(16))
        r.mem.write(RX_RING + 16 * rnd.randrange(64), rnd.randbytes(16))
        r.wr(d.TDT, rnd.randrange(70))
        r.nic.receive(eth(MAC, PEER, 0x0800, ipv4(IP_B, IP_A, 17, udp(IP_B, IP_A,
                                                                      rnd.randbytes(rnd.randrange(1500))))))
        if rnd.random() < 0.1:
            r.wr(d.RDT, rnd.randrange(64))
    assert r.nic.failed is False
