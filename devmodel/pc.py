"""Assembles the emulated PC from the command-line options: the one place that knows which
devices a domain gets and where they sit (QEMU's `pc`/`xenfv` layout, xen-protocol.md 4.4)."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field

from devmodel.core.chipset import build_chipset
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine

DEFAULT_BIOS = "/usr/share/seabios/bios-256k.bin"


@dataclass
class PcOptions:
    virtual_clock: bool = False
    strict: bool = False
    memory: int = 128 << 20  # guest RAM in bytes, as the toolstack's -m
    vcpus: int = 1
    name: str = ""
    uuid: bytes = field(default_factory=lambda: uuidlib.UUID(int=0).bytes)
    # The system BIOS to share with the hypervisor (QEMU-style platform, as with hvsim).
    # None on Xen, where hvmloader loads the firmware into guest RAM itself.
    bios: str | None = None


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


def build_pc(opts: PcOptions) -> Machine:
    machine = Machine(clock=Clock(virtual=opts.virtual_clock), strict=opts.strict)
    firmware = None
    if opts.bios:
        from devmodel.backends.memfd import SharedMemory, load_firmware
        from devmodel.bios.firmware import ISA_BIOS_SIZE, SHADOW_SIZE, SystemFirmware

        image = load_firmware(opts.bios)
        bios_mem = SharedMemory("devmodel-bios", len(image), image)
        shadow = SharedMemory("devmodel-shadow", SHADOW_SIZE)
        shadow.mm[SHADOW_SIZE - ISA_BIOS_SIZE :] = image[-ISA_BIOS_SIZE:]
        firmware = SystemFirmware(image, bios_mem.fd, shadow.fd)
        machine.backends.extend([bios_mem, shadow])
    build_chipset(machine, on_pam=firmware.on_pam if firmware else None)
    if firmware is not None:
        machine.add(firmware)
    return machine
