"""QEMU's qtest reproducer format, run against the in-process sans-IO machine in strict mode.

The commands are those of QEMU's softmmu/qtest.c as bug reports and its fuzzer print them:
`outb/outw/outl ADDR VAL`, `inb/inw/inl ADDR`, `writeb..writeq ADDR VAL`, `readb..readq ADDR`,
`write ADDR SIZE 0xHEX` (short data zero-filled), `read ADDR SIZE`, `b64write`/`b64read`,
`memset ADDR SIZE VAL`, `clock_step [NS]` (no NS: to the next timer deadline), `clock_set NS`.
Numbers are C integers (strtoul base 0). Guest RAM takes `write`/`memset`/`writeX` directly;
anywhere else the bytes become COPY ioreqs of the widest aligned size (<= 8), as QEMU's
address_space_write splits them. IRQ commands are accepted and ignored (IRQ levels here are
dm_ops). `#` and `//` start comments; the shell wrapper of a bug report (`cat << EOF | ...`,
`EOF`) is skipped.

devmodel extensions: `ioreq TYPE ADDR SIZE COUNT BITS DATA` sends one raw ioreq (what qtest
cannot express: PCI_CONFIG, data_is_ptr, df, counts), and a `# devmodel-setup: ...` comment
line chooses the machine (devices, RAM, disks) as a fuzz reproducer records it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from .engine import COPY, DIR, PIO, Finding, Hang, Limits, Session, Watchdog
from .machine import FuzzSetup

MAX_MEMSET = 16 << 20  # bytes a memset/write may move; more is clamped and reported
DEFAULT_SETUP = FuzzSetup(ram=32 << 20)  # as QEMU's reproducers are usually run (-m 32M)


@dataclass
class QtestResult:
    lines: int = 0  # commands executed
    responses: list[tuple[int, str, str]] = field(default_factory=list)  # (line, cmd, reply)
    warnings: list[str] = field(default_factory=list)
    finding: Finding | None = None
    ioreqs: int = 0
    max_ioreq_ns: int = 0

    @property
    def ok(self) -> bool:
        return self.finding is None or self.finding.kind == "slow"


def setup_from_script(text: str, default: FuzzSetup | None = None) -> FuzzSetup:
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# devmodel-setup:"):
            return FuzzSetup.from_header(s.split(":", 1)[1])
    d = default or DEFAULT_SETUP
    return FuzzSetup(d.devices, d.ram, dict(d.disks), d.rtc_base)


def _num(text: str) -> int:
    t = text.strip().lower()
    neg = t.startswith("-")
    t = t.lstrip("+-")
    if t.startswith("0x"):
        v = int(t, 16)
    elif len(t) > 1 and t.startswith("0"):
        v = int(t, 8)
    else:
        v = int(t, 10)
    return (-v) & ((1 << 64) - 1) if neg else v


class QtestRunner:
    def __init__(self, setup: FuzzSetup, limits: Limits | None = None) -> None:
        self.session = Session(setup, limits or Limits())
        self.m = self.session.m

    def close(self) -> None:
        self.session.close()

    # ---- memory access as a CPU sees it -----------------------------------------------------
    def _is_ram(self, gpa: int) -> int:
        """Bytes of RAM from gpa on within one region (0: not RAM)."""
        r = self.m.memory._find(gpa)
        return r.end - gpa if r is not None else 0

    def write(self, gpa: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            a = gpa + pos
            ram = self._is_ram(a)
            if ram:
                n = min(ram, len(data) - pos)
                self.session.mem_write(a, data[pos : pos + n])
                pos += n
                continue
            size = self._chunk(a, len(data) - pos)
            val = int.from_bytes(data[pos : pos + size], "little")
            self.session.io(COPY, a, val, 1, size, 0)
            pos += size

    def read(self, gpa: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            a = gpa + len(out)
            ram = self._is_ram(a)
            if ram:
                n = min(ram, length - len(out))
                out += self.m.memory.read(a, n) or bytes(n)
                continue
            size = self._chunk(a, length - len(out))
            v = self.session.io(COPY, a, 0, 1, size, DIR)
            out += (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return bytes(out)

    def _chunk(self, addr: int, left: int) -> int:
        for size in (8, 4, 2, 1):
            if size <= left and addr % size == 0 and not any(
                    self._is_ram(addr + i) for i in range(1, size)):
                return size
        return 1

    # ---- commands -----------------------------------------------------------------------
    def command(self, words: list[str]) -> str:
        cmd = words[0]
        s = self.session
        if cmd in ("outb", "outw", "outl"):
            size = {"b": 1, "w": 2, "l": 4}[cmd[3]]
            addr, val = _num(words[1]), _num(words[2])
            if addr > 0xFFFF:
                return "FAIL port > 0xffff"
            s.io(PIO, addr, val & ((1 << (8 * size)) - 1), 1, size, 0)
            return "OK"
        if cmd in ("inb", "inw", "inl"):
            size = {"b": 1, "w": 2, "l": 4}[cmd[2]]
            addr = _num(words[1])
            if addr > 0xFFFF:
                return "FAIL port > 0xffff"
            return f"OK {s.io(PIO, addr, 0, 1, size, DIR):#06x}"
        if cmd in ("writeb", "writew", "writel", "writeq"):
            size = {"b": 1, "w": 2, "l": 4, "q": 8}[cmd[5]]
            val = _num(words[2]) & ((1 << (8 * size)) - 1)
            self.write(_num(words[1]), val.to_bytes(size, "little"))
            return "OK"
        if cmd in ("readb", "readw", "readl", "readq"):
            size = {"b": 1, "w": 2, "l": 4, "q": 8}[cmd[4]]
            v = int.from_bytes(self.read(_num(words[1]), size), "little")
            return f"OK {v:#018x}"
        if cmd in ("write", "b64write"):
            addr, length = _num(words[1]), _num(words[2])
            length = self._clamp(length)
            if cmd == "write":
                hexdata = words[3][2:] if words[3][:2].lower() == "0x" else words[3]
                raw = bytes.fromhex(hexdata[: 2 * length] + ("0" if len(hexdata) % 2 else ""))
            else:
                raw = base64.b64decode(words[3])
            self.write(addr, raw[:length] + bytes(max(0, length - len(raw))))
            return "OK"
        if cmd in ("read", "b64read"):
            addr, length = _num(words[1]), self._clamp(_num(words[2]))
            data = self.read(addr, length)
            return f"OK 0x{data.hex()}" if cmd == "read" else f"OK {base64.b64encode(data).decode()}"
        if cmd == "memset":
            addr, length, val = _num(words[1]), self._clamp(_num(words[2])), _num(words[3])
            self.write(addr, bytes([val & 0xFF]) * length)
            return "OK"
        if cmd == "clock_step":
            if len(words) > 1:
                step = _num(words[1])
            else:
                d = self.m.clock.next_deadline()
                step = max(0, d - s.now) if d is not None else 0
            s.clock_step(step)
            return f"OK {s.now}"
        if cmd == "clock_set":
            target = _num(words[1])
            if target > s.now:
                s.clock_step(target - s.now)
            return f"OK {s.now}"
        if cmd == "ioreq":
            typ, addr, size, count, bits, data = (_num(w) for w in words[1:7])
            if size not in (1, 2, 4, 8):
                return "FAIL size"  # the daemon answers such an ioreq with ERROR
            return f"OK {s.io(typ, addr, data, count, size, bits):#x}"
        if cmd in ("irq_intercept_in", "irq_intercept_out", "set_irq_in"):
            return "OK"
        raise KeyError(cmd)

    def _clamp(self, length: int) -> int:
        if length > MAX_MEMSET:
            self.warnings.append(f"length {length:#x} clamped to {MAX_MEMSET:#x}")
            return MAX_MEMSET
        return length

    warnings: list[str]

    def run(self, text: str, hang_s: float | None = None) -> QtestResult:
        res = QtestResult()
        self.warnings = res.warnings
        limits = self.session.limits
        with Watchdog(hang_s if hang_s is not None else limits.hang_s):
            for lineno, raw in enumerate(text.splitlines(), start=1):
                line = raw.split("#", 1)[0].split("//", 1)[0].strip()
                if not line:
                    continue
                words = line.split()
                if words[0] in ("EOF", "cat") or words[0].startswith(("-", "./", "qemu")):
                    continue
                try:
                    reply = self.command(words)
                except (KeyError, IndexError, ValueError) as e:
                    if isinstance(e, KeyError) and e.args and e.args[0] == words[0]:
                        res.warnings.append(f"line {lineno}: unknown command {words[0]!r}")
                    else:
                        res.warnings.append(f"line {lineno}: bad arguments: {line!r}")
                    continue
                except Hang as e:
                    res.finding = Finding("hang", f"line {lineno}: {e}", line)
                    break
                except Exception as e:
                    import traceback

                    res.finding = Finding("escape", f"line {lineno}: {line}: {type(e).__name__}: "
                                          f"{e}", "".join(traceback.format_exception(e)))
                    break
                res.lines += 1
                res.responses.append((lineno, line, reply))
        if res.finding is None and self.session.slow:
            res.finding = self.session.slow[0]
        res.ioreqs = self.session.ioreqs
        res.max_ioreq_ns = self.session.max_ns
        return res


def run_qtest(text: str, setup: FuzzSetup | None = None, limits: Limits | None = None) -> QtestResult:
    """Run a qtest script on a fresh machine (chosen by its `# devmodel-setup:` line, else
    `setup`, else all base devices, 32 MiB of RAM and one 4 MiB disk on hda)."""
    runner = QtestRunner(setup_from_script(text, setup), limits)
    try:
        return runner.run(text)
    finally:
        runner.close()
