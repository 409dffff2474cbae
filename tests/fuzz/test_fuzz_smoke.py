"""CI fuzz smoke (issue 10): the random mode for a few seconds per device family, from a
fixed seed. Zero escapes and zero hangs; slow ioreqs are reported, never asserted (a timing
is not a test result)."""

from __future__ import annotations

import logging
import os

import pytest

from devmodel.fuzz.engine import Limits
from devmodel.fuzz.machine import ALL_FAMILIES, FuzzSetup
from devmodel.fuzz.runner import random_campaign

SECONDS = float(os.environ.get("DEVMODEL_FUZZ_SMOKE_S", "3.5"))  # 12 families: ~42 s in all


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_fuzz_smoke(family, tmp_path):
    logger = logging.getLogger("devmodel")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        report = random_campaign(FuzzSetup(devices=(family,)), Limits(hang_s=2.0), seed=10,
                                 seconds=SECONDS, ram_seed=2048, out_dir=str(tmp_path))
    finally:
        logger.setLevel(old)
    fatal = [f for f in report.findings if f["kind"] != "slow"]
    assert report.escapes == 0 and report.hangs == 0 and report.other == 0, fatal
    assert report.inputs > 0 and report.ioreqs > 0
