"""Start a daemon as a real subprocess on a temporary socket, and stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class DaemonProcess:
    proc: subprocess.Popen
    socket_path: str
    tmpdir: str
    log_path: str

    @classmethod
    def start(cls, args: list[str], timeout: float = 15.0,
              python: str = sys.executable) -> DaemonProcess:
        tmpdir = tempfile.mkdtemp(prefix="devmodel-")
        sock = os.path.join(tmpdir, "dm.sock")
        log_path = os.path.join(tmpdir, "daemon.log")
        if "--domid" not in args:
            args = ["--domid", "1", *args]
        cmd = [python, "-m", "devmodel", "run", "--socket", sock, "--log-file", log_path, *args]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"daemon exited with {proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError("daemon did not create its socket")
            time.sleep(0.01)
        return cls(proc, sock, tmpdir, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            if self.proc.stderr:
                self.proc.stderr.close()

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait_exit()
