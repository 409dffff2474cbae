"""bench/usb.py runs end to end against real daemons (virtual and monotonic clock) and prints its
JSON. Keys and the data check only: timings are informative, never asserted
(machine-limits.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark needs Linux (memfd)")
def test_usb_bench_smoke(run_bench, tmp_path: Path) -> None:
    result = run_bench("usb", "--image-mb", "2")
    assert {"config", "columns"} <= result.keys()
    assert set(result["columns"]) == {"virtual", "realtime"}
    for col in result["columns"].values():
        for size in ("4k", "64k"):
            for name in (f"usb_{size}", f"preadv_{size}", f"usb_{size}_commands"):
                fig = col["figures"][name]
                assert {"median", "min", "max", "runs", "unit"} <= fig.keys()
                assert len(fig["runs"]) == 1 and fig["median"] > 0
            assert col["figures"][f"usb_{size}"]["tds_per_command"] == {"4k": 66, "64k": 1026}[size]
            assert {"value", "target", "met"} <= col["ratios"][f"usb_vs_preadv_{size}"].keys()
    assert "usb_vs_bus_64k" in result["columns"]["realtime"]["ratios"]
    assert not list(tmp_path.iterdir())  # the image is removed
