"""The 82540EM register table (design rule 3): every register Linux's e1000, Windows' driver
and iPXE touch, as `Reg` rows for the register-file engine.

Offsets, widths and reset values follow the 8254x SDM chapter 13 and QEMU's mac_reg_init;
writable masks follow QEMU's set_Nbit/set_dlen helpers (descriptor ring lengths are multiples
of 128 bytes, heads and tails 16 bits, delay timers 16 bits). Side effects are handlers the
device passes in by name; everything else is plain storage.
"""

from __future__ import annotations

from collections.abc import Callable

from devmodel.core.regs import Reg

from . import e1000_defs as d

CTRL_RESET = d.CTRL_SWDPIN2 | d.CTRL_SWDPIN0 | d.CTRL_SPD_1000 | d.CTRL_SLU | d.CTRL_FD
STATUS_RESET = (0x80000000 | d.STATUS_GIO_MASTER_ENABLE | d.STATUS_ASDV_1000 | d.STATUS_MTXCKOK
                | d.STATUS_SPEED_1000 | d.STATUS_FD | d.STATUS_LU)
MANC_RESET = (d.MANC_EN_MNG2HOST | d.MANC_RCV_TCO_EN | d.MANC_ARP_EN | d.MANC_0298_EN
              | d.MANC_RMCP_EN)

# name, offset, reset, writable mask (None: all bits)
PLAIN: tuple[tuple[str, int, int, int | None], ...] = (
    ("CTRL_EXT", d.CTRL_EXT, 0, None),
    ("FCAL", d.FCAL, 0, None),
    ("FCAH", d.FCAH, 0, 0xFFFF),
    ("FCT", d.FCT, 0, 0xFFFF),
    ("VET", d.VET, 0x8100, 0xFFFF),
    ("FCTTV", d.FCTTV, 0, 0xFFFF),
    ("TXCW", d.TXCW, 0, None),
    ("RXCW", d.RXCW, 0, 0),
    ("TIPG", d.TIPG, 0, 0x3FFFFFFF),
    ("AIT", d.AIT, 0, 0xFFFF),
    ("LEDCTL", d.LEDCTL, 0x602, None),
    ("PBA", d.PBA, 0x00100030, 0xFFFF),
    ("FCRTL", d.FCRTL, 0, 0x8000FFF8),
    ("FCRTH", d.FCRTH, 0, 0xFFF8),
    ("RDFH", d.RDFH, 0, 0x1FFF),
    ("RDFT", d.RDFT, 0, 0x1FFF),
    ("RDFHS", d.RDFHS, 0, 0x1FFF),
    ("RDFTS", d.RDFTS, 0, 0x1FFF),
    ("RDFPC", d.RDFPC, 0, 0x1FFF),
    ("RDBAL", d.RDBAL, 0, 0xFFFFFFF0),
    ("RDBAH", d.RDBAH, 0, None),
    ("RDLEN", d.RDLEN, 0, 0xFFF80),
    ("RDH", d.RDH, 0, 0xFFFF),
    ("RXDCTL", d.RXDCTL, 0x00010000, 0x013F3F3F),
    ("RADV", d.RADV, 0, 0xFFFF),
    ("RSRPD", d.RSRPD, 0, 0xFFF),
    ("TXDMAC", d.TXDMAC, 0, 0x1),
    ("TDFH", d.TDFH, 0, 0x7FF),
    ("TDFT", d.TDFT, 0, 0x7FF),
    ("TDFHS", d.TDFHS, 0, 0x1FFF),
    ("TDFTS", d.TDFTS, 0, 0x1FFF),
    ("TDFPC", d.TDFPC, 0, 0x1FFF),
    ("TDBAL", d.TDBAL, 0, 0xFFFFFFF0),
    ("TDBAH", d.TDBAH, 0, None),
    ("TDLEN", d.TDLEN, 0, 0xFFF80),
    ("TDH", d.TDH, 0, 0xFFFF),
    ("TIDV", d.TIDV, 0, 0xFFFF),
    ("TXDCTL", d.TXDCTL, 0x00010000, 0x013F3F3F),
    ("TADV", d.TADV, 0, 0xFFFF),
    ("TSPMT", d.TSPMT, 0x01000400, None),
    ("RXCSUM", d.RXCSUM, 0x300, 0x3FF),
    ("WUC", d.WUC, 0, 0xF),
    ("WUFC", d.WUFC, 0, 0x000F00FF),
    ("MANC", d.MANC, MANC_RESET, None),
    ("IPAV", d.IPAV, 0, 0x1000F),
    ("WUPL", d.WUPL, 0, 0),
)


