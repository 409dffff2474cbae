"""The sync client as devmodel.hvsim's IoreqPort against a real daemon: the callbacks set on
the Hypervisor reach its state, the dm_ops an ioreq causes have been applied when the ioreq
returns, the firmware arrives as MEM_ADD + set_mem_type, and CLOCK can be synchronous."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmodel.client import Hypervisor

BIOS = "/usr/share/seabios/bios-256k.bin"


def test_callbacks_forward_to_state() -> None:
    with Hypervisor.spawn(["--clock", "virtual"], handshake=False) as hv:
        def cb(irq: int, level: int) -> None:
            return None

        hv.on_isa_irq = cb
        assert hv.state.on_isa_irq is cb and hv.on_isa_irq is cb
        for name in ("on_pci_intx", "on_link_route", "on_shutdown", "on_mem_add", "on_mem_type"):
            setattr(hv, name, print)
            assert getattr(hv.state, name) is print
        hv.hello()
        hv.wait_enabled()


def test_irq_of_an_ioreq_is_applied_before_it_returns() -> None:
    seen: list[tuple[int, int]] = []
    with Hypervisor.spawn(["--clock", "virtual"], handshake=False) as hv:
        hv.on_isa_irq = lambda irq, level: seen.append((irq, level))
        hv.hello()
        hv.wait_enabled()
        hv.outb(0x3F9, 0x02)  # COM1 IER: THR-empty interrupt on, the THR is empty
        assert seen == [(4, 1)]


@pytest.mark.skipif(not Path(BIOS).exists(), reason="SeaBIOS missing")
def test_firmware_arrives_as_mem_add_and_mem_types() -> None:
    added: list[tuple[int, int, int, int]] = []
    types: list[tuple[int, int, int]] = []
    with Hypervisor.spawn(["--clock", "virtual", "--bios", BIOS], handshake=False) as hv:
        hv.on_mem_add = lambda rid, gpa, size, flags, fd: added.append((rid, gpa, size, flags))
        hv.on_mem_type = lambda pfn, nr, t: types.append((pfn, nr, t))
        hv.hello()
        hv.wait_enabled()
        assert added == [(0x8000_0000, (1 << 32) - (256 << 10), 256 << 10, 3),
                         (0x8000_0001, 0xC0000, 0x40000, 1)]
        assert (0xF0, 16, 1) in types and len(types) == 13
        hv.pci_cfg_write(0, 0x59, 1, 0x30)  # PAM0: 0xF0000-0xFFFFF read/write
        assert types[-1] == (0xF0, 16, 0)


def test_synchronous_clock_is_a_barrier() -> None:
    with Hypervisor.spawn(["--clock", "virtual"], ram=4 << 20) as hv:
        hv.clock(1_000_000, sync=True)
        hv.clock(2_000_000)
        hv.barrier()
        assert not hv.state.errors and not hv.unmatched
