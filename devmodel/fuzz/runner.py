"""Campaigns: the plain random mode (deterministic from a seed, for CI), the coverage-guided
atheris mode, and re-running saved inputs; each writes reproducers for what it finds."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .engine import Finding, Limits, Outcome, Watchdog, describe, new_histogram, percentile_ns, run_input
from .machine import FuzzSetup
from .repro import write_reproducer
from .seeds import load_seed, mutation_bytes

PRD_EOT = 0x80000000


MAX_OPS_BYTES = 1024  # default op-stream length bound of a random input (~50 ioreqs on average)


def random_input(rng: random.Random, ram_seed: int, max_ops_bytes: int = MAX_OPS_BYTES) -> bytes:
    """Guest RAM that looks like descriptors (pointers into itself, sector-ish lengths, PRD
    end-of-table bits), then random op bytes."""
    words = []
    for _ in range(ram_seed // 4):
        k = rng.random()
        if k < 0.35:
            words.append(rng.randrange(ram_seed) & ~1)
        elif k < 0.55:
            words.append(rng.choice((0, 1, 2, 8, 0x200, 0x1000, 0xFFFF, 0x10000)))
        elif k < 0.65:
            words.append(PRD_EOT | rng.choice((0x200, 0x400, 0, 2, 0xFFFE)) << 0)
        else:
            words.append(rng.getrandbits(32))
    seed = b"".join(w.to_bytes(4, "little") for w in words)[:ram_seed]
    ops = rng.randbytes(rng.randrange(16, max_ops_bytes))
    return seed + ops


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Report:
    mode: str
    devices: list[str]
    seed: int | None = None
    inputs: int = 0
    ioreqs: int = 0
    seconds: float = 0.0
    escapes: int = 0
    hangs: int = 0
    slow: int = 0
    other: int = 0
    max_ioreq_ms: float = 0.0
    p50_ioreq_us: float = 0.0
    p99_ioreq_us: float = 0.0
    p999_ioreq_us: float = 0.0
    slowest: dict = field(default_factory=dict)  # the slowest ioreq: ms, device, ioreq, reproducer
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    findings: list[dict] = field(default_factory=list)
    hist: list[int] = field(default_factory=new_histogram)

    @property
    def failed(self) -> bool:
        return bool(self.escapes or self.hangs or self.other)

    def finish(self) -> None:
        """Percentiles from the latency histogram (bucket upper edges, ~1 us resolution)."""
        self.p50_ioreq_us = percentile_ns(self.hist, 0.5) / 1e3
        self.p99_ioreq_us = percentile_ns(self.hist, 0.99) / 1e3
        self.p999_ioreq_us = percentile_ns(self.hist, 0.999) / 1e3

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        del d["hist"]
        d["ioreqs_per_s"] = round(self.ioreqs / self.seconds) if self.seconds else 0
        d["seconds"] = round(self.seconds, 2)
        d["max_ioreq_ms"] = round(self.max_ioreq_ms, 3)
        return d


class Collector:
    """Counts outcomes and writes one reproducer per distinct finding."""

    def __init__(self, report: Report, setup: FuzzSetup, out_dir: str | None,
                 log: Callable[[str], None], slow_log_ns: int = 20_000_000) -> None:
        self.report = report
        self.setup = setup
        self.out_dir = out_dir
        self.log = log
        self.seen: set[str] = set()
        self.slow_ns: dict[str, int] = {}
        self.slow_log_ns = slow_log_ns

    def add(self, o: Outcome, data: bytes) -> list[str]:
        r = self.report
        r.inputs += 1
        r.ioreqs += o.ioreqs
        if o.max_ioreq_ns / 1e6 > r.max_ioreq_ms and o.max_index >= 0:
            r.max_ioreq_ms = o.max_ioreq_ns / 1e6
            self._slowest(o, data)
        stems = []
        for f in o.findings:
            sig = f.signature
            if f.kind == "escape":
                r.escapes += 1
            elif f.kind == "hang":
                r.hangs += 1
            elif f.kind == "slow":
                r.slow += 1
                # one reproducer per ioreq address: the slowest seen
                if self.slow_ns.get(sig, 0) >= f.ns:
                    continue
                self.slow_ns[sig] = f.ns
                self.seen.discard(sig)
                r.findings = [x for x in r.findings if x.get("signature") != sig]
            else:
                r.other += 1
            if sig in self.seen:
                continue
            self.seen.add(sig)
            stem = None
            if self.out_dir:
                stem = write_reproducer(self.out_dir, f, o.events, self.setup, data)
                stems.append(stem)
            r.findings.append({"kind": f.kind, "message": f.message, "reproducer": stem,
                               "signature": sig})
            if f.kind != "slow" or f.ns > 2 * self.slow_log_ns:
                self.log(f"{f.kind}: {f.message}" + (f" -> {stem}.trace/.qtest" if stem else ""))
        return stems

    def _slowest(self, o: Outcome, data: bytes) -> None:
        """A new worst case: keep it as the `slowest` reproducer (overwritten by the next)."""
        ev = o.events[o.max_index]
        ms = round(o.max_ioreq_ns / 1e6, 3)
        stem = None
        if self.out_dir:
            f = Finding("slowest", f"ioreq took {ms} ms on {o.max_owner or '?'}", describe(ev),
                        o.max_index, o.max_ioreq_ns, f"{ev[1]}:{ev[2]:#x}")
            stem = write_reproducer(self.out_dir, f, o.events, self.setup, data, name="slowest")
        self.report.slowest = {"ms": ms, "device": o.max_owner, "ioreq": describe(ev),
                               "input": self.report.inputs - 1, "reproducer": stem}


def random_campaign(setup: FuzzSetup, limits: Limits, *, seed: int = 0, seconds: float | None = None,
                    runs: int | None = None, ram_seed: int = 4096, out_dir: str | None = None,
                    log: Callable[[str], None] = lambda s: None, ops_bytes: int = MAX_OPS_BYTES,
                    max_ioreqs: int | None = None, progress_s: float = 0.0,
                    corpus: list[list[tuple]] | None = None, mutation_rate: float = 0.01) -> Report:
    """Input i is random_input(Random(f"{seed}:{i}")): the same seed gives the same inputs,
    whatever the machine's speed (a time or ioreq bound only decides how many run).
    With a `corpus` of recorded ioreq streams (devmodel.fuzz.seeds.load_seed), input i is
    corpus[i % len] with about `mutation_rate` of its events mutated instead."""
    report = Report("random", list(setup.devices), seed=seed)
    col = Collector(report, setup, out_dir, log)
    t0 = time.monotonic()
    report.rss_start_mb = rss_bytes() / 2**20
    baseline = None
    last = t0
    with Watchdog(limits.hang_s):
        i = 0
        while True:
            if runs is not None and i >= runs:
                break
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            if max_ioreqs is not None and report.ioreqs >= max_ioreqs:
                break
            if runs is None and seconds is None and max_ioreqs is None and i >= 1000:
                break
            rng = random.Random(f"{seed}:{i}")
            if corpus:
                base = corpus[i % len(corpus)]
                data = mutation_bytes(rng, len(base), mutation_rate)
                col.add(run_input(data, setup, limits, ram_seed, report.hist, seed=base), data)
            else:
                data = random_input(rng, ram_seed, ops_bytes)
                col.add(run_input(data, setup, limits, ram_seed, report.hist), data)
            i += 1
            if i == 50:
                baseline = rss_bytes()
            if progress_s and time.monotonic() - last >= progress_s:
                last = time.monotonic()
                _progress(report, last - t0, log)
    report.seconds = time.monotonic() - t0
    report.finish()
    report.rss_end_mb = rss_bytes() / 2**20
    if baseline is not None and rss_bytes() - baseline > limits.memory_peak * 4:
        report.other += 1
        report.findings.append({"kind": "memory", "message": f"RSS grew by "
                                f"{(rss_bytes() - baseline) >> 20} MiB over the campaign",
                                "reproducer": None})
    return report


def _progress(report: Report, elapsed: float, log: Callable[[str], None]) -> None:
    report.finish()
    log(json.dumps({"progress_s": round(elapsed), "inputs": report.inputs, "ioreqs": report.ioreqs,
                    "escapes": report.escapes, "hangs": report.hangs, "other": report.other,
                    "max_ioreq_ms": round(report.max_ioreq_ms, 3),
                    "p999_ioreq_us": report.p999_ioreq_us, "rss_mb": round(rss_bytes() / 2**20, 1),
                    "slowest_device": report.slowest.get("device")}))


def replay_inputs(paths: list[str], setup: FuzzSetup, limits: Limits, ram_seed: int,
                  out_dir: str | None, log: Callable[[str], None]) -> Report:
    """Run saved inputs (atheris/libFuzzer crash files, *.input) and write reproducers."""
    report = Report("inputs", list(setup.devices))
    col = Collector(report, setup, out_dir, log)
    t0 = time.monotonic()
    with Watchdog(limits.hang_s):
        for p in paths:
            with open(p, "rb") as f:
                data = f.read()
            col.add(run_input(data, setup, limits, ram_seed, report.hist), data)
    report.seconds = time.monotonic() - t0
    report.finish()
    return report


class FuzzFinding(Exception):
    """Raised inside the atheris callback so libFuzzer records the input and stops."""


_ATHERIS_BOOT = """
import json, sys
import atheris
with atheris.instrument_imports(include=["devmodel"]):
    from devmodel.fuzz import runner
