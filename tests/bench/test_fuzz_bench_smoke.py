"""bench/fuzz.py runs end to end and prints its JSON. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"


def test_fuzz_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--seconds", "0.05", "--rounds", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"config", "figures", "ratios"} <= result.keys()
    for name in ("baseline_call", "port80_write", "port92_read", "rtc_index_data", "cf8_address",
                 "pci_config_read", "fuzz_random_ide", "fuzz_random_all"):
        assert result["figures"][name]["median"] > 0
    assert "met" in result["ratios"]["simple_registers_min"]
