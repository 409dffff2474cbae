"""In-process ioreqs per second through the sans-IO machine (issue 10: >= 300k/s for simple
registers), and what the fuzzer itself achieves.

    .venv/bin/python bench/fuzz.py [--seconds 0.5] [--rounds 3]

Figures (ioreqs per second, median of the rounds):

- baseline_call: a loop calling a Python function with handle_ioreq's six arguments that
  returns one of them: the floor any Python dispatch stands on, measured in this run.
- port80_write / port92_read / rtc_index_data / cf8_address / pci_config_read: build_pc's
  machine (strict, virtual clock), handle_ioreq on simple registers: the POST port, fast A20,
  the RTC's index/data pair, CONFIG_ADDRESS, a PCI_CONFIG ioreq to the host bridge.
- fuzz_random_ide / fuzz_random_all: the random fuzz mode end to end (a fresh machine per
  input, decoding, recording, watchdog): ioreqs per second of a short campaign.

One JSON object on stdout. Informative only: never assert on it (machine-limits.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

from devmodel.fuzz.engine import DIR, PCI_CONFIG, PIO, Limits
from devmodel.fuzz.machine import FuzzSetup
from devmodel.fuzz.runner import random_campaign
from devmodel.pc import PcOptions, build_pc

TARGET = 300_000


def _rate(fn, seconds: float) -> float:
    n = 0
    batch = 2000
    t0 = time.perf_counter()
    while True:
        fn(batch)
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def figures(seconds: float) -> dict:
    m = build_pc(PcOptions(virtual_clock=True, strict=True))
    h = m.handle_ioreq
    out = m.outbox

    def ident(type_, addr, data, count, size, bits):
        return data

    def baseline(n):
        for _ in range(n):
            ident(PIO, 0x80, 0x12, 1, 1, 0x01)

    def port80(n):
        for _ in range(n):
            h(PIO, 0x80, 0x12, 1, 1, 0x01)

    def port92(n):
        for _ in range(n):
            h(PIO, 0x92, 0, 1, 1, 0x01 | DIR)

    def rtc(n):
        for _ in range(n // 2):
            h(PIO, 0x70, 0x0F, 1, 1, 0x01)
            h(PIO, 0x71, 0, 1, 1, 0x01 | DIR)

    def cf8(n):
        for _ in range(n):
            h(PIO, 0xCF8, 0x80000000, 1, 4, 0x01)

    def pcicfg(n):
        for _ in range(n):
            h(PCI_CONFIG, 0, 0, 1, 4, 0x01 | DIR)
        out.clear()

    return {"baseline_call": _rate(baseline, seconds), "port80_write": _rate(port80, seconds),
            "port92_read": _rate(port92, seconds), "rtc_index_data": _rate(rtc, seconds),
            "cf8_address": _rate(cf8, seconds), "pci_config_read": _rate(pcicfg, seconds)}


def fuzz_figures(seconds: float) -> dict:
    res = {}
    for name, devices in (("fuzz_random_ide", ("ide",)), ("fuzz_random_all", None)):
        setup = FuzzSetup(devices=devices) if devices else FuzzSetup()
        r = random_campaign(setup, Limits(), seed=1, seconds=seconds, ram_seed=2048)
        res[name] = r.ioreqs / r.seconds if r.seconds else 0.0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.getLogger("devmodel").setLevel(logging.ERROR)
    runs: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for k, v in {**figures(args.seconds), **fuzz_figures(args.seconds)}.items():
            runs.setdefault(k, []).append(v)
    figs = {k: {"median": round(statistics.median(v)), "min": round(min(v)), "max": round(max(v)),
                "runs": [round(x) for x in v], "unit": "ioreqs/s"} for k, v in runs.items()}
    simple = [figs[k]["median"] for k in ("port80_write", "port92_read", "rtc_index_data",
                                         "cf8_address", "pci_config_read")]
    result = {
        "config": {"seconds": args.seconds, "rounds": args.rounds, "target_ioreqs_per_s": TARGET},
        "figures": figs,
        "ratios": {
            "simple_registers_min": {"value": min(simple), "met": min(simple) >= TARGET},
            "port92_vs_baseline_call": {
                "value": round(figs["port92_read"]["median"] / figs["baseline_call"]["median"], 3),
                "met": None},
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
