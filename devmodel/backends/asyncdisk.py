"""Asynchronous disk I/O: the port a disk device uses so that no disk ever blocks the event loop.

Issue 4: "Disk I/O never blocks the event loop: one slow disk must not stall other devices or
vCPUs". The synchronous `DiskBackend` (disk.py) runs `preadv` inside the ioreq that started a
command, on the daemon's loop; a cold cache, an NFS stall or a remote NBD server would freeze
every device and vCPU for as long as the I/O takes. `AsyncDisk` splits each operation into a
submission, made by the device inside an ioreq, and a completion, delivered later on the
event-loop thread:

    disk.submit_read(offset, views, done)          # views: writable memoryviews (guest RAM)
    disk.submit_write(offset, views, done, fua=False)
    disk.submit_flush(done)
    disk.submit_discard(offset, length, done)
    done(error: OSError | None)                    # exactly once per accepted submission

Contract:
- A submit either accepts the request (then `done` is called exactly once, later; or, on
  a port with `fast_inline`, possibly before the submit returns, for a request that could
  be served without blocking) or raises `OSError` at once (`DiskBusy` when the queue is
  full, EBADF when closed, EROFS for a write to a read-only disk) and `done` is never called.
- The buffers belong to the backend until `done`: the device must not read or reuse them, and
  the guest-RAM views stay valid (the machine must not drop the RAM region meanwhile).
- Completions never run on a worker thread. Where they run is chosen by the completion port
  attached to the disk:
  * `LoopCompletions(loop, flush_effects)`: the daemon's loop, via `call_soon_threadsafe`;
    completions that arrive together run in one callback followed by one `flush_effects()`,
    so the IRQ dm_ops a device raised in `done` leave on the socket at once. `io_hook()` gives
    the hook for `machine.io_hooks` that attaches this port when the hypervisor connects.
  * `SyncCompletions` (the default, and the mode before the daemon runs): no loop; the I/O
    runs in the submitting thread and `done` is called BEFORE the submit returns.
  * `QueuedCompletions`: completions wait in a queue until a test calls `run_pending()`, so a
    test can look at a device while its command is in flight.
- Ordering: requests in flight at the same time may complete in any order. A flush covers the
  writes that completed before the flush was submitted (the usual block-layer rule), so a
  device issues FLUSH CACHE's flush only after the writes it covers have completed.
- Each disk has a bounded queue depth (`max_inflight`); IDE has one command per drive at a
  time, so a depth of 1-2 per drive is all it needs, and the bound stops a confused device from
  queueing without limit.

How a device uses it (devmodel/ide/drive.py does this):

    1. The guest writes the command (or starts the bus master). In that ioreq the device
       validates everything (LBA range, PRD walk, guest-RAM views), sets BSY (PIO) or keeps
       the bus master's Active bit set (DMA), records `inflight = generation`, and submits.
    2. The ioreq is answered at once; the vCPU runs on and polls status, reading BSY / Active.
    3. `done(err)` runs on the loop: if the command was cancelled meanwhile (SRST, bus-master
       stop, reset: the device bumped its generation), the result is dropped. Otherwise the
       device updates the task file (error -> ERR + UNC/ABRT), clears BSY / Active, raises
       INTRQ and sets the bus master's Interrupt bit. The port's `flush_effects()` then sends
       the resulting IRQ dm_ops.
    4. Because `SyncCompletions` runs `done` inside the submit, a device must set all of its
       in-flight state BEFORE it calls submit; the same code then works inline (unit tests,
       sans-I/O replay) and asynchronously (the daemon).
    5. Snapshots wait for `drain()` (nothing in flight), so in-flight I/O is never state.

Every `AsyncDisk` also offers the synchronous `DiskBackend` methods (`read_into`,
`write_from`, `flush`, `discard`) for callers outside the ioreq path (the geometry guess at
build time, tools): they block the caller as `RawFileDisk` does.

`ThreadedRawDisk` (here) serves raw files from a small bounded thread pool; `NbdDisk`
(nbd.py) serves everything QEMU can open, through an NBD client on its own I/O thread.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .disk import IOV_MAX, MAX_SHORT_IO_RETRIES, SECTOR_SIZE, DiskBackend, RawFileDisk, _advance

log = logging.getLogger("devmodel.backends.asyncdisk")

Done = Callable[[OSError | None], None]
Views = Sequence[memoryview | bytearray | bytes]

DEFAULT_QUEUE_DEPTH = 16
DEFAULT_WORKERS = 2
# Largest bounce buffer of the O_DIRECT path; bigger unaligned requests go in pieces.
MAX_BOUNCE = 4 << 20
CACHE_MODES = ("writeback", "writethrough", "direct")


class DiskBusy(OSError):
    """The disk's queue is full: the request was not accepted (done will not be called)."""

    def __init__(self, msg: str) -> None:
        super().__init__(errno.EBUSY, msg)


