"""bench/ioreq.py runs end to end and prints its JSON. No timing is asserted: the figures are
informative only (machine-limits.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ioreq.py"


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("gcc") is None,
                    reason="the benchmark needs Linux (fork, affinity) and gcc")
def test_ioreq_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--seconds", "0.2", "--rounds", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"config", "figures", "ratios", "diagnostics"} <= result.keys()
    for name in ("c_pingpong", "c_window64", "dm_strict", "dm_pipelined", "inprocess_ns"):
        fig = result["figures"][name]
        assert {"median", "min", "max", "runs", "unit"} <= fig.keys()
        assert len(fig["runs"]) == 1 and fig["median"] > 0
    for name in ("strict_vs_c_pingpong", "pipelined_vs_c_window64", "inprocess_ns_per_ioreq"):
        assert "value" in result["ratios"][name] and "met" in result["ratios"][name]
