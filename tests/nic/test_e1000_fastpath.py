"""The batched fast paths (a TX doorbell's walk over the ring as one view, receive_many) must
be invisible to the guest: the same frames, descriptors, registers, statistics and interrupt
causes as the general per-descriptor path. The general path is forced by putting the ring
across two RAM regions (no single view), everything else being equal."""

from __future__ import annotations

import random
import struct

import pytest
from e1000_rig import BCAST, IP_A, IP_B, MAC, PEER, RX_BUFS, RX_RING, TX_RING, Rig, d, eth, ipv4, udp

TX_N = RX_N = 32


def same_state(a: Rig, b: Rig) -> None:
    assert a.nic.regs.values == b.nic.regs.values  # every register and statistic, uncleared
    assert dict(a.nic.counters) == dict(b.nic.counters)
    assert a.irq == b.irq
    assert a.nic.config == b.nic.config


def tx_program(seed: int) -> list[tuple[str, dict]]:
    rnd = random.Random(seed)
    steps: list[tuple[str, dict]] = []
    for _ in range(120):
        kind = rnd.choice(["fast", "fast", "fast", "short", "multi", "ic", "zero", "bad", "ide", "vlan"])
        dst = rnd.choice([PEER, BCAST, b"\x01\x00\x5e\x00\x00\x01"])
        size = rnd.randrange(60, 1515)
        steps.append((kind, {"frame": eth(dst, MAC, 0x88B5, rnd.randbytes(size - 14)),
                             "kick": rnd.random() < 0.2}))
    return steps


def run_tx(r: Rig, steps) -> None:
    rnd = random.Random(99)
    r.icrs = []
    r.setup_tx(TX_N)
    r.wr(d.CTRL, r.rd(d.CTRL) | d.CTRL_VME)
    r.wr(d.TIDV, 0)
    r.wr(d.IMS, d.ICR_TXDW | d.ICR_TXQE)
    rs = d.TXD_CMD_EOP | d.TXD_CMD_RS
    for kind, p in steps:
        f = p["frame"]
        if kind == "fast":
            r.legacy(f, cmd=rs)
            # stale EC/LC/TU bits in STA: write-back clears them (full duplex)
            r.mem.write(TX_RING + 16 * ((r.tx_tail - 1) % TX_N) + 12, b"\x0e")
        elif kind == "short":
            r.legacy(f[:42], cmd=rs)  # padded by PSP
        elif kind == "multi":
            r.legacy(f[:30], cmd=0)
            r.legacy(f[30:], cmd=rs)
        elif kind == "ic":
            r.legacy(f, cmd=rs | d.TXD_CMD_IC, cso=20, css=14)
        elif kind == "zero":
            r.legacy(b"", cmd=rs)
        elif kind == "bad":
            r.put_tx(d.TX_LEGACY.pack(0xFFFF0000, 64, 0, rs, 0, 0, 0))
        elif kind == "ide":
            r.legacy(f, cmd=rs | d.TXD_CMD_IDE)
        elif kind == "vlan":
            r.legacy(f, cmd=rs | d.TXD_CMD_VLE, special=0x0123)
        if p["kick"] or (r.tx_tail - r.rd(d.TDH)) % TX_N > TX_N - 4:
            r.kick()
            if rnd.random() < 0.5:
                r.icrs.append(r.rd(d.ICR))
    r.kick()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tx_fast_path_matches_general_path(seed):
    steps = tx_program(seed)
    fast, general = Rig(), Rig(split=TX_RING + 16 * 7)
    assert len(general.mem.views(TX_RING, 16 * TX_N)) == 2
    for r in (fast, general):
        r.mem.dirty_log = set()  # live migration's log: every page DMA wrote must be in it
        run_tx(r, steps)
    assert general.mem.dirty_log and general.mem.dirty_log <= fast.mem.dirty_log
    assert fast.sent and fast.sent == general.sent
    assert fast.icrs == general.icrs and any(fast.icrs)
    assert fast.mem.read(TX_RING, 16 * TX_N) == general.mem.read(TX_RING, 16 * TX_N)
    same_state(fast, general)
    assert fast.nic.regs.values["GPTC"] == len(fast.sent)


