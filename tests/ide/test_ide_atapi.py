"""The ATAPI CD-ROM, register by register: signature, IDENTIFY PACKET DEVICE, the PACKET
protocol (interrupt reason, byte-count limit, DRQ blocks) in PIO and DMA, each MMC command,
sense data and media change as QEMU's ide-cd reports them."""

from __future__ import annotations

import struct

import pytest
from ide_helpers import (
    CD_BLOCK,
    Rig,
    ata_string,
    atapi_pio,
    cdb,
    iso_bytes,
    make_image,
    make_iso,
    request_sense,
    send_packet,
    words,
)

from devmodel.backends.disk import RawFileDisk
from devmodel.ide import Cdrom, MediaLockedError, ata, mmc

NBLOCKS = 40
OK = ata.READY_STAT | ata.SEEK_STAT
DONE = ata.ATAPI_INT_REASON_IO | ata.ATAPI_INT_REASON_CD
CMD1 = 0x170


def cd_rig(tmp_path, nblocks: int = NBLOCKS, with_disk: bool = False, medium: bool = True) -> Rig:
    disks: dict = {}
    if with_disk:
        disks[(0, 0)] = RawFileDisk(make_image(tmp_path / "hd.img", 64))
    iso = make_iso(tmp_path / "cd.iso", nblocks) if medium else None
    disks[(1, 0)] = Cdrom(RawFileDisk(iso, readonly=True) if iso else None)
    return Rig(disks)


def read10(lba: int, count: int) -> bytes:
    return cdb(0x28, 0, *struct.pack(">I", lba), 0, *struct.pack(">H", count))


def read12(lba: int, count: int) -> bytes:
    return cdb(0xA8, 0, *struct.pack(">I", lba), *struct.pack(">I", count))


def check_condition(res, key: int, asc: int, r: Rig) -> None:
    assert res.status == ata.READY_STAT | ata.ERR_STAT, hex(res.status)
    assert res.error == key << 4 and res.reason & 3 == DONE and res.data == b""
    assert request_sense(r)[:2] == (key, asc)


def signature(r: Rig, ch: int = 1) -> tuple[int, int, int, int]:
    b = r.base(ch)
    return r.inp(b + 2), r.inp(b + 3), r.inp(b + 4), r.inp(b + 5)


# ---- ATA level --------------------------------------------------------------------------
def test_signature_after_power_on_srst_and_device_reset(tmp_path):
    r = cd_rig(tmp_path)
    assert signature(r) == (1, 1, 0x14, 0xEB)
    assert r.status(1) == OK
    atapi_pio(r, cdb(0x12, 0, 0, 0, 36))  # registers now hold byte counts
    r.devctl(ata.CTRL_SRST, ch=1)
    assert r.altstatus(1) & ata.BUSY_STAT
    r.devctl(0, ch=1)
    assert signature(r) == (1, 1, 0x14, 0xEB)
    # A packet device's diagnostic leaves DRDY clear (ATAPI-6 9.10) and error 01h.
    assert r.status(1) == 0 and r.error(1) == 0x01
    atapi_pio(r, cdb(0x12, 0, 0, 0, 36))
    r.irqs()
    r.select(0, ch=1)
    r.command(ata.CMD_DEVICE_RESET, 1)
    assert signature(r) == (1, 1, 0x14, 0xEB)
    assert r.status(1) == 0 and r.irqs() == []  # DEVICE RESET: status 0, no interrupt


def test_identify_packet_device(tmp_path):
    r = cd_rig(tmp_path)
    r.select(0, ch=1)
    r.command(ata.CMD_IDENTIFY_PACKET, 1)
    assert r.irqs() == [(15, 1)]
    assert r.status(1) == OK | ata.DRQ_STAT
    page = r.read_block(0x10000, 512, 1)
    w = words(page)
    assert w[0] == 0x85C0  # ATAPI, CD-ROM (5), removable, 50 us DRQ, 12-byte packets
    assert (w[0] >> 8) & 0x1F == 5  # what SeaBIOS checks
    assert ata_string(page, 27, 46) == "QEMU DVD-ROM"
    assert ata_string(page, 10, 19) == "QM00003"
    assert ata_string(page, 23, 26) == "2.5+"
    assert w[49] & (1 << 8) and w[49] & (1 << 9)  # DMA, LBA
    assert w[80] == 0x1E and w[88] == 0x203F
    assert r.status(1) == OK


