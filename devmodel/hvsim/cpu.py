"""The vCPU: a Unicorn x86 engine plus what Unicorn leaves to its user.

- Mode: the engine is created in UC_MODE_32 and put into real mode by hand (CR0.PE = 0, then
  segment loads, which take QEMU's real-mode path and clear the 32-bit code/stack flags). In
  UC_MODE_16, ``emu_start`` truncates EIP to 16 bits and cannot resume 32-bit code (study,
  obstacle 1). ``emu_start``'s begin is therefore always the plain EIP.
- Interrupts: Unicorn delivers none (every ``int n`` and exception goes to UC_HOOK_INTR,
  obstacle 2). ``deliver_real`` does the real-mode sequence of the Intel SDM vol. 3, 20.1.4:
  push FLAGS, CS, IP; clear IF, TF and AC; load CS:IP from the IVT at vector*4.
  ``deliver_protected`` does the protected-mode sequence of SDM vol. 3, 6.12 through the IDT:
  interrupt and trap gates (32- and 16-bit), the stack switch to the TSS's SS0:ESP0 when the
  handler is more privileged, and the error code of the exceptions that have one. What it
  cannot do (task gates, a missing or bad gate, a fault while delivering, ring 1/2 stacks,
  virtual-8086 mode) raises DeliveryError; on hardware most of these would be a #GP, #NP, #TS
  or #DF, and the simulator stops instead. Unicorn does not report the error code of the
  exceptions it raises (#GP's selector, #PF's bits): 0 is pushed, except that #PF gets the
  P and U/S bits rebuilt (``page_fault_error_code``). #UD never reaches the hook: Unicorn
  ends emu_start with UC_ERR_INSN_INVALID instead.
- Paging: Unicorn's mem_read/mem_write take physical addresses; ``translate`` walks the
  guest's page tables (32-bit and PAE) so that linear accesses work with CR0.PG set.
- Reset (obstacle 14): no API, so the architectural reset state (SDM vol. 3, table 9-1) is
  written register by register. The hidden CS base should be 0xFFFF0000; it cannot be set, so
  CS = F000 with base 0xF0000 is used, where the bytes are the same (the ROM's low alias).
- RDTSC: the Python binding lacks the UC_X86_INS_RDTSC hook type, which has the CPUID hook's
  C signature (return 1 to skip the instruction); ``hook_rdtsc`` registers it.
- How far a counted run got: Unicorn counts the instructions of ``emu_start(count=n)`` in its
  engine struct (``emu_counter``, one more than n when the count ran out) but has no API for
  it. ``insns_run`` reads it at an offset found once per process by ``counter_offset``: two
  counted runs of a loop on a scratch engine, and the one 8-byte field (followed by the saved
  count) that matches both. If that fails (another Unicorn build), it returns None and the
  caller falls back to guessing. The simulator needs it to tell a HLT from a slice that ran
  out right after an instruction whose last byte is 0xF4 (SeaBIOS: ``mov esp, [0xf4d0]``).
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, Uc, UcError
from unicorn import x86_const as x86
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
from unicorn.unicorn_py3.unicorn import uccallback

CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_DF = 1 << 10
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
EFLAGS_VM = 1 << 17
EFLAGS_AC = 1 << 18
PAGE = 0x1000

# Exceptions that push an error code (SDM vol. 3, table 6-1): #DF, #TS, #NP, #SS, #GP, #PF, #AC.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})
# IDT gate types (SDM vol. 3, 6.11, table 3-2).
GATE_TASK = 0x5
GATE_INT16, GATE_TRAP16 = 0x6, 0x7
GATE_INT32, GATE_TRAP32 = 0xE, 0xF
TSS16_TYPES = frozenset({0x1, 0x3})
TSS32_TYPES = frozenset({0x9, 0xB})
RESET_CR0 = 0x6000_0010  # CD, NW, ET
RESET_EDX = 0x0000_0663  # family 6 model 6 stepping 3, as QEMU's default 32-bit CPU

SEG_REGS = (x86.UC_X86_REG_ES, x86.UC_X86_REG_CS, x86.UC_X86_REG_SS, x86.UC_X86_REG_DS,
            x86.UC_X86_REG_FS, x86.UC_X86_REG_GS)
_DESC = struct.Struct("<Q")


class DeliveryError(Exception):
    """An interrupt or exception the simulator cannot deliver (a bad or unsupported gate)."""


def _desc_base(desc: int) -> int:
    return (desc >> 16 & 0xFFFFFF) | (desc >> 56 & 0xFF) << 24


def _desc_limit(desc: int) -> int:
    limit = (desc & 0xFFFF) | (desc >> 48 & 0xF) << 16
    return limit << 12 | 0xFFF if desc >> 55 & 1 else limit


def _desc_dpl(desc: int) -> int:
    return desc >> 45 & 3


def _desc_present(desc: int) -> bool:
    return bool(desc >> 47 & 1)


class RegReader:
    """Reads a fixed list of integer registers in one ``uc_reg_read_batch`` call.

    The binding's ``reg_read`` costs about 2 us a register (it picks the register's ctypes
    class and builds a buffer on every call) and its ``reg_read_batch`` more; calling the C
    function with arrays built once costs about 1 us for the whole list. Falls back to
    ``reg_read`` per register if the binding's internals are not there."""

    def __init__(self, uc: Uc, reg_ids: tuple[int, ...]) -> None:
        self.uc = uc
        self.reg_ids = reg_ids
        n = len(reg_ids)
        self._n = n
        self._vals = (ctypes.c_uint64 * n)()
        self._ids = (ctypes.c_int32 * n)(*reg_ids)
        self._ptrs = (ctypes.c_void_p * n)(
            *[ctypes.addressof(self._vals) + 8 * i for i in range(n)])
        try:
            from unicorn.unicorn_py3.unicorn import uclib

            self._call = uclib.uc_reg_read_batch
            self._handle = uc._uch
        except (ImportError, AttributeError):  # another binding layout: the slow way
            self._call = None

    def read(self) -> tuple[int, ...]:
        if self._call is None or self._call(self._handle, self._ids, self._ptrs, self._n):
            return tuple(int(self.uc.reg_read(r)) for r in self.reg_ids)
        return tuple(self._vals)


