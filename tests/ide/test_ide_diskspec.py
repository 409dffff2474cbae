"""xl DISKSPEC parsing for --disk, and opening what it names."""

from __future__ import annotations

import pytest
from ide_helpers import make_image

from devmodel.ide import Cdrom, open_disks
from devmodel.ide.diskspec import parse_diskspec, vdev_position


@pytest.mark.parametrize("text", [
    "/dev/vg/guest-volume,,hda",
    "/dev/vg/guest-volume,raw,hda,rw",
    "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
    "vdev=hda,/dev/vg/guest-volume",
])
def test_equivalent_forms(text):
    s = parse_diskspec(text)
    assert (s.target, s.vdev, s.position, s.readonly, s.cdrom, s.format) == (
        "/dev/vg/guest-volume", "hda", (0, 0), False, False, "raw")


@pytest.mark.parametrize("text", [
    "/root/image.iso,,hdc,cdrom",
    "/root/image.iso,,hdc,,cdrom",
    "/root/image.iso,raw,hdc,devtype=cdrom",
    "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
])
def test_cdrom_forms(text):
    s = parse_diskspec(text)
    assert (s.target, s.position, s.readonly, s.cdrom) == ("/root/image.iso", (1, 0), True, True)


def test_target_keyword_swallows_the_rest():
    s = parse_diskspec("vdev=hdb, access=ro, target=/images/a,b=c.img")
    assert s.target == "/images/a,b=c.img" and s.position == (0, 1) and s.readonly


def test_vdev_mapping():
    assert [vdev_position(v) for v in ("hda", "hdb", "hdc", "hdd")] == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    assert vdev_position("xvdc") == (1, 0)
    assert parse_diskspec("/x.img,raw,hdd,r").readonly


@pytest.mark.parametrize("text,words", [
    ("", "no target"),
    ("/x.img", "no vdev"),
    ("/x.img,qcow3,hda", "format 'qcow3' is not a disk image format"),
    (",,hda", "no target"),
    ("/x.iso,raw,hdc,rw,devtype=cdrom", "CD-ROM is read-only"),
    ("/x.img,raw,hde", "hde"),
    ("/x.img,raw,sda", "sda"),
    ("/x.img,raw,hda,rx", "access 'rx'"),
    ("/x.img,raw,hda,rw,extra", "extra"),
    ("/x.img,raw,hda,vdev=hdb", "vdev given twice"),
    ("/x.img,raw,hda,colo-port=1", "unknown parameter 'colo-port'"),
    ("/x.img,raw,hda,script=block-iscsi", "scripts"),
])
def test_errors_say_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        parse_diskspec(text)


def test_open_disks(tmp_path):
    a = make_image(tmp_path / "a.img", 4)
    b = make_image(tmp_path / "b.img", 8)
    disks = open_disks([parse_diskspec(f"{a},raw,hda,rw"), parse_diskspec(f"{b},,hdd,ro")])
    try:
        assert sorted(disks) == [(0, 0), (1, 1)]
        assert disks[(1, 1)].readonly and disks[(1, 1)].size == 8 * 512
    finally:
        for d in disks.values():
            d.close()
    with pytest.raises(ValueError, match="two disks on one vdev: hda and xvda"):
        open_disks([parse_diskspec(f"{a},,hda"), parse_diskspec(f"vdev=xvda,target={b}")])
    with pytest.raises(ValueError, match="hda: cannot open disk image .*missing.img: No such file"):
        open_disks([parse_diskspec(f"{tmp_path}/missing.img,,hda")])
    with pytest.raises(ValueError, match="hdc: cannot open CD-ROM image .*missing.iso"):
        open_disks([parse_diskspec(f"{tmp_path}/missing.iso,,hdc,cdrom")])


def test_qcow2_goes_through_qemu_nbd(tmp_path):
    import shutil
    import subprocess

    a = make_image(tmp_path / "a.img", 4)
    spec = parse_diskspec(f"{a},qcow2,hda")
    assert spec.format == "qcow2"
    # A raw file named as qcow2: qemu-nbd refuses it, and the error says which disk.
    with pytest.raises(ValueError, match="hda: cannot open disk image .* as qcow2"):
        open_disks([spec])
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (qemu-utils) not installed")
    q = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(a), str(q)], check=True)
    disks = open_disks([parse_diskspec(f"{q},qcow2,hda")])
    try:
        buf = bytearray(4 * 512)
        disks[(0, 0)].read_into(0, [buf])
        assert bytes(buf) == a.read_bytes()
        assert type(disks[(0, 0)]).__name__ == "NbdDisk"
    finally:
        disks[(0, 0)].close()


def test_cache_key_is_an_extension(tmp_path):
    a = make_image(tmp_path / "a.img", 4)
    assert parse_diskspec(f"{a},raw,hda").cache == "writeback"
    for mode in ("writeback", "writethrough", "direct"):
        spec = parse_diskspec(f"format=raw,vdev=hda,cache={mode},target={a}")
        assert spec.cache == mode
    with pytest.raises(ValueError, match="cache 'none' is not one of"):
        parse_diskspec(f"{a},raw,hda,cache=none")
    disks = open_disks([parse_diskspec(f"cache=writethrough,vdev=hda,target={a}")])
    try:
        assert disks[(0, 0)].cache == "writethrough"
    finally:
        disks[(0, 0)].close()


def test_open_cdrom_and_empty_drive(tmp_path):
    iso = tmp_path / "a.iso"
    iso.write_bytes(bytes(4 * 2048))
    with pytest.raises(ValueError, match="target= takes the rest"):
        parse_diskspec(f"target={iso},devtype=cdrom,vdev=hdc")
    disks = open_disks([parse_diskspec(f"devtype=cdrom,vdev=hdc,target={iso}"),
                        parse_diskspec(",,hdd,cdrom")])
    try:
        assert isinstance(disks[(1, 0)], Cdrom) and isinstance(disks[(1, 1)], Cdrom)
        assert disks[(1, 0)].medium.readonly and disks[(1, 0)].medium.size == 4 * 2048
        assert disks[(1, 1)].medium is None
    finally:
        disks[(1, 0)].medium.close()
    assert parse_diskspec(",,hdd,cdrom").target == ""
    assert parse_diskspec("vdev=hdb,devtype=cdrom,target=").position == (0, 1)
    small = tmp_path / "small.iso"
    small.write_bytes(bytes(100))
    with pytest.raises(ValueError, match="not an ISO"):
        open_disks([parse_diskspec(f"{small},,hdc,cdrom")])