def test_identify_device_aborts_with_the_signature(tmp_path):
    r = cd_rig(tmp_path)
    atapi_pio(r, cdb(0x12, 0, 0, 0, 36))
    r.select(0, ch=1)
    r.command(ata.CMD_IDENTIFY, 1)
    assert r.irqs()[-1] == (15, 1)
    assert r.status(1) == ata.READY_STAT | ata.ERR_STAT and r.error(1) == ata.ABRT_ERR
    assert signature(r)[2:] == (0x14, 0xEB)
    assert r.inp(CMD1, 2) == 0xFFFF  # no data phase


@pytest.mark.parametrize("medium", [True, False])
@pytest.mark.parametrize("cmd", [ata.CMD_READ_NATIVE_MAX, ata.CMD_READ_NATIVE_MAX_EXT,
                                 ata.CMD_READ_DMA, ata.CMD_WRITE, ata.CMD_WRITE_DMA_EXT,
                                 ata.CMD_READ_MULTIPLE, ata.CMD_SET_MULTIPLE, ata.CMD_SMART,
                                 ata.CMD_DSM, ata.CMD_SPECIFY, ata.CMD_VERIFY, ata.CMD_SEEK,
                                 ata.CMD_CHECK_POWER_MODE1, ata.CMD_NOP, 0x5A, 0xFF])
def test_ata_only_commands_abort_keeping_the_signature(tmp_path, cmd, medium):
    """hostile-guest-catalog entry 5 (CVE-2015-6855): a whitelist per device kind; nothing
    divides by a geometry a CD-ROM does not have."""
    r = cd_rig(tmp_path, medium=medium)
    r.select(0, ch=1)
    r.out(CMD1 + 2, 0)
    r.out(CMD1 + 3, 0)
    r.command(cmd, 1)
    assert r.status(1) == ata.READY_STAT | ata.ERR_STAT and r.error(1) == ata.ABRT_ERR
    assert signature(r)[2:] == (0x14, 0xEB)
    assert not r.dev.failed
    assert atapi_pio(r, cdb(0x12, 0, 0, 0, 36)).ok  # and the drive works on


def test_overlapped_packet_aborts(tmp_path):
    r = cd_rig(tmp_path)
    r.select(0, ch=1)
    r.out(CMD1 + 1, ata.ATAPI_FEAT_OVL)
    r.command(ata.CMD_PACKET, 1)
    assert r.status(1) == ata.READY_STAT | ata.ERR_STAT and r.error(1) == ata.ABRT_ERR


# ---- the packet protocol ------------------------------------------------------------------
def test_packet_phase_then_completion(tmp_path):
    r = cd_rig(tmp_path)
    r.select(0, ch=1)
    r.command(ata.CMD_PACKET, 1)
    assert r.irqs() == []  # no interrupt for the packet's DRQ
    assert r.altstatus(1) == OK | ata.DRQ_STAT and r.inp(CMD1 + 2) & 7 == ata.ATAPI_INT_REASON_CD
    for _ in range(6):
        r.out(CMD1, 0, 2)  # TEST UNIT READY
    assert r.irqs() == [(15, 1)]
    assert r.inp(CMD1 + 2) & 7 == DONE and r.status(1) == OK and r.error(1) == 0
    r.out(CMD1, 0x1234, 2)  # beyond the packet: ignored
    assert r.altstatus(1) == OK and r.inp(CMD1, 2) == 0xFFFF


