"""The simulator loop on tiny hand-assembled real-mode programs: timer IRQs at HLT through the
IVT, device-model IRQs, software interrupts, the device model's firmware regions and their
set_mem_type (PAM) protections, virtual time sent to the device model, stop reasons and
determinism."""

from __future__ import annotations

import struct

import pytest
from hvsim_fakes import ENTRY

from devmodel.hvsim import StopReason

HANDLER = ENTRY + 0x100
COUNTER = 0x600

SETUP = bytes.fromhex("31c0 8ed8 8ed0 bc007c".replace(" ", ""))  # ds = ss = 0, sp = 7C00


def set_vector(vector: int, target: int = HANDLER) -> bytes:
    off = vector * 4
    return (b"\xc7\x06" + struct.pack("<HH", off, target)
            + b"\xc7\x06" + struct.pack("<HH", off + 2, 0))


def pic_init(mask: int) -> bytes:
    out = b""
    for port, val in ((0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01), (0x21, mask)):
        out += bytes((0xB0, val, 0xE6, port))  # mov al, val ; out port, al
    return out


# inc word [COUNTER] ; push ax ; mov al, 0x20 ; out 0x20, al (EOI) ; pop ax ; iret
IRQ_HANDLER = b"\xff\x06" + struct.pack("<H", COUNTER) + b"\x50\xb0\x20\xe6\x20\x58\xcf"


def program(main: bytes, handler: bytes = IRQ_HANDLER) -> bytes:
    assert len(main) <= 0x100
    return main.ljust(0x100, b"\x90") + handler


def counter(sim) -> int:
    return struct.unpack("<H", sim.ram.read(COUNTER, 2))[0]


def timer_program(ticks: int, count: int) -> bytes:
    pit = bytes((0xB0, 0x34, 0xE6, 0x43, 0xB0, count & 0xFF, 0xE6, 0x40,
                 0xB0, count >> 8, 0xE6, 0x40))
    # loop: sti ; hlt ; cmp word [COUNTER], ticks ; jb loop ; cli ; hlt
    loop = b"\xfb\xf4\x83\x3e" + struct.pack("<HB", COUNTER, ticks) + b"\x72\xf7\xfa\xf4"
    return program(SETUP + set_vector(0x08) + pic_init(0xFE) + pit + loop)


def test_timer_irq_wakes_hlt_through_the_ivt(tiny_sim) -> None:
    sim, _ = tiny_sim(timer_program(5, 11932))  # ~10 ms period
    stop = sim.run(max_insns=1_000_000)
    assert stop.reason is StopReason.HALTED, stop
    assert counter(sim) == 5
    assert sim.stats.irqs == 5 and sim.stats.halts == 6
    assert 49_000_000 < sim.clock.ns < 52_000_000  # five 10 ms periods of virtual time


def test_runs_are_deterministic(tiny_sim) -> None:
    results = []
    for _ in range(2):
        sim, _ = tiny_sim(timer_program(3, 1000))
        stop = sim.run(max_insns=1_000_000)
        results.append((stop, sim.clock.ns, sim.stats.exits, sim.stats.irqs))
    assert results[0] == results[1]


def test_until_ns_stops_a_halted_guest(tiny_sim) -> None:
    sim, _ = tiny_sim(timer_program(200, 11932))
    stop = sim.run(until_ns=25_000_000)
    assert stop.reason is StopReason.TIME
    assert counter(sim) == 2


def test_device_model_isa_irq_is_delivered(tiny_sim) -> None:
    # sti ; mov dx, 0x1F0 ; out dx, al ; hlt ; cli ; hlt
    main = SETUP + set_vector(0x0D) + pic_init(0xDF) + b"\xfb\xba\xf0\x01\xee\xf4\xfa\xf4"
    sim, dm = tiny_sim(program(main))

    def raise_irq5(op: str, size: int, value: int = 0) -> int:
        dm.on_isa_irq(5, 1)  # an edge, raised before the ioreq is answered
        dm.on_isa_irq(5, 0)
        return 0

    dm.extra_ports[0x1F0] = raise_irq5
    stop = sim.run(max_insns=1_000_000)
    assert stop.reason in (StopReason.IDLE, StopReason.HALTED), stop
    assert counter(sim) == 1


