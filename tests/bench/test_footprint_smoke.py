"""bench/footprint.py runs end to end (the devmodel half, one round, no QEMU) and prints its
JSON with every key. No figure is asserted: they are informative only (machine-limits.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "footprint.py"


def test_footprint_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--rounds", "1", "--warmup", "0",
                          "--settle", "0.1", "--no-qemu"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"bench", "config", "devmodel", "devmodel_connected", "qemu", "ratios",
            "targets"} <= result.keys()
    assert result["bench"] == "footprint"
    assert result["qemu"] is None and result["ratios"] == {} and result["targets"] == {}
    assert result["config"]["qemu"].startswith("skipped")
    for column in ("devmodel", "devmodel_connected"):
        col = result[column]
        for name in ("startup_s", "rss_kib", "excluded_kib", "rss_excl_kib", "pss_excl_kib",
                     "uss_excl_kib"):
            if column == "devmodel_connected" and name == "startup_s":
                continue
            fig = col[name]
            assert {"unit", "median", "min", "max", "runs"} <= fig.keys()
            assert len(fig["runs"]) == 1
        assert col["rss_excl_kib"]["median"] == (col["rss_kib"]["median"]
                                                 - col["excluded_kib"]["median"])
        assert all(m["name"].startswith("/memfd:") for m in col["excluded_mappings"])
    assert "python_floor_s" in result["devmodel"]
    # CPU time to ready, apart from the wait for a CPU on a loaded host: some, and no more
    # than the wall time plus what other threads ran meanwhile (bounded loosely)
    dm = result["devmodel"]
    assert 0 < dm["startup_cpu_s"]["median"] and dm["startup_runq_s"]["median"] >= 0
    assert 0 < dm["python_floor_cpu_s"]["median"] <= 10 * dm["python_floor_s"]["median"]
    names = {m["name"].split(" ")[0] for m in result["devmodel_connected"]["excluded_mappings"]}
    assert any("guest-ram" in n for n in names) and any("vram" in n for n in names)
