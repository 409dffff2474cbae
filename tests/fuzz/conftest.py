"""Fixtures of the fuzz tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def quiet_devmodel():
    """The devmodel logger at ERROR for the test (the fuzzer's guest errors and warnings are
    expected by the thousand), its level put back after."""
    logger = logging.getLogger("devmodel")
    old = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(old)
