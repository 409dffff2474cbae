"""`devmodel fuzz` and `devmodel replay`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from .engine import Limits
from .machine import FuzzSetup, parse_devices


def _devices(text: str) -> tuple[str, ...]:
    try:
        return parse_devices(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parsers(sub) -> None:
    f = sub.add_parser(
        "fuzz", help="fuzz the device models in-process (random or coverage-guided)",
        description="Fuzz the sans-IO machine (build_pc, strict, virtual clock) with ioreq "
                    "streams and guest-RAM contents. Findings (escapes, hangs, slow ioreqs, "
                    "memory growth) are written as reproducers: NAME.trace and NAME.qtest for "
                    "`devmodel replay`, NAME.input for `devmodel fuzz --input`. Prints a JSON "
                    "report; exit 1 when anything fatal was found.")
    f.add_argument("--devices", type=_devices, default=_devices("all"), metavar="LIST",
                   help="device families aimed at: chipset, rtc, fw_cfg, i8042, uart, pm, "
                        "debugport, ide, bios (= rtc..debugport), e1000, usb, vga, or all")
    f.add_argument("--mode", choices=("random", "atheris"), default="random")
    f.add_argument("--time", type=float, metavar="S", help="stop after S seconds")
    f.add_argument("--runs", type=int, metavar="N", help="stop after N inputs")
    f.add_argument("--ioreqs", type=int, metavar="N", help="random mode: stop after N ioreqs")
    f.add_argument("--ops-bytes", type=int, default=1024, metavar="N",
                   help="random mode: op-stream bytes per input at most (default 1024; longer "
                        "inputs spend less time building machines: ~4096 ops at most)")
    f.add_argument("--corpus", nargs="+", metavar="TRACE",
                   help="seed inputs from these recorded boots (`--trace` files, "
                        "plain or gzipped, e.g. tests/fuzz/seeds/*.trace.gz) and mutate their "
                        "ioreq streams instead of generating inputs from nothing")
    f.add_argument("--mutation-rate", type=float, default=0.01, metavar="P",
                   help="with --corpus: the share of recorded events mutated (default 0.01)")
    f.add_argument("--make-seed", nargs=2, metavar=("TRACE", "SEED"),
                   help="write the ioreq stream of TRACE to SEED (gzipped) and exit; "
                        "--seed-ioreqs N keeps the first N ioreqs")
    f.add_argument("--seed-ioreqs", type=int, metavar="N")
    f.add_argument("--progress", type=float, default=0.0, metavar="S",
                   help="random mode: a JSON progress line on stderr every S seconds")
    f.add_argument("--seed", type=int, default=0, help="random mode: input i derives from it")
    f.add_argument("--out", default="fuzz-findings", metavar="DIR", help="reproducers go here")
    f.add_argument("--ram-seed", type=int, default=4, metavar="KIB",
                   help="the first KIB KiB of each input seed guest RAM at 0 (default 4)")
    f.add_argument("--ram", type=int, default=2, metavar="MIB", help="guest RAM (default 2)")
    f.add_argument("--no-disk", action="store_true", help="no disk on hda")
    f.add_argument("--slow-ms", type=float, default=20.0, help="log ioreqs slower than this")
    f.add_argument("--hang-s", type=float, default=1.0, help="an ioreq this long is a hang")
    f.add_argument("--track-memory", action="store_true",
                   help="tracemalloc each input; a peak over --memory-mib is a finding (slow)")
    f.add_argument("--memory-mib", type=int, default=64)
    f.add_argument("--input", nargs="+", metavar="FILE",
                   help="run these saved inputs (e.g. libFuzzer crash files) and write reproducers")
    f.add_argument("libfuzzer", nargs="*", metavar="LIBFUZZER_ARG",
                   help="atheris mode: corpus directories and -flags for libFuzzer (after --)")

    r = sub.add_parser(
        "replay", help="replay a --trace recording or a QEMU qtest reproducer",
        description="A devmodel trace (DMTRACE1) is sent to a daemon started for it and every "
                    "IORESP compared; anything else is read as a QEMU qtest script and run "
                    "in-process in strict mode. Exit 0 if devmodel survived (and, for traces, "
                    "answered as recorded), 1 otherwise.")
    r.add_argument("file")
    r.add_argument("--devices", type=_devices, help="qtest: device families (default: all)")
    r.add_argument("--ram", type=int, metavar="MIB", help="qtest: guest RAM (default 32)")
    r.add_argument("--verbose", "-v", action="store_true", help="qtest: print every reply")
    r.add_argument("daemon_args", nargs="*", metavar="RUN_ARG",
                   help="trace: extra `devmodel run` options for the daemon (after --)")


def quiet_devices() -> None:
    """Guest errors are the fuzzer's daily bread: keep device logging to real errors."""
    import logging

    logging.getLogger("devmodel").setLevel(logging.ERROR)


