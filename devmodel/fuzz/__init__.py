"""Fuzzing as a feature (issue 10): `devmodel fuzz` and `devmodel replay`.

- machine.py: the machine an input runs on (build_pc, strict, virtual clock, RAM, memdisk).
- engine.py: bytes -> guest RAM + ioreq stream, the watchdog, findings.
- runner.py: random (CI) and atheris (coverage-guided) campaigns.
- repro.py: findings as devmodel traces and qtest scripts.
- qtest.py: QEMU's qtest reproducer format against the in-process machine.
"""

from .engine import Finding, Limits, Outcome, run_input
from .machine import FuzzSetup, build_fuzz_machine, parse_devices
from .qtest import QtestResult, run_qtest

__all__ = ["Finding", "FuzzSetup", "Limits", "Outcome", "QtestResult", "build_fuzz_machine",
           "parse_devices", "run_input", "run_qtest"]
