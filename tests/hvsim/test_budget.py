"""budget.py: slices counted per translation block by a C hook (compiled with the system
compiler on first use), and the fallback to Unicorn's count when that cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn import x86_const as x86

from devmodel.hvsim import budget

CODE = 0x1000


def engine(code: bytes) -> tuple[Uc, budget.BlockBudget]:
    lib, why = budget.load()
    if lib is None:
        pytest.skip(why)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(CODE, code)
    return uc, budget.BlockBudget(uc, lib)


def test_a_slice_is_its_budget_of_code_bytes_at_block_granularity() -> None:
    uc, b = engine(bytes.fromhex("40ebfd"))  # 1: inc eax; jmp 1b (one 3-byte block)
    b.arm(1000)
    uc.emu_start(CODE, 0xFFFFFFFF)
    assert b.stopped and b.blocks == 1000 and b.state.used == 3000
    # The stop takes effect before the block it was requested at runs (Unicorn 2.1).
    assert uc.reg_read(x86.UC_X86_REG_EAX) == 999


def test_no_stop_at_a_block_ending_in_an_f4_byte() -> None:
    # 0x1000: or eax,1; jz -12 (not taken; the block's last byte is the F4 operand)
    # 0x1005: nop; jmp $ (the stop, one block later: before this block runs)
    uc, b = engine(bytes.fromhex("83c801" "74f4" "90" "ebfe"))
    b.arm(0)  # due at once
    uc.emu_start(CODE, 0xFFFFFFFF)
    assert b.stopped and b.blocks == 2
    assert uc.reg_read(x86.UC_X86_REG_EIP) == CODE + 5


def test_a_hlt_block_is_never_the_stop_so_the_halt_is_seen() -> None:
    uc, b = engine(bytes.fromhex("83c801" "f4" "90"))  # or eax,1; hlt
    b.arm(0)
    uc.emu_start(CODE, 0xFFFFFFFF)
    assert not b.stopped  # emu_start returned on the HLT, not on the budget
    eip = uc.reg_read(x86.UC_X86_REG_EIP)
    assert eip == CODE + 4 and uc.mem_read(eip - 1, 1) == b"\xf4"


def test_disarmed_budget_never_stops() -> None:
    uc, b = engine(bytes.fromhex("40ebfd"))
    b.disarm()
    uc.emu_start(CODE, 0xFFFFFFFF, count=5000)  # Unicorn's own count ends this one
    assert not b.stopped and uc.reg_read(x86.UC_X86_REG_EAX) == 2500


def test_without_a_compiler_the_simulator_counts_with_unicorn(tmp_path) -> None:
    code = (
        "from devmodel.hvsim import Simulator, budget\n"
        "from devmodel.hvsim.ports import NullPort\n"
        "lib, why = budget.load()\n"
        "assert lib is None and 'false failed' in why, why\n"
        "sim = Simulator(NullPort(), 2 << 20)\n"
        "assert sim.budget is None and 'counted by Unicorn' in sim.slicing_note\n"
        "try:\n"
        "    Simulator(NullPort(), 2 << 20, slicing='blocks')\n"
        "except RuntimeError as e:\n"
        "    assert 'slicing=blocks' in str(e)\n"
        "else:\n"
        "    raise AssertionError('slicing=blocks without the hook')\n"
    )
    env = {**os.environ, "CC": "false", "XDG_CACHE_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def test_the_hook_is_built_once_into_the_cache(tmp_path) -> None:
    code = ("from devmodel.hvsim import budget\n"
            "lib, why = budget.load()\n"
            "assert lib is not None, why\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120)
        if r.returncode and "no C compiler" in r.stderr:
            pytest.skip("no C compiler")
        assert r.returncode == 0, r.stderr
    built = list((tmp_path / "devmodel").iterdir())
    assert len(built) == 1 and built[0].name.startswith("hvsim-budget-")
