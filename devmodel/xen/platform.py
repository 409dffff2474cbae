"""The Xen platform PCI device (QEMU `xen-platform`, hw/i386/xen/xen_platform.c) and the
fixed I/O ports 0x10-0x1F of the emulated-device unplug protocol (xen-protocol.md 5).

Identity: 5853:0001 rev 1, class FF:80:00, subsystem 5853:0001 (non-zero for Windows WHQL),
INTA. BAR0: 256 bytes of I/O, byte accesses only. BAR1: 16 MiB of prefetchable memory that
guests use as GPA space for grant-table frames; as in QEMU it reads 0 and drops writes. QEMU
sets COMMAND to I/O + memory at realize and then its system reset clears it, so a guest sees
0 until the firmware enables the BARs; we do the same (PciDevice.reset).

Fixed ports (QEMU platform_fixed_ioport_*; 1, 2 and 4-byte accesses, any alignment):

    port  size read                          write
    0x10  1    platform flags                platform flags (bit 0 PFFLAG_ROM_LOCK)
    0x10  2    magic 0x49D2 (0xD249 once a   unplug mask
               blacklisted driver registered)
    0x10  4    all-ones                      PV driver build number
    0x12  1    protocol version 1            one log character
    0x12  2    0xFFFF                        product number (pvdrivers.h)
    other      all-ones of the size          ignored

PFFLAG_ROM_LOCK makes 0xC0000-0xFFFFF read-only (set_mem_type ram_ro on 64 pages from gfn
0xC0) and clearing it read-write, as QEMU does on Xen; the flag is stored as written (our
dm_ops are fire-and-forget, QEMU stores it only when the call succeeds). Reset writes 0; we
send the ram_rw dm_op at reset only when the flag was set, so a fresh machine sends nothing
that could fight the firmware's PAM settings.

BAR0 (QEMU xen_platform_ioport_*): offset 0 reads/writes the flags; offset 4 write of 1 is
the old SUSE xen-kmp unplug of all disks and NICs; offset 8 write of 1 unplugs the disks, 2
the NICs, anything else is a log character; every other offset reads 0xFF.

Blacklist: upstream QEMU has none; qemu-traditional answers the magic with 0xD249 once the
driver's (product, build) pair is listed in xenstore. Here `blacklist` holds entries of
`product` or `(product, build)`; the match is made when the build number is written (as
qemu-traditional, which needs the product number first) and, for product-only entries, at
the product write too. A blacklisted driver reads 0xD249 and its unplug requests are refused
(qemu-traditional still honoured them; refusing keeps a driver that ignores the answer from
leaving the guest without disks). `policy="ignore"` (the toolstack's xen_emul_unplug=never)
treats every driver as blacklisted: it keeps its emulated devices and, as Linux reads the
magic again after registering, does not bind its PV drivers.

The protocol-version-2 extension of XenServer's qemu-traditional (ports 0x11/0x13) is not
implemented, as upstream: those ports read all-ones and ignore writes; version reads 1.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from devmodel.core.bus import ALL_SIZES, Range
from devmodel.core.pci import Bar, PciDevice
from devmodel.wire.constants import DmOp

from .unplug import UNPLUG_ALL_DISKS, UNPLUG_ALL_NICS, UnplugReport, unplug_emulated

log = logging.getLogger("devmodel.xen")

VENDOR_XEN = 0x5853
DEVICE_PLATFORM = 0x0001
CLASS_PLATFORM = 0xFF8000  # class FF (other), subclass 80, prog-if 0
REVISION = 1
PCI_SLOT = 2  # the xenfv layout: platform device at 00:02.0, VGA after it

FIXED_PORT = 0x10
FIXED_LEN = 16
BAR0_SIZE = 0x100
BAR1_SIZE = 0x1000000

MAGIC = 0x49D2
MAGIC_BLACKLISTED = 0xD249
PROTOCOL_VERSION = 1
PFFLAG_ROM_LOCK = 0x1
ROM_GFN = 0xC0
ROM_PAGES = 0x40
HVMMEM_RAM_RW = 0
HVMMEM_RAM_RO = 1

LOG_BUFFER = 4096  # QEMU's log_buffer: a line is cut at 4095 characters
LOG_LINES_KEPT = 64
# Log throttling as qemu-traditional's token bucket (128 KiB, 256 bytes/s), except that a
# line over budget is dropped and counted instead of stalling the vCPU.
LOG_BUCKET_BYTES = 128 * 1024
LOG_FILL_PER_S = 256

# pvdrivers.h product numbers (xen-protocol.md 5.5)
PRODUCTS = {
    0x0001: "xensource-windows",
    0x0002: "gplpv-windows",
    0x0003: "linux",
    0x0004: "xenserver-windows-v7.0+",
    0x0005: "xenserver-windows-v7.2+",
    0xFFFF: "experimental",
}
POLICIES = ("honour", "ignore")

BlacklistEntry = int | tuple[int, int]


def parse_blacklist_entry(text: str) -> BlacklistEntry:
    """`gplpv-windows`, `2`, `0x2`, or with a build: `gplpv-windows/1234`, `2/1234`."""
    name, _, build = text.partition("/")
    by_name = {v: k for k, v in PRODUCTS.items()}
    try:
        product = by_name[name] if name in by_name else int(name, 0)
        if not 0 <= product <= 0xFFFF:
            raise ValueError
        return (product, int(build, 0)) if build else product
    except ValueError:
        raise ValueError(f"{text!r} is not a PV driver product[/build] "
                         f"({', '.join(sorted(by_name))} or a number)") from None


class XenPlatform(PciDevice):
    SNAPSHOT_FIELDS = ("config", "irq_level", "flags", "product", "build", "blacklisted",
                       "log_buffer", "unplug_mask")

    def __init__(self, *, policy: str = "honour", blacklist: tuple[BlacklistEntry, ...] = (),
                 unplugger: Callable[[int], list[tuple[str, str]]] | None = None,
                 name: str = "xen-platform") -> None:
        super().__init__(name, vendor_id=VENDOR_XEN, device_id=DEVICE_PLATFORM,
                         class_code=CLASS_PLATFORM, revision=REVISION,
                         subsystem_vendor_id=VENDOR_XEN, subsystem_id=DEVICE_PLATFORM, irq_pin=1)
        if policy not in POLICIES:
            raise ValueError(f"unplug policy {policy!r}: use honour or ignore")
        self.policy = policy
        self.blacklist = tuple(blacklist)
        # How a request becomes a machine operation; default: unplug_emulated on our machine.
        self.unplugger = unplugger
        self.add_bar(Bar(0, BAR0_SIZE, True, self._bar0_read, self._bar0_write, "xen-pci",
                         sizes=frozenset({1})))
        self.add_bar(Bar(1, BAR1_SIZE, False, self._mmio_read, self._mmio_write, "xen-mmio",
                         prefetch=True, sizes=ALL_SIZES))
        self.flags = 0
        self.product = 0
        self.build = -1  # -1: none written
        self.blacklisted = False
        self.unplug_mask = 0  # OR of every mask honoured so far
        self.log_buffer = b""
        self.log_lines: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self.reports: deque[UnplugReport] = deque(maxlen=16)
        # The QMP layer's unplug summary event hangs here; per-device DEVICE_DELETED events
        # come from machine.unplug_listeners.
        self.summary_listeners: list[Callable[[UnplugReport], None]] = []
        self._tokens = LOG_BUCKET_BYTES
        self._tokens_at = 0

    # ---- wiring -------------------------------------------------------------------------
    def pio_ranges(self) -> list[Range]:
        return [Range(FIXED_PORT, FIXED_LEN, self._fixed_read, self._fixed_write, "xen-fixed",
                      self, frozenset({1, 2, 4}))]

    def reset(self) -> None:
        super().reset()
        # QEMU platform_fixed_ioport_reset: the flags written as 0 (ROM area read-write).
        if self.flags:
            self._set_flags(0)
        self.flags = 0
        # A reboot may bring other drivers: they register again (Linux re-runs the handshake
        # on every boot and resume). What was unplugged stays unplugged, as in QEMU.
        self.product = 0
        self.build = -1
        self.blacklisted = False
        self.log_buffer = b""

    def post_restore(self) -> None:
        super().post_restore()
        # QEMU xen_platform_post_load re-writes the flags so the hypervisor's view follows.
        self._set_flags(self.flags)
        self.log_buffer = bytes(self.log_buffer[: LOG_BUFFER - 1])

    # ---- fixed ports 0x10-0x1F ----------------------------------------------------------
    def _fixed_read(self, off: int, size: int) -> int:
        if size == 1:
            if off == 0:
                return self.flags
            if off == 2:
                return PROTOCOL_VERSION
            return 0xFF
        if size == 2:
            if off == 0:
                return MAGIC_BLACKLISTED if self.blacklisted else MAGIC
            return 0xFFFF
        return 0xFFFFFFFF

    def _fixed_write(self, off: int, size: int, value: int) -> None:
        if size == 1:
            if off == 0:
                self._set_flags(value)
            elif off == 2:
                self._log_char(value)
        elif size == 2:
            if off == 0:
                self.request_unplug(value, "port")
            elif off == 2:
                self._set_product(value)
        elif off == 0:  # size 4: the PV driver build number
            self._set_build(value)

    def _set_flags(self, value: int) -> None:
        self.flags = value & PFFLAG_ROM_LOCK
        if self.ctx is not None:
            mtype = HVMMEM_RAM_RO if self.flags else HVMMEM_RAM_RW
            self.ctx.machine.emit_dmop(DmOp.SET_MEM_TYPE, (ROM_PAGES, mtype, 0, ROM_GFN))

    def _set_product(self, value: int) -> None:
        self.product = value
        self.build = -1
        log.info("%s: PV driver product %#06x (%s) registered", self.name, value,
                 PRODUCTS.get(value, "unknown"))
        if self.policy == "ignore" or value in self.blacklist:
            self._blacklist()

    def _set_build(self, value: int) -> None:
        if not self.product:
            # qemu-traditional: "Drivers tried to set their version number before setting
            # the product number?" - ignored.
            self.guest_error("PV driver build number before the product number")
            return
        self.build = value
        log.info("%s: PV driver build %d", self.name, value)
        if (self.policy == "ignore" or self.product in self.blacklist
                or (self.product, value) in self.blacklist):
            self._blacklist()

    def _blacklist(self) -> None:
        if not self.blacklisted:
            why = "--unplug-policy ignore" if self.policy == "ignore" else "blacklist"
            log.warning("%s: PV drivers product %#06x build %s refused (%s): magic now reads "
                        "%#06x", self.name, self.product, self.build if self.build >= 0 else "-",
                        why, MAGIC_BLACKLISTED)
        self.blacklisted = True

    # ---- the unplug request -------------------------------------------------------------
    def request_unplug(self, mask: int, source: str) -> UnplugReport:
        report = UnplugReport(mask=mask, source=source, product=self.product,
                              build=self.build if self.build >= 0 else None)
        if self.policy == "ignore":
            report.refused = "policy"
        elif self.blacklisted:
            report.refused = "blacklisted"
        if report.refused:
            self.counters[f"unplug refused: {report.refused}"] += 1
            log.warning("%s: unplug request %#x refused (%s)", self.name, mask, report.refused)
        else:
            self.unplug_mask |= mask
            fn = self.unplugger
            if fn is None:
                assert self.ctx is not None
                machine = self.ctx.machine
                report.removed = unplug_emulated(machine, mask)
            else:
                report.removed = fn(mask)
            log.info("%s: unplug request %#x (%s, product %#06x): removed %s", self.name, mask,
                     source, self.product,
                     ", ".join(f"{k} {i}" for i, k in report.removed) or "nothing")
        self.reports.append(report)
        for listener in list(self.summary_listeners):
            try:
                listener(report)
            except Exception:
                log.exception("unplug summary listener failed")
        return report

    # ---- log port -----------------------------------------------------------------------
    def _log_char(self, value: int) -> None:
        # QEMU log_writeb: '\n' or a full buffer flushes (and that character is dropped).
        if value == 0x0A or len(self.log_buffer) >= LOG_BUFFER - 1:
            line = self.log_buffer.decode("latin-1")
            self.log_buffer = b""
            self._emit_line(line)
        else:
            self.log_buffer += bytes((value,))

    def _emit_line(self, line: str) -> None:
        now = self.ctx.clock.now() if self.ctx is not None else 0
        self._tokens = min(LOG_BUCKET_BYTES,
                           self._tokens + (now - self._tokens_at) * LOG_FILL_PER_S // 1_000_000_000)
        self._tokens_at = now
        if len(line) > self._tokens:
            self.counters["log lines dropped (throttled)"] += 1
            return
        self._tokens -= len(line)
        self.log_lines.append(line)
        log.info("%s: guest: %s", self.name, line.rstrip("\r"))

    # ---- BAR0: legacy hooks -------------------------------------------------------------
    def _bar0_read(self, off: int, size: int) -> int:
        return self.flags if off == 0 else 0xFF

    def _bar0_write(self, off: int, size: int, value: int) -> None:
        if off == 0:
            self._set_flags(value)
        elif off == 4:
            if value == 1:  # SUSE xen-kmp (xen-3.0.4 on), pre-1.7 VMDP controlling both
                self.request_unplug(UNPLUG_ALL_DISKS | UNPLUG_ALL_NICS, "bar0")
        elif off == 8:
            if value == 1:
                self.request_unplug(UNPLUG_ALL_DISKS, "bar0")
            elif value == 2:
                self.request_unplug(UNPLUG_ALL_NICS, "bar0")
            else:
                self._log_char(value)

    # ---- BAR1: the grant-table window ---------------------------------------------------
    def _mmio_read(self, off: int, size: int) -> int:
        self.counters["mmio read"] += 1
        return 0

    def _mmio_write(self, off: int, size: int, value: int) -> None:
        self.counters["mmio write"] += 1

    # ---- snapshot helpers ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"flags": self.flags, "product": self.product,
                "build": self.build if self.build >= 0 else None,
                "blacklisted": self.blacklisted, "unplug_mask": self.unplug_mask,
                "policy": self.policy}
