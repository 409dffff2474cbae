"""MMC (SCSI multimedia) reply data of QEMU's ide-cd: sense codes, and the pages INQUIRY,
READ TOC/PMA/ATIP, GET CONFIGURATION, MODE SENSE(10) and friends return, as plain functions
of the drive's state (QEMU hw/ide/atapi.c, hw/block/cdrom.c; MMC-5, SPC-3).

Every builder returns at most MAX_REPLY bytes; the caller trims to the allocation length.
"""

from __future__ import annotations

import struct

CD_SECTOR_SIZE = 2048
# QEMU CD_MAX_SECTORS: a medium larger than 80 minutes of CD is reported as a DVD.
CD_MAX_BYTES = 80 * 60 * 75 * CD_SECTOR_SIZE
CD_MAX_SECTORS = CD_MAX_BYTES // CD_SECTOR_SIZE
# No reply here is longer (GET CONFIGURATION is clamped to it, as in QEMU).
MAX_REPLY = 512

# Sense keys (SPC-3 4.5.6)
NO_SENSE = 0x00
NOT_READY = 0x02
MEDIUM_ERROR = 0x03
ILLEGAL_REQUEST = 0x05
UNIT_ATTENTION = 0x06

# Additional sense codes (QEMU hw/ide/internal.h ASC_*)
ASC_UNRECOVERED_READ_ERROR = 0x11
ASC_ILLEGAL_OPCODE = 0x20
ASC_LOGICAL_BLOCK_OOR = 0x21
ASC_INV_FIELD_IN_CMD_PACKET = 0x24
ASC_MEDIUM_MAY_HAVE_CHANGED = 0x28
ASC_INCOMPATIBLE_FORMAT = 0x30
ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x39
ASC_MEDIUM_NOT_PRESENT = 0x3A
ASC_DATA_PHASE_ERROR = 0x4B
ASC_MEDIA_REMOVAL_PREVENTED = 0x53

# Opcodes (MMC-5 / QEMU GPCMD_*)
TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
INQUIRY = 0x12
START_STOP_UNIT = 0x1B
PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
READ_CAPACITY = 0x25
READ_10 = 0x28
SEEK_10 = 0x2B
READ_TOC_PMA_ATIP = 0x43
GET_CONFIGURATION = 0x46
GET_EVENT_STATUS_NOTIFICATION = 0x4A
READ_DISC_INFORMATION = 0x51
MODE_SENSE_10 = 0x5A
READ_12 = 0xA8
SET_CD_SPEED = 0xBB
MECHANISM_STATUS = 0xBD
READ_CD = 0xBE

# Mode pages
MODE_PAGE_R_W_ERROR = 0x01
MODE_PAGE_AUDIO_CTL = 0x0E
MODE_PAGE_CAPABILITIES = 0x2A
MODE_PAGE_ALL = 0x3F

# GET CONFIGURATION profiles
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010

# GET EVENT STATUS NOTIFICATION (MMC-5 6.6)
GESN_MEDIA = 4
MEC_NO_CHANGE = 0
MEC_EJECT_REQUESTED = 1
MEC_NEW_MEDIA = 2
MS_TRAY_OPEN = 1
MS_MEDIA_PRESENT = 2

VENDOR = "QEMU"
PRODUCT = "QEMU DVD-ROM"
T10_VENDOR = "ATA"


def _pad(text: str, n: int) -> bytes:
    """QEMU padstr8: ASCII, space padded, not byte-swapped."""
    return text.encode("ascii", "replace")[:n].ljust(n, b" ")


