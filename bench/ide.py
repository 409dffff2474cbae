"""IDE throughput of devmodel (issue 4) against `os.preadv` measured in the same run.

    .venv/bin/python bench/ide.py [--seconds 1.0] [--rounds 3] [--image-mb 256] [--pin | --no-pin]

- dma_<size>: bus-master READ DMA EXT (25h) of 64 KiB, 1 MiB and 4 MiB per command from a
  page-cached raw image, through the real daemon (`python -m devmodel run --disk ...`, a
  subprocess) over its socket. This process plays the hypervisor and a driver on one vCPU:
  the PRD table is in guest RAM (written once per size, as a driver reuses its table), and
  every register access is one strict ioreq round trip, all of them counted: bus-master stop,
  status clear, PRD pointer, direction, device/LBA48 task file (9 writes), command, start,
  then the wait for the IRQ 14 dm_op the completion sends, as a driver halted in its
  interrupt wait, then bus-master status, ATA status read (acknowledges INTRQ), stop. Disk
  I/O is asynchronous, but a read the page cache holds completes inside the start ioreq
  (ThreadedRawDisk's RWF_NOWAIT path), so its IRQ dm_op leaves in the same send as the
  start's answer: `dma_*_irq_in_answer` is the fraction of commands where the interrupt
  needed no wake-up of its own (1.0 with the fast path; a thread-pool completion makes it
  a separate message and a separate wake-up).
- preadv_<size>: `os.preadv` of the same sizes from the same file into the same guest-RAM
  mapping (this process's view of the daemon's memfd): the kernel-copy ceiling.
- ioreq_roundtrip: one side-effect-free ioreq (alternate status) per round trip; the ratios
  dma_vs_ioreq_ceiling_* compare each DMA figure with round-trip rate / ioreqs per command x size.
- pio_*: READ SECTORS EXT (24h) sector rate: per sector the wait for its interrupt, one
  status read, then either 256 `inw` ioreqs or one `rep insw` ioreq (data_is_ptr, count 256).

Two columns by default, each with its own os.preadv baseline: "pinned" (this process and
every thread of the daemon on one CPU, as bench/boot.py runs) and "unpinned" (the scheduler
decides). machine-limits.md: a strict round trip between two CPUs costs ~50 us (the IPI
that wakes a halted vCPU), on one CPU ~10 us, and the IDE command is ioreq-bound, so the
two columns differ by about that factor. `--pin` / `--no-pin` measure one column only.

Per command the driver makes 17 strict round trips: that is already fewer than Linux's
ata_piix makes (libata's ata_bmdma_qc_issue: wait-idle status read, device select with
its altstatus pause, 11 task-file writes for LBA48, another status read, PRD pointer, a
read-modify-write of the bus-master command, the command and its altstatus pause, another
read-modify-write to start; in the interrupt: bus-master status, stop (read-modify-write
plus a pause), altstatus and status, and the status clear (read + write): about 31).

Figures are interleaved round-robin; medians are reported. One JSON object on stdout, a
table on stderr. Informative only: never assert on the timings (machine-limits.md).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

from common import (
    Figures,
    Vcpu,
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

from devmodel.boot import set_threads_affinity
from devmodel.client import DaemonProcess, Hypervisor

DEVFN = 1 << 3 | 1  # PIIX3 IDE 00:01.1
BMIBA = 0xC000
CMD, CTL = 0x1F0, 0x3F6
IDE_IRQ = 14
PRD_GPA = 0x10000
BUF_GPA = 0x200000
PIO_GPA = 0x8000
RAM = 64 << 20
SIZES = {"64k": 64 << 10, "1m": 1 << 20, "4m": 4 << 20}
TARGETS = {"1m": 0.5}
SECTOR = 512


class IdeDriver:
    def __init__(self, vcpu: Vcpu) -> None:
        v = self.v = vcpu
        f = v.frame
        self.bm_stop = f(BMIBA, 1, False, 0x08)
        self.bm_clear = f(BMIBA + 2, 1, False, 0x06)
        self.bm_prd = f(BMIBA + 4, 4, False, PRD_GPA)
        self.bm_start = f(BMIBA, 1, False, 0x09)
        self.bm_status = f(BMIBA + 2, 1, True)
        self.ata_status = f(CMD + 7, 1, True)
        self.inw = f(CMD, 2, True)
        self.insw = f(CMD, 2, True, PIO_GPA, 256, ptr=True)

    def taskfile(self, lba: int, nsect: int, cmd: int) -> list[bytearray]:
        f = self.v.frame
        regs = [(6, 0x40), (2, nsect >> 8), (3, lba >> 24), (4, lba >> 32), (5, lba >> 40),
                (2, nsect), (3, lba), (4, lba >> 8), (5, lba >> 16), (7, cmd)]
        return [f(CMD + r, 1, False, val & 0xFF) for r, val in regs]

    def read_dma(self, lba: int, nsect: int) -> None:
        io = self.v.io
        io(self.bm_stop)
        io(self.bm_clear)
        io(self.bm_prd)
        for fr in self.taskfile(lba, nsect, 0x25):
            io(fr)
        io(self.bm_start)
        self.v.wait_irq(IDE_IRQ)  # the completion raises IRQ 14 (Interrupt set, Active clear)
        st = io(self.bm_status)
        ata = io(self.ata_status)  # acknowledges INTRQ: the line drops
        io(self.bm_stop)
        if st & 0x02 or ata & 0x01:
            raise RuntimeError(f"DMA failed: bm status {st:#x}, ATA status {ata:#x}")

    def read_pio(self, lba: int, nsect: int, rep: bool) -> None:
        io = self.v.io
        for fr in self.taskfile(lba, nsect, 0x24):
            io(fr)
        for _ in range(nsect):
            self.v.wait_irq(IDE_IRQ)  # each block's read completes with an interrupt
            st = io(self.ata_status)
            if not st & 0x08:
                raise RuntimeError(f"PIO read: no DRQ (status {st:#x})")
            if rep:
                io(self.insw)
            else:
                for _ in range(256):
                    io(self.inw)


def setup_prd(mm, size: int) -> None:
    n = -(-size // 65536)
    table = bytearray()
    for i in range(n):
        count = min(65536, size - i * 65536)
        table += struct.pack("<II", BUF_GPA + i * 65536, (count & 0xFFFF) | (0x80000000 if i == n - 1 else 0))
    mm[PRD_GPA : PRD_GPA + len(table)] = table


def unit(name: str) -> str:
    return ("fraction" if name.endswith("_irq_in_answer")
            else "commands/s" if name.endswith("_commands")
            else "GB/s" if name.startswith(("dma_", "preadv_"))
            else "ioreqs/s" if name == "ioreq_roundtrip" else "sectors/s")


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--image-mb", type=int, default=256)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--pin", action="store_true", help="only the pinned column (both processes on one CPU)")
    g.add_argument("--no-pin", action="store_true", help="only the unpinned column")
    ap.add_argument("--sizes", default="64k,1m,4m")
    args = ap.parse_args()
    sizes = {k: SIZES[k] for k in args.sizes.split(",")}
    columns = ["pinned"] if args.pin else ["unpinned"] if args.no_pin else ["pinned", "unpinned"]
    allowed = os.sched_getaffinity(0)
    pin_cpu = {min(allowed)}
    tmp = tempfile.mkdtemp(prefix="devmodel-bench-ide-", dir=os.environ.get("BENCH_TMPDIR"))
    img = Path(tmp) / "disk.img"
    image_size = args.image_mb << 20
    write_image(img, args.image_mb)
    fd = open_cached(img)
    proc = DaemonProcess.start(["--memory", f"{RAM >> 20}M", "--disk", f"format=raw,vdev=hda,target={img}"])
    figures = {c: Figures() for c in columns}
    extra: dict[str, dict] = {}
    try:
        hv = Hypervisor.connect(proc.socket_path, nr_vcpus=1)
        ram = hv.add_ram(RAM)
        hv.barrier()
        hv.pci_program_bar(DEVFN, 4, BMIBA | 1)
        hv.pci_enable(DEVFN, io=True, mem=False, master=True)
        hv.pci_cfg_write(DEVFN, 0x40, 2, 0x8000)
        vcpu = Vcpu(hv)
        drv = IdeDriver(vcpu)
        mm = ram.mm
        mv = memoryview(mm)
        mm[BUF_GPA : BUF_GPA + max(sizes.values())] = bytes(max(sizes.values()))  # pre-fault

        # correctness once per size: the DMA puts exactly the file's bytes in guest RAM
        for name, size in sizes.items():
            setup_prd(mm, size)
            lba = (3 * size) % image_size // SECTOR
            mv[BUF_GPA : BUF_GPA + size] = bytes(size)
            drv.read_dma(lba, size // SECTOR)
            if bytes(mv[BUF_GPA : BUF_GPA + size]) != os.pread(fd, size, lba * SECTOR):
                raise RuntimeError(f"DMA {name}: guest RAM does not hold the image's data")
            before = vcpu.count
            drv.read_dma(lba, size // SECTOR)
            extra[f"dma_{name}"] = {"ioreqs_per_command": vcpu.count - before}
        before = vcpu.count
        drv.read_pio(0, 1, rep=True)
        pio_rep_ioreqs = vcpu.count - before
        if bytes(mv[PIO_GPA : PIO_GPA + SECTOR]) != os.pread(fd, SECTOR, 0):
            raise RuntimeError("PIO rep insw: guest RAM does not hold sector 0")
        before = vcpu.count
        drv.read_pio(0, 1, rep=False)
        pio_inw_ioreqs = vcpu.count - before

        for _ in range(args.rounds):
            for col in columns:
                cpus = pin_cpu if col == "pinned" else allowed
                os.sched_setaffinity(0, cpus)
                set_threads_affinity(proc.pid, cpus)
                fig = figures[col]
                for name, size in sizes.items():
                    nslots = image_size // size
                    setup_prd(mm, size)
                    nsect = size // SECTOR

                    def dma(i: int, nsect=nsect, nslots=nslots, size=size) -> None:
                        drv.read_dma((i % nslots) * size // SECTOR, nsect)

                    waits, inans = vcpu.irq_waits, vcpu.irq_in_answer
                    t, n = measure(dma, args.seconds, args.warmup)
                    fig.add(f"dma_{name}", n * size / t / 1e9)
                    fig.add(f"dma_{name}_commands", n / t)
                    fig.add(f"dma_{name}_irq_in_answer",
                            (vcpu.irq_in_answer - inans) / max(1, vcpu.irq_waits - waits))
                    rate = preadv_rate(fd, mv[BUF_GPA : BUF_GPA + size], nslots, args.seconds,
                                       args.warmup)
                    fig.add(f"preadv_{name}", rate / 1e9)
                alt = vcpu.frame(CTL, 1, True)  # alternate status: no side effect, one round trip
                t, n = measure(lambda i, alt=alt: vcpu.io(alt), args.seconds / 2, args.warmup / 2)
                fig.add("ioreq_roundtrip", n / t)
                for rep in (True, False):
                    per = 8 if rep else 1

                    def pio(i: int, rep=rep, per=per) -> None:
                        drv.read_pio((i * per) % (image_size // SECTOR - per), per, rep)

                    t, n = measure(pio, args.seconds / 2, args.warmup / 2)
                    fig.add("pio_rep_insw" if rep else "pio_inw", n * per / t)
        os.sched_setaffinity(0, allowed)
        hv.ram = None  # views of the mapping are still alive: the process exit unmaps it
        hv.sock.close()
    finally:
        os.close(fd)
        proc.stop()
        remove_tmp(tmp)

    result: dict = {
        "config": {"seconds": args.seconds, "rounds": args.rounds, "columns": columns,
                   "pin_cpu": sorted(pin_cpu), "image_mb": args.image_mb, "sizes": list(sizes),
                   "pid": os.getpid(), "cpus": os.cpu_count()},
        "columns": {},
    }
    for col in columns:
        out_fig = summarize_all(figures[col], unit, extra)
        out_fig["pio_rep_insw"]["ioreqs_per_sector"] = (pio_rep_ioreqs - 10)
        out_fig["pio_inw"]["ioreqs_per_sector"] = (pio_inw_ioreqs - 10)
        ratios = {}
        for name in sizes:
            ratios[f"dma_vs_preadv_{name}"] = ratio(out_fig, f"dma_{name}", f"preadv_{name}",
                                                    TARGETS.get(name))
        rt = out_fig["ioreq_roundtrip"]["median"]
        for name, size in sizes.items():
            # What the DMA could reach if the copy were free: the strict ioreq rate of this
            # run divided by the ioreqs a command needs (machine-limits.md: the IDE rate is
            # ioreq-bound).
            ceiling = rt / out_fig[f"dma_{name}"]["ioreqs_per_command"] * size / 1e9
            ratios[f"dma_vs_ioreq_ceiling_{name}"] = {"value": out_fig[f"dma_{name}"]["median"] / ceiling,
                                                      "ceiling_GBps": ceiling, "target": None,
                                                      "met": None}
        ratios["pio_rep_vs_inw"] = ratio(out_fig, "pio_rep_insw", "pio_inw")
        result["columns"][col] = {"figures": out_fig, "ratios": ratios}
        print(f"--- {col}", file=sys.stderr)
        print_figures(out_fig, 28)
        print_ratios(ratios, 28)
    return emit(result)


if __name__ == "__main__":
    sys.exit(main())
