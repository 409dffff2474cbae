"""Footprint of an idle daemon: resident memory and start-up time to ready, devmodel against
QEMU configured with the same devices, in one run.

    .venv/bin/python bench/footprint.py [--rounds 5] [--warmup 1] [--settle 0.5] [--no-qemu]
                                        [--no-connected]

The device set (issue 9): an IDE disk (hda, raw) and an IDE CD-ROM (hdc, an ISO image), an
e1000 on a UDP socket backend, a USB tablet on the PIIX3 UHCI, the standard VGA (16 MiB VRAM),
COM1 on null; 128 MiB of guest RAM.

- devmodel: `python -m devmodel run --domid 1 --socket S --ready-fd N --disk ... --nic
  model=e1000,backend=udp,... --usb tablet --vga std --serial null`. Ready: "READY\\n" on the
  ready fd (every socket listens). Nothing connects: that is the idle daemon a toolstack has
  started and not yet handed a domain.
- devmodel, connected (unless --no-connected): the same daemon once a hypervisor (the client
  library) has connected, done the handshake and shared 128 MiB of guest RAM (a memfd the
  daemon maps): what a running domain's daemon holds before the guest does anything.
- QEMU: `qemu-system-x86_64 -S -display none -nodefaults -machine pc -accel tcg -m 128`
  `-drive if=ide,index=0,media=disk` `-drive if=ide,index=2,media=cdrom` `-netdev socket,udp=`
  `-device e1000` `-usb -device usb-tablet` `-vga std` `-serial null` `-qmp unix:...`. Ready:
  the QMP greeting on its socket.

Start-up: exec to ready, wall clock (`startup_s`). On a loaded host that figure mostly
measures the wait for a CPU, so the CPU time the process used up to ready is reported too
(`startup_cpu_s`, all its threads, /proc/PID/task/*/schedstat read at ready) with the time its
threads waited runnable for a CPU (`startup_runq_s`). Memory, read from /proc/PID/smaps
`--settle` seconds after ready: `rss_kib` (all mappings), `excluded_kib` (guest RAM and VRAM: devmodel's memfd
mappings — guest RAM, VRAM, the BIOS when it has one; QEMU's anonymous guest-RAM block of
128 MiB and VRAM block of 16 MiB), `rss_excl_kib` = the difference, the figure compared. Also
`pss_excl_kib` (shared library pages divided among the processes that map them: what one more
daemon costs a host running many) and `uss_excl_kib` (private pages only).

`python_floor_s` (`python_floor_cpu_s`): exec to exit (CPU time) of the same interpreter
importing only asyncio and uvloop, the floor under any start-up of a Python daemon on this
event loop.

Each figure is a median with min-max over interleaved rounds. Targets (issue 9): rss_excl
no more than QEMU's, start-up within 2x of QEMU's. JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_udp_ports, qemu_version

ROOT = Path(__file__).resolve().parents[1]

QEMU_BIN = "qemu-system-x86_64"
RAM_MIB = 128
VRAM_MIB = 16
_MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


# ---- /proc/PID/smaps --------------------------------------------------------------------------
def read_smaps(pid: int) -> list[dict]:
    """Each mapping: size_kib, perms, name, and its Rss/Pss/Private_* in KiB."""
    maps: list[dict] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = _MAP.match(line)
            if m:
                maps.append({"size_kib": (int(m[2], 16) - int(m[1], 16)) >> 10, "perms": m[3],
                             "name": m[4].strip()})
                continue
            key, _, rest = line.partition(":")
            if maps and key in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Swap"):
                maps[-1][key] = int(rest.split()[0])
    return maps


def is_devmodel_guest_memory(m: dict) -> bool:
    # Guest RAM (the hypervisor's memfd), VRAM, BIOS and shadow: all memfds the daemon maps.
    return m["name"].startswith("/memfd:")


def is_qemu_guest_memory(m: dict) -> bool:
    # QEMU's RAM blocks are anonymous mappings of exactly their size (qemu_ram_mmap; the guard
    # page is a separate PROT_NONE mapping): pc.ram (-m) and vga.vram.
    return (m["name"] == "" and m["perms"].startswith("rw")
            and m["size_kib"] in (RAM_MIB << 10, VRAM_MIB << 10))


def cpu_so_far(pid: int) -> tuple[float, float]:
    """(CPU seconds used, seconds spent runnable waiting for a CPU) by every thread of `pid`
    so far: the first two fields of /proc/PID/task/TID/schedstat, in ns."""
    cpu = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:  # the thread ended meanwhile
            continue
        cpu += int(fields[0])
        wait += int(fields[1])
    return cpu / 1e9, wait / 1e9


def footprint(pid: int, excluded) -> dict:
    maps = read_smaps(pid)
    total = {k: sum(m.get(k, 0) for m in maps) for k in ("Rss", "Pss")}
    total["USS"] = sum(m.get("Private_Clean", 0) + m.get("Private_Dirty", 0) for m in maps)
    ex = [m for m in maps if excluded(m)]
    exc = {k: sum(m.get(k, 0) for m in ex) for k in ("Rss", "Pss")}
    exc["USS"] = sum(m.get("Private_Clean", 0) + m.get("Private_Dirty", 0) for m in ex)
    return {
        "rss_kib": total["Rss"], "excluded_kib": exc["Rss"],
        "rss_excl_kib": total["Rss"] - exc["Rss"], "pss_excl_kib": total["Pss"] - exc["Pss"],
        "uss_excl_kib": total["USS"] - exc["USS"],
        "excluded": [{"name": m["name"] or "[anon]", "size_kib": m["size_kib"],
                      "rss_kib": m.get("Rss", 0)} for m in ex],
    }


# ---- the two daemons --------------------------------------------------------------------------
def make_images(tmp: str) -> tuple[str, str]:
    disk = os.path.join(tmp, "disk.raw")
    iso = os.path.join(tmp, "cd.iso")
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    with open(iso, "wb") as f:
        f.truncate(4 << 20)
    return disk, iso


def devmodel_args(tmp: str, disk: str, iso: str) -> list[str]:
    local, peer = free_udp_ports(2)
    return ["--domid", "1", "--socket", os.path.join(tmp, "dm.sock"),
            "--log-file", os.path.join(tmp, "dm.log"), "--memory", f"{RAM_MIB}M",
            "--disk", f"format=raw,vdev=hda,access=rw,target={disk}",
            "--disk", f"devtype=cdrom,vdev=hdc,target={iso}",
            "--nic", f"model=e1000,backend=udp,peer=127.0.0.1:{peer},path=127.0.0.1:{local}",
            "--usb", "tablet", "--vga", "std", "--vga-mem", str(VRAM_MIB), "--serial", "null"]


def _devmodel_env(tmp: str) -> dict[str, str]:
    """Byte-code cached as an installed package has it: written by the warm-up run into a
    private prefix (PYTHONDONTWRITEBYTECODE would make every start compile the changed
    modules again), never into the source tree."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(os.path.dirname(tmp), "devmodel-footprint-pyc")
    return env


