"""One fuzz input through the sans-IO machine: decode bytes into guest RAM contents and an
ioreq stream, run it in strict mode under a watchdog, and say what went wrong.

Input layout: the first `ram_seed` bytes are copied into guest RAM at 0 (descriptors, PRD
tables, frame lists); the rest is an op stream. Every op reads a few bytes; addresses are
biased towards the ranges and PCI functions of the selected devices, and pointers into guest
RAM towards the seeded window (so a PRD table in the seed can point at more of the seed).
Missing bytes read as zero, so every byte string is a valid input.

Findings: `escape` (any exception out of the machine in strict mode, or out of a timer
callback), `hang` (an ioreq still running after the hang bound: the SIGALRM watchdog breaks
it), `slow` (an ioreq slower than the slow bound: logged with its input, not fatal), `memory`
(a per-input allocation peak over the bound, with --track-memory) and `queue` (an internal
queue over its bound after the input).
"""

from __future__ import annotations

import gc
import signal
import time
import traceback
from dataclasses import dataclass, field

from devmodel.core.clock import MAX_STALE_ENTRIES
from devmodel.core.pci import PciDevice

from .machine import FuzzSetup, Targets, build_fuzz_machine

PIO, COPY, PCI_CONFIG, TIMEOFFSET, INVALIDATE = 0, 1, 2, 7, 8
READY, PTR, DIR, DF = 0x01, 0x10, 0x20, 0x40
WIRE_TYPES = (PIO, COPY, PCI_CONFIG, TIMEOFFSET, INVALIDATE)  # what the daemon lets through
U64 = (1 << 64) - 1
MAX_OPS = 4096
# Clock steps: from a few microseconds (UART character times) to seconds (RTC update).
CLOCK_STEPS = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)
# Where the fuzzer programs BARs (I/O, memory): clear of fixed ranges, like SeaBIOS does.
IO_BAR_BASES = (0xC000, 0xC040, 0xC100, 0xD000)
MEM_BAR_BASES = (0xE0000000, 0xE1000000, 0xF0000000, 0xFEBF0000)


class Hang(BaseException):  # noqa: N818 - a BaseException so `except Exception` cannot eat it
    """Raised by the watchdog inside an ioreq that ran past the hang bound."""


@dataclass
class Limits:
    slow_ns: int = 20_000_000  # an ioreq slower than this is logged (target: <= 50 ms worst)
    hang_s: float = 1.0  # an ioreq still running after this is a hang
    memory_peak: int = 64 << 20  # per-input allocation peak (with track_memory)
    track_memory: bool = False


@dataclass
class Finding:
    kind: str  # escape | hang | slow | memory | queue
    message: str
    detail: str = ""  # traceback or figures
    op_index: int = -1  # event index of the offending ioreq
    ns: int = 0  # slow: how long the ioreq took
    where: str = ""  # slow: type and address of the ioreq

    @property
    def signature(self) -> str:
        """What tells two findings apart for de-duplication: kind and innermost frames (slow
        ones: the type and address of the ioreq)."""
        if self.kind == "slow":
            return f"slow|{self.where}"
        lines = [ln for ln in self.detail.splitlines() if ln.strip().startswith("File ")]
        return self.kind + "|" + "|".join(ln.strip() for ln in lines[-2:]) + "|" + (
            self.message.split(":")[0] if not lines else "")


# ---- latency histogram ------------------------------------------------------------------
# Per-ioreq CPU time in buckets of 2**HIST_SHIFT ns (~1 us) up to HIST_BUCKETS buckets (~67 ms);
# everything slower lands in the last bucket (and is a `slow` finding anyway). A list index per
# ioreq is cheap enough for the hot path and gives p99.9 to a microsecond.
HIST_SHIFT = 10
HIST_BUCKETS = 1 << 16


def new_histogram() -> list[int]:
    return [0] * HIST_BUCKETS


def percentile_ns(hist: list[int], q: float) -> int:
    """Upper edge (ns) of the bucket holding the q-quantile (0 < q <= 1) of the histogram."""
    total = sum(hist)
    if not total:
        return 0
    want = q * total
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= want:
            return (i + 1) << HIST_SHIFT
    return HIST_BUCKETS << HIST_SHIFT


