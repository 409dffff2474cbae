"""Reset to boot sector: devmodel (`devmodel boot`) against QEMU (TCG) in the same run.

    .venv/bin/python bench/boot.py [--rounds 3] [--bios FILE] [--no-qemu] [--no-pin] [--profile]

Both boot the same SeaBIOS image (default Debian's bios-256k.bin) with 128 MiB of RAM and the
embedded demo disk (devmodel/demo_disk.py) as the IDE primary master, and are stopped at the
boot sector's first write to port 0xE9 (SeaBIOS itself writes its log to 0x402, never 0xE9).

- devmodel: `devmodel.boot.BootSession` in this process, as `devmodel boot` runs it: the daemon
  as a subprocess (`devmodel run --clock virtual`), the client on its socket and the Unicorn
  simulator as the vCPU, with `BootConfig.stop_at_port = 0xE9`. Timestamps: session start,
  daemon socket up, handshake done (ioreq server enabled), reset (the vCPU starts at F000:FFF0),
  SeaBIOS's first byte on 0x402, first write to 0xE9 (both seen by the simulator's port
  observer). This interpreter's start-up and imports are not counted (done before any round);
  the daemon's are, under start-up.
- QEMU: Debian's qemu-system-x86 (installed with apt-get if missing, else the column is
  skipped with a message), `-accel tcg -machine pc -m 128 -nodefaults -display none`, the
  image as `if=ide,index=0`, COM1 on `-serial null` (devmodel has a COM1 too), and two
  isa-debugcon devices, at 0x402 and 0xE9, each writing to a FIFO that this process reads:
  the first byte on each is timestamped as it arrives. Measured from the exec to the first
  0xE9 byte; QEMU is killed then.

CPU pinning (default, as `devmodel boot` runs; `--no-pin` turns it off for both columns):
devmodel's daemon and simulator share one CPU (devmodel/boot.py explains why), and QEMU is
pinned to one CPU too (sched_setaffinity before its exec, inherited by all its threads), for
fairness: its TCG vCPU is a single thread here, so one CPU is what it uses anyway.

Figures, each a median with min-max over interleaved rounds (devmodel and QEMU alternate
which goes first):
- startup_s: devmodel: session start to the ioreq server enabled (daemon process, imports,
  machine build, handshake, shared memory); QEMU: exec to SeaBIOS's first byte on 0x402.
- reset_to_e9_s (devmodel only): reset to the first 0xE9 write; what the simulator runs.
- bios_402_to_e9_s: first 0x402 byte to first 0xE9 byte, on both: the same window measured
  the same way (SeaBIOS prints its banner a few thousand instructions after reset).
- total_s: start (session / exec) to the first 0xE9 byte.
- total_cpu_s: CPU seconds used from the start to the first 0xE9 byte: devmodel's daemon
  process (its whole life) plus this process since the session started; QEMU's process (its
  whole life, all threads). Less sensitive than wall time to a busy machine, on which the
  strictly alternating daemon and simulator lose their shared CPU at every switch.
- unicorn_s (devmodel only, from separate instrumented boots, one per round, not the timed
  ones): wall time inside Unicorn's emu_start minus the time spent in the simulator's Python
  exit handlers (which includes every round trip to the daemon): what the CPU emulator itself
  costs for this boot, translation and the binding's entry into each handler included. No
  exit handling, transport or device model can make the boot faster than this.
  exit_handlers_s: the other part, the Python exit handlers with their round trips.
The ratios devmodel/QEMU of each; the target (issue 3: within 2x of QEMU) is applied to
bios_402_to_e9 and also shown for reset_to_e9 against QEMU's exec-to-0xE9; unicorn_s is shown
against QEMU's bios_402_to_e9 too (the floor the target is measured against).
ioreqs: IOREQ messages devmodel's vCPU sent the daemon up to the first 0xE9 write (port, MMIO,
PCI config, rep-string batches; the INVALIDATE barriers that follow a synchronous CLOCK are
counted apart), with CLOCK messages, socket writes and the simulator's exits. QEMU: n/a.

One JSON object goes to stdout, a table to stderr. Informative only: never assert on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from common import qemu_version  # first: it puts the repository on sys.path

from devmodel.boot import BootConfig, BootSession, current_cpu
from devmodel.demo_disk import write_image
from devmodel.hvsim.firmware import DEFAULT_BIOS

E9 = 0xE9
DEBUG_PORT = 0x402
MEMORY_MIB = 128
TARGET_RATIO = 2.0
QEMU_BIN = "qemu-system-x86_64"
QEMU_DEB = "qemu-system-x86"


def log(msg: str) -> None:
    print(f"bench/boot: {msg}", file=sys.stderr, flush=True)


# ---- devmodel -----------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_devmodel(bios: str, timeout: float, profile: object | None = None,
                 pin: bool = True) -> dict:
    """One boot to the first 0xE9 write; times in seconds, counters at that write."""
    config = BootConfig(bios=bios, memory=MEMORY_MIB << 20, timeout=timeout, stop_at_port=E9,
                        pin=pin)
    cpu_start = time.process_time()
    session = BootSession(config)
    try:
        hv, sim = session.hv, session.sim
        assert hv is not None and sim is not None and session.proc is not None
        # The client counts every synchronous ioreq it sends (INVALIDATE barriers apart);
        # those of the session's set-up are not the vCPU's.
        ioreqs0, barriers0 = hv.ioreqs_sent, hv.barriers_sent
        marks: dict[str, float] = {}
        at_e9: dict[str, int] = {}

        def observe(kind: str, addr: int, size: int, value: int, is_write: bool) -> None:
            if kind != "pio" or not is_write:
                return
            if addr == DEBUG_PORT and "first_402" not in marks:
                marks["first_402"] = time.monotonic()
            elif addr == E9 and not at_e9:
                daemon_total = proc_cpu_s(session.proc.pid) if session.proc else None
                marks["total_cpu"] = (time.process_time() - cpu_start + daemon_total
                                      if daemon_total is not None else -1.0)
                at_e9.update(ioreqs=hv.ioreqs_sent - ioreqs0, barriers=hv.barriers_sent - barriers0,
                             clock_msgs=sim.stats.clock_msgs, exits=sim.stats.exits,
                             socket_writes=hv.socket_writes, virtual_ns=sim.clock.ns,
                             insns=sim.stats.insns, slices=sim.stats.slices,
                             halts=sim.stats.halts, irqs=sim.stats.irqs,
                             rep_batches=sim.stats.rep_batches,
                             rep_elements=sim.stats.rep_elements,
                             posted_batches=sim.stats.posted_batches,
                             posted_writes=sim.stats.posted_writes,
                             pm_timer_local=sim.pm_timer.reads,
                             rtc_index_local=sim.router.rtc_index_reads,
                             mmio_rep_batches=sim.stats.mmio_rep_batches,
                             mmio_rep_elements=sim.stats.mmio_rep_elements)

        sim.observers.append(observe)
        daemon_cpu0 = proc_cpu_s(session.proc.pid)
        cpu0 = time.process_time()
        if profile is not None:
            profile.enable()  # type: ignore[attr-defined]
        try:
            result = session.run()
        finally:
            if profile is not None:
                profile.disable()  # type: ignore[attr-defined]
        cpu1 = time.process_time()
        daemon_cpu1 = proc_cpu_s(session.proc.pid)
        top_ports = sim.router.pio_counts.most_common(12)
        pinned = session.pinned_cpu
        notes = list(session.notes)
    finally:
        session.close()
    if result.outcome != "port" or not at_e9:
        raise RuntimeError(f"devmodel did not reach the boot sector: {result.message}\n"
                           f"{result.daemon_log[-2000:]}")
    t = result.timings
    return {
        "startup_s": t["ready"] - t["start"],
        "daemon_up_s": t["daemon_up"] - t["start"],
        "handshake_s": t["ready"] - t["daemon_up"],
        "reset_to_e9_s": t["port"] - t["run"],
        "reset_to_402_s": marks["first_402"] - t["run"] if "first_402" in marks else None,
        "bios_402_to_e9_s": t["port"] - marks["first_402"] if "first_402" in marks else None,
        "total_s": t["port"] - t["start"],
        "total_cpu_s": marks["total_cpu"] if marks.get("total_cpu", -1.0) >= 0 else None,
        "sim_cpu_s": cpu1 - cpu0,
        "daemon_cpu_s": (daemon_cpu1 - daemon_cpu0
                         if daemon_cpu0 is not None and daemon_cpu1 is not None else None),
        "counters": at_e9,
        "top_ports": {f"{p:#x}": n for p, n in top_ports},
        "pinned_cpu": pinned,
        "notes": notes,
    }


# The simulator's Python exit handlers: every callback it registers with Unicorn.
SIM_HOOKS = ("_hook_in", "_hook_out", "_hook_cpuid", "_hook_rdtsc", "_hook_intr",
             "_hook_unmapped", "_hook_fetch_unmapped", "_hook_write_prot", "_hook_window",
             "_mmio_read_cb", "_mmio_write_cb")


@contextlib.contextmanager
def unicorn_split() -> Iterator[dict[str, float]]:
    """While active, new simulators time their Python exit handlers and Unicorn's emu_start
    (class attributes wrapped before the Simulator binds them; restored on exit). The dict
    yielded gets "emu_s", "hooks_s" and "hook_calls"."""
    from unicorn import Uc

    from devmodel.hvsim.simulator import Simulator

    acc = {"emu_s": 0.0, "hooks_s": 0.0, "hook_calls": 0}
    clock = time.perf_counter

    def timed(fn: Callable, key: str) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[key] += clock() - t0
                if key == "hooks_s":
                    acc["hook_calls"] += 1
        return wrapper

    saved = {name: getattr(Simulator, name) for name in SIM_HOOKS if hasattr(Simulator, name)}
    emu_start = Uc.emu_start
    try:
        for name, fn in saved.items():
            setattr(Simulator, name, timed(fn, "hooks_s"))
        Uc.emu_start = timed(emu_start, "emu_s")  # type: ignore[method-assign]
        yield acc
    finally:
        for name, fn in saved.items():
            setattr(Simulator, name, fn)
        Uc.emu_start = emu_start  # type: ignore[method-assign]


def run_unicorn_split(bios: str, timeout: float, pin: bool = True) -> dict:
    """One instrumented boot: Unicorn's own share of reset -> 0xE9 (see the module doc)."""
    with unicorn_split() as acc:
        run_devmodel(bios, timeout, pin=pin)
    return {"unicorn_s": acc["emu_s"] - acc["hooks_s"], "hooks_s": acc["hooks_s"],
            "hook_calls": acc["hook_calls"]}


