"""ioreq throughput of devmodel against a C baseline measured in the same run.

    .venv/bin/python bench/ioreq.py [--seconds 1.0] [--rounds 5] [--pin] [--c-client] [--profile]

Figures (machine-limits.md explains why they are ratios and why unpinned runs are bimodal):

- c_pingpong / c_window64: bench/c/ipc.c (built here with gcc -O2 into bench/.build/), a
  socketpair between two forked processes carrying our 48-byte IOREQ/IORESP messages, 1 or 64
  outstanding; the server does a table lookup and fills in data, as the toy UART does.
- dm_strict / dm_pipelined: the real daemon (`python -m devmodel run`, DaemonProcess) and a
  client in another Python process (this file with --worker): HELLO and the start-up dm_ops
  through devmodel.client.Hypervisor, then a raw socket loop of `inb 0x92` (served by the
  chipset's port 92) with 1 or 64 ioreqs outstanding.
- inprocess_ns: Connection._process of the daemon, without sockets, over a buffer of framed
  IOREQs: decode, dispatch through the Machine, encode. ns per ioreq.
- with --pin, the same socket figures again with both processes on CPU 0 (`*_pinned`).
- with --c-client, dm_*_cclient: the daemon driven by the C client (handshake done in Python,
  the connected fd handed to bench/.build/ipc), to separate the daemon's cost from the client's.

Figures are interleaved round-robin (one of each per round) so drift is spread over all of
them. One JSON object goes to stdout, a table to stderr. Informative only: never assert on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
C_SRC = HERE / "c" / "ipc.c"
BUILD = HERE / ".build"
IPC = BUILD / "ipc"

# header <HHIII + ioreq_t <QQIIIHBB, as devmodel.wire.codec.HEADER_IOREQ
MSG = struct.Struct("<HHIIIQQIIIHBB")
HDR = struct.Struct("<HHIII")
PORT = 0x92  # port 92 (fast A20), served by the chipset
BITS_READ = 0x21  # state READY, dir = read
WINDOW = 64
TARGETS = {"strict_vs_c_pingpong": 0.8, "pipelined_vs_c_window64": 0.4,
           "strict_vs_c_pingpong_pinned": 0.6, "pipelined_vs_c_window64_pinned": None}
INPROC_TARGET_NS = 2000.0


# ---- the client process -------------------------------------------------------------------
def worker_main(path: str) -> int:
    """Runs in its own process: handshake once, then one measurement per command on stdin."""
    from devmodel.client import Hypervisor
    from devmodel.wire.framing import Message

    hv = Hypervisor.connect(path, nr_vcpus=1)
    hv.poll(0.05)
    sock = hv.sock
    sock.settimeout(None)
    leftover = bytearray(hv._deframer._buf)  # normally empty
    other = 0

    def slow(acc: bytearray) -> int:
        """Every frame in acc: count IORESPs, answer dm_ops, fail on ERROR. Leaves a partial frame."""
        nonlocal other
        pos, n, k = 0, len(acc), 0
        while n - pos >= 16:
            mtype, flags, length, tag, chan = HDR.unpack_from(acc, pos)
            end = pos + 16 + length
            if end > n:
                break
            if mtype == 5:
                k += 1
            elif mtype == 7:
                other += 1
                reply = hv.state.handle_dmop(Message(mtype, flags, tag, chan, bytes(acc[pos + 16:end])))
                if reply is not None:
                    sock.sendall(reply)
            elif mtype == 9:
                raise RuntimeError(f"daemon answered ERROR: {bytes(acc[pos + 16:end])!r}")
            else:
                other += 1
            pos = end
        del acc[:pos]
        return k

    def run(window: int, seconds: float, warmup: float) -> dict:
        block = b"".join(MSG.pack(4, 0, 32, t + 1, 0, PORT, 0, 1, 1, 0, 0, BITS_READ, 0)
                         for t in range(window))
        buf = bytearray(1 << 18)
        acc = leftover
        recv_into = sock.recv_into
        send = sock.sendall
        clock = time.perf_counter
        count = 0
        measuring = False
        t0 = clock()
        start = end = t0
        if window == 1:
            # Strict ping-pong: one ioreq in flight, as a vCPU blocked on it.
            req = block
            while True:
                send(req)
                n = recv_into(buf)
                if n != 48 or buf[0] != 5 or acc:
                    if n == 0:
                        raise ConnectionError("daemon closed the connection")
                    acc += buf[:n]
                    k = slow(acc)
                    while k == 0:
                        n = recv_into(buf)
                        if n == 0:
                            raise ConnectionError("daemon closed the connection")
                        acc += buf[:n]
                        k = slow(acc)
                count += 1
                if not count & 7:
                    t = clock()
                    if measuring:
                        if t - start >= seconds:
                            end = t
                            break
                    elif t - t0 >= warmup:
                        measuring, start, count = True, t, 0
            return {"count": count, "seconds": end - start, "rate": count / (end - start), "other": other}
        # Sliding window: whenever k answers arrive, k new ioreqs leave.
        send(block)
        outstanding = window
        reads = 0
        while True:
            n = recv_into(buf)
            if n == 0:
                raise ConnectionError("daemon closed the connection")
            k = n // 48
            if acc or n % 48 or buf[0:n:48].count(5) != k:
                acc += buf[:n]
                k = slow(acc)
            outstanding -= k
            if measuring:
                count += k
                reads += 1
            t = clock()
            if measuring:
                if t - start >= seconds:
                    end = t
                    break
            elif t - t0 >= warmup:
                measuring, start = True, t
            if k:
                send(block[:k * 48])
                outstanding += k
        while outstanding > 0:  # drain what is in flight
            n = recv_into(buf)
            if n == 0:
                raise ConnectionError("daemon closed the connection")
            acc += buf[:n]
            outstanding -= slow(acc)
        return {"count": count, "seconds": end - start, "rate": count / (end - start), "other": other,
                "avg_batch": count / max(reads, 1)}

    def crun(window: int, seconds: float, warmup: float) -> dict:
        """The C client (bench/c/ipc.c with an FD) on this connection: the daemon's share alone."""
        if leftover:
            raise RuntimeError("unparsed bytes left on the connection")
        fd = sock.fileno()
        out = subprocess.run([str(IPC), str(window), str(seconds), str(warmup), str(fd)], pass_fds=(fd,),
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout)
        return {**res, "other": other, "avg_batch": None}

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        window, seconds, warmup = int(cmd[1]), float(cmd[2]), float(cmd[3])
        fn = crun if cmd[0] == "crun" else run
        print(json.dumps(fn(window, seconds, warmup)), flush=True)
    sock.close()
    return 0


