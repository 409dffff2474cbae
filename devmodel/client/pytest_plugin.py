"""pytest fixtures for protocol-level tests of devmodel (registered as a pytest11 plugin).

- `devmodel_daemon(*args)`: start a real daemon subprocess with the given device options on a
  temporary socket; stopped (SIGTERM) at teardown.
- `hv`: a connected `Hypervisor` to a default daemon with 64 MiB of guest RAM shared.
- `hv_factory(*args, ram=...)`: the same with chosen options.
"""

from __future__ import annotations

import pytest

from .process import DaemonProcess
from .sync import Hypervisor


@pytest.fixture
def devmodel_daemon():
    started: list[DaemonProcess] = []

    def start(*args: str) -> DaemonProcess:
        proc = DaemonProcess.start(list(args))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def hv_factory():
    made: list[Hypervisor] = []

    def make(*args: str, ram: int | None = 64 << 20, **kw) -> Hypervisor:
        hv = Hypervisor.spawn(list(args) or ["--domid", "1"], ram=ram, **kw)
        made.append(hv)
        return hv

    yield make
    for hv in made:
        if hv.process is not None:
            hv.process.signal()
        hv.close()


@pytest.fixture
def hv(hv_factory) -> Hypervisor:
    return hv_factory()
