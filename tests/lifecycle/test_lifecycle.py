"""--pidfile, --ready-fd, --daemonize, exit codes, the journal, and many daemons on one host."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from lifecycle_support import DEVMODEL, RawQmp, devmodel, read_all, start_ready, stop

from devmodel.client import Hypervisor
from devmodel.lifecycle import JOURNAL_ENV, journal_field


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise TimeoutError(f"pid {pid} still alive")


def test_ready_fd_after_the_sockets_listen(tmp_path):
    sock, qmp = tmp_path / "dm.sock", tmp_path / "qmp.sock"
    proc, _ = start_ready(["--domid", "1", "--socket", str(sock), "--qmp", str(qmp)])
    try:
        # At READY both sockets accept at once: no polling for them.
        assert sock.is_socket() and qmp.is_socket()
        q = RawQmp(str(qmp))
        assert q.execute("query-status")["return"]["status"] == "running"
        q.close()
        with Hypervisor.connect(str(sock)) as hv:
            assert hv.pci_cfg_read(0, 0, 4) == 0x12378086
        assert proc.wait(15) == 0  # the hypervisor went: a clean exit
    finally:
        stop(proc)


def test_ready_fd_closes_without_ready_on_failure(tmp_path):
    r, w = os.pipe()
    proc = subprocess.Popen([*DEVMODEL, "run", "--domid", "1", "--socket", str(tmp_path / "s"),
                             "--disk", "format=raw,vdev=hda,target=/nonexistent.img",
                             "--ready-fd", str(w)], pass_fds=(w,), stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    os.close(w)
    assert read_all(r, 30) == b""
    os.close(r)
    assert proc.wait(30) == 1
    assert b"/nonexistent.img" in proc.stderr.read()
    proc.stderr.close()


def test_ready_fd_must_be_open(tmp_path):
    r = devmodel("run", "--domid", "1", "--socket", str(tmp_path / "s"), "--ready-fd", "57")
    assert r.returncode == 1 and "--ready-fd 57: not an open file descriptor" in r.stderr


def test_pidfile_written_refused_and_removed(tmp_path):
    pidfile = tmp_path / "dm.pid"
    proc, _ = start_ready(["--domid", "1", "--socket", str(tmp_path / "a.sock"),
                           "--pidfile", str(pidfile)])
    try:
        assert pidfile.read_text() == f"{proc.pid}\n"
        # A second daemon on the same pidfile is refused while the first lives.
        r = devmodel("run", "--domid", "2", "--socket", str(tmp_path / "b.sock"),
                     "--pidfile", str(pidfile))
        assert r.returncode == 1
        assert f"devmodel is already running as pid {proc.pid}" in r.stderr
        assert not (tmp_path / "b.sock").exists()
        assert pidfile.read_text() == f"{proc.pid}\n"
    finally:
        assert stop(proc) == 0
    assert not pidfile.exists()


def test_stale_pidfile_is_replaced(tmp_path):
    pidfile = tmp_path / "dm.pid"
    sleeper = subprocess.Popen(["sleep", "30"])  # alive, but not a devmodel
    try:
        for stale in (str(sleeper.pid), "999999999", "garbage"):
            pidfile.write_text(stale + "\n")
            proc, _ = start_ready(["--domid", "1", "--socket", str(tmp_path / "a.sock"),
                                   "--pidfile", str(pidfile)])
            assert pidfile.read_text() == f"{proc.pid}\n"
            assert stop(proc) == 0
            assert not pidfile.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_daemonize_returns_once_ready(tmp_path):
    sock, qmp, pidfile = tmp_path / "dm.sock", tmp_path / "qmp.sock", tmp_path / "dm.pid"
    log = tmp_path / "dm.log"
    r = devmodel("run", "--domid", "3", "--socket", str(sock), "--qmp", str(qmp),
                 "--pidfile", str(pidfile), "--log-file", str(log), "--daemonize")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    pid = int(pidfile.read_text())
    try:
        assert sock.is_socket() and qmp.is_socket()  # ready when the parent returned
        assert os.getsid(pid) != os.getsid(0)  # its own session
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
        q = RawQmp(str(qmp))
        assert q.execute("query-status")["return"]["status"] == "running"
        q.execute("quit")
        q.close()
        _wait_gone(pid)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not pidfile.exists() and not sock.exists()
    assert "ready for the hypervisor" in log.read_text()


def test_daemonize_reports_the_daemon_error(tmp_path):
    t0 = time.monotonic()
    r = devmodel("run", "--domid", "3", "--socket", str(tmp_path / "dm.sock"), "--daemonize",
                 "--disk", "format=raw,vdev=hda,target=/nonexistent.img")
    assert r.returncode == 1
    assert "/nonexistent.img" in r.stderr
    assert time.monotonic() - t0 < 20
    r = devmodel("run", "--domid", "3", "--socket", "/nonexistent-dir/dm.sock", "--daemonize")
    assert r.returncode == 1 and "--socket /nonexistent-dir/dm.sock" in r.stderr


def test_exit_codes(tmp_path):
    assert devmodel("run", "--domid", "1").returncode == 2  # usage
    assert devmodel("run", "--socket", str(tmp_path / "s")).returncode == 2
    assert devmodel("run", "--domid", "x", "--socket", "s").returncode == 2
    r = devmodel("run", "--domid", "1", "--socket", str(tmp_path / "s"), "--vga-mem", "3")
    assert r.returncode == 1 and "--vga-mem 3" in r.stderr  # configuration
    proc, _ = start_ready(["--domid", "1", "--socket", str(tmp_path / "s")])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0  # clean
    proc.stderr.close()


def test_journal_missing_is_a_clear_error(tmp_path):
    env = dict(os.environ, **{JOURNAL_ENV: str(tmp_path / "no-journal")})
    r = devmodel("run", "--domid", "1", "--socket", str(tmp_path / "s"), "--log-file",
                 "journal", env=env)
    assert r.returncode == 1
    assert "--log-file journal: no systemd journal" in r.stderr


def test_journal_native_protocol(tmp_path):
    path = str(tmp_path / "journal.sock")
    jsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    jsock.bind(path)
    jsock.settimeout(0.2)
    got: list[bytes] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            try:
                got.append(jsock.recv(1 << 20))
            except TimeoutError:
                continue

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    env = dict(os.environ, **{JOURNAL_ENV: path})
    r, w = os.pipe()
    proc = subprocess.Popen([*DEVMODEL, "run", "--domid", "9", "--socket",
                             str(tmp_path / "dm.sock"), "--log-file", "journal",
                             "--ready-fd", str(w)], pass_fds=(w,), env=env,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(w)
    try:
        assert read_all(r, 30) == b"READY\n"
    finally:
        os.close(r)
        assert stop(proc) == 0
        time.sleep(0.3)
        done.set()
        t.join()
        jsock.close()
    records = [_parse_journal(d) for d in got]
    ready = [f for f in records if f["MESSAGE"] == "ready for the hypervisor"]
    assert ready, records
    f = ready[0]
    assert f["PRIORITY"] == "6" and f["SYSLOG_IDENTIFIER"] == "devmodel"
    assert f["SYSLOG_PID"] == str(proc.pid) and f["LOGGER"] == "devmodel"
    assert any("serving domain 9" in f["MESSAGE"] for f in records)


def _parse_journal(data: bytes) -> dict[str, str]:
    fields = {}
    while data:
        line, sep, rest = data.partition(b"\n")
        if b"=" in line:
            k, _, v = line.partition(b"=")
            data = rest
        else:  # KEY\n<u64 le length><value>\n
            k = line
            (n,) = struct.unpack_from("<Q", rest)
            v = rest[8:8 + n]
            assert rest[8 + n:9 + n] == b"\n"
            data = rest[9 + n:]
        fields[k.decode()] = v.decode()
    return fields


def test_journal_field_encoding():
    assert journal_field("MESSAGE", "hello") == b"MESSAGE=hello\n"
    enc = journal_field("MESSAGE", "two\nlines")
    assert enc == b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    assert _parse_journal(enc + b"PRIORITY=3\n") == {"MESSAGE": "two\nlines", "PRIORITY": "3"}


@pytest.mark.parametrize("n", [4])
def test_many_daemons_on_one_host(tmp_path, n):
    """n daemons started at once, each with its own socket, pidfile and QMP socket, each
    served on its own: a QMP stop on one leaves the others running, SIGTERM each alone."""
    procs: list[subprocess.Popen | None] = [None] * n
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            procs[i], _ = start_ready([
                "--domid", str(10 + i), "--socket", str(tmp_path / f"dm{i}.sock"),
                "--qmp", str(tmp_path / f"qmp{i}.sock"), "--pidfile", str(tmp_path / f"dm{i}.pid"),
                "--name", f"guest{i}", "--log-file", str(tmp_path / f"dm{i}.log"),
                "--nic", f"model=e1000,backend=null,mac=00:16:3e:00:00:{i + 1:02x}",
                "--usb", "tablet", "--serial", "pty"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        pids = {int((tmp_path / f"dm{i}.pid").read_text()) for i in range(n)}
        assert pids == {p.pid for p in procs}
        hvs = [Hypervisor.connect(str(tmp_path / f"dm{i}.sock"), domid=10 + i) for i in range(n)]
        qmps = [RawQmp(str(tmp_path / f"qmp{i}.sock")) for i in range(n)]
        ptys = set()
        for i, q in enumerate(qmps):
            assert q.execute("query-name")["return"] == {"name": f"guest{i}"}
            chardevs = q.execute("query-chardev")["return"]
            ptys |= {c["filename"] for c in chardevs if c["filename"].startswith("pty:")}
        assert len(ptys) == n  # each its own pty
        qmps[1].execute("stop")
        states = [q.execute("query-status")["return"]["status"] for q in qmps]
        assert states == ["running", "paused", "running", "running"][:n]
        for hv in hvs:
            assert hv.pci_cfg_read(0, 0, 4) == 0x12378086
        for q in qmps:
            q.close()
        for hv in hvs:
            hv.close()
        for i, p in enumerate(procs):
            assert p.wait(15) == 0, i  # each exits when its own hypervisor goes
            assert not (tmp_path / f"dm{i}.pid").exists()
    finally:
        for p in procs:
            if p is not None:
                stop(p)


@pytest.mark.parametrize("gap_ms", [0.0, 0.5, 2.0])
def test_sigterm_storm_during_shutdown_exits_clean(tmp_path, gap_ms):
    """A second (third, ...) SIGTERM while the daemon is already shutting down must not kill
    it with the default action (-15): a toolstack that repeats its kill gets exit 0, and every
    write the guest saw acknowledged is in the file."""
    from qmp.qmp_support import ide_dma_write  # tests/qmp: the IDE register dances

    from devmodel.client import DaemonProcess

    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 512))
    proc = DaemonProcess.start(["--disk", f"format=raw,vdev=hda,access=rw,target={disk}"])
    payload = bytes((i * 13 + 5) & 0xFF for i in range(4 * 512))
    with Hypervisor.connect(proc.socket_path, process=proc) as hv:
        hv.add_ram(1 << 20)
        assert ide_dma_write(hv, 8, payload) & 0x01 == 0  # acknowledged without error
        # Keep signalling until the process is gone: some SIGTERMs land in every window of
        # the teardown (loop running, handlers being removed, loop closed, interpreter exit).
        proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while proc.proc.poll() is None and time.monotonic() < deadline:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(gap_ms / 1000)
        rc = proc.wait_exit()
    assert rc == 0, f"exit {rc}; log:\n{proc.log()}"
    assert disk.read_bytes()[8 * 512:12 * 512] == payload


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