# ---- completion ports ---------------------------------------------------------------------
class CompletionPort:
    """Where a disk delivers `done(error)`. `inline` ports run the I/O in the submitter.
    `fast_inline` ports let a request that cannot block (a read the page cache holds, see
    ThreadedRawDisk) complete in the submitter, before submit returns."""

    inline = False
    fast_inline = False

    def post(self, done: Done, error: OSError | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SyncCompletions(CompletionPort):
    """No event loop: I/O runs in the submitting thread and done() before submit returns."""

    inline = True

    def post(self, done: Done, error: OSError | None) -> None:
        _call(done, error)


class LoopCompletions(CompletionPort):
    """Completions run on `loop`; each batch is followed by `after()` (Connection.flush_effects).

    Submissions come from the loop thread (inside an ioreq), so a request that completes
    without blocking may call `done` right there (`fast_inline`): its effects (the IRQ
    dm_op) then leave with the answer to the ioreq that started it, with no thread hop and
    no second wake-up of the loop or of the vCPU."""

    fast_inline = True

    def __init__(self, loop: Any, after: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.after = after
        self._lock = threading.Lock()
        self._pending: list[tuple[Done, OSError | None]] = []
        self._scheduled = False
        self._closed = False

    def post(self, done: Done, error: OSError | None) -> None:
        with self._lock:
            if self._closed:
                log.warning("completion after the port was closed: dropped")
                return
            self._pending.append((done, error))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: the daemon is gone
            log.warning("event loop closed: disk completion dropped")

    def _run(self) -> None:
        self.run_pending()

    def run_pending(self) -> int:
        """Run the completions delivered so far, now (on the loop thread only): what
        `AsyncDisk.settle()` uses so a device sees its in-flight command finished."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        for done, error in batch:
            _call(done, error)
        if self.after is not None and batch:
            try:
                self.after()
            except Exception:
                log.exception("flush after disk completions failed")
        return len(batch)

    def close(self) -> None:
        with self._lock:
            self._closed = True


class QueuedCompletions(CompletionPort):
    """For tests: completions wait until `run_pending()`; `wait(n)` blocks until n are queued."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._pending: list[tuple[Done, OSError | None]] = []

    def post(self, done: Done, error: OSError | None) -> None:
        with self._cv:
            self._pending.append((done, error))
            self._cv.notify_all()

    def wait(self, n: int = 1, timeout: float = 10.0) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: len(self._pending) >= n, timeout)

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._pending)

    def run_pending(self) -> int:
        with self._cv:
            batch, self._pending = self._pending, []
        for done, error in batch:
            _call(done, error)
        return len(batch)


def _call(done: Done, error: OSError | None) -> None:
    try:
        done(error)
    except Exception:
        # A bug in a device's completion must not kill the loop or the worker.
        log.exception("disk completion callback raised")


