"""Direct Linux kernel boot through fw_cfg, split as QEMU's x86_load_linux does
(hw/i386/x86-common.c; the boot protocol is Documentation/arch/x86/boot.rst).

The bzImage's real-mode setup (setup_sects + 1 sectors) and its protected-mode kernel are
served separately, with the header patched the way QEMU patches it: type_of_loader 0xB0,
cmd_line_ptr (or the pre-2.02 0xA33F magic), heap_end_ptr with CAN_USE_HEAP, ramdisk
address and size, and vga=. The option ROM `linuxboot_dma.bin` (Debian: qemu-system-data,
/usr/share/qemu/linuxboot_dma.bin) reads these entries and jumps to the kernel; it is not part
of this module. Multiboot and PVH (ELF) kernels are not handled: a file without the "HdrS"
signature is treated as QEMU treats a non-multiboot, non-ELF image (protocol 0, "zImage").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HDRS_MAGIC = 0x53726448  # "HdrS" at 0x202
LOADER_TYPE_QEMU = 0xB0  # high nybble B is QEMU's, revision 0
CAN_USE_HEAP = 0x80
LOADED_HIGH = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
HEADER_BYTES = 8192  # QEMU reads and patches the first 8 KiB
# pc machine: 128 KiB of BIOS ACPI tables + 32 KiB of other BIOS data kept free below the
# top of low RAM (hw/i386/pc.c pc_machine_class_init, acpi_data_size).
ACPI_DATA_SIZE = 0x20000 + 0x8000
# Bounds on host-supplied images (configuration errors, not guest input).
MAX_KERNEL_BYTES = 256 << 20
MAX_INITRD_BYTES = 1 << 30
MAX_CMDLINE_BYTES = 64 << 10
LINUXBOOT_ROM_NAME = "linuxboot_dma.bin"
LINUXBOOT_BOOT_PATH = "/rom@genroms/" + LINUXBOOT_ROM_NAME


class LinuxBootError(ValueError):
    pass


@dataclass(frozen=True)
class LinuxBoot:
    protocol: int
    setup_addr: int
    setup: bytes  # patched header included
    kernel_addr: int
    kernel: memoryview  # the image past the setup sectors (unpatched, shares the input)
    cmdline_addr: int
    cmdline: bytes  # NUL-terminated
    initrd_addr: int | None
    initrd: bytes | None
    image: bytes  # the whole file, unpatched ("etc/boot/kernel")


def _video_mode(cmdline: str) -> int | None:
    i = cmdline.find("vga=")
    if i < 0:
        return None
    arg = cmdline[i + 4:]
    for word, mode in (("normal", 0xFFFF), ("ext", 0xFFFE), ("ask", 0xFFFD)):
        if arg.startswith(word):
            return mode
    token = arg.split(" ", 1)[0]
    try:
        mode = int(token, 0)
    except ValueError:
        raise LinuxBootError(f"invalid 'vga=' kernel parameter {token!r}") from None
    if not 0 <= mode <= 0xFFFF:
        raise LinuxBootError(f"invalid 'vga=' kernel parameter {token!r}")
    return mode


def load_linux(kernel: bytes, cmdline: str = "", initrd: bytes | None = None, *,
               below_4g: int, acpi_data_size: int = ACPI_DATA_SIZE) -> LinuxBoot:
    if not kernel:
        raise LinuxBootError("empty kernel image")
    if len(kernel) > MAX_KERNEL_BYTES:
        raise LinuxBootError(f"kernel of {len(kernel)} bytes, at most {MAX_KERNEL_BYTES}")
    if initrd is not None and len(initrd) > MAX_INITRD_BYTES:
        raise LinuxBootError(f"initrd of {len(initrd)} bytes, at most {MAX_INITRD_BYTES}")
    cmd = cmdline.encode()
    if b"\0" in cmd or len(cmd) >= MAX_CMDLINE_BYTES:
        raise LinuxBootError("kernel command line too long or contains NUL")
    cmdline_size = (len(cmd) + 16) & ~15  # QEMU: aligned to 16 "as a paranoia measure"

    header = bytearray(kernel[:HEADER_BYTES].ljust(HEADER_BYTES, b"\0"))
    protocol = 0
    if len(kernel) >= 0x208 and struct.unpack_from("<I", header, 0x202)[0] == HDRS_MAGIC:
        protocol = struct.unpack_from("<H", header, 0x206)[0]

    if protocol < 0x200 or not header[0x211] & LOADED_HIGH:
        real_addr, cmdline_addr, prot_addr = 0x90000, 0x9A000 - cmdline_size, 0x10000
    elif protocol < 0x202:
        real_addr, cmdline_addr, prot_addr = 0x90000, 0x9A000 - cmdline_size, 0x100000
    else:
        real_addr, cmdline_addr, prot_addr = 0x10000, 0x20000, 0x100000

    if protocol >= 0x20C and struct.unpack_from("<H", header, 0x236)[0] & XLF_CAN_BE_LOADED_ABOVE_4G:
        initrd_max = 0xFFFFFFFF
    elif protocol >= 0x203:
        initrd_max = struct.unpack_from("<I", header, 0x22C)[0]
    else:
        initrd_max = 0x37FFFFFF
    if initrd_max >= below_4g - acpi_data_size:
        initrd_max = below_4g - acpi_data_size - 1

    if protocol >= 0x202:
        struct.pack_into("<I", header, 0x228, cmdline_addr)
    else:
        struct.pack_into("<HH", header, 0x20, 0xA33F, (cmdline_addr - real_addr) & 0xFFFF)

    mode = _video_mode(cmdline)
    if mode is not None:
        struct.pack_into("<H", header, 0x1FA, mode)
    if protocol >= 0x200:
        header[0x210] = LOADER_TYPE_QEMU
    if protocol >= 0x201:
        header[0x211] |= CAN_USE_HEAP
        struct.pack_into("<H", header, 0x224, (cmdline_addr - real_addr - 0x200) & 0xFFFF)

    initrd_addr = None
    if initrd is not None:
        if protocol < 0x200:
            raise LinuxBootError("linux kernel too old to load a ram disk")
        if len(initrd) >= initrd_max:
            raise LinuxBootError(f"initrd is too large (max {initrd_max}, need {len(initrd)})")
        initrd_addr = (initrd_max - len(initrd)) & ~4095
        struct.pack_into("<II", header, 0x218, initrd_addr, len(initrd))

    setup_sects = header[0x1F1] or 4
    setup_size = (setup_sects + 1) * 512
    if setup_size > len(kernel):
        raise LinuxBootError("invalid kernel header (setup larger than the image)")
    setup = bytearray(kernel[:setup_size])
    if protocol > 0:
        n = min(HEADER_BYTES, setup_size)
        setup[:n] = header[:n]
    image = bytes(kernel)
    return LinuxBoot(
        protocol=protocol, setup_addr=real_addr, setup=bytes(setup), kernel_addr=prot_addr,
        kernel=memoryview(image)[setup_size:], cmdline_addr=cmdline_addr, cmdline=cmd + b"\0",
        initrd_addr=initrd_addr, initrd=initrd, image=image,
    )
