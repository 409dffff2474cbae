"""The device model's timers run while the vCPU polls only hypervisor-local state: the time
goes out (CLOCK + barrier) once per CLOCK_PERIOD_NS of virtual time even without an access the
device model serves. The device model is the real daemon (test_posted's machine); its RTC's
periodic interrupt is the timer, seen by the guest in the slave PIC's IRR (a local port)."""

from __future__ import annotations

from hvsim_fakes import ENTRY
from test_posted import machine  # noqa: F401  (the fixture)

from devmodel.hvsim import StopReason
from devmodel.hvsim.simulator import CLOCK_PERIOD_NS

# real mode at 0000:7C00:
#   RTC register A = 0x26 (976 us periodic rate), register B = 0x42 (PIE, 24 h)
#   OCW3 0x0A to the slave PIC: reads of 0xA0 return its IRR
#   mov ecx, 20000
#   L: rdtsc ; in al, 0xA0 ; test al, 1 ; jnz ok ; dec ecx ; jnz L
#   mov byte [0x600], 0xEE ; cli ; hlt        (IRQ 8 never seen)
#   ok: mov byte [0x600], 0x11 ; cli ; hlt
POLL_IRQ8 = bytes.fromhex(
    "b00ae670b026e671b00be670b042e671b00ae6a0"
    "66b9204e0000"
    "0f31e4a0a801750b664975f4"
    "c6060006eefaf4"
    "c606000611faf4")


def test_device_timers_run_while_the_guest_polls_local_state(machine) -> None:  # noqa: F811
    sim, _hv, _daemon, _sock = machine
    sim.ram.write(ENTRY, POLL_IRQ8)
    stop = sim.run(max_insns=2_000_000)
    assert stop.reason is StopReason.HALTED, stop
    assert sim.ram.read(0x600, 1) == b"\x11"  # IRQ 8 reached the PIC while polling
    assert sim.stats.clock_ticks >= 1
    # ... within a few periods of the first RTC interrupt, not at the end of the budget.
    assert sim.clock.ns < 4 * CLOCK_PERIOD_NS


def test_without_the_tick_the_poll_starves(machine, monkeypatch) -> None:  # noqa: F811
    # What the tick fixes: with no CLOCK period the daemon never sees the time move.
    import devmodel.hvsim.simulator as simulator

    monkeypatch.setattr(simulator, "CLOCK_PERIOD_NS", 1 << 62)
    sim, _hv, _daemon, _sock = machine
    sim.ram.write(ENTRY, POLL_IRQ8)
    stop = sim.run(max_insns=2_000_000)
    assert stop.reason is StopReason.HALTED, stop
    assert sim.ram.read(0x600, 1) == b"\xee"