# ---- QEMU ---------------------------------------------------------------------------------
def ensure_qemu(explicit: str | None) -> str | None:
    """The QEMU binary, installing Debian's qemu-system-x86 if it is missing; None (with a
    message) if that cannot be done."""
    if explicit:
        if shutil.which(explicit) is None:
            log(f"--qemu {explicit}: not found; skipping the QEMU column")
            return None
        return shutil.which(explicit)
    found = shutil.which(QEMU_BIN)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        log(f"{QEMU_BIN} is missing and there is no apt-get; skipping the QEMU column")
        return None
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            log(f"{QEMU_BIN} is missing and installing {QEMU_DEB} needs root; skipping the "
                "QEMU column")
            return None
        prefix = ["sudo", "-n"]
    install = [*prefix, apt, "install", "-y", "--no-install-recommends", QEMU_DEB]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"{QEMU_BIN} is missing: {' '.join(install)}")
    for attempt in range(2):
        if attempt:
            log("install failed; apt-get update and once more")
            subprocess.run([*prefix, apt, "update"], stdout=sys.stderr, stderr=sys.stderr,
                           env=env, check=False)
        done = subprocess.run(install, stdout=sys.stderr, stderr=sys.stderr, env=env,
                              check=False)
        if done.returncode == 0 and shutil.which(QEMU_BIN):
            return shutil.which(QEMU_BIN)
    log(f"could not install {QEMU_DEB}; skipping the QEMU column")
    return None


