"""The hypervisor side of the wire contract, for tests, fuzzers and users' own tools.

- `Hypervisor` (blocking) and `AsyncHypervisor` (asyncio) play Xen's part: HELLO, guest RAM
  as a memfd, ioreqs of every kind, answers to the daemon's dm_ops (recorded in `.state`).
- `DaemonProcess` starts a real daemon on a temporary socket.
- The pytest plugin (`devmodel.client.pytest_plugin`) provides fixtures built on these.
"""

from .aio import AsyncHypervisor
from .guestram import GuestRam
from .inprocess import InProcessDaemon
from .process import DaemonProcess
from .state import HypervisorState
from .sync import Hypervisor, ProtocolError, ioreq_bytes

__all__ = ["AsyncHypervisor", "GuestRam", "InProcessDaemon", "DaemonProcess", "HypervisorState", "Hypervisor",
           "ProtocolError", "ioreq_bytes"]
