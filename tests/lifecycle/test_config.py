"""`devmodel run --config FILE` and `devmodel validate`: xl-style keys, command-line overrides,
every problem reported at once, and a dry build that starts nothing."""

from __future__ import annotations

import os
import textwrap

import pytest
from lifecycle_support import RawQmp, devmodel, start_ready, stop

from devmodel import cli
from devmodel.config import load_config


def parse_run(tmp_path, text: str, *argv: str):
    """What `devmodel run --config FILE ARGV` resolves to (no daemon)."""
    cfg_path = tmp_path / "dom.toml"
    cfg_path.write_text(textwrap.dedent(text))
    full = ["run", "--config", str(cfg_path), *argv]
    args = cli.build_parser().parse_args(full)
    cfg = cli.resolve_config(args, full)
    return args, cfg


@pytest.fixture
def images(tmp_path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    iso = tmp_path / "cd.iso"
    iso.write_bytes(b"\0" * (64 << 10))
    return str(disk), str(iso)


def test_xl_keys_become_options(tmp_path, images):
    disk, iso = images
    args, cfg = parse_run(tmp_path, f"""
        name = "web"
        uuid = "c0ffee00-0000-4000-8000-000000000001"
        type = "hvm"
        memory = 1040
        vcpus = 2
        disk = ["format=raw,vdev=hda,access=rw,target={disk}", ",,hdc,cdrom"]
        vif = ["mac=00:16:3e:00:00:01,model=e1000,bridge=xenbr0"]
        usbdevice = "tablet"
        serial = "pty"
        vga = "stdvga"
        videoram = 8
        boot = "dc"
        xen_platform_pci = 0
        acpi = 1
        bios = "seabios"
        kernel = "/boot/vmlinuz"
        ramdisk = "/boot/initrd"
        cmdline = "console=ttyS0"
        domid = 7
        socket = "/run/dm.sock"
        log-level = "debug"
        unplug_policy = "ignore"
        qmp = "/run/qmp.sock"
        """)
    assert cfg.problems == []
    assert args.name == "web" and args.vcpus == 2 and args.uuid[:2] == b"\xc0\xff"
    assert args.memory == (1040 - 8) << 20  # xl: memory includes the video RAM
    assert args.disk[1] == ",,hdc,cdrom" and args.nic == [
        "mac=00:16:3e:00:00:01,model=e1000,bridge=xenbr0"]
    assert args.usb == ["tablet"] and args.serial == ["pty"]
    assert (args.vga, args.vga_mem, args.boot) == ("std", 8, "dc")
    assert (args.xen_platform, args.acpi) == ("off", "on")
    assert args.bios is None  # xl's firmware name: hvmloader's business
    assert (args.kernel, args.initrd, args.append) == ("/boot/vmlinuz", "/boot/initrd",
                                                       "console=ttyS0")
    assert (args.domid, args.socket, args.log_level) == (7, "/run/dm.sock", "debug")
    assert args.unplug_policy == "ignore" and args.qmp == ["/run/qmp.sock"]


def test_memory_without_vga_and_devmodel_sizes(tmp_path):
    args, cfg = parse_run(tmp_path, 'memory = 512\nvga = "none"\n')
    assert cfg.problems == [] and args.memory == 512 << 20
    args, cfg = parse_run(tmp_path, 'memory = "2G"\n')  # a SIZE: devmodel's --memory as is
    assert cfg.problems == [] and args.memory == 2 << 30
    args, cfg = parse_run(tmp_path, "maxmem = 2064\nmemory = 1024\n")
    assert args.memory == 2048 << 20
    args, cfg = parse_run(tmp_path, 'bios = "/usr/share/seabios/bios-256k.bin"\n')
    assert args.bios == "/usr/share/seabios/bios-256k.bin"


def test_command_line_wins(tmp_path):
    args, cfg = parse_run(tmp_path, """
        vcpus = 4
        vga = "none"
        serial = ["pty", "null"]
        disk = ["format=raw,vdev=hda,target=/a.img"]
        memory = 1024
        socket = "/run/a.sock"
        """, "--vcpus", "2", "--disk", "format=raw,vdev=hdb,target=/b.img", "--memory", "64M",
        "--fd", "3")
    assert cfg.problems == []
    assert args.vcpus == 2
    assert args.disk == ["format=raw,vdev=hdb,target=/b.img"]  # a list is replaced
    assert args.serial == ["pty", "null"] and args.vga == "none"  # from the file
    assert args.memory == 64 << 20
    assert args.fd == 3 and args.socket is None  # --fd drops the file's socket
    # The command line saying the default explicitly still wins over the file.
    args, _ = parse_run(tmp_path, 'vga = "none"\n', "--vga", "std")
    assert args.vga == "std"


def test_unknown_keys_and_wrong_types_name_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nvcpu = 2\nvcpus = "two"\nvga = "cirrus"\nstrict = "yes"\n'
                    'xen_platform_pci = 2\nvif = "mac=00:16:3e:00:00:01"\nnic = []\n[extra]\n')
    cfg = load_config(str(path), _run_parser())
    text = [str(p) for p in cfg.problems]
    assert any(t.startswith(f"{path}:2: vcpu: unknown key") and "vcpus" in t for t in text)
    assert any(t.startswith(f"{path}:3: vcpus: expected an integer") for t in text)
    assert any(t.startswith(f"{path}:4: vga:") and "not emulated" in t for t in text)
    assert any(t.startswith(f"{path}:5: strict: expected true or false") for t in text)
    assert any(t.startswith(f"{path}:6: xen_platform_pci") for t in text)
    assert any(t.startswith(f"{path}:8: nic: sets the same option as 'vif'") for t in text)
    assert any(t.startswith(f"{path}:9: extra: unknown table") for t in text)
    assert len(text) == 7