def qemu_command(qemu: str, bios: str, image: str, dbg_fifo: str, e9_fifo: str) -> list[str]:
    return [
        qemu, "-accel", "tcg", "-machine", "pc", "-m", str(MEMORY_MIB), "-bios", bios,
        "-display", "none", "-nodefaults", "-serial", "null",
        "-drive", f"file={image},format=raw,if=ide,index=0",
        "-chardev", f"file,id=dbg,path={dbg_fifo}",
        "-device", f"isa-debugcon,iobase={DEBUG_PORT:#x},chardev=dbg",
        "-chardev", f"file,id=e9,path={e9_fifo}",
        "-device", f"isa-debugcon,iobase={E9:#x},chardev=e9",
    ]


def qemu_cpu() -> int:
    """The CPU QEMU is pinned to: the one this process runs on, else the lowest allowed."""
    allowed = os.sched_getaffinity(0)
    here = current_cpu()
    return here if here in allowed else min(allowed)


def run_qemu(qemu: str, bios: str, image: str, timeout: float, pin: bool = True) -> dict:
    """One QEMU boot from exec to the first byte on 0xE9, then kill it (pinned to one CPU
    with `pin`)."""
    tmp = tempfile.mkdtemp(prefix="bench-boot-qemu-")
    fds: dict[int, str] = {}
    proc = None
    try:
        paths = {"402": os.path.join(tmp, "debugcon402"), "e9": os.path.join(tmp, "debugcon_e9")}
        for name, path in paths.items():
            os.mkfifo(path)
            # Opened for reading first (non-blocking), so QEMU's O_WRONLY open never waits.
            fds[os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)] = name
        cmd = qemu_command(qemu, bios, image, paths["402"], paths["e9"])
        first: dict[str, float] = {}
        cpu_at_e9: float | None = None
        got = {"402": bytearray(), "e9": bytearray()}
        cpu = qemu_cpu() if pin else None

        def pin_child() -> None:  # in the child, before exec: every QEMU thread inherits it
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, preexec_fn=pin_child)
        deadline = t0 + timeout
        while "e9" not in first:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"QEMU: no byte on 0xE9 within {timeout:g} s; 0x402 log "
                                   f"tail: {bytes(got['402'][-500:])!r}")
            ready, _, _ = select.select(list(fds), [], [], min(left, 0.05))
            now = time.monotonic()
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if data:
                    name = fds[fd]
                    if name not in first:
                        first[name] = now
                        if name == "e9":
                            cpu_at_e9 = proc_cpu_s(proc.pid)
                    if len(got[name]) < 1 << 20:
                        got[name] += data
            if not ready and proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"QEMU exited with {proc.returncode} before writing to "
                                   f"0xE9: {err.strip()[-1000:]}\ncommand: {' '.join(cmd)}")
        return {
            "startup_s": first["402"] - t0 if "402" in first else None,
            "bios_402_to_e9_s": first["e9"] - first["402"] if "402" in first else None,
            "total_s": first["e9"] - t0,
            "total_cpu_s": cpu_at_e9,
            "debug_bytes": len(got["402"]),
            "pinned_cpu": cpu,
        }
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        for fd in fds:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


