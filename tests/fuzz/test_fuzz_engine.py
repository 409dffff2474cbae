"""The fuzzer itself: inputs are deterministic, escapes and hangs are caught and written as
reproducers, and those reproducers replay (qtest in-process, trace through a daemon)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devmodel.fuzz import engine
from devmodel.fuzz.engine import Limits, Watchdog, run_input
from devmodel.fuzz.machine import FuzzSetup, build_fuzz_machine, parse_devices
from devmodel.fuzz.qtest import run_qtest
from devmodel.fuzz.runner import random_campaign, random_input

pytestmark = pytest.mark.usefixtures("quiet_devmodel")


def test_parse_devices():
    assert parse_devices("chipset,bios,ide") == (
        "chipset", "rtc", "fw_cfg", "i8042", "uart", "pm", "debugport", "ide")
    assert "ide" in parse_devices("all")
    with pytest.raises(ValueError, match="unknown device family"):
        parse_devices("floppy")


def test_inputs_are_deterministic():
    import random

    setup = FuzzSetup(devices=("ide", "chipset"))
    data = random_input(random.Random("x:1"), 1024)
    with Watchdog(1.0):
        a = run_input(data, setup, Limits(), 1024)
        b = run_input(data, setup, Limits(), 1024)
    assert a.ioreqs == b.ioreqs > 0
    assert a.events == b.events
    assert not a.fatal


def _buggy(kind: str, port: int = 0x71):
    """build_fuzz_machine with a bug put into the RTC's data port."""

    def build(setup, strict=True):
        m = build_fuzz_machine(setup, strict=strict)
        r = m.pio.find(port)

        def boom(off, size):
            if kind == "raise":
                return 1 // 0
            while True:
                pass

        r.read = boom
        return m

    return build


def test_escape_is_found_and_reproduced(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "build_fuzz_machine", _buggy("raise"))
    setup = FuzzSetup(devices=("rtc",), disks={})
    report = random_campaign(setup, Limits(), runs=30, ram_seed=256, out_dir=str(tmp_path))
    assert report.escapes > 0 and report.failed
    escapes = [f for f in report.findings if f["kind"] == "escape"]
    assert "ZeroDivisionError" in escapes[0]["message"]
    stem = escapes[0]["reproducer"]
    text = open(stem + ".qtest").read()
    assert text.startswith("# devmodel fuzz reproducer: escape")
    res = run_qtest(text)  # still buggy: the reproducer reproduces
    assert res.finding is not None and res.finding.kind == "escape"
    assert "ZeroDivisionError" in res.finding.detail
    monkeypatch.undo()
    assert run_qtest(text).ok  # fixed: it survives


def test_hang_is_broken_by_the_watchdog(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "build_fuzz_machine", _buggy("loop"))
    setup = FuzzSetup(devices=("rtc",), disks={})
    report = random_campaign(setup, Limits(hang_s=0.2), runs=5, ram_seed=256,
                             out_dir=str(tmp_path))
    assert report.hangs > 0
    hang = next(f for f in report.findings if f["kind"] == "hang")
    assert open(hang["reproducer"] + ".qtest").read().count("0x71") >= 1


def test_trace_reproducer_replays_through_a_daemon(tmp_path):
    """A reproducer trace (RAM seed as GMEM sideband records, the IORESPs the in-process
    run gave) sent to a real daemon: every answer is the same."""
    import random

    from devmodel.fuzz.engine import Finding
    from devmodel.fuzz.repro import write_reproducer

    setup = FuzzSetup(devices=("ide", "chipset", "rtc"))
    data = random_input(random.Random("trace:3"), 2048)
    with Watchdog(1.0):
        out = run_input(data, setup, Limits(), 2048)
    assert out.ioreqs > 10
    stem = write_reproducer(str(tmp_path), Finding("slow", "test", "", len(out.events) - 1),
                            out.events, setup)
    proc = subprocess.run([sys.executable, "-m", "devmodel", "replay", stem + ".trace"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["mismatches"] == 0 and result["survived"]
    assert result["answers"] == sum(1 for e in out.events if e[0] == "io")
    # and the qtest form runs in-process to the same end
    assert run_qtest(open(stem + ".qtest").read()).ok


def test_cli_random_mode_smoke(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "devmodel", "fuzz", "--runs", "20", "--devices",
                           "uart", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["inputs"] == 20 and report["escapes"] == 0 and report["hangs"] == 0


def test_latency_percentiles_and_slowest_reproducer(tmp_path):
    hist = engine.new_histogram()
    hist[0] = 998  # 998 ioreqs under ~1 us, one at ~5 us, one at ~2 ms
    hist[5] = 1
    hist[2000] = 1
    assert engine.percentile_ns(hist, 0.5) == 1 << engine.HIST_SHIFT
    assert engine.percentile_ns(hist, 0.999) == 6 << engine.HIST_SHIFT
    assert engine.percentile_ns(hist, 1.0) == 2001 << engine.HIST_SHIFT
    report = random_campaign(FuzzSetup(devices=("rtc", "ide")), Limits(), runs=20, ram_seed=512,
                             out_dir=str(tmp_path))
    assert sum(report.hist) == report.ioreqs
    assert 0 < report.p50_ioreq_us <= report.p999_ioreq_us
    slow = report.slowest
    assert slow["ms"] == round(report.max_ioreq_ms, 3) and slow["device"]
    text = open(slow["reproducer"] + ".qtest").read()
    assert text.startswith("# devmodel fuzz reproducer: slowest: ioreq took")
    assert not run_qtest(text).finding or run_qtest(text).finding.kind == "slow"