def test_read10_pio_blocks_follow_the_byte_count_limit(tmp_path):
    r = cd_rig(tmp_path)
    whole = iso_bytes(NBLOCKS)
    res = atapi_pio(r, read10(3, 2), bcl=CD_BLOCK)
    assert res.ok and res.blocks == [2048, 2048] and res.reason & 7 == DONE
    assert res.data == whole[3 * CD_BLOCK : 5 * CD_BLOCK]
    res = atapi_pio(r, read10(0, 5), bcl=5000)  # blocks straddle CD block boundaries
    assert res.blocks == [5000, 5000, 240] and res.data == whole[: 5 * CD_BLOCK]
    res = atapi_pio(r, read10(1, 1), bcl=0x7FF)  # an odd limit is rounded down
    assert res.blocks == [0x7FE, 2] and res.data == whole[CD_BLOCK : 2 * CD_BLOCK]
    res = atapi_pio(r, read10(0, 40), bcl=0xFFFF)  # FFFFh means FFFEh
    assert res.blocks[0] == 0xFFFE and sum(res.blocks) == 40 * CD_BLOCK
    assert res.data == whole


def test_each_drq_block_interrupts(tmp_path):
    r = cd_rig(tmp_path)
    send_packet(r, read10(0, 3), bcl=CD_BLOCK)
    seen = 0
    for _ in range(3):
        assert r.irq_level(15) == 1
        assert r.status(1) & ata.DRQ_STAT  # reading status acknowledges
        assert r.irq_level(15) == 0
        r.rep_ins(CMD1, 0x40000, CD_BLOCK // 2)
        seen += 1
    assert r.irq_level(15) == 1 and r.status(1) == OK and seen == 3


def test_read12_and_dword_pio(tmp_path):
    r = cd_rig(tmp_path)
    send_packet(r, read12(7, 1), bcl=CD_BLOCK)
    r.rep_ins(CMD1, 0x40000, CD_BLOCK // 4, size=4)
    assert r.ram(0x40000, CD_BLOCK) == iso_bytes(NBLOCKS)[7 * CD_BLOCK : 8 * CD_BLOCK]
    assert r.status(1) == OK


@pytest.mark.parametrize("packet", [read10(39, 2), read10(40, 1), read10(0xFFFFFFFF, 1),
                                    read12(0, 0xFFFFFFFF), read12(0xFFFFFFF0, 0x20),
                                    cdb(0xBE, 0, 0, 0, 0, 39, 0, 0, 2, 0x10)])
def test_reads_outside_the_medium_are_refused_before_any_data(tmp_path, packet):
    """QEMU's cmd_read/cmd_read_cd once computed the transfer from unchecked guest counts;
    here the block range is checked against the medium first."""
    r = cd_rig(tmp_path)
    res = atapi_pio(r, packet)
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_LOGICAL_BLOCK_OOR, r)


def test_zero_length_reads_complete_without_data(tmp_path):
    r = cd_rig(tmp_path)
    for packet in (read10(0, 0), read12(0, 0), cdb(0xBE, 0, 0, 0, 0, 0, 0, 0, 0, 0x10)):
        res = atapi_pio(r, packet)
        assert res.ok and res.data == b"" and res.reason & 7 == DONE


def test_read_cd_user_data(tmp_path):
    r = cd_rig(tmp_path)
    res = atapi_pio(r, cdb(0xBE, 0, 0, 0, 0, 2, 0, 0, 3, 0x10), bcl=CD_BLOCK)
    assert res.ok and res.data == iso_bytes(NBLOCKS)[2 * CD_BLOCK : 5 * CD_BLOCK]
    res = atapi_pio(r, cdb(0xBE, 0, 0, 0, 0, 2, 0, 0, 1, 0x00))  # no fields: no data
    assert res.ok and res.data == b""
    res = atapi_pio(r, cdb(0xBE, 0, 0, 0, 0, 2, 0, 0, 1, 0xF8))  # raw sectors: not offered
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)


def test_zero_byte_count_limit_aborts_data_commands_only(tmp_path):
    r = cd_rig(tmp_path)
    res = atapi_pio(r, read10(0, 1), bcl=0)
    assert res.status == ata.READY_STAT | ata.ERR_STAT and res.error == ata.ABRT_ERR
    assert res.irqs == [(15, 1)] and res.data == b""
    assert atapi_pio(r, cdb(0x00), bcl=0).ok  # TEST UNIT READY has no data
    assert atapi_pio(r, cdb(0x1E, 0, 0, 0, 0), bcl=0).ok


