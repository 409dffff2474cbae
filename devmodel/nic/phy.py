"""The 82540EM's internal PHY (Marvell 88E1011-compatible), reached through MDIC.

Register set, reset values and which registers read/write follow QEMU's e1000 phy_reg_init /
phy_regcap (so what Linux, Windows and iPXE were tested against reads the same), with the PHY
IDs 0x0141/0x0C20 (M88E1011_I_PHY_ID). An access to another PHY address or to a register the
PHY does not implement sets MDIC.E, as the 8254x SDM (13.4.6) describes.
"""

from __future__ import annotations

from . import e1000_defs as d

NUM_PHY_REGS = 32

PHY_RESET = {
    d.MII_BMCR: d.BMCR_SPEED1000 | d.BMCR_FD | d.BMCR_ANENABLE,
    d.MII_BMSR: (d.BMSR_EXTCAP | d.BMSR_LSTATUS | d.BMSR_ANEGCAPABLE | d.BMSR_ANEGCOMPLETE
                 | d.BMSR_MFPS | d.BMSR_ESTATEN | d.BMSR_10HALF | d.BMSR_10FULL
                 | d.BMSR_100HALF | d.BMSR_100FULL),
    d.MII_PHYID1: d.PHY_ID1,
    d.MII_PHYID2: d.PHY_ID2,
    # CSMA | 10 | 10FD | 100 | 100FD | PAUSE | ASYM_PAUSE
    d.MII_ANAR: 0x0DE1,
    # partner: 10/100 half/full; ACK once negotiation completed
    d.MII_ANLPAR: 0x01E0 | d.ANLPAR_ACK,
    d.MII_ANER: 0x0001,  # link partner autonegotiation able
    d.MII_CTRL1000: 0x0E00,  # 1000 full | port type | master
    d.MII_STAT1000: 0x3C00,  # partner 1000 half/full, local and remote receiver OK
    d.MII_EXTSTAT: 0x3000,  # 1000BASE-T full/half capable
    d.M88_PHY_SPEC_CTRL: 0x0360,
    # 1000 Mb/s, full duplex, resolved, link up (88E1011 datasheet register 17)
    d.M88_PHY_SPEC_STATUS: 0xAC00,
    d.M88_EXT_PHY_SPEC_CTRL: 0x0D60,
}

READABLE = frozenset({
    d.MII_BMCR, d.MII_BMSR, d.MII_PHYID1, d.MII_PHYID2, d.MII_ANAR, d.MII_ANLPAR, d.MII_ANER,
    d.MII_ANNP, d.MII_ANLPRNP, d.MII_CTRL1000, d.MII_STAT1000, d.MII_EXTSTAT,
    d.M88_PHY_SPEC_CTRL, d.M88_PHY_SPEC_STATUS, d.M88_INT_ENABLE, d.M88_INT_STATUS,
    d.M88_EXT_PHY_SPEC_CTRL, d.M88_RX_ERR_CNTR, d.M88_LED_CTRL, d.M88_EXT_PHY_SPEC_STATUS,
})
WRITABLE = frozenset({
    d.MII_BMCR, d.MII_ANAR, d.MII_ANNP, d.MII_CTRL1000, d.M88_PHY_SPEC_CTRL,
    d.M88_INT_ENABLE, d.M88_EXT_PHY_SPEC_CTRL, d.M88_LED_CTRL,
})


def phy_reset_values() -> list[int]:
    regs = [0] * NUM_PHY_REGS
    for k, v in PHY_RESET.items():
        regs[k] = v
    return regs


def set_link_bits(regs: list[int], up: bool) -> None:
    """Link and completed autonegotiation as the PHY status registers report them (the link
    is up only once autonegotiation has completed)."""
    for reg, bit in ((d.MII_BMSR, d.BMSR_LSTATUS | d.BMSR_ANEGCOMPLETE),
                     (d.M88_PHY_SPEC_STATUS, d.M88_PSSR_LINK), (d.MII_ANLPAR, d.ANLPAR_ACK)):
        regs[reg] = regs[reg] | bit if up else regs[reg] & ~bit
