"""ThreadedRawDisk and the completion ports, on real files: every cache mode (O_DIRECT on the
work disk, skipped where the file system refuses it), real kernel errors, queue depth, and a
slow disk that must not stall the event loop or another disk."""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import threading
import time
from pathlib import Path

import pytest

from devmodel.backends.asyncdisk import (
    CACHE_MODES,
    DiskBusy,
    LoopCompletions,
    QueuedCompletions,
    SyncCompletions,
    ThreadedRawDisk,
    view_range,
    zero_views,
)
from devmodel.backends.disk import RawFileDisk

SIZE = 1 << 20


def make_file(path: Path, size: int = SIZE, seed: int = 1) -> bytes:
    data = bytes((i * 31 + seed + (i >> 9)) & 0xFF for i in range(size))
    path.write_bytes(data)
    return data


def direct_supported(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


class Collect:
    def __init__(self) -> None:
        self.results: list[OSError | None] = []
        self.threads: list[int] = []

    def __call__(self, err: OSError | None) -> None:
        self.results.append(err)
        self.threads.append(threading.get_ident())


def scattered(data: bytes, cuts: tuple[int, ...]) -> list[memoryview]:
    """data split at `cuts`, each piece in its own bytearray (odd sizes and addresses)."""
    out, prev = [], 0
    for c in (*cuts, len(data)):
        out.append(memoryview(bytearray(data[prev:c])))
        prev = c
    return out


@pytest.mark.parametrize("cache", CACHE_MODES)
@pytest.mark.parametrize("port", ["sync", "threads"])
def test_cache_modes_roundtrip(tmp_path: Path, cache: str, port: str) -> None:
    img = tmp_path / "disk.img"
    orig = make_file(img)
    if cache == "direct" and not direct_supported(img):
        pytest.skip(f"{tmp_path} does not support O_DIRECT")
    q = QueuedCompletions()
    disk = ThreadedRawDisk(img, cache=cache, completions=SyncCompletions() if port == "sync" else q)
    try:
        model = bytearray(orig)
        writes = [
            (0, os.urandom(4096), (), False),  # aligned, one buffer
            (8192, os.urandom(3 * 512), (100, 700), True),  # odd views, FUA
            (512 * 7, os.urandom(512), (), False),  # one sector, not 4K aligned
            (12345, os.urandom(999), (17,), False),  # not even sector aligned (RMW in direct)
            (SIZE - 1024, os.urandom(1024), (512,), True),
        ]
        c = Collect()
        for off, data, cuts, fua in writes:
            disk.submit_write(off, scattered(data, cuts), c, fua=fua)
            model[off : off + len(data)] = data
            if port == "threads":  # overlapping writes would race: complete each first
                assert q.wait(1)
                q.run_pending()
        disk.submit_flush(c)
        if port == "threads":
            assert q.wait(1)
            assert q.run_pending() == 1
        assert c.results == [None] * (len(writes) + 1)
        assert Path(img).read_bytes() == bytes(model)

        # reads: aligned mmap buffers (the O_DIRECT fast path) and odd bytearrays (bounce)
        m = mmap.mmap(-1, SIZE)  # page-aligned, like guest RAM (closed by GC with its views)
        mv = memoryview(m)
        reads = [(0, [mv[:65536]]), (4096, [mv[65536 : 65536 + 8192]]),
                 (7 * 512, scattered(bytes(1536), (11, 1000))), (12345, scattered(bytes(999), ()))]
        c2 = Collect()
        for off, views in reads:
            disk.submit_read(off, views, c2)
        if port == "threads":
            assert q.wait(len(reads))
            q.run_pending()
        assert c2.results == [None] * len(reads)
        for off, views in reads:
            got = b"".join(bytes(v) for v in views)
            assert got == bytes(model[off : off + len(got)])
        # the synchronous facade sees the same bytes
        buf = bytearray(2048)
        disk.read_into(12000, [buf])
        assert buf == model[12000:14048]
        disk.write_from(512, [b"\xab" * 512])
        disk.flush()
        assert Path(img).read_bytes()[512:1024] == b"\xab" * 512
    finally:
        disk.close()


def test_direct_uses_guest_buffers_when_aligned(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    orig = make_file(img)
    if not direct_supported(img):
        pytest.skip(f"{tmp_path} does not support O_DIRECT")
    disk = ThreadedRawDisk(img, cache="direct")
    try:
        assert disk.align in (512, 4096)
        mv = memoryview(mmap.mmap(-1, 1 << 16))
        assert disk._aligned(0, [mv[: disk.align * 4]])
        assert not disk._aligned(0, [mv[2 : 2 + disk.align]])  # a PRD base 2 bytes in
        assert not disk._aligned(100, [mv[: disk.align]])
        disk.read_into(0, [mv[: disk.align * 4]])
        assert bytes(mv[: disk.align * 4]) == orig[: disk.align * 4]
        disk.read_into(0, [mv[2 : 2 + disk.align]])
        assert bytes(mv[2 : 2 + disk.align]) == orig[: disk.align]
    finally:
        disk.close()


def test_readonly(tmp_path: Path) -> None:
    img = tmp_path / "ro.img"
    orig = make_file(img, 8192)
    disk = ThreadedRawDisk(img, readonly=True)
    c = Collect()
    try:
        with pytest.raises(OSError) as e:
            disk.submit_write(0, [b"x" * 512], c)
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError) as e:
            disk.submit_discard(0, 512, c)
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError):
            disk.write_from(0, [b"x" * 512])
        disk.submit_flush(c)  # nothing to make durable: succeeds
        buf = bytearray(512)
        disk.submit_read(512, [buf], c)
        assert c.results == [None, None] and buf == orig[512:1024]
    finally:
        disk.close()
    assert img.read_bytes() == orig