_COUNTER_UNKNOWN = -1
_counter_offset: int | None = _COUNTER_UNKNOWN  # type: ignore[assignment]
COUNTER_SCAN = 1 << 16  # bytes of the engine struct searched for emu_counter


def _engine_address(uc: Uc) -> int | None:
    handle = getattr(uc, "_uch", None)
    value = getattr(handle, "value", None)
    return value if isinstance(value, int) and value else None


def counter_offset() -> int | None:
    """Offset of Unicorn's emu_counter in its engine struct, or None (see the module doc).
    Read through /proc/self/mem, so a search past the struct's mapping fails quietly."""
    global _counter_offset
    if _counter_offset != _COUNTER_UNKNOWN:
        return _counter_offset
    _counter_offset = None
    try:
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map(0x1000, 0x1000)
        uc.mem_write(0x1000, b"\x40\xeb\xfd")  # 1: inc eax; jmp 1b
        base = _engine_address(uc)
        if base is None:
            return None
        runs = (1_234_567, 76_543)
        snaps = []
        fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for n in runs:
                uc.emu_start(0x1000, 0xFFFFFFFF, count=n)
                snaps.append(os.pread(fd, COUNTER_SCAN, base))
        finally:
            os.close(fd)
        size = min(len(x) for x in snaps) - 16
        for off in range(0, max(size, 0), 8):
            if all(struct.unpack_from("<QQ", snap, off) == (n + 1, n)
                   for snap, n in zip(snaps, runs, strict=True)):
                _counter_offset = off
                break
    except (OSError, UcError):
        _counter_offset = None
    return _counter_offset