# ---- the interface ------------------------------------------------------------------------
class AsyncDisk(DiskBackend):
    """A disk backend with both the submit/done API and the synchronous DiskBackend facade."""

    def __init__(self, max_inflight: int = DEFAULT_QUEUE_DEPTH,
                 completions: CompletionPort | None = None) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.max_inflight = max_inflight
        self.completions: CompletionPort = completions or SyncCompletions()
        self._cv = threading.Condition()
        self._inflight = 0
        self._closed = False
        self.name = getattr(self, "name", "disk")

    # -- completion port
    def attach(self, port: CompletionPort) -> None:
        self.completions = port

    def detach(self) -> None:
        """Back to inline completions (after draining what is in flight on the old port)."""
        self.drain()
        old, self.completions = self.completions, SyncCompletions()
        old.close()

    def io_hook(self) -> Callable[[Any, Callable[[], None]], Any]:
        """A hook for `machine.io_hooks`: attaches a LoopCompletions on the daemon's loop."""
        disk = self

        class _Attached:
            def close(self) -> None:
                disk.detach()

        def hook(loop: Any, flush_effects: Callable[[], None]) -> _Attached:
            disk.attach(LoopCompletions(loop, flush_effects))
            return _Attached()

        return hook

    # -- queue depth
    @property
    def inflight(self) -> int:
        return self._inflight

    def _begin(self) -> None:
        with self._cv:
            if self._closed:
                raise OSError(errno.EBADF, f"{self.name} is closed")
            if self._inflight >= self.max_inflight:
                raise DiskBusy(f"{self.name}: {self._inflight} requests in flight (max {self.max_inflight})")
            self._inflight += 1

    def _end(self) -> None:
        """Undo `_begin`: the request is over (finished, or refused after all)."""
        with self._cv:
            self._inflight -= 1
            self._cv.notify_all()

    def _finish(self, port: CompletionPort, done: Done, error: OSError | None) -> None:
        self._end()
        port.post(done, error)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is in flight (completions may still be queued on the port)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._inflight == 0, timeout)

    def settle(self, timeout: float | None = None) -> bool:
        """drain(), then run the completions already delivered to the port (LoopCompletions
        on the loop thread, QueuedCompletions): afterwards every request submitted so far has
        had its `done` called. For a device that must finish a command now (QEMU's
        ide_cancel_dma_sync at a bus-master stop, a snapshot)."""
        ok = self.drain(timeout)
        run = getattr(self.completions, "run_pending", None)
        if run is not None:
            run()
        return ok

    # -- the asynchronous API
    def submit_read(self, offset: int, views: Views, done: Done) -> None:
        raise NotImplementedError

    def submit_write(self, offset: int, views: Views, done: Done, fua: bool = False) -> None:
        raise NotImplementedError

    def submit_flush(self, done: Done) -> None:
        raise NotImplementedError

    def submit_discard(self, offset: int, length: int, done: Done) -> None:
        raise NotImplementedError


def view_range(views: Views, skip: int, n: int) -> list[memoryview]:
    """The byte range [skip, skip+n) of a buffer list, as memoryview slices (no copy)."""
    out: list[memoryview] = []
    for b in views:
        if n <= 0:
            break
        v = memoryview(b).cast("B") if not isinstance(b, memoryview) or b.format != "B" else b
        ln = len(v)
        if skip >= ln:
            skip -= ln
            continue
        take = min(ln - skip, n)
        out.append(v[skip : skip + take])
        n -= take
        skip = 0
    if n > 0:
        raise ValueError("range beyond the end of the buffers")
    return out


_ZERO = memoryview(bytes(1 << 16))


def zero_views(views: Views) -> None:
    """Fill buffers with zeros without allocating per call."""
    for b in views:
        v = memoryview(b).cast("B")
        for i in range(0, len(v), len(_ZERO)):
            n = min(len(_ZERO), len(v) - i)
            v[i : i + n] = _ZERO[:n]


def _buf_addr(v: memoryview) -> int | None:
    """Address of a writable buffer; None for read-only ones (they take the bounce path)."""
    if v.readonly or not len(v):
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(v))


