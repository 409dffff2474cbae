"""Transmit: legacy and extended descriptors, checksum offload, TSO, VLAN, padding,
write-back and TX interrupts; frames checked with an independent checksum."""

from __future__ import annotations

import struct

from e1000_rig import (
    BCAST,
    IP_A,
    IP_B,
    MAC,
    PEER,
    Rig,
    check_ip,
    check_l4,
    d,
    eth,
    ipv4,
    pseudo_seed,
    tcp,
    udp,
)


def tx_rig() -> Rig:
    r = Rig()
    r.setup_tx()
    r.wr(d.IMS, d.ICR_TXDW | d.ICR_TXQE)
    r.rd(d.ICR)
    return r


def test_legacy_single_and_multi_descriptor_packets():
    r = tx_rig()
    frame = eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 17, udp(IP_A, IP_B, b"x" * 200)))
    r.legacy(frame)
    r.legacy(frame[:20], cmd=0)
    r.legacy(frame[20:100], cmd=0)
    r.legacy(frame[100:], cmd=d.TXD_CMD_EOP | d.TXD_CMD_RS)
    r.kick()
    assert r.sent == [frame, frame]
    assert r.rd(d.TDH) == 4
    assert r.tx_status(0) & d.TXD_STAT_DD
    assert r.tx_status(1) == 0  # no RS: no write-back
    assert r.tx_status(3) & d.TXD_STAT_DD
    assert r.irq == 1
    assert r.rd(d.ICR) & (d.ICR_TXDW | d.ICR_TXQE) == d.ICR_TXDW | d.ICR_TXQE


def test_short_frames_padded_with_psp():
    r = tx_rig()
    r.legacy(eth(BCAST, MAC, 0x0806, bytes(28)))
    r.kick()
    assert len(r.sent[0]) == 60 and r.sent[0][42:] == bytes(18)
    r.wr(d.TCTL, r.rd(d.TCTL) & ~d.TCTL_PSP)
    r.legacy(eth(BCAST, MAC, 0x0806, bytes(28)))
    r.kick()
    assert len(r.sent[1]) == 42


def test_legacy_checksum_insertion():
    r = tx_rig()
    seg = udp(IP_A, IP_B, b"payload!" * 10, seed=pseudo_seed(IP_A, IP_B, 17, 88))
    frame = eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 17, seg))
    r.legacy(frame, cmd=d.TXD_CMD_EOP | d.TXD_CMD_RS | d.TXD_CMD_IC, css=34, cso=40)
    r.kick()
    assert check_l4(r.sent[0])


def test_context_checksum_offload_tcp_and_ip():
    r = tx_rig()
    body = bytes(range(256)) * 3
    seg = tcp(IP_A, IP_B, body, seed=pseudo_seed(IP_A, IP_B, 6, 20 + len(body)))
    pkt = bytearray(eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 6, seg, csum=False)))
    r.context(ipcss=14, ipcso=24, ipcse=33, tucss=34, tucso=50)
    r.data(bytes(pkt[:54]), dcmd=0, popts=d.POPTS_TXSM | d.POPTS_IXSM)
    r.data(bytes(pkt[54:]), popts=0)  # POPTS come from the first data descriptor
    r.kick()
    out = r.sent[0]
    assert check_ip(out) and check_l4(out)
    assert out[54:] == body


def test_udp_checksum_zero_becomes_ffff():
    r = tx_rig()
    # find a payload whose UDP checksum comes out 0: then it must be sent as 0xFFFF
    for i in range(70000):
        body = struct.pack("!I", i) + b"zz"
        seg = udp(IP_A, IP_B, body, csum=True)
        if seg[6:8] == b"\xff\xff":
            break
    seg = udp(IP_A, IP_B, body, seed=pseudo_seed(IP_A, IP_B, 17, len(seg)))
    frame = eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 17, seg))
    r.context(tucss=34, tucso=40, tucmd=d.TUCMD_IP)
    r.data(frame, popts=d.POPTS_TXSM)
    r.kick()
    assert r.sent[0][40:42] == b"\xff\xff"


def test_tso_segments_headers_and_checksums():
    r = tx_rig()
    mss = 1000
    body = bytes((i * 7) & 0xFF for i in range(3500))
    seed = pseudo_seed(IP_A, IP_B, 6, 0)  # Linux seeds the TSO pseudo-header without length
    seg = tcp(IP_A, IP_B, b"", seq=5000, flags=0x19, seed=seed)  # PSH|FIN|ACK... on the last
    hdr = eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 6, seg, ident=0x100, csum=False))
    hdr = bytearray(hdr)
    hdr[16:18] = b"\0\0"  # tot_len 0, as Linux e1000_tso
    r.context(ipcss=14, ipcso=24, ipcse=33, tucss=34, tucso=50, paylen=len(body),
              tucmd=d.TUCMD_IP | d.TUCMD_TCP | d.TUCMD_TSE, hdrlen=54, mss=mss)
    r.data(bytes(hdr), dcmd=d.TXD_CMD_TSE, popts=d.POPTS_TXSM | d.POPTS_IXSM)
    r.data(body[:1700], dcmd=d.TXD_CMD_TSE)
    r.data(body[1700:], dcmd=d.TXD_CMD_TSE | d.TXD_CMD_EOP | d.TXD_CMD_RS)
    r.kick()
    assert len(r.sent) == 4
    got = b""
    for i, f in enumerate(r.sent):
        assert check_ip(f), i
        assert check_l4(f), i
        tot = struct.unpack("!H", f[16:18])[0]
        assert tot == len(f) - 14
        assert struct.unpack("!H", f[18:20])[0] == 0x100 + i
        assert struct.unpack("!I", f[38:42])[0] == 5000 + i * mss
        flags = f[47]
        assert flags & 0x09 == (0x09 if i == 3 else 0)
        got += f[54:]
    assert got == body
    assert [len(f) - 54 for f in r.sent] == [1000, 1000, 1000, 500]
    assert r.rd(d.STATS["TSCTC"]) == 1


