"""The QMP command table: argument checking as QEMU's QAPI does it, errors in QEMU's classes,
and one handler per command, each a thin call into the Controller (devmodel.controller).

A handler gets the session (for the controller, passed fds and post-reply actions) and the
arguments as keyword arguments; it returns the `return` value or raises QmpError.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devmodel.controller import MAX_STATE_FILE, ControlError
from devmodel.statefile import StateFileError

from . import info
from .fdsets import FdSetError


class QmpError(Exception):
    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls

    def response(self, req_id: Any, has_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"error": {"class": self.cls, "desc": self.desc}}
        if has_id:
            out["id"] = req_id
        return out


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "number": (int, float), "list": (list,),
    "dict": (dict,), "any": (object,),
}
_TYPE_NAMES = {"str": "string", "int": "integer", "bool": "boolean", "number": "number",
               "list": "array", "dict": "object", "any": "any"}


@dataclass
class Command:
    name: str
    fn: Callable[..., Any]
    params: dict[str, tuple[str, bool]]  # name -> (type, required)
    open_args: bool = False  # device_add: any further properties


COMMANDS: dict[str, Command] = {}


def command(cmd_name: str, /, open_args: bool = False, **params: str):
    """params: name=type, with a trailing '?' for optional ('str?'); '-' in names as '_'."""
    def deco(fn):
        spec = {}
        for k, t in params.items():
            spec[k.replace("_", "-")] = (t.rstrip("?"), not t.endswith("?"))
        COMMANDS[cmd_name] = Command(cmd_name, fn, spec, open_args)
        return fn
    return deco


def greeting() -> dict[str, Any]:
    return {"QMP": {"version": info.version_info(), "capabilities": []}}


def _check_args(cmd: Command, args: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in args.items():
        spec = cmd.params.get(key)
        if spec is None:
            if cmd.open_args:
                out[key.replace("-", "_")] = value
                continue
            raise QmpError(f"Parameter '{key}' is unexpected")
        typ, _ = spec
        ok = isinstance(value, _TYPES[typ]) and not (typ in ("int", "number") and isinstance(value, bool))
        if not ok:
            raise QmpError(f"Invalid parameter type for '{key}', expected: {_TYPE_NAMES[typ]}")
        out[key.replace("-", "_")] = value
    for key, (_, required) in cmd.params.items():
        if required and key not in args:
            raise QmpError(f"Parameter '{key}' is missing")
    return out


def run_command(session, msg: dict[str, Any]) -> Any:
    for key in msg:
        if key not in ("execute", "arguments", "id", "control"):
            raise QmpError(f"QMP input member '{key}' is unexpected")
    if "execute" not in msg:
        raise QmpError("QMP input lacks member 'execute'")
    name = msg["execute"]
    if not isinstance(name, str):
        raise QmpError("QMP input member 'execute' must be a string")
    args = msg.get("arguments", {})
    if not isinstance(args, dict):
        raise QmpError("QMP input member 'arguments' must be an object")
    if not session.negotiated and name != "qmp_capabilities":
        raise QmpError("Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound")
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise QmpError(f"The command {name} has not been found", "CommandNotFound")
    kwargs = _check_args(cmd, args)
    try:
        return cmd.fn(session, **kwargs)
    except ControlError as e:
        raise QmpError(e.desc, e.qmp_class) from None
    except (StateFileError, FdSetError) as e:
        raise QmpError(str(e)) from None


# ---- negotiation and introspection -----------------------------------------------------------
@command("qmp_capabilities", enable="list?")
def qmp_capabilities(s, enable=None):
    if s.negotiated:
        raise QmpError("Capabilities negotiation is already complete, command ignored",
                       "CommandNotFound")
    for cap in enable or []:
        raise QmpError(f"Capability '{cap}' not available")
    s.negotiated = True
    return {}


@command("query-version")
def query_version(s):
    return info.version_info()


@command("query-commands")
def query_commands(s):
    return [{"name": n} for n in sorted(COMMANDS)]


@command("query-status")
def query_status(s):
    return s.controller.status()


@command("query-name")
def query_name(s):
    name = s.controller.name
    return {"name": name} if name else {}


@command("query-uuid")
def query_uuid(s):
    import uuid

    return {"UUID": str(uuid.UUID(bytes=bytes(s.controller.uuid)))}


@command("query-kvm")
def query_kvm(s):
    return {"enabled": False, "present": False}


@command("query-command-line-options", option="str?")
def query_command_line_options(s, option=None):
    # libxl's start-up probe: devmodel takes none of QEMU's options, so there is nothing to list.
    if option is not None:
        raise QmpError(f"invalid option name: {option}")
    return []


# ---- run state ---------------------------------------------------------------------------------
@command("stop")
def stop(s):
    s.controller.stop()
    return {}


@command("cont")
def cont(s):
    s.controller.cont()
    return {}


@command("system_reset")
def system_reset(s):
    # QEMU resets from its main loop, after the reply; RESET follows the return.
    s.after_reply.append(s.controller.reset)
    return {}


@command("system_powerdown")
def system_powerdown(s):
    s.after_reply.append(s.controller.powerdown)
    return {}


@command("system_wakeup")
def system_wakeup(s):
    raise QmpError("wake-up from suspend is not supported by this guest")


@command("quit")
def quit_(s):
    s.after_reply.append(s.controller.quit)
    return {}


# ---- devices ----------------------------------------------------------------------------------
@command("query-pci")
def query_pci(s):
    return info.query_pci(s.controller.machine)


@command("query-block")
def query_block(s):
    return info.query_block(s.controller)


def _monitors(s) -> list[str]:
    return list(s.controller.monitor_paths) or [str(s.server.path)]


@command("query-chardev")
def query_chardev(s):
    return info.query_chardev(s.controller, _monitors(s))


def _vnc(s):
    from devmodel.backends.vnc import find_vnc

    return find_vnc(s.controller.machine)


@command("query-vnc")
def query_vnc(s):
    vnc = _vnc(s)
    return vnc.query() if vnc is not None else {"enabled": False}


@command("change-vnc-password", password="str")
def change_vnc_password(s, password):
    vnc = _vnc(s)
    if vnc is None or not vnc.set_password(password):
        raise QmpError("Could not set password")
    return {}


@command("query-cpus-fast")
def query_cpus_fast(s):
    return [{"cpu-index": i, "qom-path": f"/machine/unattached/device[{i}]",
             "thread-id": os.getpid(), "target": "x86_64",
             "props": {"socket-id": i, "core-id": 0, "thread-id": 0}}
            for i in range(s.controller.vcpus)]


@command("query-hotpluggable-cpus")
def query_hotpluggable_cpus(s):
    return [{"type": "qemu64-x86_64-cpu", "vcpus-count": 1,
             "props": {"socket-id": i, "core-id": 0, "thread-id": 0},
             "qom-path": f"/machine/unattached/device[{i}]"}
            for i in reversed(range(s.controller.vcpus))]


@command("device_add", open_args=True, driver="str", id="str?")
def device_add(s, driver, id=None, **props):
    if driver == "xen-pci-passthrough":
        raise QmpError("PCI passthrough (xen-pci-passthrough) is not supported by devmodel")
    raise QmpError(f"'{driver}' is not a valid device model name")


@command("device_del", id="str")
def device_del(s, id):
    s.controller.unplug(id)
    return {}


@command("set_link", name="str", up="bool")
def set_link(s, name, up):
    nic = s.controller.nic(name)
    if nic is None:
        raise QmpError(f"Device '{name}' not found", "DeviceNotFound")
    nic.set_link(up)
    s.controller.flush()
    return {}


# ---- block media ------------------------------------------------------------------------------
def _block_name(device, id_) -> str:
    if (device is None) == (id_ is None):
        raise QmpError("Need exactly one of 'device' and 'id'")
    return device if device is not None else id_


@command("eject", device="str?", id="str?", force="bool?")
def eject(s, device=None, id=None, force=False):
    s.controller.eject(_block_name(device, id), force)
    return {}


def _change_medium(s, name: str, filename: str, fmt: str | None, read_only_mode: str | None) -> None:
    """The new medium gets the backends start-up disks get (devmodel.ide.open_disks): a raw
    image a ThreadedRawDisk, qcow2 and the other formats QEMU opens a private qemu-nbd, so
    its reads never block the event loop. Completions go to the daemon's loop when one
    serves the hypervisor, inline under a virtual clock (as build_ide decides)."""
    from devmodel.backends.qemu_nbd import QemuNbdError, open_image_fd
    from devmodel.ide.piix import NBD_FORMATS

    s.controller.removable(name)  # before the file is opened: not found / not removable
    fmt = fmt or "raw"
    if fmt != "raw" and fmt not in NBD_FORMATS:
        raise QmpError(f"Unknown driver '{fmt}'")
    if read_only_mode not in (None, "retain", "read-only", "read-write"):
        raise QmpError(f"Parameter 'read-only-mode' does not accept value '{read_only_mode}'")
    write = read_only_mode == "read-write"
    fd = s.controller.fdsets.open(filename, write=write) if filename.startswith("/dev/fdset/") \
        else _open_plain(filename, write)
    try:
        # query-block shows the name the toolstack gave (/dev/fdset/N)
        backend = open_image_fd(fd, filename, fmt, readonly=not write)
    except (OSError, ValueError, QemuNbdError) as e:
        raise QmpError(f"Could not open '{filename}': {getattr(e, 'strerror', None) or e}") from None
    finally:
        os.close(fd)
    _attach_completions(s.controller, backend)
    s.controller.change_medium(name, backend)


def _attach_completions(controller, backend) -> None:
    """Where an asynchronous medium completes, as for the start-up disks
    (Machine.attach_completions: on the daemon's loop, followed by the connection's flush;
    inline under a virtual clock). Once the hypervisor is connected its io_hook runs now."""
    machine = controller.machine
    conn = controller.connection
    if conn is None:  # attached when the hypervisor connects
        machine.attach_completions(backend)
    elif hasattr(backend, "io_hook") and not machine.clock.virtual:
        backend.io_hook()(conn.loop, conn.flush_effects)


def _open_plain(path: str, write: bool) -> int:
    try:
        return os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as e:
        raise QmpError(f"Could not open '{path}': {e.strerror}") from None


@command("blockdev-change-medium", device="str?", id="str?", filename="str", format="str?",
         force="bool?", read_only_mode="str?")
def blockdev_change_medium(s, filename, device=None, id=None, format=None, force=False,
                           read_only_mode=None):
    _change_medium(s, _block_name(device, id), filename, format, read_only_mode)
    return {}


@command("change", device="str", target="str", arg="str?")
def change(s, device, target, arg=None):
    if device == "vnc":
        if _vnc(s) is None:
            raise QmpError("VNC is not enabled")
        if target != "password" or arg is None:
            raise QmpError("Parameter 'target' expects password")
        return change_vnc_password(s, arg)
    _change_medium(s, device, target, arg, None)
    return {}


# ---- display and input ------------------------------------------------------------------------
@command("screendump", filename="str", device="str?", head="int?", format="str?")
def screendump(s, filename, device=None, head=None, format=None):
    # A display device offers screendump() -> image bytes (PPM or PNG as `format` asks).
    for d in s.controller.machine.devices:
        fn = getattr(d, "screendump", None)
        if callable(fn) and (device is None or d.name == device):
            data = fn(format or "ppm")
            fd = s.controller.fdsets.open(filename, write=True)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return {}
    raise QmpError("There is no console to take a screendump from.")


def _key_of(kv: Any) -> str | int:
    if not isinstance(kv, dict) or kv.get("type") not in ("qcode", "number"):
        raise QmpError("Invalid parameter type for 'key', expected: KeyValue")
    v = kv.get("data")
    if kv["type"] == "qcode" and not isinstance(v, str):
        raise QmpError("Invalid parameter type for 'data', expected: string")
    if kv["type"] == "number" and (not isinstance(v, int) or isinstance(v, bool)):
        raise QmpError("Invalid parameter type for 'data', expected: integer")
    return v


@command("input-send-event", events="list", device="str?", head="int?")
def input_send_event(s, events, device=None, head=None):
    """Through the input router (devmodel.input), as VNC input: key -> the active keyboard
    (USB once the guest configured it, else PS/2); abs -> the USB tablet; btn/rel -> one
    motion report per command (QEMU's sync) to the relative pointer, or the buttons to the
    tablet when the command moves nothing relatively."""
    from devmodel.input import BUTTON_BITS, router_for

    c = s.controller
    router = router_for(c.machine)
    parsed = []
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("data"), dict):
            raise QmpError("Invalid parameter type for 'events', expected: InputEvent")
        kind, data = ev.get("type"), ev["data"]
        if kind not in ("key", "btn", "rel", "abs"):
            raise QmpError(f"Parameter 'type' does not accept value '{kind}'")
        if not router.has(kind):
            raise QmpError(f"Input handler not found for event type {kind}")
        if kind == "key":
            parsed.append((kind, _key_of(data.get("key")), bool(data.get("down"))))
        elif kind == "btn":
            btn = data.get("button")
            if btn not in BUTTON_BITS and btn not in ("wheel-up", "wheel-down"):
                raise QmpError(f"Parameter 'button' does not accept value '{btn}'")
            parsed.append((kind, btn, bool(data.get("down"))))
        else:
            axis, value = data.get("axis"), data.get("value")
            if axis not in ("x", "y") or not isinstance(value, int) or isinstance(value, bool):
                raise QmpError("Invalid parameter type for 'data', expected: InputMoveEvent")
            parsed.append((kind, axis, value))
    dx = dy = dz = 0
    rel = absolute = buttons = False
    x, y = router.abs_x, router.abs_y
    for kind, a, b in parsed:
        if kind == "key":
            router.key(a, b)
        elif kind == "btn":
            buttons = True
            if a == "wheel-up" and b:
                dz -= 1
            elif a == "wheel-down" and b:
                dz += 1
            elif a in BUTTON_BITS:
                router.button(a, b)
        elif kind == "rel":
            rel = True
            if a == "x":
                dx += b
            else:
                dy += b
        else:
            absolute = True
            if a == "x":
                x = b
            else:
                y = b
    if absolute or (buttons and not rel and router.tablet_active()):
        router.pointer_abs(x, y, wheel=-dz)
    elif rel or buttons:
        router.pointer_rel(dx, dy, dz)
    c.flush()
    return {}


@command("send-key", keys="list", hold_time="int?")
def send_key(s, keys, hold_time=None):
    from devmodel.input import router_for

    c = s.controller
    router = router_for(c.machine)
    if not router.has("key"):
        raise QmpError("Input handler not found for event type key")
    ks = [_key_of(k) for k in keys]
    for down, seq in ((True, ks), (False, list(reversed(ks)))):
        for k in seq:
            router.key(k, down)
    c.flush()
    return {}


# ---- fds ----------------------------------------------------------------------------------------
@command("add-fd", fdset_id="int?", opaque="str?")
def add_fd(s, fdset_id=None, opaque=None):
    fd = s.take_fd()
    if fd is None:
        raise QmpError("No file descriptor supplied via SCM_RIGHTS")
    sid, num = s.controller.fdsets.add(fd, fdset_id, opaque, s)
    return {"fdset-id": sid, "fd": num}


@command("remove-fd", fdset_id="int", fd="int?")
def remove_fd(s, fdset_id, fd=None):
    s.controller.fdsets.remove(fdset_id, fd)
    return {}


@command("query-fdsets")
def query_fdsets(s):
    return s.controller.fdsets.query()


# ---- save / restore / migration ------------------------------------------------------------------
@command("xen-save-devices-state", filename="str", live="bool?")
def xen_save_devices_state(s, filename, live=True):
    fd = s.controller.fdsets.open(filename, write=True)
    try:
        s.controller.save_state(fd)
    except OSError as e:
        raise QmpError(f"Failed to save device state to '{filename}': {e.strerror}") from None
    finally:
        os.close(fd)
    return {}


@command("xen-load-devices-state", filename="str")
def xen_load_devices_state(s, filename):
    if s.controller.running:
        raise QmpError("Cannot update device state while vm is running")
    fd = s.controller.fdsets.open(filename, write=False)
    try:
        chunks = []
        total = 0
        while total <= MAX_STATE_FILE:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
            total += len(b)
    except OSError as e:
        raise QmpError(f"Could not read '{filename}': {e.strerror}") from None
    finally:
        os.close(fd)
    if total > MAX_STATE_FILE:
        raise QmpError(f"'{filename}' is larger than any device-state file")
    s.controller.load_state(b"".join(chunks))
    return {}


@command("xen-set-global-dirty-log", enable="bool")
def xen_set_global_dirty_log(s, enable):
    s.controller.set_dirty_log(enable)
    return {}


# ---- HMP ----------------------------------------------------------------------------------------
def _hmp_info(s, what: str) -> str:
    c = s.controller
    if what == "status":
        st = c.run_state
        return "VM status: running\r\n" if st == "running" else (
            "VM status: paused\r\n" if st == "paused" else f"VM status: paused ({st})\r\n")
    if what == "pci":
        return info.hmp_info_pci(c.machine)
    if what == "block":
        return info.hmp_info_block(c)
    if what == "chardev":
        return info.hmp_info_chardev(c, _monitors(s))
    if what == "version":
        v = info.version_info()["qemu"]
        return f"{v['major']}.{v['minor']}.{v['micro']} ({info.PACKAGE})\r\n"
    if what == "name":
        return f"{c.name}\r\n" if c.name else ""
    if what == "uuid":
        return query_uuid(s)["UUID"] + "\r\n"
    if what == "kvm":
        return "kvm support: not compiled\r\n"
    raise KeyError(what)


_HMP_ACTIONS: dict[str, Callable[[Any], Any]] = {
    "stop": stop, "cont": cont, "c": cont, "system_reset": system_reset,
    "system_powerdown": system_powerdown,
}


@command("human-monitor-command", command_line="str", cpu_index="int?")
def human_monitor_command(s, command_line, cpu_index=None):
    try:
        words = shlex.split(command_line)
    except ValueError:
        words = command_line.split()
    if not words:
        return ""
    if words[0] in ("info", "i"):
        if len(words) < 2:
            return "info status|pci|block|chardev|version|name|uuid|kvm\r\n"
        try:
            return _hmp_info(s, words[1])
        except KeyError:
            return f"unknown command: 'info {words[1]}'\r\n"
    action = _HMP_ACTIONS.get(words[0])
    if action is not None and len(words) == 1:
        action(s)
        return ""
    return f"unknown command: '{words[0]}'\r\n"
