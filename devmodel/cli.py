"""Command line: `devmodel run` (the daemon), `devmodel boot` (real firmware through the daemon
on the simulated CPU), `devmodel demo` (a guided tour)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from devmodel import __version__
from devmodel.wire.constants import MAX_VCPUS


class LogfmtFormatter(logging.Formatter):
    """One structured line per event: ts=... level=... logger=... msg="..."."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        line = (f'ts={self.formatTime(record, "%Y-%m-%dT%H:%M:%S")}.{int(record.msecs):03d} '
                f'level={record.levelname.lower()} logger={record.name} pid={record.process} '
                f'msg="{msg}"')
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'")
            line += f' exc="{exc}"'
        return line


def setup_logging(level: str, path: str | None) -> None:
    handler: logging.Handler
    if path == "journal":  # the systemd journal, native protocol (a file: ./journal)
        from devmodel.lifecycle import JournalHandler, journal_available

        if journal_available() is None:
            raise SystemExit("devmodel: --log-file journal: no systemd journal on this host "
                             "(/run/systemd/journal/socket does not exist); log to a file")
        try:
            handler = JournalHandler()
        except OSError as e:
            raise SystemExit(f"devmodel: --log-file journal: {e.strerror}") from None
    else:
        handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _nonneg_int(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return v


def add_run_options(p: argparse.ArgumentParser, in_file: bool = True) -> None:
    """The options of `devmodel run` (and of `devmodel validate`, which checks them)."""
    # --domid and --socket/--fd are required (checked once a config file may have given them).
    p.add_argument("--domid", type=_nonneg_int, help="guest domain id (required)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="listen on this Unix socket (mode 0600)")
    where.add_argument("--fd", type=_nonneg_int, metavar="N",
                       help="serve an inherited Unix socket: listening or already connected")
    p.add_argument("--clock", choices=("monotonic", "virtual"), default="monotonic",
                   help="time source of device timers; virtual = CLOCK messages")
    p.add_argument("--trace", metavar="FILE", help="record every message, both directions")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-file", metavar="FILE",
                   help="log here instead of stderr; journal: the systemd journal")
    p.add_argument("--machine", choices=("pc", "none"), default="pc",
                   help="pc: the i440FX/PIIX3 PC (default); none: no emulated devices, for a "
                        "PVH or PV domain (docs/machine-none.md)")
    p.add_argument("--strict", action="store_true",
                   help="a device exception stops the daemon (for fuzzing and tests)")
    p.add_argument("--qmp", action="append", default=[], metavar="PATH",
                   help="serve a QMP monitor on this Unix socket (mode 0600; one client at a "
                        "time, as QEMU; repeatable for more monitors)")
    p.add_argument("--paused", action="store_true",
                   help="start with the ioreq server disabled until QMP cont (QEMU's -S; "
                        "query-status says prelaunch)")
    p.add_argument("--restore", metavar="FILE",
                   help="start from a device-state file written by xen-save-devices-state; "
                        "the daemon starts paused (QMP cont runs it)")
    p.add_argument("--screendump", metavar="FILE.png",
                   help="write the VGA screen as PNG when the daemon exits")
    p.add_argument("--screentext", metavar="FILE.txt",
                   help="write the VGA text screen as plain text when the daemon exits (empty "
                        "outside text modes)")
    p.add_argument("--screen-rate", type=float, default=5.0, metavar="HZ",
                   help="render the VGA's latest frame at most HZ times a second, off the "
                        "ioreq path (default 5; 0: only on demand)")
    add_machine_options(p)
    from devmodel.lockdown import add_options as add_lockdown_options

    add_lockdown_options(p)

    g = p.add_argument_group("configuration and lifecycle")
    if in_file:
        g.add_argument("--config", metavar="FILE",
                       help="TOML file with xl-style keys (disk, vif, usbdevice, serial, vga, "
                            "memory...) and any option by its long name; options given here win")
    g.add_argument("--pidfile", metavar="FILE",
                   help="write the daemon's pid here once serving, remove it at exit; refuse to "
                        "start while it names a running devmodel")
    g.add_argument("--ready-fd", type=_nonneg_int, metavar="N",
                   help='write "READY\\n" to this inherited fd once serving, then close it')
    g.add_argument("--daemonize", action="store_true",
                   help="detach (double fork, setsid, stdio to /dev/null); exit 0 once the daemon "
                        "is ready, or with its error")


_RUN_PARSERS: dict[str, argparse.ArgumentParser] = {}


def _register_run_parsers(run: argparse.ArgumentParser, validate: argparse.ArgumentParser) -> None:
    _RUN_PARSERS["run"] = run
    _RUN_PARSERS["validate"] = validate


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """`only="run"` (or "validate") leaves out the other commands' parsers: they import the
    simulator (Unicorn) and the fuzzer, megabytes a daemon has no use for (bench/footprint.py)."""
    p = argparse.ArgumentParser(prog="devmodel", description="Device-model daemon for HVM guests.")
    p.add_argument("--version", action="version", version=f"devmodel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="serve one domain's hypervisor connection")
    add_run_options(run)
    validate = sub.add_parser(
        "validate", help="check a config file (and options) without starting anything",
        description="Build the machine of CONFIG and the options in a dry mode (specs parsed, "
                    "files looked at, nothing opened for good or started) and report every "
                    "problem at once. Exit 0 with a summary of the machine, 1 if anything is "
                    "wrong, 2 on bad options.")
    validate.add_argument("config", metavar="CONFIG", help="TOML config file (as run --config)")
    add_run_options(validate, in_file=False)
    _register_run_parsers(run, validate)
    if only in ("run", "validate"):
        return p

    from devmodel.boot import add_boot_options

    boot = sub.add_parser(
        "boot", help="boot firmware (SeaBIOS) and a disk through a daemon on the simulated CPU",
        description="Start a daemon (--clock virtual) and the hypervisor simulator in this "
                    "process, boot, and print the debug console (0x402), port 0xE9 and COM1 as "
                    "they come. Exit 0 when TEXT appears or the guest halts with interrupts "
                    "off, 1 at the timeout or on a guest error, 2 on bad options.")
    add_boot_options(boot, add_machine_options)

    from devmodel.fuzz.cli import add_parsers as add_fuzz_parsers

    add_fuzz_parsers(sub)

    demo = sub.add_parser("demo", help="start a daemon and drive it as a hypervisor would")
    demo.add_argument("--log-level", default="warning",
                      choices=("debug", "info", "warning", "error"))
    return p


def _size(text: str) -> int:
    from devmodel.pc import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _uuid(text: str) -> bytes:
    import uuid

    try:
        return uuid.UUID(text).bytes
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _fw_cfg_file(text: str) -> tuple[str, str]:
    fields = dict(part.partition("=")[::2] for part in text.split(","))
    name, path = fields.get("name", ""), fields.get("file", "")
    if not name or not path or set(fields) - {"name", "file"}:
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=opt/NAME,file=PATH")
    if not name.startswith("opt/"):
        raise argparse.ArgumentTypeError(f"{text!r}: fw_cfg names given by users start with opt/")
    return name, path


def add_machine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("machine")
    g.add_argument("--memory", type=_size, default="128M", metavar="SIZE",
                   help="guest RAM size as the toolstack gives it (default 128M)")
    g.add_argument("--vcpus", type=int, default=1, metavar="N", help=f"number of vCPUs (1-{MAX_VCPUS})")
    g.add_argument("--name", default="", help="domain name (SMBIOS)")
    g.add_argument("--uuid", type=_uuid, default=None, help="domain UUID (SMBIOS)")
    g.add_argument("--bios", metavar="FILE",
                   help="system BIOS to share with the hypervisor (QEMU-style platform); "
                        "omit on Xen, where hvmloader loads the firmware")
    g.add_argument("--serial", action="append", metavar="SPEC",
                   help="COM1, COM2... in order: pty, file:PATH, unix:PATH[,server], stdio, "
                        "null or none (repeatable; default one COM1 on null)")
    g.add_argument("--disk", action="append", default=[], metavar="SPEC",
                   help="an IDE disk in xl's DISKSPEC syntax, e.g. "
                        "target=/img.raw,format=raw,vdev=hda,access=rw (repeatable)")
    g.add_argument("--nic", action="append", default=[], metavar="SPEC",
                   help="an e1000 NIC in xl's vif syntax, e.g. mac=00:16:3e:00:00:01,model=e1000,"
                        "bridge=xenbr0,vifname=vif1.0 (opens the tap vif1.0-emu), or "
                        "backend=tap,ifname=NAME[,create=on], or QEMU's netdevs: "
                        "backend=stream,path=SOCK|addr=HOST:PORT[,server=on], "
                        "backend=dgram,peer=ADDR[,path=LOCAL] (repeatable)")
    g.add_argument("--usb", action="append", default=[], metavar="DEV",
                   help="a USB device on the UHCI at 00:01.2: tablet, keyboard, mouse or "
                        "disk:[format=FMT:]PATH[,ro] (repeatable; xl's usbdevice= list)")
    g.add_argument("--vga", choices=("std", "none"), default="std",
                   help="standard VGA with Bochs VBE (default) or none")
    g.add_argument("--vga-mem", type=int, default=16, metavar="MB", help="VRAM size (default 16)")
    g.add_argument("--vnc", metavar="HOST:DISPLAY|unix:PATH",
                   help="serve the VGA over VNC (RFB 3.8) on TCP port 5900+DISPLAY (HOST empty: "
                        "127.0.0.1) or a Unix socket; append ,password for VNC authentication, "
                        ",to=N to try displays up to N")
    g.add_argument("--vnc-password-file", metavar="FILE",
                   help="VNC password (first line, 8 bytes used); turns on VNC authentication")
    g.add_argument("--xen-platform", choices=("on", "off"), default="on",
                   help="the Xen platform device at 00:02.0 (xl's xen_platform_pci)")
    g.add_argument("--unplug-policy", choices=("honour", "ignore"), default="honour",
                   help="whether PV drivers may unplug the emulated disks and NICs")
    g.add_argument("--xen-driver-blacklist", action="append", default=[], metavar="PRODUCT[/BUILD]",
                   help="PV driver versions refused the unplug (repeatable)")
    g.add_argument("--debugcon", metavar="SPEC",
                   help="also send the firmware debug console (ports 0x402, 0xE9) to SPEC")
    g.add_argument("--boot", default="cd", metavar="ORDER",
                   help="boot order as QEMU's -boot order: a floppy, c disk, d CD-ROM, n network")
    g.add_argument("--boot-fail-wait", type=float, metavar="S",
                   help="seconds before the BIOS retries when nothing boots (default: never)")
    g.add_argument("--boot-menu", action="store_true", help="let the BIOS offer its boot menu")
    g.add_argument("--kernel", metavar="FILE", help="direct kernel boot (as QEMU's -kernel)")
    g.add_argument("--initrd", metavar="FILE")
    g.add_argument("--append", default="", metavar="CMDLINE")
    g.add_argument("--fw-cfg", action="append", default=[], type=_fw_cfg_file,
                   metavar="name=opt/NAME,file=PATH", help="an extra fw_cfg file (repeatable)")
    g.add_argument("--rtc-base", type=int, metavar="EPOCH",
                   help="RTC time at start, seconds since 1970 UTC (default: now)")
    g.add_argument("--acpi", choices=("on", "off"), default="on",
                   help="the PIIX4 ACPI power-management function at 00:01.3")


def machine_options(args: argparse.Namespace):
    from devmodel.pc import PcOptions

    if not 1 <= args.vcpus <= MAX_VCPUS:
        raise SystemExit(f"devmodel: --vcpus {args.vcpus}: must be 1-{MAX_VCPUS}")
    opts = PcOptions(virtual_clock=getattr(args, "clock", "monotonic") == "virtual",
                     strict=getattr(args, "strict", False), memory=args.memory, vcpus=args.vcpus,
                     name=args.name, bios=args.bios, debugcon=args.debugcon,
                     boot_order=args.boot, boot_fail_wait=args.boot_fail_wait,
                     boot_menu=args.boot_menu, kernel=args.kernel, initrd=args.initrd,
                     append=args.append, fw_cfg_files=args.fw_cfg, rtc_base=args.rtc_base,
                     acpi=args.acpi == "on", disks=args.disk, nics=args.nic, usb=args.usb, vga=args.vga,
                     vga_mem=args.vga_mem, vnc=args.vnc, vnc_password_file=args.vnc_password_file,
                     xen_platform=args.xen_platform == "on",
                     unplug_policy=args.unplug_policy, xen_blacklist=args.xen_driver_blacklist)
    if args.serial is not None:
        opts.serial = [] if args.serial == ["none"] else args.serial
    if args.uuid is not None:
        opts.uuid = args.uuid
    return opts


def _inherited_socket(fd: int) -> tuple[socket.socket | None, socket.socket | None]:
    try:
        s = socket.socket(fileno=fd)
    except OSError as e:
        raise SystemExit(f"devmodel: --fd {fd}: not a usable socket: {e}") from None
    if s.family != socket.AF_UNIX or s.type != socket.SOCK_STREAM:
        raise SystemExit(f"devmodel: --fd {fd}: need an AF_UNIX SOCK_STREAM socket")
    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return s, None
    return None, s


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def resolve_config(args: argparse.Namespace, argv: list[str]):
    """`--config FILE` (run) or CONFIG (validate) merged into `args`: what the command line
    gave wins. Returns the Config (None without one); its problems are left to the caller."""
    if not getattr(args, "config", None):
        return None
    from devmodel import config as cf  # tomllib, difflib: only with a config file

    cfg = cf.load_config(args.config, _RUN_PARSERS["run"])
    rest = argv[argv.index(args.command) + 1:] if args.command in argv else argv
    try:
        cf.apply_config(args, cfg, cf.given_on_command_line(_RUN_PARSERS[args.command], rest))
    except cf.ConfigError as e:
        cfg.problems.extend(e.problems)
    return cfg


def _print_problems(prefix: str, warnings: list, problems: list, path: str) -> str | None:
    """Every warning, then every problem, to stderr, each after `prefix`; the closing line
    ("N problems in PATH") when there was any problem."""
    for w in warnings:
        print(f"{prefix}warning: {w}", file=sys.stderr)
    for pr in problems:
        print(f"{prefix}{pr}", file=sys.stderr)
    n = len(problems)
    return f"{n} problem{'s' if n > 1 else ''} in {path}" if n else None


def _report_config(cfg) -> None:
    """A config file's problems, all of them, then exit 1."""
    if cfg is None:
        return
    if tail := _print_problems("devmodel: ", cfg.warnings, cfg.problems, cfg.path):
        raise SystemExit(f"devmodel: {tail}")


def cmd_validate(args: argparse.Namespace, cfg) -> int:
    from devmodel import config as cf

    problems = list(cfg.problems) if cfg is not None else []
    more, summary = cf.check_machine(args, cfg)
    problems += more
    warnings = cfg.warnings if cfg is not None else []
    if tail := _print_problems("", warnings, problems, args.config):
        print(f"devmodel validate: {tail}", file=sys.stderr)
        return 1
    print(f"{args.config}: ok")
    for line in summary:
        print(f"  {line}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Lifecycle around the daemon: pidfile, ready fd, --daemonize (whose waiting parent
    learns any start-up error through its pipe: the daemon's stderr is /dev/null)."""
    from devmodel.lifecycle import Lifecycle

    lc = Lifecycle(args.pidfile, args.ready_fd)
    if args.daemonize:
        lc.daemonize()
    args.lifecycle = lc
    try:
        return _cmd_run(args)
    except SystemExit as e:
        if lc.pipe is not None:
            code = e.code
            msg = code if isinstance(code, str) else f"devmodel: exited with {code} before ready"
            logging.getLogger("devmodel").error("%s", msg)
            lc.failed(1 if isinstance(code, str) else int(code or 1), msg)
        raise
    except BaseException as e:
        if lc.pipe is not None:
            logging.getLogger("devmodel").exception("start-up failed")
            lc.failed(1, f"devmodel: {type(e).__name__}: {e}")
        raise
    finally:
        lc.close()


def _cmd_run(args: argparse.Namespace) -> int:
    from devmodel.pc import build_machine_none, build_pc

    setup_logging(args.log_level, args.log_file)
    log = logging.getLogger("devmodel")
    # Until the event loop takes over signals, SIGTERM/SIGINT end start-up cleanly (exit 0).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    opts = machine_options(args)
    from devmodel import lockdown

    try:
        args.lockdown = lockdown.plan_from_args(args)  # checked before anything is opened
    except ValueError as e:
        raise SystemExit(f"devmodel: {e}") from None
    try:
        # Bad device options fail here, before the socket exists.
        machine = build_machine_none(opts) if args.machine == "none" else build_pc(opts)
    except (ValueError, OSError) as e:
        raise SystemExit(f"devmodel: {e}") from None
    try:
        _build_screen(args, machine)
        controller = _controller(args, opts, machine)
        return _serve(args, machine, log, controller)
    finally:
        machine.close_backends()  # idempotent; covers exits before the daemon takes over


def _build_screen(args: argparse.Namespace, machine) -> None:
    """The VGA's rate-limited renderer and the --screendump/--screentext files, opened now
    (a bad path fails start-up; before any lock-down)."""
    from devmodel.backends.screen import build_screen

    try:
        build_screen(machine, rate_hz=args.screen_rate, screendump=args.screendump,
                     screentext=args.screentext)
    except ValueError as e:
        raise SystemExit(f"devmodel: {e}") from None


def _controller(args: argparse.Namespace, opts, machine):
    """The QMP facade; with --restore the state file is checked and applied here, before any
    socket exists: a bad file ends start-up with its reason, nothing half restored."""
    import dataclasses

    from devmodel.controller import MAX_STATE_FILE, Controller
    from devmodel.pc import build_pc
    from devmodel.statefile import StateFileError

    # Scratch machines (to validate a state file before applying it) are built like this one
    # but without the backends that must stay unique: ptys, sockets, the debug console, VNC,
    # and the NICs' networks (a second bind of the same UDP port or tap fails: --restore of
    # a machine with a NIC could never start); disks shared read-only (a qcow2's qemu-nbd
    # would not get the image lock the live one holds).
    scratch_opts = dataclasses.replace(
        opts, serial=["none" if sp == "none" else "null" for sp in opts.serial], debugcon=None,
        vnc=None, vnc_password_file=None, nics=[_scratch_nic(n) for n in opts.nics],
        shared_disks=True)
    state = "paused" if args.restore else ("prelaunch" if args.paused else "running")
    controller = Controller(machine, run_state=state, vcpus=opts.vcpus, name=opts.name,
                            uuid=opts.uuid, scratch_factory=lambda: build_pc(scratch_opts))
    if args.restore:
        try:
            with open(args.restore, "rb") as f:
                data = f.read(MAX_STATE_FILE + 1)
            if len(data) > MAX_STATE_FILE:
                raise StateFileError("file is larger than any device-state file")
            controller.load_state(data)
        except (OSError, StateFileError) as e:
            raise SystemExit(f"devmodel: --restore {args.restore}: {e}") from None
        logging.getLogger("devmodel").info("device state restored from %s", args.restore)
    return controller


def _scratch_nic(text: str) -> str:
    """The same NIC (model, MAC, option ROM, devid: its device name) on the null backend."""
    from devmodel.nic.nicspec import parse_nicspec

    spec = parse_nicspec(text)
    rom = ",rom=off" if spec.rom is None else (f",rom={spec.rom}" if spec.rom else "")
    devid = "" if spec.devid is None else f",devid={spec.devid}"
    return f"model={spec.model},mac={spec.mac_text},backend=null{rom}{devid}"


def _serve(args: argparse.Namespace, machine, log: logging.Logger, controller=None) -> int:
    from devmodel import lockdown
    from devmodel.daemon import Daemon, DaemonConfig, listen_unix

    plan = getattr(args, "lockdown", None) or lockdown.Plan()
    config = DaemonConfig(domid=args.domid, virtual_clock=args.clock == "virtual",
                          trace_path=args.trace, allow_uids=lockdown.allowed_from_args(args))
    if args.trace:
        try:
            open(args.trace, "ab").close()
            if plan.runas or plan.chroot:  # the path may be out of reach then: open it now
                config.trace_path = os.open(args.trace, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except OSError as e:
            raise SystemExit(f"devmodel: --trace {args.trace}: {e}") from None
    # QMP sockets first: whoever waits for the hypervisor socket finds them ready.
    qmp_paths = list(getattr(args, "qmp", []) or [])
    qmp_listeners = []
    try:
        for path in qmp_paths:
            qmp_listeners.append(listen_unix(path))
    except OSError as e:
        for ls in qmp_listeners:
            ls.close()
        raise SystemExit(f"devmodel: --qmp {path}: {e}") from None
    if args.socket:
        try:
            listener, connected = listen_unix(args.socket), None
        except OSError as e:
            raise SystemExit(f"devmodel: --socket {args.socket}: {e}") from None
    else:
        listener, connected = _inherited_socket(args.fd)
    daemon = Daemon(lambda: machine, config, controller=controller, qmp_listeners=qmp_listeners)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    lc = getattr(args, "lifecycle", None)
    try:  # from here on, any exit removes the sockets
        if lc is not None and lc.pidfile is not None:  # serving: every socket listens
            lc.pidfile.write()
        try:  # backends open, sockets listening: now chroot, limits, drop privileges, seccomp
            lockdown.apply(plan)
        except (OSError, RuntimeError) as e:
            raise SystemExit(f"devmodel: lock-down failed: {e}") from None
        log.info("devmodel %s serving domain %d on %s", __version__, args.domid,
                 args.socket or f"fd {args.fd}")

        def ready() -> None:
            log.info("ready for the hypervisor")
            if lc is not None:
                lc.ready()  # READY to --ready-fd and to a --daemonize parent

        why = runner(daemon.serve(listener, connected, ready=ready))
        # The loop is closed; asyncio's (not uvloop's) restored SIG_DFL then. The daemon
        # ignores SIGTERM/SIGINT once its shutdown began (daemon.py): keep it so until exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
    finally:
        for path in ([args.socket] if args.socket else []) + qmp_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
    log.info("exiting: %s", why)
    return 0


def cmd_boot(args: argparse.Namespace, argv: list[str]) -> int:
    from devmodel.boot import run_boot

    return run_boot(args, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=first if first in ("run", "validate") else None).parse_args(argv)
    if args.command in ("run", "validate"):
        cfg = resolve_config(args, argv)
        if args.command == "validate":
            return cmd_validate(args, cfg)
        _report_config(cfg)
        run = _RUN_PARSERS["run"]
        if args.domid is None:
            run.error("the following arguments are required: --domid (or domid in --config)")
        if args.socket is None and args.fd is None:
            run.error("one of the arguments --socket --fd is required (or socket in --config)")
        return cmd_run(args)
    if args.command == "boot":
        return cmd_boot(args, argv)
    if args.command in ("fuzz", "replay"):
        from devmodel.fuzz import cli as fuzz_cli

        return fuzz_cli.cmd_fuzz(args) if args.command == "fuzz" else fuzz_cli.cmd_replay(args)
    if args.command == "demo":
        from devmodel.demo import main as demo_main

        return demo_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
