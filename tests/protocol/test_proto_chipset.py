"""The i440FX/PIIX3 chipset over a real socket, compared with QEMU's `pc` machine: the PCI scan
(through PCI_CONFIG ioreqs and through CF8/CFC port I/O), PIRQ routing, ELCR, CF8 sub-dword
quirks, and resets (0xCF9, port 0x92) whose remote_shutdown precedes the IORESP."""

from __future__ import annotations

import itertools

import pytest
from dmsupport import RawPeer

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.wire import codec
from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import IO_RANGE_PCI, IO_RANGE_PORT, DmOp, MsgType


@pytest.fixture(scope="module")
def hv():
    h = Hypervisor.spawn(["--domid", "2"], ram=16 << 20)
    yield h
    proc = h.process
    proc.signal()
    h.close()
    assert proc.proc.returncode == 0


class ViaPciConfig:
    def __init__(self, hv):
        self.hv = hv

    def read(self, devfn, off, size):
        return self.hv.pci_cfg_read(devfn, off, size)

    def write(self, devfn, off, size, v):
        self.hv.pci_cfg_write(devfn, off, size, v)


class ViaCf8:
    def __init__(self, hv):
        self.hv = hv

    def read(self, devfn, off, size):
        return self.hv.cf8_read(devfn, off, size)

    def write(self, devfn, off, size, v):
        self.hv.cf8_write(devfn, off, size, v)


@pytest.fixture(params=["pci_config", "cf8"])
def cfg(request, hv):
    return ViaPciConfig(hv) if request.param == "pci_config" else ViaCf8(hv)


def test_claims_match_qemu_pc(hv):
    st = hv.state
    assert {(0, 0), (8, 8)} <= set(st.pci)  # later devices (01.1 IDE, 01.3 PM...) may add more
    assert (0xCF8, 0xCFF) in list(st.ports) and (0x92, 0x92) in list(st.ports)
    assert (0x4D0, 0x4D1) in list(st.ports)
    assert st.server_enabled and st.server_created
    assert st.link_route == {0: 0, 1: 0, 2: 0, 3: 0}  # announced from the reset values 0x80
    assert hv.claims_pci(0) and hv.claims_pci(8) and not hv.claims_pci(0x1F << 3)
    kinds = {r.fields[2] for r in st.dmops if r.op == DmOp.MAP_IO_RANGE_TO_IOREQ_SERVER}
    assert {IO_RANGE_PORT, IO_RANGE_PCI} <= kinds


def test_scan_helper(hv):
    scan = hv.pci_scan()
    assert {k: scan[k] for k in (0, 8)} == {
        0: {"vendor": 0x8086, "device": 0x1237, "revision": 2, "class": 0x060000, "header_type": 0,
            "subsystem_vendor": 0x1AF4, "subsystem": 0x1100},
        8: {"vendor": 0x8086, "device": 0x7000, "revision": 0, "class": 0x060100,
            "header_type": 0x80, "subsystem_vendor": 0x1AF4, "subsystem": 0x1100},
    }


def test_host_bridge_00_00_0(cfg):
    assert cfg.read(0, 0x00, 4) == 0x12378086
    assert cfg.read(0, 0x08, 4) == 0x06000002  # class 060000, revision 02
    assert cfg.read(0, 0x08, 1) == 0x02
    assert cfg.read(0, 0x0B, 1) == 0x06 and cfg.read(0, 0x0A, 1) == 0x00
    assert cfg.read(0, 0x0E, 1) == 0x00
    assert cfg.read(0, 0x2C, 4) == 0x11001AF4
    assert cfg.read(0, 0x04, 2) == 0x0000  # command 0 after reset
    assert cfg.read(0, 0x3D, 1) == 0  # no interrupt pin


def test_isa_bridge_00_01_0(cfg):
    assert cfg.read(8, 0x00, 4) == 0x70008086
    assert cfg.read(8, 0x08, 4) == 0x06010000
    assert cfg.read(8, 0x0E, 1) == 0x80  # multi-function
    assert cfg.read(8, 0x2C, 2) == 0x1AF4 and cfg.read(8, 0x2E, 2) == 0x1100
    assert cfg.read(8, 0x04, 2) == 0x0000
    assert cfg.read(8, 0x06, 2) == 0x0200  # DEVSEL medium
    assert cfg.read(8, 0x04, 4) == 0x02000000
    assert cfg.read(8, 0x60, 4) == 0x80808080  # PIRQA-D routing disabled
    for i in range(4):
        assert cfg.read(8, 0x60 + i, 1) == 0x80


