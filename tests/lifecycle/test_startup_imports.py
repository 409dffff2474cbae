"""Start-up cost guard (issue 9): `devmodel run` with the footprint bench's device set must not
import, before it is ready, modules that only other commands, other options or later events
need. Read from `python -X importtime`: every import before READY is on stderr by then (the
interpreter writes those lines unbuffered, in order, and READY comes after them).

No timings are asserted (benchmarks are noisy, bench/footprint.py measures); what is checked
is the set of modules, which is what made start-up slow before."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

# Not needed before ready, with why. A module here showing up again is a start-up regression.
NOT_BEFORE_READY = {
    "tomllib": "config files: only with --config",
    "difflib": "config key suggestions: only with --config",
    "devmodel.config": "only with --config (or devmodel validate)",
    "tempfile": "qemu-nbd's socket directory: only for non-raw images",
    "uuid": "the default UUID is the nil UUID, a constant",
    "ctypes.util": "fallocate lookup: at the first DISCARD",
    "termios": "only for a pty serial port",
    "pdb": "a debugger has no place in the daemon (construct, no longer used, imported it)",
    "devmodel.backends.vnc": "only with --vnc",
    "devmodel.fuzz": "devmodel fuzz/replay",
    "devmodel.hvsim": "devmodel boot (the simulated CPU)",
    "devmodel.boot": "devmodel boot",
    "devmodel.demo": "devmodel demo",
    "devmodel.client": "the hypervisor side (tests, tools)",
    "qemu": "qemu.qmp is a test client, never in the daemon",
    "PIL": "screenshots are written without it",
    "hypothesis": "tests only",
    "atheris": "fuzzing only",
    "unicorn": "the simulated CPU only",
}


def _imports_before_ready(args: list[str], timeout: float = 60.0) -> set[str]:
    r, w = os.pipe()
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "devmodel", "run", *args,
                             "--ready-fd", str(w)], pass_fds=(w,), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    os.close(w)
    try:
        ready = b""
        deadline = time.monotonic() + timeout
        while not ready.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([r], [], [], left)[0], "no READY in time"
            chunk = os.read(r, 64)
            assert chunk, "the daemon closed its ready fd without READY"
            ready += chunk
        assert ready == b"READY\n"
        # Everything imported so far is in the pipe: drain it without blocking.
        assert proc.stderr is not None
        os.set_blocking(proc.stderr.fileno(), False)
        err = b""
        while True:
            try:
                chunk = os.read(proc.stderr.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(r)
        proc.terminate()
        proc.wait(15)
        if proc.stderr:
            proc.stderr.close()
    names = set()
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _heavy(names: set[str]) -> dict[str, str]:
    return {m: why for m, why in NOT_BEFORE_READY.items()
            if m in names or any(n.startswith(m + ".") for n in names)}


@pytest.fixture(scope="module")
def full_set_imports(tmp_path_factory):
    import socket

    tmp = tmp_path_factory.mktemp("startup")
    disk, iso = tmp / "disk.raw", tmp / "cd.iso"
    disk.write_bytes(bytes(1 << 20))
    iso.write_bytes(bytes(1 << 20))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    local, peer = (s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    # The footprint bench's device set (bench/footprint.py), plus a QMP socket as libxl has.
    args = ["--domid", "1", "--socket", str(tmp / "dm.sock"), "--qmp", str(tmp / "qmp.sock"),
            "--log-file", str(tmp / "dm.log"), "--memory", "128M",
            "--disk", f"format=raw,vdev=hda,access=rw,target={disk}",
            "--disk", f"devtype=cdrom,vdev=hdc,target={iso}",
            "--nic", f"model=e1000,backend=udp,peer=127.0.0.1:{peer},path=127.0.0.1:{local}",
            "--usb", "tablet", "--vga", "std", "--serial", "null"]
    return _imports_before_ready(args)


def test_full_device_set_imports_nothing_heavy_before_ready(full_set_imports):
    assert "devmodel.pc" in full_set_imports and "uvloop" in full_set_imports  # parsed right
    assert _heavy(full_set_imports) == {}


def test_the_guard_sees_a_config_file(tmp_path):
    """The check can fail: with --config the TOML reader is imported, and is seen."""
    cfg = tmp_path / "dm.toml"
    cfg.write_text('domid = 1\nsocket = "%s"\nvga = "none"\n' % (tmp_path / "dm.sock"))
    names = _imports_before_ready(["--config", str(cfg), "--log-file", str(tmp_path / "l")])
    assert {"tomllib", "devmodel.config"} <= set(_heavy(names))
