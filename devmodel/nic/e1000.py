"""The Intel 82540EM gigabit NIC (QEMU's `e1000`, xl's `model=e1000`) as a pure state machine.

PCI 8086:100E rev 3, class 02:00:00, subsystem 1af4:1100 (as QEMU's), INTA. BAR0: 128 KiB of registers
(the table in e1000_regs.py). BAR1: 64 bytes of I/O with the IOADDR/IODATA window of SDM
13.2.1: a working one (QEMU's reads 0 and drops writes, but Linux issues CTRL.RST through it
on this part, e1000_reset_hw). Optional expansion ROM (iPXE's efi-e1000.rom).

Transmit lives in e1000_tx.py, receive in e1000_rx.py; this module holds the registers with
side effects, the interrupt logic with ITR throttling, EEPROM, PHY (MDIC), link and reset.

Ports (no I/O here, design rule 1):
- `transmit(frame)`: set by the builder; called with each frame the guest sends.
- `receive(frame) -> bool`: the backend pump offers a frame; False means "no room now": keep
  it and offer it again after `on_rx_space()` is called.
- `set_link(up)`: the cable (QMP set_link).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from devmodel.core.pci import STATUS, STATUS_REC_MASTER_ABORT, Bar, PciDevice
from devmodel.core.regs import RegisterFile

from . import e1000_defs as d
from . import phy as phymod
from .e1000_regs import build_table
from .e1000_rx import E1000Rx
from .e1000_stats import FrameTally
from .e1000_tx import E1000Tx
from .eeprom import MicrowireEeprom, build_eeprom, eerd_read

# QEMU's e1000 completes autonegotiation 500 ms (virtual) after a restart.
AUTONEG_NS = 500_000_000
ITR_UNIT_NS = 256  # ITR interval granularity (SDM 13.4.18)
DELAY_UNIT_NS = 1024  # RDTR/RADV/TIDV/TADV granularity
log = logging.getLogger("devmodel.e1000")
TIMERS = ("autoneg", "itr", "rdtr", "radv", "tidv", "tadv", "tx_resume", "loopback")


class E1000(E1000Tx, E1000Rx, PciDevice):
    SNAPSHOT_FIELDS = ("config", "irq_level", "macregs", "phy", "eeprom_words", "ee_state",
                       "link_up", "autoneg_running", "ioaddr", "timer_state",
                       *E1000Tx.TX_FIELDS, *E1000Rx.RX_FIELDS)

    def __init__(self, mac: bytes, rom: bytes | None = None, name: str = "e1000") -> None:
        super().__init__(name, vendor_id=d.VENDOR_INTEL, device_id=d.DEVICE_82540EM,
                         class_code=d.CLASS_ETHERNET, revision=d.REVISION,
                         subsystem_vendor_id=d.SUBSYS_VENDOR, subsystem_id=d.SUBSYS_ID, irq_pin=1)
        self.mac = bytes(mac)
        self.eeprom_words = build_eeprom(self.mac)
        self.eeprom = MicrowireEeprom(self.eeprom_words)
        self.regs = RegisterFile(build_table(self._handlers()),
                                 on_hole=lambda what: self.guest_error(f"mmio hole: {what}"))
        # BAR0 is the register file itself: the engine does every access (design rule 3)
        self.add_bar(Bar(0, d.MMIO_SIZE, False, self.regs.read, self.regs.write, "mmio"))
        self.add_bar(Bar(1, d.IO_SIZE, True, self._io_read, self._io_write, "io"))
        if rom:
            self.set_rom(rom)
        self.phy = phymod.phy_reset_values()
        self.link_up = True  # the cable: set_link()
        self.autoneg_running = False
        self.ioaddr = 0
        self.transmit: Callable[[bytes], Any] | None = None
        # optional: the same port taking a list of frames in one call (the backend's
        # send_many); whoever sets `transmit` to something else sets this to None
        self.transmit_batch: Callable[[list[bytes]], Any] | None = None
        self.on_rx_space: Callable[[], None] | None = None
        self._timers: dict[str, Any] = {}
        self.tx_init()
        self.rx_init()

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx) -> None:
        super().attach(ctx)
        callbacks = {
            "autoneg": self._autoneg_done, "itr": self._itr_expired,
            "rdtr": self._rx_delay_expired, "radv": self._rx_delay_expired,
            "tidv": self._tx_delay_expired, "tadv": self._tx_delay_expired,
            "tx_resume": self._tx_resume, "loopback": self._loopback_deliver,
        }
        for name in TIMERS:
            self._timers[name] = ctx.clock.timer(callbacks[name], f"{self.name}.{name}")

    def _handlers(self) -> dict[str, Callable]:
        return {
            "ctrl": self._w_ctrl, "eecd_read": lambda v: self.eeprom.read_eecd(),
            "eecd_write": lambda old, new: self.eeprom.write_eecd(new),
            "eerd_read": lambda v: eerd_read(self.eeprom_words, v),
            "mdic": self._w_mdic, "icr_read": self._r_icr, "icr_write": self._w_icr,
            "itr": lambda old, new: self._update_int(), "ics_read": lambda v: self.regs["ICR"],
            "ics": self._w_ics, "ims": self._w_ims, "imc": self._w_imc,
            "write_only": lambda v: 0, "rctl": self._w_rctl, "tctl": self._w_tctl,
            "rdt": self._w_rdt, "rdtr": self._w_rdtr, "tdt": self._w_tdt,
            "stat_read": self._stat_reader,
        }

    # ---- snapshot glue ------------------------------------------------------------------
    @property
    def macregs(self) -> dict[str, int]:
        return self.regs.snapshot()

    @macregs.setter
    def macregs(self, values: dict[str, int]) -> None:
        self.regs.restore(values)

    @property
    def ee_state(self) -> dict[str, int]:
        return self.eeprom.snapshot()

    @ee_state.setter
    def ee_state(self, state: dict[str, int]) -> None:
        self.eeprom.restore(state)

    @property
    def timer_state(self) -> dict[str, int | None]:
        return {n: t.deadline for n, t in self._timers.items()}

    @timer_state.setter
    def timer_state(self, state: dict[str, int | None]) -> None:
        for n, t in self._timers.items():
            t.cancel()
            if state.get(n) is not None:
                t.arm(int(state[n]))

    def post_restore(self) -> None:
        self.eeprom.words = self.eeprom_words
        self.rx_post_restore()
        super().post_restore()

    # ---- reset --------------------------------------------------------------------------
    def reset(self) -> None:
        """Power-on / PCI reset: MAC, PHY and EEPROM interface to their initial state."""
        super().reset()
        self.phy = phymod.phy_reset_values()
        self.autoneg_running = False
        self.ioaddr = 0
        if "autoneg" in self._timers:
            self._timers["autoneg"].cancel()
        self._mac_reset()

    def _mac_reset(self) -> None:
        """CTRL.RST (SDM 13.4.1): every MAC register to its reset value, the receive address
        reloaded from the EEPROM; the PHY and PCI configuration are untouched."""
        self.regs.reset()
        self.eeprom.reset()
        for t in self._timers.values():
            if t is not self._timers.get("autoneg"):
                t.cancel()
        mac = self.mac
        self.regs["RAL0"] = int.from_bytes(mac[:4], "little")
        self.regs["RAH0"] = int.from_bytes(mac[4:], "little") | d.RAH_AV
        self.tx_init()
        self.rx_init()
        self._update_link(notify=False)
        self.set_irq(0)

    # ---- interrupts ---------------------------------------------------------------------
    def raise_cause(self, cause: int) -> None:
        regs = self.regs
        regs["ICR"] = regs["ICR"] | cause
        self._update_int()

    def _update_int(self) -> None:
        """INTA follows ICR & IMS; a rising edge waits for the ITR interval since the last
        assertion (SDM 13.4.18: ITR is a minimum inter-interrupt interval)."""
        regs = self.regs
        pending = regs["ICR"] & regs["IMS"]
        if pending:
            if self.irq_level:
                return
            itr_timer = self._timers.get("itr")
            if itr_timer is not None and itr_timer.armed:
                return
            self.set_irq(1)
            itr = regs["ITR"] & 0xFFFF
            if itr and itr_timer is not None:
                itr_timer.arm_in(itr * ITR_UNIT_NS)
        elif self.irq_level:
            self.set_irq(0)

    def _itr_expired(self, now: int) -> None:
        self._update_int()

    def _r_icr(self, value: int) -> int:
        regs = self.regs
        out = value
        if value & regs["IMS"]:
            out |= d.ICR_INT_ASSERTED
        regs["ICR"] = 0
        self._update_int()
        return out

    def _w_icr(self, old: int, new: int) -> None:
        self._update_int()

    def _w_ics(self, old: int, new: int) -> None:
        self.regs["ICS"] = 0
        self.raise_cause(new & d.ICR_VALID)

    def _w_ims(self, old: int, new: int) -> None:
        self.regs["IMS"] = old | new
        self._update_int()

    def _w_imc(self, old: int, new: int) -> None:
        self.regs["IMS"] = self.regs["IMS"] & ~new
        self.regs["IMC"] = 0
        self._update_int()

    # ---- statistics ---------------------------------------------------------------------
    def _stat_reader(self, name: str) -> Callable[[int], int]:
        low = d.STATS_64.get(name)

        def read(value: int) -> int:
            self.regs[name] = 0
            if low is not None:
                self.regs[low] = 0
            return value

        return read

    def stat_add(self, name: str, n: int = 1) -> None:
        """Statistics stick at all-ones (SDM 13.7)."""
        values = self.regs.values  # every statistic is a plain 32-bit register
        values[name] = min(values[name] + n, 0xFFFFFFFF)

    def stat_frame(self, good: str, octets: str, total: str, total_octets: str,
                   sizes: tuple[str, ...], bcast: str, mcast: str, frame: bytes | bytearray) -> None:
        """One good frame's counters (the slow paths; batches use a FrameTally)."""
        tally = FrameTally()
        tally.add(frame)
        self.stat_tally(tally, good, octets, total, total_octets, sizes, bcast, mcast)

    def stat_tally(self, t: FrameTally, good: str, octets: str, total: str, total_octets: str,
                   sizes: tuple[str, ...], bcast: str, mcast: str) -> None:
        """A batch of good frames' counters at once: packets and octets (FCS included), the
        size buckets, broadcast and multicast; each sticks at all-ones (SDM 13.7)."""
        if not t.frames:
            return
        values = self.regs.values
        for name in (total, good):
            values[name] = min(values[name] + t.frames, 0xFFFFFFFF)
        for low in (octets, total_octets):
            high = low[:-1] + "H"
            v = min((values[high] << 32 | values[low]) + t.octets, (1 << 64) - 1)
            values[low] = v & 0xFFFFFFFF
            values[high] = v >> 32
        for name, n in zip(sizes, t.buckets[:6], strict=True):
            if n:
                values[name] = min(values[name] + n, 0xFFFFFFFF)
        for name, n in ((bcast, t.bcast), (mcast, t.mcast)):
            if n:
                values[name] = min(values[name] + n, 0xFFFFFFFF)

    # ---- CTRL, link and PHY -------------------------------------------------------------
    def _w_ctrl(self, old: int, new: int) -> None:
        if new & d.CTRL_RST:
            self._mac_reset()
            return
        if new & d.CTRL_PHY_RST and not old & d.CTRL_PHY_RST:
            self.phy = phymod.phy_reset_values()
            self._restart_autoneg()
        if (old ^ new) & d.CTRL_SLU:
            self._update_link()

    def set_link(self, up: bool) -> None:
        """The cable (QMP set_link): down at once; up after autonegotiation when enabled."""
        up = bool(up)
        if up == self.link_up:
            return
        self.link_up = up
        if up and self.phy[d.MII_BMCR] & d.BMCR_ANENABLE:
            self._restart_autoneg()
        else:
            timer = self._timers.get("autoneg")
            if timer is not None:
                timer.cancel()
            self.autoneg_running = False
            self._update_link()

    def _restart_autoneg(self) -> None:
        timer = self._timers.get("autoneg")
        if timer is None:
            return
        self.autoneg_running = True
        timer.arm_in(AUTONEG_NS)
        self._update_link()

    def _autoneg_done(self, now: int) -> None:
        self.autoneg_running = False
        self._update_link()

    @property
    def phy_link(self) -> bool:
        return self.link_up and not self.autoneg_running

    def _update_link(self, notify: bool = True) -> None:
        """STATUS.LU needs the PHY's link and CTRL.SLU (SDM 13.4.1: in internal PHY mode SLU
        lets the MAC see the PHY's link indication). A change raises LSC."""
        phy_up = self.phy_link
        phymod.set_link_bits(self.phy, phy_up)
        regs = self.regs
        lu = phy_up and bool(regs["CTRL"] & d.CTRL_SLU)
        status = regs["STATUS"]
        new = status | d.STATUS_LU if lu else status & ~d.STATUS_LU
        if new != status:
            regs["STATUS"] = new
            if notify:
                self.raise_cause(d.ICR_LSC)
            if lu:
                self.rx_space_changed()

    def _w_mdic(self, old: int, new: int) -> None:
        reg = (new >> d.MDIC_REG_SHIFT) & 0x1F
        phyaddr = (new >> d.MDIC_PHY_SHIFT) & 0x1F
        op = new & (d.MDIC_OP_READ | d.MDIC_OP_WRITE)
        val = new & ~(d.MDIC_READY | d.MDIC_ERROR)
        if phyaddr != d.PHY_ADDR:
            val |= d.MDIC_ERROR
        elif op == d.MDIC_OP_READ:
            if reg in phymod.READABLE:
                val = (val & ~d.MDIC_DATA_MASK) | self.phy[reg]
            else:
                val |= d.MDIC_ERROR
        elif op == d.MDIC_OP_WRITE:
            if reg in phymod.WRITABLE:
                self._phy_write(reg, new & d.MDIC_DATA_MASK)
            else:
                val |= d.MDIC_ERROR
        else:
            val |= d.MDIC_ERROR
        self.regs["MDIC"] = val | d.MDIC_READY
        if new & d.MDIC_INT_EN:
            self.raise_cause(d.ICR_MDAC)

    def _phy_write(self, reg: int, value: int) -> None:
        if reg == d.MII_BMCR:
            # RESET and ANRESTART self-clear; bits 5:0 are reserved (88E1011 register 0)
            self.phy[reg] = value & ~(d.BMCR_RESET | d.BMCR_ANRESTART | 0x3F)
            restart = value & d.BMCR_ANRESTART or value & d.BMCR_RESET
            if restart and value & d.BMCR_ANENABLE:
                self._restart_autoneg()
            return
        self.phy[reg] = value

    # ---- register access ----------------------------------------------------------------
    def _io_read(self, off: int, size: int) -> int:
        """IOADDR (+0) selects a register offset, IODATA (+4) accesses it (SDM 13.2.1)."""
        if off < 4:
            return (self.ioaddr >> (8 * off)) & ((1 << (8 * size)) - 1)
        if off < 8:
            reg = self.ioaddr & (d.MMIO_SIZE - 1) & ~3
            return self.regs.read(reg + off - 4, min(size, 8 - off))
        self.guest_error(f"io reserved offset: read {off:#x}")
        return 0

    def _io_write(self, off: int, size: int, value: int) -> None:
        if off < 4:
            mask = ((1 << (8 * size)) - 1) << (8 * off)
            self.ioaddr = (self.ioaddr & ~mask) | ((value << (8 * off)) & mask)
            return
        if off < 8:
            reg = self.ioaddr & (d.MMIO_SIZE - 1) & ~3
            self.regs.write(reg + off - 4, min(size, 8 - off), value)
            return
        self.guest_error(f"io reserved offset: write {off:#x}")

    def config_written(self, off: int, size: int, value: int) -> None:
        if off <= 4 < off + size and self.bus_master:
            self.rx_space_changed()
            self.tx_kick()

    def guest_error(self, what: str) -> None:
        """Counted (and rate-limit logged by Device) under the text before ": ", so a guest
        varying addresses cannot grow the counter table; the detail goes to the debug log."""
        key, _, detail = what.partition(": ")
        super().guest_error(key)
        if detail:
            log.debug("%s: %s", self.name, what)

    def dma_error(self, what: str) -> None:
        """DMA that does not land in guest RAM: a master abort (PCI status bit 13)."""
        self.config[STATUS + 1] |= STATUS_REC_MASTER_ABORT >> 8
        self.guest_error(what)

    def timer(self, name: str):
        return self._timers.get(name)