def test_odd_reply_is_padded_to_a_word(tmp_path):
    r = cd_rig(tmp_path)
    res = atapi_pio(r, cdb(0x12, 0, 0, 0, 7))
    assert res.blocks == [7] and res.data == mmc.inquiry("2.5+")[:7] and res.ok


def test_small_byte_count_limit_splits_a_reply(tmp_path):
    """hostile-guest-catalog entry 7 (CVE-2020-29443): the reply index is bounded by the
    reply for every block, whatever the limit."""
    r = cd_rig(tmp_path)
    res = atapi_pio(r, cdb(0x03, 0, 0, 0, 18), bcl=3)
    assert res.blocks == [2] * 9 and len(res.data) == 18 and res.ok
    res = atapi_pio(r, cdb(0x12, 0, 0, 0, 0xFF), bcl=1)  # 1 rounds down to 0: abort
    assert res.error == ata.ABRT_ERR and res.data == b""


# ---- MMC commands ---------------------------------------------------------------------------
def test_test_unit_ready_and_request_sense(tmp_path):
    r = cd_rig(tmp_path)
    res = atapi_pio(r, cdb(0x00))
    assert res.ok and res.status == OK and res.reason & 7 == DONE and res.irqs == [(15, 1)]
    assert request_sense(r) == (mmc.NO_SENSE, 0, 0)
    res = atapi_pio(r, cdb(0x03, 0, 0, 0, 0xFF))
    assert res.data[0] == 0xF0 and res.data[7] == 10 and len(res.data) == 18


def test_inquiry(tmp_path):
    r = cd_rig(tmp_path)
    d = atapi_pio(r, cdb(0x12, 0, 0, 0, 96)).data
    assert len(d) == 36 and d[0] == 0x05 and d[1] == 0x80 and d[4] == 31
    assert d[8:16] == b"QEMU    " and d[16:32] == b"QEMU DVD-ROM    " and d[32:36] == b"2.5+"
    assert atapi_pio(r, cdb(0x12, 0, 0, 0, 5)).data == d[:5]
    vpd = atapi_pio(r, cdb(0x12, 1, 0x00, 0, 0xFF)).data
    assert vpd == bytes((5, 0, 0, 2, 0x00, 0x83))
    vpd = atapi_pio(r, cdb(0x12, 1, 0x83, 0, 0xFF)).data
    assert vpd[1] == 0x83 and b"QM00003" in vpd and b"QEMU DVD-ROM" in vpd
    res = atapi_pio(r, cdb(0x12, 1, 0x80, 0, 0xFF))
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)


def test_read_capacity(tmp_path):
    r = cd_rig(tmp_path)
    d = atapi_pio(r, cdb(0x25)).data
    assert struct.unpack(">II", d) == (NBLOCKS - 1, 2048)


@pytest.mark.parametrize("where", ["byte9", "byte2"])
def test_read_toc_formats(tmp_path, where):
    r = cd_rig(tmp_path)

    def toc(fmt: int, msf: bool = False, track: int = 0, alloc: int = 0xFFFF) -> bytes:
        b2 = fmt if where == "byte2" else 0
        b9 = 0 if where == "byte2" else fmt << 6
        res = atapi_pio(r, cdb(0x43, 2 if msf else 0, b2, 0, 0, 0, track, alloc >> 8,
                               alloc & 0xFF, b9))
        assert res.ok, hex(res.error)
        return res.data

    t = toc(0)
    assert t == bytes((0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0,
                       0, 0x16, 0xAA, 0, 0, 0, 0, NBLOCKS))
    t = toc(0, msf=True)
    assert t[8:12] == bytes((0, 0, 2, 0)) and t[16:20] == bytes((0, 0, 2, 40))  # 150+40 frames
    assert toc(0, track=0xAA)[2:] == bytes((1, 1, 0, 0x16, 0xAA, 0, 0, 0, 0, NBLOCKS))
    assert toc(1) == bytes((0, 0x0A, 1, 1)) + bytes(8)
    raw = toc(2)
    assert struct.unpack(">H", raw[:2])[0] == len(raw) - 2 == 46
    assert [raw[4 + 11 * i + 3] for i in range(4)] == [0xA0, 0xA1, 0xA2, 1]
    assert raw[4 + 22 + 7 : 4 + 22 + 11] == struct.pack(">I", NBLOCKS)
    assert toc(0, alloc=4) == bytes((0, 18, 1, 1))
    res = atapi_pio(r, cdb(0x43, 0, 0, 0, 0, 0, 2, 0, 0xFF))  # start track 2: no such track
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)