# ---- the in-process figure ----------------------------------------------------------------
def inprocess_setup(n: int = 1000):
    """A daemon Connection on a socketpair end nobody writes to, its machine built as `run` does."""
    import asyncio
    import socket

    from devmodel.daemon import Connection, DaemonConfig
    from devmodel.pc import PcOptions, build_pc

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    a, b = socket.socketpair()
    conn = Connection(a, build_pc(PcOptions()), DaemonConfig(domid=1), loop, lambda why: None)
    conn._hello = True
    conn.nr_vcpus = 1
    conn.server_enabled = True
    frames = b"".join(MSG.pack(4, 0, 32, t + 1, 0, PORT, 0, 1, 1, 0, 0, BITS_READ, 0) for t in range(n))

    def once() -> None:
        conn._buf += frames
        conn._process()
        conn._out.clear()

    once()
    conn._buf += frames[:48]
    conn._process()
    got = bytes(conn._out)
    conn._out.clear()
    if len(got) != 48 or got[0] != 5 or got[46] != 0x23 or conn._buf:
        raise RuntimeError(f"in-process answer unexpected: {got.hex()}")

    def close() -> None:
        conn.close("bench done")
        b.close()
        loop.close()

    return once, n, close


def inprocess_ns(seconds: float) -> float:
    once, n, close = inprocess_setup()
    try:
        best = float("inf")
        clock = time.perf_counter
        deadline = clock() + seconds
        while clock() < deadline:  # best of short batches: the least disturbed figure
            t = clock()
            for _ in range(10):
                once()
            best = min(best, (clock() - t) / (10 * n) * 1e9)
        return best
    finally:
        close()


