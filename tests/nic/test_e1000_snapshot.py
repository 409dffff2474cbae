"""Snapshot -> mutate -> restore -> equal, including a packet half-assembled, EEPROM
bit-bang state, PHY registers and armed moderation timers."""

from __future__ import annotations

import copy

import pytest
from e1000_rig import BCAST, MAC, Rig, d, eth

from devmodel.core.device import SnapshotError


def busy_rig() -> Rig:
    r = Rig()
    r.setup_tx()
    r.setup_rx()
    r.wr(d.IMS, 0xFF)
    r.wr(d.RDTR, 500)
    r.legacy(eth(BCAST, MAC, 0x0806, bytes(46))[:20], cmd=0)  # a packet in progress
    r.kick()
    r.nic.receive(eth(MAC, BCAST[:5] + b"\x02", 0x0806, bytes(46)))  # RDTR timer armed
    r.wr(d.EECD, d.EECD_CS | d.EECD_REQ)
    r.mdic_write(d.MII_ANAR, 0x0061)
    return r


def test_snapshot_mutate_restore_equal():
    r = busy_rig()
    snap = copy.deepcopy(r.nic.snapshot())
    assert snap["state"]["tx_buffer"]
    assert snap["state"]["timer_state"]["rdtr"] is not None
    r.wr(d.CTRL, d.CTRL_RST)
    r.mdic_write(d.MII_ANAR, 0x01E1)
    r.nic.set_link(False)
    assert r.nic.snapshot() != snap
    r.nic.restore(snap)
    assert r.nic.snapshot() == snap
    # the restored device carries on: the rest of the packet and the RX delay
    r.legacy(eth(BCAST, MAC, 0x0806, bytes(46))[20:])
    r.tx_tail = 2
    r.kick()
    assert r.sent and r.sent[-1][:6] == BCAST
    r.advance(600_000)
    assert r.rd(d.ICR) & d.ICR_RXT0


def test_restore_rejects_foreign_snapshot():
    r = Rig()
    snap = r.nic.snapshot()
    snap["state"]["macregs"] = dict(snap["state"]["macregs"], BOGUS=1)
    with pytest.raises(ValueError):
        r.nic.restore(snap)
    bad = dict(r.nic.snapshot(), device="Other")
    with pytest.raises(SnapshotError):
        r.nic.restore(bad)


def test_machine_snapshot_round_trip():
    r = busy_rig()
    snap = copy.deepcopy(r.m.snapshot())
    r.m.reset()
    r.m.restore(snap)
    assert r.m.snapshot() == snap