def test_tso_udp_sets_lengths():
    r = tx_rig()
    body = bytes(2500)
    seg = udp(IP_A, IP_B, b"", seed=pseudo_seed(IP_A, IP_B, 17, 0))
    hdr = eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 17, seg, csum=False))
    r.context(ipcse=33, tucss=34, tucso=40, tucmd=d.TUCMD_IP | d.TUCMD_TSE, hdrlen=42, mss=1000,
              paylen=2500)
    r.data(hdr + body, dcmd=d.TXD_CMD_TSE | d.TXD_CMD_EOP, popts=d.POPTS_TXSM | d.POPTS_IXSM)
    r.kick()
    assert [len(f) for f in r.sent] == [1042, 1042, 542]
    for f in r.sent:
        assert struct.unpack("!H", f[38:40])[0] == len(f) - 34
        assert check_l4(f) and check_ip(f)


def test_vlan_insertion():
    r = tx_rig()
    r.wr(d.CTRL, r.rd(d.CTRL) | d.CTRL_VME)
    frame = eth(PEER, MAC, 0x0800, ipv4(IP_A, IP_B, 17, udp(IP_A, IP_B, b"v" * 30)))
    r.legacy(frame, cmd=d.TXD_CMD_EOP | d.TXD_CMD_RS | d.TXD_CMD_VLE, special=0x2064)
    r.kick()
    out = r.sent[0]
    assert out[12:16] == b"\x81\x00\x20\x64"
    assert out[:12] + out[16:] == frame
    r.wr(d.CTRL, r.rd(d.CTRL) & ~d.CTRL_VME)  # VLE ignored without CTRL.VME
    r.legacy(frame, cmd=d.TXD_CMD_EOP | d.TXD_CMD_VLE, special=5)
    r.kick()
    assert r.sent[1] == frame


def test_context_descriptor_write_back_and_no_frame():
    r = tx_rig()
    r.context(rs=True)
    r.kick()
    assert r.sent == []
    assert r.tx_status(0) & d.TXD_STAT_DD


def test_tx_disabled_or_no_bus_master_holds_the_ring():
    r = tx_rig()
    r.cfg_write(0x04, 2, 0x0003)
    r.legacy(eth(BCAST, MAC, 0x0806, bytes(46)))
    r.kick()
    assert r.sent == [] and r.rd(d.TDH) == 0
    r.cfg_write(0x04, 2, 0x0007)  # bus master on: the pending doorbell is served
    assert len(r.sent) == 1 and r.rd(d.TDH) == 1
    r.wr(d.TCTL, 0)
    r.legacy(eth(BCAST, MAC, 0x0806, bytes(46)))
    r.kick()
    assert len(r.sent) == 1
    r.wr(d.TCTL, d.TCTL_EN | d.TCTL_PSP)
    assert len(r.sent) == 2


def test_tx_descriptor_delay_tidv_tadv():
    r = tx_rig()
    r.wr(d.TIDV, 100)  # 102.4 us
    r.wr(d.TADV, 150)
    for _ in range(3):
        r.legacy(eth(BCAST, MAC, 0x0806, bytes(46)), cmd=d.TXD_CMD_EOP | d.TXD_CMD_RS | d.TXD_CMD_IDE)
        r.kick()
        r.rd(d.ICR)  # TXQE only
        r.advance(60_000)
    # 3 x 60 us: TIDV restarted each time, but TADV (153.6 us) since the first fires
    assert r.rd(d.ICR) & d.ICR_TXDW


def test_loopback_delivers_to_receive_later_not_recursively():
    r = tx_rig()
    r.setup_rx()
    r.wr(d.RCTL, r.rd(d.RCTL) | 0x40)  # MAC loopback
    frame = eth(MAC, MAC, 0x0800, ipv4(IP_A, IP_B, 17, udp(IP_A, IP_B, b"loop" * 10)))
    r.legacy(frame)
    r.kick()
    assert r.sent == []
    assert r.rx_frames() == []  # not delivered inside the doorbell
    r.advance(1)
    frames = r.rx_frames()
    assert frames[0][0] == frame