def test_get_configuration(tmp_path):
    r = cd_rig(tmp_path)
    d = atapi_pio(r, cdb(0x46, 0, 0, 0, 0, 0, 0, 0x02, 0x00)).data
    assert len(d) == 20 and struct.unpack(">I", d[:4])[0] == 16
    assert struct.unpack(">H", d[6:8])[0] == mmc.PROFILE_CD_ROM
    assert d[8:12] == bytes((0, 0, 3, 8))
    assert d[12:20] == bytes((0, 0x10, 0, 0, 0, 0x08, 1, 0))  # DVD-ROM, CD-ROM (current)
    res = atapi_pio(r, cdb(0x46, 0, 0, 1, 0, 0, 0, 0x02, 0x00))
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)
    empty = cd_rig(tmp_path, medium=False)
    d = atapi_pio(empty, cdb(0x46, 0, 0, 0, 0, 0, 0, 0x02, 0x00)).data
    assert struct.unpack(">H", d[6:8])[0] == 0  # no medium: no current profile


def test_mode_sense_pages(tmp_path):
    r = cd_rig(tmp_path)

    def mode(page: int, alloc: int = 0x100):
        return atapi_pio(r, cdb(0x5A, 0, page, 0, 0, 0, 0, alloc >> 8, alloc & 0xFF))

    d = mode(0x01).data
    assert d == bytes((0, 14, 0x70, 0, 0, 0, 0, 0, 0x01, 6, 0, 5, 0, 0, 0, 0))
    cap = mode(0x2A).data
    assert len(cap) == 30 and cap[8:10] == bytes((0x2A, 20)) and cap[14] == 0x29
    assert struct.unpack(">H", cap[16:18])[0] == 704
    atapi_pio(r, cdb(0x1E, 0, 0, 0, 1))  # PREVENT: the capabilities page shows the lock
    assert mode(0x2A).data[14] == 0x2B
    atapi_pio(r, cdb(0x1E, 0, 0, 0, 0))
    every = mode(0x3F).data
    assert struct.unpack(">H", every[:2])[0] == len(every) - 2 == 6 + 8 + 16 + 22
    assert [every[8], every[16], every[32]] == [0x01, 0x0E, 0x2A]
    assert mode(0x2A, alloc=10).data == cap[:10]
    check_condition(mode(0x05), mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)
    check_condition(mode(0x40 | 0x2A), mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)
    check_condition(mode(0xC0 | 0x2A), mmc.ILLEGAL_REQUEST,
                    mmc.ASC_SAVING_PARAMETERS_NOT_SUPPORTED, r)


def test_disc_information_mechanism_status_set_speed_seek(tmp_path):
    r = cd_rig(tmp_path)
    d = atapi_pio(r, cdb(0x51, 0, 0, 0, 0, 0, 0, 0, 0xFF)).data
    assert len(d) == 34 and d[1] == 32 and d[2] == 0x0E and d[7] == 0x20
    res = atapi_pio(r, cdb(0x51, 1, 0, 0, 0, 0, 0, 0, 0xFF))
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)
    assert atapi_pio(r, cdb(0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8)).data == bytes((0, 0, 0, 0, 0, 1, 0, 0))
    assert atapi_pio(r, cdb(0xBB, 0, 0xFF, 0xFF, 0xFF, 0xFF)).ok
    assert atapi_pio(r, cdb(0x2B, 0, 0, 0, 0, 39)).ok
    check_condition(atapi_pio(r, cdb(0x2B, 0, 0, 0, 0, 40)), mmc.ILLEGAL_REQUEST,
                    mmc.ASC_LOGICAL_BLOCK_OOR, r)


@pytest.mark.parametrize("opcode", [0x01, 0x04, 0x15, 0x1A, 0x2A, 0x55, 0xAD, 0xFF])
def test_unknown_opcode_is_illegal_request(tmp_path, opcode):
    r = cd_rig(tmp_path)
    res = atapi_pio(r, cdb(opcode, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))
    assert res.error == 0x50
    check_condition(res, mmc.ILLEGAL_REQUEST, mmc.ASC_ILLEGAL_OPCODE, r)


