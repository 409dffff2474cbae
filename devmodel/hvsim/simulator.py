"""The hypervisor simulator: one vCPU, guest RAM, PIC/PIT, and ioreq forwarding; the firmware
is the device model's (MEM_ADD regions and set_mem_type, firmware.py).

A run is a loop of instruction slices: ``slice_insns`` instructions each, counted per
translation block by a C hook (budget.py: a slice is about 3 bytes of code per instruction,
ended at a block boundary), or by Unicorn itself (``emu_start(count=...)``, several times
slower) when that hook cannot be built and for the one exact instruction of an STI shadow.
With blocks, an MMIO callback sees the EIP of its block's start (Unicorn syncs
EIP before instruction hooks such as IN/OUT, and before every instruction only while its own
count runs): a REP STOS/MOVS into MMIO then batches from its second element (_rep_mmio_write
finds no REP at the block's start for the first one, which goes alone). Between slices the
simulator replays timer edges, lets the device model's DMOPs in (``port.poll()``), and delivers
a pending 8259 interrupt through the real-mode IVT or the IDT. Interrupts land there, at HLT,
right after an exit that made one deliverable (the exit stops the slice early; Unicorn lets the
rest of the translation block run first, obstacle 5), and after the STI shadow of a window the
guest opens without any exit (the interrupt-window watch, below). Everything is paced by one
VirtualClock, so two runs with the same inputs take the same path.

Virtual time: ``ns_per_insn`` per instruction of every completed slice (a slice cut short by a
stop or HLT is not charged; whether a slice ended on its budget, the block hook's ``stopped``
or Unicorn's own counter cpu.insns_run, is used only to tell a HLT from a full slice),
``exit_ns`` per
port or MMIO exit and per RDTSC, and jumps to the next timer deadline while halted. The device
model gets the same time (``port.clock``, a CLOCK message, docs/protocol.md 4.6): before an
access it serves whenever the clock moved since the last one, and after each halted jump, then
synchronously, so the IRQs of its timers that fell due are in before the vCPU goes on. When
the vCPU goes on without such accesses (polling RAM and the PM timer, TSC or PIC, all local
here as on Xen), the time still goes out, synchronously, once per CLOCK_PERIOD_NS of virtual
time: checked at those local exits and between slices (the stand-in for Xen's timers, which
run whatever the vCPU does).

Posted writes (posted.py): single writes to the VGA window that the device model claims go out
batched as BUFIOREQ, as Xen buffers them, and so do single writes to the claimed ports of
posted.POSTED_PORTS (debug consoles, POST codes, CMOS index); flushed before any synchronous
access or CLOCK, when the batch is full, and at the end of every slice (HLT included) and of
every run.

REP STOS and REP MOVS (from RAM) into memory the device model claims go as one COPY ioreq
with a count per page (``port.mmio_string``, when the port has it), as Xen's hvmemul_rep_stos
/ hvmemul_rep_movs send them (xen-protocol.md 1.4): the VGA BIOS clearing the text window is 8
requests instead of 16k stores. MMIO -> MMIO moves stay element by element, as on Xen.

The ACPI PM timer (pmtimer.py): 4-byte reads of PM_TMR in the device model's PIIX4 PM block,
found by snooping its PCI config, are answered from the virtual clock with the device model's
formula, as Xen answers PM_TMR itself; everything else in the block stays the device model's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from unicorn import (
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    Uc,
    UcError,
)
from unicorn import x86_const as x86

from ..wire.constants import MEM_READONLY
from . import strings
from .apic import IOAPIC_BASE, LAPIC_BASE, IoapicStub, LapicStub
from .budget import BlockBudget
from .budget import load as load_budget
from .clock import VirtualClock
from .cpu import (
    CR0_PE,
    CR0_PG,
    EFLAGS_DF,
    EFLAGS_IF,
    EFLAGS_VM,
    ERROR_CODE_VECTORS,
    Cpu,
    DeliveryError,
)
from .firmware import HVMMEM_RAM_RO, SharedRegion, check_region, map_fd, unmap
from .irq import SRC_PIT, IrqRouter
from .memory import HIGH_START, SHADOW_START, VGA_START, GuestRam
from .pic import DualPic
from .pit import Pit
from .pmtimer import PmTimer
from .ports import IoreqPort
from .posted import PostedWrites, postable_port
from .routing import APIC_PAGE, IoRouter, Route

PAGE = 0x1000
DEFAULT_RAM = 64 << 20
DEFAULT_SLICE_INSNS = 200_000
# Lazily mapped all-ones/forwarding MMIO pages; a guest that wanders through the whole 4 GiB
# is stopped rather than allowed to build a million mappings.
MAX_LAZY_MMIO_PAGES = 4096
# Timer deadlines skipped over in one HLT wake-up search (each is a PIT OUT edge).
MAX_HALT_STEPS = 1024
RESET_VECTOR = 0xFFFF0
# Virtual time after which the device model is told the time even without an access it
# serves: a guest polling RAM and hypervisor-local timers (PM timer, TSC, PIC) must still see
# the device model's timers fire (a USB TD completed by the UHCI frame timer).
CLOCK_PERIOD_NS = 1_000_000
# Instructions watched for an STI after an interrupt became pending with IF=0 (the
# interrupt-window watch, _arm_window); the watch costs a Python call per instruction.
INTERRUPT_WINDOW_INSNS = 20_000
STI_BYTE = b"\xfb"
CPUID_HYPERVISOR_LEAF = 0x40000000


class StopReason(enum.Enum):
    TIME = "time"  # virtual time reached run(until_ns=...)
    BUDGET = "budget"  # run(max_insns=...) spent
    HALTED = "halted"  # HLT with IF=0: the guest is finished
    IDLE = "idle"  # HLT with IF=1 and no timer or device event can wake the vCPU
    SHUTDOWN = "shutdown"  # the device model sent remote_shutdown; code = reason
    REQUESTED = "requested"  # request_stop() or the run's predicate
    ERROR = "error"  # something the simulator cannot continue from


@dataclass(frozen=True, slots=True)
class Stop:
    reason: StopReason
    detail: str = ""
    code: int = 0
    cs: int = 0
    eip: int = 0

    def __str__(self) -> str:
        return f"{self.reason.value} at {self.cs:04x}:{self.eip:08x}" + (
            f": {self.detail}" if self.detail else ""
        )


@dataclass
class Stats:
    slices: int = 0
    block_slices: int = 0  # slices counted by the block budget (budget.py)
    insns: int = 0  # instructions of completed slices (a lower bound)
    exits: int = 0  # port + MMIO exits
    rep_batches: int = 0  # pio_string calls
    rep_elements: int = 0
    irqs: int = 0  # hardware interrupts delivered
    soft_ints: dict[int, int] = field(default_factory=dict)  # vector -> count
    exceptions: dict[int, int] = field(default_factory=dict)
    halts: int = 0
    resets: int = 0
    rdtsc: int = 0
    cpuid: dict[int, int] = field(default_factory=dict)
    rom_writes_dropped: int = 0
    lazy_mmio_pages: int = 0
    region_conflicts: int = 0  # device-model regions not mapped: over memory already there
    clock_msgs: int = 0  # CLOCK messages sent to the device model
    clock_ticks: int = 0  # of which sent because CLOCK_PERIOD_NS passed without one
    window_watches: int = 0  # interrupt-window watches armed (_arm_window)
    window_stops: int = 0  # of which ended at an STI shadow
    posted_writes: int = 0  # VGA-window and POSTED_PORTS writes sent as BUFIOREQ slots
    posted_batches: int = 0  # BUFIOREQ messages
    mmio_rep_batches: int = 0  # REP STOS/MOVS stores sent as one COPY ioreq with a count
    mmio_rep_elements: int = 0


class Simulator:
    """One HVM vCPU and the platform Xen would own, wired to a device model ``port``."""

    def __init__(
        self,
        port: IoreqPort,
        ram_size: int = DEFAULT_RAM,
        *,
        ram: GuestRam | None = None,
        tsc_hz: int = 1_000_000_000,
        slice_insns: int = DEFAULT_SLICE_INSNS,
        ns_per_insn: int = 1,
        exit_ns: int = 1_000,
        sync_clock: bool = True,
        local_pm_timer: bool | None = None,
        local_rtc_index: bool = True,
        slicing: str = "auto",
    ) -> None:
        """``sync_clock``: send the virtual time to the device model (it must run with
        ``--clock virtual``); off for a device model on the host's clock.
        ``local_pm_timer``: answer ACPI PM_TMR reads here (pmtimer.py), as Xen does; by
        default on exactly when ``sync_clock`` is (both sides must share one clock).
        ``local_rtc_index``: answer byte reads of the RTC index port 0x70 here with 0xFF, as
        Xen's own RTC does (routing.py); off to forward them to the device model.
        ``slicing``: how slices are counted: "blocks" (budget.py, a C hook per translation
        block; about half the CPU emulator's time), "count" (Unicorn's per-instruction
        count), or "auto": blocks when the hook can be built, else count (``slicing_note``
        says why)."""
        if slicing not in ("auto", "blocks", "count"):
            raise ValueError(f"slicing {slicing!r}: want auto, blocks or count")
        self.port = port
        self.ram = ram if ram is not None else GuestRam(ram_size)
        self.clock = VirtualClock(tsc_hz)
        self.sync_clock = sync_clock
        self._clock_sent = -1
        self.slice_insns = slice_insns
        self.ns_per_insn = ns_per_insn
        self.exit_ns = exit_ns
        self.stats = Stats()

        self.pic = DualPic()
        self.irq = IrqRouter(self._pic_set_irq)
        self._irq_raises = 0  # interrupt requests raised so far (the window watch's edges)
        self._window_hook: int | None = None
        self._window_seen = 0  # _irq_raises when the watch was last armed
        self._window_budget = 0
        self._window_shadow = False
        self._sti_cache: dict[int, bool] = {}
        self.pit = Pit(self.clock, lambda level: self.irq.set_isa_level(0, level, SRC_PIT))
        self.lapic = LapicStub()
        self.ioapic = IoapicStub()
        # Memory the device model owns (firmware image, shadow RAM): region id -> mapping,
        # and the HVMMEM type it last gave each extent (first_pfn -> (nr, type)).
        self.dm_regions: dict[int, SharedRegion] = {}
        self.mem_types: dict[int, tuple[int, int]] = {}
        self._lazy_pages: set[int] = set()
        self.router = IoRouter(port, self.pic, self.pit, self.lapic, self.ioapic,
                               self._before_dm)
        self.pm_timer = PmTimer(self.clock)
        if sync_clock if local_pm_timer is None else local_pm_timer:
            self.router.pm_timer = self.pm_timer
        self.router.rtc_index_local = local_rtc_index
        self.posted = PostedWrites(self._send_posted)
        if callable(getattr(port, "bufioreq", None)):
            self.router.post = self._post
        # REP STOS / MOVS into MMIO as one request (optional on a port, as posted writes are).
        self._mmio_string = getattr(port, "mmio_string", None)
        if not callable(self._mmio_string):
            self._mmio_string = None
        self.cpu = Cpu()
        # Protected-mode CS selector -> base, for the cheap REP check (_rep_string); emptied at
        # every slice and reset, since the guest may rewrite its GDT.
        self._cs_bases: dict[int, int] = {}
        # The REP STOS/MOVS found unbatchable at its first element (CS, EIP): its other
        # elements skip the decode. Forgotten at every slice, like _cs_bases.
        self._mmio_single_pc: tuple[int, int] | None = None
        # (CS, EIP) of the plain IN/OUT instructions seen in this slice (_rep_string).
        self._plain_io_pcs: set[tuple[int, int]] = set()
        self._stop: Stop | None = None
        self._kicked = False
        self._halted = False

        port.on_isa_irq = self._dm_isa_irq
        port.on_pci_intx = self._dm_pci_intx
        port.on_link_route = self._dm_link_route
        port.on_shutdown = self._dm_shutdown
        port.on_mem_add = self._dm_mem_add
        port.on_mem_del = self._dm_mem_del
        port.on_mem_type = self._dm_mem_type

        self._map_memory()
        self._install_hooks()
        self.budget: BlockBudget | None = None
        self.slicing_note = ""
        if slicing != "count":
            lib, why = load_budget()
            if lib is not None:
                self.budget = BlockBudget(self.cpu.uc, lib)
            elif slicing == "blocks":
                raise RuntimeError(f"slicing=blocks: {why}")
            else:
                self.slicing_note = f"slices counted by Unicorn (slower): {why}"

        self.reset()

    # ---- construction ----------------------------------------------------------------------
    def _map_memory(self) -> None:
        uc = self.cpu.uc
        ram = self.ram
        uc.mem_map_ptr(0, VGA_START, UC_PROT_ALL, ram.address)
        uc.mem_map_ptr(HIGH_START, ram.size - HIGH_START, UC_PROT_ALL, ram.address + HIGH_START)
        uc.mmio_map(VGA_START, SHADOW_START - VGA_START, self._mmio_read_cb, VGA_START,
                    self._mmio_write_cb, VGA_START)
        # 0xC0000-0xFFFFF and the flash below 4 GiB come from the device model (_dm_mem_add).
        for base in (LAPIC_BASE, IOAPIC_BASE):
            uc.mmio_map(base, APIC_PAGE, self._mmio_read_cb, base, self._mmio_write_cb, base)

    def _install_hooks(self) -> None:
        uc = self.cpu.uc
        uc.hook_add(UC_HOOK_INSN, self._hook_in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._hook_out, None, 1, 0, x86.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._hook_cpuid, None, 1, 0, x86.UC_X86_INS_CPUID)
        self.cpu.hook_rdtsc(self._hook_rdtsc)
        uc.hook_add(UC_HOOK_INTR, self._hook_intr)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED, self._hook_unmapped)
        uc.hook_add(UC_HOOK_MEM_FETCH_UNMAPPED, self._hook_fetch_unmapped)
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._hook_write_prot)

    # ---- public control --------------------------------------------------------------------
    def reset(self) -> None:
        """Platform reset of what the hypervisor owns: CPU, PIC, PIT, APIC stubs, CF8 latch.
        The device model resets its own devices (before it sends remote_shutdown) and owns the
        firmware and shadow RAM, which a reset leaves alone (PAM survives a reset, as on QEMU;
        SeaBIOS restores the shadow from the flash itself before it resets). IRQ lines it still
        asserts are presented to the fresh PICs."""
        self.cpu.reset()
        self.pic.reset()
        for irq in range(16):
            if self.irq.level(irq):
                self.pic.set_irq(irq, 1)
        self.pit.reset()
        self.lapic.reset()
        self.ioapic.reset()
        self.router.reset()
        self.pm_timer.reset()
        self.clock.reset_tsc()
        self._cs_bases.clear()
        self._disarm_window()
        self._halted = False
        self.stats.resets += 1

    def request_stop(self, detail: str = "", reason: StopReason = StopReason.REQUESTED) -> None:
        """Stop the run; callable from observers and callbacks (takes effect a few
        instructions late, at the end of the current translation block)."""
        self._latch(Stop(reason, detail))

    @property
    def observers(self) -> list[Callable[[str, int, int, int, bool], None]]:
        """Called as (kind, address, size, value, is_write) for every port/MMIO/PCI access."""
        return self.router.observers

    def run(
        self,
        until_ns: int | None = None,
        max_insns: int = 100_000_000,
        until: Callable[[Simulator], bool] | None = None,
        max_wakeups: int = 100_000,
    ) -> Stop:
        """Run until a stop condition and return it.

        Bounded three ways: ``max_insns`` (in whole slices), ``max_wakeups`` (HLT wake-ups,
        each a jump to the next timer edge) and, if given, ``until_ns`` of virtual time.
        ``until`` is a predicate checked between slices and wake-ups.
        """
        self._stop = None
        if self.cpu.read_linear(RESET_VECTOR, 1) is None:
            return self._finish(Stop(StopReason.ERROR, "no firmware: the device model shared "
                                     "no shadow RAM at 0xC0000 (is it running with --bios, and "
                                     "was the simulator attached before its handshake?)"))
        max_slices = max(1, -(-max_insns // self.slice_insns))
        insns_at_start = self.stats.insns
        # Slices cut short (HLT, a kick) charge no instructions, so the loop itself is capped too.
        max_iterations = 2 * (max_slices + max_wakeups)
        iterations = wakeups = 0
        while self._stop is None:
            iterations += 1
            if until is not None and until(self):
                self._stop = Stop(StopReason.REQUESTED, "predicate")
            elif until_ns is not None and self.clock.ns >= until_ns:
                self._stop = Stop(StopReason.TIME)
            elif self.stats.insns - insns_at_start >= max_insns:
                self._stop = Stop(StopReason.BUDGET, f"{max_insns} instructions")
            elif wakeups >= max_wakeups:
                self._stop = Stop(StopReason.BUDGET, f"{max_wakeups} wake-ups")
            elif iterations > max_iterations:
                self._stop = Stop(StopReason.BUDGET, f"{max_iterations} loop iterations")
            if self._stop is not None:
                break
            self.pit.run_until(self.clock.ns)
            self._clock_tick()
            self.port.poll()
            if self._stop is not None or self._maybe_interrupt() is not None:
                break
            if (self._irq_raises != self._window_seen and not self._halted
                    and self.pic.has_interrupt()):
                self._arm_window()
            if self._halted:
                wakeups += 1
                self._wait_for_event(until_ns)
                continue
            self._run_slice(self.slice_insns)
        return self._finish(self._stop)

    def close(self) -> None:
        for region in self.dm_regions.values():
            unmap(region.address, region.size)
        self.dm_regions.clear()
        self.ram.close()

    # ---- the loop --------------------------------------------------------------------------
    def _finish(self, stop: Stop) -> Stop:
        self._flush_posted()
        cs = self.cpu.reg(x86.UC_X86_REG_CS)
        eip = self.cpu.eip
        stop = Stop(stop.reason, stop.detail, stop.code, cs, eip)
        self._stop = None
        return stop

    def _latch(self, stop: Stop) -> None:
        # First reason wins: after emu_stop the rest of the block still runs and may raise
        # another event (the study's 0xCF9 reset followed by int3, obstacle 5).
        if self._stop is None:
            self._stop = stop
        self.cpu.uc.emu_stop()

    def _kick(self) -> None:
        self._kicked = True
        self.cpu.uc.emu_stop()

    def _run_slice(self, count: int) -> None:
        self._kicked = False
        self._cs_bases.clear()
        self._mmio_single_pc = None
        self._plain_io_pcs.clear()
        self.stats.slices += 1
        # Blocks, except for one exact instruction (the STI shadow).
        budget = self.budget
        if budget is not None and count == 1:
            budget.disarm()
            budget = None
        elif budget is not None:
            budget.arm(count, check_last=not self.cpu.reg(x86.UC_X86_REG_CR0) & CR0_PG)
            self.stats.block_slices += 1
        try:
            self.cpu.uc.emu_start(self.cpu.eip, 0xFFFFFFFF, count=0 if budget else count)
        except UcError as exc:
            self._latch(Stop(StopReason.ERROR, f"unicorn: {exc}"))
            return
        finally:
            # Nothing posted waits past the slice (or the HLT that ended it); the port sends
            # it with its next message or poll(), which the run loop calls next.
            self.posted.flush()
        if self._stop is not None:
            return
        if self._just_halted(count, budget):  # even after a kick: the block may have run into HLT
            self._halted = True
            self.stats.halts += 1
            return
        if self._kicked:
            return
        self.stats.insns += count
        self.clock.advance(count * self.ns_per_insn)

    def _just_halted(self, count: int, budget: BlockBudget | None = None) -> bool:
        # HLT makes emu_start return quietly with EIP past the 0xF4 (obstacle 4). A slice whose
        # count ran out (Unicorn's counter says so, cpu.insns_run) did not halt, even if the
        # byte before EIP is an F4 operand; with IF=0 that misreading would end the run. After
        # a kick the counter cannot tell, and an F4 operand may still be misread as HLT; the
        # cost is one early timer wake-up, since time then jumps to the next deadline.
        # With a block budget, a slice that ended on it did not halt (budget.py: the hook
        # never stops at a block that may end in HLT).
        if budget is not None:
            if budget.stopped:
                return False
        else:
            ran = self.cpu.insns_run()
            if ran is not None and ran > count:
                return False
        pc = self.cpu.linear_pc()
        prev = self.cpu.read_linear((pc - 1) & 0xFFFFFFFF, 1)
        return prev == b"\xf4"

    def _maybe_interrupt(self) -> Stop | None:
        """Deliver one pending 8259 interrupt if the CPU takes it now."""
        if not self.pic.has_interrupt():
            return None
        cpu = self.cpu
        if not cpu.eflags & EFLAGS_IF:
            return None
        pc = cpu.linear_pc()
        if not self._halted and cpu.read_linear((pc - 1) & 0xFFFFFFFF, 1) == b"\xfb":
            # STI shadow (SDM vol. 2, STI): no interrupt before the next instruction, or
            # `sti; hlt` would lose its wake-up. Run exactly one instruction first.
            self._run_slice(1)
            if self._stop is not None or self._halted:
                return self._stop
        vector = self.pic.acknowledge()
        if not self._deliver(vector, software=False, error_code=None, kind="IRQ"):
            return self._stop
        self._halted = False
        self.stats.irqs += 1
        self._disarm_window()
        return None

    def _wait_for_event(self, until_ns: int | None) -> None:
        """Halted: advance virtual time edge by edge until an interrupt is pending (bounded by
        MAX_HALT_STEPS edges per call). Latches HALTED or IDLE if nothing can wake the vCPU."""
        if not self.cpu.eflags & EFLAGS_IF:
            self._latch(Stop(StopReason.HALTED, "hlt with interrupts disabled"))
            return
        for _ in range(MAX_HALT_STEPS):
            deadline = self.pit.next_deadline()
            if deadline is None:
                self._latch(Stop(StopReason.IDLE, "hlt with no timer armed"))
                return
            if until_ns is not None and deadline > until_ns:
                self.clock.advance_to(until_ns)
                return
            self.clock.advance_to(deadline)
            self.pit.run_until(deadline)
            if self.sync_clock:
                self._send_clock(sync=True)
            self.port.poll()
            if self.pic.has_interrupt() or self._stop is not None:
                return

    # ---- the interrupt window --------------------------------------------------------------
    # An interrupt pending while IF=0 is taken on hardware right after the instruction that
    # follows the STI that opens the window (SDM vol. 2, STI). Slices and exits rarely land in
    # such a window (iPXE's BIOS timer opens one with `sti; nop; nop; cli`), so when an
    # interrupt is raised while IF=0, every instruction is watched, as a VMM's
    # interrupt-window exiting would, for at most INTERRUPT_WINDOW_INSNS instructions: at the
    # instruction after an STI the vCPU stops, and _maybe_interrupt runs that one instruction
    # (the STI shadow) and delivers. Unwatched windows are still seen at slice ends and exits.
    def _pic_set_irq(self, irq: int, level: int) -> None:
        self.pic.set_irq(irq, level)
        if level:
            self._irq_raises += 1

    def _arm_window(self) -> None:
        self._window_seen = self._irq_raises
        if self.cpu.eflags & EFLAGS_IF:
            return
        self._window_budget = INTERRUPT_WINDOW_INSNS
        self._window_shadow = False
        if self._window_hook is None:
            self._sti_cache.clear()  # code may have changed since the last watch
            self._window_hook = self.cpu.uc.hook_add(UC_HOOK_CODE, self._hook_window)
            # Unicorn calls a code hook only from blocks translated after it was added.
            self.cpu.uc.ctl_flush_tb()
            self.stats.window_watches += 1

    def _disarm_window(self) -> None:
        if self._window_hook is not None:
            self.cpu.uc.hook_del(self._window_hook)
            self._window_hook = None

    def _hook_window(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        if self._window_shadow:  # this instruction is the STI shadow: stop before it
            self._window_shadow = False
            self.stats.window_stops += 1
            self._disarm_window()
            self._kick()
            return
        sti = self._sti_cache.get(address)
        if sti is None:
            sti = self._sti_cache[address] = self.cpu.read_linear(address, 1) == STI_BYTE
        if sti:
            self._window_shadow = True
        else:
            self._window_budget -= 1
            if self._window_budget <= 0:
                self._disarm_window()

    # ---- device-model callbacks ------------------------------------------------------------
    def _irq_changed(self) -> None:
        if self.pic.has_interrupt() and self.cpu.eflags & EFLAGS_IF:
            self._kick()

    def _dm_isa_irq(self, irq: int, level: int) -> None:
        self.irq.set_isa_level(irq, level)
        if level:
            self._irq_changed()

    def _dm_pci_intx(self, slot: int, pin: int, level: int) -> None:
        self.irq.set_pci_intx(slot, pin, level)
        if level:
            self._irq_changed()

    def _dm_link_route(self, link: int, irq: int) -> None:
        self.irq.set_link_route(link, irq)

    def _dm_shutdown(self, reason: int) -> None:
        self._latch(Stop(StopReason.SHUTDOWN, "remote_shutdown", reason))

    def _dm_mem_add(self, region_id: int, gpa: int, size: int, flags: int, fd: int) -> None:
        """A MEM_ADD from the device model: map its fd (still owned by the port) into the vCPU.

        A region over guest RAM, the VGA window, the APIC pages or another device-model
        region is a BAR the guest placed over memory that is already there (VRAM, an option
        ROM): hardware decodes such overlaps unpredictably, and the guest only hurts itself. It
        is counted (``stats.region_conflicts``) and left unmapped until the device model moves
        it again; the vCPU goes on."""
        problem = check_region(gpa, size)
        if problem is not None:
            self._latch(Stop(StopReason.ERROR, f"device-model region {region_id:#x}: {problem}"))
            return
        uc = self.cpu.uc
        old = self.dm_regions.pop(region_id, None)
        if old is not None:  # the same id again: a move (VRAM when BAR0 moves)
            self._unmap_region(old)
        ours = ((0, VGA_START), (VGA_START, SHADOW_START), (HIGH_START, self.ram.size))
        mapped = not any(gpa < end and start < gpa + size for start, end in ours) and not any(
            gpa < o.gpa + o.size and o.gpa < gpa + size for o in self.dm_regions.values())
        if mapped:
            for page in [p for p in self._lazy_pages if gpa <= p < gpa + size]:
                uc.mem_unmap(page, PAGE)  # a forwarding page mapped before the region came
                self._lazy_pages.discard(page)
            readonly = bool(flags & MEM_READONLY)
            address = map_fd(fd, size, readonly)
            perms = UC_PROT_READ | UC_PROT_EXEC if readonly else UC_PROT_ALL
            try:
                uc.mem_map_ptr(gpa, size, perms, address)
            except UcError:  # the APIC pages (always mapped here)
                unmap(address, size)
                mapped = False
            else:
                self.dm_regions[region_id] = SharedRegion(region_id, gpa, size, flags, address)
        if not mapped:
            self.stats.region_conflicts += 1
        self._kick()

    def _dm_mem_del(self, region_id: int) -> None:
        """A MEM_DEL from the device model (VRAM when BAR0 stops decoding): the region leaves
        the vCPU's map; later accesses there are unmapped ones (forwarded, all-ones)."""
        old = self.dm_regions.pop(region_id, None)
        if old is None:
            return  # never mapped here (refused at MEM_ADD, already reported)
        self._unmap_region(old)
        self._kick()

    def _unmap_region(self, region: SharedRegion) -> None:
        self.cpu.uc.mem_unmap(region.gpa, region.size)
        unmap(region.address, region.size)
        first, last = region.gpa // PAGE, (region.gpa + region.size) // PAGE
        for pfn in [p for p in self.mem_types if first <= p < last]:
            del self.mem_types[pfn]

    def _dm_mem_type(self, first_pfn: int, nr: int, mem_type: int) -> None:
        """set_mem_type on pages of a device-model region: ram_ro = read/execute with writes
        discarded (_hook_write_prot), anything else = read/write RAM (PAM, protocol.md 4.7)."""
        start, size = first_pfn * PAGE, nr * PAGE
        region = self._region_at(start)
        if region is None or region.readonly or start + size > region.gpa + region.size:
            self._latch(Stop(StopReason.ERROR, f"set_mem_type on {start:#x}+{size:#x}: not "
                             "inside a writable device-model region"))
            return
        perms = UC_PROT_READ | UC_PROT_EXEC if mem_type == HVMMEM_RAM_RO else UC_PROT_ALL
        self.cpu.uc.mem_protect(start, size, perms)
        self.mem_types[first_pfn] = (nr, mem_type)
        # The permissions changed under code that may be running from these pages.
        self._kick()

    def _region_at(self, gpa: int) -> SharedRegion | None:
        for region in self.dm_regions.values():
            if region.contains(gpa):
                return region
        return None

    def _before_dm(self) -> None:
        """Right before an access the device model serves synchronously: what was posted goes
        first, then the time."""
        self.posted.flush()
        if self.sync_clock:
            self._send_clock()

    def _post(self, gpa: int, size: int, value: int, type_: int) -> bool:
        if not getattr(self.port, "buffered", False):
            return False
        self.posted.add(gpa, size, value, type_)
        return True

    def _send_posted(self, writes: list[tuple[int, int, int, int]]) -> None:
        self.stats.posted_writes += len(writes)
        self.stats.posted_batches += 1
        self.port.bufioreq(writes)  # type: ignore[attr-defined]

    def _flush_posted(self) -> None:
        """Hand over the batch and make the port send it (a run is ending)."""
        self.posted.flush()
        flush = getattr(self.port, "flush", None)
        if flush is not None:
            flush()

    def _clock_tick(self) -> None:
        """Send the time synchronously if CLOCK_PERIOD_NS passed since it last went out."""
        if self.sync_clock and self.clock.ns - self._clock_sent >= CLOCK_PERIOD_NS:
            self.stats.clock_ticks += 1
            self._send_clock(sync=True)

    def _send_clock(self, sync: bool = False) -> None:
        """Tell the device model the time, if it moved since we last did (one CLOCK at most
        per access it serves). Posted writes go before it."""
        self.posted.flush()
        now = self.clock.ns
        if now != self._clock_sent:
            self._clock_sent = now
            self.stats.clock_msgs += 1
            self.port.clock(now, sync)

    # ---- CPU hooks -------------------------------------------------------------------------
    def _hook_in(self, uc: Uc, port: int, size: int, _ud: object) -> int:
        self.clock.advance(self.exit_ns)
        self.stats.exits += 1
        router = self.router
        if router.port_route(port, size) is Route.DM:
            value = self._rep_string(port, size, is_in=True)
            if value is not None:
                return value
        value = router.pio_read(port, size)
        if port in (0x20, 0x21, 0xA0, 0xA1):  # OCW3 poll reads acknowledge
            self._irq_changed()
        self._clock_tick()  # a local poll loop (PM timer, PIC) still lets device timers run
        return value

    def _hook_out(self, uc: Uc, port: int, size: int, value: int, _ud: object) -> None:
        self.clock.advance(self.exit_ns)
        self.stats.exits += 1
        router = self.router
        # A write that will be posted skips the REP check: a REP OUTS to such a port then
        # posts its elements one by one, which costs no round trip at all.
        if (router.port_route(port, size) is Route.DM
                and not (router.post is not None and postable_port(port, size)
                         and getattr(self.port, "buffered", False))
                and self._rep_string(port, size, is_in=False) is not None):
            return
        router.pio_write(port, size, value)
        if port in (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x43):
            self.pit.run_until(self.clock.ns)
            self._irq_changed()

    def _rep_string(self, port: int, size: int, is_in: bool) -> int | None:
        """Move a whole REP INS/OUTS run as one pio_string call.

        Called from inside the per-element hook. The CPU will still finish *this* element after
        the hook returns (store the returned value at ES:(E)DI for INS, step (E)DI/(E)SI and
        decrement (E)CX), so the registers are set to their final values minus that one step,
        and for INS the hook returns element 0 as the device model wrote it.
        Returns None to fall back to a single-element access.
        """
        cpu = self.cpu
        # Cheap filter first (this runs on every exit the device model serves): one batched
        # register read, the CS base from a cache in protected mode, one memory read, and a
        # look at the opcode byte after the prefixes. Only REP INS/OUTS get past it. A stale
        # cached base can only make it miss a batch (the element-wise path is then taken,
        # still correct) or let a non-string instruction through to the full decode below.
        eip, cs, cr0, eflags = cpu.pc_state()
        if cr0 & CR0_PG or (cs, eip) in self._plain_io_pcs:
            return None
        head = self._code_head(cs, eip, cr0, eflags)
        if head is None:
            return None
        if not strings.is_rep_string(head):
            # A plain IN/OUT here: its next executions in this slice skip the code read.
            self._plain_io_pcs.add((cs, eip))
            return None
        code = cpu.read_linear(cpu.linear_pc(), 15)
        if code is None:
            return None
        insn = strings.decode_string_insn(code, cpu.code32())
        if insn is None or not insn.rep or insn.is_in != is_in:
            return None
        seg_base = cpu.seg_base(insn.segment)
        if seg_base is None:
            return None
        index_reg = x86.UC_X86_REG_EDI if is_in else x86.UC_X86_REG_ESI
        cx = cpu.reg(x86.UC_X86_REG_ECX)
        index = cpu.reg(index_reg)
        df = bool(cpu.eflags & EFLAGS_DF)
        plan = strings.plan_string(insn, size, cx, index, seg_base, df)
        if plan is None:
            return None
        lo = plan.gpa - (plan.count - 1) * size if df else plan.gpa
        if not self.ram.contains(lo, plan.count * size):
            return None  # an MMIO buffer: Xen does not batch these either
        self.router.before_dm()
        self.port.pio_string(port, size, plan.count, is_in, plan.gpa, df)
        self.router.pio_counts[port] += plan.count
        self.stats.rep_batches += 1
        self.stats.rep_elements += plan.count
        mask = 0xFFFFFFFF if insn.addr32 else 0xFFFF
        step = -size if df else size
        cpu.set_reg(x86.UC_X86_REG_ECX, (plan.new_cx & ~mask) | ((plan.new_cx + 1) & mask))
        cpu.set_reg(index_reg, (plan.new_index & ~mask) | ((plan.new_index - step) & mask))
        if is_in:
            return int.from_bytes(self.ram.read(plan.gpa, size), "little")
        return 0

    def _hook_rdtsc(self, uc: Uc, _ud: object) -> int:
        self.clock.advance(self.exit_ns)
        self.stats.rdtsc += 1
        self._clock_tick()
        tsc = self.clock.tsc()
        uc.reg_write(x86.UC_X86_REG_EAX, tsc & 0xFFFFFFFF)
        uc.reg_write(x86.UC_X86_REG_EDX, tsc >> 32)
        return 1  # skip the instruction: the registers are the result

    def _hook_cpuid(self, uc: Uc, _ud: object) -> int:
        leaf = int(uc.reg_read(x86.UC_X86_REG_EAX))
        self.stats.cpuid[leaf] = self.stats.cpuid.get(leaf, 0) + 1
        if leaf == CPUID_HYPERVISOR_LEAF:
            # No hypervisor signature: firmware takes its bare-metal/QEMU paths (obstacle 12).
            for reg in (x86.UC_X86_REG_EAX, x86.UC_X86_REG_EBX, x86.UC_X86_REG_ECX,
                        x86.UC_X86_REG_EDX):
                uc.reg_write(reg, 0)
            return 1
        return 0

    def _hook_intr(self, uc: Uc, intno: int, _ud: object) -> None:
        cpu = self.cpu
        pc = cpu.linear_pc()
        before = cpu.read_linear((pc - 2) & 0xFFFFFFFF, 2) or b""
        software = (before == bytes((0xCD, intno)) or (intno == 3 and before[-1:] == b"\xcc")
                    or (intno == 4 and before[-1:] == b"\xce"))
        counts = self.stats.soft_ints if software else self.stats.exceptions
        counts[intno] = counts.get(intno, 0) + 1
        # Software ints: EIP is past the instruction, which is the return address. Faults:
        # EIP is the faulting instruction, which is also the return address. Unicorn does not
        # tell the exception's error code; 0 stands in for it (cpu.py).
        error_code = 0 if not software and intno in ERROR_CODE_VECTORS else None
        if intno == 14 and not software:
            error_code = cpu.page_fault_error_code()
        self._deliver(intno, software=software, error_code=error_code,
                      kind="int" if software else "exception")

    def _deliver(self, vector: int, *, software: bool, error_code: int | None,
                 kind: str) -> bool:
        """Deliver through the IVT (real mode) or the IDT (protected mode, SDM vol. 3, 6.12);
        latch an ERROR stop and return False if the CPU would fault doing it."""
        cpu = self.cpu
        if not cpu.protected():
            if cpu.reg(x86.UC_X86_REG_CR0) & CR0_PE:
                self._latch(Stop(StopReason.ERROR, f"{kind} {vector:#x} in virtual-8086 mode: "
                                 "not implemented", vector))
                return False
            cpu.deliver_real(vector)
            return True
        try:
            cpu.deliver_protected(vector, software=software, error_code=error_code)
        except DeliveryError as exc:
            self._latch(Stop(StopReason.ERROR, f"{kind} {vector:#x} in protected mode: {exc}",
                             vector))
            return False
        return True

    # ---- memory hooks ----------------------------------------------------------------------
    def _mmio_read_cb(self, uc: Uc, offset: int, size: int, base: int) -> int:
        self.clock.advance(self.exit_ns)
        self.stats.exits += 1
        return self.router.mmio_read(base + offset, size)

    def _mmio_write_cb(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        self.clock.advance(self.exit_ns)
        self.stats.exits += 1
        if self._mmio_string is not None and self._rep_mmio_write(base + offset, size):
            return
        self.router.mmio_write(base + offset, size, value)

    def _rep_mmio_write(self, gpa: int, size: int) -> bool:
        """Move a whole REP STOS / REP MOVS (RAM source) into device-model MMIO as one COPY
        ioreq with a count, as Xen's hvmemul_rep_stos / hvmemul_rep_movs do (xen-protocol.md
        1.4): STOS sends the fill value (data_is_ptr 0), MOVS the GPA of the RAM source
        (data_is_ptr 1); neither side crosses a page, the rest of the instruction follows as
        the next request. Called from the store of the first element; the registers are left
        as _rep_string leaves them (this element still to be completed by the CPU). False:
        store this element alone (not a REP string, an MMIO source, not the device model's).
        """
        cpu = self.cpu
        eip, cs, cr0, eflags = cpu.pc_state()
        if cr0 & CR0_PG or (cs, eip) == self._mmio_single_pc:
            return False
        head = self._code_head(cs, eip, cr0, eflags)
        if head is None or not strings.is_rep_mem_string(head):
            return False
        code = cpu.read_linear(cpu.linear_pc(), 15)
        insn = None if code is None else strings.decode_mem_string_insn(code, cpu.code32())
        if insn is None or not insn.rep:
            return False
        es_base = cpu.seg_base(strings.SEG_ES)
        if es_base is None:
            return False
        df = bool(eflags & EFLAGS_DF)
        cx = cpu.reg(x86.UC_X86_REG_ECX)
        di = cpu.reg(x86.UC_X86_REG_EDI)
        dst = strings.plan_string(insn, size, cx, di, es_base, df)
        if dst is None or dst.gpa != gpa:
            return False
        count = dst.count
        data, ptr, si = 0, False, 0
        if insn.movs:
            src_base = cpu.seg_base(insn.segment)
            si = cpu.reg(x86.UC_X86_REG_ESI)
            src = None if src_base is None else strings.plan_string(insn, size, cx, si,
                                                                    src_base, df)
            if src is None:
                return False
            count = min(count, src.count)
            lo = src.gpa - (count - 1) * size if df else src.gpa
            if count < 2 or not self._ram_buffer(lo, count * size):
                # An MMIO source: Xen does not batch MMIO -> MMIO either. The rest of this
                # instruction's elements are not worth decoding again (_mmio_single_pc).
                self._mmio_single_pc = (cs, eip)
                return False
            data, ptr = src.gpa, True
        else:
            data = cpu.reg(x86.UC_X86_REG_EAX) & ((1 << 8 * size) - 1)
        lo = gpa - (count - 1) * size if df else gpa
        if not self.router.dm_mmio(lo, count * size):
            self._mmio_single_pc = (cs, eip)
            return False
        self.router.before_dm()
        self._mmio_string(gpa, size, count, data, ptr, df)  # type: ignore[misc]
        self.router.mmio_counts[gpa >> 12] += count
        self.stats.mmio_rep_batches += 1
        self.stats.mmio_rep_elements += count
        # As in _rep_string: final values minus the one step the CPU still takes.
        mask = 0xFFFFFFFF if insn.addr32 else 0xFFFF
        step = -size if df else size
        cpu.set_reg(x86.UC_X86_REG_ECX, (cx & ~mask) | (((cx & mask) - count + 1) & mask))
        cpu.set_reg(x86.UC_X86_REG_EDI, (di & ~mask) | (((di & mask) + step * (count - 1)) & mask))
        if insn.movs:
            cpu.set_reg(x86.UC_X86_REG_ESI,
                        (si & ~mask) | (((si & mask) + step * (count - 1)) & mask))
        return True

    def _ram_buffer(self, gpa: int, size: int) -> bool:
        """Whether [gpa, gpa + size) is memory the device model can read as guest RAM for a
        data_is_ptr request: the guest RAM, or the shadow RAM at 0xC0000-0xFFFFF (it is the
        device model's own memory there; on Xen it is plain guest RAM)."""
        if self.ram.contains(gpa, size):
            return True
        region = self._region_at(gpa) if SHADOW_START <= gpa < HIGH_START else None
        return (region is not None and not region.readonly
                and gpa + size <= min(region.gpa + region.size, HIGH_START))

    def _code_head(self, cs: int, eip: int, cr0: int, eflags: int) -> bytearray | None:
        """The 15 bytes at CS:EIP for the cheap REP checks (paging off), the CS base cached
        per selector in protected mode; None if the base or the bytes cannot be read."""
        if cr0 & CR0_PE and not eflags & EFLAGS_VM:
            cs_base = self._cs_bases.get(cs)
            if cs_base is None:
                cs_base = self.cpu.seg_base(strings.SEG_CS)
                if cs_base is None:
                    return None
                self._cs_bases[cs] = cs_base
        else:
            cs_base = cs << 4
        try:
            return self.cpu.uc.mem_read((cs_base + eip) & 0xFFFFFFFF, 15)
        except UcError:
            return None

    def _hook_unmapped(
        self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object
    ) -> bool:
        """First touch of a page nobody mapped: map it as a forwarding MMIO page and retry.
        Reads then go to the device model if it claims them, and are all-ones otherwise."""
        page = address & ~(PAGE - 1)
        if self.stats.lazy_mmio_pages >= MAX_LAZY_MMIO_PAGES or (
            (address + size - 1) & ~(PAGE - 1)
        ) != page:
            self._latch(Stop(StopReason.ERROR, f"unmapped access at {address:#x}"))
            return False
        self.stats.lazy_mmio_pages += 1
        self._lazy_pages.add(page)
        uc.mmio_map(page, PAGE, self._mmio_read_cb, page, self._mmio_write_cb, page)
        return True

    def _hook_fetch_unmapped(
        self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object
    ) -> bool:
        self._latch(Stop(StopReason.ERROR, f"instruction fetch from non-RAM {address:#x}"))
        return False

    def _hook_write_prot(
        self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object
    ) -> bool:
        # A write to the ROM (the flash, or shadow pages of type ram_ro) goes nowhere on real
        # hardware. Returning True tells Unicorn the write was handled; it then skips it.
        if self._region_at(address) is not None:
            self.stats.rom_writes_dropped += 1
            return True
        return False
