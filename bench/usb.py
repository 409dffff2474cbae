"""USB mass-storage READ(10) throughput of devmodel (issue 7) against `os.preadv` measured in the
same run.

    .venv/bin/python bench/usb.py [--seconds 1.0] [--rounds 3] [--image-mb 64] [--sizes 4k,64k]
                                  [--columns virtual,realtime]

The daemon is the real one (`python -m devmodel run --usb disk:IMG`, a subprocess) behind its
socket; this process is the hypervisor and a UHCI driver on one vCPU, programming the
controller with port-I/O ioreqs and building its schedule in guest RAM (this process's view of
the daemon's memfd), as tests/usb/uhci_driver.py does in-process. Set-up: host controller
reset, every frame-list entry on one QH, port reset, enumeration (GET_DESCRIPTOR, SET_ADDRESS,
SET_CONFIGURATION), then one checked READ(10) per size (guest RAM must hold the image's bytes).

One command = one TD chain (depth first) in the QH: the 31-byte CBW (bulk OUT), size/64 bulk
IN TDs of 64 bytes each (the endpoint's max packet) whose buffers are consecutive, so the
data lands contiguous at BUF_GPA, and the 13-byte CSW (IN, IOC). The chain is prebuilt once per
size and data-toggle parity; a command rewrites the CBW and copies the chain in (one slice
store), as a driver reusing its descriptors would.

Columns (each with its own daemon, rounds interleaved):
- virtual: `--clock virtual`; the driver moves the daemon's clock by MAX_CATCHUP_FRAMES frames
  per CLOCK (+ barrier) until the CSW TD is retired. Time costs nothing here, so the figure is
  what the model's frame walk, BOT and SCSI code can move per second of CPU: its ceiling.
- realtime: the daemon's monotonic clock; frames run every 1 ms of wall time and each moves
  at most FRAME_BYTE_BUDGET (1280) bytes, USB 1.1 full speed as QEMU's UHCI models it, so
  ~1.28 MB/s is the most a guest can get from a UHCI disk, on QEMU too. The driver waits for
  the IOC interrupt (the INTx dm_op), as a halted vCPU would, then acknowledges USBSTS.
- preadv_<size>: `os.preadv` of the same sizes from the same page-cached file into the same
  guest-RAM mapping, measured in each column's turn: the kernel-copy baseline.

No target ratio is given for USB (issue 7); the ratios are reported as they are. Figures are
interleaved round-robin; medians are reported. One JSON object on stdout, a table on stderr.
Informative only: never assert on the timings (machine-limits.md).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import time
from pathlib import Path

from common import (
    Figures,
    arg_parser,
    emit,
    measure,
    open_cached,
    preadv_rate,
    print_figures,
    print_ratios,
    ratio,
    remove_tmp,
    summarize_all,
    write_image,
)

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.usb.uhci import FRAME_BYTE_BUDGET, MAX_CATCHUP_FRAMES

DEVFN = 1 << 3 | 2  # PIIX3 UHCI 00:01.2
INTX = (1, 3)  # slot 1, pin D
IOBASE = 0xC040
RAM = 64 << 20
FRAME_LIST = 0x10000
QH = 0x11000
SETUP_TDS = 0x12000
CBW_GPA = 0x13000
CSW_GPA = 0x13040
CTRL_BUF = 0x13100
TDS = 0x20000  # the READ(10) chain: up to 64 KiB / 64 + 2 TDs of 16 bytes
BUF_GPA = 0x100000
SECTOR = 512
MPS = 64
ADDR = 1
EP_IN, EP_OUT = 1, 2
SIZES = {"4k": 4 << 10, "64k": 64 << 10}
MS = 1_000_000

USBCMD, USBSTS, USBINTR, FRNUM, FLBASEADD, PORTSC1 = 0, 2, 4, 6, 8, 0x10
SETUP, IN, OUT = 0x2D, 0x69, 0xE1
T, Q, VF = 1, 2, 4
ACTIVE, IOC = 1 << 23, 1 << 24
ERRMASK = 0x1E << 17  # stalled, data buffer error, babble, CRC/timeout
CERR3 = 3 << 27
TD = struct.Struct("<IIII")
CBW = struct.Struct("<IIIBBB16s")
CSW = struct.Struct("<IIIB")


class UsbDriver:
    """A UHCI + BOT driver over ioreqs, with its schedule in guest RAM."""

    def __init__(self, hv: Hypervisor, mm, virtual: bool) -> None:
        self.hv = hv
        self.mm = mm
        self.virtual = virtual
        self.now = 0
        self.tag = 0
        self.toggle = {EP_IN: 0, EP_OUT: 0}
        self.chains: dict[tuple[int, int, int], bytes] = {}
        self.clocks = 0  # CLOCK round trips (virtual) or interrupt waits (realtime)
        self.commands = 0

    # ---- time -----------------------------------------------------------------------------
    def frames(self, n: int) -> None:
        """Let n frames pass: move the virtual clock, or wait n ms of wall time."""
        if self.virtual:
            self.now += n * MS
            self.hv.clock(self.now, sync=True)
        else:
            time.sleep(n / 1000)
            self.hv.poll()

    # ---- schedule -------------------------------------------------------------------------
    def start(self) -> None:
        hv = self.hv
        hv.pci_program_bar(DEVFN, 4, IOBASE | 1)
        hv.pci_enable(DEVFN, io=True, mem=False, master=True)
        hv.outw(IOBASE + USBCMD, 0x0002)  # HCRESET
        self.mm[FRAME_LIST : FRAME_LIST + 4096] = struct.pack("<I", QH | Q) * 1024
        self.mm[QH : QH + 8] = struct.pack("<II", T, T)
        hv.outl(IOBASE + FLBASEADD, FRAME_LIST)
        hv.outw(IOBASE + FRNUM, 0)
        hv.outw(IOBASE + USBINTR, 0x0004)  # IOC
        hv.outw(IOBASE + USBCMD, 0x00C1)  # RS | CF | MAXP
        hv.outw(IOBASE + PORTSC1, 0x0200)  # port reset
        self.frames(10)
        hv.outw(IOBASE + PORTSC1, 0x0000)
        self.frames(1)
        hv.outw(IOBASE + PORTSC1, 0x000E)  # enable, clear the change bits
        if not hv.inw(IOBASE + PORTSC1) & 0x0004:
            raise RuntimeError("UHCI port 1 did not enable: is the --usb disk there?")

    def _run(self, first_td: int, last_td: int, max_frames: int = 100_000) -> None:
        """Put the chain in the QH and let frames pass until the last TD is retired."""
        mm = self.mm
        mm[QH + 4 : QH + 8] = struct.pack("<I", first_td)
        done = 0
        while True:
            ctrl = struct.unpack_from("<I", mm, last_td + 4)[0]
            if not ctrl & ACTIVE:
                break
            el = struct.unpack_from("<I", mm, QH + 4)[0]
            if not el & T:
                stuck = struct.unpack_from("<I", mm, (el & ~0xF) + 4)[0]
                if stuck & ERRMASK and not stuck & ACTIVE:
                    raise RuntimeError(f"TD at {el & ~0xF:#x} failed: ctrl={stuck:#010x}")
            if done >= max_frames:
                raise RuntimeError(f"transfer not done after {max_frames} frames")
            if self.virtual:
                self.frames(MAX_CATCHUP_FRAMES)
                done += MAX_CATCHUP_FRAMES
                self.clocks += 1
            else:
                self._wait_irq()
                done += 1
        if ctrl & ERRMASK:
            raise RuntimeError(f"last TD failed: ctrl={ctrl:#010x}")
        mm[QH + 4 : QH + 8] = struct.pack("<I", T)
        if not self.virtual:
            self.hv.outw(IOBASE + USBSTS, 0x0001)  # acknowledge USBINT: the line drops

    def _wait_irq(self) -> None:
        """Until the UHCI's INTx is raised (or 50 ms pass: a missed edge costs time, not a
        hang), as a vCPU halted in its wait for the IOC interrupt."""
        state = self.hv.state
        deadline = time.monotonic() + 0.05
        while state.pci_intx.get(INTX) != 1 and time.monotonic() < deadline:
            self.hv.poll(0.002)
        self.clocks += 1

    # ---- control transfers (enumeration) --------------------------------------------------
    def control(self, addr: int, rtype: int, req: int, value: int, index: int, length: int) -> bytes:
        mm = self.mm
        tds = []
        setup = struct.pack("<BBHHH", rtype, req, value, index, length)
        mm[CTRL_BUF : CTRL_BUF + 8] = setup
        tds.append((SETUP, 0, 8, CTRL_BUF))
        toggle, off = 1, 0
        while off < length:
            n = min(8, length - off)
            tds.append((IN, toggle, n, CTRL_BUF + 0x10 + off))
            toggle ^= 1
            off += n
        tds.append((OUT if rtype & 0x80 else IN, 1, 0, 0))
        for i, (pid, tog, n, buf) in enumerate(tds):
            a = SETUP_TDS + 16 * i
            link = T if i == len(tds) - 1 else (a + 16) | VF
            token = ((n - 1) & 0x7FF) << 21 | tog << 19 | addr << 8 | pid
            TD.pack_into(mm, a, link, ACTIVE | CERR3, token, buf)
        self._run(SETUP_TDS, SETUP_TDS + 16 * (len(tds) - 1))
        return bytes(mm[CTRL_BUF + 0x10 : CTRL_BUF + 0x10 + length])

    def enumerate(self) -> None:
        dev = self.control(0, 0x80, 6, 0x0100, 0, 8)
        if dev[1] != 1:
            raise RuntimeError(f"no device descriptor: {dev.hex()}")
        self.control(0, 0x00, 5, ADDR, 0, 0)  # SET_ADDRESS
        cfg = self.control(ADDR, 0x80, 6, 0x0200, 0, 9)
        self.control(ADDR, 0x00, 9, cfg[5], 0, 0)  # SET_CONFIGURATION
        self.toggle = {EP_IN: 0, EP_OUT: 0}

    # ---- READ(10) over BOT ----------------------------------------------------------------
    def _chain(self, size: int) -> bytes:
        """The TD chain for a READ(10) of `size` bytes with the current toggles."""
        key = (size, self.toggle[EP_OUT], self.toggle[EP_IN])
        chain = self.chains.get(key)
        if chain is not None:
            return chain
        n_in = size // MPS
        out = bytearray(16 * (n_in + 2))
        tog_in = self.toggle[EP_IN]
        TD.pack_into(out, 0, (TDS + 16) | VF, ACTIVE | CERR3,
                     (31 - 1) << 21 | self.toggle[EP_OUT] << 19 | EP_OUT << 15 | ADDR << 8 | OUT,
                     CBW_GPA)
        for i in range(n_in):
            a = 16 * (i + 1)
            TD.pack_into(out, a, (TDS + a + 16) | VF, ACTIVE | CERR3,
                         (MPS - 1) << 21 | tog_in << 19 | EP_IN << 15 | ADDR << 8 | IN,
                         BUF_GPA + MPS * i)
            tog_in ^= 1
        TD.pack_into(out, 16 * (n_in + 1), T, ACTIVE | CERR3 | IOC,
                     (13 - 1) << 21 | tog_in << 19 | EP_IN << 15 | ADDR << 8 | IN, CSW_GPA)
        chain = self.chains[key] = bytes(out)
        return chain

    def read10(self, lba: int, size: int) -> None:
        mm = self.mm
        self.tag = self.tag % 0xFFFFFFFF + 1
        nblocks = size // SECTOR
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, nblocks, 0)
        CBW.pack_into(mm, CBW_GPA, 0x43425355, self.tag, size, 0x80, 0, len(cdb), cdb)
        chain = self._chain(size)
        mm[TDS : TDS + len(chain)] = chain
        self._run(TDS, TDS + len(chain) - 16)
        self.toggle[EP_OUT] ^= 1
        self.toggle[EP_IN] ^= (size // MPS + 1) & 1
        sig, tag, residue, status = CSW.unpack_from(mm, CSW_GPA)
        if sig != 0x53425355 or tag != self.tag or residue or status:
            raise RuntimeError(f"CSW: sig {sig:#x} tag {tag} residue {residue} status {status}")
        self.commands += 1


def unit(name: str) -> str:
    return "commands/s" if name.endswith("_commands") else "MB/s"


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--image-mb", type=int, default=64)
    ap.add_argument("--sizes", default="4k,64k")
    ap.add_argument("--columns", default="virtual,realtime")
    args = ap.parse_args()
    sizes = {k: SIZES[k] for k in args.sizes.split(",")}
    columns = args.columns.split(",")
    if not set(columns) <= {"virtual", "realtime"}:
        ap.error("--columns: virtual and/or realtime")
    tmp = tempfile.mkdtemp(prefix="devmodel-bench-usb-", dir=os.environ.get("BENCH_TMPDIR"))
    img = Path(tmp) / "stick.img"
    image_size = args.image_mb << 20
    write_image(img, args.image_mb, rotate=True)
    fd = open_cached(img)
    procs: dict[str, DaemonProcess] = {}
    drivers: dict[str, UsbDriver] = {}
    hvs: list[Hypervisor] = []
    figures = {c: Figures() for c in columns}
    extra: dict[str, dict[str, dict]] = {c: {} for c in columns}
    try:
        for col in columns:
            clock = ["--clock", "virtual"] if col == "virtual" else []
            procs[col] = DaemonProcess.start(["--memory", f"{RAM >> 20}M", "--vga", "none", *clock,
                                              "--usb", f"disk:{img}"])
            hv = Hypervisor.connect(procs[col].socket_path, nr_vcpus=1)
            hvs.append(hv)
            ram = hv.add_ram(RAM)
            hv.barrier()
            drv = drivers[col] = UsbDriver(hv, ram.mm, virtual=col == "virtual")
            drv.start()
            drv.enumerate()
            mv = memoryview(ram.mm)
            # correctness once per size: the READ(10) puts exactly the image's bytes in RAM
            for name, size in sizes.items():
                lba = (7 * size) % image_size // SECTOR
                mv[BUF_GPA : BUF_GPA + size] = bytes(size)
                clocks = drv.clocks
                drv.read10(lba, size)
                if bytes(mv[BUF_GPA : BUF_GPA + size]) != os.pread(fd, size, lba * SECTOR):
                    raise RuntimeError(f"{col} READ(10) {name}: guest RAM does not hold the image's data")
                extra[col][f"usb_{name}"] = {"tds_per_command": size // MPS + 2,
                                             "waits_per_command": drv.clocks - clocks}
        for _ in range(args.rounds):
            for col in columns:
                drv = drivers[col]
                mv = memoryview(drv.mm)
                fig = figures[col]
                for name, size in sizes.items():
                    nslots = image_size // size

                    def usb(i: int, size=size, nslots=nslots, drv=drv) -> None:
                        drv.read10((i % nslots) * size // SECTOR, size)

                    t, n = measure(usb, args.seconds, args.warmup)
                    fig.add(f"usb_{name}", n * size / t / 1e6)
                    fig.add(f"usb_{name}_commands", n / t)
                    rate = preadv_rate(fd, mv[BUF_GPA : BUF_GPA + size], nslots, args.seconds,
                                       args.warmup)
                    fig.add(f"preadv_{name}", rate / 1e6)
                del mv
        for hv in hvs:
            hv.ram = None  # views of the mapping may still be alive: the process exit unmaps it
            hv.sock.close()
    finally:
        os.close(fd)
        for p in procs.values():
            p.stop()
        remove_tmp(tmp)

    result: dict = {
        "config": {"seconds": args.seconds, "rounds": args.rounds, "columns": columns,
                   "image_mb": args.image_mb, "sizes": list(sizes), "max_packet": MPS,
                   "frame_byte_budget": FRAME_BYTE_BUDGET,
                   "frames_per_clock": MAX_CATCHUP_FRAMES, "cpus": os.cpu_count()},
        "columns": {},
    }
    for col in columns:
        out_fig = summarize_all(figures[col], unit, extra[col])
        ratios = {f"usb_vs_preadv_{name}": ratio(out_fig, f"usb_{name}", f"preadv_{name}")
                  for name in sizes}
        if col == "realtime":
            for name in sizes:
                # what the bus allows: FRAME_BYTE_BUDGET bytes per 1 ms frame
                ratios[f"usb_vs_bus_{name}"] = {
                    "value": out_fig[f"usb_{name}"]["median"] / (FRAME_BYTE_BUDGET * 1000 / 1e6),
                    "target": None, "met": None}
        result["columns"][col] = {"figures": out_fig, "ratios": ratios}
        print(f"--- {col}", file=sys.stderr)
        print_figures(out_fig, 22)
        print_ratios(ratios, 22, digits=5, target=False)
    return emit(result)


if __name__ == "__main__":
    sys.exit(main())
