"""Shared fixtures for the hypervisor-simulator tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hvsim_fakes import ENTRY, FakeDeviceModel, make_rom  # noqa: E402

from devmodel.hvsim import Simulator  # noqa: E402


@pytest.fixture
def tiny_sim(tmp_path: Path) -> Iterator[Callable[..., tuple[Simulator, FakeDeviceModel]]]:
    """Factory: a Simulator on a 4 MiB machine running ``code`` at 0000:7C00."""
    made: list[tuple[Simulator, FakeDeviceModel]] = []

    def build(
        code: bytes, host_bridge: bool = False, **kw: object
    ) -> tuple[Simulator, FakeDeviceModel]:
        dm = FakeDeviceModel(4 << 20, host_bridge=host_bridge, bios=make_rom(tmp_path / "rom.bin"))
        sim = Simulator(dm, 4 << 20, **kw)  # type: ignore[arg-type]
        dm.announce()
        dm.ram = sim.ram.view
        sim.ram.write(ENTRY, code)
        made.append((sim, dm))
        return sim, dm

    yield build
    for sim, dm in made:
        sim.close()
        dm.close()