def test_discard_punches_hole(tmp_path: Path) -> None:
    img = tmp_path / "t.img"
    make_file(img)
    disk = ThreadedRawDisk(img)
    c = Collect()
    try:
        disk.submit_discard(65536, 65536, c)
        assert c.results == [None]
        buf = bytearray(65536)
        disk.read_into(65536, [buf])
        if os.stat(img).st_blocks * 512 < SIZE:  # the file system punched the hole
            assert buf == bytes(65536)
    finally:
        disk.close()


def test_real_kernel_error_is_done_oserror() -> None:
    """/dev/full: every write fails with ENOSPC, from the kernel, on a worker thread."""
    q = QueuedCompletions()
    disk = ThreadedRawDisk("/dev/full", completions=q)
    c = Collect()
    try:
        disk.submit_write(0, [b"\0" * 512], c)
        assert q.wait(1)
        assert c.results == []  # nothing runs until the port delivers it
        q.run_pending()
        assert len(c.results) == 1 and isinstance(c.results[0], OSError)
        assert c.results[0].errno == errno.ENOSPC
        assert c.threads == [threading.get_ident()]
    finally:
        disk.close()


class FaultyDisk(ThreadedRawDisk):
    """A raw disk whose worker sleeps before reading and fails reads at one offset with EIO,
    as a failing sector does (the error is raised in the worker thread, like a real one)."""

    delay = 0.0
    bad_offset = -1
    nowait = False  # the injected delay and error live in the worker: no page-cache shortcut

    def _do_read(self, offset, views):
        if self.delay:
            time.sleep(self.delay)
        if offset == self.bad_offset:
            raise OSError(errno.EIO, "injected: medium error")
        super()._do_read(offset, views)


def test_eio_delivered_as_done(tmp_path: Path) -> None:
    img = tmp_path / "e.img"
    orig = make_file(img, 65536)
    q = QueuedCompletions()
    disk = FaultyDisk(img, completions=q)
    disk.bad_offset = 4096
    c = Collect()
    try:
        good, bad = bytearray(512), bytearray(512)
        disk.submit_read(0, [good], c)
        disk.submit_read(4096, [bad], c)
        assert q.wait(2)
        q.run_pending()
        errs = sorted(c.results, key=lambda e: e is not None)
        assert errs[0] is None and errs[1].errno == errno.EIO
        assert good == orig[:512]
        # inline mode: the same error, delivered before submit returns
        disk.completions = SyncCompletions()
        c2 = Collect()
        disk.submit_read(4096, [bad], c2)
        assert c2.results[0].errno == errno.EIO
    finally:
        disk.close()


def test_queue_depth_bounded(tmp_path: Path) -> None:
    img = tmp_path / "q.img"
    make_file(img, 65536)
    q = QueuedCompletions()
    disk = FaultyDisk(img, completions=q, max_inflight=2)
    disk.delay = 0.3
    c = Collect()
    try:
        disk.submit_read(0, [bytearray(512)], c)
        disk.submit_read(512, [bytearray(512)], c)
        with pytest.raises(DiskBusy):
            disk.submit_read(1024, [bytearray(512)], c)
        assert disk.inflight == 2
        assert q.wait(2)
        assert disk.drain(5)
        q.run_pending()
        assert c.results == [None, None]
        disk.submit_read(1024, [bytearray(512)], c)  # room again
        assert q.wait(1)
    finally:
        disk.close()
    with pytest.raises(OSError) as e:
        disk.submit_read(0, [bytearray(512)], c)
    assert e.value.errno == errno.EBADF


