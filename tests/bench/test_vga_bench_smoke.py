"""bench/vga.py runs end to end against a real daemon and prints its JSON. Keys only: timings are
informative, never asserted (machine-limits.md). The benchmark itself checks that the posted
stores and the shared-mapping stores reach VRAM and that the rendered frame is the picture."""

from __future__ import annotations

import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark needs Linux (memfd)")
def test_vga_bench_smoke(run_bench) -> None:
    result = run_bench("vga")
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