@dataclass
class Outcome:
    ioreqs: int = 0
    max_ioreq_ns: int = 0
    max_index: int = -1  # event index of the slowest ioreq
    max_owner: str = ""  # the device it went to
    findings: list[Finding] = field(default_factory=list)
    events: list = field(default_factory=list)

    @property
    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.kind != "slow"]


# ---- garbage-collection time, excluded from ioreq timings -------------------------------
_gc_ns = [0, 0]  # total, start of the running collection


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_ns[1] = time.thread_time_ns()
    else:
        _gc_ns[0] += time.thread_time_ns() - _gc_ns[1]


if _on_gc not in gc.callbacks:
    gc.callbacks.append(_on_gc)


# ---- the watchdog -----------------------------------------------------------------------
_op_started = 0  # monotonic ns when the running ioreq started, 0 between ioreqs
_hang_ns = 1_000_000_000


def _on_alarm(signum, frame) -> None:
    if _op_started and time.monotonic_ns() - _op_started > _hang_ns:
        raise Hang(f"ioreq running for more than {_hang_ns / 1e9:.3f} s")


class Watchdog:
    """A periodic SIGALRM (a quarter of the bound) that breaks an ioreq running too long.
    Only usable in the main thread; elsewhere hangs are only measured, not broken."""

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s
        self._old = None
        self.active = False

    def __enter__(self) -> Watchdog:
        global _hang_ns
        _hang_ns = int(self.hang_s * 1e9)
        try:
            self._old = signal.signal(signal.SIGALRM, _on_alarm)
        except ValueError:  # not the main thread
            return self
        period = max(0.01, self.hang_s / 4)
        signal.setitimer(signal.ITIMER_REAL, period, period)
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, self._old)
            self.active = False


# ---- decoding ---------------------------------------------------------------------------
class Reader:
    __slots__ = ("b", "p", "n")

    def __init__(self, b: bytes, start: int = 0) -> None:
        self.b = b
        self.p = start
        self.n = len(b)

    def left(self) -> int:
        return self.n - self.p

    def u8(self) -> int:
        p = self.p
        if p >= self.n:
            self.p = p + 1
            return 0
        self.p = p + 1
        return self.b[p]

    def uint(self, k: int) -> int:
        chunk = self.b[self.p : self.p + k]
        self.p += k
        return int.from_bytes(chunk, "little")

    def take(self, k: int) -> bytes:
        chunk = self.b[self.p : self.p + k]
        self.p += k
        return bytes(chunk) + bytes(k - len(chunk))