def lba_to_msf(lba: int) -> bytes:
    """Minute/second/frame of a logical block (2 s of lead-in before block 0)."""
    lba += 150
    return bytes(((lba // 75) // 60 & 0xFF, (lba // 75) % 60, lba % 75))


def _address(lba: int, msf: bool) -> bytes:
    return b"\x00" + lba_to_msf(lba) if msf else struct.pack(">I", lba & 0xFFFFFFFF)


def sense(sense_key: int, asc: int) -> bytes:
    """Fixed-format sense data, current error, valid (QEMU cmd_request_sense)."""
    out = bytearray(18)
    out[0] = 0x70 | 0x80
    out[2] = sense_key
    out[7] = 10
    out[12] = asc
    return bytes(out)


def inquiry(version: str) -> bytes:
    """Standard INQUIRY data: CD-ROM, removable, ATAPI-2."""
    head = bytes((0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0))
    return head + _pad(VENDOR, 8) + _pad(PRODUCT, 16) + _pad(version, 4)


def inquiry_vpd(page: int, serial: str, model: str, max_len: int) -> bytes | None:
    """EVPD pages 00h (supported pages) and 83h (device identification: the serial, then
    the T10 vendor/model/serial designator if the allocation length leaves room). None for
    any other page, and for an 83h request too short for its first entry (QEMU)."""
    if page == 0x00:
        body = bytes((0x00, 0x83))
    elif page == 0x83:
        if 4 + 24 > max_len:
            return None
        body = bytes((0x02, 0x00, 0x00, 20)) + _pad(serial, 20)
        if 4 + len(body) + 72 <= max_len:
            body += bytes((0x01, 0x01, 0x00, 68)) + _pad(T10_VENDOR, 8) + _pad(model, 40) + _pad(
                serial, 20)
    else:
        return None
    return bytes((0x05, page, 0x00, len(body))) + body


def read_capacity(cd_sectors: int) -> bytes:
    """Last logical block address and the block length."""
    return struct.pack(">II", max(cd_sectors - 1, 0), CD_SECTOR_SIZE)


def toc_format0(cd_sectors: int, msf: bool, start_track: int) -> bytes | None:
    """READ TOC format 0 (QEMU cdrom_read_toc): track 1 (data, from block 0) and the
    lead-out (track AAh) at the end of the medium; None for a start track past both."""
    if start_track > 1 and start_track != 0xAA:
        return None
    body = bytearray((1, 1))  # first and last track
    if start_track <= 1:
        body += bytes((0, 0x14, 1, 0)) + _address(0, msf)
    body += bytes((0, 0x16, 0xAA, 0)) + _address(cd_sectors, msf)
    return struct.pack(">H", len(body)) + bytes(body)


def toc_format1() -> bytes:
    """Multi-session information: one session, first track 1 at block 0."""
    out = bytearray(12)
    out[1], out[2], out[3] = 0x0A, 0x01, 0x01
    return bytes(out)


def toc_format2(cd_sectors: int, msf: bool) -> bytes:
    """Raw TOC (QEMU cdrom_read_toc_raw): points A0h, A1h, A2h (lead-out) and track 1."""
    body = bytearray((1, 1))
    body += bytes((1, 0x14, 0, 0xA0, 0, 0, 0, 0, 1, 0x00, 0x00))  # first track 1, CD-ROM
    body += bytes((1, 0x14, 0, 0xA1, 0, 0, 0, 0, 1, 0x00, 0x00))  # last track 1
    body += bytes((1, 0x14, 0, 0xA2, 0, 0, 0)) + _address(cd_sectors, msf)  # lead-out
    body += bytes((1, 0x14, 0, 1, 0, 0, 0)) + _address(0, msf)  # track 1
    return struct.pack(">H", len(body)) + bytes(body)


def configuration(cd_sectors: int) -> bytes:
    """GET CONFIGURATION, feature 0 (profile list): DVD-ROM and CD-ROM profiles, the
    current one by medium size (none without a medium)."""
    if cd_sectors == 0:
        current = 0
    elif cd_sectors > CD_MAX_SECTORS:
        current = PROFILE_DVD_ROM
    else:
        current = PROFILE_CD_ROM
    feature = bytearray((0x00, 0x00, 0x03, 0))  # feature 0, persistent + current
    for profile in (PROFILE_DVD_ROM, PROFILE_CD_ROM):
        feature += struct.pack(">HBB", profile, int(profile == current), 0)
    feature[3] = len(feature) - 4
    header = struct.pack(">IHH", 4 + len(feature), 0, current)
    return header + bytes(feature)


def event_status_media(tray_open: bool, inserted: bool, event: int) -> bytes:
    """GET EVENT STATUS NOTIFICATION, media class: header then the media event descriptor."""
    status = MS_TRAY_OPEN if tray_open else (MS_MEDIA_PRESENT if inserted else 0)
    return struct.pack(">HBB", 4, GESN_MEDIA, 1 << GESN_MEDIA) + bytes((event, status, 0, 0))


def event_status_none() -> bytes:
    """No requested class is supported: 'no event available'."""
    return struct.pack(">HBB", 0, 0x80, 1 << GESN_MEDIA)


def _mode_page(code: int, tray_locked: bool) -> bytes:
    if code == MODE_PAGE_R_W_ERROR:
        return bytes((MODE_PAGE_R_W_ERROR, 6, 0x00, 0x05, 0, 0, 0, 0))  # read retry count 5
    if code == MODE_PAGE_AUDIO_CTL:
        return bytes((MODE_PAGE_AUDIO_CTL, 14)) + bytes(14)
    assert code == MODE_PAGE_CAPABILITIES
    mech = (1 << 0) | (1 << 3) | (1 << 5) | ((1 << 1) if tray_locked else 0)  # lock, eject
    return (bytes((MODE_PAGE_CAPABILITIES, 20, 0x3B, 0x00, 0x71, 3 << 5, mech, 0x00))
            + struct.pack(">HBBHH", 704, 0, 2, 512, 704) + bytes(6))


MODE_PAGES = (MODE_PAGE_R_W_ERROR, MODE_PAGE_AUDIO_CTL, MODE_PAGE_CAPABILITIES)


def mode_sense(code: int, tray_locked: bool) -> bytes | None:
    """MODE SENSE(10) current values: the 8-byte header (medium type 70h: no disc
    present/door closed, as QEMU) and the page, or every page for 3Fh (QEMU has no 3Fh).
    None for a page this drive does not have."""
    if code == MODE_PAGE_ALL:
        pages = b"".join(_mode_page(c, tray_locked) for c in MODE_PAGES)
    elif code in MODE_PAGES:
        pages = _mode_page(code, tray_locked)
    else:
        return None
    return struct.pack(">HBBBBH", 6 + len(pages), 0x70, 0, 0, 0, 0) + pages


def disc_information() -> bytes:
    """READ DISC INFORMATION, standard type: a finalized single-session disc."""
    out = bytearray(34)
    out[1] = 32
    out[2] = 0x0E  # last session complete, disc finalized
    out[3] = out[4] = out[5] = out[6] = 1  # first track, sessions, first/last track of last
    out[7] = 0x20  # unrestricted use
    return bytes(out)


def mechanism_status() -> bytes:
    """No changer; one slot."""
    return bytes((0, 0, 0, 0, 0, 1, 0, 0))