def test_start_stop_unit_and_prevent(tmp_path):
    r = cd_rig(tmp_path)
    drive = r.dev.drive(1, 0)
    assert atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x02)).ok  # eject: the tray opens
    assert drive.tray_open
    check_condition(atapi_pio(r, cdb(0x00)), mmc.NOT_READY, mmc.ASC_MEDIUM_NOT_PRESENT, r)
    assert atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x03)).ok  # load
    assert atapi_pio(r, cdb(0x00)).ok
    assert atapi_pio(r, cdb(0x1E, 0, 0, 0, 1)).ok and drive.locked
    res = atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x02))
    check_condition(res, mmc.NOT_READY, mmc.ASC_MEDIA_REMOVAL_PREVENTED, r)
    assert not drive.tray_open
    assert atapi_pio(r, cdb(0x1E, 0, 0, 0, 0)).ok
    assert atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x02)).ok and drive.tray_open
    assert atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x01)).ok and drive.tray_open  # start, no LoEj


def test_start_stop_with_power_condition_ends_the_command(tmp_path):
    """hostile-guest-catalog entry 4 (CVE-2015-5154): START STOP UNIT with a power
    condition once returned without ending the transfer, leaving DRQ set and the data
    pointer free to run past the buffer."""
    r = cd_rig(tmp_path)
    res = atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x32))
    assert res.ok and res.reason & 7 == DONE and not res.status & ata.DRQ_STAT
    for _ in range(5000):
        r.out(CMD1, 0xDEAD, 2)
        assert r.inp(CMD1, 2) == 0xFFFF and r.inp(CMD1, 4) == 0xFFFFFFFF
    r.rep_outs(CMD1, 0, 2048)
    r.rep_ins(CMD1, 0x10000, 2048)
    assert r.ram(0x10000, 4096) == b"\xff" * 4096
    assert r.dev.drive(1, 0).pos == 0 and atapi_pio(r, cdb(0x00)).ok


def test_empty_drive_is_not_ready_everywhere(tmp_path):
    r = cd_rig(tmp_path, medium=False)
    for packet in (cdb(0x00), cdb(0x25), read10(0, 1), read12(0, 1),
                   cdb(0x43, 0, 0, 0, 0, 0, 0, 0, 0xFF), cdb(0x51, 0, 0, 0, 0, 0, 0, 0, 0xFF),
                   cdb(0xBE, 0, 0, 0, 0, 0, 0, 0, 1, 0x10), cdb(0x2B)):
        check_condition(atapi_pio(r, packet), mmc.NOT_READY, mmc.ASC_MEDIUM_NOT_PRESENT, r)
    assert atapi_pio(r, cdb(0x12, 0, 0, 0, 36)).ok  # INQUIRY needs no medium
    gesn = atapi_pio(r, cdb(0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8)).data
    assert gesn[4:6] == bytes((mmc.MEC_NO_CHANGE, 0))
    res = atapi_pio(r, cdb(0x1B, 0, 0, 0, 0x02))  # eject with nothing in it: fine
    assert res.ok


