"""The NBD client and NbdDisk against a real qemu-nbd (Debian qemu-utils) serving real images
made with qemu-img: data integrity checked with `qemu-img compare` and `qemu-img check`,
simple and structured replies, pipelining, read-only exports, server errors (blkdebug) and a
throttled (slow) export that must not stall the event loop."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from devmodel.backends.asyncdisk import LoopCompletions, QueuedCompletions
from devmodel.backends.nbd import NbdClient, NbdDisk, NbdUri, parse_nbd_uri
from devmodel.backends.qemu_nbd import QemuNbd, QemuNbdError, open_image, open_qemu_nbd_disk

MiB = 1 << 20
needs_qemu = pytest.mark.skipif(shutil.which("qemu-nbd") is None or shutil.which("qemu-img") is None,
                                reason="needs qemu-nbd and qemu-img (Debian qemu-utils)")


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    img = tmp_path / "disk.qcow2"
    r = qemu_img("create", "-q", "-f", "qcow2", str(img), "32M")
    assert r.returncode == 0, r.stderr
    return img


# ---- URIs -----------------------------------------------------------------------------------
def test_parse_uris() -> None:
    u = parse_nbd_uri("nbd+unix:///disk?socket=/run/x/nbd.sock")
    assert u == NbdUri(export="disk", socket_path="/run/x/nbd.sock")
    assert parse_nbd_uri(str(u)) == u
    assert parse_nbd_uri("nbd+unix:///?socket=/s").export == ""
    t = parse_nbd_uri("nbd://example.org/exp%20one")
    assert (t.host, t.port, t.export) == ("example.org", 10809, "exp one")
    t6 = parse_nbd_uri("nbd://[::1]:10900/e")
    assert (t6.host, t6.port) == ("::1", 10900)
    assert parse_nbd_uri(str(t6)) == t6


@pytest.mark.parametrize("uri, why", [
    ("/just/a/path", "expected nbd://"),
    ("http://h/e", "is not nbd or nbd"),
    ("nbds://h/e", "no TLS"),
    ("nbd+unix:///e", "exactly one \\?socket"),
    ("nbd+unix://host/e?socket=/s", "takes no host"),
    ("nbd+unix:///e?socket=/s&x=1", "unknown query"),
    ("nbd:///e", "no host"),
    ("nbd://h:99999/e", "bad port"),
    ("nbd://h/e?socket=/s", "unknown query"),
])
def test_bad_uris(uri: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_nbd_uri(uri)


# ---- against qemu-nbd ----------------------------------------------------------------------
@needs_qemu
def test_qcow2_integrity(qcow2: Path, tmp_path: Path) -> None:
    """Random scattered writes (some FUA), write-zeroes, trims and flushes through the client;
    a model of the disk is kept in memory and written out as a raw copy; qemu-img compare then
    says the qcow2 holds exactly that, and qemu-img check finds it clean."""
    rng = random.Random(4)
    model = bytearray(32 * MiB)
    disk = open_qemu_nbd_disk(qcow2, "qcow2")
    try:
        c = disk.client
        assert disk.size == 32 * MiB and c.structured
        assert c.can_flush and c.can_trim and c.can_write_zeroes and not disk.readonly
        q = QueuedCompletions()
        disk.attach(q)
        results: list = []
        for i in range(60):
            off = rng.randrange(0, 32 * MiB // 512 - 300) * 512
            n = rng.randrange(1, 300) * 512
            data = rng.randbytes(n)
            cut = rng.randrange(1, n) if n > 1 else n
            views = [memoryview(bytearray(data[:cut])), memoryview(bytearray(data[cut:]))]
            kind = i % 10
            if kind == 7:
                # TRIM leaves partial clusters' contents unspecified; whole 64 KiB qcow2
                # clusters (no backing file) read back as zeros.
                off, n = off // 65536 * 65536, 65536 * rng.randrange(1, 4)
                disk.submit_discard(off, n, results.append)
                model[off : off + n] = bytes(n)
            elif kind == 8:
                disk.submit_write_zeroes(off, n, results.append)
                model[off : off + n] = bytes(n)
            else:
                disk.submit_write(off, views, results.append, fua=kind == 3)
                model[off : off + n] = data
            assert q.wait(1)
            q.run_pending()
            if i % 20 == 19:
                disk.submit_flush(results.append)
                assert q.wait(1)
                q.run_pending()
        assert results == [None] * len(results) and len(results) == 63
        # read everything back in pipelined 1 MiB pieces straight into one big buffer
        back = bytearray(32 * MiB)
        mv = memoryview(back)
        for batch in range(2):  # the queue depth is 16
            for i in range(batch * 16, batch * 16 + 16):
                disk.submit_read(i * MiB, [mv[i * MiB : i * MiB + 100], mv[i * MiB + 100 : (i + 1) * MiB]],
                                 results.append)
            assert q.wait(16)
            q.run_pending()
        assert results[-32:] == [None] * 32
        assert back == model
    finally:
        disk.close()
    raw = tmp_path / "copy.raw"
    raw.write_bytes(model)
    r = qemu_img("compare", "-f", "qcow2", "-F", "raw", str(qcow2), str(raw))
    assert r.returncode == 0, r.stdout + r.stderr
    r = qemu_img("check", "-f", "qcow2", str(qcow2))
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout + r.stderr


@needs_qemu
def test_holes_read_as_zero(qcow2: Path) -> None:
    disk = open_qemu_nbd_disk(qcow2, "qcow2")
    try:
        disk.write_from(MiB, [b"\x55" * 4096])
        buf = bytearray(b"\xff" * (2 * MiB))  # unallocated around the data: hole chunks
        disk.read_into(0, [buf])
        assert buf[:MiB] == bytes(MiB) and buf[MiB : MiB + 4096] == b"\x55" * 4096
        assert buf[MiB + 4096 :] == bytes(MiB - 4096)
    finally:
        disk.close()


@needs_qemu
async def test_simple_replies_pipelining_and_split(qcow2: Path) -> None:
    """The client on the test's own loop: no structured replies (simple reply fallback), 64
    reads in flight at once, and a read larger than the payload limit split in pieces."""
    with QemuNbd(qcow2, "qcow2") as server:
        for _ in range(200):
            try:
                client = await NbdClient.connect(server.uri, structured=False)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.01)
        assert not client.structured
        data = os.urandom(4 * MiB)
        await client.write(0, [memoryview(data)], fua=True)
        await client.flush()
        bufs = [bytearray(65536) for _ in range(64)]
        await asyncio.gather(*(client.read_into(i * 65536, [b]) for i, b in enumerate(bufs)))
        assert b"".join(bufs) == data
        client.max_payload = 256 * 1024  # force 16 requests for one 4 MiB read
        big = bytearray(4 * MiB)
        await client.read_into(0, [memoryview(big)[:3], memoryview(big)[3:]])
        assert big == data
        await client.trim(0, MiB)
        await client.write_zeroes(MiB, MiB, no_hole=True)
        z = bytearray(b"\1" * (2 * MiB))
        await client.read_into(0, [z])
        assert z == bytes(2 * MiB)
        with pytest.raises(OSError) as e:
            await client.read_into(32 * MiB - 512, [bytearray(1024)])
        assert e.value.errno == errno.EINVAL
        await client.close()


@needs_qemu
def test_readonly_export(qcow2: Path) -> None:
    disk = open_qemu_nbd_disk(qcow2, "qcow2", readonly=True)
    try:
        assert disk.readonly and disk.client.readonly
        with pytest.raises(OSError) as e:
            disk.submit_write(0, [b"x" * 512], lambda err: None)
        assert e.value.errno == errno.EROFS
        with pytest.raises(OSError):
            disk.write_from(0, [b"x" * 512])
        buf = bytearray(512)
        disk.read_into(0, [buf])
        assert buf == bytes(512)
    finally:
        disk.close()


@needs_qemu
def test_server_errors_become_oserror(tmp_path: Path) -> None:
    """blkdebug makes qemu's reads of sector 8 fail with EIO and its writes with ENOSPC.
    A write error arrives as a structured ERROR chunk; with simple replies a read error is an
    error reply; either way done() gets OSError(errno) and the connection stays usable."""
    img = tmp_path / "r.img"
    qemu_img("create", "-q", "-f", "raw", str(img), "1M")
    opts = ("driver=raw,file.driver=blkdebug,"
            "file.inject-error.0.event=read_aio,file.inject-error.0.errno=5,file.inject-error.0.sector=8,"
            "file.inject-error.1.event=write_aio,file.inject-error.1.errno=28,file.inject-error.1.sector=16,"
            f"file.image.filename={img}")
    for structured in (True, False):
        server = QemuNbd(img, "raw", image_opts=opts).start()
        q = QueuedCompletions()
        disk = NbdDisk(server.uri, owner=server, connect_retry=2, completions=q, structured=structured)
        try:
            results: list = []
            disk.submit_write(16 * 512, [b"w" * 512], results.append)
            assert q.wait(1)
            q.run_pending()
            assert isinstance(results[0], OSError) and results[0].errno == errno.ENOSPC
            disk.submit_write(0, [b"v" * 512], results.append)  # the connection survived
            assert q.wait(1)
            q.run_pending()
            assert results[1] is None
            if not structured:
                # (qemu 7.2 drops the connection on a read error under structured replies)
                disk.submit_read(8 * 512, [bytearray(512)], results.append)
                assert q.wait(1)
                q.run_pending()
                assert isinstance(results[2], OSError) and results[2].errno == errno.EIO
                buf = bytearray(512)
                disk.read_into(0, [buf])
                assert buf == b"v" * 512
        finally:
            disk.close()


@needs_qemu
def test_read_error_that_drops_connection(tmp_path: Path) -> None:
    """A server that hangs up mid-request (qemu-nbd 7.2 on a structured read error): the
    request fails with EIO, later ones fail at once, nothing hangs."""
    img = tmp_path / "r.img"
    qemu_img("create", "-q", "-f", "raw", str(img), "1M")
    opts = ("driver=raw,file.driver=blkdebug,file.inject-error.0.event=read_aio,"
            f"file.inject-error.0.errno=5,file.image.filename={img}")
    server = QemuNbd(img, "raw", image_opts=opts).start()
    disk = NbdDisk(server.uri, owner=server, connect_retry=2)
    try:
        with pytest.raises(OSError) as e:
            disk.read_into(0, [bytearray(512)])
        assert e.value.errno == errno.EIO
        results: list = []
        disk.submit_read(0, [bytearray(512)], results.append)
        assert results[0].errno == errno.EIO
    finally:
        disk.close()


@needs_qemu
async def test_throttled_export_does_not_stall_loop(tmp_path: Path) -> None:
    """qemu's throttle filter at 256 KiB/s: a 256 KiB read after a first one takes about a
    second; the test's loop keeps ticking and gets done() on its own thread."""
    img = tmp_path / "slow.img"
    img.write_bytes(b"\1" * (4 * MiB))  # allocated: a sparse file would be answered with holes
    server = QemuNbd(img, "raw", image_opts=f"driver=throttle,throttle-group=tg0,file.driver=raw,"
                                            f"file.file.filename={img}",
                     objects=["throttle-group,id=tg0,limits.bps-read=262144"]).start()
    disk = await asyncio.to_thread(NbdDisk, server.uri, owner=server, connect_retry=2)
    loop = asyncio.get_running_loop()
    flushed = []
    disk.attach(LoopCompletions(loop, lambda: flushed.append(1)))
    try:
        fut = loop.create_future()
        buf = bytearray(256 * 1024)
        thread = threading.get_ident()
        t0 = time.monotonic()
        for _ in range(2):
            fut = loop.create_future()
            disk.submit_read(0, [buf], lambda err, f=fut: f.set_result((err, threading.get_ident())))
            ticks = 0
            while not fut.done():
                await asyncio.sleep(0.01)
                ticks += 1
            assert fut.result() == (None, thread)
        elapsed = time.monotonic() - t0
        assert elapsed > 0.5 and ticks >= 20, (elapsed, ticks)
        assert flushed
    finally:
        await asyncio.to_thread(disk.close)


