"""The i440FX/PIIX3 chipset of QEMU's `pc` machine, as HVM guests and SeaBIOS expect it.

- PCI host bridge ports 0xCF8-0xCFF: configuration mechanism #1 (PCI 3.0 section 3.2.2.3.2),
  with the PIIX3 reset control register overlaid on the byte at 0xCF9 as on the real chipset.
- 00:00.0 i440FX host bridge (8086:1237) with the PAM and SMRAM registers.
- 00:01.0 PIIX3 PCI-to-ISA bridge (8086:7000), PIRQ route registers 0x60-0x63, ELCR.
- Port 0x92 (fast A20 and fast reset).

On Xen the hypervisor owns memory, so PAM/SMRAM writes are stored and reported to listeners
(the simulator uses them for shadowing) but change nothing here.
"""

from __future__ import annotations

from collections.abc import Callable

from devmodel.wire.constants import SHUTDOWN_REBOOT, DmOp

from .bus import Range
from .device import Device
from .pci import PciDevice
from .regs import Reg, RegisterFile

PAM0 = 0x59
PAM_COUNT = 7
SMRAM = 0x72
PIRQ_BASE = 0x60


class PciHost(Device):
    """CONFIG_ADDRESS at 0xCF8 (32-bit access only) and CONFIG_DATA at 0xCFC-0xCFF.

    QEMU's pci_host: CONFIG_ADDRESS takes only aligned 4-byte accesses; other sizes at
    0xCF8-0xCFB fall through (the byte at 0xCF9 is the PIIX3 reset control register).
    Bit 31 clear or a bus other than 0: data reads all-ones, writes are dropped.
    """

    SNAPSHOT_FIELDS = ("config_address",)

    def __init__(self, reset_control: ResetControl) -> None:
        super().__init__("pci-host")
        self.config_address = 0
        self.rcr = reset_control

    def pio_ranges(self) -> list[Range]:
        return [Range(0xCF8, 8, self._read, self._write, "pci-host", self)]

    def reset(self) -> None:
        self.config_address = 0

    def _target(self, off: int) -> tuple[int, int] | None:
        a = self.config_address
        if not a & 0x80000000 or (a >> 16) & 0xFF != 0:
            return None
        # QEMU ORs the port's low bits into the stored address (bits 1:0 are not masked).
        return (a >> 8) & 0xFF, (a | (off & 3)) & 0xFF

    def _read(self, off: int, size: int) -> int:
        if off < 4:
            if off == 1 and size == 1:
                return self.rcr.read()
            # QEMU pci_host_config_read ignores the offset: any read returns the register,
            # cut to the access size.
            return self.config_address & ((1 << (8 * size)) - 1)
        if off & (size - 1):
            # Misaligned data-port accesses split into bytes (QEMU memory_access_size); bytes
            # past 0xCFF belong to nobody and read 0xFF.
            return sum((self._read(off + i, 1) if off + i < 8 else 0xFF) << (8 * i)
                       for i in range(size))
        t = self._target(off)
        if t is None:
            return (1 << (8 * size)) - 1
        assert self.ctx is not None
        return self.ctx.machine.pci.config_read(t[0], t[1], size)

    def _write(self, off: int, size: int, value: int) -> None:
        if off < 4:
            if off == 0 and size == 4:
                # QEMU pci_host_config_write stores the whole dword and reads it back.
                self.config_address = value
            elif off == 1 and size == 1:
                self.rcr.write(value)
            else:
                self.guest_error(f"CONFIG_ADDRESS write size {size} at +{off}")
            return
        if off & (size - 1):
            for i in range(size):
                if off + i < 8:
                    self._write(off + i, 1, value >> (8 * i) & 0xFF)
            return
        t = self._target(off)
        if t is None:
            return
        assert self.ctx is not None
        self.ctx.machine.pci.config_write(t[0], t[1], size, value)


class ResetControl:
    """PIIX3 Reset Control Register (0xCF9), datasheet 4.1.13: bit 1 selects a hard reset,
    bit 2 starts it. QEMU stores only bit 1 and resets on any write with bit 2 set."""

    def __init__(self, request_reset: Callable[[], None]) -> None:
        self.value = 0
        self._request_reset = request_reset

    def read(self) -> int:
        return self.value

    def write(self, value: int) -> None:
        if value & 0x4:
            self.value = 0
            self._request_reset()
            return
        self.value = value & 0x2


class I440FX(PciDevice):
    """00:00.0. Subsystem 1af4:1100 is what makes SeaBIOS say "Running on QEMU (i440fx)"."""

    def __init__(self, on_pam: Callable[[int, int], None] | None = None) -> None:
        super().__init__(
            "i440fx", vendor_id=0x8086, device_id=0x1237, class_code=0x060000, revision=0x02,
            subsystem_vendor_id=0x1AF4, subsystem_id=0x1100,
        )
        # SMRAM C_BASE_SEG = 010b (compatible SMRAM at A0000), set once at creation; like PAM
        # it is not touched by a system reset (QEMU i440fx_realize, SeaBIOS qemu_reboot).
        self.config[SMRAM] = 0x02
        self.on_pam = on_pam

    def config_written(self, off: int, size: int, value: int) -> None:
        if self.on_pam is None:
            return
        lo, hi = max(off, PAM0), min(off + size, PAM0 + PAM_COUNT)
        for reg in range(lo, hi):
            self.on_pam(reg - PAM0, self.config[reg])

    def pam(self) -> bytes:
        return bytes(self.config[PAM0 : PAM0 + PAM_COUNT])