class Cpu:
    def __init__(self) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        # Unicorn's instruction counter, found at the first insns_run (counter_offset runs a
        # scratch engine, ~14 ms, which slices counted per block never need).
        self._counter: ctypes.c_uint64 | None = None
        self._counter_found = False
        # EIP, CS selector, CR0, EFLAGS: what the cheap REP INS/OUTS check needs.
        self.pc_state = RegReader(self.uc, (x86.UC_X86_REG_EIP, x86.UC_X86_REG_CS,
                                            x86.UC_X86_REG_CR0, x86.UC_X86_REG_EFLAGS)).read

    def insns_run(self) -> int | None:
        """Unicorn's instruction counter of the last counted emu_start: count + 1 if the count
        ran out, else the instructions begun (a HLT included); None if unknown."""
        if not self._counter_found:
            self._counter_found = True
            offset = counter_offset()
            base = _engine_address(self.uc)
            self._counter = (ctypes.c_uint64.from_address(base + offset)
                             if offset is not None and base is not None else None)
        return None if self._counter is None else int(self._counter.value)

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
        raw = self.read_linear(base + index, 8)
        if raw is None:
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

    def _phys(self, addr: int, length: int) -> int | None:
        try:
            return int.from_bytes(self.uc.mem_read(addr, length), "little")
        except UcError:
            return None

    def translate(self, linear: int) -> int | None:
        """The physical address of ``linear`` through the guest's page tables (32-bit paging
        with 4 MiB pages under CR4.PSE, or PAE; SDM vol. 3, 4.3 and 4.4), None if not mapped.
        Accessed/dirty bits are not set."""
        linear &= 0xFFFFFFFF
        if not self.paging():
            return linear
        cr3 = self.reg(x86.UC_X86_REG_CR3)
        cr4 = self.reg(x86.UC_X86_REG_CR4)
        if cr4 & CR4_PAE:
            addr_mask = 0x000F_FFFF_FFFF_F000
            pdpte = self._phys((cr3 & 0xFFFFFFE0) + (linear >> 30) * 8, 8)
            if pdpte is None or not pdpte & 1:
                return None
            pde = self._phys((pdpte & addr_mask) + (linear >> 21 & 0x1FF) * 8, 8)
            if pde is None or not pde & 1:
                return None
            if pde & 0x80:
                return (pde & 0x000F_FFFF_FFE0_0000) | (linear & 0x1FFFFF)
            pte = self._phys((pde & addr_mask) + (linear >> 12 & 0x1FF) * 8, 8)
            if pte is None or not pte & 1:
                return None
            return (pte & addr_mask) | (linear & 0xFFF)
        pde = self._phys((cr3 & 0xFFFFF000) + (linear >> 22) * 4, 4)
        if pde is None or not pde & 1:
            return None
        if pde & 0x80 and cr4 & CR4_PSE:
            return (pde & 0xFFC00000) | (linear & 0x3FFFFF)
        pte = self._phys((pde & 0xFFFFF000) + (linear >> 12 & 0x3FF) * 4, 4)
        if pte is None or not pte & 1:
            return None
        return (pte & 0xFFFFF000) | (linear & 0xFFF)

    def _pieces(self, addr: int, length: int) -> list[tuple[int, int]] | None:
        """(physical address, length) runs covering a linear range, split at pages."""
        if not self.paging():
            return [(addr & 0xFFFFFFFF, length)]
        out = []
        while length > 0:
            n = min(length, PAGE - (addr & (PAGE - 1)))
            phys = self.translate(addr)
            if phys is None:
                return None
            out.append((phys, n))
            addr, length = (addr + n) & 0xFFFFFFFF, length - n
        return out

    def read_linear(self, addr: int, length: int) -> bytes | None:
        """Bytes at a linear address, or None if not readable memory."""
        pieces = self._pieces(addr, length)
        if pieces is None:
            return None
        try:
            return b"".join(bytes(self.uc.mem_read(p, n)) for p, n in pieces)
        except UcError:
            return None

    def write_linear(self, addr: int, data: bytes) -> bool:
        pieces = self._pieces(addr, len(data))
        if pieces is None:
            return False
        try:
            pos = 0
            for p, n in pieces:
                self.uc.mem_write(p, data[pos : pos + n])
                pos += n
        except UcError:
            return False
        return True

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

    def page_fault_error_code(self) -> int:
        """#PF's error code as far as it can be rebuilt (Unicorn keeps the real one to itself):
        P from a walk of CR2, U/S from the CPL; W/R and I/D are not known and read as 0."""
        present = self.translate(self.reg(x86.UC_X86_REG_CR2)) is not None
        return int(present) | (4 if self.reg(x86.UC_X86_REG_CS) & 3 == 3 else 0)

    def deliver_protected(self, vector: int, *, software: bool = False,
                          error_code: int | None = None) -> None:
        """Protected-mode interrupt or exception through the IDT (SDM vol. 3, 6.12.1).

        ``software``: INT n / INT3 / INTO, for which the gate's DPL must be >= CPL (6.12.1.1)
        and EIP is already past the instruction; for an exception EIP is the faulting
        instruction (a fault's return address) and for an external interrupt the next one.
        ``error_code`` is pushed last when given (exceptions in ERROR_CODE_VECTORS).
        Raises DeliveryError when the delivery would fault; the registers are then untouched
        (the frame may already be on the stack) unless loading SS or CS itself failed.
        """
        uc = self.uc
        where = f"vector {vector:#x}"
        if self.eflags & EFLAGS_VM:
            raise DeliveryError(f"{where}: virtual-8086 mode delivery is not implemented")
        _sel, idt_base, idt_limit, _flags = uc.reg_read(x86.UC_X86_REG_IDTR)
        if vector * 8 + 7 > idt_limit:  # 6.10: beyond the limit is a #GP
            raise DeliveryError(f"{where}: beyond the IDT limit {idt_limit:#x}")
        raw = self.read_linear(idt_base + vector * 8, 8)
        if raw is None:
            raise DeliveryError(f"{where}: IDT entry at {idt_base + vector * 8:#x} not in memory")
        lo, hi = struct.unpack("<II", raw)
        gate_type = hi >> 8 & 0x1F  # with the S bit: system descriptors only
        gate_dpl = hi >> 13 & 3
        if gate_type == GATE_TASK:
            raise DeliveryError(f"{where}: task gates are not implemented")
        if gate_type not in (GATE_INT16, GATE_TRAP16, GATE_INT32, GATE_TRAP32):
            raise DeliveryError(f"{where}: IDT entry {hi:08x}{lo:08x} is not an interrupt or "
                                f"trap gate (#GP)")
        if not hi >> 15 & 1:
            raise DeliveryError(f"{where}: gate not present (#NP)")
        cs = self.reg(x86.UC_X86_REG_CS)
        cpl = cs & 3
        if software and gate_dpl < cpl:  # 6.12.1.1: only INT n, INT3, INTO are checked
            raise DeliveryError(f"{where}: software interrupt through a gate of DPL {gate_dpl} "
                                f"from CPL {cpl} (#GP)")
        wide = bool(gate_type & 0x8)  # 32-bit gate: 32-bit pushes and offset
        selector = lo >> 16
        offset = (lo & 0xFFFF) | ((hi & 0xFFFF0000) if wide else 0)
        if selector & 0xFFFC == 0:
            raise DeliveryError(f"{where}: gate selector is null (#GP)")
        code = self._descriptor(selector)
        if code is None:
            raise DeliveryError(f"{where}: gate selector {selector:#x} outside the GDT (#GP)")
        if code >> 43 & 3 != 3:  # S = 1 and type bit 3: a code segment
            raise DeliveryError(f"{where}: gate selector {selector:#x} is not a code segment")
        if not _desc_present(code):
            raise DeliveryError(f"{where}: code segment {selector:#x} not present (#NP)")
        dpl = _desc_dpl(code)
        if dpl > cpl:
            raise DeliveryError(f"{where}: handler segment DPL {dpl} > CPL {cpl} (#GP)")
        if offset > _desc_limit(code):
            raise DeliveryError(f"{where}: handler offset {offset:#x} beyond its segment (#GP)")
        conforming = bool(code >> 42 & 1)
        inner = not conforming and dpl < cpl

        eflags = self.eflags
        eip = self.eip
        ss = self.reg(x86.UC_X86_REG_SS)
        esp = self.reg(x86.UC_X86_REG_ESP)
        frame = [eflags, cs, eip]
        if inner:
            # 6.12.1 (stack switch): SS:ESP for the new CPL from the current TSS; the old
            # SS:ESP is pushed on the new stack first.
            new_ss, new_esp = self._tss_stack(dpl, where)
            stack_desc = self._stack_descriptor(new_ss, dpl, where)
            frame = [ss, esp, *frame]
            sp = new_esp
        else:
            new_ss = ss
            stack_desc = self._descriptor(ss)
            if stack_desc is None:
                raise DeliveryError(f"{where}: stack segment {ss:#x} unreadable")
            sp = esp
        if error_code is not None:
            frame.append(error_code)
        width = 4 if wide else 2
        big = bool(stack_desc >> 54 & 1)  # the B flag: ESP, else SP
        sp_mask = 0xFFFFFFFF if big else 0xFFFF
        stack_base = _desc_base(stack_desc)
        for value in frame:  # each push wraps within the stack pointer's width
            sp = (sp & ~sp_mask) | ((sp - width) & sp_mask)
            data = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
            if not self.write_linear((stack_base + (sp & sp_mask)) & 0xFFFFFFFF, data):
                raise DeliveryError(f"{where}: stack at {new_ss:#x}:{sp:#x} not writable (#SS)")

        try:
            if inner:
                self._enter_ring(dpl, new_ss)
            uc.reg_write(x86.UC_X86_REG_ESP, sp)
            # Unicorn loads the hidden part of CS from the GDT (a protected-mode load).
            uc.reg_write(x86.UC_X86_REG_CS, (selector & ~3) | (cpl if conforming else dpl))
        except UcError as exc:
            raise DeliveryError(f"{where}: loading {selector:#x} failed: {exc}") from None
        # 6.12.1.3: TF, VM, RF and NT are cleared; IF too for an interrupt gate (not a trap
        # gate).
        cleared = EFLAGS_TF | EFLAGS_VM | EFLAGS_RF | EFLAGS_NT
        if not gate_type & 1:
            cleared |= EFLAGS_IF
        uc.reg_write(x86.UC_X86_REG_EFLAGS, eflags & ~cleared)
        uc.reg_write(x86.UC_X86_REG_EIP, offset)

    def _tss_stack(self, dpl: int, where: str) -> tuple[int, int]:
        """(SS, ESP) for privilege level ``dpl`` from the task register's TSS (SDM vol. 3,
        7.2.1 for the 32-bit layout, 7.6 for the 16-bit one)."""
        tr, base, limit, flags = self.uc.reg_read(x86.UC_X86_REG_TR)
        tss_type = flags >> 8 & 0xF
        if tr & 0xFFFC == 0:
            raise DeliveryError(f"{where}: a stack switch needs a TSS, and none is loaded (ltr)")
        if tss_type in TSS32_TYPES:
            off, size = 4 + 8 * dpl, 4
        elif tss_type in TSS16_TYPES:
            off, size = 2 + 4 * dpl, 2
        else:
            raise DeliveryError(f"{where}: task register {tr:#x} is not a TSS (type {tss_type})")
        if off + 2 * size - 1 > limit:
            raise DeliveryError(f"{where}: TSS limit {limit:#x} too small for ring {dpl} (#TS)")
        raw = self.read_linear(base + off, 2 * size)
        if raw is None:
            raise DeliveryError(f"{where}: TSS at {base:#x} not in memory")
        esp = int.from_bytes(raw[:size], "little")
        ss = int.from_bytes(raw[size : size + 2], "little")
        return ss, esp

    def _stack_descriptor(self, ss: int, dpl: int, where: str) -> int:
        """The new stack segment's descriptor, checked as SDM vol. 3, 6.12.1 says (#TS)."""
        desc = self._descriptor(ss) if ss & 0xFFFC else None
        if desc is None or ss & 3 != dpl:
            raise DeliveryError(f"{where}: TSS stack selector {ss:#x} unusable for ring {dpl} "
                                f"(#TS)")
        writable_data = desc >> 44 & 1 and not desc >> 43 & 1 and desc >> 41 & 1
        if not writable_data or _desc_dpl(desc) != dpl or not _desc_present(desc):
            raise DeliveryError(f"{where}: TSS stack segment {ss:#x} is not a present, "
                                f"writable ring-{dpl} data segment (#TS)")
        return desc

    def _enter_ring(self, dpl: int, new_ss: int) -> None:
        """Load SS for a more privileged ring. Unicorn's register writes check privileges as
        MOV to a segment register would (new SS: RPL = DPL = CPL; CS: DPL >= CPL), and its
        CPL follows SS's DPL. So CPL is brought to 0 first by a real-mode load of SS (CR0.PE
        cleared for that one write), after which the protected-mode load of the ring-0 SS
        passes its check and sets CPL = 0 (and the hidden base, limit and B flag)."""
        if dpl != 0:
            raise DeliveryError(f"a stack switch to ring {dpl} is not implemented (only ring 0)")
        uc = self.uc
        cr0 = self.reg(x86.UC_X86_REG_CR0)
        uc.reg_write(x86.UC_X86_REG_CR0, cr0 & ~CR0_PE)
        try:
            uc.reg_write(x86.UC_X86_REG_SS, 0)
        finally:
            uc.reg_write(x86.UC_X86_REG_CR0, cr0)
        uc.reg_write(x86.UC_X86_REG_SS, new_ss)

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
