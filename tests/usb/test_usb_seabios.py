"""Real SeaBIOS (Debian's bios-256k.bin) on the simulated CPU finds the UHCI, initialises the USB
keyboard and mouse behind the hub, enumerates the tablet, and boots from a USB disk. The daemon
runs in-process on a machine built with build_usb (tests/usb/seabios_usb.py), so the tests can
look at the device objects; the last test boots through `--usb disk:` on a daemon process.
Each boot takes ~5-15 s of wall time: SeaBIOS polls the ports through ~100 ms of virtual time,
~100k exits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from seabios_usb import SEABIOS, boot_with_usb

from devmodel.backends.disk import RawFileDisk
from devmodel.demo_disk import DISK_TEXT, DONE, GREETING, write_image
from devmodel.usb import UsbKeyboard, UsbMassStorage, UsbMouse, UsbTablet

pytestmark = pytest.mark.skipif(not Path(SEABIOS).exists(),
                                reason="SeaBIOS missing (apt-get install seabios)")

_hid: dict = {}


def hid_boot():
    if not _hid:
        devs = [UsbKeyboard(), UsbMouse(), UsbTablet()]
        result, _ = boot_with_usb(devs, until="No bootable device", timeout=60)
        _hid.update(result=result, devs=devs)
    return _hid["result"], _hid["devs"]


def test_seabios_finds_the_uhci():
    result, _ = hid_boot()
    assert result.outcome == "until", result.message
    assert re.search(r"UHCI init on dev 00:01\.2 \(io=c[0-9a-f]{3}\)", result.text("debugcon"))


def test_seabios_initialises_keyboard_and_mouse_behind_the_hub():
    result, (kbd, mouse, tablet) = hid_boot()
    log = result.text("debugcon")
    assert "Initialized USB HUB" in log
    assert "USB keyboard initialized" in log
    assert "USB mouse initialized" in log
    assert kbd.config == 1 and mouse.config == 1
    # SeaBIOS drives boot-protocol HID only; it still addressed the tablet and read its
    # descriptors (it does not configure what it cannot drive)
    assert tablet.addr != 0
    for d in (kbd, mouse, tablet):
        assert not d.counters, d.counters


def test_seabios_boots_from_a_usb_disk(tmp_path):
    disk = RawFileDisk(write_image(str(tmp_path / "demo.img")))
    msd = UsbMassStorage(disk)
    try:
        result, _ = boot_with_usb([msd], until=None, timeout=60)
    finally:
        disk.close()
    log = result.text("debugcon")
    assert result.outcome == "halted", result.message
    assert "USB MSC vendor='QEMU' product='QEMU HARDDISK'" in log
    assert "USB MSC blksize=512 sectors=2048" in log
    out = result.text("e9") + log  # port 0xE9 output reaches the debug console file too
    for line in (GREETING, DISK_TEXT, DONE):
        assert line.replace("\r", "") in out.replace("\r", "")
    assert not msd.counters, msd.counters


def test_seabios_boots_from_a_usb_disk_given_on_the_daemon_command_line(tmp_path):
    """The same boot through a daemon process started with `--usb disk:IMG` (the image opened
    as the IDE disks' are, on the asynchronous port) and no IDE disk at all."""
    from devmodel.boot import BootConfig, BootSession

    img = write_image(str(tmp_path / "demo.img"))
    cfg = BootConfig(bios=SEABIOS, timeout=60, until=None, demo_disk=False,
                     daemon_args=["--usb", f"disk:{img}"])
    with BootSession(cfg) as s:
        result = s.run()
    log = result.text("debugcon")
    assert result.outcome == "halted", result.message
    assert "ata0-0" not in log
    assert "USB MSC blksize=512 sectors=2048" in log
    out = (result.text("e9") + log).replace("\r", "")
    for line in (GREETING, DISK_TEXT, DONE):
        assert line.replace("\r", "") in out


def test_devmodel_boot_from_a_usb_disk_with_no_demo_disk(tmp_path):
    """`devmodel boot --no-demo-disk --usb disk:IMG`: the command line a user types to boot a
    USB stick image, with no IDE disk in the way."""
    import subprocess
    import sys

    img = write_image(str(tmp_path / "demo.img"))
    p = subprocess.run([sys.executable, "-m", "devmodel", "boot", "--bios", SEABIOS, "--timeout", "60",
                        "--no-demo-disk", "--usb", f"disk:{img}", "--no-screen"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "ata0-0" not in p.stdout and "USB MSC blksize=512 sectors=2048" in p.stdout
    assert DONE.strip() in p.stdout.replace("\r", "")
    assert "the guest halted" in p.stderr