def cmd_fuzz(args: argparse.Namespace) -> int:
    from .runner import atheris_campaign, print_report, random_campaign, replay_inputs

    quiet_devices()
    setup = FuzzSetup(devices=args.devices, ram=args.ram << 20,
                      disks={} if args.no_disk else {"hda": 4 << 20})
    limits = Limits(slow_ns=int(args.slow_ms * 1e6), hang_s=args.hang_s,
                    memory_peak=args.memory_mib << 20, track_memory=args.track_memory)
    ram_seed = args.ram_seed * 1024

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.make_seed:
        from .seeds import load_seed, shrink_trace

        kept = shrink_trace(args.make_seed[0], args.make_seed[1], args.seed_ioreqs)
        n = len(load_seed(args.make_seed[1]))
        print(json.dumps({"seed": args.make_seed[1], "messages": kept, "events": n,
                          "bytes": os.path.getsize(args.make_seed[1])}))
        return 0
    corpus = None
    if args.corpus:
        from .seeds import load_seed

        corpus = [load_seed(p) for p in args.corpus]
        empty = [p for p, c in zip(args.corpus, corpus, strict=True) if not c]
        if empty:
            log(f"no ioreqs in seed {empty[0]}")
            return 2
    if args.input:
        report = replay_inputs(args.input, setup, limits, ram_seed, args.out, log)
    elif args.mode == "atheris":
        extra = list(args.libfuzzer)
        if args.time is not None:
            extra.append(f"-max_total_time={int(args.time)}")
        if args.runs is not None:
            extra.append(f"-runs={args.runs}")
        extra.append(f"-seed={args.seed}")
        return atheris_campaign(setup, limits, ram_seed=ram_seed, out_dir=args.out,
                                libfuzzer_args=extra, log=log, corpus=args.corpus)
    else:
        report = random_campaign(setup, limits, seed=args.seed, seconds=args.time, runs=args.runs,
                                 ram_seed=ram_seed, out_dir=args.out, log=log,
                                 ops_bytes=args.ops_bytes, max_ioreqs=args.ioreqs,
                                 progress_s=args.progress, corpus=corpus,
                                 mutation_rate=args.mutation_rate)
    print_report(report)
    return 1 if report.failed else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from devmodel.trace import MAGIC

    with open(args.file, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        return _replay_trace(args)
    return _replay_qtest(args)


def _replay_qtest(args: argparse.Namespace) -> int:
    from .qtest import DEFAULT_SETUP, run_qtest

    quiet_devices()
    with open(args.file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    setup = None
    if args.devices or args.ram:
        setup = FuzzSetup(devices=args.devices or DEFAULT_SETUP.devices,
                          ram=(args.ram << 20) if args.ram else DEFAULT_SETUP.ram)
    res = run_qtest(text, setup)
    if args.verbose:
        for lineno, line, reply in res.responses:
            print(f"{lineno:5d} {line}\n      < {reply}")
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    out = {"format": "qtest", "commands": res.lines, "ioreqs": res.ioreqs,
           "max_ioreq_ms": round(res.max_ioreq_ns / 1e6, 3), "survived": res.ok,
           "finding": None if res.finding is None else
           {"kind": res.finding.kind, "message": res.finding.message}}
    print(json.dumps(out, indent=2))
    if res.finding is not None and res.finding.kind != "slow":
        print(res.finding.detail, file=sys.stderr)
    return 0 if res.ok else 1


def _replay_trace(args: argparse.Namespace) -> int:
    from devmodel.client import DaemonProcess, Hypervisor
    from devmodel.trace import replay, sideband_args

    meta = sideband_args(args.file)
    run_args = ["--domid", "1", *meta.get("daemon_args", []), *args.daemon_args]
    tmp = tempfile.mkdtemp(prefix="devmodel-replay-")
    for vdev, size in (meta.get("disks") or {}).items():
        path = os.path.join(tmp, f"{vdev}.img")
        with open(path, "wb") as f:
            f.truncate(size)
        run_args += ["--disk", f"format=raw,vdev={vdev},access=rw,target={path}"]
    proc = DaemonProcess.start(run_args)
    survived = True
    try:
        hv = Hypervisor.connect(proc.socket_path, handshake=False, timeout=10.0)
        try:
            result = replay(args.file, hv)
            hv.barrier()  # everything sent, crashing ioreqs included, has been served
        except (TimeoutError, ConnectionError, OSError) as e:
            survived = False
            result = None
            print(f"daemon stopped answering: {e}", file=sys.stderr)
        finally:
            hv.sock.close()  # the daemon serves one hypervisor: it exits when we go
        rc = proc.wait_exit()
    finally:
        if proc.proc.poll() is None:
            proc.stop()
    log = proc.log()
    contained = [ln for ln in log.splitlines() if "raised serving ioreq" in ln
                 or "internal error" in ln]
    out = {"format": "trace", "note": meta.get("note", ""), "daemon_exit": rc,
           "sent": result.sent if result else None, "answers": result.answers if result else None,
           "mismatches": len(result.mismatches) if result and result.mismatches else 0,
           "device_failures": len(contained), "survived": survived and rc == 0}
    print(json.dumps(out, indent=2))
    for line in contained[:5]:
        print(line[:2000], file=sys.stderr)
    if result and result.mismatches:
        for tag, want, got in result.mismatches[:5]:
            print(f"tag {tag:#x}: recorded {want.hex()} replayed {got.hex()}", file=sys.stderr)
    ok = out["survived"] and not contained and not out["mismatches"]
    return 0 if ok else 1
