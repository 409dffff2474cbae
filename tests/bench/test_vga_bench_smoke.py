"""bench/vga.py runs end to end against a real daemon and prints its JSON. Keys only: timings are
informative, never asserted (machine-limits.md). The benchmark itself checks that the posted
stores and the shared-mapping stores reach VRAM and that the rendered frame is the picture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "vga.py"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark needs Linux (memfd)")
def test_vga_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--seconds", "0.05", "--warmup", "0.01",
                          "--rounds", "1"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"config", "figures", "ratios"} <= result.keys()
    assert result["config"]["frame"] == "1024x768x32"
    names = ["bufioreq_vbe_4b", "bufioreq_planar_1b", "strict_vbe_4b", "lfb_memfd", "memcpy",
             "render", "encode_png", "render_png"]
    try:
        import PIL  # noqa: F401

        names.append("pillow_png")
    except ImportError:
        pass
    for name in names:
        fig = result["figures"][name]
        assert {"median", "min", "max", "runs", "unit"} <= fig.keys() and len(fig["runs"]) == 1
        assert fig["median"] > 0
    assert result["figures"]["bufioreq_vbe_4b"]["slots_per_batch"] == 511
    for name in ("lfb_memfd_vs_memcpy", "bufioreq_vs_strict_vbe_4b", "render_png_vs_pillow_png"):
        assert "value" in result["ratios"][name]
