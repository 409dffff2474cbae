"""Disk backends: the block-storage port a disk device (IDE today) is handed.

A device never opens files (design rule 1). It is given a `DiskBackend` and calls it with
byte offsets and lists of writable/readable buffers; for bus-master DMA those buffers are
memoryviews straight into the guest-RAM mapping, so a read is one `os.preadv` from the file
into guest memory and never goes through a `bytes` object (machine-limits.md section 5).

The synchronous port. The IDE device now submits through the asynchronous port of
asyncdisk.py (`AsyncDisk.submit_*`) and falls back to these methods, with an inline
completion, only for a backend that lacks it (a RawFileDisk a test or a QMP media change
hands it). What follows is why this synchronous port was the first step. For a local raw file that is
page-cache speed (a 64 KiB DMA read costs ~10 us), and it keeps the device a plain state
machine with no completion callbacks, generation counters or in-flight state to snapshot. The
price is that a slow file (cold cache, NFS) blocks the daemon's loop for that ioreq. The
interface is deliberately narrow so that an asynchronous backend (thread pool, io_uring, NBD)
can replace it later: the device would then start a request and finish the command in a
completion method, and that change stays inside the device's command code.

Errors: every method raises `OSError` on failure; the device turns that into the ATA error the
guest sees and keeps running. A read past the end of the file reads zeros (as QEMU's raw driver
does); the device range-checks sector numbers before it gets here.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence

SECTOR_SIZE = 512
# Linux IOV_MAX: preadv/pwritev take at most this many buffers per call.
IOV_MAX = 1024
# Each call moves at least one byte or ends the loop, so these bound the retries of a short
# read or write (a signal, a file shrunk under us) without assuming anything about the kernel.
MAX_SHORT_IO_RETRIES = 64

Buffers = Sequence[memoryview | bytearray | bytes]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


class DiskBackend:
    """What a disk device may ask of its storage. Offsets and lengths are in bytes."""

    readonly: bool = False

    @property
    def size(self) -> int:
        raise NotImplementedError

    def read_into(self, offset: int, bufs: Buffers) -> None:
        """Fill every buffer in `bufs`, in order, from `offset` on."""
        raise NotImplementedError

    def write_from(self, offset: int, bufs: Buffers) -> None:
        """Write every buffer in `bufs`, in order, at `offset` on."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make every completed write durable."""
        raise NotImplementedError

    def discard(self, offset: int, length: int) -> bool:
        """Advise that a range is unused; True if storage was actually released."""
        return False

    def close(self) -> None:
        pass


class RawFileDisk(DiskBackend):
    """A raw image file or block device, by path or by an already-open fd (for a daemon that
    opens everything before dropping privileges). Takes ownership of the fd."""

    def __init__(self, path: str | os.PathLike[str] | None = None, readonly: bool = False,
                 *, fd: int | None = None) -> None:
        if (path is None) == (fd is None):
            raise ValueError("RawFileDisk needs exactly one of path or fd")
        self.readonly = readonly
        self.path = os.fspath(path) if path is not None else f"fd:{fd}"
        if fd is None:
            assert path is not None
            flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
            fd = os.open(path, flags)
        self._fd: int | None = fd
        # A block device reports st_size 0; seeking to the end works for files and devices.
        size = os.lseek(fd, 0, os.SEEK_END)
        self._size = size

    @classmethod
    def from_fd(cls, fd: int, readonly: bool = False) -> RawFileDisk:
        return cls(None, readonly, fd=fd)

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, f"{self.path} is closed")
        return self._fd

    @property
    def size(self) -> int:
        return self._size

    def read_into(self, offset: int, bufs: Buffers) -> None:
        fd = self.fd
        pending = [memoryview(b).cast("B") for b in bufs if len(b)]
        for _ in range(MAX_SHORT_IO_RETRIES):
            if not pending:
                return
            batch = pending[:IOV_MAX]
            n = os.preadv(fd, batch, offset)
            if n == 0:
                # End of file: what lies beyond reads as zeros.
                for v in pending:
                    v[:] = bytes(len(v))
                return
            offset += n
            pending = _advance(pending, n)
        raise OSError(errno.EIO, f"{self.path}: too many short reads")

    def write_from(self, offset: int, bufs: Buffers) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, f"{self.path} is read-only")
        fd = self.fd
        pending = [memoryview(b).cast("B") for b in bufs if len(b)]
        for _ in range(MAX_SHORT_IO_RETRIES):
            if not pending:
                return
            n = os.pwritev(fd, pending[:IOV_MAX], offset)
            if n == 0:
                raise OSError(errno.EIO, f"{self.path}: write made no progress")
            offset += n
            pending = _advance(pending, n)
            self._size = max(self._size, offset)
        raise OSError(errno.EIO, f"{self.path}: too many short writes")

    def flush(self) -> None:
        if not self.readonly:
            os.fdatasync(self.fd)

    def discard(self, offset: int, length: int) -> bool:
        if self.readonly or length <= 0:
            return False
        fallocate = _libc_fallocate()
        if fallocate is None:
            return False
        rc = fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                       ctypes.c_int64(offset), ctypes.c_int64(length))
        return rc == 0

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"RawFileDisk({self.path!r}, readonly={self.readonly}, size={self._size})"


def _advance(views: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first n bytes of a buffer list (after a partial preadv/pwritev)."""
    i = 0
    while i < len(views) and n >= len(views[i]):
        n -= len(views[i])
        i += 1
    rest = views[i:]
    if rest and n:
        rest[0] = rest[0][n:]
    return rest


_fallocate_fn = None
_fallocate_looked_up = False


def _libc_fallocate():
    global _fallocate_fn, _fallocate_looked_up
    if not _fallocate_looked_up:
        _fallocate_looked_up = True
        try:
            import ctypes.util  # (subprocess, shutil: once, at the first fallocate)

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _fallocate_fn = fn
        except (OSError, AttributeError):
            _fallocate_fn = None
    return _fallocate_fn
