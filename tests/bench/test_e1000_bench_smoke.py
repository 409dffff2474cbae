"""bench/e1000.py runs end to end against a real daemon and prints its JSON. Keys only: timings are
informative, never asserted (machine-limits.md)."""

from __future__ import annotations

import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark needs Linux (memfd)")
def test_e1000_bench_smoke(run_bench) -> None:
    result = run_bench("e1000")
    assert {"config", "figures", "ratios"} <= result.keys()
    assert result["config"]["batch"] == 64
    for size in (64, 1514):
        for name in (f"tx_{size}", f"rx_{size}", f"raw_tx_{size}", f"raw_rx_{size}"):
            fig = result["figures"][name]
            assert {"median", "min", "max", "runs", "unit", "bytes_per_s", "frame_bytes"} <= fig.keys()
            assert len(fig["runs"]) == 1 and fig["median"] > 0 and fig["frame_bytes"] == size
        for way in ("tx", "rx"):
            assert "lost_frames" in result["figures"][f"{way}_{size}"]
            ratio = result["ratios"][f"{way}_vs_raw_{size}"]
            assert {"value", "target", "met"} <= ratio.keys() and ratio["target"] == 0.5
