"""What the benchmarks against the real daemon share (bench/ide.py, bench/e1000.py, bench/vga.py,
bench/usb.py): the raw-frame vCPU that plays the hypervisor on one channel, the timing loop,
medians and ranges of the round-robin rounds, the page-cached image a disk bench reads and its
os.preadv baseline, and the output (one JSON object on stdout, a table on stderr); also free UDP
ports and QEMU's version line (bench/e1000.py, bench/footprint.py).

A bench imports it as `from common import ...` (its own folder is first on sys.path when it runs
as a script), before anything of devmodel: importing it puts the repository on sys.path. Informative
only: never assert on the timings (machine-limits.md).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from devmodel.client import Hypervisor  # noqa: E402
from devmodel.wire.codec import HEADER as HDR  # noqa: E402
from devmodel.wire.codec import HEADER_IOREQ as MSG  # noqa: E402
from devmodel.wire.codec import ioreq_bits  # noqa: E402
from devmodel.wire.constants import IOREQ_TYPE_PIO, STATE_IOREQ_READY, MsgType  # noqa: E402
from devmodel.wire.framing import Message  # noqa: E402

# plain ints, for the scan loop and frame() (an IntEnum member or a call is slower)
IOREQ, IORESP, DMOP, ERROR = (int(t) for t in (MsgType.IOREQ, MsgType.IORESP, MsgType.DMOP,
                                               MsgType.ERROR))
READY, PTR, DIR_READ = STATE_IOREQ_READY, ioreq_bits(0, data_is_ptr=1), ioreq_bits(0, dir=1)


class Vcpu:
    """Strict ioreq round trips on one channel, with raw frames (the client library's
    per-ioreq object overhead would be measured otherwise). Answers the daemon's dm_ops."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.sock = hv.sock
        self.sock.settimeout(None)
        self.buf = bytearray(1 << 16)
        self.acc = bytearray(hv._deframer._buf)
        self.tag = 1
        self.count = 0
        self.irq_waits = 0
        self.recvs = 0
        self.irq_in_answer = 0  # interrupts that arrived in the same read as an IORESP

    @staticmethod
    def frame(addr: int, size: int, read: bool, data: int = 0, count: int = 1, ptr: bool = False,
              typ: int = IOREQ_TYPE_PIO) -> bytearray:
        """A framed READY ioreq (port I/O unless `typ` says otherwise); io() stamps its tag."""
        bits = READY | (DIR_READ if read else 0) | (PTR if ptr else 0)
        return bytearray(MSG.pack(IOREQ, 0, 32, 0, 0, addr, data, count, size, 0, 0, bits, typ))

    def io(self, frame: bytearray) -> int:
        tag = self.tag = self.tag % 0xFFFFFFFF + 1
        struct.pack_into("<I", frame, 8, tag)
        self.sock.sendall(frame)
        self.count += 1
        data = self._pump(tag)
        assert data is not None
        return data

    def wait_irq(self, irq: int) -> None:
        """Block until the daemon has raised ISA `irq` (its SET_ISA_IRQ_LEVEL dm_op), sending
        nothing meanwhile: a vCPU halted until its interrupt arrives."""
        levels = self.hv.state.isa_irq
        recvs = self.recvs
        while levels.get(irq) != 1:
            self._pump(None, irq)
        self.irq_waits += 1
        if self.recvs == recvs:  # no wake-up of its own: it came with the last answer
            self.irq_in_answer += 1

    def _pump(self, tag: int | None, irq: int | None = None) -> int | None:
        """Serve what arrives until the IORESP of `tag` (returns its data), or until ISA `irq`
        is raised (returns None)."""
        levels = self.hv.state.isa_irq
        while True:
            data = self._scan(tag)
            if data is not None:
                return data
            if irq is not None and levels.get(irq) == 1:
                return None
            self._read_more()

    def _scan(self, tag: int | None) -> int | None:
        """Serve the whole messages received so far (dm_ops are answered) up to the IORESP of
        `tag`, whose data it returns (None: not there yet)."""
        acc = self.acc
        pos, n = 0, len(acc)
        while n - pos >= 16:
            mtype, flags, length, rtag, chan = HDR.unpack_from(acc, pos)
            end = pos + 16 + length
            if end > n:
                break
            if mtype == IORESP and rtag == tag:
                data = struct.unpack_from("<Q", acc, pos + 24)[0]
                del acc[:end]
                return data
            if mtype == DMOP:
                payload = bytes(acc[pos + 16 : end])
                reply = self.hv.state.handle_dmop(Message(mtype, flags, rtag, chan, payload))
                if reply is not None:
                    self.sock.sendall(reply)
            elif mtype == ERROR:
                raise RuntimeError(f"daemon answered ERROR: {bytes(acc[pos + 16:end])!r}")
            pos = end
        del acc[:pos]
        return None

    def _read_more(self, timeout: float | None = None) -> bool:
        """One read from the socket into the buffer (False: nothing came in `timeout` s)."""
        if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
            return False
        return self._took(self.sock.recv_into(self.buf))

    def _took(self, k: int) -> bool:
        """Account one read of `k` bytes into `buf`: they join the buffer (True)."""
        self.recvs += 1
        if k == 0:
            raise ConnectionError("daemon closed the connection")
        self.acc += self.buf[:k]
        return True


