"""Memory the daemon owns and shares with the hypervisor (firmware images, later VRAM):
a sealed-size memfd holding the bytes, whose fd travels in a daemon->hypervisor MEM_ADD."""

from __future__ import annotations

import mmap
import os


class SharedMemory:
    def __init__(self, name: str, size: int, data: bytes = b"") -> None:
        if size <= 0 or size % 4096:
            raise ValueError(f"{name}: size {size:#x} must be a positive multiple of 4 KiB")
        if len(data) > size:
            raise ValueError(f"{name}: {len(data)} bytes do not fit {size:#x}")
        self.name = name
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.mm[: len(data)] = data

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


def share_rom(machine, dev, name: str) -> bool:
    """Put `dev`'s expansion ROM in a memfd the hypervisor maps at its ROM BAR
    (PciDevice.share_rom), registered in machine.backends to be closed with it (or with the
    device, machine.own). False (the ROM BAR stays a trapped range) when there is no ROM or
    it is smaller than a page."""
    if not dev.rom or dev.rom_size % 4096:
        return False
    mem = SharedMemory(name, dev.rom_size, dev.rom)
    # Owned by the device: a Xen unplug of it (a NIC) closes the memfd too; the hypervisor's
    # mapping goes with the MEM_DEL the unmapping sends.
    machine.backends.append(machine.own(dev, mem))
    dev.share_rom(mem.fd)
    return True


def load_firmware(path: str, max_size: int = 16 << 20) -> bytes:
    """A firmware image from disk, checked for a size a PC's flash can hold."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_size + 1)
    except OSError as e:
        raise ValueError(f"cannot read firmware {path}: {e.strerror}") from None
    if not data or len(data) > max_size or len(data) % 65536:
        raise ValueError(f"firmware {path}: {len(data)} bytes is not a multiple of 64 KiB "
                         f"up to {max_size >> 20} MiB")
    return data
