"""The SMBIOS tables are built when the firmware first reads fw_cfg, not at start-up (issue 9,
start-up time). The guest must see exactly what an eager build
gives: the same directory (names, keys, sizes) and bytes, whatever it reads first; and every
error stays a start-up error (the bound that decides whether to defer is a true bound)."""

from __future__ import annotations

import pytest
from test_fw_cfg import RAM, UUID, inp, make, outw, read_key

from devmodel.bios import fw_cfg as F
from devmodel.bios import smbios as S
from devmodel.bios.fw_cfg import FwCfgConfig, build_fw_cfg


def _eager(cfg: FwCfgConfig) -> dict[str, bytes]:
    """The files as QEMU's fw_cfg_build_smbios makes them, built directly (RAM areas from
    the e820 table of the default split)."""
    from devmodel.bios import e820

    table = e820.build_e820(*e820.pc_ram_split(cfg.ram_size))
    scfg = S.SmbiosConfig(uuid=bytes(cfg.uuid), serial=cfg.name or None)
    sm = S.build_smbios(scfg, cfg.ram_size, cfg.nr_cpus, e820.ram_areas(table))
    return {"etc/smbios/smbios-tables": sm.tables, "etc/smbios/smbios-anchor": sm.anchor}


def test_first_read_builds_them_and_the_guest_sees_the_real_sizes():
    cfg = FwCfgConfig(ram_size=RAM, nr_cpus=2, uuid=UUID, name="dom-a")
    m, fw = make(cfg)
    assert fw._deferred  # nothing built yet
    # The first thing the firmware does: the directory (count, then entries).
    outw(m, 0x510, F.FILE_DIR)
    count = int.from_bytes(bytes(inp(m, 0x511) for _ in range(4)), "big")
    entries = {}
    for _ in range(count):
        raw = bytes(inp(m, 0x511) for _ in range(64))
        size, key = int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:6], "big")
        entries[raw[8:].rstrip(b"\0").decode()] = (size, key)
    assert not fw._deferred
    tables = read_key(m, entries["etc/smbios/smbios-tables"][1],
                      entries["etc/smbios/smbios-tables"][0])
    anchor = read_key(m, entries["etc/smbios/smbios-anchor"][1],
                      entries["etc/smbios/smbios-anchor"][0])
    assert len(anchor) == S.EP21_SIZE and S.checksum_ok(anchor)
    assert [s.type for s in S.iter_structures(tables)] == [1, 3, 4, 4, 16, 17, 19, 32, 127]
    assert {"etc/smbios/smbios-tables": tables, "etc/smbios/smbios-anchor": anchor} == \
        _eager(cfg)


def test_a_restored_selection_reads_the_built_file():
    """A snapshot taken with an SMBIOS file selected half-way, restored into a fresh fw_cfg
    whose tables are not built yet: the next read builds them and goes on from there."""
    cfg = FwCfgConfig(ram_size=RAM, nr_cpus=1, uuid=UUID)
    m, fw = make(cfg)
    key = fw.file_key("etc/smbios/smbios-tables")
    whole = read_key(m, key, 40)
    outw(m, 0x510, key)
    for _ in range(10):
        inp(m, 0x511)
    snap = fw.snapshot()
    m2, fw2 = make(cfg)
    assert fw2._deferred
    fw2.restore(snap)
    assert bytes(inp(m2, 0x511) for _ in range(30)) == whole[10:40]


def test_layout_bounds_hold():
    """fits_21_entry_point relies on these: every formatted area within MAX_FORMATTED_BYTES,
    and max_smbios_bytes above what is built, for the largest configurations allowed."""
    L = S.layouts()
    for name in S._LAYOUTS:
        assert getattr(L, name).sizeof() <= S.MAX_FORMATTED_BYTES, name
    long = "x" * 1000  # cut to MAX_STRING_BYTES per string
    cfg = S.SmbiosConfig(manufacturer=long, product=long, version=long, serial=long, sku=long,
                         family=long, bios_vendor=long, bios_version=long, bios_date=long,
                         entry_point="3.0")
    areas = [(0, 0x9FC00), (0x100000, 3 << 30), (4 << 30, 61 << 30)]
    for sockets in (1, 17, S.MAX_SOCKETS):
        for ram in (1 << 20, 64 << 30, 1 << 40):
            t = S.build_smbios(cfg, ram, sockets, areas)
            assert len(t.tables) + len(t.anchor) <= S.max_smbios_bytes(ram, sockets, len(areas))
            assert max(len(s.strings) for s in S.iter_structures(t.tables)) <= \
                S.MAX_STRINGS_PER_STRUCTURE


def test_what_may_not_fit_is_built_at_once_and_fails_at_start_up():
    # 255 sockets with the 2.1 entry point: the bound is over 0xFFFF, so no deferral.
    fw = build_fw_cfg(FwCfgConfig(ram_size=RAM, nr_cpus=S.MAX_SOCKETS, uuid=UUID))
    assert not fw._deferred
    assert len(fw.entry_data(fw.file_key("etc/smbios/smbios-anchor"))) == S.EP21_SIZE
    # configuration errors are raised at build, deferred or not
    with pytest.raises(ValueError, match="entry point"):
        build_fw_cfg(FwCfgConfig(ram_size=RAM, uuid=UUID, smbios=S.SmbiosConfig(entry_point="2.2")))
