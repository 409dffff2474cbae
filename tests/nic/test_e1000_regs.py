"""82540EM registers through the bus: PCI identity, EEPROM (EERD and Microwire), PHY via
MDIC, ICR/ICS/IMS/IMC, statistics, IOADDR/IODATA, reset, link."""

from __future__ import annotations

import os

import pytest
from e1000_rig import DEVFN, IO_BASE, MAC, MMIO_BASE, Rig, d

from devmodel.nic import E1000_ROMS
from devmodel.nic.eeprom import build_eeprom

ROM = next((p for p in E1000_ROMS if os.path.exists(p)), None)


def test_pci_identity_and_bars():
    r = Rig(enable=False)
    assert r.cfg_read(0x00, 4) == 0x100E8086
    assert r.cfg_read(0x08, 4) == 0x02000003  # class 02:00:00, revision 3
    assert r.cfg_read(0x2C, 4) == 0x11001AF4  # QEMU's default subsystem, as its e1000 shows
    assert r.cfg_read(0x3D, 1) == 1  # INTA
    r.cfg_write(0x10, 4, 0xFFFFFFFF)
    assert r.cfg_read(0x10, 4) == 0xFFFE0000  # 128 KiB, 32-bit, non-prefetchable memory
    r.cfg_write(0x14, 4, 0xFFFFFFFF)
    assert r.cfg_read(0x14, 4) == 0xFFFFFFC1  # 64 bytes of I/O
    r.cfg_write(0x10, 4, MMIO_BASE)
    r.cfg_write(0x14, 4, IO_BASE | 1)
    assert r.rd(d.STATUS) == 0xFFFFFFFF  # decode off
    r.cfg_write(0x04, 2, 3)
    assert r.rd(d.STATUS) & d.STATUS_LU
    assert r.io_rd(0) == 0


@pytest.mark.skipif(ROM is None, reason="ipxe-qemu is not installed (scripts/setup.sh)")
def test_rom_bar_serves_ipxe():
    r = Rig(rom=ROM)
    r.cfg_write(0x30, 4, 0xFFFFFFFF)
    size = (~r.cfg_read(0x30, 4) & 0xFFFFFFFF) + 1
    assert size >= os.path.getsize(ROM)
    r.cfg_write(0x30, 4, 0xFE000000 | 1)
    # The ROM BAR is memory the hypervisor maps (PciDevice.share_rom, as QEMU's ROM block on
    # Xen), not a trapped range: what it maps there holds the image.
    assert r.m.mmio.find(0xFE000000) is None
    (region,) = r.nic.shared_regions()
    assert region.gpa == 0xFE000000 and region.size == r.nic.rom_size >= os.path.getsize(ROM)
    with open(ROM, "rb") as f:
        assert os.pread(region.fd, 0x40, 0) == f.read(0x40)


def test_eeprom_via_eerd_and_bitbang_agree():
    r = Rig()
    words_eerd = [r.eerd(i) for i in range(64)]
    words_bb = [r.eeprom_bitbang(i) for i in range(64)]
    assert words_eerd == words_bb
    assert sum(words_eerd) & 0xFFFF == 0xBABA
    assert words_eerd[:3] == [0x5452, 0x1200, 0x5634]  # 52:54:00:12:34:56, little-endian words
    assert words_eerd[0x0B:0x0F] == [0x100E, 0x8086, 0x100E, 0x8086]  # as QEMU's EEPROM
    assert r.eerd(64) == 0  # beyond the part: DONE, no data
    assert r.rd(d.EECD) & d.EECD_PRES


def test_eeprom_checksum_for_any_mac():
    for mac in (bytes(6)[:5] + b"\x01", bytes.fromhex("00163e7fffff"), bytes.fromhex("fe" * 6)):
        assert sum(build_eeprom(mac)) & 0xFFFF == 0xBABA


def test_phy_ids_and_status_via_mdic():
    r = Rig()
    assert r.mdic_read(d.MII_PHYID1) == (0x0141, False)
    assert r.mdic_read(d.MII_PHYID2) == (0x0C20, False)
    bmsr, err = r.mdic_read(d.MII_BMSR)
    assert not err and bmsr & d.BMSR_LSTATUS and bmsr & d.BMSR_ANEGCOMPLETE
    assert r.mdic_read(d.MII_ANLPAR)[0] & d.ANLPAR_ACK
    assert r.mdic_read(d.MII_BMCR)[0] & d.BMCR_ANENABLE
    assert r.mdic_read(d.M88_PHY_SPEC_STATUS)[0] & d.M88_PSSR_LINK
    assert r.mdic_read(d.MII_BMSR, phy=2)[1]  # no PHY at address 2: MDIC.E
    assert r.mdic_read(25)[1]  # unimplemented register
    assert not r.mdic_write(d.MII_BMSR, 0)  # read-only
    assert r.mdic_write(d.MII_ANAR, 0x01E1)
    assert r.mdic_read(d.MII_ANAR)[0] == 0x01E1


