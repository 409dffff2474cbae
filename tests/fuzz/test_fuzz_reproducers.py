"""Published QEMU reproducers and the hostile-guest catalog's triggers, as qtest scripts in
reproducers/, run against the in-process machine in strict mode. Each must run to the end
with no escape, no hang and no warning; a `# => REPLY` comment on a line is the reply the
hardware gives there, checked exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmodel.fuzz.qtest import run_qtest

HERE = Path(__file__).parent / "reproducers"
SCRIPTS = sorted(HERE.glob("*.qtest"))


def expectations(text: str) -> dict[int, str]:
    out = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if "# =>" in line:
            out[lineno] = line.split("# =>", 1)[1].strip()
    return out


pytestmark = pytest.mark.usefixtures("quiet_devmodel")


def test_there_are_reproducers():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_reproducer_survives_with_hardware_behaviour(path: Path):
    text = path.read_text()
    res = run_qtest(text)
    assert res.finding is None or res.finding.kind == "slow", (
        f"{res.finding.kind}: {res.finding.message}\n{res.finding.detail}")
    assert res.warnings == []
    commands = [ln for ln in text.splitlines() if ln.split("#", 1)[0].strip()]
    assert res.lines == len(commands)
    replies = {lineno: reply for lineno, _cmd, reply in res.responses}
    for lineno, want in expectations(text).items():
        assert replies[lineno] == want, f"line {lineno}: got {replies[lineno]!r}, want {want!r}"
