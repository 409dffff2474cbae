"""`devmodel run --config FILE` and `devmodel validate`: the machine from a TOML file.

The file uses xl's names where xl has one (xl.cfg(5)): `disk`, `vif`, `usbdevice`, `serial`,
`vga`, `videoram`, `vnc`, `memory` (MiB, xl semantics), `vcpus`, `name`, `uuid`, `boot`,
`xen_platform_pci`, `bios`, `kernel`/`ramdisk`/`cmdline`, `acpi`; every other `devmodel run`
option by its long name (`log-file` or `log_file`). Options given on the command line win; a
list option given there replaces the file's list.

`load_config` turns a file into argparse destinations and reports every problem it finds
(unknown keys with their line, wrong types, bad values). `check_machine` is the dry build:
every device spec parsed and every file it names looked at, nothing opened for good, started
or created (no qemu-nbd, no tap, no socket, no memfd), every problem collected.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field

from devmodel.wire.constants import MAX_VCPUS

MiB = 1 << 20
# xl's firmware names for `bios =` (hvmloader loads them on Xen, not the device model).
XL_FIRMWARE = ("seabios", "ovmf")
# Options that are not machine configuration and are never read from a file.
NOT_IN_FILE = {"help", "config", "version"}


@dataclass
class Problem:
    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}" if self.where else self.text


@dataclass
class Config:
    """What a config file says, as argparse destinations."""

    path: str
    values: dict[str, object] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # dest -> line of its key
    keys: dict[str, str] = field(default_factory=dict)  # dest -> key as written
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    xl_memory_mib: int | None = None  # memory/maxmem given the xl way, resolved at merge
    notes: list[str] = field(default_factory=list)

    def where(self, dest: str) -> str:
        line = self.lines.get(dest)
        return f"{self.path}:{line}" if line else self.path


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


# ---- reading the file ---------------------------------------------------------------------
_KEY_LINE = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")
_TABLE_LINE = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")


def _key_lines(text: str) -> dict[str, int]:
    """First line of each top-level key (tomllib does not say where a key was)."""
    out: dict[str, int] = {}
    in_table = False
    for n, line in enumerate(text.splitlines(), start=1):
        t = _TABLE_LINE.match(line)
        if t and not line.lstrip().startswith(("[\"", "['")) and "=" not in line.split("]")[0]:
            out.setdefault(t.group(1).strip().strip("\"'"), n)
            in_table = True
            continue
        m = _KEY_LINE.match(line)
        if m and not in_table:
            out.setdefault(next(g for g in m.groups() if g), n)
    return out


def _type_name(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean"
    return {int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def _flag(v: object) -> bool | None:
    """xl's 0/1 flags (and TOML booleans)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    return None


