"""The PIIX3 IDE function, 00:01.1 (8086:7010), as QEMU's `piix3-ide` on the `pc` machine.

- Class 01:01:80: mass storage, IDE, programming interface 80h = both channels in legacy
  (compatibility) mode with bus mastering. Legacy mode means fixed ports and ISA IRQs, not
  BARs 0-3: 0x1F0-0x1F7 / 0x3F6 on IRQ 14 and 0x170-0x177 / 0x376 on IRQ 15 (QEMU
  pci_piix_init_ports). They are served whatever the PCI command register says, as in QEMU.
- BAR4: the 16-byte bus-master I/O block (BMIBA), channel 0 at +0, channel 1 at +8.
- Config 0x40-0x43 IDETIM (primary/secondary timing, bit 15 = decode enable) and 0x44
  SIDETIM: plain read/write storage, as in QEMU. SeaBIOS sets the enable bits and Linux
  ata_piix checks them (piix_enable_bits) before it probes a port, so they must read back.
- After reset: COMMAND 0, STATUS 0280h (fast back-to-back, medium DEVSEL; QEMU piix3_reset).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from devmodel.backends.disk import DiskBackend
from devmodel.core.bus import Range
from devmodel.core.device import DeviceContext, SnapshotError
from devmodel.core.pci import STATUS, STATUS_REC_MASTER_ABORT, Bar, PciDevice

from . import ata
from .atapi import AtapiDrive, Cdrom
from .channel import IdeChannel
from .drive import AtaDrive
from .identify import Geometry, guess_geometry, guess_translation

# What build_ide / PiixIde take per IDE position: a hard disk's backend, or a CD-ROM drive.
Drive = DiskBackend | Cdrom
# Formats QEMU opens that only the NBD path (qemu-nbd) can serve here.
NBD_FORMATS = frozenset({"qcow2", "qcow", "qed", "vmdk", "vdi", "vpc", "vhdx", "vhd", "luks",
                         "parallels", "dmg", "cloop", "bochs"})

# (command block, control block, ISA IRQ) per channel
LEGACY_PORTS = ((0x1F0, 0x3F6, 14), (0x170, 0x376, 15))
IDETIM = 0x40
SIDETIM = 0x44
PCI_SLOT = 1
PCI_FN = 1
STATUS_RESET = 0x0280


class PiixIde(PciDevice):
    SNAPSHOT_FIELDS = ("config", "irq_level", "ide_state")

    def __init__(self, disks: dict[tuple[int, int], Drive] | None = None,
                 geometries: dict[tuple[int, int], Geometry] | None = None,
                 translations: dict[tuple[int, int], int] | None = None) -> None:
        super().__init__("piix3-ide", vendor_id=0x8086, device_id=0x7010, class_code=0x010180)
        disks = dict(disks or {})
        for key in disks:
            if key not in ((0, 0), (0, 1), (1, 0), (1, 1)):
                raise ValueError(f"IDE position {key} does not exist (channel 0-1, unit 0-1)")
        geometries = geometries or {}
        self.translations = dict(translations or {})
        self.disks = disks
        # Hear backend I/O errors (channel, unit, "read"/"write", the OSError or None): the
        # QMP side turns them into BLOCK_IO_ERROR events. The guest sees the error status.
        self.io_error_listeners: list[Callable[[int, int, str, OSError | None], None]] = []
        self.add_bar(Bar(4, 16, True, self._bar_read, self._bar_write, "bmdma"))
        self.channels = [IdeChannel(self, 0), IdeChannel(self, 1)]
        for ch in self.channels:
            drives = []
            for unit in (0, 1):
                backend = disks.get((ch.index, unit))
                # QEMU numbers serials per IDE position in creation order: QM00001..QM00004.
                serial = f"QM{ch.index * 2 + unit + 1:05d}"
                if isinstance(backend, Cdrom):
                    drives.append(AtapiDrive(ch, unit, backend.medium, serial))
                else:
                    drives.append(AtaDrive(ch, unit, backend, serial,
                                           geometries.get((ch.index, unit))))
            ch.set_drives(drives)
        self._status_reset()

    def _status_reset(self) -> None:
        self.config[STATUS : STATUS + 2] = STATUS_RESET.to_bytes(2, "little")

    # ---- wiring ---------------------------------------------------------------------------
    def attach(self, ctx: DeviceContext) -> None:
        super().attach(ctx)
        for ch, (_, _, irq) in zip(self.channels, LEGACY_PORTS, strict=True):
            ch.line = ctx.irqs.isa(irq, f"ide{ch.index}")

    def pio_ranges(self) -> list[Range]:
        out = []
        for ch, (cmd, ctl, _) in zip(self.channels, LEGACY_PORTS, strict=True):
            r = Range(cmd, 8, ch.cmd_read, ch.cmd_write, f"ide{ch.index}", self,
                      frozenset({1, 2, 4}))
            # Whole-string hooks for `rep insw/outsw` arriving as one data_is_ptr ioreq: a
            # dispatcher that knows them moves a sector with one slice instead of 256 calls
            # (the core patch proposed with this device); without it they are unused.
            r.read_rep = ch.cmd_read_rep  # type: ignore[attr-defined]
            r.write_rep = ch.cmd_write_rep  # type: ignore[attr-defined]
            out.append(r)
            out.append(Range(ctl, 1, ch.ctl_read, ch.ctl_write, f"ide{ch.index}-ctl", self,
                             frozenset({1})))
        return out

    def reset(self) -> None:
        super().reset()
        self._status_reset()
        self.config[IDETIM : SIDETIM + 1] = bytes(SIDETIM + 1 - IDETIM)
        for ch in self.channels:
            for d in ch.drives:
                d.power_on()
            ch.reset()

    def master_abort(self) -> None:
        """A DMA hit something that is not RAM: PCI status 'received master abort'."""
        self.config[STATUS + 1] |= STATUS_REC_MASTER_ABORT >> 8

    # ---- BAR4 -----------------------------------------------------------------------------
    def _bar_read(self, off: int, size: int) -> int:
        if (off & 3) + size > 4:  # straddles command/status and pointer: byte by byte
            return sum(self._bar_read(off + i, 1) << (8 * i) for i in range(size) if off + i < 16)
        return self.channels[off >> 3].bm_read(off & 7, size)

    def _bar_write(self, off: int, size: int, value: int) -> None:
        if (off & 3) + size > 4:
            for i in range(size):
                if off + i < 16:
                    self._bar_write(off + i, 1, (value >> (8 * i)) & 0xFF)
            return
        self.channels[off >> 3].bm_write(off & 7, size, value)

    # ---- snapshot -------------------------------------------------------------------------
    @property
    def ide_state(self) -> dict[str, Any]:
        # In-flight I/O is never state: a request still running is settled first (its
        # completion runs now), so the snapshot shows the command finished.
        for ch in self.channels:
            for d in ch.drives:
                d.settle_io()
        return {"channels": [ch.state() for ch in self.channels]}

    @ide_state.setter
    def ide_state(self, st: dict[str, Any]) -> None:
        chans = st.get("channels") if isinstance(st, dict) else None
        if not isinstance(chans, list) or len(chans) != 2:
            raise SnapshotError(f"{self.name}: ide_state needs two channels")
        for ch, cs in zip(self.channels, chans, strict=True):
            if not isinstance(cs, dict):
                raise SnapshotError(f"{self.name}: channel state must be a dict")
            ch.load_state(cs, lambda msg: SnapshotError(f"{self.name}: {msg}"))

    def drive(self, channel: int, unit: int) -> AtaDrive:
        return self.channels[channel].drives[unit]

    def cmos_hd_geometry(self) -> list[tuple[int, int, int, int, int]]:
        """(drive 0-3, cylinders, heads, sectors, CMOS translation code) of every hard disk,
        for Rtc.set_hd_geometry: what QEMU's pc_cmos_init_late writes from ide_get_geometry
        (the physical geometry, never a CD-ROM) and ide_get_bios_chs_trans."""
        out = []
        for ch in self.channels:
            for d in ch.drives:
                if d.present and not d.is_cd:
                    g = d.geometry
                    drive = ch.index * 2 + d.unit
                    out.append((drive, g.cylinders, g.heads, g.sectors,
                                self.translations.get((ch.index, d.unit), 0)))
        return out


def read_mbr(backend: DiskBackend) -> bytes | None:
    """Sector 0, for the geometry guess; None if it cannot be read."""
    if backend.size < 512:
        return None
    buf = bytearray(512)
    try:
        backend.read_into(0, [buf])
    except OSError:
        return None
    return bytes(buf)


def build_ide(machine, disks: dict[tuple[int, int], Drive]) -> PiixIde:
    """Add the PIIX3 IDE function at 00:01.1 with `disks` keyed by (channel, unit): a
    DiskBackend for a hard disk, a `Cdrom` for an ATAPI CD-ROM drive (empty or not).

    The CHS geometry and BIOS translation of each disk are guessed here, from its size and
    partition table, as QEMU does when the drive is created; the device itself then never
    reads on its own. The backends (CD media included) are registered in `machine.backends`,
    so the daemon flushes and closes them at exit; do not register them again. QEMU's `pc`
    always has this function, disks or not.
    """
    geometries, translations = {}, {}
    for key, backend in disks.items():
        if isinstance(backend, Cdrom):
            continue
        nb = backend.size // ata.SECTOR_SIZE
        mbr = read_mbr(backend)
        geometries[key] = guess_geometry(nb, mbr)
        translations[key] = guess_translation(nb, mbr)
    dev = PiixIde(disks, geometries, translations)
    machine.add(dev, slot=PCI_SLOT, fn=PCI_FN)
    backends = getattr(machine, "backends", None)
    attach = getattr(machine, "attach_completions", None)  # Machine.attach_completions
    for key in sorted(disks):
        b = disks[key]
        b = b.medium if isinstance(b, Cdrom) else b
        if b is None:
            continue
        if backends is not None:
            backends.append(b)
        if attach is not None:
            attach(b)
    return dev


def open_disks(specs, shared: bool = False) -> dict[tuple[int, int], Drive]:
    """Open what parsed `--disk` specs (devmodel.ide.diskspec.DiskSpec) name, through
    `devmodel.backends.qemu_nbd.open_image`: raw images (and ISO media) as ThreadedRawDisk in
    the spec's cache mode, every other format (qcow2, vmdk, ...) through a private qemu-nbd.
    CD-ROM media are read-only; an empty CD-ROM target is an empty drive. A ValueError says
    which disk and what is wrong. `shared`: every image read-only and, for qemu-nbd, without
    its lock (a scratch machine built next to the live one that holds it, PcOptions)."""
    from devmodel.backends.qemu_nbd import QemuNbdError, open_image

    out: dict[tuple[int, int], Drive] = {}
    vdevs: dict[tuple[int, int], str] = {}

    def close_all() -> None:
        for b in out.values():
            b = b.medium if isinstance(b, Cdrom) else b
            if b is not None:
                b.close()

    try:
        for spec in specs:
            if spec.position in out:
                raise ValueError(f"two disks on one vdev: {vdevs[spec.position]} and {spec.vdev} "
                                 f"are both IDE channel {spec.position[0]} unit {spec.position[1]}"
                                 f" (two disks at {spec.vdev})")
            if spec.format != "raw" and spec.format not in NBD_FORMATS:
                raise ValueError(f"{spec.vdev}: format {spec.format!r} is not supported")
            vdevs[spec.position] = spec.vdev
            if spec.cdrom and not spec.target:
                out[spec.position] = Cdrom(None)
                continue
            what = "CD-ROM image" if spec.cdrom else "disk image"
            try:
                backend = open_image(os.fspath(spec.target), spec.format,
                                     readonly=spec.readonly or spec.cdrom or shared,
                                     cache=getattr(spec, "cache", "writeback"),
                                     force_share=shared)
            except OSError as e:
                why = os.strerror(e.errno) if e.errno == errno.ENOENT else (e.strerror or e)
                raise ValueError(f"{spec.vdev}: cannot open {what} {spec.target}: {why}") from None
            except QemuNbdError as e:
                raise ValueError(f"{spec.vdev}: cannot open {what} {spec.target} as "
                                 f"{spec.format}: {e}") from None
            if spec.cdrom:
                out[spec.position] = Cdrom(backend)
                if backend.size < 2048:
                    raise ValueError(f"{spec.vdev}: {spec.target} is smaller than one 2048-byte "
                                     "CD block; not an ISO image")
            else:
                out[spec.position] = backend
                if backend.size < ata.SECTOR_SIZE:
                    raise ValueError(f"{spec.vdev}: {spec.target} is smaller than one sector")
    except BaseException:
        close_all()
        raise
    return out