# ---- media change -------------------------------------------------------------------------
def test_media_change_reports_not_ready_then_unit_attention(tmp_path):
    r = cd_rig(tmp_path, medium=False)
    drive = r.dev.drive(1, 0)
    iso2 = make_iso(tmp_path / "b.iso", 8, seed=5)
    r.irqs()
    assert drive.insert_media(RawFileDisk(iso2, readonly=True)) is None
    assert r.irqs() == [(15, 1)]  # QEMU raises the channel interrupt on a change
    r.status(1)
    # ide_atapi_cmd: first NOT READY / MEDIUM NOT PRESENT, then UNIT ATTENTION / 28h ...
    res = atapi_pio(r, cdb(0x00))
    assert res.error == 0x20 and res.status == ata.READY_STAT | ata.ERR_STAT
    res = atapi_pio(r, cdb(0x00))
    assert res.error == 0x60 and res.status == ata.READY_STAT | ata.ERR_STAT
    # ... then, until REQUEST SENSE, CHECK CONDITION without DRDY (ide_atapi_cmd_check_status)
    res = atapi_pio(r, read10(0, 1))
    assert res.status == ata.ERR_STAT and res.error == ata.MC_ERR | 0x60 and res.reason == 0
    assert atapi_pio(r, cdb(0x12, 0, 0, 0, 36)).ok  # INQUIRY is allowed under UA
    assert request_sense(r) == (mmc.UNIT_ATTENTION, mmc.ASC_MEDIUM_MAY_HAVE_CHANGED, 0)
    assert request_sense(r) == (mmc.NO_SENSE, mmc.ASC_MEDIUM_MAY_HAVE_CHANGED, 0)
    res = atapi_pio(r, read10(1, 1), bcl=CD_BLOCK)
    assert res.ok and res.data == iso_bytes(8, seed=5)[CD_BLOCK : 2 * CD_BLOCK]
    assert struct.unpack(">I", atapi_pio(r, cdb(0x25)).data[:4])[0] == 7


def test_get_event_status_reports_new_media_once(tmp_path):
    r = cd_rig(tmp_path, medium=False)
    drive = r.dev.drive(1, 0)
    gesn = cdb(0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8)
    check_condition(atapi_pio(r, cdb(0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8)), mmc.ILLEGAL_REQUEST,
                    mmc.ASC_INV_FIELD_IN_CMD_PACKET, r)  # asynchronous: not supported
    drive.insert_media(RawFileDisk(make_iso(tmp_path / "b.iso", 8), readonly=True))
    d = atapi_pio(r, gesn).data
    assert d == bytes((0, 4, mmc.GESN_MEDIA, 0x10, mmc.MEC_NEW_MEDIA, mmc.MS_MEDIA_PRESENT, 0, 0))
    assert atapi_pio(r, gesn).data[4:6] == bytes((mmc.MEC_NO_CHANGE, mmc.MS_MEDIA_PRESENT))
    assert atapi_pio(r, cdb(0x4A, 1, 0, 0, 0x02, 0, 0, 0, 8)).data == bytes((0, 0, 0x80, 0x10))


def test_eject_media_api_and_lock(tmp_path):
    r = cd_rig(tmp_path)
    drive = r.dev.drive(1, 0)
    old = drive.backend
    atapi_pio(r, cdb(0x1E, 0, 0, 0, 1))  # the guest locks the tray
    with pytest.raises(MediaLockedError):
        drive.eject_media()
    assert drive.backend is old
    d = atapi_pio(r, cdb(0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8)).data
    assert d[4:6] == bytes((mmc.MEC_EJECT_REQUESTED, mmc.MS_MEDIA_PRESENT))
    assert drive.eject_media(force=True) is old
    old.close()
    assert drive.backend is None and drive.tray_open and not drive.locked
    check_condition(atapi_pio(r, cdb(0x00)), mmc.NOT_READY, mmc.ASC_MEDIUM_NOT_PRESENT, r)
    d = atapi_pio(r, cdb(0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8)).data
    assert d[4:6] == bytes((mmc.MEC_NO_CHANGE, mmc.MS_TRAY_OPEN))
    with pytest.raises(ValueError):
        drive.insert_media(RawFileDisk(make_image(tmp_path / "tiny", 1), readonly=True))


# ---- DMA ----------------------------------------------------------------------------------
def test_read10_by_dma(tmp_path):
    r = cd_rig(tmp_path, with_disk=True)
    r.prd_table(0x1000, [(0x20000, 0x1000), (0x30000, 0x4000)], eot=True)
    r.bm_setup(0x1000, to_memory=True, ch=1)
    send_packet(r, read10(5, 10), dma=True)
    assert r.altstatus(1) & ata.DRQ_STAT and r.irqs() == []
    r.bm_start(to_memory=True, ch=1)
    assert r.bm_status(1) & ata.BM_STATUS_INT and not r.bm_status(1) & ata.BM_STATUS_ACTIVE
    assert r.irqs() == [(15, 1)]
    assert r.inp(CMD1 + 2) & 7 == DONE and r.status(1) == OK
    whole = iso_bytes(NBLOCKS)[5 * CD_BLOCK : 15 * CD_BLOCK]
    assert r.ram(0x20000, 0x1000) + r.ram(0x30000, len(whole) - 0x1000) == whole
    r.bm_stop(ch=1)
    # A reply (INQUIRY) by DMA, the bus master already running.
    r.prd_table(0x1000, [(0x50000, 512)])
    r.bm_setup(0x1000, to_memory=True, ch=1)
    r.bm_start(to_memory=True, ch=1)
    send_packet(r, cdb(0x12, 0, 0, 0, 36), dma=True)
    assert r.ram(0x50000, 36) == mmc.inquiry("2.5+") and r.status(1) == OK


