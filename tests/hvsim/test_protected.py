"""Protected-mode interrupt delivery through the IDT (Intel SDM vol. 3, 6.12), on a hand-assembled
program: real mode -> lgdt/lidt -> CR0.PE -> far jump to 32-bit code -> ltr, then a PIT IRQ0
at `sti; hlt` (interrupt gate), a software `int 0x80` (trap gate), a #DE whose handler skips the
`div`, and an iret to ring 3 whose `int 0x81` / `int 0x82` switch to the TSS's ring-0 stack.

GDT, IDT and TSS are built here and written to guest RAM; the program loads them itself.
Source of the code bytes (GNU as, `.intel_syntax noprefix`, linked at 0x7C00):

    .code16                          .code32 (pm32, 0x7C1C)
    cli                              mov ax, 0x10 ; mov ds/es/ss, ax ; mov esp, 0x90000
    xor ax, ax ; mov ds, ax          mov ax, 0x28 ; ltr ax
    lgdt [0x6F00] ; lidt [0x6F08]    PIC: ICW1-4 (vector base 0x20), mask 0xFE
    mov eax, cr0 ; or al, 1          PIT: mode 2, count 11932 (10 ms)
    mov cr0, eax                     sti ; hlt                      <- IRQ0 (vector 0x20)
    ljmp 0x08:pm32                   mov al, 0xFF ; out 0x21, al    (mask the PIT again)
                                     mov eax, 0x1234 ; int 0x80     <- trap gate
                                     cli ; xor edx, edx ; xor ecx, ecx ; mov eax, 5
                                     div ecx  (0x7C69)              <- #DE
                                     mov [0x530], eax
                                     mov ax, 0x23 ; mov ds/es, ax
                                     push 0x23 ; push 0x80000 ; pushfd ; push 0x1B ;
                                     push USER ; iretd              -> ring 3
"""

from __future__ import annotations

import struct

import pytest
from hvsim_fakes import ENTRY
from unicorn import x86_const as x86

from devmodel.hvsim import StopReason
from devmodel.hvsim.cpu import CR0_PE, CR0_PG, CR4_PSE

MAIN = bytes.fromhex(
    "fa31c08ed80f0116006f0f011e086f0f20c00c010f22c0ea1c7c0800"  # real mode, up to the ljmp
    "66b810008ed88ec08ed0bc00000900"  # flat data segments, esp = 0x90000
    "66b828000f00d8"  # ltr 0x28
    "b011e620b020e621b004e621b001e621b0fee621"  # PIC
    "b034e643b09ce640b02ee640"  # PIT
    "fbf4"  # sti ; hlt
    "b0ffe621"  # mask IRQ0
    "b834120000cd80"  # mov eax, 0x1234 ; int 0x80
    "fa31d231c9b805000000f7f1a330050000"  # cli ; div by zero ; mov [0x530], eax
    "66b823008ed88ec0"  # ds = es = 0x23 (ring-3 data, usable from both rings)
    "6a2368000008009c6a1b68407e0000cf"  # iretd to 001B:USER, stack 0023:00080000
)
DIV_AT = 0x7C69
HANDLERS = {
    # inc [0x500] ; pushfd ; pop [0x524] ; push eax ; EOI ; pop eax ; iretd
    0x100: "ff05000500009c8f052405000050b020e62058cf",
    # mov [0x504], eax ; pushfd ; pop [0x528] ; iretd
    0x140: "a3040500009c8f0528050000cf",
    # inc [0x508] ; push eax ; mov eax, [esp+4] ; mov [0x52C], eax ; pop eax ;
    # add dword [esp], 2 (skip the 2-byte div) ; iretd
    0x180: "ff0508050000508b442404a32c0500005883042402cf",
    # mov [0x50C], eax ; frame CS -> [0x510], SS -> [0x514], ESP -> [0x518] ;
    # mov [0x51C], esp ; iretd
    0x1C0: "a30c0500008b442404a3100500008b442410a3140500008b44240ca31805000089251c050000cf",
    # mov dword [0x520], 1 ; cli ; hlt
    0x200: "c7052005000001000000faf4",
    # USER (ring 3): mov eax, 0x5678 ; int 0x81 ; int 0x82 ; jmp USER
    0x240: "b878560000cd81cd82ebf5",
}
IRQ0, INT80, DE, INT81, INT82, USER = (ENTRY + off for off in sorted(HANDLERS))