class Session:
    """A machine and its recording: every ioreq, clock step and RAM write, in order."""

    def __init__(self, setup: FuzzSetup, limits: Limits, hist: list[int] | None = None) -> None:
        self.setup = setup
        self.limits = limits
        self.m = build_fuzz_machine(setup)
        self.targets = Targets(self.m, setup.devices)
        self.events: list = []
        self.now = 0
        self.ioreqs = 0
        self.max_ns = 0
        self.max_index = -1
        self.max_owner = ""
        self.hist = hist
        self.slow: list[Finding] = []
        self.seed_len = 0

    def close(self) -> None:
        self.m.close_backends()
        self.m.memory.close()

    # ---- the three things a hypervisor does -----------------------------------------------
    def io(self, type_: int, addr: int, data: int, count: int, size: int, bits: int) -> int:
        global _op_started
        ev = ["io", type_, addr & U64, data & U64, count, size, bits | READY, None]
        self.events.append(ev)
        m = self.m
        gc0 = _gc_ns[0]
        c0 = time.thread_time_ns()
        _op_started = time.monotonic_ns()
        try:
            res = m.handle_ioreq(type_, ev[2], ev[3], count, size, ev[6]) & U64
        finally:
            _op_started = 0
        # CPU time of this thread minus garbage collection: what the ioreq itself cost, not
        # what other processes or a collection of the fuzzer's garbage did meanwhile.
        dt = time.thread_time_ns() - c0 - (_gc_ns[0] - gc0)
        ev[7] = res
        self.ioreqs += 1
        m.outbox.clear()  # the dm_ops a daemon would send (IRQ levels, range maps)
        hist = self.hist
        if hist is not None:
            b = dt >> HIST_SHIFT
            hist[b if b < HIST_BUCKETS else HIST_BUCKETS - 1] += 1
        if dt > self.max_ns:
            self.max_ns = dt
            self.max_index = len(self.events) - 1
            self.max_owner = self.owner(type_, ev[2])
        if dt > self.limits.slow_ns:
            self.slow.append(Finding("slow", f"ioreq took {dt / 1e6:.1f} ms", describe(ev),
                                     len(self.events) - 1, dt, f"{type_}:{ev[2]:#x}"))
            if dt > self.limits.hang_s * 1e9:
                raise Hang(f"ioreq took {dt / 1e9:.3f} s")
        return res

    def owner(self, type_: int, addr: int) -> str:
        """Name of the device an ioreq went to ("" if none): says which device was slow."""
        m = self.m
        if type_ == PCI_CONFIG:
            dev = m.pci.devices.get((addr >> 32) & 0xFF)
            return dev.name if dev is not None else ""
        space = m.pio if type_ == PIO else m.mmio if type_ == COPY else None
        rg = space.find(addr) if space is not None else None
        owner = getattr(rg, "owner", None)
        return getattr(owner, "name", "") or (rg.name if rg is not None else "")

    def clock_step(self, ns: int) -> None:
        global _op_started
        self.now += ns
        self.events.append(["clock", self.now])
        clock = self.m.clock
        _op_started = time.monotonic_ns()
        try:
            clock.set_virtual(self.now)
            clock.run_due(clock.now())
        finally:
            _op_started = 0
        self.m.outbox.clear()

    def mem_write(self, gpa: int, data: bytes) -> None:
        self.events.append(["mem", gpa, bytes(data)])
        self.m.memory.write(gpa, data)  # outside RAM: dropped, as a CPU write to nothing

    # ---- biased choices -----------------------------------------------------------------
    def ram_ptr(self, r: Reader, align: int = 1) -> int:
        mode = r.u8()
        if mode < 160 and self.seed_len:
            v = r.uint(2) % self.seed_len
        elif mode < 240:
            v = r.uint(3) % self.setup.ram
        else:
            v = r.uint(4)
        return v & ~(align - 1)


def describe(ev: list) -> str:
    if ev[0] == "io":
        _, t, addr, data, count, size, bits, res = ev
        d = "read" if bits & DIR else "write"
        extra = (" ptr" if bits & PTR else "") + (" df" if bits & DF else "")
        r = f" -> {res:#x}" if res is not None else ""
        return f"ioreq type={t} {d}{extra} addr={addr:#x} size={size} count={count} data={data:#x}{r}"
    if ev[0] == "clock":
        return f"clock {ev[1]} ns"
    return f"ram write {ev[1]:#x} ({len(ev[2])} bytes)"


def _size_for(r: Reader, sizes) -> int:
    opts = sorted(sizes)
    return opts[r.u8() % len(opts)]


def _op_port(s: Session, r: Reader, read: bool) -> None:
    ranges = s.targets.pio
    if not ranges:
        return _op_raw(s, r)
    rg = ranges[r.u8() % len(ranges)]
    off = r.u8() % rg.length
    size = _size_for(r, (1, 2, 4) if r.u8() < 32 else rg.sizes)
    val = r.uint(4)
    s.io(PIO, rg.start + off, 0 if read else val, 1, size, DIR if read else 0)


def _op_mmio(s: Session, r: Reader, read: bool) -> None:
    ranges = s.targets.mmio
    if not ranges:
        return _op_port(s, r, read)
    rg = ranges[r.u8() % len(ranges)]
    off = r.uint(4) % rg.length
    size = _size_for(r, (1, 2, 4, 8) if r.u8() < 32 else rg.sizes)
    val = r.uint(8)
    s.io(COPY, rg.start + off, 0 if read else val, 1, size, DIR if read else 0)