async def test_slow_disk_does_not_stall_loop(tmp_path: Path) -> None:
    """A read that takes 0.6 s on one disk: loop timers keep firing every 10 ms, a second
    disk's read completes meanwhile, and completions run on the loop thread followed by the
    port's flush (what carries the IRQ dm_ops out)."""
    loop = asyncio.get_running_loop()
    slow_img, fast_img = tmp_path / "slow.img", tmp_path / "fast.img"
    slow_data, fast_data = make_file(slow_img, 65536, 1), make_file(fast_img, 65536, 2)
    flushes = []
    slow = FaultyDisk(slow_img)
    slow.delay = 0.6
    fast = ThreadedRawDisk(fast_img)
    hooks = [d.io_hook()(loop, lambda: flushes.append(time.monotonic())) for d in (slow, fast)]
    assert isinstance(slow.completions, LoopCompletions)
    order: list[str] = []
    finished = {"slow": loop.create_future(), "fast": loop.create_future()}
    ticks = []

    def done_for(name):
        def done(err):
            assert threading.get_ident() == loop_thread
            order.append(name)
            finished[name].set_result(err)
        return done

    loop_thread = threading.get_ident()
    sbuf, fbuf = bytearray(65536), bytearray(65536)
    t0 = time.monotonic()
    slow.submit_read(0, [sbuf], done_for("slow"))
    assert not finished["slow"].done()  # in flight: the submit returned at once

    async def ticker():
        while not finished["slow"].done():
            ticks.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    fast.submit_read(0, [fbuf], done_for("fast"))
    # the fast disk's file was just written: the page cache holds it, and the read
    # completed inside the submit (the ioreq that starts a command carries its effects)
    assert finished["fast"].done() and fast.stats["nowait_hit"] == 1
    assert await asyncio.wait_for(finished["fast"], 5) is None
    t_fast = time.monotonic() - t0
    assert await asyncio.wait_for(finished["slow"], 5) is None
    t_slow = time.monotonic() - t0
    await tick_task
    assert order == ["fast", "slow"]
    assert t_fast < 0.5 <= t_slow
    assert sum(1 for t in ticks if t < 0.55) >= 10, ticks  # the loop kept running
    assert len(flushes) == 1  # the slow completion's, on the loop (the fast one needed none)
    assert sbuf == slow_data and fbuf == fast_data
    for h in hooks:
        h.close()
    assert isinstance(slow.completions, SyncCompletions)
    slow.close()
    fast.close()


