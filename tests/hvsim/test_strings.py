"""REP INS/OUTS: decoding, batching plans, and one pio_string per page on the real CPU."""

from __future__ import annotations

import struct

from unicorn import x86_const as x86

from devmodel.hvsim.strings import (
    SEG_CS,
    SEG_DS,
    SEG_ES,
    decode_mem_string_insn,
    decode_string_insn,
    is_rep_mem_string,
    plan_string,
)

DATA_PORT = 0x1F0


def test_decode() -> None:
    insn = decode_string_insn(bytes.fromhex("f36d90"), default32=False)
    assert insn is not None and insn.is_in and insn.rep and not insn.addr32
    assert insn.segment == SEG_ES and insn.length == 2
    insn = decode_string_insn(bytes.fromhex("2667f36f"), default32=False)
    assert insn is not None and not insn.is_in and insn.addr32 and insn.segment == SEG_ES
    insn = decode_string_insn(bytes.fromhex("6e"), default32=True)
    assert insn is not None and not insn.rep and insn.segment == SEG_DS and insn.addr32
    assert decode_string_insn(bytes.fromhex("e461"), False) is None  # in al, 0x61
    assert decode_string_insn(bytes.fromhex("66ed"), False) is None  # in eax, dx
    assert decode_string_insn(b"\xf3" * 20, False) is None  # runaway prefixes


def test_decode_stos_movs() -> None:
    insn = decode_mem_string_insn(bytes.fromhex("f3ab"), default32=False)  # rep stosw
    assert insn is not None and not insn.movs and insn.rep and not insn.addr32
    assert insn.length == 2
    insn = decode_mem_string_insn(bytes.fromhex("2e67f3a4"), default32=False)  # rep movsb cs:
    assert insn is not None and insn.movs and insn.addr32 and insn.segment == SEG_CS
    insn = decode_mem_string_insn(bytes.fromhex("66f2a5"), default32=True)  # repne movsw
    assert insn is not None and insn.movs and insn.rep and insn.segment == SEG_DS
    assert decode_mem_string_insn(bytes.fromhex("aa"), False) is not None  # plain stosb
    assert decode_mem_string_insn(bytes.fromhex("f36d"), False) is None  # rep insw
    assert decode_mem_string_insn(bytes.fromhex("f3a6"), False) is None  # repe cmpsb
    assert decode_mem_string_insn(b"\xf3" * 20, False) is None
    assert is_rep_mem_string(bytes.fromhex("f3ab2e67")) and is_rep_mem_string(b"\x26\xf3\xa5")
    assert not is_rep_mem_string(bytes.fromhex("ab")) and not is_rep_mem_string(b"\xf3\x6d")
    assert not is_rep_mem_string(bytes.fromhex("8907"))  # mov [bx], ax


def test_plan_clamps_at_page_and_wrap() -> None:
    ins16 = decode_string_insn(b"\xf3\x6d", False)
    assert ins16 is not None
    plan = plan_string(ins16, 2, cx=300, index=0x0F00, seg_base=0x10000, df=False)
    assert plan is not None and (plan.gpa, plan.count) == (0x10F00, 128)
    assert plan.new_cx == 172 and plan.new_index == 0x1000
    # DF=1: elements go down; the page start bounds the batch.
    plan = plan_string(ins16, 2, cx=0xABCD0000 | 100, index=0x12340010, seg_base=0x20000,
                       df=True)
    assert plan is not None and plan.count == 9  # 0x20010 .. 0x20000
    assert plan.new_cx == 0xABCD0000 | 91 and plan.new_index == 0x1234FFFE  # 16-bit wrap
    # 16-bit index about to wrap: element 0 alone, so no batch.
    assert plan_string(ins16, 2, cx=3, index=0xFFFE, seg_base=0x20000, df=False) is None
    # Element straddling a page: no batch.
    assert plan_string(ins16, 2, cx=3, index=0x0FFF, seg_base=0, df=False) is None
    assert plan_string(ins16, 2, cx=1, index=0, seg_base=0, df=False) is None
    ins32 = decode_string_insn(b"\x67\xf3\x6d", False)
    assert ins32 is not None
    plan = plan_string(ins32, 4, cx=5000, index=0x123000, seg_base=0, df=False)
    assert plan is not None and plan.count == 1024 and plan.new_cx == 5000 - 1024


def prog_rep(es: int, di: int, cx: int, insn: bytes, std: bool = False, si: int = 0,
             ds: int = 0, edi32: int | None = None) -> bytes:
    code = bytes((0xB8,)) + struct.pack("<H", es) + b"\x8e\xc0"  # mov ax, es ; mov es, ax
    code += bytes((0xB8,)) + struct.pack("<H", ds) + b"\x8e\xd8"  # mov ds, ax
    if edi32 is not None:
        code += b"\x66\xbf" + struct.pack("<I", edi32)  # mov edi, imm32
    else:
        code += b"\xbf" + struct.pack("<H", di)
    code += b"\xbe" + struct.pack("<H", si)
    code += b"\x66\xb9" + struct.pack("<I", cx)  # mov ecx, imm32
    code += b"\xba" + struct.pack("<H", DATA_PORT)
    code += b"\xfd" if std else b"\xfc"
    return code + insn + b"\xfa\xf4"  # cli; hlt


