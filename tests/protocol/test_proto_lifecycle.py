"""The daemon process: signals and disconnects end it with status 0, the socket is private, a
second hypervisor is refused, and bad command lines fail with a clear message."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from dmsupport import RawPeer, error_of

from devmodel.client import DaemonProcess, Hypervisor
from devmodel.wire.constants import DmOp, ErrorCode


def wait_ready(proc: DaemonProcess, timeout: float = 10.0) -> None:
    """Signal handlers are installed once the daemon says it is ready (before that a signal
    would take its default action)."""
    deadline = time.monotonic() + timeout
    while "ready for the hypervisor" not in proc.log():
        assert time.monotonic() < deadline, proc.log()
        assert proc.proc.poll() is None, proc.log()
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_connected_exits_0_and_tears_down_the_server(sig):
    proc = DaemonProcess.start(["--domid", "7"])
    hv = Hypervisor.connect(proc.socket_path, process=proc)
    assert hv.inb(0x92) == 0
    proc.signal(sig)
    for _ in range(100):  # dm_ops are recorded on the way, then EOF
        try:
            hv.recv()
        except BrokenPipeError:
            continue  # our DMOP_REPLY to a daemon that has gone: keep reading what it sent
        except ConnectionError:
            break
    else:
        pytest.fail("no EOF")
    ops = [r.op for r in hv.state.dmops]
    assert ops[-2:] == [DmOp.SET_IOREQ_SERVER_STATE, DmOp.DESTROY_IOREQ_SERVER]
    assert not hv.state.server_enabled and not hv.state.server_created
    hv.close()
    assert proc.proc.returncode == 0, proc.log()
    assert f"stopping: {sig.name}" in proc.log() and "exiting" in proc.log()
    assert not os.path.exists(proc.socket_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_before_any_hypervisor_exits_0(sig):
    proc = DaemonProcess.start(["--domid", "7"])
    wait_ready(proc)
    proc.signal(sig)
    assert proc.wait_exit(10) == 0, proc.log()
    assert not os.path.exists(proc.socket_path)


def test_hypervisor_disconnect_exits_0():
    proc = DaemonProcess.start(["--domid", "7"])
    hv = Hypervisor.connect(proc.socket_path, process=proc)
    hv.add_ram(4 << 20)
    assert hv.pci_cfg_read(0, 0, 2) == 0x8086
    hv.close()  # closes the socket and waits for the process
    assert proc.proc.returncode == 0
    assert "hypervisor disconnected" in proc.log()


def test_disconnect_mid_frame_exits_0():
    proc = DaemonProcess.start(["--domid", "7"])
    peer = RawPeer.connect(proc.socket_path)
    peer.hello()
    peer.send(b"\x04\x00\x00\x00\x20\x00\x00\x00")  # half a header
    peer.close()
    assert proc.wait_exit() == 0


def test_socket_is_private_and_second_hypervisor_refused():
    proc = DaemonProcess.start(["--domid", "7"])
    try:
        assert stat.S_IMODE(os.stat(proc.socket_path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(proc.socket_path).st_mode)
        first = Hypervisor.connect(proc.socket_path, process=proc)
        second = RawPeer.connect(proc.socket_path)
        msg = second.recv_msg()
        code, text = error_of(msg)
        assert code == ErrorCode.BAD_STATE and "already connected" in text
        assert msg.tag == 0
        assert second.recv_msg() is None  # and closed
        second.close()
        assert first.pci_cfg_read(0, 0, 4) == 0x12378086  # the first one is unaffected
    finally:
        proc.signal()
        first.close()
    assert proc.proc.returncode == 0


def test_inherited_connected_socket():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devmodel", "run", "--domid", "8", "--fd", str(b.fileno()),
         "--log-level", "warning"],
        pass_fds=[b.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    b.close()
    try:
        hv = Hypervisor(a)
        assert hv.hello_reply[4] == 8  # domid
        assert hv.pci_cfg_read(8, 0, 4) == 0x70008086
        hv.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devmodel", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, **kw)


@pytest.mark.parametrize("args, needle", [
    (["run"], "--domid"),
    (["run", "--socket", "{tmp}/s"], "--domid"),
    (["run", "--domid", "-1", "--socket", "{tmp}/s"], "negative"),
    (["run", "--domid", "x", "--socket", "{tmp}/s"], "not an integer"),
    (["run", "--domid", "1"], "--socket"),
    (["run", "--domid", "1", "--socket", "{tmp}/s", "--fd", "3"], "not allowed"),
    (["run", "--domid", "1", "--fd", "99999"], "--fd 99999"),
    (["run", "--domid", "1", "--fd", "0"], "--fd 0"),
    (["run", "--domid", "1", "--socket", "{tmp}/s", "--clock", "sundial"], "--clock"),
    (["run", "--domid", "1", "--socket", "{tmp}/notasocket"], "not a socket"),
    (["run", "--domid", "1", "--socket", "{tmp}/nodir/s"], "--socket"),
    ([], "COMMAND"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_command_lines(tmp_path, args, needle):
    (tmp_path / "notasocket").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run_cli(*args)
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert (tmp_path / "notasocket").read_text() == "x"  # never clobbered


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("devmodel ")
