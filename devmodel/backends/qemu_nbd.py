"""Images in any format QEMU knows (qcow2, vmdk, vdi, vhdx, ...), served by Debian's `qemu-nbd`
(package qemu-utils) on a private Unix socket and read through the NBD client (nbd.py).

    server = QemuNbd("disk.qcow2", fmt="qcow2").start()      # or use open_image()
    disk = NbdDisk(server.uri, owner=server)                 # closing the disk stops the server

The socket lives in a fresh 0700 directory (tempfile.mkdtemp), so no other user can connect.
qemu-nbd runs with `--shared=1` (one client) and without `--persistent`, so it also exits by
itself when our connection ends; `stop()` sends SIGTERM (qemu-nbd then flushes and closes the
image: qcow2 metadata is written back), waits, and kills only as a last resort. The format is
always given (`--format`): probing an image's format is how a guest that writes a qcow2 header
into a raw image gets the host to open files it names.

`open_image(path, fmt, readonly, cache)` is the one entry point a machine builder needs: raw
files go to `ThreadedRawDisk`, every other format to qemu-nbd + `NbdDisk`.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from .asyncdisk import CACHE_MODES, AsyncDisk, ThreadedRawDisk
from .nbd import NbdDisk, NbdUri

log = logging.getLogger("devmodel.backends.qemu_nbd")

QEMU_NBD = "qemu-nbd"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
EXPORT_NAME = "disk"
# our cache modes -> qemu-nbd --cache (QEMU's cache=none is O_DIRECT with a writeback cache)
_QEMU_CACHE = {"writeback": "writeback", "writethrough": "writethrough", "direct": "none"}


class QemuNbdError(RuntimeError):
    pass


class QemuNbd:
    """One qemu-nbd process serving one image on a private Unix socket."""

    def __init__(self, image: str | os.PathLike[str], fmt: str = "qcow2", readonly: bool = False,
                 *, cache: str = "writeback", export_name: str = EXPORT_NAME,
                 image_opts: str | None = None, objects: Sequence[str] = (),
                 qemu_nbd: str = QEMU_NBD, pass_fds: Sequence[int] = (),
                 force_share: bool = False) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r}: expected one of {', '.join(CACHE_MODES)}")
        self.image = os.fspath(image)
        self.fmt = fmt
        self.readonly = readonly
        self.cache = cache
        self.export_name = export_name
        self.image_opts = image_opts
        self.objects = list(objects)
        self.qemu_nbd = qemu_nbd
        # fds the child inherits under the same numbers: an image named /dev/fd/N (a QMP
        # fdset's file, which this process may not be able to open by path).
        self.pass_fds = tuple(pass_fds)
        self.force_share = force_share
        self.proc: subprocess.Popen | None = None
        self.tmpdir: str | None = None
        self.socket_path: str | None = None
        self._stderr_path: str | None = None
        self._pid_path: str | None = None

    @property
    def uri(self) -> NbdUri:
        if self.socket_path is None:
            raise QemuNbdError("qemu-nbd is not running")
        return NbdUri(export=self.export_name, socket_path=self.socket_path)

    def command(self) -> list[str]:
        assert self.socket_path is not None
        cmd = [self.qemu_nbd, f"--socket={self.socket_path}", f"--pid-file={self._pid_path}",
               f"--export-name={self.export_name}",
               f"--cache={_QEMU_CACHE[self.cache]}", "--shared=1"]
        for obj in self.objects:
            cmd.append(f"--object={obj}")
        if self.readonly:
            cmd.append("--read-only")
        else:
            cmd.append("--discard=unmap")
        image_opts = self.image_opts
        if image_opts is None and self.force_share and self.readonly:
            # Next to a writer that holds the image's lock: qemu-nbd has no -U/--force-share
            # (qemu-img's), so the file is opened with locking off (QEMU option syntax: a
            # comma in the name doubled).
            name = self.image.replace(",", ",,")
            image_opts = f"driver={self.fmt},file.driver=file,file.filename={name},file.locking=off"
        if image_opts is not None:
            # A full option string (driver=...,file.filename=...): for blkdebug, throttle, ...
            cmd += ["--image-opts", image_opts]
        else:
            cmd += [f"--format={self.fmt}", self.image]
        return cmd

    def start(self, timeout: float = START_TIMEOUT) -> QemuNbd:
        import shutil  # shutil, tempfile: only when a qemu-nbd is started (not for raw)
        import tempfile

        exe = shutil.which(self.qemu_nbd)
        if exe is None:
            raise QemuNbdError(f"{self.qemu_nbd} not found: install Debian's qemu-utils package "
                               f"to use {self.fmt} images")
        if self.image_opts is None and not os.path.exists(self.image):
            raise FileNotFoundError(errno.ENOENT, f"disk image {self.image} does not exist")
        self.tmpdir = tempfile.mkdtemp(prefix="devmodel-nbd-")  # mode 0700
        os.chmod(self.tmpdir, 0o700)
        self.socket_path = os.path.join(self.tmpdir, "nbd.sock")
        self._stderr_path = os.path.join(self.tmpdir, "qemu-nbd.log")
        self._pid_path = os.path.join(self.tmpdir, "qemu-nbd.pid")
        with open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, close_fds=True,
                                         pass_fds=self.pass_fds, start_new_session=True)
        deadline = time.monotonic() + timeout
        # qemu-nbd creates its socket before it opens the image, but writes the pid file only
        # once the image is open and the export exists: both together mean ready. (Probing
        # with a connection would use up the one client --shared=1 allows.)
        while not (os.path.exists(self.socket_path) and _nonempty(self._pid_path)):
            rc = self.proc.poll()
            if rc is not None:
                msg = self.stderr().strip()
                self._cleanup()
                raise QemuNbdError(f"qemu-nbd for {self.image} ({self.fmt}) exited with status {rc}: "
                                   f"{msg or 'no message'}")
            if time.monotonic() > deadline:
                msg = self.stderr().strip()
                self.stop()
                raise QemuNbdError(f"qemu-nbd for {self.image} did not create its socket in "
                                   f"{timeout} s" + (f": {msg}" if msg else ""))
            time.sleep(0.005)
        return self

    def stderr(self) -> str:
        if self._stderr_path is None:
            return ""
        try:
            with open(self._stderr_path, errors="replace") as f:
                return f.read(64 << 10)
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop the server cleanly (it flushes the image), then remove the private directory."""
        proc = self.proc
        rc = None
        if proc is not None:
            try:
                # Without --persistent it exits once our client disconnects; give it a moment.
                rc = proc.wait(0.5)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.error("qemu-nbd (pid %d) ignored SIGTERM for %.0f s: killing it", proc.pid, timeout)
                    proc.kill()
                    rc = proc.wait()
            if rc not in (0, -signal.SIGTERM):
                log.warning("qemu-nbd for %s exited with %s: %s", self.image, rc, self.stderr().strip())
            self.proc = None
        self._cleanup()
        return rc

    close = stop

    def _cleanup(self) -> None:
        if self.tmpdir is not None:
            import shutil

            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> QemuNbd:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def open_qemu_nbd_disk(image: str | os.PathLike[str], fmt: str = "qcow2", readonly: bool = False,
                       cache: str = "writeback", *, pass_fds: Sequence[int] = (),
                       force_share: bool = False, **kw) -> NbdDisk:
    """Start qemu-nbd for `image` and connect; the disk owns the server (close stops it)."""
    server = QemuNbd(image, fmt, readonly, cache=cache, pass_fds=pass_fds,
                     force_share=force_share).start()
    try:
        disk = NbdDisk(server.uri, readonly, owner=server, connect_retry=2.0, **kw)
        # What query-block reports: the image and its format, not the NBD socket.
        disk.path, disk.format = os.fspath(image), fmt
        return disk
    except BaseException as e:
        msg = server.stderr().strip()
        server.stop()
        if msg and isinstance(e, OSError):
            raise OSError(e.errno, f"{e.strerror}; qemu-nbd said: {msg}") from None
        raise