def test_software_int_goes_through_the_ivt(tiny_sim) -> None:
    # int 0x60 ; cli ; hlt -- handler: mov word [COUNTER], 0x1234 ; iret
    handler = b"\xc7\x06" + struct.pack("<HH", COUNTER, 0x1234) + b"\xcf"
    sim, _ = tiny_sim(program(SETUP + set_vector(0x60) + b"\xcd\x60\xfa\xf4", handler))
    stop = sim.run(max_insns=100_000)
    assert stop.reason is StopReason.HALTED
    assert counter(sim) == 0x1234
    assert sim.stats.soft_ints == {0x60: 1}


def test_pam_mem_types_control_shadow_writes(tiny_sim) -> None:
    main = (
        b"\xb8\x00\xf0\x8e\xd8"  # mov ax, 0xF000 ; mov ds, ax
        b"\xc6\x06\x00\x00\x55"  # mov byte [0], 0x55  -> F0000, PAM0 = 0: dropped
        b"\x66\xb8\x58\x00\x00\x80\xba\xf8\x0c\x66\xef"  # out 0xCF8, 0x80000058
        b"\xba\xfd\x0c\xb0\x30\xee"  # out 0xCFD, 0x30  (PAM0 = RAM read/write)
        b"\xc6\x06\x01\x00\x66"  # mov byte [1], 0x66  -> F0001: sticks
        b"\xfa\xf4"
    )
    sim, dm = tiny_sim(program(main), host_bridge=True)
    shadow = dm.firmware.shadow_mm  # the device model's memory, shared with the vCPU
    before = shadow[0x30000:0x30002]
    assert sim.mem_types[0xF0] == (16, 1)  # 0xF0000-0xFFFFF read-only at power-on
    stop = sim.run(max_insns=100_000)
    assert stop.reason is StopReason.HALTED, stop
    assert shadow[0x30000:0x30002] == before[:1] + b"\x66"
    assert sim.stats.rom_writes_dropped == 1
    assert sim.mem_types[0xF0] == (16, 0) and dm.bridge is not None and dm.bridge.cfg[0x59] == 0x30


def test_flash_is_mapped_read_only_from_the_device_model(tiny_sim) -> None:
    sim, dm = tiny_sim(program(SETUP + b"\xfa\xf4"))
    base = (1 << 32) - dm.firmware.image_size
    assert bytes(sim.cpu.uc.mem_read(base + dm.firmware.image_size - 16, 1)) == b"\xea"
    assert set(sim.dm_regions) == {0x8000_0000, 0x8000_0001}
    assert sim.dm_regions[0x8000_0000].readonly


def test_clock_is_sent_before_device_model_accesses(tiny_sim) -> None:
    # mov dx, 0x402 ; out dx, al ; out dx, al ; in al, 0x21 (PIC: not the device model's) ;
    # out dx, al ; cli ; hlt
    sim, dm = tiny_sim(program(SETUP + b"\xba\x02\x04\xee\xee\xe4\x21\xee\xfa\xf4"))
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    assert len(dm.console) == 3
    assert [sync for _, sync in dm.clocks] == [False] * 3  # one per access it serves
    times = [t for t, _ in dm.clocks]
    assert times == sorted(times) and len(set(times)) == 3
    assert times[-1] <= sim.clock.ns


def test_clock_is_synchronised_at_halted_wakeups(tiny_sim) -> None:
    sim, dm = tiny_sim(timer_program(3, 11932))
    assert sim.run(max_insns=1_000_000).reason is StopReason.HALTED
    assert len(dm.clocks) == sim.stats.clock_msgs >= 3
    assert all(sync for _, sync in dm.clocks)  # each wake-up waits for the device model
    times = [t for t, _ in dm.clocks]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_fetch_from_mmio_is_an_error_stop(tiny_sim) -> None:
    # jmp far A000:0000: code in the VGA MMIO window cannot be fetched
    sim, _ = tiny_sim(program(b"\xea\x00\x00\x00\xa0"))
    stop = sim.run(max_insns=100_000)
    assert stop.reason is StopReason.ERROR
    assert "fetch" in stop.detail.lower() and (stop.cs, stop.eip) == (0xA000, 0)


