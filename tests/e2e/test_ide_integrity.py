"""Data integrity of the IDE disk with real components: a real daemon subprocess serving a
raw image (ThreadedRawDisk) or a qcow2 image (qemu-nbd + NbdDisk), driven through
devmodel.client.Hypervisor by a small ATA driver that does what Linux's ata_piix does: it
waits for the completion interrupt (the IRQ dm_op) before it reads the status.

- random data written by DMA and PIO, flushed: the image holds exactly what was acknowledged
  (qcow2: `qemu-img compare` against a raw reference and `qemu-img check` clean);
- SIGTERM during a write storm: every write whose completion interrupt the driver saw is in
  the image after the daemon exits 0;
- a slow disk (a worker that sleeps) does not stall ioreqs to other devices.
"""

from __future__ import annotations

import random
import shutil
import signal
import struct
import subprocess
import threading
import time

import pytest
from dmsupport import slow_down_writes

from devmodel.client import Hypervisor
from devmodel.client.sync import ProtocolError
from devmodel.ide import ata

IDE_DEVFN = 1 << 3 | 1
BMIBA = 0xC000
CMD0, CTL0, CMD1, CTL1 = 0x1F0, 0x3F6, 0x170, 0x376
TABLE = 0x1000
BUF = 0x100000  # 1 MiB of data buffer
IMAGE_SECTORS = 16384  # 8 MiB
IRQ_TIMEOUT = 10.0
RAM = 16 << 20

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("qemu-nbd") is None,
                                    reason="qemu-utils (qemu-img, qemu-nbd) not installed")