class Source:
    """A device-model data port: reads count up, writes are collected."""

    def __init__(self) -> None:
        self.next = 1
        self.written: list[int] = []

    def __call__(self, op: str, size: int, value: int = 0) -> int | None:
        if op == "r":
            v = self.next
            self.next += 1
            return v
        self.written.append(value)
        return None


def run_prog(tiny_sim, code: bytes):
    sim, dm = tiny_sim(code)
    src = Source()
    dm.extra_ports[DATA_PORT] = src
    stop = sim.run(max_insns=100_000)
    assert stop.reason.value == "halted", stop
    return sim, dm, src


def words(sim, gpa: int, n: int) -> list[int]:
    return list(struct.unpack(f"<{n}H", sim.ram.read(gpa, 2 * n)))


def test_rep_insw_is_one_call_per_page(tiny_sim) -> None:
    sim, dm, _ = run_prog(tiny_sim, prog_rep(0x1000, 0x0F00, 300, b"\xf3\x6d"))
    assert dm.string_calls == [(DATA_PORT, 2, 128, True, 0x10F00, False),
                               (DATA_PORT, 2, 172, True, 0x11000, False)]
    assert words(sim, 0x10F00, 300) == list(range(1, 301))
    assert sim.cpu.reg(x86.UC_X86_REG_ECX) == 0
    assert sim.cpu.reg(x86.UC_X86_REG_EDI) & 0xFFFF == 0x0F00 + 600
    assert sim.ram.read(0x10F00 + 600, 2) == b"\0\0"  # nothing past the end
    assert sim.stats.rep_batches == 2 and sim.stats.rep_elements == 300


def test_rep_insw_backwards(tiny_sim) -> None:
    sim, dm, _ = run_prog(tiny_sim, prog_rep(0x0200, 0x0008, 5, b"\xf3\x6d", std=True))
    assert dm.string_calls == [(DATA_PORT, 2, 5, True, 0x2008, True)]
    assert words(sim, 0x2000, 5) == [5, 4, 3, 2, 1]
    assert sim.cpu.reg(x86.UC_X86_REG_EDI) & 0xFFFF == 0xFFFE  # 8 - 10, 16-bit wrap
    assert sim.cpu.reg(x86.UC_X86_REG_ECX) == 0


def test_rep_insw_16bit_wrap_falls_back_then_batches(tiny_sim) -> None:
    sim, dm, _ = run_prog(tiny_sim, prog_rep(0x2000, 0xFFFE, 3, b"\xf3\x6d"))
    # Element 0 at 2000:FFFE alone, then DI wraps to 0: the rest from 0x20000 in one batch.
    assert dm.string_calls == [(DATA_PORT, 2, 2, True, 0x20000, False)]
    assert words(sim, 0x2FFFE, 1) == [1] and words(sim, 0x20000, 2) == [2, 3]
    assert sim.cpu.reg(x86.UC_X86_REG_EDI) & 0xFFFF == 4


def test_rep_insd_with_address_size_prefix(tiny_sim) -> None:
    code = prog_rep(0, 0, 4, b"\x66\x67\xf3\x6d", edi32=0x12000)  # rep insd, a32
    sim, dm, _ = run_prog(tiny_sim, code)
    assert dm.string_calls == [(DATA_PORT, 4, 4, True, 0x12000, False)]
    assert sim.cpu.reg(x86.UC_X86_REG_EDI) == 0x12010
    assert struct.unpack("<4I", sim.ram.read(0x12000, 16)) == (1, 2, 3, 4)


def test_rep_outsb_with_segment_override(tiny_sim) -> None:
    code = prog_rep(0x0300, 0, 6, b"\x26\xf3\x6e", si=0x0010, ds=0x0400)  # es: rep outsb
    sim, dm = tiny_sim(code)
    sim.ram.write(0x3010, b"HELLO!")
    src = Source()
    dm.extra_ports[DATA_PORT] = src
    assert sim.run(max_insns=100_000).reason.value == "halted"
    assert dm.string_calls == [(DATA_PORT, 1, 6, False, 0x3010, False)]
    assert bytes(src.written) == b"HELLO!"
    assert sim.cpu.reg(x86.UC_X86_REG_ESI) & 0xFFFF == 0x0016


def test_rep_insw_to_unclaimed_port_reads_all_ones_locally(tiny_sim) -> None:
    code = prog_rep(0x0100, 0, 4, b"\xf3\x6d").replace(
        b"\xba" + struct.pack("<H", DATA_PORT), b"\xba\x70\x01")  # port 0x170
    sim, dm = tiny_sim(code)
    assert sim.run(max_insns=100_000).reason.value == "halted"
    assert dm.string_calls == []
    assert sim.ram.read(0x1000, 8) == b"\xff" * 8


def test_plain_in_is_not_batched(tiny_sim) -> None:
    code = b"\xba" + struct.pack("<H", DATA_PORT) + b"\xed\xed\xa3\x00\x05\xfa\xf4"
    sim, dm, _ = run_prog(tiny_sim, code)  # in ax,dx ; in ax,dx ; mov [0x500],ax
    assert dm.string_calls == []
    assert words(sim, 0x500, 1) == [2]