@pytest.mark.parametrize("devfn", [0, 8])
def test_no_bars(cfg, devfn):
    for off in (0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30):
        cfg.write(devfn, off, 4, 0xFFFFFFFF)
        assert cfg.read(devfn, off, 4) == 0, hex(off)
        cfg.write(devfn, off, 4, 0)


def test_absent_functions_read_all_ones(cfg, hv):
    assert cfg.read(0x1F << 3, 0, 4) == 0xFFFFFFFF
    assert cfg.read(0x1E << 3 | 5, 0, 2) == 0xFFFF


def test_cf8_disabled_or_other_bus(hv):
    hv.outl(0xCF8, 0x00000000)  # enable bit clear
    assert hv.inl(0xCFC) == 0xFFFFFFFF
    hv.outl(0xCF8, 0x80010000)  # bus 1
    assert hv.inl(0xCFC) == 0xFFFFFFFF
    hv.outl(0xCFC, 0x12345678)  # dropped
    assert hv.pci_cfg_read(0, 0, 4) == 0x12378086


def test_cf8_sub_dword_accesses_like_qemu(hv):
    hv.outl(0xCF8, 0x80000860)
    assert hv.inl(0xCF8) == 0x80000860
    assert hv.inb(0xCF8) == 0x60
    assert hv.inw(0xCF8) == 0x0860
    assert hv.inw(0xCFA) == 0x0860  # the register cut to size, whatever the offset
    assert hv.inb(0xCFB) == 0x60
    assert hv.inb(0xCF9) == 0x00  # ... except the byte at 0xCF9: the reset control register
    hv.outb(0xCF8, 0x12)
    hv.outw(0xCF8, 0x1234)
    hv.outw(0xCFA, 0x1234)
    hv.outb(0xCFB, 0x00)
    assert hv.inl(0xCF8) == 0x80000860  # byte and word writes are dropped
    hv.outb(0xCF9, 0x02)  # reset control: hard-reset select, no reset
    assert hv.inb(0xCF9) == 0x02
    assert hv.inl(0xCF8) == 0x80000860
    assert hv.state.shutdowns == []
    hv.outb(0xCF9, 0x00)
    assert hv.inb(0xCF9) == 0x00


def test_cfc_byte_and_word_lanes(hv):
    hv.outl(0xCF8, 0x80000000)
    assert hv.inb(0xCFC) == 0x86 and hv.inb(0xCFD) == 0x80
    assert hv.inb(0xCFE) == 0x37 and hv.inb(0xCFF) == 0x12
    assert hv.inw(0xCFE) == 0x1237
    assert hv.inw(0xCFD) == 0x3780  # misaligned: split into bytes
    hv.outl(0xCF8, 0x80000808)
    assert hv.inl(0xCFC) == 0x06010000


@pytest.mark.parametrize("value, route", [(0x0B, 11), (0x8B, 0), (0x2A, 0x0A), (0x05, 5), (0x80, 0),
                                          (0x0F, 15), (0x00, 0)])
def test_pirq_write_sends_link_route(cfg, hv, value, route):
    for link in range(4):
        n = len(hv.state.dmops)
        cfg.write(8, 0x60 + link, 1, value)
        new = [r for r in hv.state.dmops[n:] if r.op == DmOp.SET_PCI_LINK_ROUTE]
        assert [(r.fields, r.rc) for r in new] == [((link, route), 0)]
        assert hv.state.link_route[link] == route
        assert cfg.read(8, 0x60 + link, 1) == value
    cfg.write(8, 0x60, 4, 0x80808080)
    assert hv.state.link_route == {0: 0, 1: 0, 2: 0, 3: 0}


def test_pirq_dword_write_routes_all_four_links(hv):
    n = len(hv.state.dmops)
    hv.pci_cfg_write(8, 0x60, 4, 0x0B0A0905)
    routes = [r.fields for r in hv.state.dmops[n:] if r.op == DmOp.SET_PCI_LINK_ROUTE]
    assert routes == [(0, 5), (1, 9), (2, 10), (3, 11)]
    hv.pci_cfg_write(8, 0x60, 4, 0x80808080)


def test_elcr_masks(hv):
    hv.outb(0x4D0, 0xFF)
    hv.outb(0x4D1, 0xFF)
    assert hv.inb(0x4D0) == 0xF8  # IRQ 0, 1, 2 are edge-only
    assert hv.inb(0x4D1) == 0xDE  # IRQ 8 and 13 too
    assert hv.inw(0x4D0) == 0xDEF8
    hv.outw(0x4D0, 0x0000)
    assert hv.inw(0x4D0) == 0
    hv.outw(0x4D0, 0xFFFF)
    assert hv.inw(0x4D0) == 0xDEF8
    hv.outw(0x4D0, 0)