GDT_AT, GDTR_AT, IDTR_AT, IDT_AT, TSS_AT = 0x7000, 0x6F00, 0x6F08, 0x6000, 0x6800
RING0_STACK, TSS_ESP0, RING3_STACK = 0x90000, 0x8F000, 0x80000
INT_GATE, TRAP_GATE, TASK_GATE = 0xE, 0xF, 0x5
EFLAGS_IF = 1 << 9


def segment(base: int, limit: int, access: int, flags: int = 0xC) -> int:
    return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40 | (limit >> 16 & 0xF) << 48
            | flags << 52 | (base >> 24) << 56)


def gate(offset: int, gtype: int = INT_GATE, dpl: int = 0, present: int = 1,
         selector: int = 0x08) -> int:
    return ((offset & 0xFFFF) | selector << 16 | (gtype | dpl << 5 | present << 7) << 40
            | (offset >> 16) << 48)


GDT = [
    0,
    segment(0, 0xFFFFF, 0x9A),  # 0x08 ring-0 code
    segment(0, 0xFFFFF, 0x92),  # 0x10 ring-0 data
    segment(0, 0xFFFFF, 0xFA),  # 0x18 ring-3 code
    segment(0, 0xFFFFF, 0xF2),  # 0x20 ring-3 data
    segment(TSS_AT, 0x67, 0x89, 0),  # 0x28 32-bit TSS, available
]


def idt(**overrides: int) -> dict[int, int]:
    gates = {
        0x00: gate(DE),
        0x20: gate(IRQ0),
        0x80: gate(INT80, TRAP_GATE),
        0x81: gate(INT81, dpl=3),
        0x82: gate(INT82, TRAP_GATE, dpl=3),
    }
    for name, value in overrides.items():
        gates[int(name[1:], 16)] = value
    return gates