def rx_frames(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for _ in range(150):
        dst = rnd.choice([MAC, MAC, MAC, BCAST, PEER, b"\x01\x00\x5e\x00\x00\x01"])
        kind = rnd.choice(["raw", "raw", "ip", "vlan", "short", "long"])
        if kind == "ip":
            payload = rnd.randbytes(rnd.randrange(0, 1400))
            f = eth(dst, PEER, 0x0800, ipv4(IP_B, IP_A, 17, udp(IP_B, IP_A, payload)))
            if rnd.random() < 0.3:
                f = f[:-1] + bytes((f[-1] ^ 0xFF,))  # a bad UDP checksum
        elif kind == "vlan":
            f = dst + PEER + struct.pack("!HH", 0x8100, rnd.randrange(4096)) + b"\x88\xb5" + bytes(60)
        elif kind == "short":
            f = eth(dst, PEER, 0x88B5, rnd.randbytes(rnd.randrange(0, 46)))
        elif kind == "long":
            f = eth(dst, PEER, 0x88B5, rnd.randbytes(rnd.randrange(1500, 2100)))
        else:
            f = eth(dst, PEER, 0x88B5, rnd.randbytes(rnd.randrange(46, 1501)))
        out.append(f)
    return out


def harvest(r: Rig, k: int) -> None:
    """Hand back up to k completed descriptors as a driver does (RDT moves)."""
    for _ in range(k):
        if not r.rx_desc(r.rx_next)[3] & d.RXD_STAT_DD:
            break
        r.mem.write(RX_RING + 16 * r.rx_next + 8, bytes(8))
        r.rx_next = (r.rx_next + 1) % RX_N
    r.wr(d.RDT, (r.rx_next - 1) % RX_N)


@pytest.mark.parametrize("seed,rctl", [(1, 0), (2, d.RCTL_UPE | d.RCTL_SECRC), (3, d.RCTL_MPE),
                                       (4, d.RCTL_LPE | d.RCTL_VFE)])
def test_receive_many_matches_general_path(seed, rctl):
    frames = rx_frames(seed)
    fast, general = Rig(), Rig(split=RX_RING + 16 * 5)
    assert len(general.mem.views(RX_RING, 16 * RX_N)) == 2
    results = {}
    for name, r in (("fast", fast), ("general", general)):
        r.mem.dirty_log = set()  # live migration's log: every page DMA wrote must be in it
        r.setup_rx(RX_N, bufsize=2048)
        r.wr(d.RCTL, d.RCTL_EN | d.RCTL_BAM | rctl | (1 << d.RCTL_RDMTS_SHIFT))
        r.wr(d.MTA + 4 * 0x7F, 0xFFFFFFFF)  # some multicast hashes accepted
        r.wr(d.VFTA, 0xFFFF)
        r.wr(d.IMS, d.ICR_RXT0 | d.ICR_RXDMT0 | d.ICR_RXO)
        rnd = random.Random(seed)
        pos = 0
        taken = []
        while pos < len(frames):
            want = rnd.randrange(1, 40)
            k = r.nic.receive_many(frames[pos : pos + want])
            taken.append((k, min(want, len(frames) - pos)))
            pos += k
            taken.append(r.rd(d.ICR))  # the causes of each batch
            harvest(r, rnd.randrange(0, 8))
        results[name] = taken
    assert results["fast"] == results["general"]
    assert general.mem.dirty_log <= fast.mem.dirty_log
    assert {p for p in general.mem.dirty_log if p >= RX_BUFS >> 12}  # buffers, not only rings
    batches = [t for t in results["fast"] if isinstance(t, tuple)]
    assert any(k < want for k, want in batches)  # the ring filled: frames waited
    assert any(t & d.ICR_RXDMT0 for t in results["fast"] if isinstance(t, int))
    assert fast.mem.read(RX_RING, 16 * RX_N) == general.mem.read(RX_RING, 16 * RX_N)
    assert fast.mem.read(RX_BUFS, 2048 * RX_N) == general.mem.read(RX_BUFS, 2048 * RX_N)
    same_state(fast, general)
    assert fast.nic.regs.values["GPRC"] > 50


def test_receive_many_is_receive_one_by_one():
    frames = rx_frames(7)[:60]
    a, b = Rig(), Rig()
    for r in (a, b):
        r.setup_rx(RX_N)
        r.wr(d.RCTL, r.rd(d.RCTL) | d.RCTL_UPE)
        r.wr(d.IMS, d.ICR_RXT0 | d.ICR_RXDMT0)
    n = a.nic.receive_many(frames)
    ones = 0
    for f in frames:
        if not b.nic.receive(f):
            break
        ones += 1
    assert n == ones < len(frames)
    assert a.mem.read(RX_RING, 16 * RX_N) == b.mem.read(RX_RING, 16 * RX_N)
    # one batch counts RNBC once where one-by-one stopped at the first refusal too
    assert a.nic.regs.values == b.nic.regs.values
