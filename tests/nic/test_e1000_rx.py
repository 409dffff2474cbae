"""Receive: filters, buffer sizes, multi-descriptor frames, long packets, VLAN, checksum
offload, FCS, ring full (RNBC then retry), RXDMT0, moderation on the virtual clock."""

from __future__ import annotations

import zlib

from e1000_rig import BCAST, IP_A, IP_B, MAC, PEER, Rig, d, eth, ipv4, tcp, udp


def rx_rig(**kw) -> Rig:
    r = Rig()
    r.setup_rx(**kw)
    r.wr(d.IMS, d.ICR_RXT0 | d.ICR_RXO | d.ICR_RXDMT0)
    r.rd(d.ICR)
    return r


def udp_frame(dst: bytes = MAC, n: int = 100) -> bytes:
    return eth(dst, PEER, 0x0800, ipv4(IP_B, IP_A, 17, udp(IP_B, IP_A, bytes(range(256)) * (n // 256)
                                                          + bytes(n % 256))))


def test_unicast_broadcast_multicast_promiscuous_filters():
    r = rx_rig()
    other = bytes.fromhex("020000000099")
    mcast = bytes.fromhex("01005e000001")
    assert r.nic.receive(udp_frame(MAC))
    assert r.nic.receive(udp_frame(other))
    assert r.nic.receive(udp_frame(BCAST))
    assert r.nic.receive(udp_frame(mcast))
    assert [f[0][:6] for f in r.rx_frames()] == [MAC, BCAST]
    # multicast through the MTA hash, MO=0: bits 47:36 of the address
    bit = ((mcast[5] << 8 | mcast[4]) >> 4) & 0xFFF
    r.wr(d.MTA + 4 * (bit >> 5), 1 << (bit & 31))
    r.nic.receive(udp_frame(mcast))
    assert [f[0][:6] for f in r.rx_frames()] == [mcast]
    # MO=3 uses bits 43:32: the same address no longer hits
    r.wr(d.RCTL, r.rd(d.RCTL) | 3 << 12)
    r.nic.receive(udp_frame(mcast))
    assert r.rx_frames() == []
    r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_MPE)
    r.nic.receive(udp_frame(mcast))
    assert len(r.rx_frames()) == 1
    # a second exact address, then promiscuous unicast
    r.wr(d.RA + 8, int.from_bytes(other[:4], "little"))
    r.wr(d.RA + 12, int.from_bytes(other[4:], "little") | d.RAH_AV)
    r.nic.receive(udp_frame(other))
    assert len(r.rx_frames()) == 1
    r.nic.receive(udp_frame(bytes.fromhex("020000000077")))
    assert r.rx_frames() == []
    r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_UPE)
    r.nic.receive(udp_frame(bytes.fromhex("020000000077")))
    assert len(r.rx_frames()) == 1
    r.wr(d.RCTL, r.rd(d.RCTL) & ~d.RCTL_BAM)
    r.nic.receive(udp_frame(BCAST))
    assert r.rx_frames() == []


def test_short_frames_padded_and_statistics():
    r = rx_rig()
    arp = eth(BCAST, PEER, 0x0806, bytes(28))
    r.nic.receive(arp)
    (data, status, _, _), = r.rx_frames()
    assert data == arp + bytes(18)
    assert status & (d.RXD_STAT_DD | d.RXD_STAT_EOP | d.RXD_STAT_IXSM) == 7
    assert r.rd(d.STATS["GPRC"]) == 1 and r.rd(d.STATS["BPRC"]) == 1
    assert r.rd(d.STATS["PRC64"]) == 1
    assert r.rd(d.STATS["GORCL"]) == 64


def test_fcs_included_unless_secrc():
    r = rx_rig()
    r.wr(d.RCTL, r.rd(d.RCTL) & ~d.RCTL_SECRC)
    f = udp_frame(n=200)
    r.nic.receive(f)
    (data, *_), = r.rx_frames()
    assert data == f + (zlib.crc32(f) & 0xFFFFFFFF).to_bytes(4, "little")


def test_buffer_sizes_and_multi_descriptor_frames():
    for bsize_bits, size in ((3 << 16, 256), (2 << 16, 512), (1 << 16, 1024)):
        r = rx_rig(rctl=bsize_bits, bufsize=size)
        f = udp_frame(n=1400)
        assert r.nic.receive(f)
        used = -(-len(f) // size)
        assert r.rd(d.RDH) == used
        lengths = [r.rx_desc(i)[1] for i in range(used)]
        assert lengths == [size] * (used - 1) + [len(f) - size * (used - 1)]
        eops = [bool(r.rx_desc(i)[3] & d.RXD_STAT_EOP) for i in range(used)]
        assert eops == [False] * (used - 1) + [True]
        (data, *_), = r.rx_frames()
        assert data == f


def test_long_packets_need_lpe_and_bsex():
    r = rx_rig(bufsize=4096, rctl=d.RCTL_BSEX | 3 << 16)
    big = udp_frame(n=5000)
    assert r.nic.receive(big)
    assert r.rx_frames() == []
    assert r.rd(d.STATS["ROC"]) == 1
    r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_LPE)
    assert r.nic.receive(big)
    (data, *_), = r.rx_frames()
    assert data == big
    assert r.rd(d.STATS["PRC1522"]) == 1
    huge = udp_frame(n=17000)
    r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_SBP)
    assert r.nic.receive(huge)  # beyond 16 KiB: dropped even with SBP
    assert r.rx_frames() == [] and r.rd(d.STATS["ROC"]) == 1