@needs_qemu
def test_qemu_nbd_failures_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        QemuNbd(tmp_path / "missing.qcow2").start()
    bad = tmp_path / "notqcow.img"
    bad.write_bytes(b"\0" * 65536)
    with pytest.raises((QemuNbdError, OSError), match="qemu-nbd"):
        open_qemu_nbd_disk(bad, "qcow2")
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "nope.img", "raw")


@needs_qemu
def test_qemu_nbd_private_socket_and_stop(qcow2: Path) -> None:
    server = QemuNbd(qcow2, "qcow2").start()
    assert server.tmpdir is not None
    assert os.stat(server.tmpdir).st_mode & 0o777 == 0o700
    pid, tmpdir = server.proc.pid, server.tmpdir
    disk = NbdDisk(server.uri, owner=server, connect_retry=2)
    disk.write_from(0, [b"q" * 512])
    disk.close()
    assert server.proc is None and not os.path.exists(tmpdir)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    r = qemu_img("check", str(qcow2))
    assert r.returncode == 0, r.stdout


@needs_qemu
def test_open_image_formats(tmp_path: Path, qcow2: Path) -> None:
    raw = tmp_path / "r.img"
    raw.write_bytes(b"\1" * 65536)
    for path, fmt in ((raw, "raw"), (qcow2, "qcow2")):
        d = open_image(path, fmt)
        try:
            d.write_from(512, [b"z" * 512])
            buf = bytearray(1024)
            d.read_into(0, [buf])
            assert buf[512:] == b"z" * 512
        finally:
            d.close()