def build_table(h: dict[str, Callable]) -> list[Reg]:
    """The register rows; `h` holds the device's handlers (see E1000._handlers)."""
    regs = [
        Reg("CTRL", d.CTRL, reset=CTRL_RESET, on_write=h["ctrl"]),
        Reg("STATUS", d.STATUS, reset=STATUS_RESET, wmask=0),
        Reg("EECD", d.EECD, on_read=h["eecd_read"], on_write=h["eecd_write"]),
        Reg("EERD", d.EERD, wmask=0xFFFF, on_read=h["eerd_read"]),
        Reg("MDIC", d.MDIC, on_write=h["mdic"]),
        # write 1 to clear (SDM 13.4.17); reading clears everything (handler)
        Reg("ICR", d.ICR, wmask=0, w1c=0xFFFFFFFF, on_read=h["icr_read"], on_write=h["icr_write"]),
        Reg("ITR", d.ITR, wmask=0xFFFF, on_write=h["itr"]),
        Reg("ICS", d.ICS, on_read=h["ics_read"], on_write=h["ics"]),
        Reg("IMS", d.IMS, wmask=d.ICR_VALID, on_write=h["ims"]),
        Reg("IMC", d.IMC, wmask=d.ICR_VALID, on_read=h["write_only"], on_write=h["imc"]),
        Reg("RCTL", d.RCTL, wmask=0x07FFFFFE, on_write=h["rctl"]),
        Reg("TCTL", d.TCTL, wmask=0x03FFFFFE, on_write=h["tctl"]),
        Reg("RDT", d.RDT, wmask=0xFFFF, on_write=h["rdt"]),
        Reg("RDTR", d.RDTR, wmask=0xFFFF | d.RDTR_FPD, on_write=h["rdtr"]),
        Reg("TDT", d.TDT, wmask=0xFFFF, on_write=h["tdt"]),
        Reg("WUS", d.WUS, wmask=0, w1c=0x000F00FF),
    ]
    regs += [Reg(n, off, reset=rst, wmask=wm) for n, off, rst, wm in PLAIN]
    for i in range(d.NUM_RA):
        regs.append(Reg(f"RAL{i}", d.RA + 8 * i))
        # address bits 47:32, address select 17:16, address valid 31
        regs.append(Reg(f"RAH{i}", d.RA + 8 * i + 4, wmask=0x8003FFFF))
    regs += [Reg(f"MTA{i}", d.MTA + 4 * i) for i in range(d.NUM_MTA)]
    regs += [Reg(f"VFTA{i}", d.VFTA + 4 * i) for i in range(d.NUM_VFTA)]
    regs += [Reg(f"IP4AT{i}", d.IP4AT + 8 * i) for i in range(4)]
    regs += [Reg(f"IP6AT{i}", d.IP6AT + 4 * i) for i in range(4)]
    regs += [Reg(f"WUPM{i}", d.WUPM + 4 * i, wmask=0) for i in range(32)]
    regs += [Reg(f"FFLT{i}", d.FFLT + 8 * i, wmask=0x7FF) for i in range(4)]
    regs += [Reg(f"FFMT{i}", d.FFMT + 8 * i, wmask=0xF) for i in range(128)]
    regs += [Reg(f"FFVT{i}", d.FFVT + 8 * i, wmask=0xFF) for i in range(128)]
    for name, off in d.STATS.items():
        # statistics are read-only and clear on read (SDM 13.7)
        regs.append(Reg(name, off, wmask=0, on_read=h["stat_read"](name)))
    return regs