# ---- orchestration ------------------------------------------------------------------------
def summary(values: list[float | None], unit: str = "s") -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"unit": unit, "median": round(statistics.median(vals), 4), "min": round(min(vals), 4),
            "max": round(max(vals), 4), "runs": [round(v, 4) for v in vals]}


def ratio(num: dict | None, den: dict | None, target: float | None) -> dict | None:
    if not num or not den or not den["median"]:
        return None
    value = num["median"] / den["median"]
    per_round = [a / b for a, b in zip(num["runs"], den["runs"], strict=False) if b]
    return {"value": round(value, 3), "target_max": target,
            "met": None if target is None else value <= target,
            "per_round": [round(r, 3) for r in per_round]}


def profile_devmodel(bios: str, timeout: float, top: int, pin: bool = True) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    res = run_devmodel(bios, timeout, profile=prof, pin=pin)
    log(f"cProfile of the simulator side, reset to 0xE9 ({res['reset_to_e9_s']:.3f} s under "
        f"the profiler; it inflates every Python call): {res['counters']}")
    stats = pstats.Stats(prof, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="unmeasured boots of each before the rounds (1): page cache, binaries")
    p.add_argument("--bios", default=str(DEFAULT_BIOS),
                   help=f"the SeaBIOS image both boot (default {DEFAULT_BIOS})")
    p.add_argument("--timeout", type=float, default=120.0, help="wall seconds per boot (120)")
    p.add_argument("--no-qemu", action="store_true", help="devmodel only: skip the QEMU column")
    p.add_argument("--qemu", metavar="BIN", help=f"the QEMU binary (default {QEMU_BIN}, "
                   f"apt-get install {QEMU_DEB} if missing)")
    p.add_argument("--no-pin", action="store_true",
                   help="run devmodel's daemon and simulator, and QEMU, unpinned (default: "
                        "each side pinned to one CPU)")
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, cProfile one devmodel boot (simulator side, stderr)")
    p.add_argument("--profile-top", type=int, default=25, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.timeout <= 0:
        p.error("--rounds must be >= 1, --warmup >= 0, --timeout > 0")
    bios = os.path.abspath(args.bios)
    if not os.path.isfile(bios):
        p.error(f"--bios {bios}: no such file (apt-get install seabios)")

    qemu: str | None = None
    qemu_note = "skipped: --no-qemu"
    if not args.no_qemu:
        qemu = ensure_qemu(args.qemu)
        qemu_note = qemu_version(qemu) if qemu else f"skipped: {QEMU_DEB} not available"
    tmp = tempfile.mkdtemp(prefix="bench-boot-")
    image = write_image(os.path.join(tmp, "demo.img"))  # the same bytes devmodel boots

    t_start = time.monotonic()
    load_before = os.getloadavg()
    dm_runs: list[dict] = []
    q_runs: list[dict] = []
    try:
        pin = not args.no_pin
        for _ in range(args.warmup):
            run_devmodel(bios, args.timeout, pin=pin)
            if qemu:
                run_qemu(qemu, bios, image, args.timeout, pin=pin)
        for r in range(args.rounds):
            order = ["devmodel", "qemu"] if r % 2 == 0 else ["qemu", "devmodel"]
            for who in order:
                if who == "devmodel":
                    dm_runs.append(run_devmodel(bios, args.timeout, pin=pin))
                elif qemu:
                    q_runs.append(run_qemu(qemu, bios, image, args.timeout, pin=pin))
        split_runs = [run_unicorn_split(bios, args.timeout, pin=pin) for _ in range(args.rounds)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    dm_keys = ("startup_s", "daemon_up_s", "handshake_s", "reset_to_402_s", "reset_to_e9_s",
               "bios_402_to_e9_s", "total_s", "total_cpu_s", "sim_cpu_s", "daemon_cpu_s")
    devmodel = {k: summary([run[k] for run in dm_runs]) for k in dm_keys}
    counters = dm_runs[-1]["counters"]
    devmodel["unicorn_s"] = summary([run["unicorn_s"] for run in split_runs])
    devmodel["exit_handlers_s"] = summary([run["hooks_s"] for run in split_runs])
    devmodel["exit_handler_calls"] = split_runs[-1]["hook_calls"]
    devmodel["ioreqs"] = counters["ioreqs"]
    devmodel["counters_at_e9"] = counters
    devmodel["counters_vary"] = any(run["counters"] != counters for run in dm_runs)
    devmodel["top_ports"] = dm_runs[-1]["top_ports"]
    devmodel["pinned_cpu"] = [run["pinned_cpu"] for run in dm_runs]
    devmodel["notes"] = sorted({n for run in dm_runs for n in run["notes"]})
    if qemu:
        q = {k: summary([run[k] for run in q_runs])
             for k in ("startup_s", "bios_402_to_e9_s", "total_s", "total_cpu_s")}
        q["ioreqs"] = "n/a"
        q["debug_bytes"] = q_runs[-1]["debug_bytes"]
        q["pinned_cpu"] = [run["pinned_cpu"] for run in q_runs]
        ratios = {
            "bios_402_to_e9": ratio(devmodel["bios_402_to_e9_s"], q["bios_402_to_e9_s"],
                                    TARGET_RATIO),
            "reset_to_e9_vs_qemu_total": ratio(devmodel["reset_to_e9_s"], q["total_s"],
                                               TARGET_RATIO),
            "unicorn_alone_vs_qemu_bios_402_to_e9": ratio(devmodel["unicorn_s"],
                                                          q["bios_402_to_e9_s"], None),
            "startup": ratio(devmodel["startup_s"], q["startup_s"], None),
            "total": ratio(devmodel["total_s"], q["total_s"], None),
            "total_cpu": ratio(devmodel["total_cpu_s"], q["total_cpu_s"], None),
        }
        qemu_out: dict | None = q
    else:
        qemu_out, ratios = None, {}

    result = {
        "bench": "boot",
        "config": {"rounds": args.rounds, "warmup": args.warmup, "bios": bios,
                   "memory_mib": MEMORY_MIB, "disk": "devmodel.demo_disk (IDE primary master)",
                   "stop": "first write to port 0xe9 (the boot sector)",
                   "qemu": qemu_note,
                   "pinned": not args.no_pin,
                   "pinning": ("devmodel: daemon (all threads) and simulator on one CPU, as "
                               "`devmodel boot` runs; qemu: pinned to one CPU before exec "
                               "(its TCG vCPU is single-threaded here), for fairness"
                               if not args.no_pin else "none (--no-pin): both unpinned"),
                   "qemu_command": (qemu_command(qemu, bios, "IMG", "FIFO402", "FIFOE9")
                                    if qemu else None),
                   "python": sys.version.split()[0], "cpus": os.cpu_count(),
                   "wall_seconds": round(time.monotonic() - t_start, 1),
                   "loadavg_1min_before_after": [round(load_before[0], 2),
                                                 round(os.getloadavg()[0], 2)]},
        "devmodel": devmodel,
        "qemu": qemu_out,
        "ratios": ratios,
    }

    def row(name: str, d: dict | None, qd: dict | None) -> None:
        def cell(x: dict | None) -> str:
            return "n/a" if not x else f"{x['median']:8.3f} ({x['min']:.3f}-{x['max']:.3f})"
        print(f"{name:18} {cell(d):>28} {cell(qd) if qemu else 'skipped':>28}", file=sys.stderr)

    print(f"{'seconds':18} {'devmodel':>28} {'qemu (tcg)':>28}", file=sys.stderr)
    for k in ("startup_s", "reset_to_402_s", "reset_to_e9_s", "bios_402_to_e9_s", "total_s",
              "total_cpu_s",
              "sim_cpu_s", "daemon_cpu_s", "unicorn_s", "exit_handlers_s"):
        row(k, devmodel[k], qemu_out.get(k) if qemu_out else None)
    print(f"{'ioreqs to 0xE9':18} {devmodel['ioreqs']:>28} {'n/a':>28}", file=sys.stderr)
    print(f"devmodel at 0xE9: {counters}", file=sys.stderr)
    if not qemu:
        print(f"qemu: {qemu_note}", file=sys.stderr)
    for k, r in ratios.items():
        if r is None:
            continue
        tgt = "no target" if r["target_max"] is None else f"target <= {r['target_max']}"
        verdict = "" if r["met"] is None else "ok" if r["met"] else "MISSED"
        print(f"ratio devmodel/qemu {k:36} {r['value']:>8} {tgt} {verdict}", file=sys.stderr)
    if args.profile:
        profile_devmodel(bios, args.timeout, args.profile_top, pin=not args.no_pin)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
