"""What the smoke tests of bench/ide.py, e1000.py, vga.py and usb.py share: a short run of the
bench (one round of 0.05 s figures) in a subprocess, its JSON parsed. Timings are informative,
never asserted (machine-limits.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def run_bench(tmp_path: Path):
    """run_bench("ide", *more_args) -> the JSON object bench/ide.py printed (it must exit 0);
    the bench's temporary files go to tmp_path (BENCH_TMPDIR)."""

    def run(name: str, *args: str) -> dict:
        out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--seconds", "0.05",
                              "--warmup", "0.01", "--rounds", "1", *args],
                             capture_output=True, text=True, timeout=180,
                             env={**os.environ, "BENCH_TMPDIR": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return run
