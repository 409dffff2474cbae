"""Slice budgets counted per translation block, by a hook in C.

``emu_start(count=n)`` makes Unicorn call a counting helper before *every* instruction (its
UC_HOOK_CODE count hook): translation costs about twice as much (7.2 against 3.2 us per block
on this machine, bench/boot.py measures the boot) and execution about three times. This hook
runs once per block instead, adds the block's size in bytes to ``used`` and calls
``uc_emu_stop`` once ``used`` reaches ``limit``, so a slice of n instructions becomes a slice
of about ``CODE_BYTES_PER_INSN * n`` bytes of code, ended at a block boundary: as
deterministic as the count (the same code takes the same blocks), at a third of the cost.

HLT: Unicorn returns from ``emu_start`` quietly after a HLT, with EIP past it, which the
simulator reads from the byte before EIP. A stop requested from this hook takes effect before
the block it was requested at runs (Unicorn 2.1; tests/hvsim/test_budget.py), so a slice that
ended on its budget ended before a block, not at a HLT, whatever byte precedes EIP. Should a
block run to its end after the request (as the rest of a block does after a stop from an
instruction hook, seabios-on-unicorn.md obstacle 5), a HLT ending it could not be told from
the stop; the hook therefore never stops at a block whose last byte is 0xF4 (it stops at the
next one) while paging is off (with paging on, the block's address is linear and the look
is skipped: ``arm(check_last=False)``). Either way, when ``stopped`` is set the slice did not
end on a HLT.

The hook is a few lines of C, compiled once with the system compiler (``CC``, else cc/gcc)
into the user's cache directory and loaded with ctypes; ``load`` returns None, with the
reason, when that cannot be done, and the simulator falls back to Unicorn's count.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CODE_BYTES_PER_INSN = 3  # x86 real- and protected-mode code averages about 3 bytes
SOURCE = r"""
#include <stdint.h>
typedef int (*stop_fn)(void *uc);
typedef int (*read_fn)(void *uc, uint64_t address, void *bytes, uint64_t size);
struct budget {
    uint64_t used, limit, blocks;
    uint32_t stopped, check_last;
    stop_fn stop;
    read_fn read;
};
void devmodel_block_budget(void *uc, uint64_t address, uint32_t size, struct budget *b)
{
    uint8_t last = 0;
    b->used += size;
    b->blocks++;
    if (b->used < b->limit || b->stopped)
        return;
    /* Not at a block that may end in HLT: that stop could not be told from the HLT. */
    if (b->check_last && size && b->read(uc, address + size - 1, &last, 1) == 0
        && last == 0xF4)
        return;
    b->stopped = 1;
    b->stop(uc);
}
"""
SYMBOL = "devmodel_block_budget"


class Budget(ctypes.Structure):
    _fields_ = [("used", ctypes.c_uint64), ("limit", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("stopped", ctypes.c_uint32),
                ("check_last", ctypes.c_uint32), ("stop", ctypes.c_void_p),
                ("read", ctypes.c_void_p)]


_loaded: tuple[ctypes.CDLL | None, str] | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "devmodel"


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc"):
        if cc and shutil.which(cc):
            return cc
    return None


def _build(target: Path, cc: str) -> str | None:
    """Compile SOURCE to `target` (atomically); an error text, or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "budget.c"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        try:
            r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                               capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            return f"{cc}: {e}"
        if r.returncode != 0:
            return f"{cc} failed: {r.stderr.strip()[-300:]}"
        os.replace(out, target)
    return None


def load() -> tuple[ctypes.CDLL | None, str]:
    """The compiled hook library and "", or None and why not (once per process)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    cc = _compiler()
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    target = _cache_dir() / f"hvsim-budget-{digest}.so"
    why = ""
    if not target.exists():
        if cc is None:
            why = "no C compiler (set CC, or install gcc)"
        else:
            try:
                why = _build(target, cc) or ""
            except OSError as e:
                why = f"cannot write {target.parent}: {e}"
    lib = None
    if not why:
        try:
            lib = ctypes.CDLL(str(target))
            getattr(lib, SYMBOL)
        except (OSError, AttributeError) as e:
            lib, why = None, f"cannot load {target}: {e}"
    _loaded = (lib, why)
    return _loaded


class BlockBudget:
    """The hook installed on one engine, and its counters."""

    def __init__(self, uc: object, lib: ctypes.CDLL) -> None:
        from unicorn import UC_HOOK_BLOCK
        from unicorn.unicorn_py3.unicorn import uclib

        self.state = Budget()
        self.state.stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        self.state.read = ctypes.cast(uclib.uc_mem_read, ctypes.c_void_p).value
        handle = ctypes.c_size_t()
        err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK,  # type: ignore[attr-defined]
                                ctypes.cast(getattr(lib, SYMBOL), ctypes.c_void_p),
                                ctypes.byref(self.state), ctypes.c_uint64(1), ctypes.c_uint64(0))
        if err != 0:
            raise OSError(f"uc_hook_add(UC_HOOK_BLOCK) failed: {err}")
        self._lib = lib  # the code must outlive the hook

    def arm(self, insns: int, check_last: bool = True) -> None:
        """A budget of `insns` instructions for the next emu_start. `check_last`: look at the
        last byte of the block where the budget runs out (by physical address, so only with
        paging off: with paging on the address is linear, and reading it might even reach
        MMIO; the stop-before-block behaviour alone then keeps a HLT from being missed)."""
        s = self.state
        s.used = 0
        s.limit = max(1, insns * CODE_BYTES_PER_INSN)
        s.stopped = 0
        s.check_last = int(check_last)

    def disarm(self) -> None:
        """No stop from the hook (a slice counted by Unicorn itself)."""
        s = self.state
        s.limit = (1 << 64) - 1
        s.stopped = 0

    @property
    def stopped(self) -> bool:
        """Whether the last slice ended on its budget (not on a HLT, a kick or an error)."""
        return bool(self.state.stopped)

    @property
    def blocks(self) -> int:
        return int(self.state.blocks)