def run_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option name (without --) -> action, for every option a file may set."""
    out = {}
    for a in parser._actions:
        if a.dest in NOT_IN_FILE or not a.option_strings:
            continue
        for opt in a.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = a
    return out


def _convert(action: argparse.Action, v: object) -> object:
    """One value for `action`, checked as argparse would check it; ValueError if wrong."""
    if isinstance(action, argparse._StoreTrueAction):
        f = _flag(v)
        if f is None:
            raise ValueError(f"expected true or false, got {_type_name(v)}")
        return f
    if isinstance(action, argparse._AppendAction):
        items = v if isinstance(v, list) else [v]
        if any(isinstance(x, list | dict) for x in items):
            raise ValueError("expected a string or an array of strings, got a nested value")
        return [_one(action, x) for x in items]
    return _one(action, v)


def _one(action: argparse.Action, v: object) -> object:
    t = action.type
    if isinstance(v, bool) or isinstance(v, list | dict):
        raise ValueError(f"expected {_expected(action)}, got {_type_name(v)}")
    if t in (int, float) or getattr(t, "__name__", "") == "_nonneg_int":
        if isinstance(v, str) or (t is not float and isinstance(v, float)):
            raise ValueError(f"expected {_expected(action)}, got {_type_name(v)}")
        v = str(v)
    elif not isinstance(v, str):
        if getattr(t, "__name__", "") in _INT_AS_TEXT and isinstance(v, int):
            v = str(v)
        else:
            raise ValueError(f"expected {_expected(action)}, got {_type_name(v)}")
    if t is not None:
        try:
            v = t(v)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise ValueError(str(e) or f"bad value {v!r}") from None
    if action.choices is not None and v not in action.choices:
        raise ValueError(f"{v!r} is not one of {', '.join(map(str, action.choices))}")
    return v


# Option types that read text but take a TOML integer too (sizes in bytes, uids).
_INT_AS_TEXT = {"_size", "uid"}


def _expected(action: argparse.Action) -> str:
    t = action.type
    if t is float:
        return "a number"
    if t is int or getattr(t, "__name__", "") == "_nonneg_int":
        return "an integer"
    if action.choices:
        return "one of " + ", ".join(f'"{c}"' for c in action.choices)
    return "a string"


# xl keys: name -> (argparse dest it sets, how the value is read)
def _xl_vga(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f'expected "stdvga" or "none", got {_type_name(v)}')
    kind = {"stdvga": "std", "std": "std", "none": "none"}.get(v.lower())
    if kind is None:
        if v.lower() in ("cirrus", "qxl"):
            raise ValueError(f'{v!r} is not emulated; use vga = "stdvga" (or "none")')
        raise ValueError(f'{v!r}: expected "stdvga" or "none"')
    return kind


def _xl_stdvga(v: object) -> str:
    f = _flag(v)
    if f is None:
        raise ValueError(f"expected 0 or 1, got {_type_name(v)}")
    if not f:
        raise ValueError('stdvga = 0 asks for the Cirrus VGA, which is not emulated; use '
                         'vga = "stdvga"')
    return "std"


def _onoff(v: object) -> str:
    f = _flag(v)
    if f is not None:
        return "on" if f else "off"
    if isinstance(v, str) and v in ("on", "off"):
        return v
    raise ValueError(f'expected 0 or 1 (or "on"/"off"), got {v!r}')


def _pos_int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {_type_name(v)}")
    if v <= 0:
        raise ValueError(f"{v} must be positive")
    return v


XL_KEYS: dict[str, str] = {
    "vif": "nic", "usbdevice": "usb", "videoram": "vga_mem", "xen_platform_pci": "xen_platform",
    "ramdisk": "initrd", "cmdline": "append", "stdvga": "vga", "bios_path_override": "bios",
}
# Keys xl has and devmodel takes note of without a daemon option.
XL_NOTED = ("vnc", "vnclisten", "vncdisplay", "vncunused", "vncpasswd", "type", "builder",
            "maxmem")


def load_config(path: str, parser: argparse.ArgumentParser) -> Config:
    """Read `path` (TOML) against the options of `parser` (devmodel run's)."""
    cfg = Config(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        cfg.problems.append(Problem(path, f"cannot read the config file: {e.strerror}"))
        return cfg
    try:
        text = raw.decode()
        data = tomllib.loads(text)
    except UnicodeDecodeError as e:
        cfg.problems.append(Problem(path, f"not UTF-8 text: {e}"))
        return cfg
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{path}:{m.group(1)}" if m else path
        cfg.problems.append(Problem(where, f"TOML syntax error: {e}"))
        return cfg
    lines = _key_lines(text)
    actions = run_actions(parser)
    known = sorted(set(actions) | {k.replace("-", "_") for k in actions} | set(XL_KEYS)
                   | set(XL_NOTED) | {"memory", "vga", "bios", "acpi", "usb"})
    seen: dict[str, str] = {}  # dest -> key that set it
    noted: dict[str, object] = {}

    def problem(key: str, text: str) -> None:
        line = lines.get(key)
        cfg.problems.append(Problem(f"{path}:{line}" if line else path, f"{key}: {text}"))

    def put(key: str, dest: str, value: object) -> None:
        if dest in seen:
            problem(key, f"sets the same option as {seen[dest]!r} (given twice)")
            return
        seen[dest] = key
        cfg.values[dest] = value
        cfg.keys[dest] = key
        if key in lines:
            cfg.lines[dest] = lines[key]

    for key, v in data.items():
        try:
            if key in XL_NOTED and not (key == "vnc" and isinstance(v, str)):
                noted[key] = v
                continue
            if key == "memory" and isinstance(v, int) and not isinstance(v, bool):
                # xl: MiB of the domain, video RAM included (libxl: -m = memory - videoram).
                noted["memory"] = _pos_int(v)
                seen["memory"] = key
                if key in lines:
                    cfg.lines["memory"] = lines[key]
                continue
            if key == "vga":
                put(key, "vga", _xl_vga(v))
            elif key == "stdvga":
                put(key, "vga", _xl_stdvga(v))
            elif key == "videoram":
                put(key, "vga_mem", _pos_int(v))
            elif key in ("xen_platform_pci", "acpi", "xen-platform", "xen_platform"):
                put(key, actions["xen-platform" if key != "acpi" else "acpi"].dest, _onoff(v))
            elif key == "bios" and isinstance(v, str) and v.lower() in XL_FIRMWARE + ("rombios",):
                if v.lower() == "rombios":
                    raise ValueError('ROMBIOS needs qemu-traditional; use bios = "seabios"')
                cfg.notes.append(f"firmware {v.lower()} (loaded by hvmloader, not by devmodel)")
            elif key == "usb" and _flag(v) is not None:
                if _flag(v) and "usbdevice" not in data:
                    cfg.warnings.append(Problem(f"{path}:{lines.get(key, '?')}",
                                                "usb = 1 without usbdevice: devmodel adds the UHCI "
                                                "controller only with a device"))
            elif key in XL_KEYS:
                action = actions[XL_KEYS[key].replace("_", "-")]
                put(key, action.dest, _convert(action, v))
            elif key in actions or key.replace("_", "-") in actions:
                action = actions.get(key) or actions[key.replace("_", "-")]
                put(key, action.dest, _convert(action, v))
            else:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                what = "table" if isinstance(v, dict) else "key"
                problem(key, f"unknown {what}{hint}")
        except ValueError as e:
            problem(key, str(e))

    _noted(cfg, noted, lines, problem)
    if _flag(noted.get("vnc")) and "vnc" not in cfg.values:
        _xl_vnc(cfg, noted, actions, put)
    return cfg


def _xl_vnc(cfg: Config, noted: dict[str, object], actions, put) -> None:
    """xl's vnc = 1, vnclisten, vncdisplay, vncunused as libxl passes them to QEMU:
    -vnc LISTEN:DISPLAY[,to=99] (vncunused, the default, tries the next free display)."""
    if "vnc" not in actions:
        cfg.warnings.append(Problem(cfg.where("vnc"), "vnc = 1: this devmodel has no VNC server; "
                                    "the display is not exported"))
        return
    listen = noted.get("vnclisten") if isinstance(noted.get("vnclisten"), str) else "127.0.0.1"
    display = noted.get("vncdisplay") if isinstance(noted.get("vncdisplay"), int) else 0
    spec = f"{listen}:{display}"
    if "vncdisplay" not in noted and _flag(noted.get("vncunused", 1)):
        spec += ",to=99"
    try:
        put("vnc", actions["vnc"].dest, _convert(actions["vnc"], spec))
    except ValueError as e:
        cfg.problems.append(Problem(cfg.where("vnc"), f"vnc: {e}"))


def _noted(cfg: Config, noted: dict[str, object], lines: dict[str, int], problem) -> None:
    for key in ("type", "builder"):
        if key in noted and noted[key] != "hvm":
            problem(key, f"{noted[key]!r}: devmodel is the device model of HVM guests "
                         '(type = "hvm"); PVH and PV domains use --machine none')
    mem = noted.get("maxmem", noted.get("memory"))
    if "maxmem" in noted:
        try:
            _pos_int(noted["maxmem"])
        except ValueError as e:
            problem("maxmem", str(e))
            mem = noted.get("memory")
    if mem is not None:
        cfg.xl_memory_mib = mem  # type: ignore[assignment]
    for key, want in (("vnc", "flag"), ("vncunused", "flag"), ("vnclisten", str),
                      ("vncpasswd", str), ("vncdisplay", int)):
        if key not in noted:
            continue
        v = noted[key]
        if want == "flag" and _flag(v) is None:
            problem(key, f"expected 0 or 1, got {_type_name(v)}")
        elif want is str and not isinstance(v, str):
            problem(key, f"expected a string, got {_type_name(v)}")
        elif want is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            problem(key, f"expected a display number >= 0, got {v!r}")
    if noted.get("vncpasswd"):
        problem("vncpasswd", "a password in the config file is not taken; put it in a file "
                             "and set vnc-password-file = PATH")
    if "vnc" in lines:
        cfg.lines["vnc"] = lines["vnc"]



# ---- merging with the command line ----------------------------------------------------------
class _Unset(list):
    """Marks an option the command line did not give (a list, so append actions accept it)."""


def given_on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    probe = argparse.Namespace(**{a.dest: _Unset() for a in parser._actions
                                  if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace=probe)
    return {d for d, v in vars(probe).items() if not (isinstance(v, _Unset) and not v)}


def apply_config(args: argparse.Namespace, cfg: Config, given: set[str]) -> None:
    """File values into `args` where the command line said nothing."""
    # --socket and --fd exclude each other: the command line's choice drops the file's.
    exclusive = {"socket", "fd"}
    for dest, value in cfg.values.items():
        if dest in given or (dest in exclusive and exclusive & given):
            continue
        setattr(args, dest, value)
    if cfg.xl_memory_mib is not None and "memory" not in given:
        video = 0 if args.vga == "none" else args.vga_mem
        ram = cfg.xl_memory_mib - video
        if ram <= 0:
            raise ConfigError([Problem(cfg.where("memory"), f"memory = {cfg.xl_memory_mib} MiB "
                                       f"leaves no guest RAM after {video} MiB of video RAM")])
        args.memory = ram * MiB
        cfg.notes.append(f"memory {cfg.xl_memory_mib} MiB = {ram} MiB RAM + {video} MiB VRAM "
                         "(xl)")
    if args.socket is not None and args.fd is not None:
        raise ConfigError([Problem(cfg.path, "socket and fd both given: choose one")])


def origin(cfg: Config | None, dest: str, option: str) -> str:
    """Where a value came from, for messages: FILE:LINE (key) or the command-line option."""
    if cfg is not None and dest in cfg.values and dest in cfg.lines:
        return f"{cfg.path}:{cfg.lines[dest]}: {cfg.keys[dest]}"
    if cfg is not None and dest == "memory" and cfg.xl_memory_mib is not None:
        return f"{cfg.where('memory')}: memory"
    return option


# ---- the dry build --------------------------------------------------------------------------
def _file_problem(path: str, what: str, *, write: bool = False, min_size: int = 0,
                  max_size: int | None = None) -> str | None:
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{what} {path}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"{what} {path} is a directory"
    if not os.access(path, os.R_OK | (os.W_OK if write else 0)):
        return f"{what} {path}: permission denied ({'read-write' if write else 'read'})"
    size = st.st_size
    if stat.S_ISBLK(st.st_mode):
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
        except OSError:
            return None
    if min_size and size < min_size:
        return f"{what} {path} is {size} bytes, smaller than {min_size}"
    if max_size is not None and size > max_size:
        return f"{what} {path} is larger than {max_size >> 20} MiB"
    return None


def _dir_problem(path: str, what: str) -> str | None:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        return f"{what} {path}: directory {d} does not exist"
    return None


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0 or n >= 10 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


def check_machine(args: argparse.Namespace, cfg: Config | None = None
                  ) -> tuple[list[Problem], list[str]]:
    """Every problem of the machine `args` describes, and a summary of it; opens nothing for
    good and starts nothing. The same checks `devmodel run` would stop at, all at once."""
    from devmodel.backends.chardev import parse_chardev
    from devmodel.bios.rtc import BOOT_NIBBLES
    from devmodel.ide.diskspec import parse_diskspec
    from devmodel.nic.nicspec import parse_nicspec
    from devmodel.pc import MAX_SERIAL
    from devmodel.usb.usbspec import MAX_USB_DEVICES, parse_usbspec

    problems: list[Problem] = []
    summary: list[str] = []

    def bad(dest: str, option: str, text: str, index: int | None = None) -> None:
        where = origin(cfg, dest, option)
        if index is not None:
            where += f"[{index}]"
        problems.append(Problem(where, text))

    def parsed(dest: str, option: str, texts: list[str], parse):
        """(index, parsed spec) of each of `texts` that `parse` takes; the others are problems."""
        for i, text in enumerate(texts):
            try:
                spec = parse(text)
            except ValueError as e:
                bad(dest, option, str(e), i)
                continue
            yield i, spec

    machine = getattr(args, "machine", "pc")
    if not 1 <= args.vcpus <= MAX_VCPUS:
        bad("vcpus", "--vcpus", f"{args.vcpus} vCPUs: must be 1-{MAX_VCPUS}")
    if args.memory < MiB:
        bad("memory", "--memory", f"{args.memory} bytes of RAM: at least 1 MiB")
    ident = f'domain {args.domid if getattr(args, "domid", None) is not None else "-"}'
    if args.name:
        ident += f' "{args.name}"'
    if args.uuid is not None:
        import uuid

        ident += f" uuid {uuid.UUID(bytes=args.uuid)}"
    summary.append(f"machine   {machine}; {ident}; {args.vcpus} vCPU(s), "
                   f"{_human(args.memory)} RAM")

    # Disks
    taken: dict[tuple[int, int], str] = {}
    for i, spec in parsed("disk", "--disk", args.disk, parse_diskspec):
        if spec.position in taken:
            bad("disk", "--disk", f"two disks on one vdev: {taken[spec.position]} and {spec.vdev} "
                f"are both IDE channel {spec.position[0]} unit {spec.position[1]}", i)
            continue
        taken[spec.position] = spec.vdev
        if spec.format != "raw":
            bad("disk", "--disk", f"{spec.vdev}: format {spec.format} needs the NBD backend "
                "(qemu-nbd), which this daemon does not have yet; use a raw image", i)
            continue
        kind = "cdrom" if spec.cdrom else "disk"
        if spec.cdrom and not spec.target:
            summary.append(f"{spec.vdev:<9} cdrom, empty")
            continue
        err = _file_problem(spec.target, f"{spec.vdev}: {'CD-ROM' if spec.cdrom else 'disk'} image",
                            write=not (spec.readonly or spec.cdrom),
                            min_size=2048 if spec.cdrom else 512)
        if err:
            bad("disk", "--disk", err, i)
            continue
        size = os.stat(spec.target).st_size
        access = "ro" if spec.readonly or spec.cdrom else "rw"
        summary.append(f"{spec.vdev:<9} {kind} {spec.target} ({spec.format}, {access}, "
                       f"{_human(size)})")

    # NICs
    macs: dict[bytes, int] = {}
    for i, spec in parsed("nic", "--nic", args.nic, parse_nicspec):
        if spec.mac in macs:
            bad("nic", "--nic", f"MAC {spec.mac_text} is also NIC {macs[spec.mac]}'s", i)
        macs.setdefault(spec.mac, i)
        err = _nic_backend_problem(spec)
        if err:
            bad("nic", "--nic", err, i)
            continue
        where = {"tap": f"tap {spec.ifname or '(named by the kernel)'}",
                 "udp": f"udp peer {spec.peer}", "unix": f"unix {spec.path} -> {spec.peer}",
                 "null": "null"}[spec.backend]
        summary.append(f"nic {i:<5} {spec.model} {spec.mac_text} on {where}")

    # USB
    if len(args.usb) > MAX_USB_DEVICES:
        bad("usb", "--usb", f"{len(args.usb)} USB devices: at most {MAX_USB_DEVICES}")
    for i, spec in parsed("usb", "--usb", args.usb, parse_usbspec):
        if spec.kind == "disk":
            err = _file_problem(spec.path, "USB disk image", write=not spec.readonly, min_size=512)
            if err:
                bad("usb", "--usb", err, i)
                continue
        summary.append(f"usb {i:<5} {spec.kind}{' ' + spec.path if spec.path else ''}")

    # Serial ports and the debug console
    serial = args.serial if args.serial is not None else ["null"]
    if serial == ["none"]:
        serial = []
    if len(serial) > MAX_SERIAL:
        bad("serial", "--serial", f"{len(serial)} serial ports: at most {MAX_SERIAL} (COM1-COM4)")
    for i, text in enumerate(serial):
        err = _chardev_problem(parse_chardev, text)
        if err:
            bad("serial", "--serial", err, i)
        elif text != "none":
            summary.append(f"serial    COM{i + 1} {text}")
    if args.debugcon:
        err = _chardev_problem(parse_chardev, args.debugcon)
        if err:
            bad("debugcon", "--debugcon", err)

    # VGA, platform, firmware
    if args.vga == "std":
        from devmodel.vga.build import check_vram_mb

        try:
            check_vram_mb(args.vga_mem)
            summary.append(f"vga       std, {args.vga_mem} MiB VRAM")
        except ValueError as e:
            bad("vga_mem", "--vga-mem", str(e))
    if getattr(args, "vnc", None):
        summary.append(f"vnc       {args.vnc}")
    if args.xen_platform == "on":
        from devmodel.xen import parse_blacklist_entry

        for i, entry in enumerate(args.xen_driver_blacklist):
            try:
                parse_blacklist_entry(entry)
            except ValueError as e:
                bad("xen_driver_blacklist", "--xen-driver-blacklist", str(e), i)
    slots = 30 - (args.xen_platform == "on") - (args.vga == "std")
    if len(args.nic) > slots:
        bad("nic", "--nic", f"{len(args.nic)} NICs: only {slots} free PCI slots")
    order = args.boot
    if not order or len(order) > 3 or any(ch not in BOOT_NIBBLES for ch in order):
        bad("boot", "--boot", f"boot order {order!r}: up to 3 of a, c, d, n")
    if args.boot_fail_wait is not None and args.boot_fail_wait < 0:
        bad("boot_fail_wait", "--boot-fail-wait", "must not be negative")
    if args.rtc_base is not None and args.rtc_base < 0:
        bad("rtc_base", "--rtc-base", "must not be negative")
    if args.bios:
        from devmodel.backends.memfd import load_firmware

        try:
            load_firmware(args.bios)
        except ValueError as e:
            bad("bios", "--bios", str(e))
    if args.kernel:
        for dest, option, path in (("kernel", "--kernel", args.kernel),
                                   ("initrd", "--initrd", args.initrd)):
            if path:
                err = _file_problem(path, option[2:], max_size=256 << 20)
                if err:
                    bad(dest, option, err)
        summary.append(f"kernel    {args.kernel}" + (f" initrd {args.initrd}" if args.initrd else "")
                       + (f' cmdline "{args.append}"' if args.append else ""))
    elif args.initrd or args.append:
        bad("initrd" if args.initrd else "append", "--initrd" if args.initrd else "--append",
            "--initrd and --append need --kernel")
    for i, (_name, path) in enumerate(args.fw_cfg):
        err = _file_problem(path, "fw_cfg file", max_size=256 << 20)
        if err:
            bad("fw_cfg", "--fw-cfg", err, i)
    summary.append(f"platform  xen-platform {args.xen_platform} (unplug {args.unplug_policy}), "
                   f"acpi {args.acpi}, boot {args.boot}"
                   + (f", bios {args.bios}" if args.bios else ""))
    if machine == "none":
        devices = [o for o, v in (("disk", args.disk), ("nic", args.nic), ("usb", args.usb),
                                  ("bios", args.bios)) if v]
        if devices:
            bad("machine", "--machine", f"machine none has no emulated devices: remove "
                f"{', '.join(devices)}")
        summary = summary[:1]

    # Files and sockets of the daemon itself
    _daemon_paths(args, bad, summary)
    if cfg is not None:
        summary.extend(f"note      {n}" for n in cfg.notes)
    return problems, summary


def _chardev_problem(parse_chardev, text: str) -> str | None:
    if text == "none":
        return None
    try:
        spec = parse_chardev(text)
    except ValueError as e:
        return str(e)
    if spec.kind == "file":
        return _dir_problem(spec.path, "file")
    if spec.kind == "unix":
        if spec.server:
            return _dir_problem(spec.path, "socket")
        if not os.path.exists(spec.path):
            return f"unix:{spec.path}: no such socket to connect to (add ,server to listen)"
    return None


def _nic_backend_problem(spec) -> str | None:
    from devmodel.backends.net import _hostport

    try:
        if spec.backend == "udp":
            if spec.peer:
                _hostport(spec.peer)
            if spec.path:
                _hostport(spec.path)
        elif spec.backend == "unix":
            for p in (spec.path, spec.peer):
                if p and len(os.fsencode(p)) > 107:
                    return f"socket path {p} is longer than 107 bytes"
            if spec.path and (err := _dir_problem(spec.path, "socket")):
                return err
    except ValueError as e:
        return str(e)
    if spec.capture and (err := _dir_problem(spec.capture, "capture")):
        return err
    if spec.rom and (err := _file_problem(spec.rom, "option ROM", max_size=1 << 20)):
        return err
    if spec.netns and "/" in spec.netns and not os.path.exists(spec.netns):
        return f"network namespace {spec.netns} does not exist"
    return None


def _daemon_paths(args: argparse.Namespace, bad, summary: list[str]) -> None:
    sockets: dict[str, str] = {}
    paths = [("socket", "--socket", getattr(args, "socket", None))]
    paths += [("qmp", "--qmp", p) for p in getattr(args, "qmp", []) or []]
    for dest, option, path in paths:
        if not path:
            continue
        if len(os.fsencode(path)) > 107:
            bad(dest, option, f"socket path {path} is longer than 107 bytes")
        elif err := _dir_problem(path, option[2:]):
            bad(dest, option, err)
        key = os.path.abspath(path)
        if key in sockets:
            bad(dest, option, f"{path} is also the {sockets[key]} socket")
        sockets[key] = option[2:]
    for dest, option in (("trace", "--trace"), ("pidfile", "--pidfile")):
        path = getattr(args, dest, None)
        if path and (err := _dir_problem(path, option[2:])):
            bad(dest, option, err)
    log_file = getattr(args, "log_file", None)
    if log_file and log_file != "journal" and (err := _dir_problem(log_file, "log file")):
        bad("log_file", "--log-file", err)
    restore = getattr(args, "restore", None)
    if restore and (err := _file_problem(restore, "state file")):
        bad("restore", "--restore", err)
    monitors = ", ".join(p for _, _, p in paths[1:] if p)
    if getattr(args, "socket", None) or monitors:
        summary.append(f"sockets   hypervisor {getattr(args, 'socket', None) or '-'}"
                       + (f"; qmp {monitors}" if monitors else ""))