def open_image(path: str | os.PathLike[str], fmt: str = "raw", readonly: bool = False,
               cache: str = "writeback", *, force_share: bool = False, **kw) -> AsyncDisk:
    """A disk for an image: raw through the thread pool, anything else through qemu-nbd.
    `force_share` (with `readonly`): open an image another process holds the write lock of,
    as `qemu-img info -U` does (a raw file takes no lock here)."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"disk image {os.fspath(path)} does not exist")
    if fmt == "raw":
        return ThreadedRawDisk(path, cache, readonly, **kw)
    return open_qemu_nbd_disk(path, fmt, readonly, cache, force_share=force_share, **kw)


def open_image_fd(fd: int, name: str, fmt: str = "raw", readonly: bool = False,
                  cache: str = "writeback", **kw) -> AsyncDisk:
    """`open_image` for a file the caller already opened (a QMP fdset's): the same backends
    as start-up disks. The fd stays the caller's (a raw disk works on a duplicate; qemu-nbd
    opens the file through /dev/fd/N in its own process). `name` is what the disk reports
    as its path."""
    if fmt == "raw":
        dup = os.dup(fd)
        try:
            return ThreadedRawDisk(name, cache, readonly, fd=dup, **kw)
        except BaseException:
            os.close(dup)
            raise
    disk = open_qemu_nbd_disk(f"/dev/fd/{fd}", fmt, readonly, cache, pass_fds=(fd,), **kw)
    disk.path = name
    return disk
