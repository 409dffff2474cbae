"""Reproducers: a finding's recorded events as a devmodel trace (`devmodel replay` sends it to a
fresh daemon) and as a qtest script (`devmodel replay` runs it in-process, strict), plus the
raw input for the fuzzer itself."""

from __future__ import annotations

import hashlib
import json
import os

from devmodel.trace import ARGS, FROM_DM, GMEM, MAGIC, RECORD, SIDEBAND, TO_DM
from devmodel.wire import codec
from devmodel.wire.constants import FLAG_HAS_FDS, FLAG_NO_REPLY, MEM_RAM, MsgType

from .engine import COPY, DF, DIR, PIO, PTR, Finding, describe
from .machine import FuzzSetup, ram_regions

TAG_BASE = 0x10000000  # clear of the tags a replaying client allocates for itself


def trace_bytes(events: list, setup: FuzzSetup, note: str = "") -> bytes:
    out = bytearray(MAGIC)
    t = 0

    def rec(direction: int, msg: bytes) -> None:
        out.extend(RECORD.pack(direction, 0, 0, len(msg), t))
        out.extend(msg)

    args = {"daemon_args": setup.daemon_args(), "setup": setup.header(), "disks": setup.disks,
            "note": note}
    rec(SIDEBAND, ARGS + json.dumps(args).encode())
    rec(TO_DM, codec.frame(MsgType.HELLO, codec.HELLO.pack(1, 4096, 1, 7, 1, 0), tag=1))
    for rid, (gpa, size) in enumerate(ram_regions(setup.ram)):
        rec(TO_DM, codec.frame(MsgType.MEM_ADD, codec.MEM_ADD.pack(gpa, size, gpa, MEM_RAM, rid),
                               tag=2 + rid, flags=FLAG_HAS_FDS))
    tag = TAG_BASE
    for ev in events:
        if ev[0] == "mem":
            rec(SIDEBAND, GMEM + ev[1].to_bytes(8, "little") + ev[2])
        elif ev[0] == "clock":
            t = ev[1]
            rec(TO_DM, codec.frame(MsgType.CLOCK, codec.CLOCK.pack(ev[1]), tag=tag,
                                   flags=FLAG_NO_REPLY))
            tag += 1
        else:
            _, typ, addr, data, count, size, bits, res = ev
            payload = codec.IOREQ.pack(addr, data, count, size, 0, 0, bits, typ)
            rec(TO_DM, codec.frame(MsgType.IOREQ, payload, tag=tag))
            if res is not None:
                resp = codec.IOREQ.pack(addr, res, count, size, 0, 0, (bits & 0xF0) | 3, typ)
                rec(FROM_DM, codec.frame(MsgType.IORESP, resp, tag=tag))
            tag += 1
    return bytes(out)


_PIO_OUT = {1: "outb", 2: "outw", 4: "outl"}
_PIO_IN = {1: "inb", 2: "inw", 4: "inl"}
_MEM_W = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}
_MEM_R = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}


def qtest_lines(events: list) -> list[str]:
    """The events in QEMU's qtest syntax; what qtest cannot say (PCI_CONFIG ioreqs,
    data_is_ptr, df, counts) as devmodel's `ioreq TYPE ADDR SIZE COUNT BITS DATA` line."""
    lines = []
    now = 0
    for ev in events:
        if ev[0] == "mem":
            gpa, data = ev[1], ev[2]
            for i in range(0, len(data), 256):
                chunk = data[i : i + 256]
                if any(chunk):
                    lines.append(f"write {gpa + i:#x} {len(chunk):#x} 0x{chunk.hex()}")
        elif ev[0] == "clock":
            lines.append(f"clock_step {ev[1] - now}")
            now = ev[1]
        else:
            _, typ, addr, data, count, size, bits, _res = ev
            plain = count == 1 and not bits & (PTR | DF)
            read = bits & DIR
            if plain and typ == PIO and size in _PIO_OUT and addr <= 0xFFFF:
                lines.append(f"{_PIO_IN[size]} {addr:#x}" if read
                             else f"{_PIO_OUT[size]} {addr:#x} {data:#x}")
            elif plain and typ == COPY and size in _MEM_W:
                lines.append(f"{_MEM_R[size]} {addr:#x}" if read
                             else f"{_MEM_W[size]} {addr:#x} {data:#x}")
            else:
                lines.append(f"ioreq {typ} {addr:#x} {size} {count} {bits:#x} {data:#x}")
    return lines


def write_reproducer(out_dir: str, finding: Finding, events: list, setup: FuzzSetup,
                     data: bytes | None = None, name: str | None = None) -> str:
    """Write NAME.trace, NAME.qtest, NAME.txt (and NAME.input); returns the path stem. NAME
    is KIND-DIGEST of the finding's signature unless given."""
    os.makedirs(out_dir, exist_ok=True)
    end = finding.op_index + 1 if finding.op_index >= 0 else len(events)
    kept = events[:end]
    digest = hashlib.sha1(finding.signature.encode()).hexdigest()[:12]
    stem = os.path.join(out_dir, name or f"{finding.kind}-{digest}")
    with open(stem + ".trace", "wb") as f:
        f.write(trace_bytes(kept, setup, f"{finding.kind}: {finding.message}"))
    with open(stem + ".qtest", "w") as f:
        f.write(f"# devmodel fuzz reproducer: {finding.kind}: {finding.message}\n")
        f.write(f"# devmodel-setup: {setup.header()}\n")
        for line in qtest_lines(kept):
            f.write(line + "\n")
    with open(stem + ".txt", "w") as f:
        f.write(f"{finding.kind}: {finding.message}\n")
        if 0 <= finding.op_index < len(events):
            f.write(f"at: {describe(events[finding.op_index])}\n")
        f.write(f"setup: {setup.header()}\n\n{finding.detail}\n")
    if data is not None:
        with open(stem + ".input", "wb") as f:
            f.write(data)
    return stem
