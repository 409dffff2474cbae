"""The interface between the simulator and a device model.

``IoreqPort`` is what the simulator needs from whoever answers its ioreqs: the lead's
``devmodel.client`` over the socket, or an in-process fake in tests. Calls mirror the ioreq
kinds of xen-protocol.md 1.4; IRQ, shutdown and memory DMOPs and the device model's own
MEM_ADDs and MEM_DELs (firmware, VRAM: docs/protocol.md 4.7) come back as callbacks that the
simulator installs on the port (they may fire from inside any call, because a device model
raises an IRQ before it answers the ioreq that caused it, 7.4). Install them before the device
model's handshake, so that its MEM_ADDs, sent right after HELLO, find them. ``on_mem_del`` is
set on every port but is not part of the Protocol: a port that never unmaps need not have it.

REP STOS / REP MOVS into MMIO as one request is optional too: a port with
``mmio_string(gpa, size, count, data, ptr, df)`` (``devmodel.client.Hypervisor``) gets them as
one COPY write with a count (``data`` the fill value, or with ``ptr`` the GPA of the RAM
source); ports without it get every element as ``mmio_write`` (or a posted write).

Posted writes (posted.py) are optional: a port whose ``buffered`` attribute is true (its device
model has a buffered ring) receives them through ``bufioreq`` and may hold messages back until
``flush``, ``poll`` or its next synchronous call. Ports without these members get every write
synchronously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class IoreqPort(Protocol):
    on_isa_irq: Callable[[int, int], None]  # (irq, level)
    on_pci_intx: Callable[[int, int, int], None]  # (slot, pin 0-3, level)
    on_link_route: Callable[[int, int], None]  # (link 0-3, isa irq or 0)
    on_shutdown: Callable[[int], None]  # remote_shutdown reason (0 poweroff, 1 reboot, ...)
    on_mem_add: Callable[[int, int, int, int, int], None]  # region id, gpa, size, flags, fd
    on_mem_type: Callable[[int, int, int], None]  # first_pfn, nr pages, HVMMEM type

    def pio_read(self, port: int, size: int) -> int: ...
    def pio_write(self, port: int, size: int, value: int) -> None: ...

    def pio_string(
        self, port: int, size: int, count: int, dir_read: bool, gpa: int, df: bool
    ) -> None:
        """REP INS (dir_read) / REP OUTS as one data_is_ptr ioreq; the buffer is guest RAM at
        ``gpa`` (element i at gpa + i*size, or gpa - i*size with df) and never crosses a page."""
        ...

    def mmio_read(self, gpa: int, size: int) -> int: ...
    def mmio_write(self, gpa: int, size: int, value: int) -> None: ...
    def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int: ...
    def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None: ...
    def claims_port(self, port: int, size: int) -> bool: ...
    def claims_mmio(self, gpa: int, size: int) -> bool: ...
    def claims_pci(self, sbdf: int) -> bool: ...
    def poll(self) -> None: ...

    def clock(self, now_ns: int, sync: bool = False) -> None:
        """The virtual time moved to ``now_ns`` (a CLOCK message). With ``sync``, return only
        once the device model has processed it, so the IRQs of the timers that fell due have
        come back through the callbacks (the simulator asks for that while halted)."""
        ...


class BufferedPort(IoreqPort, Protocol):
    """An IoreqPort that also takes posted writes (BUFIOREQ)."""

    buffered: bool  # the device model has a buffered ring (BUFIOREQ negotiated)

    def bufioreq(self, writes: list[tuple[int, int, int, int]]) -> None:
        """Posted writes (type, addr, size, value) as one BUFIOREQ; may be held back until the
        next synchronous call, ``flush`` or ``poll``, but never reordered with them."""
        ...

    def flush(self) -> None:
        """Send whatever is held back."""
        ...


def _ignore(*_args: int) -> None:
    return None


class NullPort:
    """A device model that claims nothing: every access reads all-ones (a bare machine)."""

    def __init__(self) -> None:
        self.on_isa_irq: Callable[[int, int], None] = _ignore
        self.on_pci_intx: Callable[[int, int, int], None] = _ignore
        self.on_link_route: Callable[[int, int], None] = _ignore
        self.on_shutdown: Callable[[int], None] = _ignore
        self.on_mem_add: Callable[[int, int, int, int, int], None] = _ignore
        self.on_mem_del: Callable[[int], None] = _ignore  # the simulator installs it on any port
        self.on_mem_type: Callable[[int, int, int], None] = _ignore

    def pio_read(self, port: int, size: int) -> int:
        return (1 << 8 * size) - 1

    def pio_write(self, port: int, size: int, value: int) -> None:
        return None

    def pio_string(
        self, port: int, size: int, count: int, dir_read: bool, gpa: int, df: bool
    ) -> None:
        return None

    def mmio_read(self, gpa: int, size: int) -> int:
        return (1 << 8 * size) - 1

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        return None

    def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int:
        return (1 << 8 * size) - 1

    def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        return None

    def claims_port(self, port: int, size: int) -> bool:
        return False

    def claims_mmio(self, gpa: int, size: int) -> bool:
        return False

    def claims_pci(self, sbdf: int) -> bool:
        return False

    def poll(self) -> None:
        return None

    def clock(self, now_ns: int, sync: bool = False) -> None:
        return None
