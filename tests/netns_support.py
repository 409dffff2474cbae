"""A network namespace of the test's own, for the tests that put a tap in one (the daemon's
tap backend, tap hand-over on unplug, a tap deleted under the daemon): the kernel on the other
side answers, and no traffic leaves the namespace. Needs root, /dev/net/tun and iproute2."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def tap_skip_reason() -> str | None:
    """Why a tap in a network namespace cannot be had here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns, tap devices)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    if shutil.which("ip") is None:
        return "no iproute2 `ip`"
    return None


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ip -n NS ARGS...`."""
    return subprocess.run(["ip", "-n", ns, *args], check=check, capture_output=True, text=True,
                          timeout=10)


@contextmanager
def private_netns(prefix: str, *setup: tuple[str, ...]) -> Iterator[str]:
    """A fresh namespace named prefix + this process's pid (the test is skipped where there can
    be none), with the `ip -n` commands of `setup` run in it; deleted, with what is in it, at
    the end."""
    why = tap_skip_reason()
    if why:
        pytest.skip(why)
    name = f"{prefix}{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot create a network namespace: {res.stderr.strip()}")
    try:
        for args in setup:
            ip(name, *args)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