def test_mdic_interrupt_on_completion():
    r = Rig()
    r.wr(d.IMS, d.ICR_MDAC)
    r.wr(d.MDIC, d.MDIC_OP_READ | 1 << 21 | d.MDIC_INT_EN)
    assert r.irq == 1
    assert r.rd(d.ICR) & d.ICR_MDAC
    assert r.irq == 0


def test_autoneg_restart_drops_link_then_lsc():
    r = Rig()
    r.wr(d.IMS, d.ICR_LSC)
    assert r.mdic_write(d.MII_BMCR, d.BMCR_ANENABLE | d.BMCR_ANRESTART)
    assert not r.rd(d.STATUS) & d.STATUS_LU
    assert not r.mdic_read(d.MII_BMSR)[0] & d.BMSR_ANEGCOMPLETE
    assert r.mdic_read(d.MII_BMCR)[0] & d.BMCR_ANRESTART == 0  # self-clearing
    r.rd(d.ICR)
    r.advance(499_000_000)
    assert not r.rd(d.STATUS) & d.STATUS_LU
    r.advance(2_000_000)
    assert r.rd(d.STATUS) & d.STATUS_LU
    assert r.irq == 1
    assert r.rd(d.ICR) & d.ICR_LSC
    assert r.mdic_read(d.MII_BMSR)[0] & (d.BMSR_ANEGCOMPLETE | d.BMSR_LSTATUS) == 0x24


def test_set_link_down_and_up():
    r = Rig()
    r.wr(d.IMS, d.ICR_LSC)
    r.nic.set_link(False)
    assert r.irq == 1
    assert r.rd(d.ICR) == d.ICR_LSC | d.ICR_INT_ASSERTED
    assert not r.rd(d.STATUS) & d.STATUS_LU
    assert not r.mdic_read(d.MII_BMSR)[0] & d.BMSR_LSTATUS
    r.nic.set_link(True)
    assert not r.rd(d.STATUS) & d.STATUS_LU  # negotiating
    r.advance(500_000_000)
    assert r.rd(d.STATUS) & d.STATUS_LU
    assert r.rd(d.ICR) & d.ICR_LSC


def test_slu_gates_link_up():
    r = Rig()
    r.wr(d.IMS, d.ICR_LSC)
    r.wr(d.CTRL, r.rd(d.CTRL) & ~d.CTRL_SLU)
    assert not r.rd(d.STATUS) & d.STATUS_LU
    assert r.rd(d.ICR) & d.ICR_LSC
    r.wr(d.CTRL, r.rd(d.CTRL) | d.CTRL_SLU)
    assert r.rd(d.STATUS) & d.STATUS_LU


def test_icr_ims_imc_semantics():
    r = Rig()
    r.irq_events()
    r.wr(d.ICS, d.ICR_RXT0 | d.ICR_TXDW)
    assert r.irq == 0  # masked
    assert r.rd(d.ICS) == d.ICR_RXT0 | d.ICR_TXDW  # ICS reads as ICR, without clearing
    r.wr(d.IMS, d.ICR_RXT0)
    assert r.rd(d.IMS) == d.ICR_RXT0
    assert r.irq == 1
    assert r.irq_events() == [1]
    r.wr(d.IMS, d.ICR_LSC)
    assert r.rd(d.IMS) == d.ICR_RXT0 | d.ICR_LSC  # IMS accumulates
    r.wr(d.IMC, d.ICR_RXT0)
    assert r.rd(d.IMS) == d.ICR_LSC
    assert r.irq == 0
    r.wr(d.IMS, d.ICR_RXT0)
    r.wr(d.ICR, d.ICR_RXT0)  # write 1 to clear
    assert r.irq == 0
    assert r.rd(d.ICS) == d.ICR_TXDW
    r.wr(d.IMS, d.ICR_TXDW)
    assert r.rd(d.ICR) == d.ICR_TXDW | d.ICR_INT_ASSERTED
    assert r.rd(d.ICR) == 0  # read clears
    assert r.irq == 0
    assert r.rd(d.IMC) == 0  # write-only