def test_i440fx_pam_and_smram_writable(hv):
    assert hv.pci_cfg_read(0, 0x72, 1) == 0x02  # SMRAM C_BASE_SEG
    hv.pci_cfg_write(0, 0x59, 1, 0x30)
    assert hv.pci_cfg_read(0, 0x59, 1) == 0x30
    hv.pci_cfg_write(0, 0x59, 1, 0x00)


def test_command_register_mask_on_chipset(hv):
    hv.pci_cfg_write(0, 4, 2, 0xFFFF)
    assert hv.pci_cfg_read(0, 4, 2) == 0x0507
    hv.pci_cfg_write(0, 4, 2, 0)


# ---- resets: a fresh daemon and a raw peer that sees message order ---------------------------

@pytest.fixture
def peer():
    proc = DaemonProcess.start(["--domid", "2"])
    p = RawPeer.connect(proc.socket_path)
    p.hello()
    yield p
    p.close()
    assert proc.wait_exit() == 0


_tags = itertools.count(100)


def _shutdown_before_resp(msgs, tag):
    kinds = []
    for m in msgs:
        if m.type == MsgType.DMOP:
            d = codec.decode_dmop(m.payload)
            kinds.append(("dmop", d.op, d.fields))
        else:
            kinds.append(("msg", m.type, m.tag))
    assert kinds[-1] == ("msg", MsgType.IORESP, tag)
    return kinds


def test_cf9_reset_sends_remote_shutdown_before_ioresp(peer):
    # route a link first so we can watch the reset re-announce the defaults
    t = next(_tags)
    peer.send(codec.frame(MsgType.IOREQ, Ioreq(addr=(8 << 32) | 0x60, data=0x0B, size=1,
                                               type=2).pack(), tag=t))
    peer.reply_to(t)
    assert peer.state.link_route[0] == 11
    t = next(_tags)
    kinds = _shutdown_before_resp(peer.io(t, 0, 0xCF9, 1, read=False, data=0x06), t)
    assert ("dmop", DmOp.REMOTE_SHUTDOWN, (1,)) in kinds
    assert kinds.index(("dmop", DmOp.REMOTE_SHUTDOWN, (1,))) == len(kinds) - 2
    assert ("dmop", DmOp.SET_PCI_LINK_ROUTE, (0, 0)) in kinds  # PIIX3 reset re-announced
    assert peer.state.shutdowns == [1]
    assert peer.state.link_route[0] == 0
    # after the reset: RCR back to 0, the machine still answers
    t = next(_tags)
    resp = peer.io(t, 0, 0xCF9, 1, read=True)[-1]
    assert Ioreq.unpack(resp.payload).data == 0


def test_cf9_needs_bit2(peer):
    for v in (0x02, 0x01, 0x08):
        t = next(_tags)
        msgs = peer.io(t, 0, 0xCF9, 1, read=False, data=v)
        assert all(m.type != MsgType.DMOP for m in msgs)
    t = next(_tags)
    _shutdown_before_resp(peer.io(t, 0, 0xCF9, 1, read=False, data=0x04), t)
    assert peer.state.shutdowns == [1]


def test_port92_fast_reset_and_a20(peer):
    t = next(_tags)
    msgs = peer.io(t, 0, 0x92, 1, read=False, data=0x02)  # A20 on, no reset
    assert [m.type for m in msgs] == [MsgType.IORESP]
    t = next(_tags)
    assert Ioreq.unpack(peer.io(t, 0, 0x92, 1, read=True)[-1].payload).data == 0x02
    t = next(_tags)
    kinds = _shutdown_before_resp(peer.io(t, 0, 0x92, 1, read=False, data=0x03), t)
    assert kinds[-2] == ("dmop", DmOp.REMOTE_SHUTDOWN, (1,))
    t = next(_tags)
    # the reset cleared the fast-reset bit; A20 survives (QEMU port92_reset)
    assert Ioreq.unpack(peer.io(t, 0, 0x92, 1, read=True)[-1].payload).data == 0x02
    t = next(_tags)
    msgs = peer.io(t, 0, 0x92, 1, read=False, data=0x02)  # no rising edge on bit 0
    assert [m.type for m in msgs] == [MsgType.IORESP]
    assert peer.state.shutdowns == [1]
