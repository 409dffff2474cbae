"""`devmodel boot`: real firmware on the simulated CPU, served by a real daemon.

The daemon runs as a subprocess (`devmodel run --clock virtual --bios ...`) and owns every
device and the firmware; this process plays the hypervisor: `devmodel.client.Hypervisor` on
the socket and `devmodel.hvsim.Simulator` as the vCPU, with guest RAM in a memfd both map.

What the guest prints reaches stdout as it comes, one line at a time:
- the firmware's debug console (port 0x402): the daemon writes it to `--debugcon
  file:TMP/debugcon.log`, which is tailed here (unprefixed lines);
- the serial port COM1: `--serial file:TMP/com1.log`, tailed (lines prefixed `[com1]`);
- port 0xE9 (the Bochs/Xen debug port): the daemon's `--debugcon` carries it too,
  interleaved with 0x402 as written. It is also taken from the vCPU's port writes, as Xen's
  hvm_print_line sees them, and kept apart (`BootResult.outputs["e9"]`); that copy is echoed
  (prefixed `[e9]`) only when the daemon has no `--debugcon`. POST codes (port 0x80) are
  taken from the vCPU side as well.

A run ends when TEXT (`--until`) appears in any output (exit 0), when the guest halts with
interrupts off (exit 0), when it powers off (exit 0), at the guest's first write to
`BootConfig.stop_at_port` if one is set (exit 0; bench/boot.py stops at the boot sector's
first write to 0xE9 this way), or at the wall-clock timeout (exit 1, saying where the guest
was). Reboots the guest asks for are followed, up to MAX_REBOOTS.
Time is virtual: the simulator's clock drives the daemon's device timers (CLOCK messages), so
a run is deterministic.

CPU pinning (default; `--no-pin`, `BootConfig.pin = False` to disable): the daemon (all its
threads) and the simulator's thread are pinned to one and the same CPU of the allowed set
(the one this process is running on when the daemon is up). The two strictly alternate: the
vCPU waits for every synchronous ioreq's answer and the daemon has nothing to do until the
next one, so one core loses no parallelism, while two cores cost a cross-core wake-up on each
side of every exit (about 20-25 us each way on the development VM, against a few us for a
same-core switch; ../shared/docs/machine-limits.md). This process's previous affinity is
restored when the session closes. Pinning that the system refuses is noted and skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.hvsim import Simulator, Stop, StopReason
from devmodel.hvsim.firmware import DEFAULT_BIOS

DEBUGCON_PORT = 0x402
E9_PORT = 0xE9
POST_PORT = 0x80
MAX_REBOOTS = 3
MAX_KEPT = 1 << 20  # bytes of each output kept in memory (the tail)
MAX_LINE = 4096  # a line longer than this is printed in pieces
RUN_CHUNK_INSNS = 20_000_000  # between wall-clock timeout checks in sim.run's loop
DEFAULT_TIMEOUT = 30.0


@dataclass
class BootConfig:
    bios: str = str(DEFAULT_BIOS)
    disks: list[str] = field(default_factory=list)  # xl DISKSPECs
    demo_disk: bool = True  # with no `disks`, boot the embedded demo disk
    memory: int = 128 << 20
    vcpus: int = 1
    name: str = ""
    uuid: bytes | None = None
    timeout: float = DEFAULT_TIMEOUT  # wall seconds
    until: str | None = None
    max_reboots: int = MAX_REBOOTS
    daemon_log_level: str = "info"
    daemon_args: list[str] = field(default_factory=list)  # more `devmodel run` options
    # End the run (exit 0, outcome "port") at the guest's first write to this I/O port.
    stop_at_port: int | None = None
    # Pin the daemon and the simulator to one CPU (see the module's docstring); pin_cpu picks
    # it (default: the CPU this process runs on, else the lowest allowed).
    pin: bool = True
    pin_cpu: int | None = None
    # The VGA screen the daemon writes at exit: PNG and text files (`devmodel run
    # --screendump/--screentext`); `screen`: also keep the text screen (BootResult.screen).
    screendump: str | None = None
    screentext: str | None = None
    screen: bool = False
    # The Xen platform device at 00:02.0 (`devmodel run --xen-platform on|off`, xl's
    # xen_platform_pci); None leaves the daemon's default (on).
    xen_platform: bool | None = None


@dataclass
class BootResult:
    exit_code: int
    outcome: str  # halted, until, port, poweroff, timeout, idle, error, shutdown, reboots
    message: str
    stop: Stop | None
    outputs: dict[str, bytes]  # debugcon, e9, com1 (the last MAX_KEPT bytes of each)
    post_code: int | None
    reboots: int
    wall_s: float
    virtual_ns: int
    exits: int
    daemon_log: str
    notes: list[str]
    # time.monotonic() stamps: "start" (BootSession created), "daemon_up" (its socket is
    # there), "ready" (handshake done, ioreq server enabled), "run" (reset: the vCPU starts),
    # "port" (the first write to stop_at_port), "end".
    timings: dict[str, float] = field(default_factory=dict)
    # The VGA text screen at exit (BootConfig.screen or screentext), None if not asked for or
    # not written; [] when the display was not in a text mode.
    screen: list[str] | None = None

    def text(self, channel: str) -> str:
        return self.outputs.get(channel, b"").decode("utf-8", "replace")


class Output:
    """One stream of guest output: kept (bounded), and echoed line by line with a prefix."""

    def __init__(self, name: str, prefix: str, echo: TextIO | None) -> None:
        self.name = name
        self.prefix = prefix
        self.echo = echo
        self.data = bytearray()
        self.total = 0
        self._line = bytearray()
        self.last_line = ""
        self._searched = 0  # `total` up to which search() has looked

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        self.data += data
        if len(self.data) > MAX_KEPT:
            del self.data[: len(self.data) - MAX_KEPT]
        for byte in data:  # bounded by the chunk the caller read
            if byte == 0x0A or len(self._line) >= MAX_LINE:
                self._emit()
            elif byte != 0x0D:
                self._line.append(byte)

    def _emit(self) -> None:
        text = self._line.decode("utf-8", "replace")
        self._line.clear()
        if text.strip():
            self.last_line = text
        if self.echo is not None:
            try:
                self.echo.write(f"{self.prefix}{text}\n")
                self.echo.flush()
            except BrokenPipeError:  # `devmodel boot | head`: stop echoing, keep booting
                self.echo = None

    def finish(self) -> None:
        if self._line:
            self._emit()

    def search(self, needle: bytes) -> bool:
        """Whether `needle` is in what came since the last search (or straddles into it)."""
        new = self.total - self._searched
        if new <= 0:
            return False
        self._searched = self.total
        window = min(len(self.data), new + len(needle) - 1)
        return needle in self.data[len(self.data) - window:]


class FileTail:
    """Reads what the daemon appended to a chardev file since the last call."""

    CHUNK = 1 << 16

    def __init__(self, path: str, out: Output) -> None:
        self.path = path
        self.out = out
        self.fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def pump(self) -> bool:
        got = False
        for _ in range(64):  # bounded: at most 4 MiB per call, the rest next time
            data = os.read(self.fd, self.CHUNK)
            if not data:
                break
            self.out.feed(data)
            got = True
        return got

    def close(self) -> None:
        os.close(self.fd)


def current_cpu() -> int | None:
    """The CPU this process last ran on (/proc/self/stat field 39), None if unknown."""
    try:
        with open("/proc/self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def pin_to_one_cpu(pid: int, cpu: int | None = None) -> tuple[int, set[int]]:
    """Pin the calling thread and every thread of process `pid` to one CPU: `cpu`, or the
    one this thread is running on, or the lowest allowed to both. Returns (cpu, the calling
    thread's previous affinity); raises OSError if the system refuses."""
    mine = os.sched_getaffinity(0)
    allowed = mine & os.sched_getaffinity(pid)
    if cpu is None:
        here = current_cpu()
        cpu = here if here in allowed else min(allowed or mine)
    if cpu not in allowed:
        raise OSError(f"CPU {cpu} is not allowed to both processes ({sorted(allowed)})")
    set_threads_affinity(pid, {cpu})
    os.sched_setaffinity(0, {cpu})
    return cpu, mine


def set_threads_affinity(pid: int, cpus: set[int]) -> None:
    """The CPU affinity of every thread of process `pid` (sched_setaffinity acts on one
    thread; threads created later inherit it from their creator). A thread that ends
    meanwhile is skipped; any other refusal raises OSError."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that just ended
            pass


class BootSession:
    """A daemon subprocess, the client on its socket and the simulator, wired together."""

    def __init__(self, config: BootConfig, echo: TextIO | None = None) -> None:
        self.config = config
        self.notes: list[str] = []
        self.tmpdir = tempfile.mkdtemp(prefix="devmodel-boot-")
        self.outputs = {
            "debugcon": Output("debugcon", "", echo),
            "e9": Output("e9", "[e9] ", echo),
            "com1": Output("com1", "[com1] ", echo),
        }
        self.tails: list[FileTail] = []
        # What the outputs held once the daemon had exited (close): it flushes the last
        # partial console line, and posted port writes, only then.
        self.final_outputs: dict[str, bytes] | None = None
        self.post_code: int | None = None
        self.proc: DaemonProcess | None = None
        self.hv: Hypervisor | None = None
        self.sim: Simulator | None = None
        self._observe_debugcon = True
        self._found = False
        self.pinned_cpu: int | None = None  # the CPU both run on, if pinned
        self._saved_affinity: set[int] | None = None
        self.timings: dict[str, float] = {"start": time.monotonic()}
        self.screen: list[str] | None = None  # read once the daemon has exited (close)
        self._screentext: str | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # ---- start-up -----------------------------------------------------------------------
    def _daemon_args(self) -> list[str]:
        c = self.config
        args = ["--clock", "virtual", "--bios", c.bios, "--memory", str(c.memory),
                "--vcpus", str(c.vcpus), "--log-level", c.daemon_log_level]
        if c.name:
            args += ["--name", c.name]
        if c.uuid is not None:
            import uuid

            args += ["--uuid", str(uuid.UUID(bytes=c.uuid))]
        path = os.path.join(self.tmpdir, "debugcon.log")
        self.tails.append(FileTail(path, self.outputs["debugcon"]))
        args += ["--debugcon", f"file:{path}"]
        self._observe_debugcon = False
        self.outputs["e9"].echo = None  # it is in the debugcon stream already
        path = os.path.join(self.tmpdir, "com1.log")
        self.tails.append(FileTail(path, self.outputs["com1"]))
        args += ["--serial", f"file:{path}"]
        disks = list(c.disks)
        if not disks and c.demo_disk:
            from devmodel.demo_disk import write_image

            image = write_image(os.path.join(self.tmpdir, "demo.img"))
            disks = [f"format=raw,vdev=hda,access=rw,target={image}"]
        for spec in disks:
            args += ["--disk", spec]
        if c.xen_platform is not None:
            args += ["--xen-platform", "on" if c.xen_platform else "off"]
        if c.screendump or c.screentext or c.screen:
            if c.screendump:
                args += ["--screendump", os.path.abspath(c.screendump)]
            text = c.screentext or os.path.join(self.tmpdir, "screen.txt")
            self._screentext = os.path.abspath(text)
            args += ["--screentext", self._screentext]
        return args + list(c.daemon_args)

    def _start(self) -> None:
        c = self.config
        if not os.path.isfile(c.bios):
            raise ValueError(f"--bios {c.bios}: no such file (apt-get install seabios)")
        args = self._daemon_args()
        self.proc = DaemonProcess.start(args)
        self.timings["daemon_up"] = time.monotonic()
        if c.pin:
            try:
                self.pinned_cpu, self._saved_affinity = pin_to_one_cpu(self.proc.pid, c.pin_cpu)
            except (OSError, ValueError) as e:
                self.notes.append(f"could not pin the daemon and the simulator to one CPU: {e}")
        # Attach the simulator before the handshake: the daemon shares the firmware
        # (MEM_ADD) and sends the PAM types right after its HELLO.
        self.hv = Hypervisor.connect(self.proc.socket_path, process=self.proc, handshake=False)
        self.sim = Simulator(self.hv, c.memory)
        if self.sim.slicing_note:
            self.notes.append(self.sim.slicing_note)
        self.sim.observers.append(self._observe)
        self.hv.hello()
        for rid, region in enumerate(self.sim.ram.regions()):
            self.hv.mem_add(rid, region.gpa, region.size, self.sim.ram.fd, region.offset,
                            region.flags)
        self.hv.wait_enabled()
        self.timings["ready"] = time.monotonic()

    def _observe(self, kind: str, addr: int, size: int, value: int, is_write: bool) -> None:
        if kind != "pio" or not is_write:
            return
        if addr == self.config.stop_at_port and "port" not in self.timings:
            self.timings["port"] = time.monotonic()
            assert self.sim is not None
            self.sim.request_stop(f"write to port {addr:#x}")
        if addr == E9_PORT:
            self.outputs["e9"].feed(bytes((value & 0xFF,)))
        elif addr == POST_PORT:
            self.post_code = value & 0xFF
        elif addr == DEBUGCON_PORT and self._observe_debugcon:
            self.outputs["debugcon"].feed(bytes((value & 0xFF,)))

    # ---- running ------------------------------------------------------------------------
    def pump(self) -> None:
        for tail in self.tails:
            tail.pump()

    def found(self, needle: bytes) -> bool:
        hits = [o.search(needle) for o in self.outputs.values()]  # every stream moves on
        self._found = self._found or any(hits)
        return self._found

    def run(self) -> BootResult:
        c = self.config
        sim = self.sim
        assert sim is not None
        start = self.timings["run"] = time.monotonic()
        deadline = start + c.timeout
        needle = c.until.encode() if c.until else None
        reboots = 0
        state = {"timeout": False, "until": False}

        def check(_sim: Simulator) -> bool:
            self.pump()
            if needle is not None and self.found(needle):
                state["until"] = True
                return True
            if time.monotonic() > deadline:
                state["timeout"] = True
                return True
            return False

        while True:
            stop = sim.run(max_insns=RUN_CHUNK_INSNS, until=check)
            self.pump()
            r = stop.reason
            if r is StopReason.REQUESTED and state["until"]:
                return self._result(0, "until", f"found {c.until!r}", stop, reboots, start)
            if r is StopReason.REQUESTED and "port" in self.timings:
                return self._result(0, "port", f"the guest wrote to port {c.stop_at_port:#x}",
                                    stop, reboots, start)
            if r is StopReason.REQUESTED and state["timeout"]:
                return self._result(1, "timeout", self._where(f"timeout after {c.timeout:g} s",
                                                              stop), stop, reboots, start)
            if r is StopReason.BUDGET:
                continue  # a chunk spent; the predicate keeps the wall-clock bound
            if r is StopReason.SHUTDOWN:
                if stop.code == 1:
                    if reboots >= c.max_reboots:
                        return self._result(1, "reboots", self._where(
                            f"the guest rebooted {reboots} times; giving up", stop),
                            stop, reboots, start)
                    reboots += 1
                    sim.reset()  # the daemon reset its devices before remote_shutdown
                    continue
                if stop.code == 0:
                    return self._result(0, "poweroff", "the guest powered off", stop, reboots,
                                        start)
                return self._result(1, "shutdown", self._where(
                    f"remote_shutdown reason {stop.code}", stop), stop, reboots, start)
            if r is StopReason.HALTED:
                if needle is not None and self.found(needle):
                    return self._result(0, "until", f"found {c.until!r}", stop, reboots, start)
                return self._result(0, "halted", f"the guest halted ({stop})", stop, reboots,
                                    start)
            if r is StopReason.IDLE:
                return self._result(1, "idle", self._where("the guest waits for an interrupt "
                                                           "that nothing can raise", stop),
                                    stop, reboots, start)
            return self._result(1, "error", self._where(str(stop), stop), stop, reboots, start)

    def _where(self, what: str, stop: Stop) -> str:
        post = f"{self.post_code:#04x}" if self.post_code is not None else "none"
        last = ""
        for name in ("com1", "e9", "debugcon"):
            if self.outputs[name].last_line:
                last = f"{name}: {self.outputs[name].last_line!r}"
                break
        return (f"{what}; guest at {stop.cs:04x}:{stop.eip:08x}, last POST code {post}, "
                f"last console line {last or 'none'}")

    def _result(self, code: int, outcome: str, message: str, stop: Stop | None, reboots: int,
                start: float) -> BootResult:
        for o in self.outputs.values():
            o.finish()
        sim = self.sim
        self.timings["end"] = time.monotonic()
        return BootResult(
            exit_code=code, outcome=outcome, message=message, stop=stop,
            outputs={k: bytes(o.data) for k, o in self.outputs.items()},
            post_code=self.post_code, reboots=reboots, wall_s=time.monotonic() - start,
            virtual_ns=sim.clock.ns if sim else 0, exits=sim.stats.exits if sim else 0,
            daemon_log=self.proc.log() if self.proc else "", notes=list(self.notes),
            timings=dict(self.timings))

    # ---- teardown -----------------------------------------------------------------------
    def close(self) -> None:
        if self._saved_affinity is not None:
            try:
                os.sched_setaffinity(0, self._saved_affinity)
            except OSError:
                pass
            self._saved_affinity = None
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        if self.hv is not None:
            for _gpa, _size, _flags, fd in self.hv.state.dm_regions.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.hv.state.dm_regions.clear()
            self.hv.close()  # the daemon exits when we hang up; waits for it
            self.hv = None
        elif self.proc is not None:
            self.proc.stop()
        if self.tails:
            for tail in self.tails:
                tail.pump()
                tail.close()
            for o in self.outputs.values():
                o.finish()
            self.final_outputs = {k: bytes(o.data) for k, o in self.outputs.items()}
        self.tails.clear()
        if self._screentext is not None:  # the daemon has exited: it wrote the file then
            self.screen = _read_screen(self._screentext)
            self._screentext = None
        if self.proc is not None:
            shutil.rmtree(self.proc.tmpdir, ignore_errors=True)
            self.proc = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> BootSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_screen(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20).splitlines()
    except OSError:
        return None


def boot(config: BootConfig, echo: TextIO | None = None) -> BootResult:
    """Boot once and return what happened (`echo`: where to print the output as it comes)."""
    with BootSession(config, echo) as session:
        result = session.run()
    result.screen = session.screen  # the daemon wrote it at exit (session.close)
    if session.final_outputs is not None:
        result.outputs = session.final_outputs
    return result


# ---- command line ---------------------------------------------------------------------------
def add_boot_options(p: argparse.ArgumentParser, add_machine_options: Callable) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"give up after S wall-clock seconds, exit 1 (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--until", metavar="TEXT",
                   help="stop with exit 0 once TEXT appears in the debug console, port 0xE9 "
                        "or the serial output")
    p.add_argument("--screendump", metavar="FILE.png",
                   help="write the final VGA screen as PNG (the daemon's --screendump)")
    p.add_argument("--screentext", metavar="FILE.txt",
                   help="write the final VGA text screen as plain text (the daemon's --screentext)")
    p.add_argument("--no-screen", action="store_true",
                   help="do not print the VGA text screen at the end")
    p.add_argument("--no-demo-disk", action="store_true",
                   help="without --disk, attach no IDE disk at all (default: the embedded demo "
                        "disk), e.g. to boot from a --usb disk:IMAGE")
    p.add_argument("--max-reboots", type=int, default=MAX_REBOOTS, metavar="N",
                   help=f"guest reboots to follow (default {MAX_REBOOTS})")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the daemon and the simulator to one CPU (they strictly "
                        "alternate, so by default they share one and save a cross-core wake-up "
                        "per exit)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="the daemon's log level (its log is shown if the boot fails)")
    add_machine_options(p)


# Machine options boot passes to the daemon itself (from BootConfig), and ones it refuses
# because it owns what they configure; every other machine option goes to the daemon as typed.
SET_BY_BOOT = frozenset({"memory", "vcpus", "name", "uuid", "bios", "disk"})
REFUSED = {"serial": "boot captures COM1 itself (printed with [com1])",
           "debugcon": "boot captures the debug console itself"}


def _subparser(name: str) -> argparse.ArgumentParser:
    from devmodel.cli import build_parser

    for action in build_parser()._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and name in choices:
            return choices[name]
    raise LookupError(name)


def machine_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """From a `devmodel ... boot ...` command line: the machine options to forward to the
    daemon as typed (raw text, so that their parsing stays the daemon's), and the refused
    ones given. Re-parsed with the boot parser's option strings so abbreviations and
    `--opt=value` resolve as they did."""
    from devmodel.cli import add_machine_options

    probe = argparse.ArgumentParser(add_help=False)
    add_machine_options(probe)
    machine = {a.dest: a for a in probe._actions if a.option_strings}
    raw = argparse.ArgumentParser(add_help=False)
    for a in _subparser("boot")._actions:
        if not a.option_strings or a.dest == "help":
            continue
        if isinstance(a, argparse._StoreTrueAction):
            raw.add_argument(*a.option_strings, dest=a.dest, action="store_true", default=None)
        elif isinstance(a, argparse._AppendAction):
            raw.add_argument(*a.option_strings, dest=a.dest, action="append", default=None)
        else:
            raw.add_argument(*a.option_strings, dest=a.dest, default=None)
    tail = argv[argv.index("boot") + 1:] if "boot" in argv else list(argv)
    ns, _ = raw.parse_known_args(tail)
    forward: list[str] = []
    refused: list[str] = []
    for dest, action in machine.items():
        value = getattr(ns, dest, None)
        if value is None or dest in SET_BY_BOOT:
            continue
        if dest in REFUSED:
            refused.append(f"{action.option_strings[0]}: {REFUSED[dest]}")
            continue
        opt = action.option_strings[0]
        if value is True:
            forward.append(opt)
        elif isinstance(value, list):
            for v in value:
                forward += [opt, v]
        else:
            forward += [opt, value]
    return forward, refused


def print_screen(screen: list[str] | None, out: TextIO | None = None) -> None:
    """The VGA text screen after the consoles: each line prefixed `[vga] `, the blank lines at
    the bottom left out."""
    out = out if out is not None else sys.stdout
    if screen is None:
        print("devmodel boot: note: the daemon wrote no VGA screen", file=sys.stderr)
        return
    lines = list(screen)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        print("devmodel boot: note: the VGA shows no text (not in a text mode, or blank)",
              file=sys.stderr)
        return
    try:
        for line in lines:
            out.write(f"[vga] {line}\n")
        out.flush()
    except BrokenPipeError:
        pass


def run_boot(args: argparse.Namespace, argv: list[str]) -> int:
    """`devmodel boot` (parsed by devmodel.cli; `argv` is its command line)."""
    forward, refused = machine_argv(argv)
    if refused:
        print("devmodel boot: " + "; ".join(refused), file=sys.stderr)
        return 2
    no_vga = args.vga == "none"  # the value forwarded (machine_argv passes the last --vga)
    if no_vga and (args.screendump or args.screentext):
        print("devmodel boot: --screendump and --screentext need the VGA (--vga std)",
              file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("devmodel boot: --timeout must be positive", file=sys.stderr)
        return 2
    config = BootConfig(
        bios=args.bios or str(DEFAULT_BIOS), disks=list(args.disk), memory=args.memory,
        vcpus=args.vcpus, name=args.name, uuid=args.uuid, timeout=args.timeout,
        until=args.until, max_reboots=max(0, args.max_reboots), daemon_log_level=args.log_level,
        daemon_args=forward, pin=not args.no_pin, screendump=args.screendump,
        screentext=args.screentext, screen=not args.no_screen and not no_vga,
        demo_disk=not args.no_demo_disk,
    )
    try:
        result = boot(config, echo=sys.stdout)
    except (ValueError, RuntimeError, TimeoutError, OSError) as e:
        print(f"devmodel boot: {e}", file=sys.stderr)
        return 2
    if config.screen:
        print_screen(result.screen)
    for note in result.notes:
        print(f"devmodel boot: note: {note}", file=sys.stderr)
    print(f"devmodel boot: {result.message} ({result.wall_s:.2f} s wall, "
          f"{result.virtual_ns / 1e9:.3f} s virtual, {result.exits} exits, "
          f"{result.reboots} reboots)", file=sys.stderr)
    if result.exit_code and result.outcome != "timeout" and result.daemon_log:
        tail = result.daemon_log.strip().splitlines()[-20:]
        print("devmodel boot: daemon log (last lines):\n  " + "\n  ".join(tail), file=sys.stderr)
    return result.exit_code
