"""--trace records every message both ways; a trace replays against a fresh daemon."""

from __future__ import annotations

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.trace import FROM_DM, TO_DM, read_trace, replay
from devmodel.wire.codec import HEADER
from devmodel.wire.constants import MsgType


def _types(path: str, direction: int) -> list[int]:
    return [HEADER.unpack_from(r.message, 0)[0] for r in read_trace(path) if r.direction == direction]


def test_trace_records_both_directions_and_replays(tmp_path):
    trace = str(tmp_path / "boot.trace")
    with Hypervisor.spawn(["--domid", "2", "--trace", trace], ram=16 << 20) as hv:
        assert hv.pci_cfg_read(0, 0, 4) == 0x12378086
        hv.outb(0x70, 0x0F)
        hv.outb(0x71, 0x5A)
        hv.outb(0x70, 0x0F)
        assert hv.inb(0x71) == 0x5A
        hv.process.signal()
        assert hv.process.wait_exit() == 0
    to_dm = _types(trace, TO_DM)
    from_dm = _types(trace, FROM_DM)
    assert to_dm[0] == MsgType.HELLO and MsgType.MEM_ADD in to_dm and MsgType.DMOP_REPLY in to_dm
    assert from_dm[0] == MsgType.HELLO and MsgType.DMOP in from_dm
    assert to_dm.count(MsgType.IOREQ) == from_dm.count(MsgType.IORESP) == 5

    proc = DaemonProcess.start(["--domid", "2"])
    try:
        hv = Hypervisor.connect(proc.socket_path, handshake=False)
        result = replay(trace, hv)
        assert result.answers == 5
        assert result.mismatches == []
        hv.sock.close()
        assert proc.wait_exit() == 0
    finally:
        proc.stop()


def test_trace_rejects_other_files(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"not a trace")
    import pytest

    with pytest.raises(ValueError, match="not a devmodel trace"):
        list(read_trace(str(bad)))