class AtaDriver:
    """Primary channel, device 0. Each command waits for its interrupt, as a real driver."""

    def __init__(self, hv: Hypervisor, ch: int = 0) -> None:
        self.hv = hv
        self.cmd = CMD1 if ch else CMD0
        self.ctl = CTL1 if ch else CTL0
        self.bm = BMIBA + 8 * ch
        self.irq = 15 if ch else 14
        hv.pci_cfg_write(IDE_DEVFN, 0x20, 4, BMIBA | 1)
        hv.pci_cfg_write(IDE_DEVFN, 0x04, 2, 0x0005)
        hv.pci_cfg_write(IDE_DEVFN, 0x40, 2, 0x8000)
        hv.pci_cfg_write(IDE_DEVFN, 0x42, 2, 0x8000)

    def wait_irq(self) -> None:
        deadline = time.monotonic() + IRQ_TIMEOUT
        while self.hv.state.isa_irq.get(self.irq) != 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no IRQ {self.irq}")
            self.hv.poll(0.002)

    def status(self) -> int:
        return self.hv.pio_read(self.cmd + 7, 1)  # clears INTRQ

    def taskfile48(self, lba: int, count: int) -> None:
        out = self.hv.pio_write
        b = self.cmd
        out(b + 6, 1, 0xE0)
        for cshift, lshift in ((8, 24), (0, 0)):  # high-order bytes first
            out(b + 2, 1, (count >> cshift) & 0xFF)
            out(b + 3, 1, (lba >> lshift) & 0xFF)
            out(b + 4, 1, (lba >> (lshift + 8)) & 0xFF)
            out(b + 5, 1, (lba >> (lshift + 16)) & 0xFF)

    def dma(self, lba: int, nsect: int, write: bool) -> tuple[int, int]:
        """READ/WRITE DMA EXT of BUF; returns (status, bus-master status) after the IRQ."""
        nbytes = nsect * 512
        entries = []
        for off in range(0, nbytes, 0x10000):
            n = min(0x10000, nbytes - off)
            last = off + n >= nbytes
            entries.append(struct.pack("<II", BUF + off, (n & 0xFFFF) | (ata.PRD_EOT if last else 0)))
        self.hv.ram.write(TABLE, b"".join(entries))
        direction = 0 if write else ata.BM_CMD_READ
        self.hv.pio_write(self.bm + 4, 4, TABLE)
        self.hv.pio_write(self.bm, 1, direction)
        self.taskfile48(lba, nsect)
        self.hv.pio_write(self.cmd + 7, 1, ata.CMD_WRITE_DMA_EXT if write else ata.CMD_READ_DMA_EXT)
        self.hv.pio_write(self.bm, 1, direction | ata.BM_CMD_START)
        self.wait_irq()
        bmst = self.hv.pio_read(self.bm + 2, 1)
        self.hv.pio_write(self.bm, 1, direction)  # stop
        self.hv.pio_write(self.bm + 2, 1, bmst)  # clear Interrupt/Error
        return self.status(), bmst

    def dma_write(self, lba: int, data: bytes) -> None:
        self.hv.ram.write(BUF, data)
        st, bmst = self.dma(lba, len(data) // 512, write=True)
        assert st == ata.READY_STAT | ata.SEEK_STAT and bmst & ata.BM_STATUS_INT, (hex(st), hex(bmst))

    def dma_read(self, lba: int, nsect: int) -> bytes:
        st, bmst = self.dma(lba, nsect, write=False)
        assert st == ata.READY_STAT | ata.SEEK_STAT and not bmst & ata.BM_STATUS_ERROR
        return self.hv.ram.read(BUF, nsect * 512)

    def pio_write(self, lba: int, data: bytes) -> None:
        """WRITE SECTORS EXT: the first DRQ comes without an interrupt, each later block and
        the end with one."""
        n = len(data) // 512
        self.taskfile48(lba, n)
        self.hv.pio_write(self.cmd + 7, 1, ata.CMD_WRITE_EXT)
        st = self.wait_drq()
        for i in range(n):
            assert st & ata.DRQ_STAT, hex(st)
            self.hv.ram.write(BUF, data[i * 512 : (i + 1) * 512])
            self.hv.outs(self.cmd, 2, 256, BUF)
            self.wait_irq()
            st = self.status()
        assert st == ata.READY_STAT | ata.SEEK_STAT, hex(st)

    def wait_drq(self) -> int:
        deadline = time.monotonic() + IRQ_TIMEOUT
        while True:
            st = self.hv.pio_read(self.ctl, 1)
            if not st & ata.BUSY_STAT:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError("BSY")

    def pio_read(self, lba: int, nsect: int) -> bytes:
        self.taskfile48(lba, nsect)
        self.hv.pio_write(self.cmd + 7, 1, ata.CMD_READ_EXT)
        out = bytearray()
        for _ in range(nsect):
            self.wait_irq()
            st = self.status()
            assert st & ata.DRQ_STAT, hex(st)
            self.hv.ins(self.cmd, 2, 256, BUF)
            out += self.hv.ram.read(BUF, 512)
        return bytes(out)

    def flush(self) -> None:
        self.hv.pio_write(self.cmd + 7, 1, ata.CMD_FLUSH_CACHE_EXT)
        self.wait_irq()
        assert self.status() == ata.READY_STAT | ata.SEEK_STAT


def make_disk(tmp_path, fmt: str) -> tuple[str, bytearray]:
    """An image of IMAGE_SECTORS with random content, and the reference copy of it."""
    ref = bytearray(random.Random(7).randbytes(IMAGE_SECTORS * 512))
    raw = tmp_path / "disk.raw"
    raw.write_bytes(ref)
    if fmt == "raw":
        return str(raw), ref
    img = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(img)], check=True)
    raw.unlink()
    return str(img), ref


def spawn(img: str, fmt: str, extra: str = "") -> Hypervisor:
    return Hypervisor.spawn(["--domid", "1", "--memory", "16M", "--vga", "none",
                             "--disk", f"format={fmt},vdev=hda,access=rw{extra},target={img}"],
                            ram=RAM)


def image_bytes(img: str, fmt: str, tmp_path) -> bytes:
    if fmt == "raw":
        with open(img, "rb") as f:
            return f.read()
    out = tmp_path / "converted.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", img, str(out)], check=True)
    return out.read_bytes()