def test_intx_disable_masks_the_line():
    r = Rig()
    r.wr(d.IMS, d.ICR_TXDW)
    r.wr(d.ICS, d.ICR_TXDW)
    assert r.irq == 1
    r.cfg_write(0x04, 2, 0x0407)
    assert r.irq == 0
    assert r.cfg_read(0x06, 2) & 0x08  # interrupt status still reported


def test_statistics_clear_on_read_and_64bit_pairs():
    from e1000_rig import BCAST, eth

    r = Rig()
    r.setup_tx()
    for _ in range(3):
        r.legacy(eth(BCAST, MAC, 0x0806, bytes(100)))
    r.kick()
    assert r.rd(d.STATS["GPTC"]) == 3
    assert r.rd(d.STATS["GPTC"]) == 0
    assert r.rd(d.STATS["BPTC"]) == 3
    assert r.rd(d.STATS["PTC127"]) == 3  # 114 + FCS = 118 bytes
    assert r.rd(d.STATS["GOTCL"]) == 3 * 118
    assert r.rd(d.STATS["GOTCH"]) == 0
    assert r.rd(d.STATS["GOTCL"]) == 0  # cleared with the high half
    r.wr(d.STATS["TPT"], 55)  # read-only
    assert r.rd(d.STATS["TPT"]) == 3


def test_io_window_reads_and_writes_registers():
    r = Rig()
    r.io_wr(0, d.STATUS)
    assert r.io_rd(0) == d.STATUS
    assert r.io_rd(4) == r.rd(d.STATUS)
    r.io_wr(0, d.IMS)
    r.io_wr(4, d.ICR_LSC)
    assert r.rd(d.IMS) == d.ICR_LSC
    r.io_wr(0, d.RAL0 if hasattr(d, "RAL0") else d.RA)
    assert r.io_rd(4) == int.from_bytes(MAC[:4], "little")
    r.wr(d.ICS, d.ICR_LSC)
    r.io_wr(0, d.ICR)
    assert r.io_rd(4) & d.ICR_LSC  # side effects as through BAR0
    assert r.rd(d.ICR) == 0
    assert r.io_rd(0x10) == 0  # reserved
    assert r.nic.counters


def test_ctrl_rst_through_io_resets_mac_not_pci():
    r = Rig()
    r.wr(d.RCTL, d.RCTL_EN | d.RCTL_UPE)
    r.wr(d.RA, 0)
    r.wr(d.IMS, 0xFF)
    r.wr(d.TDLEN, 0x1000)
    r.io_wr(0, d.CTRL)
    r.io_wr(4, r.rd(d.CTRL) | d.CTRL_RST)
    assert not r.rd(d.CTRL) & d.CTRL_RST  # self-clearing
    assert r.rd(d.RCTL) == 0 and r.rd(d.IMS) == 0 and r.rd(d.TDLEN) == 0
    assert r.rd(d.RA) == int.from_bytes(MAC[:4], "little")  # reloaded from the EEPROM
    assert r.rd(d.RA + 4) == int.from_bytes(MAC[4:], "little") | d.RAH_AV
    assert r.cfg_read(0x10, 4) == MMIO_BASE  # PCI config untouched
    assert r.rd(d.STATUS) & d.STATUS_LU


def test_masks_and_unimplemented_offsets():
    r = Rig()
    r.wr(d.TDLEN, 0xFFFFFFFF)
    assert r.rd(d.TDLEN) == 0xFFF80  # multiple of 128 bytes
    r.wr(d.TDH, 0xFFFFFFFF)
    assert r.rd(d.TDH) == 0xFFFF
    r.wr(d.ITR, 0x12345678)
    assert r.rd(d.ITR) == 0x5678
    r.wr(d.STATUS, 0)
    assert r.rd(d.STATUS) & d.STATUS_LU  # read-only
    before = sum(r.nic.counters.values())
    assert r.rd(0x1FFFC) == 0
    r.wr(0x0FF0, 1)
    assert sum(r.nic.counters.values()) > before
    r.wr(d.MTA + 5 * 4 + 2, 0xBEEF, size=2)  # byte lanes
    assert r.rd(d.MTA + 20) == 0xBEEF0000
    assert r.rd(d.MTA + 22, size=2) == 0xBEEF


def test_linux_style_bring_up():
    r = Rig()
    r.linux_init()
    assert r.rd(d.STATUS) & (d.STATUS_LU | d.STATUS_FD) == 3
    assert r.nic.failed is False
    assert r.cfg_read(0x06, 2) & 0x2000 == 0  # no master abort


def test_devfn():
    assert DEVFN == 4 << 3