def test_reset_restores_the_reset_vector(tiny_sim) -> None:
    sim, _ = tiny_sim(program(SETUP + b"\xfa\xf4"))
    assert sim.run(max_insns=10_000).reason is StopReason.HALTED
    sim.reset()
    assert sim.cpu.eip == 0xFFF0
    assert sim.run(max_insns=10_000).reason is StopReason.HALTED
    assert sim.stats.resets == 2


@pytest.mark.parametrize("slice_insns", [1_000, 50_000])
def test_slice_size_does_not_change_the_outcome(tiny_sim, slice_insns: int) -> None:
    sim, _ = tiny_sim(timer_program(4, 5000), slice_insns=slice_insns)
    assert sim.run(max_insns=1_000_000).reason is StopReason.HALTED
    assert counter(sim) == 4


def test_a_slice_ending_after_an_f4_operand_is_not_a_hlt(tiny_sim) -> None:
    # cli; mov sp, [0xF4D0] (its last byte is 0xF4, as SeaBIOS's call16 stack switch has);
    # mov byte [0x600], 0x11; hlt. Slices of 3 instructions (the reset vector's far jump,
    # cli, mov) end right after the F4 operand with IF=0: that is no HLT, and the run must go
    # on to the real one.
    sim, _ = tiny_sim(bytes.fromhex("fa8b26d0f4c6060006 11f4".replace(" ", "")), slice_insns=3)
    if sim.cpu.insns_run() is None:
        pytest.skip("this Unicorn build's instruction counter was not found")
    stop = sim.run(max_insns=1_000)
    assert stop.reason is StopReason.HALTED, stop
    assert sim.ram.read(0x600, 1) == b"\x11"
    assert sim.stats.halts == 1


def test_unicorn_instruction_counter_is_found() -> None:
    from devmodel.hvsim.cpu import Cpu, counter_offset

    assert counter_offset() is not None  # the pinned unicorn 2.1.x wheel
    assert Cpu().insns_run() == 0


def sti_window_program(ticks: int) -> bytes:
    count = 1193  # ~1 ms PIT period
    pit = bytes((0xB0, 0x34, 0xE6, 0x43, 0xB0, count & 0xFF, 0xE6, 0x40,
                 0xB0, count >> 8, 0xE6, 0x40))
    # L: sti ; nop ; nop ; cli ; mov cx, 200 ; L2: loop L2 ; cmp word [COUNTER], ticks ;
    #    jb L ; hlt  (no exit anywhere in the loop: the window is only 2 instructions wide)
    loop = (b"\xfb\x90\x90\xfa\xb9\xc8\x00\xe2\xfe\x83\x3e" + struct.pack("<HB", COUNTER, ticks)
            + b"\x72\xf0\xf4")
    return program(SETUP + b"\xfa" + set_vector(0x08) + pic_init(0xFE) + pit + loop)


def test_interrupt_taken_in_an_sti_window_without_exits(tiny_sim) -> None:
    # iPXE's BIOS timer: `sti; nop; nop; cli`. The interrupt must land after the STI shadow.
    sim, _ = tiny_sim(sti_window_program(3))
    stop = sim.run(max_insns=10_000_000)
    assert stop.reason is StopReason.HALTED, stop
    assert counter(sim) == 3 and sim.stats.irqs == 3
    assert sim.stats.window_stops == 3
    assert sim.clock.ns < 4_000_000  # each tick taken at its first window, ~1 ms apart


def test_without_the_window_watch_the_sti_window_is_missed(tiny_sim, monkeypatch) -> None:
    from devmodel.hvsim.simulator import Simulator

    monkeypatch.setattr(Simulator, "_arm_window", lambda self: None)
    sim, _ = tiny_sim(sti_window_program(3))
    stop = sim.run(max_insns=5_000_000)
    assert stop.reason is StopReason.BUDGET, stop
    assert counter(sim) < 3
