"""Assembles the emulated PC from the command-line options: the one place that knows which
devices a domain gets and where they sit (QEMU's `pc`/`xenfv` layout, xen-protocol.md 4.4).

Opening backends (files, ptys, sockets, firmware images) happens here, at set-up, never in a
device; what needs the event loop is left as `machine.io_hooks` for the daemon.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from devmodel.core.bus import OverlapError, Range
from devmodel.core.chipset import build_chipset
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.wire.constants import MAX_VCPUS

DEFAULT_BIOS = "/usr/share/seabios/bios-256k.bin"
LINUXBOOT_ROM = "/usr/share/qemu/linuxboot_dma.bin"
# HVM_BELOW_4G_RAM_END: guest RAM below 4 GiB ends here, the rest goes above 4 GiB (the
# client's GuestRam and the hypervisor simulator use the same split).
BELOW_4G_RAM_END = 0xF0000000
MAX_SERIAL = 4


@dataclass
class PcOptions:
    virtual_clock: bool = False
    strict: bool = False
    memory: int = 128 << 20  # guest RAM in bytes, as the toolstack's -m
    vcpus: int = 1
    name: str = ""
    uuid: bytes = bytes(16)  # the nil UUID, as QEMU without -uuid
    # The system BIOS to share with the hypervisor (QEMU-style platform, as with hvsim).
    # None on Xen, where hvmloader loads the firmware into guest RAM itself.
    bios: str | None = None
    serial: list[str] = field(default_factory=lambda: ["null"])  # COM1.. backends; [] = none
    debugcon: str | None = None  # where ports 0x402/0xE9 output goes besides the log
    boot_order: str = "cd"  # QEMU -boot order: a floppy, c disk, d CD-ROM, n network
    boot_fail_wait: float | None = None  # seconds before SeaBIOS retries; None: never
    boot_menu: bool = False
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    fw_cfg_files: list[tuple[str, str]] = field(default_factory=list)  # (opt/NAME, host path)
    rtc_base: int | None = None  # seconds since the epoch (UTC) at start; default: now
    acpi: bool = True
    disks: list[str] = field(default_factory=list)  # xl DISKSPECs for the IDE function
    xen_platform: bool = True  # the Xen platform device at 00:02.0 (xl xen_platform_pci)
    vga: str = "std"  # std (PCI VGA 1234:1111 with Bochs VBE) or none
    vga_mem: int = 16  # MiB of VRAM
    nics: list[str] = field(default_factory=list)  # xl vif specs (e1000)
    usb: list[str] = field(default_factory=list)  # xl usbdevice= list: tablet, keyboard, disk:...
    vnc: str | None = None  # HOST:DISPLAY or unix:PATH [,password][,to=N] (devmodel.backends.vnc)
    vnc_password_file: str | None = None  # first line: the VNC password (turns on VNC auth)
    unplug_policy: str = "honour"  # honour | ignore the PV drivers' unplug requests
    xen_blacklist: list[str] = field(default_factory=list)  # PRODUCT[/BUILD] refused unplug
    # A scratch copy of a machine (to check a state file against, devmodel.statefile): its
    # disks read-only and, through qemu-nbd, without the image lock the live machine holds.
    shared_disks: bool = False


def parse_size(text: str) -> int:
    """`128M`, `2G`, `65536K` or bytes; a clear ValueError otherwise."""
    t = text.strip().upper()
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    try:
        v = int(t, 0) * mult
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 128M, 2G)") from None
    if v <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return v


def _read(path: str, what: str, limit: int = 256 << 20) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > limit:
        raise ValueError(f"{what} {path} is larger than {limit >> 20} MiB")
    return data


class TeeSink:
    """Debug-console bytes to the bounded in-memory buffer (and the log) and, optionally, to a
    character backend (`--debugcon`). Firmware logs one byte per port write; the backend gets
    whole lines (or 4 KiB), not a system call per byte."""

    LINE_MAX = 4096

    def __init__(self, buffer, backend=None) -> None:
        self.buffer = buffer
        self.backend = backend
        self._pending = bytearray()

    def write(self, channel: str, data: bytes) -> None:
        self.buffer.write(channel, data)
        if self.backend is not None and channel != "post":
            self._pending += data
            if b"\n" in data or len(self._pending) >= self.LINE_MAX:
                self.flush()

    def flush(self) -> None:
        if self._pending and self.backend is not None:
            self.backend.write(bytes(self._pending))
            self._pending.clear()

    def close(self) -> None:
        self.flush()


def _check_vcpus(opts: PcOptions) -> None:
    if not 1 <= opts.vcpus <= MAX_VCPUS:
        raise ValueError(f"vcpus {opts.vcpus} must be 1-{MAX_VCPUS}")


def build_pc(opts: PcOptions) -> Machine:
    _check_vcpus(opts)
    if len(opts.serial) > MAX_SERIAL:
        raise ValueError(f"at most {MAX_SERIAL} serial ports (COM1-COM4)")
    machine = Machine(clock=Clock(virtual=opts.virtual_clock), strict=opts.strict)
    try:
        _populate(machine, opts)
    except BaseException:
        machine.close_backends()
        raise
    return machine


def _populate(machine: Machine, opts: PcOptions) -> None:
    from devmodel.backends.chardev import SerialPump, open_chardev
    from devmodel.bios.acpi_pm import PiixPm
    from devmodel.bios.debugport import BufferSink, DebugPorts
    from devmodel.bios.fw_cfg import FwCfgConfig, build_fw_cfg
    from devmodel.bios.i8042 import I8042
    from devmodel.bios.rtc import CmosConfig, Rtc
    from devmodel.bios.uart import com
    from devmodel.ide import build_ide, open_disks
    from devmodel.ide.diskspec import parse_diskspec

    firmware = None
    if opts.bios:
        from devmodel.backends.memfd import SharedMemory, load_firmware
        from devmodel.bios.firmware import ISA_BIOS_SIZE, SHADOW_SIZE, SystemFirmware

        image = load_firmware(opts.bios)
        bios_mem = SharedMemory("devmodel-bios", len(image), image)
        machine.backends.append(bios_mem)
        shadow = SharedMemory("devmodel-shadow", SHADOW_SIZE)
        machine.backends.append(shadow)
        shadow.mm[SHADOW_SIZE - ISA_BIOS_SIZE :] = image[-ISA_BIOS_SIZE:]
        # The shadow area is RAM to bus masters too: SeaBIOS keeps buffers, UHCI queues and
        # transfer descriptors there (0xE8xxx), so device DMA must reach it.
        from devmodel.bios.firmware import REGION_SHADOW, SHADOW_BASE
        from devmodel.wire.constants import MEM_RAM

        machine.memory.add_fd(REGION_SHADOW, SHADOW_BASE, SHADOW_SIZE, os.dup(shadow.fd), 0, MEM_RAM)
        firmware = SystemFirmware(image, bios_mem.fd, shadow.fd)
    build_chipset(machine, on_pam=firmware.on_pam if firmware else None)
    if firmware is not None:
        machine.add(firmware)

    below_4g = min(opts.memory, BELOW_4G_RAM_END)
    base = opts.rtc_base if opts.rtc_base is not None else int(time.time())
    rtc = machine.add(Rtc(base, CmosConfig(ram_size=opts.memory, boot_order=opts.boot_order,
                                     nr_cpus=opts.vcpus, below_4g=below_4g)))

    debug_backend = open_chardev(opts.debugcon) if opts.debugcon else None
    if debug_backend is not None:
        machine.backends.append(debug_backend)
    machine.debug_sink = BufferSink()
    tee = TeeSink(machine.debug_sink, debug_backend)
    machine.backends.append(tee)  # after its backend: closed (flushed) first
    machine.add(DebugPorts(tee))

    machine.add(I8042())
    for n, spec in enumerate(opts.serial, start=1):
        if spec == "none":
            continue
        backend = open_chardev(spec)
        machine.backends.append(backend)
        uart = machine.add(com(n, backend))
        machine.io_hooks.append(
            lambda loop, flush, b=backend, u=uart: SerialPump(loop, b, u, on_effects=flush))

    # QEMU's pc machine always has the IDE function, with or without disks.
    ide = build_ide(machine, open_disks([parse_diskspec(d) for d in opts.disks],
                                        shared=opts.shared_disks))
    # QEMU pc_cmos_init_late: geometry and translation of the IDE hard disks in the CMOS.
    for drive, cyls, heads, secs, trans in ide.cmos_hd_geometry():
        rtc.set_hd_geometry(drive, cyls, heads, secs, trans)

    if opts.acpi:
        pm = machine.add(PiixPm(), slot=1, fn=3)
        _wire_pm_block(machine, pm)

    if opts.xen_platform:
        from devmodel.xen import build_xen_platform, parse_blacklist_entry

        if opts.unplug_policy not in ("honour", "ignore"):
            raise ValueError(f"unplug policy {opts.unplug_policy!r}: expected honour or ignore")
        build_xen_platform(machine, policy=opts.unplug_policy,
                           blacklist=[parse_blacklist_entry(e) for e in opts.xen_blacklist])

    # VGA after the platform device: 00:02.0 alone, 00:03.0 in the Xen layout.
    vga_dev = None
    if opts.vga == "std":
        from devmodel.vga import build_vga

        vga_dev = build_vga(machine, vram_mb=opts.vga_mem)
    elif opts.vga != "none":
        raise ValueError(f"vga {opts.vga!r}: expected std or none")

    if opts.usb:  # UHCI at 00:01.2 only when asked: SeaBIOS polls it hard (slow boots)
        from devmodel.usb import build_usb

        build_usb(machine, opts.usb)

    if opts.vnc:  # listening now (a taken port fails start-up); served once the loop runs
        from devmodel.backends.vnc import build_vnc

        build_vnc(machine, opts.vnc, opts.vnc_password_file, name=opts.name, vga=vga_dev)
    elif opts.vnc_password_file:
        raise ValueError("--vnc-password-file needs --vnc")

    # NICs in the next free slots, as QEMU places -device e1000 without an address.
    nic_ids: set[str] = set()
    for spec_text in opts.nics:
        from devmodel.nic import build_e1000
        from devmodel.nic.nicspec import parse_nicspec

        spec = parse_nicspec(spec_text)
        if spec.qdev_id is not None:
            if spec.qdev_id in nic_ids:
                raise ValueError(f"nic devid={spec.devid} given to two NICs")
            nic_ids.add(spec.qdev_id)
        slot = _free_slot(machine)
        backend = spec.open_backend()
        try:
            build_e1000(machine, slot, spec.mac, backend, rom=spec.rom, name=spec.qdev_id)
        except BaseException:
            backend.close()
            raise

    fw_opts = dict(ram_size=opts.memory, nr_cpus=opts.vcpus, uuid=opts.uuid, name=opts.name,
                   boot_menu=opts.boot_menu, boot_fail_wait_s=opts.boot_fail_wait,
                   ram_below_4g=below_4g,
                   opt_files=[(n, _read(p, "fw_cfg file")) for n, p in opts.fw_cfg_files])
    if opts.kernel:
        fw_opts["kernel"] = _read(opts.kernel, "kernel")
        fw_opts["cmdline"] = opts.append
        if opts.initrd:
            fw_opts["initrd"] = _read(opts.initrd, "initrd")
        try:
            fw_opts["linuxboot_rom"] = _read(LINUXBOOT_ROM, "option ROM", 1 << 20)
        except ValueError:
            pass  # without the ROM the kernel entries are still served (see README)
    elif opts.initrd or opts.append:
        raise ValueError("--initrd and --append need --kernel")
    machine.add(build_fw_cfg(FwCfgConfig(**fw_opts)))


def _free_slot(machine: Machine) -> int:
    for slot in range(2, 32):
        if not any(devfn >> 3 == slot for devfn in machine.pci.devices):
            return slot
    raise ValueError("no free PCI slot on bus 0")


def _wire_pm_block(machine: Machine, pm) -> None:
    """The PIIX4 PM I/O block moves where the guest programs config 0x40 (enabled by 0x80):
    keep the port space (and, through its listener, the hypervisor) in step."""
    mapped: list[Range] = []

    def remap() -> None:
        for r in mapped:
            machine.pio.remove(r)
        mapped.clear()
        for r in pm.pm_io_ranges():
            try:
                machine.pio.add(r)
            except OverlapError as e:
                pm.guest_error(f"PM block not mapped: {e}")
                continue
            mapped.append(r)

    pm.on_remap = remap


def build_machine_none(opts: PcOptions) -> Machine:
    """`--machine none`: the device model of a PVH or PV domain (docs/machine-none.md).

    Such a domain has no emulated devices and no PCI config space routed to us: the machine
    claims no port, MMIO range or PCI function, so Xen forwards no access. What remains is the
    machine itself: the ioreq-server lifecycle, TIMEOFFSET accounting (the RTC offset the
    toolstack persists), INVALIDATE, QMP control (stop/cont/quit, save/restore of an empty
    device state). Device options (disks, serial, BIOS, --xen-platform) do not apply."""
    _check_vcpus(opts)
    return Machine(clock=Clock(virtual=opts.virtual_clock), strict=opts.strict)