def _run_parser():
    cli.build_parser()
    return cli._RUN_PARSERS["run"]


def test_toml_syntax_error_has_its_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\ndisk = [\n"a",\nvcpus 3\n')
    r = devmodel("validate", str(path))
    assert r.returncode == 1
    assert f"{path}:" in r.stderr and "TOML syntax error" in r.stderr


def test_validate_good_config_summarises(tmp_path, images):
    disk, iso = images
    path = tmp_path / "dom.toml"
    path.write_text(textwrap.dedent(f"""
        name = "web"
        memory = 272
        disk = ["format=raw,vdev=hda,access=rw,target={disk}",
                "devtype=cdrom,vdev=hdc,target={iso}"]
        vif = ["mac=00:16:3e:00:00:01,model=e1000,backend=udp,peer=127.0.0.1:40000"]
        usbdevice = ["tablet"]
        serial = "null"
        vga = "stdvga"
        """))
    r = devmodel("validate", str(path), "--domid", "4", "--qmp", str(tmp_path / "q.sock"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"{path}: ok" in out
    assert "256 MiB RAM" in out and '"web"' in out and "domain 4" in out
    assert f"hda       disk {disk} (raw, rw, 1 MiB)" in out
    assert f"hdc       cdrom {iso}" in out
    assert "e1000 00:16:3e:00:00:01 on udp peer 127.0.0.1:40000" in out
    assert "tablet" in out and "std, 16 MiB VRAM" in out
    assert not os.path.exists(tmp_path / "q.sock")  # nothing started


def test_validate_reports_every_problem(tmp_path, images):
    disk, _ = images
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(f"""\
        vcpu = 2
        memory = "lots"
        disk = ["format=raw,vdev=hda,target=/nonexistent.img",
                "format=raw,vdev=hda,target={disk}",
                "format=qcow2,vdev=hdb,target={disk}"]
        vif = ["mac=zz:16:3e:00:00:01,model=e1000", "mac=01:00:5e:00:00:01"]
        videoram = 12
        usbdevice = ["tablet", "disk:/nonexistent-usb.img"]
        serial = ["pty", "bogus"]
        kernel = "/nonexistent/vmlinuz"
        """))
    r = devmodel("validate", str(path))
    assert r.returncode == 1
    err = r.stderr
    for needle in ("1: vcpu: unknown key", "2: memory: 'lots' is not a size",
                   "disk[0]: hda: disk image /nonexistent.img: No such file",
                   "disk[1]: two disks on one vdev", "disk[2]: hdb: format qcow2",
                   "vif[0]: bad MAC address 'zz:16:3e:00:00:01'", "vif[1]: MAC address",
                   "videoram: --vga-mem 12: must be a power of two",
                   "usbdevice[1]: USB disk image /nonexistent-usb.img",
                   "serial[1]: chardev 'bogus'", "kernel: kernel /nonexistent/vmlinuz"):
        assert needle in err, (needle, err)
    assert "devmodel validate: 11 problems in" in err
    # The command line can fix what the file got wrong.
    r = devmodel("validate", str(path), "--disk", f"format=raw,vdev=hda,target={disk}")
    assert "disk[" not in r.stderr and "hda:" not in r.stderr


def test_validate_is_dry(tmp_path, images):
    """No tap is created, no socket bound, no pty or file opened, no qemu-nbd started."""
    disk, _ = images
    path = tmp_path / "dry.toml"
    log = tmp_path / "serial.log"
    path.write_text(textwrap.dedent(f"""
        vif = ["model=e1000,backend=tap,ifname=dmdry0,create=on",
               "model=e1000,backend=unix,path={tmp_path}/nic.sock,peer={tmp_path}/peer.sock"]
        serial = ["file:{log}", "unix:{tmp_path}/com2.sock,server"]
        socket = "{tmp_path}/dm.sock"
        pidfile = "{tmp_path}/dm.pid"
        disk = ["format=raw,vdev=hda,target={disk}"]
        """))
    r = devmodel("validate", str(path))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["cd.iso", "disk.raw", "dry.toml"]
    assert not os.path.exists("/sys/class/net/dmdry0")


def test_validate_usage_errors_exit_2(tmp_path):
    assert devmodel("validate").returncode == 2
    assert devmodel("validate", "x.toml", "--vcpus", "many").returncode == 2


def test_run_reports_config_problems_before_starting(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('vcpu = 2\nvga = 1\n')
    r = devmodel("run", "--config", str(path), "--domid", "1", "--socket",
                 str(tmp_path / "dm.sock"))
    assert r.returncode == 1
    assert f"{path}:1: vcpu: unknown key" in r.stderr and f"{path}:2: vga" in r.stderr
    assert "2 problems" in r.stderr
    assert not os.path.exists(tmp_path / "dm.sock")


def test_run_from_config_serves_the_machine(tmp_path, images):
    disk, iso = images
    qmp = tmp_path / "qmp.sock"
    path = tmp_path / "dom.toml"
    path.write_text(textwrap.dedent(f"""
        domid = 5
        socket = "{tmp_path}/dm.sock"
        qmp = ["{qmp}"]
        name = "fromfile"
        memory = 80
        disk = ["format=raw,vdev=hda,access=rw,target={disk}",
                "devtype=cdrom,vdev=hdc,target={iso}"]
        vif = ["mac=00:16:3e:00:00:42,model=e1000,backend=null"]
        usbdevice = ["tablet"]
        serial = "null"
        log-file = "{tmp_path}/dm.log"
        """))
    proc, _ = start_ready(["--config", str(path)])
    try:
        q = RawQmp(str(qmp))
        blocks = {b["device"]: b for b in q.execute("query-block")["return"]}
        assert len(blocks) >= 2
        pci = q.execute("query-pci")["return"][0]["devices"]
        ids = {(d["id"]["vendor"], d["id"]["device"]) for d in pci}
        assert (0x8086, 0x100E) in ids  # the e1000 from vif
        assert (0x8086, 0x7020) in ids  # UHCI for usbdevice
        assert (0x1234, 0x1111) in ids  # stdvga
        q.close()
    finally:
        assert stop(proc) == 0
    assert "ready for the hypervisor" in (tmp_path / "dm.log").read_text()