def test_vlan_filter_and_strip():
    r = rx_rig()
    inner = udp_frame()
    tagged = inner[:12] + b"\x81\x00\x30\x05" + inner[12:]  # PCP 1, VID 5
    r.nic.receive(tagged)
    (data, status, _, _), = r.rx_frames()
    assert data == tagged and not status & d.RXD_STAT_VP
    r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_VFE)
    r.nic.receive(tagged)
    assert r.rx_frames() == []
    r.wr(d.VFTA, 1 << 5)
    r.wr(d.CTRL, r.rd(d.CTRL) | d.CTRL_VME)
    r.nic.receive(tagged)
    (data, status, _, special), = r.rx_frames()
    assert data == inner and status & d.RXD_STAT_VP and special == 0x3005


def test_rx_checksum_offload():
    r = rx_rig()
    good = eth(MAC, PEER, 0x0800, ipv4(IP_B, IP_A, 6, tcp(IP_B, IP_A, b"data" * 50)))
    r.nic.receive(good)
    bad_l4 = bytearray(good)
    bad_l4[-1] ^= 0xFF
    r.nic.receive(bytes(bad_l4))
    bad_ip = bytearray(good)
    bad_ip[24] ^= 0xFF
    r.nic.receive(bytes(bad_ip))
    nosum = eth(MAC, PEER, 0x0800, ipv4(IP_B, IP_A, 17, udp(IP_B, IP_A, b"q" * 20, csum=False)))
    r.nic.receive(nosum)
    res = [(s, e) for _, s, e, _ in r.rx_frames()]
    ok = d.RXD_STAT_DD | d.RXD_STAT_EOP | d.RXD_STAT_IPCS | d.RXD_STAT_TCPCS
    assert res[0] == (ok, 0)
    assert res[1] == (ok, d.RXD_ERR_TCPE)
    assert res[2][1] & d.RXD_ERR_IPE
    assert res[3] == (d.RXD_STAT_DD | d.RXD_STAT_EOP | d.RXD_STAT_IPCS, 0)  # UDP csum 0: unchecked
    r.wr(d.RXCSUM, 0)
    r.nic.receive(good)
    (_, status, errors, _), = r.rx_frames()
    assert status & d.RXD_STAT_IXSM and not status & d.RXD_STAT_TCPCS and errors == 0


def test_ring_full_waits_counts_rnbc_then_retries():
    r = rx_rig(n=8)
    frames = [udp_frame(n=100 + i) for i in range(9)]
    results = [r.nic.receive(f) for f in frames]
    assert results == [True] * 7 + [False, False]  # 8 descriptors, 7 usable (RDT = 7)
    assert r.rd(d.STATS["RNBC"]) == 2
    assert r.rd(d.ICR) & d.ICR_RXDMT0
    got = r.rx_frames()  # hands descriptors back: RDT moves
    assert [g[0] for g in got] == frames[:7]
    assert r.nic.receive(frames[7])
    assert [g[0] for g in r.rx_frames()] == [frames[7]]


def test_rx_space_notification():
    r = rx_rig(n=8)
    calls = []
    r.nic.on_rx_space = lambda: calls.append(1)
    r.wr(d.RDT, 3)
    assert calls


def test_rx_disabled_or_link_down_drops_counted():
    r = rx_rig()
    r.wr(d.RCTL, 0)
    assert r.nic.receive(udp_frame())
    r.wr(d.RCTL, d.RCTL_EN | d.RCTL_SECRC)
    r.nic.set_link(False)
    assert r.nic.receive(udp_frame())
    assert r.nic.counters["rx dropped: receiver off or link down"] == 2
    r.cfg_write(0x04, 2, 0x0003)
    r.nic.set_link(True)
    r.advance(600_000_000)
    assert not r.nic.receive(udp_frame())  # no bus master: wait


def test_rdtr_radv_moderation_on_virtual_clock():
    r = rx_rig()
    r.wr(d.RDTR, 100)  # 102.4 us after the last frame
    r.wr(d.RADV, 250)  # 256 us after the first
    r.nic.receive(udp_frame())
    assert r.irq == 0
    r.advance(100_000)
    assert r.irq == 0
    r.advance(3_000)
    assert r.irq == 1 and r.rd(d.ICR) & d.ICR_RXT0
    # a stream every 80 us keeps restarting RDTR; RADV bounds the delay
    for _ in range(4):  # 320 us > RADV
        r.nic.receive(udp_frame())
        r.advance(80_000)
        r.rx_frames()
    assert r.rd(d.ICR) & d.ICR_RXT0
    # FPD flushes a pending delay at once
    r.nic.receive(udp_frame())
    assert r.irq == 0
    r.wr(d.RDTR, 100 | d.RDTR_FPD)
    assert r.irq == 1
    assert r.rd(d.RDTR) == 100


def test_itr_throttles_interrupt_rate():
    r = rx_rig()
    r.wr(d.ITR, 1000)  # 256 us between interrupts
    r.nic.receive(udp_frame())
    assert r.irq == 1
    r.rd(d.ICR)
    r.rx_frames()
    r.nic.receive(udp_frame())
    assert r.irq == 0  # within the interval
    r.advance(255_000)
    assert r.irq == 0
    r.advance(2_000)
    assert r.irq == 1
