"""budget.py: slices counted per translation block by a C hook (compiled with the system
compiler on first use), and the fallback to Unicorn's count when that cannot be built."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn import x86_const as x86

from devmodel.hvsim import StopReason, budget

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


# Real mode -> flat protected mode -> paging on (one 4 MiB PSE page, identity), then
# 300,000 times `inc dword [0x500]; dec ecx; jnz`, then cli; hlt (GNU as, .intel_syntax):
#   cli; xor ax,ax; mov ds,ax; lgdt [0x6F00]; mov eax,cr0; or al,1; mov cr0,eax; ljmp 8:pm32
#   pm32: mov ax,0x10; mov ds/es/ss,ax; mov esp,0x90000; mov eax,0x10000; mov cr3,eax;
#   mov eax,cr4; or eax,0x10; mov cr4,eax; mov eax,cr0; or eax,0x80000000; mov cr0,eax; jmp 1f
#   1: mov ecx,300000; 2: inc dword [0x500]; dec ecx; jnz 2b; cli; hlt
PAGING = bytes.fromhex(
    "fa31c08ed80f0116006f0f20c00c010f22c0ea177c0800"
    "66b810008ed88ec08ed0bc00000900b8000001000f22d80f20e083c8100f22e0"
    "0f20c00d000000800f22c0eb00b9e0930400ff05000500004975f7faf4")
LOOPS = 300_000


@pytest.mark.parametrize("slicing", ["count", "blocks"])
def test_a_paging_guest_runs_to_its_halt_in_either_slicing(tiny_sim, slicing: str) -> None:
    """With paging on, the hook skips its look at the block's last byte (a linear address):
    the loop still runs in whole slices and the final `cli; hlt` is still seen."""
    if slicing == "blocks" and budget.load()[0] is None:
        pytest.skip(budget.load()[1])
    sim, _ = tiny_sim(PAGING, slicing=slicing)
    gdt = struct.pack("<3Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
    sim.ram.write(0x6E00, gdt)
    sim.ram.write(0x6F00, struct.pack("<HI", len(gdt) - 1, 0x6E00))
    sim.ram.write(0x10000, struct.pack("<I", 0x83))  # PDE 0: 4 MiB, present, writable
    stop = sim.run(max_insns=10_000_000)
    assert stop.reason is StopReason.HALTED, stop
    assert struct.unpack("<I", sim.ram.read(0x500, 4))[0] == LOOPS
    assert sim.cpu.reg(x86.UC_X86_REG_CR0) & 0x80000000
    assert sim.stats.slices >= 3  # the ~900,000 instructions took several slices
    assert (sim.stats.block_slices > 0) == (slicing == "blocks")