def _wait_readable(fd: int, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("no READY in time")
        chunk = os.read(fd, 64)
        if not chunk or chunk.endswith(b"\n"):
            return out + chunk
        out += chunk


def run_devmodel(tmp: str, disk: str, iso: str, settle: float, connected: bool,
                 timeout: float = 60.0) -> dict:
    r, w = os.pipe()
    argv = [sys.executable, "-m", "devmodel", "run", *devmodel_args(tmp, disk, iso),
            "--ready-fd", str(w)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, pass_fds=(w,), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT),
                            env=_devmodel_env(tmp))
    os.close(w)
    try:
        data = _wait_readable(r, timeout)
        ready = time.perf_counter() - t0
        cpu, runq = cpu_so_far(proc.pid)
        if data != b"READY\n":
            raise RuntimeError(f"devmodel failed: {proc.communicate(timeout=10)[1].decode()}")
        time.sleep(settle)
        out = {"startup_s": ready, "startup_cpu_s": cpu, "startup_runq_s": runq,
               **footprint(proc.pid, is_devmodel_guest_memory)}
        if connected:
            from devmodel.client import Hypervisor

            with Hypervisor.connect(os.path.join(tmp, "dm.sock")) as hv:
                hv.add_ram(RAM_MIB << 20)
                hv.pci_cfg_read(0, 0, 4)  # a round trip: the daemon has mapped the RAM
                time.sleep(settle)
                out["connected"] = footprint(proc.pid, is_devmodel_guest_memory)
        return out
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def run_python_floor(tmp: str) -> tuple[float, float]:
    """Exec to exit (wall, CPU) of this interpreter importing only asyncio and uvloop: the
    least any Python daemon on this loop pays before its own first line (for reading
    startup_s and startup_cpu_s)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "import asyncio, uvloop"],
                            env=_devmodel_env(tmp), stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"python floor run exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def qemu_argv(qemu: str, tmp: str, disk: str, iso: str, qmp: str) -> list[str]:
    local, peer = free_udp_ports(2)
    return [qemu, "-S", "-display", "none", "-nodefaults", "-machine", "pc", "-accel", "tcg",
            "-m", str(RAM_MIB),
            "-drive", f"file={disk},format=raw,if=ide,index=0,media=disk",
            "-drive", f"file={iso},format=raw,if=ide,index=2,media=cdrom",
            "-netdev", f"socket,id=n0,udp=127.0.0.1:{peer},localaddr=127.0.0.1:{local}",
            "-device", "e1000,netdev=n0", "-usb", "-device", "usb-tablet",
            "-vga", "std", "-global", f"VGA.vgamem_mb={VRAM_MIB}", "-serial", "null",
            "-qmp", f"unix:{qmp},server=on,wait=off"]


def run_qemu(qemu: str, tmp: str, disk: str, iso: str, settle: float,
             timeout: float = 60.0) -> dict:
    qmp = os.path.join(tmp, "qmp.sock")
    if os.path.exists(qmp):
        os.unlink(qmp)
    argv = qemu_argv(qemu, tmp, disk, iso, qmp)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"QEMU exited: {proc.stderr.read().decode()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(qmp)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise TimeoutError("QEMU's QMP socket never came") from None
                time.sleep(0.001)
        s.settimeout(timeout)
        greeting = s.recv(4096)
        ready = time.perf_counter() - t0
        cpu, runq = cpu_so_far(proc.pid)
        assert b'"QMP"' in greeting, greeting
        time.sleep(settle)
        out = {"startup_s": ready, "startup_cpu_s": cpu, "startup_runq_s": runq,
               **footprint(proc.pid, is_qemu_guest_memory)}
        s.close()
        return out
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


# ---- statistics and output --------------------------------------------------------------------
FIGURES = (("startup_s", "s"), ("startup_cpu_s", "s"), ("startup_runq_s", "s"),
           ("python_floor_s", "s"), ("python_floor_cpu_s", "s"), ("rss_kib", "KiB"),
           ("excluded_kib", "KiB"),
           ("rss_excl_kib", "KiB"), ("pss_excl_kib", "KiB"), ("uss_excl_kib", "KiB"))


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for name, unit in FIGURES:
        vals = [r[name] for r in runs if name in r]
        if not vals:
            continue
        rnd = (lambda v: round(v, 4)) if unit == "s" else (lambda v: int(v))
        out[name] = {"unit": unit, "median": rnd(statistics.median(vals)), "min": rnd(min(vals)),
                     "max": rnd(max(vals)), "runs": [rnd(v) for v in vals]}
    out["excluded_mappings"] = runs[-1]["excluded"] if runs else []
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted runs of each first (1)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds between ready and reading smaps (0.5)")
    p.add_argument("--no-qemu", action="store_true", help="devmodel only")
    p.add_argument("--no-connected", action="store_true",
                   help="skip the devmodel column with a hypervisor connected")
    p.add_argument("--qemu", default=QEMU_BIN, help=f"the QEMU binary ({QEMU_BIN})")
    args = p.parse_args(argv)

    qemu = None if args.no_qemu else shutil.which(args.qemu)
    tmp = tempfile.mkdtemp(prefix="devmodel-footprint-")
    try:
        disk, iso = make_images(tmp)
        for _ in range(args.warmup):  # byte-code cache, page cache: not counted
            run_devmodel(tmp, disk, iso, 0.0, connected=False)
            if qemu:
                run_qemu(qemu, tmp, disk, iso, 0.0)
        dm_runs: list[dict] = []
        q_runs: list[dict] = []
        for i in range(args.rounds):
            order = ("devmodel", "qemu") if i % 2 == 0 else ("qemu", "devmodel")
            for who in order:
                if who == "devmodel":
                    dm_runs.append(run_devmodel(tmp, disk, iso, args.settle,
                                                connected=not args.no_connected))
                    floor = run_python_floor(tmp)
                    dm_runs[-1]["python_floor_s"], dm_runs[-1]["python_floor_cpu_s"] = floor
                elif qemu:
                    q_runs.append(run_qemu(qemu, tmp, disk, iso, args.settle))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    dm = summarise(dm_runs)
    connected: dict | None = summarise([r["connected"] for r in dm_runs if "connected" in r])
    if "rss_kib" not in connected:  # --no-connected: only the empty excluded_mappings
        connected = None
    result: dict = {
        "bench": "footprint",
        "config": {
            "rounds": args.rounds, "warmup": args.warmup, "settle_s": args.settle,
            "bytecode": "cached (PYTHONPYCACHEPREFIX, written by the warm-up)", "guest_ram_mib": RAM_MIB,
            "vram_mib": VRAM_MIB, "python": sys.version.split()[0],
            "devices": "IDE disk hda (raw) + CD-ROM hdc, e1000 on UDP, USB tablet, std VGA, "
                       "COM1 null",
            "devmodel_ready": "READY on --ready-fd", "qemu_ready": "QMP greeting",
            "qemu": (qemu_version(qemu) if qemu else
                     f"skipped ({'--no-qemu' if args.no_qemu else args.qemu + ' not found'})"),
            "qemu_argv": qemu_argv(qemu or QEMU_BIN, "/TMP", "/TMP/disk.raw", "/TMP/cd.iso",
                                   "/TMP/qmp.sock")[1:],
        },
        "devmodel": dm,
        "devmodel_connected": connected,
        "qemu": summarise(q_runs) if q_runs else None,
        "ratios": {},
        "targets": {},
    }
    if q_runs:
        q = result["qemu"]
        for name in ("startup_s", "startup_cpu_s", "rss_excl_kib", "pss_excl_kib",
                     "uss_excl_kib"):
            result["ratios"][name] = round(dm[name]["median"] / max(q[name]["median"], 1e-9), 3)
        result["targets"] = {
            "memory_no_more_than_qemu": dm["rss_excl_kib"]["median"] <= q["rss_excl_kib"]["median"],
            "startup_within_2x": result["ratios"]["startup_s"] <= 2.0,
        }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
