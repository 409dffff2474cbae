"""The VGA window's write_fill (a forward REP STOS, Machine._rep) stores exactly what the same
writes one at a time store: VRAM, the latch and the guest errors, for random register states,
including the odd/even text clear it does as strided slice stores."""

from __future__ import annotations

import random

from devmodel.vga import regs as R
from devmodel.vga.device import StdVga


def _after(vga: StdVga, init: bytes, latch: int, store) -> tuple[bytes, int, list[str]]:
    """VRAM, latch and guest errors after `store()` from VRAM `init` and `latch`."""
    vga.vram[:] = init
    vga.latch = latch
    errors: list[str] = []
    vga.guest_error = errors.append  # type: ignore[method-assign]
    store()
    return bytes(vga.vram), vga.latch, errors


def _random_vram(rng: random.Random) -> tuple[StdVga, bytes]:
    vga = StdVga(bytearray(1 << 20))
    return vga, bytes(rng.getrandbits(8) for _ in range(256)) * (vga.vram_size // 256)


def _run(vga: StdVga, init: bytes, fill: bool, off: int, size: int, count: int,
         value: int) -> tuple[bytes, int, list[str]]:
    def store() -> None:
        if fill:
            vga._window_fill(off, size, count, value)
        else:
            for i in range(count):
                vga._window_write(off + i * size, size, value)
    return _after(vga, init, 0, store)


def test_window_fill_matches_element_writes():
    rng = random.Random(7)
    vga, init = _random_vram(rng)
    vsize = vga.vram_size
    fast = 0
    for _ in range(400):
        vga.sr[R.SR_MEMMODE] = rng.choice([0, 2, 4, 8, 0xE])
        vga.sr[R.SR_MAP_MASK] = rng.randrange(16)
        vga.gr[R.GR_MISC] = rng.randrange(16)
        vga.gr[R.GR_MODE] = rng.choice([0, 0x10, 1, 2, 3])
        vga.vbe_regs[R.VBE_INDEX_ENABLE] = rng.choice([0, 0, 0, R.VBE_ENABLED])
        vga.bank_offset = rng.choice([0, 0x10000, vsize - 0x8000, vsize - 4])
        size = rng.choice([1, 2, 2, 2, 4, 8])
        count = rng.choice([1, 2, 3, 100, 2048])
        off = rng.choice([0, 1, 0x10000 - 200, 0x18000 - 10, 0x7FF0, rng.randrange(0x20000)])
        if off + size * count > 0x20000:
            continue
        value = rng.getrandbits(8 * size)
        fast += size == 2 and count > 1 and vga._odd_even_fill(off, count, value)
        assert (_run(vga, init, True, off, size, count, value)
                == _run(vga, init, False, off, size, count, value))
    assert fast > 10  # the strided path was taken, not only the element loop


def _run_block(vga: StdVga, init: bytes, block: bool, off: int, size: int,
               data: bytes) -> tuple[bytes, int, list[str]]:
    def store() -> None:
        if block:
            vga._window_block(off, size, memoryview(data))
        else:
            for i in range(0, len(data), size):
                vga._window_write(off + i, size, int.from_bytes(data[i : i + size], "little"))
    return _after(vga, init, 0x5A5A5A5A, store)


def test_window_block_matches_element_writes():
    """write_rep of the window (a forward REP MOVS from RAM, Machine._copy_block) stores what
    the same writes one at a time store, for random register states, including the planar
    font load (plane 2, write mode 0) and the linear VBE / chain-4 copies it does at once."""
    rng = random.Random(11)
    vga, init = _random_vram(rng)
    vsize = vga.vram_size
    planar = 0
    for _ in range(500):
        vga.sr[R.SR_MEMMODE] = rng.choice([0, 2, 4, 6, 6, 8, 0xE])
        vga.sr[R.SR_MAP_MASK] = rng.choice([4, 4, 0xF, rng.randrange(16)])
        vga.gr[R.GR_MISC] = rng.choice([4, 4, rng.randrange(16)])
        vga.gr[R.GR_MODE] = rng.choice([0, 0, 0x10, 1, 2, 3])
        vga.gr[R.GR_DATA_ROTATE] = rng.choice([0, 0, 0, 1, 0x08, 0x18])
        vga.gr[R.GR_SR_ENABLE] = rng.choice([0, 0, 0, 0x0F, 0x04])
        vga.gr[R.GR_SR_VALUE] = rng.randrange(16)
        vga.gr[R.GR_BIT_MASK] = rng.choice([0xFF, 0xFF, 0xFF, 0x0F, 0])
        vga.vbe_regs[R.VBE_INDEX_ENABLE] = rng.choice([0, 0, 0, R.VBE_ENABLED])
        vga.bank_offset = rng.choice([0, 0x10000, vsize - 0x8000, vsize - 4])
        size = rng.choice([1, 1, 2, 4])
        count = rng.choice([1, 16, 32, 100, 1024])
        off = rng.choice([0, 1, 0x4000, 0x10000 - 40, 0x18000 - 10, rng.randrange(0x20000)])
        if off + size * count > 0x20000:
            continue
        data = bytes(rng.getrandbits(8) for _ in range(size * count))
        planar += vga._planar_copy(off, data) if not vga.vbe_enabled() else 0
        assert (_run_block(vga, init, True, off, size, data)
                == _run_block(vga, init, False, off, size, data))
    assert planar >= 5  # the strided planar path was taken, not only the element loop
