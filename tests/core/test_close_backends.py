"""Machine.close_backends: every backend is drained, flushed and closed even when one of them
fails; an I/O error is one log line, not a traceback."""

from __future__ import annotations

import logging

from devmodel.core.machine import Machine


class Backend:
    def __init__(self, name: str, fail: Exception | None = None) -> None:
        self.name = name
        self.fail = fail
        self.steps: list[str] = []

    def drain(self) -> None:
        self.steps.append("drain")

    def flush(self) -> None:
        self.steps.append("flush")
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.steps.append("close")

    def __repr__(self) -> str:
        return self.name


def test_a_failing_flush_still_closes_it_and_the_others(caplog) -> None:
    m = Machine()
    good1, dead, bug, good2 = (Backend("good1"), Backend("nbd", ConnectionResetError(104, "reset")),
                               Backend("bug", RuntimeError("oops")), Backend("good2"))
    m.backends += [good1, dead, bug, good2]
    with caplog.at_level(logging.ERROR):
        m.close_backends()
    for b in (good1, dead, bug, good2):
        assert b.steps == ["drain", "flush", "close"], b
    assert m.backends == []
    (io_rec,) = [r for r in caplog.records if "nbd" in r.getMessage()]
    assert "flush of nbd at exit failed" in io_rec.getMessage() and io_rec.exc_info is None
    (bug_rec,) = [r for r in caplog.records if "bug" in r.getMessage()]
    assert bug_rec.exc_info is not None  # a programming error keeps its traceback
