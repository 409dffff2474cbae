"""Posted writes: single writes to the VGA window 0xA0000-0xBFFFF that the device model claims
reach it as BUFIOREQ batches (xen-protocol.md 2.2), in order, flushed before a synchronous
access, when 511 slots are full, and at HLT. The device model is the real daemon (in a thread,
on a real socket) with a RAM-like test device on the VGA window, since the VGA device itself
is a later issue. What the client sends is recorded at its socket: CLOCK and IOREQ go out in
one sendall.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hvsim_fakes import ENTRY, make_rom

from devmodel.client import Hypervisor, InProcessDaemon
from devmodel.core.bus import ALL_SIZES, Range
from devmodel.core.device import Device
from devmodel.daemon import DaemonConfig
from devmodel.hvsim import Simulator, StopReason, budget
from devmodel.hvsim.posted import BUFFER_SLOTS
from devmodel.pc import PcOptions, build_pc
from devmodel.wire import codec
from devmodel.wire.constants import MsgType
from devmodel.wire.framing import Deframer

VGA_WINDOW, VGA_SIZE = 0xA0000, 0x20000

# real mode at 0000:7C00 (GNU as, .code16):
#   xor ax, ax ; mov ds, ax ; mov ax, 0xB800 ; mov es, ax ; xor di, di ; mov cx, 600 ; xor al, al
#   L: stosb ; inc al ; loop L                      -> 600 byte writes, values 0, 1, 2, ...
#   mov word [es:0x300], 0x4241 ; mov dword [es:0x304], 0x48474645
#   mov ax, [es:0x300] ; mov [0x600], ax            -> a read: flushes, must see 0x4241
#   mov byte [es:0x310], 'X' ; ... 'Y' ; ... 'Z'    -> flushed at the HLT
#   cli ; hlt
PROGRAM = bytes.fromhex(
    "31c08ed8b800b88ec031ffb9580230c0aafec0e2fb26c706000341422666c70604034546474826a10003"
    "a3000626c60610035826c60611035926c60612035afaf4")


class VgaWindowDevice(Device):
    """RAM-like MMIO over the whole legacy VGA window, recording every access."""

    SNAPSHOT_FIELDS = ("mem",)

    def __init__(self) -> None:
        super().__init__("vgawindow")
        self.mem = bytearray(VGA_SIZE)
        self.log: list[tuple[str, int, int, int]] = []

    def mmio_ranges(self) -> list[Range]:
        return [Range(VGA_WINDOW, VGA_SIZE, self._read, self._write, self.name, self, ALL_SIZES)]

    def _read(self, off: int, size: int) -> int:
        value = int.from_bytes(self.mem[off : off + size], "little")
        self.log.append(("r", off, size, value))
        return value

    def _write(self, off: int, size: int, value: int) -> None:
        self.mem[off : off + size] = value.to_bytes(size, "little")
        self.log.append(("w", off, size, value))


class CountingSocket:
    """Wraps the client's socket to count its sendall calls and keep what they sent."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.sendalls: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sendalls.append(bytes(data))
        self._sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


@pytest.fixture
def machine(tmp_path: Path, request) -> Iterator[tuple[Simulator, Hypervisor, InProcessDaemon,
                                                       CountingSocket]]:
    """Slices counted by Unicorn unless the test asks for blocks (indirect parameter): the
    exact batching below needs the exact EIP that Unicorn's count gives MMIO callbacks."""
    slicing = getattr(request, "param", "count")
    if slicing == "blocks" and budget.load()[0] is None:
        pytest.skip(budget.load()[1])
    rom = make_rom(tmp_path / "rom.bin")

    def factory():
        m = build_pc(PcOptions(virtual_clock=True, bios=str(rom), serial=[], vga="none"))
        m.add(VgaWindowDevice())
        return m

    daemon = InProcessDaemon(factory, DaemonConfig(domid=1, virtual_clock=True))
    hv = Hypervisor.connect(daemon.socket_path, handshake=False)
    sock = CountingSocket(hv.sock)
    hv.sock = sock  # type: ignore[assignment]
    sim = Simulator(hv, 4 << 20, slicing=slicing)
    try:
        hv.hello()
        for rid, region in enumerate(sim.ram.regions()):
            hv.mem_add(rid, region.gpa, region.size, sim.ram.fd, region.offset, region.flags)
        hv.wait_enabled()
        assert hv.buffered and hv.claims_mmio(0xB8000, 1)
        sock.sendalls.clear()
        yield sim, hv, daemon, sock
    finally:
        sim.close()
        hv.close()
        daemon.stop()


def frames(data: bytes) -> list:
    deframer = Deframer()
    deframer.feed(data)
    return list(deframer.messages())


def hv_messages(sock: CountingSocket) -> list:
    """Every message the client sent since the set-up (no fds then), in order."""
    return frames(b"".join(sock.sendalls))