def test_dma_with_a_short_prd_table(tmp_path):
    r = cd_rig(tmp_path)
    r.prd_table(0x1000, [(0x20000, 2048)])
    r.bm_setup(0x1000, to_memory=True, ch=1)
    send_packet(r, read10(0, 4), dma=True)
    r.bm_start(to_memory=True, ch=1)
    assert r.bm_status(1) & ata.BM_STATUS_ERROR
    assert r.status(1) == OK  # no data moved, the device is idle and answers again
    assert atapi_pio(r, cdb(0x00)).ok


def test_dma_read_error_is_a_medium_error(tmp_path):
    class Failing(RawFileDisk):
        def read_into(self, offset, bufs):
            raise OSError(5, "EIO")

    iso = make_iso(tmp_path / "cd.iso", 8)
    r = Rig({(1, 0): Cdrom(Failing(iso, readonly=True))})
    r.prd_table(0x1000, [(0x20000, 4096)])
    r.bm_setup(0x1000, to_memory=True, ch=1)
    send_packet(r, read10(0, 2), dma=True)
    r.bm_start(to_memory=True, ch=1)
    assert r.status(1) == ata.READY_STAT | ata.ERR_STAT and r.error(1) == 0x30
    assert request_sense(r)[:2] == (mmc.MEDIUM_ERROR, mmc.ASC_UNRECOVERED_READ_ERROR)
    res = atapi_pio(r, read10(0, 1))
    assert res.error == 0x30 and not r.dev.failed


def test_cmos_geometry_skips_the_cdrom(tmp_path):
    r = cd_rig(tmp_path, with_disk=True)
    assert r.dev.cmos_hd_geometry() == [(0, 2, 16, 63, 0)]


# ---- snapshot -------------------------------------------------------------------------------
def test_snapshot_mid_atapi_read_round_trips(tmp_path):
    import copy

    from devmodel.core.device import SnapshotError

    r = cd_rig(tmp_path)
    send_packet(r, read10(2, 3), bcl=3000)
    r.rep_ins(CMD1, 0x40000, 700)  # part-way through the first DRQ block
    snap = r.m.snapshot()
    saved = copy.deepcopy(snap)
    rest = bytearray()
    r.rep_ins(CMD1, 0x40000 + 1400, 800)
    for _ in range(8):
        if not r.altstatus(1) & ata.DRQ_STAT:
            break
        n = r.inp(CMD1 + 4) | r.inp(CMD1 + 5) << 8
        r.rep_ins(CMD1, 0x50000, n // 2)
        rest += r.ram(0x50000, n)
    first = r.ram(0x40000, 3000) + bytes(rest)
    assert first == iso_bytes(NBLOCKS)[2 * CD_BLOCK : 5 * CD_BLOCK]
    atapi_pio(r, cdb(0x1E, 0, 0, 0, 1))  # mutate: lock the tray
    r.m.restore(snap)
    assert r.m.snapshot() == saved
    assert not r.dev.drive(1, 0).locked
    good = r.dev.snapshot()
    for edit in ({"xfer_left": 1 << 40}, {"cd_sectors": 3}, {"reply": b"x" * 600},
                 {"end_fn": 99}, {"xfer_src": 7}):
        bad = copy.deepcopy(good)
        bad["state"]["ide_state"]["channels"][1]["drives"][0].update(edit)
        with pytest.raises(SnapshotError):
            r.dev.restore(bad)
    r.dev.restore(good)