def _pick_pci(s: Session, r: Reader) -> PciDevice | None:
    devs = s.targets.pci
    return devs[r.u8() % len(devs)] if devs else None


def _op_pci(s: Session, r: Reader, read: bool) -> None:
    dev = _pick_pci(s, r)
    devfn = dev.devfn if dev is not None else r.u8()
    sel = r.u8()
    reg = (sel & 0x3F) if sel < 128 else r.u8()
    size = (1, 2, 4)[r.u8() % 3]
    if r.u8() < 224:
        reg &= ~(size - 1) & 0xFF
    val = r.uint(4)
    s.io(PCI_CONFIG, devfn << 32 | reg, 0 if read else val, 1, size, DIR if read else 0)


def _op_cf8(s: Session, r: Reader, read: bool) -> None:
    """Config access through the chipset's ports, as a CPU does it."""
    dev = _pick_pci(s, r)
    devfn = dev.devfn if dev is not None else r.u8()
    reg = r.u8()
    size = (1, 2, 4)[r.u8() % 3]
    s.io(PIO, 0xCF8, 0x80000000 | devfn << 8 | (reg & 0xFC), 1, 4, 0)
    port = 0xCFC + (reg & 3 & ~(size - 1))
    s.io(PIO, port, 0 if read else r.uint(4), 1, size, DIR if read else 0)


def _op_bar(s: Session, r: Reader) -> None:
    """Program one BAR of a selected function and turn decoding and bus mastering on."""
    dev = _pick_pci(s, r)
    if dev is None:
        return
    bars = [b for b in dev.bars if b is not None]
    sel = r.u8()
    if not bars or sel >= 240:
        base = MEM_BAR_BASES[sel % len(MEM_BAR_BASES)]
        s.io(PCI_CONFIG, dev.devfn << 32 | 0x30, 0, 1, 4, 0)  # no ROM ...
        s.io(PCI_CONFIG, dev.devfn << 32 | 0x30, base | 1, 1, 4, 0)  # ... then the ROM BAR
    else:
        bar = bars[sel % len(bars)]
        bases = IO_BAR_BASES if bar.io else MEM_BAR_BASES
        base = bases[r.u8() % len(bases)]
        s.io(PCI_CONFIG, dev.devfn << 32 | (0x10 + 4 * bar.index), base | int(bar.io), 1, 4, 0)
    s.io(PCI_CONFIG, dev.devfn << 32 | 0x04, 0x0007, 1, 2, 0)