def test_vga_writes_are_posted_in_batches_and_in_order(machine) -> None:
    sim, hv, daemon, sock = machine
    sim.ram.write(ENTRY, PROGRAM)
    stop = sim.run(max_insns=100_000)
    assert stop.reason is StopReason.HALTED, stop
    hv.barrier()  # the daemon has applied everything sent
    dev = daemon.machine.device("vgawindow")

    expected = [("w", 0x18000 + i, 1, i & 0xFF) for i in range(600)]
    expected += [("w", 0x18300, 2, 0x4241), ("w", 0x18304, 4, 0x48474645),
                 ("r", 0x18300, 2, 0x4241),
                 ("w", 0x18310, 1, 0x58), ("w", 0x18311, 1, 0x59), ("w", 0x18312, 1, 0x5A)]
    assert dev.log == expected
    assert sim.ram.read(0x600, 2) == b"AB"  # the read after the posted writes saw them

    # 511 slots fill the first batch; the rest goes before the read; the last three at HLT.
    batches = [codec.decode_bufioreq(m.payload) for m in hv_messages(sock)
               if m.type == MsgType.BUFIOREQ]
    assert [len(b) for b in batches] == [BUFFER_SLOTS, 91, 3]
    assert sim.stats.posted_batches == 3 and sim.stats.posted_writes == 605
    # ... and nothing in the window went as a synchronous write.
    ioreqs = [codec.Ioreq.unpack(m.payload) for m in hv_messages(sock) if m.type == MsgType.IOREQ]
    assert not [r for r in ioreqs if 0xA0000 <= r.addr < 0xC0000 and r.dir == 0]


def test_clock_and_posted_writes_share_the_ioreqs_sendall(machine) -> None:
    sim, hv, _daemon, sock = machine
    sim.ram.write(ENTRY, PROGRAM)
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    # The read: both BUFIOREQs (the client holds NO_REPLY messages back until its next
    # message), the CLOCK and the IOREQ in one sendall, in that order.
    read_send = [data for data in sock.sendalls
                 if MsgType.IOREQ in [m.type for m in frames(data)]]
    assert len(read_send) == 1
    assert [m.type for m in frames(read_send[0])] == [MsgType.BUFIOREQ, MsgType.BUFIOREQ,
                                                       MsgType.CLOCK, MsgType.IOREQ]
    # The last batch went out on its own at the HLT, before the run returned.
    assert [m.type for m in frames(sock.sendalls[-1])] == [MsgType.BUFIOREQ]
    # Throughout, every CLOCK is followed by the message it was queued before.
    types = [m.type for m in hv_messages(sock)]
    for i, t in enumerate(types):
        if t == MsgType.CLOCK:
            assert types[i + 1] in (MsgType.IOREQ, MsgType.BUFIOREQ), types[i - 2 : i + 2]


def test_no_posting_without_a_buffered_ring(machine) -> None:
    sim, hv, daemon, _sock = machine
    hv.state.bufioreq_mode = 0  # as if the daemon had refused the BUFIOREQ feature
    sim.ram.write(ENTRY, PROGRAM)
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    assert sim.stats.posted_batches == 0
    hv.barrier()
    assert len(daemon.machine.device("vgawindow").log) == 606
    assert struct.unpack("<H", sim.ram.read(0x600, 2))[0] == 0x4241


def test_a_slice_ending_at_an_mmio_exit_does_not_repeat_the_access(machine) -> None:
    # Unicorn re-executes an instruction whose MMIO callback stopped the vCPU; the simulator
    # therefore ends a slice that is due at an MMIO exit only at the next port exit or HLT.
    sim, hv, daemon, _sock = machine
    sim.slice_exits = 7
    sim.ram.write(ENTRY, PROGRAM)
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    hv.barrier()
    log = daemon.machine.device("vgawindow").log
    assert [e for e in log if e[0] == "w"][:600] == [("w", 0x18000 + i, 1, i & 0xFF)
                                                      for i in range(600)]
    assert len(log) == 606


# ---- REP STOS / REP MOVS into MMIO: one COPY ioreq with a count (xen-protocol.md 1.4) -----
def _prog(*parts: str) -> bytes:
    # xor ax,ax; mov ds,ax; mov ax,0xB800; mov es,ax, then the test's part, then
    # mov [0x600],cx; mov [0x602],si; mov [0x604],di; cli; hlt
    return bytes.fromhex("31c08ed8b800b88ec0" + "".join(parts) + "890e00068936020689 3e0406faf4"
                         .replace(" ", ""))


def _copy_writes(sock: CountingSocket) -> list[codec.Ioreq]:
    ioreqs = [codec.Ioreq.unpack(m.payload) for m in hv_messages(sock) if m.type == MsgType.IOREQ]
    return [r for r in ioreqs if r.type == 1 and r.dir == 0]


def _regs(sim: Simulator) -> tuple[int, int, int]:
    cx, si, di = struct.unpack("<HHH", sim.ram.read(0x600, 6))
    return cx, si, di