async def test_page_cache_fast_path_and_its_fallbacks(tmp_path: Path) -> None:
    """On the daemon's port (LoopCompletions) a read first tries preadv(RWF_NOWAIT): cached
    data completes inside the submit; data the page cache does not hold, and the part of a
    read beyond the end of the file, go to the worker and complete later on the loop."""
    loop = asyncio.get_running_loop()
    img = tmp_path / "cache.img"
    data = make_file(img, SIZE, 7)
    disk = ThreadedRawDisk(img)
    hook = disk.io_hook()(loop, lambda: None)
    try:
        c = Collect()
        cached = scattered(data[4096:135168], (1000, 70000))
        bufs = [memoryview(bytearray(len(v))) for v in cached]
        disk.submit_read(4096, bufs, c)
        assert c.results == [None] and c.threads == [threading.get_ident()]
        assert b"".join(bytes(b) for b in bufs) == data[4096:135168]
        assert disk.stats["nowait_hit"] == 1 and disk.inflight == 0

        # past the end: the cached part at once, the rest (zeros) by the worker
        tail = bytearray(b"\xee" * 8192)
        fut = loop.create_future()
        disk.submit_read(SIZE - 4096, [tail], fut.set_result)
        assert not fut.done() and disk.stats["nowait_partial"] == 1
        assert await asyncio.wait_for(fut, 5) is None
        assert tail == data[-4096:] + bytes(4096)

        # not in the page cache: EAGAIN, the worker reads it
        fd = os.open(img, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            probe = bytearray(4096)
            try:
                os.preadv(fd, [probe], 512 * 1024, os.RWF_NOWAIT)
                evicted = False
            except BlockingIOError:
                evicted = True
        finally:
            os.close(fd)
        if not evicted:
            pytest.skip("the page cache kept the file (cannot make a cache miss here)")
        cold = bytearray(65536)
        fut = loop.create_future()
        disk.submit_read(600 * 1024, [cold], fut.set_result)
        assert not fut.done()  # a slow (uncached) read stays in flight
        assert await asyncio.wait_for(fut, 5) is None
        assert disk.stats["nowait_miss"] + disk.stats["nowait_partial"] >= 2
        assert cold == data[600 * 1024 : 664 * 1024]
    finally:
        hook.close()
        disk.close()


def test_view_helpers() -> None:
    a, b = bytearray(b"abcd"), bytearray(b"efgh")
    assert [bytes(v) for v in view_range([a, b], 2, 4)] == [b"cd", b"ef"]
    assert [bytes(v) for v in view_range([a, b], 4, 4)] == [b"efgh"]
    with pytest.raises(ValueError):
        view_range([a, b], 6, 4)
    big = bytearray(b"\xff" * 200000)
    zero_views([memoryview(big)[1:199999]])
    assert big[0] == 0xFF and big[-1] == 0xFF and big[1:199999] == bytes(199998)


def test_bad_cache_mode(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    make_file(img, 4096)
    with pytest.raises(ValueError, match="cache mode"):
        ThreadedRawDisk(img, cache="unsafe")


def test_a_failed_adoption_leaves_the_callers_fd_and_leaks_none(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """The constructor takes an fd over only on success: when it fails after reopening the
    fd (cache=writethrough), the reopened fd is closed and the caller's stays open, so the
    caller's own close (qemu_nbd.open_image_fd) closes its fd, not someone else's."""
    img = tmp_path / "fd.img"
    make_file(img, 65536, 6)
    fd = os.open(img, os.O_RDWR)

    def broken(_fd: int, _readonly: bool):
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(RawFileDisk, "from_fd", staticmethod(broken))
    before = set(os.listdir("/proc/self/fd"))
    try:
        with pytest.raises(OSError, match="injected"):
            ThreadedRawDisk("/dev/fdset/7", "writethrough", fd=fd)
        os.fstat(fd)  # still open
        assert set(os.listdir("/proc/self/fd")) == before  # the reopened fd is gone
    finally:
        os.close(fd)


def test_adopting_an_open_fd(tmp_path: Path) -> None:
    """A disk on an fd the toolstack opened (QMP add-fd): taken over as it is for
    writeback; reopened through /proc/self/fd where the cache mode needs open flags (so the
    toolstack's own fd keeps its flags); an fd whose access mode is too narrow is refused."""
    import fcntl

    img = tmp_path / "fd.img"
    data = make_file(img, 65536, 5)
    fd = os.open(img, os.O_RDWR)
    disk = ThreadedRawDisk("/dev/fdset/3", fd=fd)
    try:
        assert disk.fd == fd and disk.path == "/dev/fdset/3" and disk.size == 65536
        buf = bytearray(512)
        disk.read_into(512, [buf])
        assert buf == data[512:1024]
    finally:
        disk.close()
    fd = os.open(img, os.O_RDWR)
    keep = os.dup(fd)  # the toolstack's copy: same open file
    disk = ThreadedRawDisk("/dev/fdset/4", "writethrough", fd=fd)
    try:
        assert disk.fd != fd and fcntl.fcntl(disk.fd, fcntl.F_GETFL) & os.O_DSYNC
        assert not fcntl.fcntl(keep, fcntl.F_GETFL) & os.O_DSYNC
        disk.write_from(0, [b"\x11" * 512])
        assert img.read_bytes()[:512] == b"\x11" * 512
    finally:
        disk.close()
        os.close(keep)
    with pytest.raises(OSError) as e:
        ro = os.open(img, os.O_RDONLY)
        try:
            ThreadedRawDisk("/dev/fdset/5", fd=ro)  # read-write wanted
        finally:
            os.close(ro)
    assert e.value.errno == errno.EBADF
    if direct_supported(img):
        fd = os.open(img, os.O_RDONLY)
        disk = ThreadedRawDisk("/dev/fdset/6", "direct", readonly=True, fd=fd)
        try:
            assert fcntl.fcntl(disk.fd, fcntl.F_GETFL) & os.O_DIRECT
            buf = bytearray(4096)
            disk.read_into(4096, [buf])
            assert buf == data[4096:8192]
        finally:
            disk.close()
