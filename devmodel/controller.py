"""The facade a toolstack interface (QMP today) drives: run state, pause/resume, reset,
power button, quit, device-state save/load, dirty logging and device lookup.

It owns no socket. The daemon gives it the hypervisor connection when one exists
(`attach`), and whoever speaks to toolstacks registers an event listener (`listeners`).
Every operation that changes the machine outside an ioreq ends with `flush()`, so the dm_ops
it caused (IRQ levels, range maps) reach the hypervisor at once.

Run states are QEMU's names: "prelaunch" (started paused, as QEMU's -S), "paused" (after
`stop`, or started from a state file), "running". As QEMU's run-state handler does on Xen, the
ioreq server is enabled exactly while the state is "running" (xen-protocol.md 4.5).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devmodel import statefile
from devmodel.qmp.fdsets import FdSets
from devmodel.wire.constants import SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, DmOp

log = logging.getLogger("devmodel.controller")

EventListener = Callable[[str, dict[str, Any]], None]
# Xen vdev numbers of the emulated IDE positions (hda, hdb, hdc, hdd): libxl names a CD-ROM
# drive "ide-<devnum>" in QMP (xen-protocol.md 6.3).
IDE_DEVNUM = {(0, 0): 768, (0, 1): 832, (1, 0): 5632, (1, 1): 5696}
MAX_STATE_FILE = statefile.HEADER.size + statefile.MAX_BODY


class ControlError(Exception):
    """An operation refused; `qmp_class` is the QMP error class to answer with."""

    def __init__(self, desc: str, qmp_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.qmp_class = qmp_class


@dataclass
class BlockDev:
    """One IDE position with a drive: its QMP names and the drive object. A drive with
    removable media offers `insert_media(backend)` and `eject_media(force)` (ATAPI, each
    returning the medium it removed, RuntimeError when the guest locked the tray); then
    `eject`/`blockdev-change-medium` work on it."""

    name: str  # QMP "device": ide0-hd0 / ide1-cd0
    qdev: str  # QMP "qdev": ide-<devnum> for CD-ROMs (libxl's id), a path otherwise
    channel: int
    unit: int
    drive: Any

    @property
    def removable(self) -> bool:
        return hasattr(self.drive, "eject_media") and hasattr(self.drive, "insert_media")

    @property
    def cdrom(self) -> bool:
        return bool(getattr(self.drive, "is_cd", False) or getattr(self.drive, "cdrom", False)
                    or self.removable)


class Controller:
    def __init__(self, machine, *, run_state: str = "running", vcpus: int = 1, name: str = "",
                 uuid: bytes | None = None,
                 scratch_factory: Callable[[], Any] | None = None) -> None:
        if run_state not in ("prelaunch", "paused", "running"):
            raise ValueError(f"run state {run_state!r}")
        self.machine = machine
        self.run_state = run_state
        self.vcpus = vcpus
        self.name = name
        self.uuid = uuid or bytes(16)
        self.scratch_factory = scratch_factory
        self.connection = None
        self.listeners: list[EventListener] = []
        self.on_quit: Callable[[str], None] | None = None
        self.quitting = False
        self.fdsets = FdSets()  # add-fd sets, shared by every monitor (as in QEMU)
        self.monitor_paths: list[str] = []  # QMP sockets, for query-chardev
        ide = self.find_type("PiixIde")
        if ide is not None and hasattr(ide, "io_error_listeners"):
            ide.io_error_listeners.append(self._ide_io_error)
        # A guest's PV drivers unplugging emulated devices: DEVICE_DELETED per device and a
        # XEN_PLATFORM_UNPLUG summary (devmodel/qmp/unplug_events.py).
        from devmodel.qmp.unplug_events import wire_unplug_events

        wire_unplug_events(self)

    # ---- wiring ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.run_state == "running"

    def attach(self, connection) -> None:
        """The daemon's hypervisor connection: the ioreq server is enabled only while running,
        and guest-initiated poweroff/reboot become SHUTDOWN/RESET events."""
        self.connection = connection
        connection.run_gate = lambda: self.running
        connection.on_remote_shutdown = self._guest_shutdown

    def detach(self) -> None:
        self.connection = None

    def emit(self, event: str, data: dict[str, Any] | None = None) -> None:
        for fn in list(self.listeners):
            try:
                fn(event, {} if data is None else data)
            except Exception:
                log.exception("event listener failed for %s", event)

    def flush(self) -> None:
        if self.connection is not None:
            self.connection.flush_effects()

    def _guest_shutdown(self, reason: int) -> None:
        if reason == SHUTDOWN_REBOOT:
            self.emit("RESET", {"guest": True, "reason": "guest-reset"})
        elif reason == SHUTDOWN_POWEROFF:
            self.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})

    # ---- run state ------------------------------------------------------------------------
    def stop(self) -> None:
        """QEMU vm_stop: nothing (and no event) if not running."""
        if not self.running:
            return
        self.run_state = "paused"
        if self.connection is not None:
            self.connection.set_server_state(False)
        self.emit("STOP")

    def cont(self) -> None:
        if self.running:
            # QEMU vm_prepare_start on a running VM reports STOP then RESUME and does nothing.
            self.emit("STOP")
            self.emit("RESUME")
            return
        self.run_state = "running"
        if self.connection is not None:
            self.connection.set_server_state(True)
        self.emit("RESUME")

    def reset(self) -> None:
        """QMP system_reset on Xen: devices reset, then remote_shutdown(reboot) so the
        toolstack rebuilds the domain, exactly as for a guest-initiated reset (4.5)."""
        self.machine.reset()
        self.flush()
        if self.connection is not None:
            self.connection.request_dmop(DmOp.REMOTE_SHUTDOWN, (SHUTDOWN_REBOOT,))
            self.connection.flush_effects()
        self.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})

    def powerdown(self) -> bool:
        """The ACPI power button (PIIX4 PM). The event is reported whether or not the guest
        enabled the button, as QEMU does; returns whether the guest saw a button press."""
        self.emit("POWERDOWN")
        pm = self.find_type("PiixPm")
        delivered = bool(pm is not None and pm.power_button())
        self.flush()
        return delivered

    def quit(self) -> None:
        """End the daemon cleanly (exit status 0) after the reply has gone."""
        if self.quitting:
            return
        self.quitting = True
        self.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        if self.on_quit is not None:
            self.on_quit("quit (QMP)")

    def status(self) -> dict[str, Any]:
        return {"status": self.run_state, "singlestep": False, "running": self.running}

    # ---- save / restore -------------------------------------------------------------------
    def save_state(self, fd: int) -> int:
        """Write the state file to `fd` (from its current position); returns its size.
        Everything a device does is synchronous (DMA included), so no request is half done."""
        data = statefile.encode_state(self.machine)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        return len(data)

    def load_state(self, data: bytes) -> None:
        """Validate everything, then apply; a bad file leaves the machine untouched."""
        snap = statefile.check_state(self.machine, data, self.scratch_factory)
        statefile.apply_state(self.machine, snap)
        m = self.machine
        if m.announcing:
            for dev in m.devices:
                dev.announced()  # link routes and other mirrored state, as after start-up
        self.flush()

    def set_dirty_log(self, enable: bool) -> None:
        mem = self.machine.memory
        if enable:
            if mem.dirty_log is None:
                mem.dirty_log = set()
        else:
            if self.connection is not None:
                self.connection.report_dirty()
            mem.dirty_log = None
        self.flush()

    # ---- devices --------------------------------------------------------------------------
    def find_type(self, cls_name: str):
        for d in self.machine.devices:
            if type(d).__name__ == cls_name:
                return d
        return None

    def find_device(self, qdev_id: str):
        """A device by QMP id: its name, or a block device name; USB devices behind a host
        controller (`all_devices`) too, so that device_del reaches them."""
        for d in self.machine.devices:
            if d.name == qdev_id:
                return d
        for d in self.machine.devices:
            for u in getattr(d, "all_devices", list)():
                if u.name == qdev_id:
                    return u
        return None

    def nic(self, name: str):
        """A NIC by id: any device offering set_link(up)."""
        d = self.find_device(name)
        return d if d is not None and callable(getattr(d, "set_link", None)) else None

    def block_devices(self) -> list[BlockDev]:
        ide = self.find_type("PiixIde")
        out: list[BlockDev] = []
        if ide is None:
            return out
        for ch in ide.channels:
            for d in ch.drives:
                blk = BlockDev("", "", ch.index, d.unit, d)
                if not d.present and not blk.removable:
                    continue
                kind = "cd" if blk.cdrom else "hd"
                blk.name = f"ide{ch.index}-{kind}{d.unit}"
                devnum = IDE_DEVNUM[(ch.index, d.unit)]
                blk.qdev = (f"ide-{devnum}" if blk.cdrom
                            else f"/machine/unattached/device[{devnum}]")
                out.append(blk)
        return out

    def block(self, name: str) -> BlockDev | None:
        for b in self.block_devices():
            if name in (b.name, b.qdev):
                return b
        return None

    def removable(self, name: str) -> BlockDev:
        """The block device `name` (its name or qdev id) if it takes removable media, else
        ControlError (DeviceNotFound when there is no such device)."""
        b = self.block(name)
        if b is None:
            raise ControlError(f"Device '{name}' not found", "DeviceNotFound")
        if not b.removable:
            raise ControlError(f"Device '{name}' is not removable")
        return b

    def eject(self, name: str, force: bool = False) -> None:
        b = self.removable(name)
        old = getattr(b.drive, "backend", None)
        try:
            b.drive.eject_media(force)
        except RuntimeError:  # MediaLockedError: the guest asked to be told (eject request)
            self.flush()
            raise ControlError(f"Device '{name}' is locked and force was not specified, "
                               "wait for tray to open and try again") from None
        except ValueError as e:
            raise ControlError(str(e)) from None
        self._retire_backend(old, b.drive)
        self.flush()

    def change_medium(self, name: str, backend) -> None:
        try:
            b = self.removable(name)
        except ControlError:
            backend.close()
            raise
        old = getattr(b.drive, "backend", None)
        try:
            b.drive.insert_media(backend)
        except (ValueError, RuntimeError) as e:
            backend.close()
            raise ControlError(str(e) or f"Device '{name}' refused the medium") from None
        self._retire_backend(old, b.drive)
        self.machine.backends.append(backend)
        self.flush()

    def _retire_backend(self, old, drive) -> None:
        if old is not None and getattr(drive, "backend", None) is not old:
            if old in self.machine.backends:
                self.machine.backends.remove(old)
            try:
                old.close()
            except OSError:
                pass

    def unplug(self, qdev_id: str) -> None:
        """device_del: devices that can go offer `unplug_request()` (NICs, disks later)."""
        d = self.find_device(qdev_id)
        if d is None:
            raise ControlError(f"Device '{qdev_id}' not found", "DeviceNotFound")
        fn = getattr(d, "unplug_request", None)
        if fn is None:
            raise ControlError(f"Device '{qdev_id}' does not support hotplugging")
        fn()
        self.flush()

    def block_io_error(self, device: str, operation: str, action: str = "report",
                       reason: str = "", nospace: bool = False) -> None:
        """For block devices to report an I/O error (BLOCK_IO_ERROR)."""
        self.emit("BLOCK_IO_ERROR", {"device": device, "node-name": device, "operation": operation,
                                     "action": action, "nospace": nospace, "reason": reason})

    def _ide_io_error(self, channel: int, unit: int, operation: str, err: OSError | None) -> None:
        """An IDE backend error: the guest already has the error status (QEMU's default
        rerror/werror "report"); the toolstack gets BLOCK_IO_ERROR, nospace set for ENOSPC as
        QEMU does (a toolstack may grow the volume and let the guest retry)."""
        name = next((b.name for b in self.block_devices() if (b.channel, b.unit) == (channel, unit)),
                    f"ide{channel}-hd{unit}")
        errno_ = getattr(err, "errno", None)
        reason = (os.strerror(errno_) if errno_ else str(err)) if err is not None else "I/O error"
        self.block_io_error(name, operation, reason=reason, nospace=errno_ == errno.ENOSPC)

    # ---- time ------------------------------------------------------------------------------
    def now_us(self) -> tuple[int, int]:
        t = time.time()
        return int(t), int((t - int(t)) * 1_000_000)