def load(sim, gates: dict[int, int]) -> None:
    code = bytearray(b"\x90" * 0x300)
    code[: len(MAIN)] = MAIN
    for off, text in HANDLERS.items():
        code[off : off + len(text) // 2] = bytes.fromhex(text)
    sim.ram.write(ENTRY, bytes(code))
    sim.ram.write(GDT_AT, b"".join(struct.pack("<Q", d) for d in GDT))
    sim.ram.write(GDTR_AT, struct.pack("<HI", 8 * len(GDT) - 1, GDT_AT))
    sim.ram.write(IDTR_AT, struct.pack("<HI", 256 * 8 - 1, IDT_AT))
    table = bytearray(256 * 8)
    for vector, value in gates.items():
        table[vector * 8 : vector * 8 + 8] = struct.pack("<Q", value)
    sim.ram.write(IDT_AT, bytes(table))
    tss = bytearray(0x68)
    tss[4:12] = struct.pack("<II", TSS_ESP0, 0x10)  # ESP0, SS0
    sim.ram.write(TSS_AT, bytes(tss))


def dword(sim, addr: int) -> int:
    return struct.unpack("<I", sim.ram.read(addr, 4))[0]


def test_irq_int_fault_and_ring3_through_the_idt(tiny_sim) -> None:
    sim, _ = tiny_sim(b"")
    load(sim, idt())
    stop = sim.run(max_insns=1_000_000)
    assert stop.reason is StopReason.HALTED, stop
    assert (stop.cs, stop.eip) == (0x08, INT82 + 12)  # hlt in the ring-0 int 0x82 handler

    # IRQ0 through an interrupt gate: delivered once, IF clear inside the handler.
    assert dword(sim, 0x500) == 1 and sim.stats.irqs == 1
    assert not dword(sim, 0x524) & EFLAGS_IF
    # int 0x80 through a trap gate: IF stays set (it was set by the IRQ handler's iretd).
    assert dword(sim, 0x504) == 0x1234
    assert dword(sim, 0x528) & EFLAGS_IF
    # #DE: the pushed EIP is the faulting div; the handler skipped it and execution went on.
    assert dword(sim, 0x508) == 1
    assert dword(sim, 0x52C) == DIV_AT
    assert dword(sim, 0x530) == 5
    # Ring 3 -> ring 0: the handler ran on the TSS's SS0:ESP0 with the old SS:ESP pushed.
    assert dword(sim, 0x50C) == 0x5678
    assert dword(sim, 0x510) == 0x1B  # CS of the interrupted code (RPL 3)
    assert dword(sim, 0x514) == 0x23 and dword(sim, 0x518) == RING3_STACK
    assert dword(sim, 0x51C) == TSS_ESP0 - 20  # SS, ESP, EFLAGS, CS, EIP
    # ... its iretd went back to ring 3, whose int 0x82 came through ring 0 again.
    assert dword(sim, 0x520) == 1
    assert sim.stats.soft_ints == {0x80: 1, 0x81: 1, 0x82: 1}
    assert sim.stats.exceptions == {0: 1}


@pytest.mark.parametrize(
    ("overrides", "vector", "words"),
    [
        ({"x81": gate(INT81, dpl=0)}, 0x81, ["dpl 0", "cpl 3"]),  # int from ring 3, DPL-0 gate
        ({"x80": gate(INT80, TRAP_GATE, present=0)}, 0x80, ["not present"]),
        ({"x00": gate(0, TASK_GATE, selector=0x28)}, 0x00, ["task gate"]),
        ({"x20": gate(IRQ0, selector=0x10)}, 0x20, ["not a code segment"]),
    ],
)
def test_bad_gates_stop_with_an_error(tiny_sim, overrides, vector, words) -> None:
    sim, _ = tiny_sim(b"")
    load(sim, idt(**overrides))
    stop = sim.run(max_insns=1_000_000)
    assert stop.reason is StopReason.ERROR, stop
    assert stop.code == vector and f"{vector:#x}" in stop.detail
    for word in words:
        assert word in stop.detail.lower(), stop.detail


def test_translate_walks_the_page_tables(tiny_sim) -> None:
    sim, _ = tiny_sim(b"\xfa\xf4")
    cpu = sim.cpu
    pd, pt = 0x10000, 0x11000
    sim.ram.write(pd, struct.pack("<I", pt | 3))  # 0-4 MiB through one page table
    sim.ram.write(pd + 4 * 1, struct.pack("<I", 0x000000 | 0x83))  # 4-8 MiB: a 4 MiB page
    sim.ram.write(pt + 4 * 0x12, struct.pack("<I", 0x345000 | 3))  # 0x12000 -> 0x345000
    cpu.set_reg(x86.UC_X86_REG_CR3, pd)
    cpu.set_reg(x86.UC_X86_REG_CR4, CR4_PSE)
    cpu.set_reg(x86.UC_X86_REG_CR0, cpu.reg(x86.UC_X86_REG_CR0) | CR0_PE | CR0_PG)
    assert cpu.translate(0x12345) == 0x345345
    assert cpu.translate(0x13000) is None  # not present
    assert cpu.translate(0x401234) == 0x1234  # 4 MiB page
    sim.ram.write(0x345FFE, b"ab")
    sim.ram.write(0x1000, b"cd")  # 0x13000 is unmapped: a read across it fails
    assert cpu.read_linear(0x12FFE, 2) == b"ab"
    assert cpu.read_linear(0x12FFE, 4) is None
    cpu.set_reg(x86.UC_X86_REG_CR2, 0x13000)
    assert cpu.page_fault_error_code() == 0  # not present, supervisor
    cpu.set_reg(x86.UC_X86_REG_CR2, 0x12345)
    assert cpu.page_fault_error_code() == 1  # a protection fault on a present page