@pytest.mark.parametrize("machine", ["count", "blocks"], indirect=True)
def test_rep_stosw_is_one_request_per_page(machine) -> None:
    """With slices counted per block (budget.py) an MMIO callback sees the EIP of its block's
    start, so the first element of a REP STOS into MMIO, whose block began before the
    instruction, goes alone (a posted window write); every later iteration starts its own
    block at the instruction. Same stores, same order, same registers."""
    sim, hv, daemon, sock = machine
    blocks = sim.budget is not None
    # mov di,0x0F00; mov cx,512; mov ax,0x0720; cld; rep stosw: 1 KiB across a page boundary
    sim.ram.write(ENTRY, _prog("bf000f", "b90002", "b82007", "fc", "f3ab"))
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    hv.barrier()
    log = daemon.machine.device("vgawindow").log
    assert log == [("w", 0x18F00 + 2 * i, 2, 0x0720) for i in range(512)]
    reqs = _copy_writes(sock)
    first = (0xB8F02, 127) if blocks else (0xB8F00, 128)
    assert [(r.addr, r.count, r.size, r.data_is_ptr, r.data) for r in reqs] == [
        (*first, 2, 0, 0x0720), (0xB9000, 384, 2, 0, 0x0720)]
    assert sim.stats.mmio_rep_batches == 2 and sim.stats.mmio_rep_elements == 512 - blocks
    assert sim.stats.posted_writes == blocks
    cx, _si, di = _regs(sim)
    assert (cx, di) == (0, 0x1300)


def test_rep_movsb_from_ram_is_one_pointer_request(machine) -> None:
    sim, hv, daemon, sock = machine
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(300))
    sim.ram.write(0x800, pattern)
    # mov si,0x800; mov di,0x10; mov cx,300; cld; rep movsb
    sim.ram.write(ENTRY, _prog("be0008", "bf1000", "b92c01", "fc", "f3a4"))
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    hv.barrier()
    dev = daemon.machine.device("vgawindow")
    assert bytes(dev.mem[0x18010 : 0x18010 + 300]) == pattern
    assert [e[1] for e in dev.log] == [0x18010 + i for i in range(300)]
    reqs = _copy_writes(sock)
    assert [(r.addr, r.count, r.size, r.data_is_ptr, r.data) for r in reqs] == [
        (0xB8010, 300, 1, 1, 0x800)]
    assert _regs(sim) == (0, 0x92C, 0x13C)


def test_rep_movsw_backwards(machine) -> None:
    sim, hv, daemon, sock = machine
    sim.ram.write(0x880, bytes(range(0x80, 0x100)) + b"\x55\x66")
    # mov si,0x900; mov di,0x200; mov cx,64; std; rep movsw; cld
    sim.ram.write(ENTRY, _prog("be0009", "bf0002", "b94000", "fd", "f3a5", "fc"))
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    hv.barrier()
    dev = daemon.machine.device("vgawindow")
    # Elements 0x900, 0x8FE, ... 0x882 land at 0x200, 0x1FE, ... 0x182.
    assert bytes(dev.mem[0x18182 : 0x18202]) == sim.ram.read(0x882, 128)
    (req,) = _copy_writes(sock)
    assert (req.addr, req.count, req.size, req.data_is_ptr, req.df, req.data) == (
        0xB8200, 64, 2, 1, 1, 0x900)
    assert _regs(sim) == (0, 0x880, 0x180)


def test_rep_movsw_mmio_to_mmio_is_not_batched(machine) -> None:
    sim, hv, daemon, sock = machine
    # mov ax,0xB800; mov ds,ax; mov si,0; mov di,0x100; mov cx,10; cld; rep movsw; then
    # ds back to 0 for the register stores (xor ax,ax; mov ds,ax)
    sim.ram.write(ENTRY, _prog("b800b88ed8", "be0000", "bf0001", "b90a00", "fc", "f3a5",
                               "31c08ed8"))
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    hv.barrier()
    log = daemon.machine.device("vgawindow").log
    assert [e[0] for e in log] == ["r", "w"] * 10  # element by element, as Xen does
    assert sim.stats.mmio_rep_batches == 0
    assert _regs(sim) == (0, 0x14, 0x114)


def test_rep_outsb_to_a_posted_port_posts_its_elements(machine) -> None:
    """REP OUTSB to the debug console: each element is a posted write (no round trip at all)
    rather than one synchronous string ioreq; the bytes arrive in order and the registers end
    as after the instruction."""
    sim, hv, daemon, sock = machine
    sim.ram.write(0x800, b"hello\n")
    # mov si,0x800; mov dx,0x402; mov cx,6; cld; rep outsb (DS = 0)
    sim.ram.write(ENTRY, _prog("be0008", "ba0204", "b90600", "fc", "f36e"))
    assert sim.run(max_insns=100_000).reason is StopReason.HALTED
    hv.barrier()
    assert daemon.machine.debug_sink.data() == b"hello\n"
    ioreqs = [codec.Ioreq.unpack(m.payload) for m in hv_messages(sock) if m.type == MsgType.IOREQ]
    assert not [r for r in ioreqs if r.addr == 0x402]
    assert sim.stats.rep_batches == 0 and sim.stats.posted_writes == 6
    cx, si, _di = _regs(sim)
    assert (cx, si) == (0, 0x806)

