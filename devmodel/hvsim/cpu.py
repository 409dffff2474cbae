"""The vCPU: a Unicorn x86 engine plus what Unicorn leaves to its user.

- Mode: the engine is created in UC_MODE_32 and put into real mode by hand (CR0.PE = 0, then
  segment loads, which take QEMU's real-mode path and clear the 32-bit code/stack flags). In
  UC_MODE_16, ``emu_start`` truncates EIP to 16 bits and cannot resume 32-bit code (study,
  obstacle 1). ``emu_start``'s begin is therefore always the plain EIP.
- Interrupts: Unicorn delivers none (every ``int n`` and exception goes to UC_HOOK_INTR,
  obstacle 2). ``deliver_real`` does the real-mode sequence of the Intel SDM vol. 3, 20.1.4:
  push FLAGS, CS, IP; clear IF, TF and AC; load CS:IP from the IVT at vector*4.
  Protected-mode (IDT) delivery is not implemented.
- Reset (obstacle 14): no API, so the architectural reset state (SDM vol. 3, table 9-1) is
  written register by register. The hidden CS base should be 0xFFFF0000; it cannot be set, so
  CS = F000 with base 0xF0000 is used, where the bytes are the same (the ROM's low alias).
- RDTSC: the Python binding lacks the UC_X86_INS_RDTSC hook type, which has the CPUID hook's
  C signature (return 1 to skip the instruction); ``hook_rdtsc`` registers it.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, Uc, UcError
from unicorn import x86_const as x86
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
from unicorn.unicorn_py3.unicorn import uccallback

CR0_PE = 1 << 0
CR0_PG = 1 << 31
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_DF = 1 << 10
EFLAGS_AC = 1 << 18
EFLAGS_VM = 1 << 17
RESET_CR0 = 0x6000_0010  # CD, NW, ET
RESET_EDX = 0x0000_0663  # family 6 model 6 stepping 3, as QEMU's default 32-bit CPU

SEG_REGS = (x86.UC_X86_REG_ES, x86.UC_X86_REG_CS, x86.UC_X86_REG_SS, x86.UC_X86_REG_DS,
            x86.UC_X86_REG_FS, x86.UC_X86_REG_GS)
_DESC = struct.Struct("<Q")


class Cpu:
    def __init__(self) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)

    # ---- registers -------------------------------------------------------------------------
    def reg(self, reg_id: int) -> int:
        return int(self.uc.reg_read(reg_id))

    def set_reg(self, reg_id: int, value: int) -> None:
        self.uc.reg_write(reg_id, value)

    @property
    def eip(self) -> int:
        return self.reg(x86.UC_X86_REG_EIP)

    @property
    def eflags(self) -> int:
        return self.reg(x86.UC_X86_REG_EFLAGS)

    def protected(self) -> bool:
        return bool(self.reg(x86.UC_X86_REG_CR0) & CR0_PE) and not self.eflags & EFLAGS_VM

    def paging(self) -> bool:
        return bool(self.reg(x86.UC_X86_REG_CR0) & CR0_PG)

    # ---- segments --------------------------------------------------------------------------
    def _descriptor(self, selector: int) -> int | None:
        """The 8-byte GDT descriptor of ``selector``; None for LDT selectors or out of limit."""
        if selector & 4:
            return None
        _sel, base, limit, _flags = self.uc.reg_read(x86.UC_X86_REG_GDTR)
        index = selector & ~7
        if index + 7 > limit:
            return None
        try:
            raw = self.uc.mem_read(base + index, 8)
        except UcError:
            return None
        return int(_DESC.unpack(raw)[0])

    def seg_base(self, seg: int) -> int | None:
        """Linear base of segment register ``seg`` (strings.SEG_* order), None if unknown.

        Unicorn does not expose hidden segment bases. In real and virtual-8086 mode the base is
        selector*16; in protected mode it is re-read from the GDT, which is right unless the
        guest changed the descriptor after loading the register (SeaBIOS does not).
        """
        selector = self.reg(SEG_REGS[seg])
        if not self.protected():
            return selector << 4
        desc = self._descriptor(selector)
        if desc is None:
            return 0 if selector < 4 else None
        return (desc >> 16 & 0xFFFFFF) | (desc >> 56 & 0xFF) << 24

    def code32(self) -> bool:
        """Default operand/address size of the current code segment (the D bit)."""
        if not self.protected():
            return False
        desc = self._descriptor(self.reg(x86.UC_X86_REG_CS))
        return bool(desc is not None and desc >> 54 & 1)

    def linear_pc(self) -> int:
        base = self.seg_base(1)
        return ((base or 0) + self.eip) & 0xFFFFFFFF

    def read_linear(self, addr: int, length: int) -> bytes | None:
        """Bytes at a linear address (paging off), or None if not readable memory."""
        if self.paging():
            return None
        try:
            return bytes(self.uc.mem_read(addr, length))
        except UcError:
            return None

    # ---- interrupts ------------------------------------------------------------------------
    def deliver_real(self, vector: int, return_ip: int | None = None) -> None:
        """Real-mode interrupt through the IVT (SDM vol. 3, 20.1.4)."""
        uc = self.uc
        ip = self.eip if return_ip is None else return_ip
        flags = self.eflags
        cs = self.reg(x86.UC_X86_REG_CS)
        ss_base = self.reg(x86.UC_X86_REG_SS) << 4
        esp = self.reg(x86.UC_X86_REG_ESP)
        sp = esp & 0xFFFF
        frame = struct.pack("<HHH", ip & 0xFFFF, cs, flags & 0xFFFF)  # lowest address first
        for i in range(3):  # each push wraps within the 64 KiB stack segment
            sp = (sp - 2) & 0xFFFF
            uc.mem_write(ss_base + sp, frame[4 - 2 * i : 6 - 2 * i])
        new_ip, new_cs = struct.unpack("<HH", bytes(uc.mem_read(vector * 4, 4)))
        uc.reg_write(x86.UC_X86_REG_ESP, (esp & ~0xFFFF) | sp)
        uc.reg_write(x86.UC_X86_REG_EFLAGS, flags & ~(EFLAGS_IF | EFLAGS_TF | EFLAGS_AC))
        uc.reg_write(x86.UC_X86_REG_CS, new_cs)
        uc.reg_write(x86.UC_X86_REG_EIP, new_ip)

    # ---- reset -----------------------------------------------------------------------------
    def reset(self) -> None:
        uc = self.uc
        uc.reg_write(x86.UC_X86_REG_CR0, RESET_CR0)
        uc.reg_write(x86.UC_X86_REG_CR3, 0)
        uc.reg_write(x86.UC_X86_REG_CR4, 0)
        uc.reg_write(x86.UC_X86_REG_EFLAGS, 0x2)
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, 0, 0xFFFF, 0))
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, 0, 0xFFFF, 0))
        for reg in (x86.UC_X86_REG_EAX, x86.UC_X86_REG_EBX, x86.UC_X86_REG_ECX,
                    x86.UC_X86_REG_ESI, x86.UC_X86_REG_EDI, x86.UC_X86_REG_EBP,
                    x86.UC_X86_REG_ESP):
            uc.reg_write(reg, 0)
        uc.reg_write(x86.UC_X86_REG_EDX, RESET_EDX)
        for reg in SEG_REGS:
            if reg != x86.UC_X86_REG_CS:
                uc.reg_write(reg, 0)
        uc.reg_write(x86.UC_X86_REG_CS, 0xF000)
        uc.reg_write(x86.UC_X86_REG_EIP, 0xFFF0)

    # ---- hooks -----------------------------------------------------------------------------
    def hook_rdtsc(self, callback: Callable[[Uc, object], int]) -> int:
        fptr = uccallback(self.uc, HOOK_INSN_CPUID_CFUNC)(
            lambda uc, _key: callback(uc, None)
        )
        do_hook_add = self.uc._Uc__do_hook_add
        return int(do_hook_add(UC_HOOK_INSN, fptr, 1, 0, ctypes.c_int(x86.UC_X86_INS_RDTSC)))
