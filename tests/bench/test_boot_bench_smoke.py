"""bench/boot.py runs end to end (the devmodel half, one round, no QEMU) and prints its JSON.
No timing is asserted: the figures are informative only (machine-limits.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devmodel.hvsim.firmware import DEFAULT_BIOS

BENCH = Path(__file__).resolve().parents[2] / "bench" / "boot.py"


@pytest.mark.skipif(not DEFAULT_BIOS.is_file(), reason="needs Debian's seabios package")
def test_boot_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--rounds", "1", "--warmup", "0",
                          "--no-qemu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"bench", "config", "devmodel", "qemu", "ratios"} <= result.keys()
    assert result["bench"] == "boot"
    assert result["qemu"] is None and result["ratios"] == {}
    assert result["config"]["qemu"].startswith("skipped")
    dm = result["devmodel"]
    for name in ("startup_s", "daemon_up_s", "handshake_s", "reset_to_402_s", "reset_to_e9_s",
                 "bios_402_to_e9_s", "total_s", "sim_cpu_s"):
        fig = dm[name]
        assert {"unit", "median", "min", "max", "runs"} <= fig.keys()
        assert len(fig["runs"]) == 1
    assert dm["ioreqs"] > 0 and dm["ioreqs"] == dm["counters_at_e9"]["ioreqs"]
    assert {"clock_msgs", "exits", "socket_writes", "virtual_ns"} <= dm["counters_at_e9"].keys()
