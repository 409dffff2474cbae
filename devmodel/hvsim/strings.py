"""``rep ins`` / ``rep outs`` as one data_is_ptr request.

Unicorn calls the IN/OUT instruction hook once per element of a string instruction and does not
say whether a REP prefix is present, so the simulator decodes the bytes at EIP (the hook runs
with EIP at the first prefix byte) and, for a REP INS/OUTS to a device-model port, moves the whole
run in one ``pio_string`` call (xen-protocol.md 1.4; design rule 10).

Register semantics are those of the Intel SDM vol. 2 (INS/INSB/INSW/INSD, OUTS, REP): the
address size (16 or 32, from the code segment's D bit and a 0x67 prefix) selects CX/DI/SI or
ECX/EDI/ESI and the wrap-around; DF selects the direction; INS stores at ES:(E)DI (no override
allowed), OUTS loads from DS:(E)SI or the override segment. As in Xen (hvmemul_rep_ins/outs),
one request never makes the RAM buffer cross a page: ``count`` is clamped, and the rest of the
instruction is restarted as the next request.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 4096
MAX_PREFIXES = 14  # an x86 instruction is at most 15 bytes

SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS = range(6)
_SEG_PREFIX = {0x26: SEG_ES, 0x2E: SEG_CS, 0x36: SEG_SS, 0x3E: SEG_DS, 0x64: SEG_FS, 0x65: SEG_GS}
_OTHER_PREFIX = frozenset({0xF0, 0x66})
_REP_PREFIX = frozenset({0xF3, 0xF2})
_ANY_PREFIX = frozenset({0xF3, 0xF2, 0x67, 0xF0, 0x66, *_SEG_PREFIX})


@dataclass(frozen=True, slots=True)
class StringInsn:
    is_in: bool  # INS (port -> memory) or OUTS (memory -> port)
    rep: bool
    addr32: bool
    segment: int  # source segment of OUTS; INS always uses ES
    length: int  # bytes, prefixes included


def _decode_prefixed(
    code: bytes, default32: bool, opcodes: frozenset[int]
) -> tuple[int, bool, bool, int, int] | None:
    """Skip the prefixes at the start of ``code`` up to one of ``opcodes``: (opcode, rep,
    addr32, segment, length) or None for anything else. REPNE counts as REP (for INS/OUTS/
    STOS/MOVS the CPU ignores the Z condition of either prefix; SDM vol. 2, REP)."""
    rep = False
    addr32 = default32
    segment = SEG_DS
    for i, byte in enumerate(code[: MAX_PREFIXES + 1]):
        if byte in (0xF3, 0xF2):
            rep = True
        elif byte == 0x67:
            addr32 = not default32
        elif byte in _SEG_PREFIX:
            segment = _SEG_PREFIX[byte]
        elif byte in _OTHER_PREFIX:
            pass
        elif byte in opcodes:
            return byte, rep, addr32, segment, i + 1
        else:
            return None
    return None


def _starts_rep(code: bytes, opcodes: frozenset[int]) -> bool:
    """Whether ``code`` starts with one of ``opcodes`` after prefixes that include a REP."""
    rep = False
    for byte in code[: MAX_PREFIXES + 1]:
        if byte in opcodes:
            return rep
        if byte not in _ANY_PREFIX:
            return False
        if byte in _REP_PREFIX:
            rep = True
    return False


_IO_STRING = frozenset({0x6C, 0x6D, 0x6E, 0x6F})


def decode_string_insn(code: bytes, default32: bool) -> StringInsn | None:
    """Decode INS/OUTS at the start of ``code``; None for anything else (plain IN/OUT)."""
    d = _decode_prefixed(code, default32, _IO_STRING)
    if d is None:
        return None
    byte, rep, addr32, segment, length = d
    return StringInsn(byte < 0x6E, rep, addr32, SEG_ES if byte < 0x6E else segment, length)


def is_rep_string(code: bytes) -> bool:
    """Cheap filter: whether ``code`` starts with INS/OUTS (0x6C-0x6F) after prefixes that
    include a REP. Only such an instruction can be batched; ``decode_string_insn`` then does
    the full decode. Most exits are plain IN/OUT, rejected at the first byte."""
    return _starts_rep(code, _IO_STRING)


@dataclass(frozen=True, slots=True)
class MemStringInsn:
    """A STOS or MOVS: the string instructions whose stores Xen batches into one MMIO request
    (hvmemul_rep_stos / hvmemul_rep_movs; xen-protocol.md 1.4)."""

    movs: bool  # MOVS (memory -> memory) or STOS (AL/AX/EAX -> memory)
    rep: bool
    addr32: bool
    segment: int  # source segment of MOVS (override allowed); the destination is always ES
    length: int


_MEM_STRING = frozenset({0xA4, 0xA5, 0xAA, 0xAB})


def is_rep_mem_string(code: bytes) -> bool:
    """Cheap filter, as is_rep_string: STOS/MOVS (0xA4/0xA5/0xAA/0xAB) after prefixes that
    include a REP."""
    return _starts_rep(code, _MEM_STRING)


def decode_mem_string_insn(code: bytes, default32: bool) -> MemStringInsn | None:
    """Decode STOS/MOVS at the start of ``code``; None for anything else. REPNE counts as
    REP: for STOS/MOVS the CPU ignores the Z condition of either prefix (SDM vol. 2, REP)."""
    d = _decode_prefixed(code, default32, _MEM_STRING)
    if d is None:
        return None
    byte, rep, addr32, segment, length = d
    return MemStringInsn(byte in (0xA4, 0xA5), rep, addr32, segment, length)


@dataclass(frozen=True, slots=True)
class StringPlan:
    """One batch: ``count`` elements with element 0 at ``gpa``; the new register values are
    what they must be *after* the whole batch."""

    gpa: int
    count: int
    new_cx: int
    new_index: int  # new (E)DI for INS, (E)SI for OUTS


def plan_string(
    insn: StringInsn | MemStringInsn, size: int, cx: int, index: int, seg_base: int, df: bool
) -> StringPlan | None:
    """The largest batch Xen would send for this REP INS/OUTS, or None to fall back to one
    element at a time (count < 2, or the first element straddles a page).

    ``cx`` and ``index`` are the full 32-bit register values; with 16-bit addressing only the low
    halves count and move, and the index wraps at 64 KiB, so the batch stops before the wrap.
    """
    if not insn.rep:
        return None
    mask = 0xFFFFFFFF if insn.addr32 else 0xFFFF
    reps = cx & mask
    offset = index & mask
    gpa = (seg_base + offset) & 0xFFFFFFFF
    in_page = gpa & (PAGE_SIZE - 1)
    if in_page + size > PAGE_SIZE:
        return None  # element 0 straddles two pages
    if df:
        fit_page = in_page // size + 1
        fit_wrap = offset // size + 1
    else:
        fit_page = (PAGE_SIZE - in_page) // size
        fit_wrap = (mask + 1 - offset) // size
    count = min(reps, fit_page, fit_wrap)
    if count < 2:
        return None
    step = -size if df else size
    new_cx = (cx & ~mask) | ((reps - count) & mask)
    new_index = (index & ~mask) | ((offset + step * count) & mask)
    return StringPlan(gpa, count, new_cx, new_index)