def profile_inprocess(seconds: float) -> None:
    import cProfile
    import pstats

    once, n, close = inprocess_setup()
    prof = cProfile.Profile()
    deadline = time.perf_counter() + seconds
    calls = 0
    prof.enable()
    while time.perf_counter() < deadline:
        once()
        calls += 1
    prof.disable()
    close()
    print(f"\ncProfile of the in-process loop: {calls * n} ioreqs (profiling inflates every call)",
          file=sys.stderr)
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)


# ---- orchestration ------------------------------------------------------------------------
def build_c() -> Path:
    if IPC.exists() and IPC.stat().st_mtime >= C_SRC.stat().st_mtime:
        return IPC
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("bench: gcc not found; the C baseline is part of every run")
    BUILD.mkdir(exist_ok=True)
    tmp = BUILD / f"ipc.{os.getpid()}"  # build then rename: concurrent runs never see half a binary
    subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(C_SRC)], check=True)
    os.replace(tmp, IPC)
    return IPC


def set_affinity(pid: int, cpus: set[int]) -> None:
    """All threads of pid (sched_setaffinity acts on one thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


def run_c(window: int, seconds: float, warmup: float, pinned: bool) -> float:
    pre = (lambda: os.sched_setaffinity(0, {0})) if pinned else None
    out = subprocess.run([str(IPC), str(window), str(seconds), str(warmup)], capture_output=True,
                         text=True, check=True, preexec_fn=pre)
    return json.loads(out.stdout)["rate"]


class Devmodel:
    """The daemon subprocess and the client worker process, kept for the whole run."""

    def __init__(self) -> None:
        from devmodel.client import DaemonProcess

        self.daemon = DaemonProcess.start(["--domid", "1", "--log-level", "warning"])
        self.worker = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                        self.daemon.socket_path],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.worker.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            self.close()
            raise RuntimeError(f"bench worker did not start; daemon log:\n{self.daemon.log()}")
        self.other = 0
        self.avg_batch: float | None = None

    def run(self, window: int, seconds: float, warmup: float, pinned: bool, all_cpus: set[int],
            c_client: bool = False) -> float:
        pids = (self.daemon.pid, self.worker.pid)
        for pid in pids:
            set_affinity(pid, {0} if pinned else all_cpus)
        self.worker.stdin.write(f"{'crun' if c_client else 'run'} {window} {seconds} {warmup}\n")
        self.worker.stdin.flush()
        line = self.worker.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker died; daemon log:\n{self.daemon.log()}")
        res = json.loads(line)
        self.other = res["other"]
        if res.get("avg_batch") is not None:
            self.avg_batch = res["avg_batch"]
        if pinned:
            for pid in pids:
                set_affinity(pid, all_cpus)
        return res["rate"]

    def close(self) -> None:
        try:
            if self.worker.poll() is None:
                self.worker.stdin.write("quit\n")
                self.worker.stdin.flush()
                self.worker.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.worker.kill()
            self.worker.wait()
        self.daemon.stop()
        shutil.rmtree(self.daemon.tmpdir, ignore_errors=True)


def summary(values: list[float], unit: str) -> dict:
    return {"unit": unit, "median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="measured time of each figure (1.0)")
    p.add_argument("--warmup", type=float, default=None,
                   help="warm-up before each figure (0.2, capped at --seconds)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--pin", action="store_true", help="also measure with both processes on CPU 0")
    p.add_argument("--profile", action="store_true", help="cProfile the in-process loop (stderr)")
    p.add_argument("--c-client", action="store_true",
                   help="also drive the daemon with the C client: the daemon's share alone")
    p.add_argument("--worker", metavar="SOCKET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.seconds <= 0 or args.rounds < 1:
        p.error("--seconds must be > 0 and --rounds >= 1")
    warmup = min(0.2, args.seconds) if args.warmup is None else args.warmup
    all_cpus = os.sched_getaffinity(0)
    build_c()

    t_start = time.monotonic()
    load_before = os.getloadavg()
    figures: dict[str, list[float]] = {}
    batches: dict[str, list[float]] = {}
    variants = [False, True] if args.pin else [False]
    dm = Devmodel()
    try:
        for _ in range(args.rounds):
            for pinned in variants:
                sfx = "_pinned" if pinned else ""
                steps = [
                    ("c_pingpong", lambda p=pinned: run_c(1, args.seconds, warmup, p)),
                    ("dm_strict", lambda p=pinned: dm.run(1, args.seconds, warmup, p, all_cpus)),
                    ("c_window64", lambda p=pinned: run_c(WINDOW, args.seconds, warmup, p)),
                    ("dm_pipelined", lambda p=pinned: dm.run(WINDOW, args.seconds, warmup, p, all_cpus)),
                ]
                if args.c_client:
                    steps += [
                        ("dm_strict_cclient",
                         lambda p=pinned: dm.run(1, args.seconds, warmup, p, all_cpus, True)),
                        ("dm_pipelined_cclient",
                         lambda p=pinned: dm.run(WINDOW, args.seconds, warmup, p, all_cpus, True)),
                    ]
                for name, fn in steps:
                    figures.setdefault(name + sfx, []).append(fn())
                batches.setdefault("dm_pipelined" + sfx, []).append(round(dm.avg_batch or 0, 1))
            figures.setdefault("inprocess_ns", []).append(inprocess_ns(min(0.3, args.seconds)))
    finally:
        dm.close()

    out_figs = {k: summary(v, "ns/ioreq" if k == "inprocess_ns" else "ioreq/s") for k, v in figures.items()}
    ratios = {}
    for name, num, den in [("strict_vs_c_pingpong", "dm_strict", "c_pingpong"),
                           ("pipelined_vs_c_window64", "dm_pipelined", "c_window64"),
                           ("strict_cclient_vs_c_pingpong", "dm_strict_cclient", "c_pingpong"),
                           ("pipelined_cclient_vs_c_window64", "dm_pipelined_cclient", "c_window64")]:
        for sfx in ("", "_pinned"):
            if num + sfx not in figures:
                continue
            per_round = [a / b for a, b in zip(figures[num + sfx], figures[den + sfx], strict=True)]
            value = out_figs[num + sfx]["median"] / out_figs[den + sfx]["median"]
            target = TARGETS.get(name + sfx)
            ratios[name + sfx] = {"value": round(value, 3), "target": target,
                                  "met": None if target is None else value >= target,
                                  "per_round_median": round(statistics.median(per_round), 3),
                                  "per_round": [round(r, 3) for r in per_round]}
    ns = out_figs["inprocess_ns"]["median"]
    ratios["inprocess_ns_per_ioreq"] = {"value": round(ns, 1), "target_max": INPROC_TARGET_NS,
                                        "met": ns <= INPROC_TARGET_NS}
    result = {
        "bench": "ioreq",
        "config": {"seconds": args.seconds, "warmup": warmup, "rounds": args.rounds, "window": WINDOW,
                   "pin": args.pin, "port": PORT, "cpus": sorted(all_cpus),
                   "python": sys.version.split()[0], "wall_seconds": round(time.monotonic() - t_start, 1),
                   "daemon_other_messages": dm.other,
                   # other load on the machine skews everything; see machine-limits.md
                   "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "figures": out_figs,
        "ratios": ratios,
        # ioreqs per read the client saw in the pipelined runs (64 = whole windows)
        "diagnostics": {"avg_batch": batches},
    }

    print(f"{'figure':24} {'median':>14} {'min - max':>28}", file=sys.stderr)
    for k, f in out_figs.items():
        print(f"{k:24} {f['median']:>14,.1f} {f['min']:>13,.1f} - {f['max']:<13,.1f} {f['unit']}",
              file=sys.stderr)
    for k, r in ratios.items():
        if "target_max" in r:
            tgt = f"target <= {r['target_max']:.0f}"
        else:
            tgt = "no target" if r["target"] is None else f"target >= {r['target']}"
        verdict = "" if r["met"] is None else "ok" if r["met"] else "MISSED"
        extra = f" (per-round median {r['per_round_median']})" if "per_round_median" in r else ""
        print(f"{k:32} {r['value']:>9} {tgt} {verdict}{extra}", file=sys.stderr)
    if args.profile:
        profile_inprocess(1.0)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
