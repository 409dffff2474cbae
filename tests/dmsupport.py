"""Test devices and helpers for the foundation tests (imported by tests in every sub-folder).

The devices are small, pure state machines like real ones (design rule 1): they record what
reaches them so a test can check element order, addresses and sizes byte-exact.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time

from devmodel.client import Hypervisor, InProcessDaemon
from devmodel.core.bus import ALL_SIZES, Range
from devmodel.core.device import Device
from devmodel.core.machine import Machine
from devmodel.core.pci import Bar, PciDevice
from devmodel.pc import PcOptions, build_pc
from devmodel.wire import codec
from devmodel.wire.constants import MsgType
from devmodel.wire.framing import Deframer, Message

REC_PORT = 0x6000  # RecorderDevice ports 0x6000-0x6003 (clear of every PC device)
REC_MMIO = 0xC8000000  # RecorderDevice MMIO window, 8 KiB
REC_MMIO_LEN = 0x2000
FAULT_PORT = 0x6010  # FaultyDevice: reads raise, writes are fine
FAULT_MMIO = 0xC8100000
TIMER_PORT = 0x6020  # TimerDevice
TIMER_IRQ = 5
VGA_BASE = 0xD0000  # LowMmioDevice: MMIO below 1 MiB, where Xen can buffer writes
VGA_LEN = 0x10000
BAR_SLOT = 0x1D  # BarDevice at 00:1d.0
BAR_DEVFN = BAR_SLOT << 3


class RecorderDevice(Device):
    """One port range (the PIO side never moves) and one RAM-like MMIO window.

    Port reads return 0x11, 0x22, 0x33... (one per read, cut to the access size), so the order
    in which elements land in guest RAM is visible. Every access is appended to `log` as
    (space, 'r'|'w', offset, size, value)."""

    SNAPSHOT_FIELDS = ("mem", "next_value")

    def __init__(self, name: str = "recorder") -> None:
        super().__init__(name)
        self.log: list[tuple[str, str, int, int, int]] = []
        self.mem = bytearray(REC_MMIO_LEN)
        self.next_value = 0

    def pio_ranges(self) -> list[Range]:
        return [Range(REC_PORT, 4, self._pio_read, self._pio_write, self.name, self)]

    def mmio_ranges(self) -> list[Range]:
        return [Range(REC_MMIO, REC_MMIO_LEN, self._mmio_read, self._mmio_write, self.name, self,
                      ALL_SIZES)]

    def _pio_read(self, off: int, size: int) -> int:
        self.next_value += 1
        v = (0x11 * self.next_value) & ((1 << (8 * size)) - 1)
        self.log.append(("pio", "r", off, size, v))
        return v

    def _pio_write(self, off: int, size: int, value: int) -> None:
        self.log.append(("pio", "w", off, size, value))

    def _mmio_read(self, off: int, size: int) -> int:
        v = int.from_bytes(self.mem[off : off + size], "little")
        self.log.append(("mmio", "r", off, size, v))
        return v

    def _mmio_write(self, off: int, size: int, value: int) -> None:
        self.mem[off : off + size] = value.to_bytes(size, "little")
        self.log.append(("mmio", "w", off, size, value))


class LowMmioDevice(Device):
    """RAM-like MMIO in the legacy VGA window, where Xen buffers writes."""

    SNAPSHOT_FIELDS = ("mem",)

    def __init__(self) -> None:
        super().__init__("lowmmio")
        self.mem = bytearray(VGA_LEN)

    def mmio_ranges(self) -> list[Range]:
        return [Range(VGA_BASE, VGA_LEN, self._read, self._write, self.name, self, ALL_SIZES)]

    def _read(self, off: int, size: int) -> int:
        return int.from_bytes(self.mem[off : off + size], "little")

    def _write(self, off: int, size: int, value: int) -> None:
        self.mem[off : off + size] = value.to_bytes(size, "little")


class DeviceBug(RuntimeError):
    """What FaultyDevice raises: stands for a bug of ours inside a device."""


class FaultyDevice(Device):
    """A device with a bug: every read raises. Writes are counted."""

    SNAPSHOT_FIELDS = ("writes",)

    def __init__(self) -> None:
        super().__init__("faulty")
        self.writes = 0
        self.reads_attempted = 0

    def pio_ranges(self) -> list[Range]:
        return [Range(FAULT_PORT, 4, self._read, self._write, self.name, self)]

    def mmio_ranges(self) -> list[Range]:
        return [Range(FAULT_MMIO, 0x1000, self._read, self._write, self.name, self, ALL_SIZES)]

    def _read(self, off: int, size: int) -> int:
        self.reads_attempted += 1
        raise DeviceBug(f"injected fault at +{off:#x}")

    def _write(self, off: int, size: int, value: int) -> None:
        self.writes += 1


class TimerDevice(Device):
    """Writing N (dword) to TIMER_PORT arms a timer N ns from now; when it fires the device
    raises ISA IRQ 5. Writing 0 cancels and lowers the line. Reading returns the fire count."""

    SNAPSHOT_FIELDS = ("fired",)

    def __init__(self) -> None:
        super().__init__("timerdev")
        self.fired = 0
        self.timer = None
        self.irq = None

    def attach(self, ctx) -> None:
        super().attach(ctx)
        self.timer = ctx.clock.timer(self._on_timer, "timerdev")
        self.irq = ctx.irqs.isa(TIMER_IRQ, self.name)

    def pio_ranges(self) -> list[Range]:
        return [Range(TIMER_PORT, 4, self._read, self._write, self.name, self, frozenset({4}))]

    def _read(self, off: int, size: int) -> int:
        return self.fired

    def _write(self, off: int, size: int, value: int) -> None:
        if value == 0:
            self.timer.cancel()
            self.irq.lower()
        else:
            self.timer.arm_in(value)

    def _on_timer(self, deadline: int) -> None:
        self.fired += 1
        self.irq.raise_()


class BarDevice(PciDevice):
    """A PCI function with a 16-byte I/O BAR0, a 16 KiB 64-bit memory BAR2/3 and a 2 KiB
    expansion ROM. BAR accesses are recorded as (bar, 'r'|'w', offset, size, value)."""

    IO_SIZE = 16
    MEM_SIZE = 0x4000
    ROM = bytes(range(256)) * 8  # 2 KiB

    def __init__(self) -> None:
        super().__init__("bardev", vendor_id=0x1234, device_id=0x5678, class_code=0xFF0000,
                         revision=0x01, irq_pin=1)
        self.log: list[tuple[int, str, int, int, int]] = []
        self.add_bar(Bar(0, self.IO_SIZE, True, self._rd(0), self._wr(0), "io"))
        self.add_bar(Bar(2, self.MEM_SIZE, False, self._rd(2), self._wr(2), "mem", is64=True,
                         sizes=ALL_SIZES))
        self.set_rom(self.ROM)

    def _rd(self, bar: int):
        def read(off: int, size: int) -> int:
            v = (0xA0 + bar) << 8 | off
            v &= (1 << (8 * size)) - 1
            self.log.append((bar, "r", off, size, v))
            return v
        return read

    def _wr(self, bar: int):
        def write(off: int, size: int, value: int) -> None:
            self.log.append((bar, "w", off, size, value))
        return write


def make_machine(*, virtual_clock: bool = False, strict: bool = False,
                 extras: tuple[str, ...] = ("recorder", "lowmmio", "faulty", "timer", "bar"),
                 ) -> Machine:
    """build_pc() plus the test devices."""
    m = build_pc(PcOptions(virtual_clock=virtual_clock, strict=strict))
    if "recorder" in extras:
        m.add(RecorderDevice())
    if "lowmmio" in extras:
        m.add(LowMmioDevice())
    if "faulty" in extras:
        m.add(FaultyDevice())
    if "timer" in extras:
        m.add(TimerDevice())
    if "bar" in extras:
        m.add(BarDevice(), slot=BAR_SLOT)
    return m


@contextlib.contextmanager
def inprocess(factory=make_machine, *, ram: int | None = 16 << 20, **hv_kw):
    """A real daemon (in a thread) on a real socket, serving `factory()`, and a connected
    Hypervisor with `ram` bytes of shared guest RAM. Yields (daemon, hv)."""
    d = InProcessDaemon(factory)
    hv = None
    try:
        hv = Hypervisor.connect(d.socket_path, **hv_kw)
        if ram:
            hv.add_ram(ram)
        yield d, hv
    finally:
        if hv is not None:
            hv.close()
        d.stop()


@contextlib.contextmanager
def simulated(factory, ram: int, **sim_kw):
    """A real daemon (in a thread, on a real socket) serving `factory()` on the virtual clock,
    and the simulated CPU (devmodel.hvsim.Simulator, with `ram` bytes and `sim_kw`) as its
    hypervisor: HELLO, the guest RAM added, the daemon enabled. Yields (daemon, hv, sim)."""
    from devmodel.daemon import DaemonConfig
    from devmodel.hvsim import Simulator

    daemon = InProcessDaemon(factory, DaemonConfig(domid=1, virtual_clock=True))
    hv = Hypervisor.connect(daemon.socket_path, handshake=False)
    sim = Simulator(hv, ram, **sim_kw)
    try:
        hv.hello()
        for rid, region in enumerate(sim.ram.regions()):
            hv.mem_add(rid, region.gpa, region.size, sim.ram.fd, region.offset, region.flags)
        hv.wait_enabled()
        yield daemon, hv, sim
    finally:
        sim.close()
        hv.close()
        daemon.stop()


def run_until(sim, done, rounds: int = 200, max_insns: int = 2_000_000):
    """Run the simulated guest in slices of `max_insns` until done(sim), a stop other than
    the budget or a request, or `rounds` slices; the last stop."""
    stop = None
    for _ in range(rounds):
        stop = sim.run(max_insns=max_insns, until=done)
        if done(sim) or stop.reason.value not in ("budget", "requested"):
            break
    return stop


def slow_down_writes(m: Machine, seconds: float, started: list[float] | None = None) -> None:
    """Each write to `m`'s IDE primary master takes `seconds` longer, on the disk's worker
    thread; its start time is appended to `started` if given."""
    disk = m.device("piix3-ide").drive(0, 0).backend
    inner = disk._do_write

    def slow_write(*a, **kw):
        if started is not None:
            started.append(time.monotonic())
        time.sleep(seconds)
        inner(*a, **kw)

    disk._do_write = slow_write


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited after `timeout` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- raw-socket helpers ------------------------------------------------------------------

class RawPeer:
    """A hypervisor that frames its own bytes and sees every message the daemon sends, in
    order, including dm_ops (which it answers like Xen, via a HypervisorState)."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        from devmodel.client.state import HypervisorState

        self.sock = sock
        self.sock.settimeout(timeout)
        self.deframer = Deframer()
        self.state = HypervisorState()
        self.seen: list[Message] = []

    @classmethod
    def connect(cls, path: str) -> RawPeer:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return cls(s)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_msg(self) -> Message | None:
        """The next message (dm_ops answered on the way, but also returned); None on EOF."""
        while True:
            for msg in self.deframer.messages():
                if msg.type == MsgType.DMOP:
                    reply = self.state.handle_dmop(msg)
                    if reply is not None:
                        self.sock.sendall(reply)
                self.seen.append(msg)
                return msg
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.deframer.feed(data)

    def until(self, pred) -> list[Message]:
        """Messages up to and including the first that satisfies pred."""
        out = []
        while True:
            msg = self.recv_msg()
            if msg is None:
                raise ConnectionError(f"EOF before the expected message; got {out}")
            out.append(msg)
            if pred(msg):
                return out

    def reply_to(self, tag: int) -> Message:
        return self.until(lambda m: m.tag == tag and m.type != MsgType.DMOP)[-1]

    def io(self, tag: int, typ: int, addr: int, size: int, *, read: bool, data: int = 0,
           chan: int = 0) -> list[Message]:
        """One IOREQ; every message up to and including its answer, in arrival order."""
        from devmodel.wire.codec import Ioreq

        req = Ioreq(addr=addr, data=data, size=size, dir=int(read), type=typ)
        self.send(codec.frame(MsgType.IOREQ, req.pack(), tag=tag, chan=chan))
        return self.until(lambda m: m.tag == tag and m.type != MsgType.DMOP)

    def hello(self, nr_vcpus: int = 1, features: int = 7) -> None:
        self.send(codec.frame(MsgType.HELLO, codec.HELLO.pack(1, 4096, nr_vcpus, features, 1, 0),
                              tag=1))
        assert self.reply_to(1).type == MsgType.HELLO
        deadline = time.monotonic() + 10
        while not self.state.server_enabled:
            assert time.monotonic() < deadline, "server never enabled"
            self.sock.settimeout(0.2)
            try:
                self.recv_msg()
            except TimeoutError:
                pass
            finally:
                self.sock.settimeout(10.0)
        # the dm_ops that follow the enable (link routes) are drained by one synchronous ioreq
        self.io(0xFFFF0000, 2, 0, 4, read=True)

    def close(self) -> None:
        self.sock.close()


def error_of(msg: Message) -> tuple[int, str]:
    assert msg.type == MsgType.ERROR, f"expected ERROR, got type {msg.type}"
    return codec.decode_error(msg.payload)


def raw_ioreq(hv: Hypervisor, payload: bytes, *, tag: int, chan: int = 0, flags: int = 0,
              mtype: int = MsgType.IOREQ) -> Message:
    """Send one hand-made frame through a Hypervisor and return the daemon's answer (IORESP or
    ERROR; dm_ops in between are applied to hv.state)."""
    hv.send(mtype, payload, tag=tag, chan=chan, flags=flags)
    while True:
        msg = hv.recv()
        if msg.tag == tag:
            return msg
        hv.unmatched.append(msg)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)

