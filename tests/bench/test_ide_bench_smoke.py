"""bench/ide.py runs end to end against a real daemon and prints its JSON. Keys only: timings are
informative, never asserted (machine-limits.md)."""

from __future__ import annotations

import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark needs Linux (memfd)")
def test_ide_bench_smoke(run_bench) -> None:
    result = run_bench("ide", "--image-mb", "8")
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
