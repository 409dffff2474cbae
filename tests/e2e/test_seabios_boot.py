"""Real SeaBIOS (Debian's bios-256k.bin and bios.bin) POSTs through the real daemon, run as a
subprocess with `--clock virtual`, on the simulated CPU: `devmodel.boot`, the code behind
`devmodel boot`. Each expectation is its own test; the boots are shared per module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devmodel.boot import BootConfig, BootResult, boot, machine_argv
from devmodel.demo_disk import DISK_TEXT, DONE, GREETING

SEABIOS = Path("/usr/share/seabios")
IMAGES = ["bios-256k.bin", "bios.bin"]
POST_END = "No bootable device"  # with no disk; with the demo disk the run halts first
TIMEOUT = 15.0  # wall seconds; a boot takes about one

pytestmark = pytest.mark.skipif(not (SEABIOS / IMAGES[0]).exists(),
                                reason="SeaBIOS missing (apt-get install seabios)")

_boots: dict[tuple, BootResult] = {}


def run(image: str = IMAGES[0], **kw) -> BootResult:
    """One boot per distinct configuration, shared by the tests that look at it."""
    key = (image, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items())))
    if key not in _boots:
        kw.setdefault("until", POST_END)
        _boots[key] = boot(BootConfig(bios=str(SEABIOS / image), timeout=TIMEOUT, **kw))
    return _boots[key]


def debug_log(image: str) -> str:
    result = run(image)
    assert result.outcome in ("until", "halted"), (result.message, result.text("debugcon")[-800:])
    return result.text("debugcon")


@pytest.mark.parametrize("image", IMAGES)
def test_seabios_runs_on_qemu_i440fx(image: str) -> None:
    log = debug_log(image)
    assert "SeaBIOS (version" in log
    assert "Running on QEMU (i440fx)" in log


@pytest.mark.parametrize("image", IMAGES)
def test_fw_cfg_found(image: str) -> None:
    assert "Found QEMU fw_cfg" in debug_log(image)


@pytest.mark.parametrize("image", IMAGES)
def test_pci_devices_enumerated(image: str) -> None:
    log = debug_log(image)
    m = re.search(r"Found (\d+) PCI devices", log)
    assert m and int(m.group(1)) >= 3, log[:2000]
    for bdf, ids in (("00:00.0", "8086:1237"), ("00:01.0", "8086:7000")):
        assert f"PCI: init bdf={bdf} id={ids}" in log
    assert "PIIX3/PIIX4 init" in log


@pytest.mark.parametrize("image", IMAGES)
def test_e820_map(image: str) -> None:
    log = debug_log(image)
    m = re.search(r"e820 map has (\d+) items:\n((?:  \d+: .*\n)+)", log)
    assert m, log[-2000:]
    entries = re.findall(r"([0-9a-f]{16}) - ([0-9a-f]{16}) = (\d)", m.group(2))
    assert len(entries) == int(m.group(1))
    ram = [(int(a, 16), int(b, 16)) for a, b, t in entries if t == "1"]
    assert ram[0][0] == 0 and 0x9F000 <= ram[0][1] <= 0xA0000  # conventional memory
    # 128 MiB of guest RAM (--memory default), less what SeaBIOS reserves for ACPI at the top.
    high = [r for r in ram if r[0] == 0x100000]
    assert high and 127 << 20 <= high[0][1] <= 128 << 20


def test_halting_guest_ends_the_run_after_the_demo_disk() -> None:
    """Needs the daemon's --disk (IDE): the demo boot sector prints and halts with IF=0."""
    result = run()
    assert result.outcome == "halted", result.message
    e9 = result.text("e9").replace("\r", "")
    for line in (GREETING, DISK_TEXT, DONE):
        assert line.replace("\r", "") in e9


def test_demo_disk_prints_on_com1() -> None:
    com1 = run().text("com1").replace("\r", "")
    assert GREETING.replace("\r", "") in com1


def test_reboot_requested_by_the_guest_is_followed() -> None:
    # Nothing boots, SeaBIOS waits 1 s of virtual time, says "Rebooting." and resets through
    # 0xCF9; the daemon resets its devices and the vCPU starts a second POST from the shadow
    # SeaBIOS restored itself (PAM is not reset).
    result = run(demo_disk=False, until=None, max_reboots=1,
                 daemon_args=["--boot-fail-wait", "1"])
    log = result.text("debugcon")
    assert result.outcome == "reboots", result.message  # the second reboot is not followed
    assert result.reboots == 1
    assert log.count("Running on QEMU (i440fx)") == 2
    assert log.count("Rebooting.") == 2 and log.count("Attempting a hard reboot") == 2
    assert 2e9 <= result.virtual_ns < 5e9


def test_timeout_reports_where_the_guest_was() -> None:
    result = boot(BootConfig(bios=str(SEABIOS / IMAGES[0]), timeout=0.05, until=None))
    assert result.exit_code == 1 and result.outcome == "timeout"
    assert re.search(r"guest at [0-9a-f]{4}:[0-9a-f]{8}, last POST code", result.message)


def test_runs_are_deterministic() -> None:
    args = ["--rtc-base", "1700000000"]
    a, b = (boot(BootConfig(bios=str(SEABIOS / IMAGES[0]), timeout=TIMEOUT, until=POST_END,
                            daemon_args=args)) for _ in range(2))
    assert a.outcome == b.outcome and a.outputs == b.outputs
    assert (a.exits, a.virtual_ns) == (b.exits, b.virtual_ns)


def test_cli_boot_prints_the_console_and_exits_0() -> None:
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--timeout", str(TIMEOUT),
                        "--until", "Running on QEMU"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "SeaBIOS (version" in p.stdout and "Running on QEMU (i440fx)" in p.stdout
    assert "found 'Running on QEMU'" in p.stderr


def test_cli_screendump_without_a_vga_is_refused_clearly() -> None:
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--vga", "none", "--screendump",
                        "x.png"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "VGA" in p.stderr


def test_machine_options_are_forwarded_to_the_daemon_as_typed() -> None:
    forward, refused = machine_argv(["boot", "--timeout", "3", "--boot-fail-wait=1", "--boot-menu",
                                     "--memory", "64M", "--fw-cfg", "name=opt/a,file=/x"])
    assert forward == ["--boot-fail-wait", "1", "--boot-menu", "--fw-cfg", "name=opt/a,file=/x"]
    assert refused == []
    assert machine_argv(["boot", "--serial", "pty"])[1]  # COM1 is boot's own