def _op_rep(s: Session, r: Reader) -> None:
    """`rep ins/outs` (PIO) or `rep movs` (MMIO) through guest RAM: data_is_ptr."""
    use_mmio = r.u8() < 64 and s.targets.mmio
    ranges = s.targets.mmio if use_mmio else s.targets.pio
    if not ranges:
        return
    rg = ranges[r.u8() % len(ranges)]
    size = _size_for(r, rg.sizes)
    off = (r.uint(2) % rg.length) & ~(size - 1)
    # mostly short strings; a whole page (the most Xen sends) now and then
    count = 1 + (r.u8() % 16 if r.u8() < 224 else r.uint(2) % (4096 // size))
    bits = PTR | (DIR if r.u8() & 1 else 0) | (DF if r.u8() < 16 else 0)
    s.io(COPY if use_mmio else PIO, rg.start + off, s.ram_ptr(r, size), count, size, bits)


def _op_raw(s: Session, r: Reader) -> None:
    """Anything the wire lets through: checks the dispatcher itself (XSA-199 and friends)."""
    t = WIRE_TYPES[r.u8() % len(WIRE_TYPES)]
    sel = r.u8()
    if sel < 96 and s.targets.pio:
        addr = s.targets.pio[sel % len(s.targets.pio)].start + (r.u8() % 16) - 8
    elif sel < 192:
        addr = r.uint(4)
    else:
        addr = r.uint(8)
    size = (1, 2, 4, 8)[r.u8() % 4]
    c = r.u8()
    count = 1 if c < 192 else (r.uint(4) if c >= 250 else c)
    bits = r.u8() & (PTR | DIR | DF)
    data = s.ram_ptr(r) if bits & PTR else r.uint(8)
    s.io(t, addr, data, count, size, bits)


def _op_clock(s: Session, r: Reader) -> None:
    step = CLOCK_STEPS[r.u8() % len(CLOCK_STEPS)]
    s.clock_step(step * (1 + r.u8() % 16))


def _op_ram(s: Session, r: Reader) -> None:
    gpa = s.ram_ptr(r)
    s.mem_write(gpa, r.take(1 + r.u8() % 32))


_OPS = (
    lambda s, r: _op_port(s, r, False), lambda s, r: _op_port(s, r, True),
    lambda s, r: _op_port(s, r, False), lambda s, r: _op_port(s, r, True),
    lambda s, r: _op_mmio(s, r, False), lambda s, r: _op_mmio(s, r, True),
    lambda s, r: _op_pci(s, r, False), lambda s, r: _op_pci(s, r, True),
    lambda s, r: _op_cf8(s, r, False), lambda s, r: _op_cf8(s, r, True),
    _op_bar, _op_rep, _op_raw, _op_clock, _op_ram, _op_clock,
)


def run_ops(s: Session, data: bytes, ram_seed: int) -> None:
    seed = data[:ram_seed]
    s.seed_len = len(seed)
    if seed:
        s.mem_write(0, seed)
    r = Reader(data, len(seed))
    ops = 0
    while r.left() > 0 and ops < MAX_OPS:
        _OPS[r.u8() % len(_OPS)](s, r)
        s.targets.refresh()
        ops += 1


def run_input(data: bytes, setup: FuzzSetup, limits: Limits, ram_seed: int = 4096,
              hist: list[int] | None = None, seed: list[tuple] | None = None) -> Outcome:
    """Run one input on a fresh machine. The caller holds the Watchdog; `hist` (from
    new_histogram) accumulates per-ioreq latencies across inputs. With `seed` (a recorded
    boot's ioreq stream, devmodel.fuzz.seeds), `data` are the mutations of that stream."""
    out = Outcome()
    s = Session(setup, limits, hist)
    tracing = False
    if limits.track_memory:
        import tracemalloc

        tracing = not tracemalloc.is_tracing()
        if tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
    try:
        if seed is None:
            run_ops(s, data, ram_seed)
        else:
            from .seeds import run_seed

            run_seed(s, seed, data)
    except Hang as e:
        out.findings.append(Finding("hang", str(e), traceback.format_exc(), _last_io(s)))
    except Exception as e:  # strict mode: whatever escaped the machine's containment
        cause = e.__cause__ or e
        msg = f"{type(e).__name__}: {e}" + (
            f" (caused by {type(cause).__name__}: {cause})" if cause is not e else "")
        detail = "".join(traceback.format_exception(e))
        out.findings.append(Finding("escape", msg, detail, _last_io(s)))
    finally:
        if limits.track_memory:
            import tracemalloc

            _, peak = tracemalloc.get_traced_memory()
            if tracing:
                tracemalloc.stop()
            if peak > limits.memory_peak:
                out.findings.append(Finding("memory", f"allocation peak {peak >> 20} MiB in one "
                                            "input", f"peak={peak}", len(s.events) - 1))
        heap = len(s.m.clock._heap)
        if heap > MAX_STALE_ENTRIES + 64:
            out.findings.append(Finding("queue", f"timer heap holds {heap} entries", "",
                                        len(s.events) - 1))
        s.close()
    out.findings[:0] = s.slow
    out.ioreqs = s.ioreqs
    out.max_ioreq_ns = s.max_ns
    out.max_index = s.max_index
    out.max_owner = s.max_owner
    out.events = s.events
    return out


def _last_io(s: Session) -> int:
    for i in range(len(s.events) - 1, -1, -1):
        if s.events[i][0] == "io":
            return i
    return -1
