"""NICs: the Intel 82540EM (`e1000`).

`build_e1000(machine, slot, mac, backend)` adds one to a machine and wires it to a network
backend of devmodel/backends/net.py; `nicspec.parse_nicspec` reads xl's vif syntax.
"""

from __future__ import annotations

import os
from typing import Any

from .e1000 import E1000
from .netpkt import parse_mac

# Debian's ipxe-qemu: the combined legacy + EFI image QEMU loads (romfile "efi-e1000.rom"),
# then the legacy-only one.
E1000_ROMS = ("/usr/lib/ipxe/qemu/efi-e1000.rom", "/usr/lib/ipxe/qemu/pxe-e1000.rom")
MAX_ROM = 1 << 20

__all__ = ["E1000", "build_e1000", "E1000_ROMS", "load_rom"]


def load_rom(path: str | None = "") -> bytes | None:
    """The option ROM: `path`, or the first of E1000_ROMS that exists ("" = default,
    None = no ROM). A named file that cannot be read is an error."""
    if path is None:
        return None
    candidates = [path] if path else [p for p in E1000_ROMS if os.path.exists(p)]
    for p in candidates:
        try:
            with open(p, "rb") as f:
                data = f.read(MAX_ROM + 1)
        except OSError as e:
            raise ValueError(f"cannot read e1000 option ROM {p}: {e.strerror}") from None
        if len(data) > MAX_ROM or len(data) < 512 or data[:2] != b"\x55\xaa":
            raise ValueError(f"{p} is not a PCI option ROM")
        return data
    return None


def build_e1000(machine, slot: int, mac: bytes | str, backend: Any, *, rom: str | None = "",
                name: str | None = None) -> E1000:
    """Add an 82540EM at 00:slot.0 wired to `backend` (devmodel.backends.net.NetBackend).

    The backend is registered in `machine.backends` (closed at exit); the frame pump that
    needs the daemon's event loop is registered in `machine.io_hooks`. Frames the guest sends
    before the pump runs go straight to the backend, which queues them (bounded)."""
    from devmodel.backends.memfd import share_rom
    from devmodel.backends.net import NetPump

    if isinstance(mac, str):
        mac = parse_mac(mac)
    nic = E1000(mac, load_rom(rom), name=name or f"e1000.{slot}")
    # Its QMP id (set_link, device_del, DEVICE_DELETED), which query-pci must show as the
    # qdev_id, as QEMU shows the id= of `-device e1000,id=nicN` (libxl's NICs).
    nic.qdev_id = nic.name
    # The ROM BAR as memory the hypervisor maps, as QEMU's ROM RAM block is on Xen.
    share_rom(machine, nic, f"devmodel-rom-{nic.name}-{os.getpid()}")
    machine.add(nic, slot=slot)
    if backend is not None:
        nic.transmit = backend.send
        nic.transmit_batch = getattr(backend, "send_many", None)
        # Owned by the NIC: a Xen unplug of the NIC releases the tap with it.
        machine.backends.append(machine.own(nic, backend))
        machine.io_hooks.append(
            lambda loop, flush, b=backend, n=nic: machine.own(n, NetPump(loop, b, n, on_effects=flush)))
    return nic
