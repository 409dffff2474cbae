"""Command line: `devmodel run` (the daemon), `devmodel boot` (real firmware through the daemon
on the simulated CPU), `devmodel demo` (a guided tour)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from devmodel import __version__


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
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="devmodel", description="Device-model daemon for HVM guests.")
    p.add_argument("--version", action="version", version=f"devmodel {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="serve one domain's hypervisor connection")
    run.add_argument("--domid", type=_nonneg_int, required=True, help="guest domain id")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="listen on this Unix socket (mode 0600)")
    where.add_argument("--fd", type=_nonneg_int, metavar="N",
                       help="serve an inherited Unix socket: listening or already connected")
    run.add_argument("--clock", choices=("monotonic", "virtual"), default="monotonic",
                     help="time source of device timers; virtual = CLOCK messages")
    run.add_argument("--trace", metavar="FILE", help="record every message, both directions")
    run.add_argument("--log-level", default="info",
                     choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-file", metavar="FILE", help="log here instead of stderr")
    run.add_argument("--machine", choices=("pc", "none"), default="pc",
                     help="pc: the i440FX/PIIX3 PC (default); none: no emulated devices, for a "
                          "PVH or PV domain (docs/machine-none.md)")
    run.add_argument("--strict", action="store_true",
                     help="a device exception stops the daemon (for fuzzing and tests)")
    run.add_argument("--qmp", action="append", default=[], metavar="PATH",
                     help="serve a QMP monitor on this Unix socket (mode 0600; one client at a "
                          "time, as QEMU; repeatable for more monitors)")
    run.add_argument("--paused", action="store_true",
                     help="start with the ioreq server disabled until QMP cont (QEMU's -S; "
                          "query-status says prelaunch)")
    run.add_argument("--restore", metavar="FILE",
                     help="start from a device-state file written by xen-save-devices-state; "
                          "the daemon starts paused (QMP cont runs it)")
    add_machine_options(run)

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
    g.add_argument("--vcpus", type=int, default=1, metavar="N", help="number of vCPUs (1-128)")
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
                        "backend=tap,ifname=NAME[,create=on] (repeatable)")
    g.add_argument("--usb", action="append", default=[], metavar="DEV",
                   help="a USB device on the UHCI at 00:01.2: tablet, keyboard, mouse or "
                        "disk:PATH[,ro] (repeatable; xl's usbdevice= list)")
    g.add_argument("--vga", choices=("std", "none"), default="std",
                   help="standard VGA with Bochs VBE (default) or none")
    g.add_argument("--vga-mem", type=int, default=16, metavar="MB", help="VRAM size (default 16)")
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

    if not 1 <= args.vcpus <= 128:
        raise SystemExit(f"devmodel: --vcpus {args.vcpus}: must be 1-128")
    opts = PcOptions(virtual_clock=getattr(args, "clock", "monotonic") == "virtual",
                     strict=getattr(args, "strict", False), memory=args.memory, vcpus=args.vcpus,
                     name=args.name, bios=args.bios, debugcon=args.debugcon,
                     boot_order=args.boot, boot_fail_wait=args.boot_fail_wait,
                     boot_menu=args.boot_menu, kernel=args.kernel, initrd=args.initrd,
                     append=args.append, fw_cfg_files=args.fw_cfg, rtc_base=args.rtc_base,
                     acpi=args.acpi == "on", disks=args.disk, nics=args.nic, usb=args.usb, vga=args.vga,
                     vga_mem=args.vga_mem, xen_platform=args.xen_platform == "on",
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


def cmd_run(args: argparse.Namespace) -> int:
    from devmodel.pc import build_machine_none, build_pc

    setup_logging(args.log_level, args.log_file)
    log = logging.getLogger("devmodel")
    # Until the event loop takes over signals, SIGTERM/SIGINT end start-up cleanly (exit 0).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    opts = machine_options(args)
    try:
        # Bad device options fail here, before the socket exists.
        machine = build_machine_none(opts) if args.machine == "none" else build_pc(opts)
    except (ValueError, OSError) as e:
        raise SystemExit(f"devmodel: {e}") from None
    try:
        controller = _controller(args, opts, machine)
        return _serve(args, machine, log, controller)
    finally:
        machine.close_backends()  # idempotent; covers exits before the daemon takes over


def _controller(args: argparse.Namespace, opts, machine):
    """The QMP facade; with --restore the state file is checked and applied here, before any
    socket exists: a bad file ends start-up with its reason, nothing half restored."""
    import dataclasses

    from devmodel.controller import MAX_STATE_FILE, Controller
    from devmodel.pc import build_pc
    from devmodel.statefile import StateFileError

    # Scratch machines (to validate a state file before applying it) are built like this one
    # but without the backends that must stay unique: ptys, sockets, the debug console.
    scratch_opts = dataclasses.replace(
        opts, serial=["none" if sp == "none" else "null" for sp in opts.serial], debugcon=None)
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


def _serve(args: argparse.Namespace, machine, log: logging.Logger, controller=None) -> int:
    from devmodel.daemon import Daemon, DaemonConfig, listen_unix

    config = DaemonConfig(domid=args.domid, virtual_clock=args.clock == "virtual",
                          trace_path=args.trace)
    if args.trace:
        try:
            open(args.trace, "ab").close()
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
    log.info("devmodel %s serving domain %d on %s", __version__, args.domid,
             args.socket or f"fd {args.fd}")
    try:
        why = runner(daemon.serve(listener, connected,
                                  ready=lambda: log.info("ready for the hypervisor")))
    finally:
        for path in ([args.socket] if args.socket else []) + qmp_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
    log.info("exiting: %s", why)
    return 0


def cmd_boot(args: argparse.Namespace, argv: list[str]) -> int:
    from devmodel.boot import run_boot

    return run_boot(args, argv)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "boot":
        return cmd_boot(args, sys.argv[1:] if argv is None else list(argv))
    if args.command in ("fuzz", "replay"):
        from devmodel.fuzz import cli as fuzz_cli

        return fuzz_cli.cmd_fuzz(args) if args.command == "fuzz" else fuzz_cli.cmd_replay(args)
    if args.command == "demo":
        from devmodel.demo import main as demo_main

        return demo_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