class PIIX3(PciDevice):
    """00:01.0, the PCI-to-ISA bridge: PIRQ routing and the 8259 ELCR.

    On Xen the PIRQ route registers are mirrored to the hypervisor with set_pci_link_route
    (QEMU xen_piix3_write_config): link n -> IRQ (value & 0x0F), or 0 when bit 7 disables it.
    """

    SNAPSHOT_FIELDS = ("config", "irq_level", "elcr_values", "rcr_value")
    # Reset values of QEMU piix3_reset (hw/isa/piix.c); offsets not listed reset to 0.
    RESET_VALUES = {
        0x04: 0x07, 0x05: 0x00, 0x06: 0x00, 0x07: 0x02, 0x4C: 0x4D, 0x4E: 0x03, 0x4F: 0x00,
        0x60: 0x80, 0x61: 0x80, 0x62: 0x80, 0x63: 0x80, 0x69: 0x02, 0x70: 0x80, 0x76: 0x0C,
        0x77: 0x0C, 0x78: 0x02, 0x79: 0x00, 0x80: 0x00, 0x82: 0x00, 0xA0: 0x08, 0xA2: 0x00,
        0xA3: 0x00, 0xA4: 0x00, 0xA5: 0x00, 0xA6: 0x00, 0xA7: 0x00, 0xA8: 0x0F, 0xAA: 0x00,
        0xAB: 0x00, 0xAC: 0x00, 0xAE: 0x00,
    }

    def __init__(self) -> None:
        super().__init__(
            "piix3", vendor_id=0x8086, device_id=0x7000, class_code=0x060100,
            multifunction=True,
        )
        self.config[0x07] = 0x02  # status: DEVSEL medium timing, read-only
        # 8259 ELCR: IRQ 0, 1, 2, 8 and 13 are edge-only (QEMU i8259 elcr_mask 0xF8 / 0xDE).
        self.elcr = RegisterFile(
            [Reg("elcr1", 0, 1, wmask=0xF8), Reg("elcr2", 1, 1, wmask=0xDE)],
            on_hole=self.guest_error,
        )
        self.rcr = ResetControl(self._reset_request)

    def _reset_request(self) -> None:
        assert self.ctx is not None
        self.ctx.machine.request_shutdown(SHUTDOWN_REBOOT)

    def pio_ranges(self) -> list[Range]:
        return [Range(0x4D0, 2, self.elcr.read, self.elcr.write, "elcr", self, frozenset({1, 2}))]

    def reset(self) -> None:
        # QEMU runs piix_reset before the bus's generic reset, so COMMAND ends up 0 even
        # though piix_reset writes 0x07 there; we apply the specific values, then the generic.
        for off, v in self.RESET_VALUES.items():
            self.config[off] = v
        super().reset()
        self.elcr.reset()
        self.rcr.value = 0
        if self.ctx is not None and self.ctx.machine.announcing:
            self.announced()

    def announced(self) -> None:
        for link in range(4):
            self._route(link)

    def config_written(self, off: int, size: int, value: int) -> None:
        for reg in range(max(off, PIRQ_BASE), min(off + size, PIRQ_BASE + 4)):
            self._route(reg - PIRQ_BASE)

    def _route(self, link: int) -> None:
        v = self.config[PIRQ_BASE + link]
        assert self.ctx is not None
        self.ctx.machine.emit_dmop(DmOp.SET_PCI_LINK_ROUTE, (link, 0 if v & 0x80 else v & 0x0F))

    # ELCR and RCR live outside config space; the snapshot carries them as plain values.
    @property
    def elcr_values(self) -> dict[str, int]:
        return self.elcr.snapshot()

    @elcr_values.setter
    def elcr_values(self, v: dict[str, int]) -> None:
        self.elcr.restore(v)

    @property
    def rcr_value(self) -> int:
        return self.rcr.value

    @rcr_value.setter
    def rcr_value(self, v: int) -> None:
        self.rcr.value = v & 0x2


class Port92(Device):
    """System control port A (0x92). Bit 0 rising starts a fast reset, bit 1 gates A20.
    QEMU hw/i386/port92.c: the whole byte is stored and read back."""

    SNAPSHOT_FIELDS = ("values",)

    def __init__(self, on_a20: Callable[[int], None] | None = None) -> None:
        super().__init__("port92")
        self.on_a20 = on_a20
        self.regs = RegisterFile([Reg("port_a", 0, 1, on_write=self._written)])

    def pio_ranges(self) -> list[Range]:
        return [Range(0x92, 1, self.regs.read, self.regs.write, "port92", self, frozenset({1}))]

    def reset(self) -> None:
        # QEMU port92_reset clears only the fast-reset bit; A20 survives a reset.
        self.regs["port_a"] = self.regs["port_a"] & ~1

    def _written(self, old: int, new: int) -> None:
        if self.on_a20 is not None and (old ^ new) & 2:
            self.on_a20(new >> 1 & 1)
        if new & 1 and not old & 1:
            assert self.ctx is not None
            self.ctx.machine.request_shutdown(SHUTDOWN_REBOOT)

    @property
    def values(self) -> dict[str, int]:
        return self.regs.snapshot()

    @values.setter
    def values(self, v: dict[str, int]) -> None:
        self.regs.restore(v)

    @property
    def a20(self) -> int:
        return self.regs["port_a"] >> 1 & 1


def build_chipset(machine, on_pam: Callable[[int, int], None] | None = None) -> dict[str, Device]:
    """Attach the core PC chipset to `machine` at QEMU's `pc` addresses."""
    host_bridge = I440FX(on_pam)
    isa = PIIX3()
    machine.add(host_bridge, slot=0)
    machine.add(isa, slot=1, fn=0)
    host = PciHost(isa.rcr)
    machine.add(host)
    port92 = Port92()
    machine.add(port92)
    return {"i440fx": host_bridge, "piix3": isa, "pci-host": host, "port92": port92}