def find_pci(hv: Hypervisor, vendor: int, device: int) -> int:
    """The devfn of the daemon's PCI function with these ids (hv.pci_scan)."""
    for devfn, info in hv.pci_scan().items():
        if (info["vendor"], info["device"]) == (vendor, device):
            return devfn
    raise RuntimeError(f"no PCI device {vendor:04x}:{device:04x} on bus 0")


def free_udp_ports(n: int) -> list[int]:
    """`n` distinct UDP ports on 127.0.0.1 that were free a moment ago (bound, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def qemu_version(qemu: str) -> str:
    """The first line of `qemu --version` ("?" if it does not say)."""
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].strip() if out.stdout else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# ---- the command line ---------------------------------------------------------------------------
def arg_parser(doc: str, pin: bool = False) -> argparse.ArgumentParser:
    """--seconds, --rounds and --warmup (and --pin: both processes on CPU 0) for a bench whose
    module docstring is `doc`."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=0.2)
    if pin:
        ap.add_argument("--pin", action="store_true", help="both processes on CPU 0")
    return ap


def pin_both(pid: int) -> None:
    """This process and the daemon's main thread on CPU 0 (--pin)."""
    os.sched_setaffinity(0, {0})
    os.sched_setaffinity(pid, {0})


# ---- timing -------------------------------------------------------------------------------------
def measure(fn: Callable[[int], object], seconds: float, warmup: float) -> tuple[float, int]:
    """Calls fn(i) repeatedly; returns (elapsed, calls) for the measured part."""
    i = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        fn(i)
        i += 1
    n = 0
    t0 = time.perf_counter()
    while True:
        fn(i + n)
        n += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return t, n


def measure_done(fn: Callable[[], int], seconds: float, warmup: float) -> tuple[float, int]:
    """Calls fn() (which returns the units it did, e.g. frames) repeatedly; (elapsed, units) of
    the timed part."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        n += fn()
        t = time.perf_counter() - t0
        if t >= seconds:
            return t, n


def preadv_rate(fd: int, dst: memoryview, nslots: int, seconds: float, warmup: float) -> float:
    """Bytes/s of os.preadv from `fd` into `dst` (call i reads slot i % nslots of len(dst)
    bytes): the kernel-copy baseline a disk bench measures beside its device figure."""
    size = len(dst)
    bufs = [dst]

    def pread(i: int, bufs=bufs, size=size, nslots=nslots) -> None:
        os.preadv(fd, bufs, (i % nslots) * size)

    t, n = measure(pread, seconds, warmup)
    return n * size / t


class Figures(dict):
    """name -> the value of each round (the rounds interleave the figures round-robin)."""

    def add(self, name: str, value: float) -> None:
        self.setdefault(name, []).append(value)


# ---- medians, ranges, ratios --------------------------------------------------------------------
def summarize(runs: list[float], unit: str) -> dict:
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs,
            "unit": unit}


def summarize_all(figures: dict[str, list[float]], unit: Callable[[str], str],
                  extra: dict[str, dict]) -> dict[str, dict]:
    """summarize() of every figure, with unit(name) and the figure's entry of `extra` added."""
    out = {}
    for name, runs in figures.items():
        out[name] = summarize(runs, unit(name))
        out[name].update(extra.get(name, {}))
    return out


def ratio(figures: dict[str, dict], a: str, b: str, target: float | None = None) -> dict:
    """The median of figure a over that of b, against `target` (met: None without one)."""
    value = figures[a]["median"] / figures[b]["median"]
    return {"value": value, "target": target, "met": None if target is None else value >= target}


# ---- a page-cached disk image -------------------------------------------------------------------
def write_image(path: Path, mb: int, rotate: bool = False) -> None:
    """`mb` MiB of one random MiB, shifted by i % 256 bytes in MiB i with `rotate` (so that no
    two MiB are alike)."""
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(mb):
            f.write(block[i % 256 :] + block[: i % 256] if rotate else block)


def open_cached(path: Path) -> int:
    """A read-only fd of `path`, the whole file read into the page cache."""
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    while os.read(fd, 1 << 22):  # into the page cache
        pass
    return fd


def remove_tmp(tmp: str) -> None:
    """Remove the bench's temporary folder and the files in it, as far as possible."""
    for name in os.listdir(tmp):
        try:
            os.unlink(os.path.join(tmp, name))
        except OSError:
            pass
    try:
        os.rmdir(tmp)
    except OSError:
        pass


# ---- output -------------------------------------------------------------------------------------
def print_figures(figures: dict[str, dict], width: int) -> None:
    """The table on stderr: median, unit and range of each figure."""
    for name, f in figures.items():
        print(f"{name:{width}s} {f['median']:12.3f} {f['unit']:10s} ({f['min']:.3f} - {f['max']:.3f})",
              file=sys.stderr)


def print_ratios(ratios: dict[str, dict], width: int, digits: int = 3, target: bool = True) -> None:
    """The table on stderr: each ratio (n/a where it has no value), with its target."""
    for name, r in ratios.items():
        v = "n/a" if r["value"] is None else f"{r['value']:12.{digits}f}"
        line = f"{name:{width}s} {v}"
        if target:
            line += f"  target {r['target']}  met {r['met']}"
        print(line, file=sys.stderr)


def emit(result: dict) -> int:
    """The result as one JSON object on stdout; main()'s exit status."""
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0