# ---- raw files through a thread pool ------------------------------------------------------
class ThreadedRawDisk(AsyncDisk):
    """A raw image served by a small per-disk thread pool (one slow disk stalls only itself).

    cache:
    - "writeback": the host page cache; FLUSH is fdatasync; a FUA write uses RWF_DSYNC.
    - "writethrough": opened O_DSYNC, every write is durable when it completes.
    - "direct": O_DIRECT (no host page cache; FLUSH still fdatasyncs the device cache). Guest
      buffers, offsets and lengths aligned to the device's logical block go straight to the
      kernel; anything else goes through an aligned bounce buffer (read-modify-write of the
      partial blocks for a write, serialised by a lock).
    readonly: opened O_RDONLY, writes and discards fail with EROFS.

    Reads on a `fast_inline` port (LoopCompletions: the daemon) first try one
    `preadv(RWF_NOWAIT)` on the submitting thread. What the page cache holds is copied into
    guest RAM at once and the request completes inside the submit; a cache miss (EAGAIN)
    or the uncached rest goes to the pool as before, so a slow disk still leaves the
    command in flight (BSY / Active) and never blocks the loop. That removes, per cached
    read, the hop to a worker thread and back (call_soon_threadsafe wakes the loop) and a
    separate IRQ message to the vCPU, each a cross-CPU wake-up (machine-limits.md).
    """

    nowait = True

    def __init__(self, path: str | os.PathLike[str], cache: str = "writeback", readonly: bool = False,
                 *, workers: int = DEFAULT_WORKERS, max_inflight: int = DEFAULT_QUEUE_DEPTH,
                 completions: CompletionPort | None = None, fd: int | None = None) -> None:
        """`fd`: an already-open file (a QMP fdset's, opened by the toolstack) that the disk
        takes over (on success); `path` is then only its name. Its access mode must allow
        `readonly`. For cache=writethrough or direct the file is reopened through
        /proc/self/fd with O_DSYNC / O_DIRECT (the flags belong to the open file, which the
        toolstack's copy of the fd shares)."""
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r}: expected one of {', '.join(CACHE_MODES)}")
        self.name = os.fspath(path)
        super().__init__(max_inflight, completions)
        self.path = os.fspath(path)
        self.cache = cache
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        if cache == "writethrough" and not readonly:
            flags |= os.O_DSYNC
        if cache == "direct":
            flags |= os.O_DIRECT
        given = fd
        fd = self._open(self.path, flags) if fd is None else self._adopt_fd(fd, flags, readonly)
        try:
            self._raw = RawFileDisk.from_fd(fd, readonly)
            self._raw.path = self.path
            self.align = _probe_direct_alignment(fd) if cache == "direct" else 1
        except BaseException:
            if fd != given:  # ours (opened or reopened here); the caller keeps its own
                os.close(fd)
            raise
        if given is not None and fd != given:
            os.close(given)  # replaced by the reopened fd: taken over, on success only
        self._rmw_lock = threading.Lock()
        # Reads try the page cache first (RWF_NOWAIT) when the completion port allows it;
        # O_DIRECT reads always go to the pool (they never hit the page cache).
        # A subclass whose reads must always take the worker (a test's injected delay or
        # error in `_do_read`) sets the class attribute `nowait = False`.
        self.nowait = type(self).nowait and cache != "direct" and hasattr(os, "RWF_NOWAIT")
        self.stats = {"nowait_hit": 0, "nowait_partial": 0, "nowait_miss": 0}
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                        thread_name_prefix=f"disk-{os.path.basename(self.path)}")

    def _adopt_fd(self, fd: int, flags: int, readonly: bool) -> int:
        """Check an fd handed to the constructor; reopen it when the cache mode needs open
        flags it lacks. Returns the fd to use (the constructor closes the given one once it
        has succeeded with a replacement)."""
        import fcntl

        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        if not readonly and fl & os.O_ACCMODE != os.O_RDWR:
            raise OSError(errno.EBADF, f"{self.path}: not open for reading and writing")
        if fl & os.O_ACCMODE == os.O_WRONLY:
            raise OSError(errno.EBADF, f"{self.path}: not open for reading")
        need = flags & (os.O_DSYNC | os.O_DIRECT)
        if fl & need == need:
            return fd
        return self._open(f"/proc/self/fd/{fd}", flags)

    def _open(self, path: str, flags: int) -> int:
        try:
            return os.open(path, flags)
        except OSError as e:
            if flags & os.O_DIRECT and e.errno == errno.EINVAL:
                raise OSError(errno.EINVAL, f"{self.path}: the file system does not support "
                                            "O_DIRECT (cache=direct)") from None
            raise

    @property
    def fd(self) -> int:
        return self._raw.fd

    @property
    def size(self) -> int:
        return self._raw.size

    def __repr__(self) -> str:
        return (f"ThreadedRawDisk({self.path!r}, cache={self.cache!r}, readonly={self.readonly}, "
                f"size={self.size})")

    # -- the operations (run on a worker, or inline)
    def _do_read(self, offset: int, views: Views) -> None:
        if self.cache == "direct" and not self._aligned(offset, views):
            self._bounce_read(offset, views)
        else:
            self._raw.read_into(offset, views)

    def _do_write(self, offset: int, views: Views, fua: bool = False) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.path} is read-only")
        if self.cache == "direct" and not self._aligned(offset, views):
            self._bounce_write(offset, views)
            if fua:
                os.fdatasync(self.fd)
        elif fua and self.cache != "writethrough":
            self._pwritev_dsync(offset, views)
        else:
            self._raw.write_from(offset, views)

    def _do_flush(self) -> None:
        if not self.readonly:
            os.fdatasync(self.fd)

    def _do_discard(self, offset: int, length: int) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.path} is read-only")
        self._raw.discard(offset, length)  # advisory: a file system without holes is fine

    def _pwritev_dsync(self, offset: int, views: Views) -> None:
        """One write that is durable when it returns (FUA), without a separate fdatasync."""
        pending = [memoryview(b).cast("B") for b in views if len(b)]
        for _ in range(MAX_SHORT_IO_RETRIES):
            if not pending:
                return
            try:
                n = os.pwritev(self.fd, pending[:IOV_MAX], offset, os.RWF_DSYNC)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._raw.write_from(offset, pending)
                os.fdatasync(self.fd)
                return
            if n == 0:
                raise OSError(errno.EIO, f"{self.path}: write made no progress")
            offset += n
            pending = _advance(pending, n)
            self._raw._size = max(self._raw._size, offset)
        raise OSError(errno.EIO, f"{self.path}: too many short writes")

    # -- O_DIRECT alignment
    def _aligned(self, offset: int, views: Views) -> bool:
        a = self.align
        if offset % a:
            return False
        for b in views:
            v = memoryview(b)
            if len(v) % a:
                return False
            addr = _buf_addr(v.cast("B"))
            if addr is None or addr % a:
                return False
        return True

    def _span(self, offset: int, total: int) -> tuple[int, int]:
        a = self.align
        return offset // a * a, -(-(offset + total) // a) * a

    def _bounce_read(self, offset: int, views: Views) -> None:
        total = sum(len(memoryview(b).cast("B")) for b in views)
        done = 0
        while done < total:
            n = min(total - done, MAX_BOUNCE - self.align)
            start, end = self._span(offset + done, n)
            with mmap.mmap(-1, end - start) as bounce:
                mv = memoryview(bounce)
                try:
                    self._raw.read_into(start, [mv])
                    head = offset + done - start
                    pos = head
                    for v in view_range(views, done, n):
                        v[:] = mv[pos : pos + len(v)]
                        pos += len(v)
                finally:
                    mv.release()
            done += n

    def _bounce_write(self, offset: int, views: Views) -> None:
        total = sum(len(memoryview(b).cast("B")) for b in views)
        a = self.align
        done = 0
        with self._rmw_lock:
            while done < total:
                n = min(total - done, MAX_BOUNCE - a)
                pos0 = offset + done
                start, end = self._span(pos0, n)
                with mmap.mmap(-1, end - start) as bounce:
                    mv = memoryview(bounce)
                    try:
                        if pos0 != start:  # partial first block: read it first
                            self._raw.read_into(start, [mv[:a]])
                        if (pos0 + n) % a and end - a >= start + (a if pos0 != start else 0):
                            self._raw.read_into(end - a, [mv[end - a - start :]])
                        pos = pos0 - start
                        for v in view_range(views, done, n):
                            mv[pos : pos + len(v)] = v
                            pos += len(v)
                        self._raw.write_from(start, [mv])
                    finally:
                        mv.release()
                done += n

    # -- the page-cache fast path
    def _read_nowait(self, offset: int, views: Views) -> tuple[int, list[memoryview]] | None:
        """One `preadv(..., RWF_NOWAIT)` on the submitting thread: it copies what the page
        cache holds and never waits for the disk (EAGAIN instead). None when all of the
        request was read; otherwise (offset, views) of what is left for the thread pool."""
        try:
            n = os.preadv(self.fd, views, offset, os.RWF_NOWAIT)
        except (TypeError, ValueError, BufferError):
            return offset, list(views)  # type: ignore[arg-type]  # the pool reports it
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self.nowait = False  # this file (system) has no non-blocking reads
            elif e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                log.debug("%s: RWF_NOWAIT read failed (%s); the pool retries it", self.path, e)
            self.stats["nowait_miss"] += 1
            return offset, list(views)  # type: ignore[arg-type]
        total = sum(memoryview(v).nbytes for v in views)
        if n >= total:
            self.stats["nowait_hit"] += 1
            return None
        # Part of the range was cached, or the file ends inside it (the pool's read_into
        # zero-fills past the end, as RawFileDisk does).
        self.stats["nowait_partial"] += 1
        return offset + n, view_range(views, n, total - n)

    # -- asynchronous API
    def _submit(self, done: Done, fn: Callable[..., None], *args: Any) -> None:
        self._begin()
        self._dispatch(done, fn, args)

    def _dispatch(self, done: Done, fn: Callable[..., None], args: tuple) -> None:
        """Run an accepted request (`_begin` done): inline, or on the pool."""
        port = self.completions
        if port.inline:
            self._run(port, done, fn, args)
            return
        try:
            self._pool.submit(self._run, port, done, fn, args)
        except RuntimeError:  # the pool is shut down
            self._end()
            raise OSError(errno.EBADF, f"{self.path} is closed") from None

    def _run(self, port: CompletionPort, done: Done, fn: Callable[..., None], args: tuple) -> None:
        err: OSError | None = None
        try:
            fn(*args)
        except OSError as e:
            err = e
        except Exception as e:  # a bug of ours: still complete, as an I/O error
            log.exception("%s: disk operation failed", self.path)
            err = OSError(errno.EIO, f"{self.path}: internal error: {e}")
        self._finish(port, done, err)

    def submit_read(self, offset: int, views: Views, done: Done) -> None:
        port = self.completions
        if not (port.fast_inline and self.nowait and len(views) <= IOV_MAX):
            self._submit(done, self._do_read, offset, views)
            return
        self._begin()
        try:
            rest = self._read_nowait(offset, views)
        except Exception:
            self._end()
            raise
        if rest is None:
            # Served from the page cache: complete now, on this (the loop's) thread, so the
            # device finishes its command inside the ioreq that started it.
            self._end()
            _call(done, None)
            return
        self._dispatch(done, self._do_read, rest)

    def submit_write(self, offset: int, views: Views, done: Done, fua: bool = False) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.path} is read-only")
        self._submit(done, self._do_write, offset, views, fua)

    def submit_flush(self, done: Done) -> None:
        self._submit(done, self._do_flush)

    def submit_discard(self, offset: int, length: int, done: Done) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.path} is read-only")
        self._submit(done, self._do_discard, offset, length)

    # -- the synchronous facade (DiskBackend), for devices not yet converted
    def read_into(self, offset: int, bufs: Views) -> None:
        self._do_read(offset, bufs)

    def write_from(self, offset: int, bufs: Views) -> None:
        self._do_write(offset, bufs)

    def flush(self) -> None:
        self.drain()
        self._do_flush()

    def discard(self, offset: int, length: int) -> bool:
        if self.readonly or length <= 0:
            return False
        return self._raw.discard(offset, length)

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
        self.drain()
        self._pool.shutdown(wait=True)
        self._raw.close()


def _probe_direct_alignment(fd: int) -> int:
    """The smallest block O_DIRECT accepts here: 512 if a 512-byte read at 512 works, else 4096."""
    with mmap.mmap(-1, 8192) as m:
        mv = memoryview(m)
        try:
            os.preadv(fd, [mv[SECTOR_SIZE : 2 * SECTOR_SIZE]], SECTOR_SIZE)
            return SECTOR_SIZE
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            return 4096
        finally:
            mv.release()
