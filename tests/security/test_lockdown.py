"""Lock-down of a real daemon subprocess (docs/security.md): peer credentials (--allow-uid),
--runas, --chroot, --max-memory, --seccomp. Most of these need root (they are skipped
otherwise), as the toolstack that starts a device model is."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devmodel import lockdown
from devmodel.client import DaemonProcess, Hypervisor
from devmodel.wire import codec
from devmodel.wire.constants import ErrorCode, MsgType
from devmodel.wire.framing import Deframer

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="lock-down needs root")
NOBODY = 65534
OTHER_UID = 12345
SECTOR = 512
I440FX_ID = 0x12378086


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def limits(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return f.read()


def make_image(path: Path, nsectors: int = 64) -> bytes:
    data = b"".join(bytes([i & 0xFF]) * SECTOR for i in range(nsectors))
    path.write_bytes(data)
    return data


def disk_args(img: Path) -> list[str]:
    return ["--disk", f"format=raw,vdev=hda,access=rw,target={img}"]


# ---- guest-side ATA PIO on the primary channel -------------------------------------------------
def _wait(hv: Hypervisor, mask: int, want: int) -> int:
    deadline = time.monotonic() + 5
    while True:
        s = hv.inb(0x1F7)
        if s & mask == want:
            return s
        if time.monotonic() > deadline:
            raise TimeoutError(f"ATA status {s:#x}")
        time.sleep(0.001)


def _taskfile(hv: Hypervisor, lba: int, cmd: int) -> None:
    hv.outb(0x1F6, 0xE0)
    hv.outb(0x1F2, 1)
    hv.outb(0x1F3, lba & 0xFF)
    hv.outb(0x1F4, (lba >> 8) & 0xFF)
    hv.outb(0x1F5, (lba >> 16) & 0xFF)
    hv.outb(0x1F7, cmd)


def ata_read(hv: Hypervisor, lba: int) -> bytes:
    _taskfile(hv, lba, 0x20)  # READ SECTORS
    _wait(hv, 0x89, 0x08)
    return b"".join(hv.inw(0x1F0).to_bytes(2, "little") for _ in range(SECTOR // 2))


def ata_write(hv: Hypervisor, lba: int, data: bytes) -> None:
    _taskfile(hv, lba, 0x30)  # WRITE SECTORS
    _wait(hv, 0x89, 0x08)
    for i in range(0, SECTOR, 2):
        hv.outw(0x1F0, int.from_bytes(data[i : i + 2], "little"))
    _wait(hv, 0x89, 0x00)
    hv.outb(0x1F7, 0xE7)  # FLUSH CACHE
    _wait(hv, 0x89, 0x00)


def check_disk_io(hv: Hypervisor, img: Path, data: bytes) -> None:
    assert ata_read(hv, 3) == data[3 * SECTOR : 4 * SECTOR]
    new = bytes(range(256)) * 2
    ata_write(hv, 5, new)
    assert ata_read(hv, 5) == new
    with open(img, "rb") as f:
        f.seek(5 * SECTOR)
        assert f.read(SECTOR) == new


# ---- raw peers ---------------------------------------------------------------------------------
def first_message(sock: socket.socket):
    d = Deframer()
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        d.feed(data, [])
        for m in d.messages():
            return m


def connect_as(path: str, uid: int) -> tuple[int, str, bool]:
    """From a child running as `uid`: connect, read the first message; (ERROR code, text,
    closed after it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.settimeout(0.5)  # a refused peer hears at once; an admitted one says HELLO first
            try:
                m = first_message(s)
            except TimeoutError:
                s.settimeout(5)
                s.sendall(codec.frame(MsgType.HELLO, codec.HELLO.pack(1, 4096, 1, 0, 1, 0), tag=1))
                m = first_message(s)
            if m is not None and m.type == MsgType.ERROR:
                code, text = codec.decode_error(m.payload)
            else:
                code, text = -1, MsgType(m.type).name if m is not None else ""
            closed = code >= 0 and s.recv(1) == b""
            os.write(w, json.dumps([code, text, closed]).encode())
        except BaseException as e:
            os.write(w, json.dumps([-2, repr(e), False]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    return tuple(out)


def qmp_first(path: str) -> tuple[dict, bool]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "closed without a message"
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    closed = not rest and s.recv(1) == b""
    s.close()
    return json.loads(line), closed


def qmp_session(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    assert "QMP" in qmp_recv(s)
    assert qmp_cmd(s, "qmp_capabilities") == {"return": {}}
    return s


_qmp_bufs: dict[int, bytes] = {}


def qmp_recv(s: socket.socket) -> dict:
    while True:
        buf = _qmp_bufs.get(s.fileno(), b"")
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        line, _qmp_bufs[s.fileno()] = buf.split(b"\r\n", 1)
        msg = json.loads(line)
        if "event" not in msg:
            return msg


def qmp_cmd(s: socket.socket, name: str, args: dict | None = None, fds: list[int] | None = None):
    msg: dict = {"execute": name}
    if args is not None:
        msg["arguments"] = args
    data = json.dumps(msg).encode() + b"\r\n"
    if fds:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        s.sendall(data)
    return qmp_recv(s)


# ---- --allow-uid -------------------------------------------------------------------------------
@root_only
def test_explicit_allow_uid_refuses_root_on_both_sockets(tmp_path):
    """--allow-uid given: only the uids listed, root is not implicit. A refused peer gets an
    ERROR (BAD_STATE) naming its uid, then the close; the daemon keeps waiting for an
    admitted hypervisor."""
    qmp = str(tmp_path / "qmp.sock")
    proc = DaemonProcess.start(["--allow-uid", str(OTHER_UID), "--qmp", qmp])
    try:
        code, text, closed = connect_as(proc.socket_path, 0)
        assert code == ErrorCode.BAD_STATE and "uid 0 " in text and closed
        reply, closed = qmp_first(qmp)
        assert reply["error"]["class"] == "GenericError" and "uid 0 " in reply["error"]["desc"]
        assert closed
        assert proc.proc.poll() is None
        log = proc.log()
        assert "refused a connection on the hypervisor socket" in log and "uid 0 is not" in log
        assert f"refused a connection on QMP {qmp}" in log
    finally:
        assert proc.stop() == 0


@root_only
def test_default_admits_root_and_refuses_another_uid(tmp_path):
    """The default: the daemon's own uid (root here) and root. Another local user is refused
    by its credentials even where the socket's mode would let it connect."""
    proc = DaemonProcess.start([])
    try:
        os.chmod(proc.tmpdir, 0o755)
        os.chmod(proc.socket_path, 0o666)  # a mistake of the toolstack's: creds still hold
        code, text, closed = connect_as(proc.socket_path, OTHER_UID)
        assert code == ErrorCode.BAD_STATE and f"uid {OTHER_UID} " in text and closed
        hv = Hypervisor.connect(proc.socket_path, process=proc)
        hv.add_ram(16 << 20)
        assert hv.pci_cfg_read(0, 0, 4) == I440FX_ID  # root is served
        hv.close()
        assert proc.wait_exit() == 0
    finally:
        proc.stop()


@root_only
def test_allow_uid_admits_the_listed_uid(tmp_path):
    proc = DaemonProcess.start(["--allow-uid", str(OTHER_UID)])
    try:
        os.chmod(proc.tmpdir, 0o755)
        os.chmod(proc.socket_path, 0o666)
        code, text, _ = connect_as(proc.socket_path, OTHER_UID)
        assert (code, text) == (-1, "HELLO")  # admitted: its HELLO is answered
        assert "refused" not in proc.log()
    finally:
        proc.stop()


def test_refusal_is_none_for_an_admitted_peer():
    a, b = socket.socketpair()
    with a, b:
        assert lockdown.refusal(a, frozenset({os.geteuid()}), "test") is None
        assert lockdown.refusal(a, None, "test") is None
        why = lockdown.refusal(a, frozenset({os.geteuid() + 1}), "test")
        assert why == f"uid {os.geteuid()} is not allowed (--allow-uid)"
        pid, uid, gid = lockdown.peer_creds(a)
        assert (pid, uid, gid) == (os.getpid(), os.geteuid(), os.getegid())


# ---- --runas, --chroot -------------------------------------------------------------------------
@root_only
def test_runas_nobody_still_serves_ioreqs_and_disk_io(tmp_path):
    img = tmp_path / "disk.img"
    data = make_image(img)
    hv = Hypervisor.spawn(["--domid", "1", "--runas", "nobody", *disk_args(img)], ram=16 << 20)
    try:
        st = status(hv.process.pid)
        assert st["Uid"].split() == [str(NOBODY)] * 4
        assert st["Gid"].split() == [str(NOBODY)] * 4
        assert st["Groups"] == ""
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
        assert st["NoNewPrivs"] == "1"
        check_disk_io(hv, img, data)
        assert "locked down: runas=nobody" in hv.process.log()
    finally:
        hv.close()
    assert hv.process.wait_exit() == 0


@root_only
def test_chroot_and_runas(tmp_path):
    """In an empty chroot: ioreqs, disk I/O on the image opened before, QMP queries. A medium
    named by path is not reachable any more; through add-fd it is."""
    jail = tmp_path / "jail"
    jail.mkdir()
    img = tmp_path / "disk.img"
    data = make_image(img)
    iso = tmp_path / "a.iso"
    iso.write_bytes(bytes(2048 * 16))
    qmp = str(tmp_path / "qmp.sock")
    hv = Hypervisor.spawn(["--domid", "1", "--chroot", str(jail), "--runas", "nobody", "--qmp", qmp,
                           *disk_args(img),
                           "--disk", f"vdev=hdc,devtype=cdrom,format=raw,access=ro,target={iso}"],
                          ram=16 << 20)
    try:
        pid = hv.process.pid
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
        assert os.readlink(f"/proc/{pid}/cwd") == str(jail)
        assert status(pid)["Uid"].split()[0] == str(NOBODY)
        check_disk_io(hv, img, data)
        s = qmp_session(qmp)
        assert qmp_cmd(s, "query-status")["return"]["status"] == "running"
        assert len(qmp_cmd(s, "query-block")["return"]) == 2
        other = tmp_path / "b.iso"
        other.write_bytes(bytes(2048 * 32))
        r = qmp_cmd(s, "blockdev-change-medium", {"id": "ide-5632", "filename": str(other),
                                                  "format": "raw"})
        assert r["error"]["class"] == "GenericError"
        fd = os.open(other, os.O_RDONLY)
        try:
            assert "fdset-id" in qmp_cmd(s, "add-fd", {}, fds=[fd])["return"]
        finally:
            os.close(fd)
        r = qmp_cmd(s, "blockdev-change-medium", {"id": "ide-5632", "filename": "/dev/fdset/0",
                                                  "format": "raw"})
        assert r == {"return": {}}
        (cd,) = [b for b in qmp_cmd(s, "query-block")["return"] if b["qdev"] == "ide-5632"]
        assert cd["inserted"]["image"]["virtual-size"] == 2048 * 32
        s.close()
    finally:
        hv.close()
    assert hv.process.wait_exit() == 0


@root_only
@pytest.mark.parametrize("args, message", [
    (["--runas", "root"], "unprivileged"),
    (["--runas", "no-such-user-here"], "no user"),
    (["--runas", "nobody:no-such-group-here"], "no group"),
    (["--chroot", "/nonexistent-dir"], "not a directory"),
    (["--max-memory", "1M"], "below 16M"),
])
def test_bad_lockdown_options_fail_at_start(args, message):
    with pytest.raises(RuntimeError, match=message):
        DaemonProcess.start(args)


@root_only
def test_trace_under_runas_and_chroot_is_written(tmp_path):
    """The trace file is opened before the lock-down: its path is out of nobody's reach."""
    trace = tmp_path / "t.trace"
    hv = Hypervisor.spawn(["--domid", "1", "--runas", "nobody", "--chroot", str(tmp_path),
                           "--trace", str(trace)], ram=16 << 20)
    hv.inb(0x80)
    hv.close()
    assert hv.process.wait_exit() == 0
    assert trace.read_bytes().startswith(b"DMTRACE1") and trace.stat().st_size > 100


# ---- --max-memory ------------------------------------------------------------------------------
def test_max_memory_sets_rlimit_data_nofile_core(tmp_path):
    """RLIMIT_DATA (not RLIMIT_AS): 1 GiB of guest RAM, mapped MAP_SHARED from the
    hypervisor's memfd, is still mapped and served with a 128M limit."""
    hv = Hypervisor.spawn(["--domid", "1", "--max-memory", "128M"], ram=1 << 30)
    try:
        text = limits(hv.process.pid)
        assert "Max data size             134217728            134217728" in text
        assert f"Max open files            {lockdown.MAX_FILES}" in text
        assert "Max core file size        0                    0" in text
        assert "Max address space         unlimited" in text
        assert hv.pci_cfg_read(0, 0, 4) == I440FX_ID  # a round trip: the MEM_ADDs are done
        mapped = 0
        with open(f"/proc/{hv.process.pid}/maps") as f:
            for line in f:
                if "devmodel-guest-ram" in line:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    mapped += hi - lo
        assert mapped >= (1 << 30) - (1 << 20)  # ~8 times the limit (minus the VGA hole)
    finally:
        hv.close()
    assert hv.process.wait_exit() == 0


# ---- --seccomp ---------------------------------------------------------------------------------
@pytest.mark.skipif(lockdown._arch() is None, reason="no seccomp table for this machine")
def test_seccomp_on_installs_the_filter_and_serves(tmp_path):
    img = tmp_path / "disk.img"
    data = make_image(img)
    hv = Hypervisor.spawn(["--domid", "1", "--seccomp", "on", *disk_args(img)], ram=16 << 20)
    try:
        st = status(hv.process.pid)
        assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1"
        # Every thread (the disk workers existed before the filter): TSYNC.
        for tid in os.listdir(f"/proc/{hv.process.pid}/task"):
            with open(f"/proc/{hv.process.pid}/task/{tid}/status") as f:
                assert "Seccomp:\t2" in f.read()
        check_disk_io(hv, img, data)
    finally:
        hv.close()
    assert hv.process.wait_exit() == 0


_SECCOMP_CHILD = r"""
import os, subprocess, threading, time
from devmodel import lockdown
worker = threading.Thread(target=time.sleep, args=(1,))
worker.start()  # a thread from before: TSYNC filters it too
lockdown.install_seccomp()
out = []
for name, fn in [("execv", lambda: os.execv("/bin/true", ["true"])),
                 ("subprocess", lambda: subprocess.run(["/bin/true"])),
                 ("fork", os.fork), ("chroot", lambda: os.chroot("/")),
                 ("setuid", lambda: os.setuid(os.getuid()))]:
    try:
        fn()
        out.append(name + ":allowed")
    except OSError as e:
        out.append(f"{name}:{e.errno}")
t = threading.Thread(target=lambda: out.append("thread:ok"))
t.start(); t.join()
with open(f"/proc/self/task/{worker.native_id}/status") as f:
    out.append("worker:" + [l.split()[1] for l in f if l.startswith("Seccomp:")][0])
print(" ".join(out))
"""


@pytest.mark.skipif(lockdown._arch() is None, reason="no seccomp table for this machine")
def test_seccomp_filter_denies_exec_and_fork_but_not_threads():
    r = subprocess.run([sys.executable, "-c", _SECCOMP_CHILD], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["execv:1", "subprocess:1", "fork:1", "chroot:1", "setuid:1",
                                "thread:ok", "worker:2"]


def test_filter_program_is_well_formed():
    arch, table = lockdown._ARCHES["x86_64"]
    prog = lockdown.build_filter(arch, table, lockdown.SECCOMP_DENY)
    assert len(prog) < 4096
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == 0x05:  # jumps stay inside the program
            assert i + 1 + max(jt, jf) < len(prog)
    assert prog[-1][0] == 0x06 and prog[-3][0] == 0x06  # ends in returns
    for name in lockdown.SECCOMP_DENY:
        assert name in table, name
        if name not in ("iopl", "ioperm", "fork", "vfork"):
            assert name in lockdown._AARCH64, name