sys.exit(runner.atheris_child(json.loads(sys.argv[1]), sys.argv[2:]))
"""


def atheris_campaign(setup: FuzzSetup, limits: Limits, *, ram_seed: int, out_dir: str,
                     libfuzzer_args: list[str], log: Callable[[str], None],
                     corpus: list[str] | None = None) -> int:
    """Coverage-guided: libFuzzer mutates, devmodel's Python is instrumented for coverage.
    Instrumentation happens at import, so the campaign runs in a fresh interpreter that
    imports devmodel under atheris. libFuzzer's own -timeout catches hangs here (it owns
    SIGALRM); its crash files re-run with `devmodel fuzz --input FILE` to get trace/qtest
    reproducers. With `corpus` (seed traces), an input's first byte picks the seed and the
    rest are the mutation bytes of its ioreq stream (devmodel.fuzz.seeds)."""
    import subprocess

    try:
        import atheris  # noqa: F401
    except ImportError:
        log("atheris is not installed: pip install atheris (or use --mode random)")
        return 2
    conf = {"devices": list(setup.devices), "ram": setup.ram, "disks": setup.disks,
            "rtc_base": setup.rtc_base, "slow_ns": limits.slow_ns, "hang_s": limits.hang_s,
            "memory_peak": limits.memory_peak, "track_memory": limits.track_memory,
            "ram_seed": ram_seed, "out": out_dir, "corpus": list(corpus or [])}
    return subprocess.call([sys.executable, "-c", _ATHERIS_BOOT, json.dumps(conf),
                            *libfuzzer_args])


def atheris_child(conf: dict, libfuzzer_args: list[str]) -> int:
    import atheris

    from devmodel.fuzz.cli import quiet_devices

    quiet_devices()
    setup = FuzzSetup(tuple(conf["devices"]), conf["ram"], conf["disks"], conf["rtc_base"])
    limits = Limits(conf["slow_ns"], conf["hang_s"], conf["memory_peak"], conf["track_memory"])
    ram_seed, out_dir = conf["ram_seed"], conf["out"]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = Report("atheris", list(setup.devices))
    col = Collector(report, setup, out_dir, log)
    seeds = [load_seed(p) for p in conf.get("corpus") or []]

    def one(data: bytes) -> None:
        if seeds:
            base = seeds[data[0] % len(seeds)] if data else seeds[0]
            o = run_input(data[1:], setup, limits, ram_seed, seed=base)
        else:
            o = run_input(data, setup, limits, ram_seed)
        stems = col.add(o, data)
        fatal = o.fatal
        if fatal:
            raise FuzzFinding(f"{fatal[0].kind}: {fatal[0].message}"
                              + (f" (reproducer {stems[0]})" if stems else ""))

    argv = [sys.argv[0], *libfuzzer_args]
    if not any(not a.startswith("-") for a in libfuzzer_args):
        # No corpus given: start from random_input()s, long enough to reach the op stream
        # (mutating up from a 1-byte input would spend ages inside the RAM seed).
        corpus = os.path.join(out_dir, "corpus")
        os.makedirs(corpus, exist_ok=True)
        for i in range(64):
            path = os.path.join(corpus, f"{'seeded' if seeds else 'random'}-{i}")
            if not os.path.exists(path):
                rng = random.Random(f"corpus:{i}")
                with open(path, "wb") as f:
                    if seeds:  # which seed, then ~1% of its events mutated
                        n = len(seeds[i % len(seeds)])
                        f.write(bytes([i % len(seeds)]) + mutation_bytes(rng, n, 0.01))
                    else:
                        f.write(random_input(rng, ram_seed))
        argv.append(corpus)
    if not any(a.startswith("-timeout=") for a in argv):
        # libFuzzer's timeout is per input: a seeded input replays a whole boot (tens of
        # thousands of instrumented ioreqs), so it gets a minute; a single ioreq over hang_s
        # is still a hang finding (Session.io measures each one).
        argv.append(f"-timeout={60 if seeds else max(1, int(limits.hang_s + 0.999))}")
    # The RAM seed comes first: inputs must be long from the start to reach the op stream.
    if not any(a.startswith("-max_len=") for a in argv):
        longest = 1 + max((len(x) for x in seeds), default=0)
        argv.append(f"-max_len={max(ram_seed + 4096, longest)}")
    if not any(a.startswith("-len_control=") for a in argv):
        argv.append("-len_control=0")
    atheris.Setup(argv, one)
    atheris.Fuzz()
    return 0


def print_report(report: Report, stream=None) -> None:
    print(json.dumps(report.as_dict(), indent=2), file=stream or sys.stdout)