def check_qcow2(img: str, ref: bytes, tmp_path) -> None:
    ref_path = tmp_path / "reference.raw"
    ref_path.write_bytes(ref)
    cmp = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, str(ref_path)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    chk = subprocess.run(["qemu-img", "check", "-f", "qcow2", img], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr


FORMATS = ["raw", pytest.param("qcow2", marks=needs_qemu_img)]


@pytest.mark.parametrize("fmt,cache", [("raw", ""), ("raw", ",cache=writethrough"),
                                       pytest.param("qcow2", "", marks=needs_qemu_img)])
def test_random_writes_by_dma_and_pio_are_exactly_in_the_image(tmp_path, fmt, cache):
    img, ref = make_disk(tmp_path, fmt)
    rng = random.Random(1234)
    hv = spawn(img, fmt, cache)
    try:
        drv = AtaDriver(hv)
        for i in range(60):
            if i % 3 == 2:
                nsect = rng.randint(1, 8)
                lba = rng.randrange(IMAGE_SECTORS - nsect)
                data = rng.randbytes(nsect * 512)
                drv.pio_write(lba, data)
            else:
                nsect = rng.choice([1, 8, 128, 129, 512, 2048])  # up to 1 MiB, multi-PRD
                lba = rng.randrange(IMAGE_SECTORS - nsect)
                data = rng.randbytes(nsect * 512)
                drv.dma_write(lba, data)
            ref[lba * 512 : (lba + nsect) * 512] = data
        drv.flush()
        # read back through the device, by DMA and by PIO
        assert drv.dma_read(0, 2048) == ref[: 2048 * 512]
        assert drv.dma_read(IMAGE_SECTORS - 2048, 2048) == ref[-2048 * 512 :]
        lba = rng.randrange(IMAGE_SECTORS - 16)
        assert drv.pio_read(lba, 16) == ref[lba * 512 : (lba + 16) * 512]
        hv.process.signal(signal.SIGTERM)
    finally:
        hv.sock.close()
        rc = hv.process.wait_exit(30)
        if hv.ram is not None:
            hv.ram.close()
    assert rc == 0, hv.process.log()
    assert image_bytes(img, fmt, tmp_path) == bytes(ref)
    if fmt == "qcow2":
        check_qcow2(img, ref, tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sigterm_during_a_write_storm_keeps_every_acknowledged_write(tmp_path, fmt):
    img, ref = make_disk(tmp_path, fmt)
    before = bytes(ref)
    rng = random.Random(99)
    slot = 16  # sectors per slot: each write has its own slot, so the check is exact
    nslots = IMAGE_SECTORS // slot
    order = list(range(nslots))
    rng.shuffle(order)
    acked: list[tuple[int, bytes]] = []
    issued = 0
    hv = spawn(img, fmt)
    drv = AtaDriver(hv)
    killer = threading.Timer(0.6, hv.process.signal, (signal.SIGTERM,))
    try:
        drv.dma_write(0, before[:512])  # warm up: everything connected
        killer.start()
        try:
            for s in order[1:]:
                nsect = rng.randint(1, slot)
                lba = s * slot
                data = rng.randbytes(nsect * 512)
                hv.ram.write(BUF, data)
                issued += 1
                if rng.random() < 0.5:
                    st, bmst = drv.dma(lba, nsect, write=True)  # returns after the IRQ
                    acked.append((lba, data))  # the completion interrupt was seen
                    assert st == ata.READY_STAT | ata.SEEK_STAT, hex(st)
                else:
                    drv.pio_write(lba, data)
                    acked.append((lba, data))
        except (ConnectionError, OSError, TimeoutError, ProtocolError):
            pass  # the daemon went away mid-storm
    finally:
        killer.cancel()
        hv.sock.close()
        rc = hv.process.wait_exit(30)
        if hv.ram is not None:
            hv.ram.close()
    assert rc == 0, hv.process.log()
    assert issued > len(acked) or issued == nslots - 1
    assert len(acked) > 5, "the storm ended before it began"
    # a PIO write counts as acknowledged only once its last block's interrupt came; a DMA
    # write once its interrupt came. Every one of them must be in the image.
    data = image_bytes(img, fmt, tmp_path)
    for lba, payload in acked:
        assert data[lba * 512 : lba * 512 + len(payload)] == payload, lba
    if fmt == "qcow2":
        chk = subprocess.run(["qemu-img", "check", "-f", "qcow2", img], capture_output=True, text=True)
        assert chk.returncode == 0, chk.stdout + chk.stderr


# ---- a slow disk does not stall other devices ------------------------------------------
SLOW = 1.5  # seconds each request of the slow disk takes


def test_slow_disk_does_not_stall_other_devices(tmp_path):
    from devmodel.client import InProcessDaemon
    from devmodel.pc import PcOptions, build_pc

    slow_img = tmp_path / "slow.raw"
    fast_img = tmp_path / "fast.raw"
    slow_img.write_bytes(bytes(1 << 20))
    fast_img.write_bytes(random.Random(3).randbytes(1 << 20))

    def factory():
        m = build_pc(PcOptions(virtual_clock=False, serial=[], vga="none", disks=[
            f"format=raw,vdev=hda,access=rw,target={slow_img}",
            f"format=raw,vdev=hdc,access=rw,target={fast_img}"]))
        slow_down_writes(m, SLOW)
        return m

    d = InProcessDaemon(factory)
    try:
        hv = Hypervisor.connect(d.socket_path)
        hv.add_ram(RAM)
        slow = AtaDriver(hv, ch=0)
        fast = AtaDriver(hv, ch=1)
        slow_buf, slow_table = 0x300000, 0x2000  # not the fast driver's (in use until done)
        hv.ram.write(slow_buf, b"\x5a" * 4096)
        # start a write on the slow disk; the ioreq that starts it comes back at once
        slow.taskfile48(8, 8)
        hv.ram.write(slow_table, struct.pack("<II", slow_buf, 4096 | ata.PRD_EOT))
        hv.pio_write(BMIBA + 4, 4, slow_table)
        hv.pio_write(BMIBA, 1, 0)
        t0 = time.monotonic()
        hv.pio_write(CMD0 + 7, 1, ata.CMD_WRITE_DMA_EXT)
        hv.pio_write(BMIBA, 1, ata.BM_CMD_START)
        assert time.monotonic() - t0 < SLOW / 2
        # meanwhile: the other channel's disk reads, PCI config, the RTC all answer, and the
        # slow drive reads BSY (a blocked loop would only answer after the write)
        t1 = time.monotonic()
        assert hv.pio_read(CTL0, 1) & ata.BUSY_STAT
        assert hv.pio_read(BMIBA + 2, 1) & ata.BM_STATUS_ACTIVE
        for _ in range(5):
            assert fast.dma_read(0, 64) == fast_img.read_bytes()[: 64 * 512]
            assert fast.pio_read(100, 2) == fast_img.read_bytes()[100 * 512 : 102 * 512]
            assert hv.pci_cfg_read(IDE_DEVFN, 0, 4) == 0x70108086
            hv.pio_write(0x70, 1, 0x0A)
            hv.pio_read(0x71, 1)
        assert hv.pio_read(CTL0, 1) & ata.BUSY_STAT
        assert time.monotonic() - t1 < SLOW
        # and the slow write completes in its own time
        slow.wait_irq()
        assert slow.status() == ata.READY_STAT | ata.SEEK_STAT
        assert slow_img.read_bytes()[8 * 512 : 16 * 512] == b"\x5a" * 4096
        hv.close()
    finally:
        d.stop()
        assert d.error is None


# ---- guest RAM removed while a DMA into it is in flight ---------------------------------
def _maps_naming(name: str) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if name in line)


def test_ram_removed_during_an_in_flight_dma_read(tmp_path):
    """The hypervisor removes the RAM region a slow READ DMA targets (MEM_DEL) and puts a
    new region at the same address (MEM_ADD) while the disk's worker is still reading. The
    old mapping must stay valid until the worker is done (the data lands in the old pages,
    never in unmapped memory or in the new region), and is unmapped afterwards; the daemon
    and the command finish normally. The daemon runs in this process, so /proc/self/maps
    shows its mappings."""
    import os

    from devmodel.client import InProcessDaemon
    from devmodel.pc import PcOptions, build_pc

    img = tmp_path / "disk.raw"
    data = random.Random(11).randbytes(1 << 20)
    img.write_bytes(data)
    started, release = threading.Event(), threading.Event()

    def factory():
        m = build_pc(PcOptions(virtual_clock=False, serial=[], vga="none",
                               disks=[f"format=raw,vdev=hda,access=rw,target={img}"]))
        disk = m.device("piix3-ide").drive(0, 0).backend
        disk.nowait = False  # the page cache would serve it inline: force the worker
        inner = disk._do_read

        def slow_read(*a, **kw):  # on the disk's worker thread
            started.set()
            release.wait(10)
            inner(*a, **kw)

        disk._do_read = slow_read
        return m

    tag = f"devmodel-test-dma-{os.getpid()}"
    old_fd = os.memfd_create(f"{tag}-old")
    new_fd = os.memfd_create(f"{tag}-new")
    window, gpa = 1 << 20, 0x4000000  # a 1 MiB region above guest RAM
    os.ftruncate(old_fd, window)
    os.ftruncate(new_fd, window)
    d = InProcessDaemon(factory)
    try:
        hv = Hypervisor.connect(d.socket_path)
        hv.add_ram(RAM)
        drv = AtaDriver(hv)
        hv.mem_add(90, gpa, window, old_fd, 0)
        hv.barrier()
        assert _maps_naming(f"{tag}-old") == 1
        nbytes = 128 * 512
        hv.ram.write(TABLE, struct.pack("<II", gpa, nbytes | ata.PRD_EOT))
        hv.pio_write(BMIBA + 4, 4, TABLE)
        hv.pio_write(BMIBA, 1, ata.BM_CMD_READ)
        drv.taskfile48(16, 128)
        hv.pio_write(CMD0 + 7, 1, ata.CMD_READ_DMA_EXT)
        hv.pio_write(BMIBA, 1, ata.BM_CMD_READ | ata.BM_CMD_START)
        assert started.wait(10)  # the worker holds views of the region now
        hv.mem_del(90)
        hv.mem_add(91, gpa, window, new_fd, 0)  # the replacement, same guest address
        hv.barrier()
        memory = d.machine.memory
        assert memory.retired_mappings() == 1 and memory.deferred_unmaps == 1
        assert _maps_naming(f"{tag}-old") == 1  # removed from the layout, still mapped
        assert hv.pio_read(CTL0, 1) & ata.BUSY_STAT
        release.set()
        drv.wait_irq()
        assert hv.pio_read(BMIBA + 2, 1) & ata.BM_STATUS_INT
        assert drv.status() == ata.READY_STAT | ata.SEEK_STAT
        hv.pio_write(BMIBA, 1, ata.BM_CMD_READ)
        assert os.pread(old_fd, nbytes, 0) == data[16 * 512 : 16 * 512 + nbytes]
        assert os.pread(new_fd, window, 0) == bytes(window)  # never written by that DMA
        hv.barrier()
        # unmapped as soon as the request let go of its views (no garbage collection needed)
        assert memory.retired_mappings() == 0 and _maps_naming(f"{tag}-old") == 0
        # the new region is guest RAM like any other: the next DMA lands there
        disk = d.machine.device("piix3-ide").drive(0, 0).backend
        disk._do_read = type(disk)._do_read.__get__(disk)
        hv.pio_write(BMIBA + 2, 1, 0x06)
        drv.taskfile48(0, 128)
        hv.pio_write(CMD0 + 7, 1, ata.CMD_READ_DMA_EXT)
        hv.pio_write(BMIBA, 1, ata.BM_CMD_READ | ata.BM_CMD_START)
        drv.wait_irq()
        assert drv.status() == ata.READY_STAT | ata.SEEK_STAT
        assert os.pread(new_fd, nbytes, 0) == data[:nbytes]
        hv.close()
    finally:
        release.set()
        d.stop()
        os.close(old_fd)
        os.close(new_fd)
        assert d.error is None
