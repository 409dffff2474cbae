"""Run a daemon in a thread of this process, with a machine the test builds itself.

For tests that need a device no command line offers (a fault injector, a test PCI device
with BARs): the daemon, the socket and the protocol are all real; only the process is shared.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Callable

from devmodel.core.machine import Machine
from devmodel.daemon import Daemon, DaemonConfig, listen_unix


class InProcessDaemon:
    def __init__(self, machine_factory: Callable[[], Machine],
                 config: DaemonConfig | None = None) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="devmodel-inproc-")
        self.socket_path = os.path.join(self.tmpdir, "dm.sock")
        self.daemon = Daemon(machine_factory, config or DaemonConfig(domid=1))
        self._listener = listen_unix(self.socket_path)
        self._ready = threading.Event()
        self.result: str | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="devmodel-daemon", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("in-process daemon did not start")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.result = loop.run_until_complete(
                self.daemon.serve(self._listener, ready=self._ready.set, handle_signals=False))
        except BaseException as e:  # surfaced to the test through .error
            self.error = e
            self._ready.set()
        finally:
            loop.close()

    @property
    def machine(self) -> Machine:
        assert self.daemon.machine is not None
        return self.daemon.machine

    def stop(self, timeout: float = 10.0) -> str | None:
        if self._loop is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self.daemon.stop, "test stop")
            except RuntimeError:
                pass
        self._thread.join(timeout)
        self._listener.close()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        return self.result
