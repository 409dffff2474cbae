"""bench/ide.py runs end to end against a real daemon and prints its JSON. Keys only: timings are
informative, never asserted (machine-limits.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ide.py"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark needs Linux (memfd)")
def test_ide_bench_smoke(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--seconds", "0.05", "--warmup", "0.01",
                          "--rounds", "1", "--image-mb", "8"],
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, "BENCH_TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"config", "columns"} <= result.keys()
    # pinned (both processes on one CPU) and unpinned, each with its own preadv baseline
    assert set(result["columns"]) == {"pinned", "unpinned"}
    for column in result["columns"].values():
        figures, ratios = column["figures"], column["ratios"]
        for size in ("64k", "1m", "4m"):
            for name in (f"dma_{size}", f"preadv_{size}", f"dma_{size}_commands"):
                fig = figures[name]
                assert {"median", "min", "max", "runs", "unit"} <= fig.keys() and len(fig["runs"]) == 1
            assert figures[f"dma_{size}"]["ioreqs_per_command"] > 0
            assert {"value", "target", "met"} <= ratios[f"dma_vs_preadv_{size}"].keys()
            assert "ceiling_GBps" in ratios[f"dma_vs_ioreq_ceiling_{size}"]
        for name in ("pio_rep_insw", "pio_inw", "ioreq_roundtrip"):
            assert figures[name]["median"] > 0
        assert ratios["dma_vs_preadv_1m"]["target"] == 0.5
