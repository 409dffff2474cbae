"""e1000 frame rates of devmodel (issue 6) against a raw Python send/receive loop, in one run.

    .venv/bin/python bench/e1000.py [--seconds 1.0] [--rounds 3] [--sizes 64,1514] [--pin]
                                    [--backend udp|unix]

- tx_<size>: the real daemon (`python -m devmodel run --nic ...,backend=udp|unix`, a
  subprocess) transmits frames of <size> bytes to this process's socket. This process plays
  the hypervisor and a driver on one vCPU: a 256-entry legacy TX ring in guest RAM, batches of
  64 descriptors (EOP|IFCS|RS) written into RAM, then per batch one TDT doorbell and one ICR
  read (the interrupt acknowledge), both strict ioreq round trips; the frames are counted as
  they arrive on the peer socket.
- rx_<size>: this process sends 64-frame batches to the daemon's socket; the NIC puts them in
  a 256-entry RX ring of 2 KiB buffers and raises INTx (a dm_op to this process). The driver
  waits for the interrupt, reads ICR, harvests the DD descriptors from guest RAM and hands
  them back with one RDT write (a NAPI-like loop).
- raw_tx_<size> / raw_rx_<size>: the same frames and batches with plain sendto/recv between two
  sockets of the same kind, no device: the backend's ceiling in Python.

--poll-us N (default 0: off; always off with --pin): the vCPU polls its socket for up to N us
before it sleeps in recv, as a hypervisor's vCPU thread polls before it halts (KVM's
halt_poll_ns). In this VM a process woken from sleep on the other vCPU pays 20-25 us per
wake-up (machine-limits.md), harness latency that no device model can save; with polling the
figures show more of the daemon's own cost. Off by default: when the scheduler puts both
processes on one CPU, polling (even yielding) can cost more than it saves (rx_1514 0.41 -> 0.23
in such a run). The daemon is never polled: it sleeps in its event loop between messages.

Figures are interleaved round-robin; medians are reported, in frames/s with bytes/s next to
them. One JSON object on stdout, a table on stderr. Target (issue 6): device >= 0.5x raw.
Informative only: never assert on the timings (machine-limits.md).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import tempfile
import time

import common
from common import (
    Figures,
    arg_parser,
    emit,
    find_pci,
    free_udp_ports,
    measure_done,
    pin_both,
    print_ratios,
    ratio,
    remove_tmp,
    summarize,
)

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.nic import e1000_defs as d
from devmodel.wire.constants import IOREQ_TYPE_COPY

RAM = 64 << 20
MMIO = 0xF0000000
TX_RING, RX_RING = 0x100000, 0x110000
TX_BUFS, RX_BUFS = 0x200000, 0x400000
RING = 256
BATCH = 64
RX_BUF = 2048
MAC = bytes.fromhex("00163e000001")
PEER_MAC = bytes.fromhex("020000000002")
TARGET = 0.5
WAIT_S = 2.0  # a batch that does not complete in this time is counted as lost frames


class Vcpu(common.Vcpu):
    """bench/common.py's vCPU with MMIO frames; it tracks the NIC's INTx level (the dm_ops
    arrive between answers, or while waiting for an interrupt)."""

    def __init__(self, hv: Hypervisor, dev: int, poll: float = 0.0) -> None:
        super().__init__(hv)
        self.dev = dev
        self.poll = poll  # seconds of polling before a read sleeps (module doc)

    def _read_more(self, timeout: float | None = None) -> bool:
        """common.Vcpu._read_more, after polling the socket for up to `poll` seconds."""
        if self.poll:
            start = time.perf_counter()
            span = self.poll if timeout is None else min(self.poll, timeout)
            while True:
                try:
                    k = self.sock.recv_into(self.buf, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    if time.perf_counter() - start < span:
                        # the CPU to the daemon if the scheduler put it on this one (returns
                        # at once when it runs elsewhere): never spin against it
                        os.sched_yield()
                        continue
                    break
                return self._took(k)
            if timeout is not None:
                timeout = max(0.0, timeout - (time.perf_counter() - start))
        return super()._read_more(timeout)

    @staticmethod
    def mmio(off: int, read: bool, data: int = 0) -> bytearray:
        """A 4-byte access to the NIC's register at `off` in BAR0."""
        return Vcpu.frame(MMIO + off, 4, read, data, typ=IOREQ_TYPE_COPY)

    @property
    def irq(self) -> int:
        return self.hv.state.pci_intx.get((self.dev, 0), 0)

    def wait_intx(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        self._scan(None)
        while not self.irq:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read_more(left):
                return False
            self._scan(None)
        return True


def ether(size: int, dst: bytes, src: bytes) -> bytes:
    head = dst + src + b"\x88\xb5"  # local experimental ethertype
    return head + bytes(i & 0xFF for i in range(size - len(head)))


# descriptor status byte -> 1 with DD, 0 without (rx_harvest)
_DD = bytes(1 if b & d.RXD_STAT_DD else 0 for b in range(256))


class Driver:
    def __init__(self, vcpu: Vcpu, mm, sizes: list[int]) -> None:
        self.v = vcpu
        self.mm = mm
        f = vcpu.mmio
        self.icr = f(d.ICR, True)
        self.tx_tail = 0
        self.rx_next = 0
        # The TX buffers, written once: the largest frame (a smaller one is its start, as
        # ether() fills them), and per size the descriptor blocks a driver writes per batch.
        frame = ether(max(sizes), PEER_MAC, MAC)
        for i in range(RING):
            mm[TX_BUFS + i * RX_BUF : TX_BUFS + i * RX_BUF + len(frame)] = frame
        cmd = d.TXD_CMD_EOP | d.TXD_CMD_IFCS | d.TXD_CMD_RS
        self.tx_blocks = {size: [b"".join(d.TX_LEGACY.pack(TX_BUFS + i * RX_BUF, size, 0, cmd, 0, 0, 0)
                                          for i in range(start, start + BATCH))
                                 for start in range(0, RING, BATCH)]
                          for size in sizes}
        self.tdt = [f(d.TDT, False, (start + BATCH) % RING) for start in range(0, RING, BATCH)]

    def init(self) -> None:
        v, f, mm = self.v, self.v.mmio, self.mm
        for off, val in ((d.IMC, 0xFFFFFFFF), (d.CTRL, d.CTRL_SLU | d.CTRL_FD),
                         (d.TDBAL, TX_RING), (d.TDBAH, 0), (d.TDLEN, RING * 16), (d.TDH, 0),
                         (d.TDT, 0), (d.TIPG, 0x0060200A),
                         (d.TCTL, d.TCTL_EN | d.TCTL_PSP | 0x0F << 4 | 0x40 << 12)):
            v.io(f(off, False, val))
        for i in range(RING):
            mm[RX_RING + 16 * i : RX_RING + 16 * i + 16] = struct.pack("<QQ", RX_BUFS + i * RX_BUF, 0)
        for off, val in ((d.RDBAL, RX_RING), (d.RDBAH, 0), (d.RDLEN, RING * 16), (d.RDH, 0),
                         (d.RDT, RING - 1), (d.RDTR, 0), (d.ITR, 0),
                         (d.RCTL, d.RCTL_EN | d.RCTL_BAM | d.RCTL_SECRC | d.RCTL_UPE),
                         (d.IMS, d.ICR_RXT0 | d.ICR_RXO | d.ICR_TXDW)):
            v.io(f(off, False, val))
        if not v.io(f(d.STATUS, True)) & d.STATUS_LU:
            raise RuntimeError("e1000 link is down")
        v.io(self.icr)

    def tx_batch(self, size: int) -> None:
        b = self.tx_tail // BATCH
        base = TX_RING + self.tx_tail * 16
        self.mm[base : base + BATCH * 16] = self.tx_blocks[size][b]
        self.v.io(self.tdt[b])
        self.v.io(self.icr)
        last = base + (BATCH - 1) * 16 + 12
        if not self.mm[last] & d.TXD_STAT_DD:
            raise RuntimeError("TX descriptor not written back after the doorbell")
        self.tx_tail = (self.tx_tail + BATCH) % RING

    def rx_harvest(self) -> int:
        """The descriptors from rx_next on that have DD (at most RING - 1), their status
        cleared and handed back with one RDT write. The status bytes are read, tested and
        cleared as strided slices of the ring: a driver's check of DD per descriptor, without
        a Python step per descriptor in this process (which plays the guest's CPU)."""
        mm = self.mm
        i = self.rx_next
        first = mm[RX_RING + 16 * i + 12 : RX_RING + 16 * RING : 16]  # i .. RING - 1
        status = (first + mm[RX_RING + 12 : RX_RING + 16 * i : 16])[: RING - 1]
        n = status.translate(_DD).find(0)
        if n < 0:
            n = len(status)
        if n:
            k = min(n, len(first))
            mm[RX_RING + 16 * i + 12 : RX_RING + 16 * (i + k) : 16] = bytes(k)
            if n > k:
                mm[RX_RING + 12 : RX_RING + 16 * (n - k) : 16] = bytes(n - k)
            i = (i + n) % RING
            self.rx_next = i
            self.v.io(self.v.mmio(d.RDT, False, (i - 1) % RING))
        return n

    def rx_frames(self, want: int) -> int:
        got = 0
        deadline = time.monotonic() + WAIT_S
        while got < want:
            st = RX_RING + 16 * self.rx_next + 12
            if not self.mm[st] & d.RXD_STAT_DD and not self.v.irq:
                if not self.v.wait_intx(max(0.0, deadline - time.monotonic())):
                    break
            self.v.io(self.icr)
            got += self.rx_harvest()
        return got


def drain(sock: socket.socket, want: int, timeout: float = WAIT_S) -> int:
    got = 0
    deadline = time.monotonic() + timeout
    while got < want:
        try:
            sock.recv(65536)
            got += 1
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
    return got


def make_sockets(kind: str, tmp: str, tag: str) -> tuple[socket.socket, object, object]:
    """A non-blocking socket of `kind` bound to a fresh address; (socket, address, spec text)."""
    if kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        addr = s.getsockname()
        text = f"127.0.0.1:{addr[1]}"
    else:
        addr = os.path.join(tmp, f"{tag}.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(addr)
        text = addr
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    s.setblocking(False)
    return s, addr, text


def summarize_frames(runs: list[float], size: int) -> dict:
    fig = summarize(runs, "frames/s")
    return {**fig, "bytes_per_s": fig["median"] * size, "frame_bytes": size}


def main() -> int:
    ap = arg_parser(__doc__, pin=True)
    ap.add_argument("--sizes", default="64,1514")
    ap.add_argument("--backend", choices=("udp", "unix"), default="udp")
    ap.add_argument("--poll-us", type=float, default=0.0,
                    help="the vCPU polls this long before it sleeps (off with --pin)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(not 60 <= s <= 1514 for s in sizes):
        ap.error("frame sizes must be 60-1514 bytes")
    tmp = tempfile.mkdtemp(prefix="devmodel-bench-e1000-", dir=os.environ.get("BENCH_TMPDIR"))
    peer, peer_addr, peer_text = make_sockets(args.backend, tmp, "peer")
    if args.backend == "udp":
        dm_addr: object = ("127.0.0.1", free_udp_ports(1)[0])
        dm_text = f"127.0.0.1:{dm_addr[1]}"
    else:
        dm_addr = dm_text = os.path.join(tmp, "dm.sock")
    spec = (f"model=e1000,mac=00:16:3e:00:00:01,backend={args.backend},peer={peer_text},"
            f"path={dm_text},rom=off")
    # the raw baseline: the same socket kind, no device in between
    raw_a, raw_a_addr, _ = make_sockets(args.backend, tmp, "raw_a")
    raw_b, raw_b_addr, _ = make_sockets(args.backend, tmp, "raw_b")
    proc = DaemonProcess.start(["--memory", f"{RAM >> 20}M", "--vga", "none", "--nic", spec])
    figures = Figures()
    lost: dict[str, int] = {}
    try:
        if args.pin:
            pin_both(proc.pid)
        hv = Hypervisor.connect(proc.socket_path, nr_vcpus=1)
        ram = hv.add_ram(RAM)
        hv.barrier()
        devfn = find_pci(hv, d.VENDOR_INTEL, d.DEVICE_82540EM)
        hv.pci_program_bar(devfn, 0, MMIO)
        hv.pci_enable(devfn, io=False, mem=True, master=True)
        vcpu = Vcpu(hv, devfn >> 3, poll=0.0 if args.pin else args.poll_us / 1e6)
        mm = ram.mm
        drv = Driver(vcpu, mm, sizes)
        drv.init()
        rx_frames = {size: ether(size, MAC, PEER_MAC) for size in sizes}

        # correctness once: a TX batch arrives intact, an RX batch lands in guest RAM intact
        drv.tx_batch(sizes[0])
        got = [peer.recv(65536) for _ in range(BATCH) if select.select([peer], [], [], WAIT_S)[0]]
        if len(got) != BATCH or got[0] != ether(sizes[0], PEER_MAC, MAC):
            raise RuntimeError(f"TX check: {len(got)} frames, first {got[:1]!r}")
        for _ in range(BATCH):
            peer.sendto(rx_frames[sizes[0]], dm_addr)
        start = drv.rx_next
        if drv.rx_frames(BATCH) != BATCH:
            raise RuntimeError("RX check: frames missing")
        first = bytes(mm[RX_BUFS + start * RX_BUF : RX_BUFS + start * RX_BUF + sizes[0]])
        if first != rx_frames[sizes[0]]:
            raise RuntimeError("RX check: guest RAM does not hold the frame sent")

        for _ in range(args.rounds):
            for size in sizes:

                def tx(size=size, key=f"tx_{size}", drv=drv) -> int:
                    drv.tx_batch(size)
                    n = drain(peer, BATCH)
                    lost[key] = lost.get(key, 0) + BATCH - n
                    return n

                t, n = measure_done(tx, args.seconds, args.warmup)
                figures.add(f"tx_{size}", n / t)
                frame = rx_frames[size]

                def rx(frame=frame, key=f"rx_{size}", drv=drv) -> int:
                    for _ in range(BATCH):
                        peer.sendto(frame, dm_addr)
                    n = drv.rx_frames(BATCH)
                    lost[key] = lost.get(key, 0) + BATCH - n
                    return n

                t, n = measure_done(rx, args.seconds, args.warmup)
                figures.add(f"rx_{size}", n / t)
                out = ether(size, PEER_MAC, MAC)

                def raw_tx(out=out) -> int:  # the device side sends, the peer receives
                    for _ in range(BATCH):
                        raw_a.sendto(out, raw_b_addr)
                    return drain(raw_b, BATCH)

                t, n = measure_done(raw_tx, args.seconds, args.warmup)
                figures.add(f"raw_tx_{size}", n / t)

                def raw_rx(frame=frame) -> int:  # the peer sends, the device side receives
                    for _ in range(BATCH):
                        raw_b.sendto(frame, raw_a_addr)
                    return drain(raw_a, BATCH)

                t, n = measure_done(raw_rx, args.seconds, args.warmup)
                figures.add(f"raw_rx_{size}", n / t)
        ioreqs = vcpu.count
        hv.ram = None  # views of the mapping are still alive: the process exit unmaps it
        hv.sock.close()
    finally:
        proc.stop()
        for s in (peer, raw_a, raw_b):
            s.close()
        remove_tmp(tmp)

    out_fig = {}
    for name, runs in figures.items():
        out_fig[name] = summarize_frames(runs, int(name.rsplit("_", 1)[1]))
        if name in lost:
            out_fig[name]["lost_frames"] = lost[name]
    ratios = {}
    for size in sizes:
        for way in ("tx", "rx"):
            ratios[f"{way}_vs_raw_{size}"] = ratio(out_fig, f"{way}_{size}", f"raw_{way}_{size}", TARGET)
    result = {
        "config": {"seconds": args.seconds, "rounds": args.rounds, "pin": args.pin,
                   "poll_us": 0.0 if args.pin else args.poll_us, "backend": args.backend,
                   "sizes": sizes, "batch": BATCH, "ring": RING,
                   "ioreqs": ioreqs, "pid": os.getpid(), "cpus": os.cpu_count()},
        "figures": out_fig,
        "ratios": ratios,
    }
    for name, fig in out_fig.items():
        print(f"{name:14s} {fig['median']:12.0f} frames/s {fig['bytes_per_s'] / 1e6:9.1f} MB/s "
              f"({fig['min']:.0f} - {fig['max']:.0f})", file=sys.stderr)
    print_ratios(ratios, 14)
    return emit(result)


if __name__ == "__main__":
    sys.exit(main())
