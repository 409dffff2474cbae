"""Who answers a port or MMIO access: the simulator's own platform devices, or the device model.

The rules are Xen's (xen-protocol.md 1.5):
- hypervisor-internal ports never reach the device model: PIT 0x40-0x43 and 0x61, PIC
  0x20/0x21 and 0xA0/0xA1, ELCR 0x4D0/0x4D1. (Xen also keeps RTC 0x70/0x71 and debug port 0xE9;
  in this project those belong to the device model and are routed like any port.) Xen's handlers
  accept byte accesses only; other sizes read all-ones and drop the write.
- 0xCF8: a 4-byte write is latched here *and* still forwarded like any port access.
- 0xCFC-0xCFF while the latch has bit 31 set: PCI config of SBDF = latch bits 23-8, register =
  latch bits 7-2 plus the port's low two bits. A claimed SBDF gets a PCI_CONFIG request; an
  unclaimed one reads all-ones and drops writes, without consulting the port ranges.
- any other access goes to the device model only if the whole access lies inside a range it
  claimed; otherwise reads are all-ones and writes are dropped.
- LAPIC 0xFEE00000 and IO-APIC 0xFEC00000 pages are the simulator's.
- a 4-byte read of the ACPI PM timer, where the device model's PIIX4 PM block sits (found by
  snooping its PCI config, pmtimer.py), is answered from the virtual clock, as Xen's
  pmtimer.c does, when ``pm_timer`` is set.
- a single MMIO write the device model claims in the VGA window 0xA0000-0xBFFFF is posted
  (``post``, posted.py) rather than sent synchronously, when the device model takes posted
  writes; so is a single write to a claimed port of posted.POSTED_PORTS (0x70, 0x80, 0xE9,
  0x402), as a PIO slot. Reads of those ports stay synchronous (and flush what was posted).
- a byte read of the RTC index port 0x70 is answered 0xFF here when ``rtc_index_local`` is
  set: Xen emulates the RTC itself and never forwards 0x70 (its rtc.c, like QEMU's
  cmos_ioport_read, returns 0xFF for the write-only index port), and the device model's RTC
  answers the same. SeaBIOS reads 0x70 on every 16/32-bit mode switch (call32_prep saves the
  NMI-mask bit), about 600 round trips per boot.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable

from ..wire.constants import IOREQ_TYPE_COPY, IOREQ_TYPE_PIO
from .apic import IOAPIC_BASE, LAPIC_BASE, IoapicStub, LapicStub
from .pic import DualPic
from .pit import Pit
from .pmtimer import PmTimer
from .ports import IoreqPort
from .posted import bufferable, postable_port

PCI_CF8 = 0xCF8
PCI_CFC = 0xCFC
PCI_ENABLE = 1 << 31
APIC_PAGE = 0x1000

PIC_PORTS = frozenset({0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1})
PIT_PORTS = frozenset({0x40, 0x41, 0x42, 0x43})
PORT_B = 0x61
RTC_INDEX = 0x70
PLATFORM_PORTS = PIC_PORTS | PIT_PORTS | {PORT_B}

# Observer signature: (kind, address, size, value, is_write). kind is "pio", "mmio" or "pci"
# (for "pci", address is (sbdf << 32) | reg, as in a PCI_CONFIG ioreq).
IoObserver = Callable[[str, int, int, int, bool], None]


class Route(enum.Enum):
    PLATFORM = "platform"
    PCI = "pci"
    DM = "dm"
    NONE = "none"


def _nothing() -> None:
    return None


def ones(size: int) -> int:
    return (1 << 8 * size) - 1


class IoRouter:
    def __init__(
        self,
        port: IoreqPort,
        pic: DualPic,
        pit: Pit,
        lapic: LapicStub,
        ioapic: IoapicStub,
        before_dm: Callable[[], None] | None = None,
    ) -> None:
        self.port = port
        self.pic = pic
        self.pit = pit
        self.lapic = lapic
        self.ioapic = ioapic
        # Called right before every access that goes to the device model (the simulator
        # sends the virtual time there, docs/protocol.md 4.6).
        self.before_dm = before_dm if before_dm is not None else _nothing
        # Posts a bufferable write (gpa or port, size, value, IOREQ type); returns False if it
        # cannot (no buffered ring), and the write then goes synchronously.
        self.post: Callable[[int, int, int, int], bool] | None = None
        # The ACPI PM timer answered locally (pmtimer.py), or None to forward every read.
        self.pm_timer: PmTimer | None = None
        # Answer byte reads of the RTC index port 0x70 here (0xFF), as Xen does.
        self.rtc_index_local = False
        self.rtc_index_reads = 0
        self.cf8 = 0
        self.pio_counts: Counter[int] = Counter()
        self.mmio_counts: Counter[int] = Counter()  # by 4 KiB page
        self.pci_counts: Counter[int] = Counter()  # by SBDF
        self.unclaimed = 0  # accesses answered with all-ones / dropped
        self.bad_size = 0  # non-byte accesses to byte-only platform ports
        self.observers: list[IoObserver] = []

    def reset(self) -> None:
        self.cf8 = 0

    def _notify(self, kind: str, addr: int, size: int, value: int, is_write: bool) -> None:
        for observer in self.observers:
            observer(kind, addr, size, value, is_write)

    # ---- port I/O --------------------------------------------------------------------------
    def pci_target(self, port: int) -> tuple[int, int] | None:
        """(sbdf, reg) if an access at ``port`` is a PCI config access under the latch."""
        if PCI_CFC <= port <= PCI_CFC + 3 and self.cf8 & PCI_ENABLE:
            return self.cf8 >> 8 & 0xFFFF, (self.cf8 & 0xFC) | (port & 3)
        return None

    def port_route(self, port: int, size: int) -> Route:
        if port in PLATFORM_PORTS:
            return Route.PLATFORM
        if self.pci_target(port) is not None:
            return Route.PCI
        if self.port.claims_port(port, size):
            return Route.DM
        return Route.NONE

    def pio_read(self, port: int, size: int) -> int:
        self.pio_counts[port] += 1
        route = self.port_route(port, size)
        if route is Route.DM:
            pm = self.pm_timer
            if pm is not None and port == pm.tmr_port and size == 4:
                value = pm.read()
            elif port == RTC_INDEX and size == 1 and self.rtc_index_local:
                self.rtc_index_reads += 1
                value = 0xFF
            else:
                self.before_dm()
                value = self.port.pio_read(port, size) & ones(size)
        elif route is Route.PLATFORM:
            value = self._platform_read(port, size)
        elif route is Route.PCI:
            value = self._pci_read(port, size)
        else:
            self.unclaimed += 1
            value = ones(size)
        if self.observers:
            self._notify("pio", port, size, value, False)
        return value

    def pio_write(self, port: int, size: int, value: int) -> None:
        value &= ones(size)
        self.pio_counts[port] += 1
        if self.observers:
            self._notify("pio", port, size, value, True)
        if port == PCI_CF8 and size == 4:
            self.cf8 = value  # latched, and forwarded below as an ordinary port write
        route = self.port_route(port, size)
        if route is Route.DM:
            if (self.post is not None and postable_port(port, size)
                    and self.post(port, size, value, IOREQ_TYPE_PIO)):
                return
            self.before_dm()
            self.port.pio_write(port, size, value)
        elif route is Route.PLATFORM:
            self._platform_write(port, size, value)
        elif route is Route.PCI:
            self._pci_write(port, size, value)
        else:
            self.unclaimed += 1

    def _platform_read(self, port: int, size: int) -> int:
        if size != 1:
            self.bad_size += 1
            return ones(size)
        if port == PORT_B:
            return self.pit.portb_read()
        if port in PIT_PORTS:
            return self.pit.io_read(port)
        return self.pic.io_read(port)

    def _platform_write(self, port: int, size: int, value: int) -> None:
        if size != 1:
            self.bad_size += 1
            return
        if port == PORT_B:
            self.pit.portb_write(value)
        elif port in PIT_PORTS:
            self.pit.io_write(port, value)
        else:
            self.pic.io_write(port, value)

    def _pci_read(self, port: int, size: int) -> int:
        target = self.pci_target(port)
        assert target is not None
        sbdf, reg = target
        self.pci_counts[sbdf] += 1
        if not self.port.claims_pci(sbdf):
            self.unclaimed += 1
            return ones(size)
        self.before_dm()
        value = self.port.pci_cfg_read(sbdf, reg, size) & ones(size)
        if self.pm_timer is not None:
            self.pm_timer.config_read(sbdf, reg, size, value)
        if self.observers:
            self._notify("pci", sbdf << 32 | reg, size, value, False)
        return value

    def _pci_write(self, port: int, size: int, value: int) -> None:
        target = self.pci_target(port)
        assert target is not None
        sbdf, reg = target
        self.pci_counts[sbdf] += 1
        if not self.port.claims_pci(sbdf):
            self.unclaimed += 1
            return
        if self.observers:
            self._notify("pci", sbdf << 32 | reg, size, value, True)
        if self.pm_timer is not None:
            self.pm_timer.config_write(sbdf, reg, size, value)
        self.before_dm()
        self.port.pci_cfg_write(sbdf, reg, size, value)

    # ---- MMIO ------------------------------------------------------------------------------
    def dm_mmio(self, gpa: int, size: int) -> bool:
        """Whether an access to [gpa, gpa + size) goes to the device model (it claims all of
        it and it is not an APIC page)."""
        for base in (LAPIC_BASE, IOAPIC_BASE):
            if gpa < base + APIC_PAGE and base < gpa + size:
                return False
        return self.port.claims_mmio(gpa, size)

    def mmio_read(self, gpa: int, size: int) -> int:
        self.mmio_counts[gpa >> 12] += 1
        if LAPIC_BASE <= gpa < LAPIC_BASE + APIC_PAGE:
            value = self.lapic.read(gpa - LAPIC_BASE, size)
        elif IOAPIC_BASE <= gpa < IOAPIC_BASE + APIC_PAGE:
            value = self.ioapic.read(gpa - IOAPIC_BASE, size)
        elif self.port.claims_mmio(gpa, size):
            self.before_dm()
            value = self.port.mmio_read(gpa, size) & ones(size)
        else:
            self.unclaimed += 1
            value = ones(size)
        if self.observers:
            self._notify("mmio", gpa, size, value, False)
        return value

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        value &= ones(size)
        self.mmio_counts[gpa >> 12] += 1
        if self.observers:
            self._notify("mmio", gpa, size, value, True)
        if LAPIC_BASE <= gpa < LAPIC_BASE + APIC_PAGE:
            self.lapic.write(gpa - LAPIC_BASE, size, value)
        elif IOAPIC_BASE <= gpa < IOAPIC_BASE + APIC_PAGE:
            self.ioapic.write(gpa - IOAPIC_BASE, size, value)
        elif self.port.claims_mmio(gpa, size):
            if (self.post is not None and bufferable(gpa, size)
                    and self.post(gpa, size, value, IOREQ_TYPE_COPY)):
                return
            self.before_dm()
            self.port.mmio_write(gpa, size, value)
        else:
            self.unclaimed += 1
