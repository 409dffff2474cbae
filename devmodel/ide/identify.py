"""IDENTIFY DEVICE data and the CHS geometry guess of an ATA disk, as QEMU builds them
(hw/ide/core.c ide_identify, hw/block/hd-geometry.c hd_geometry_guess).

The 256-word page is kept as plain data: a table of word -> value filled in one place, so a
reader can hold it next to ATA/ATAPI-6 section 8.15 and QEMU's ide_identify line by line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# QEMU's MAX_MULT_SECTORS: the largest READ/WRITE MULTIPLE block, and the power-on setting.
MAX_MULT_SECTORS = 16
LBA28_LIMIT = (1 << 28) - 1
MAX_CYLINDERS = 16383

# Largest DATA SET MANAGEMENT payload, in 512-byte blocks of LBA range entries (advertised in
# IDENTIFY word 105; bounds what one command parses: 8 blocks = 512 entries).
MAX_DSM_BLOCKS = 8

# BIOS CHS translation as CMOS byte 0x39 codes it (QEMU BIOS_ATA_TRANSLATION_* minus 1).
TRANSLATION_NONE = 0
TRANSLATION_LBA = 1
TRANSLATION_LARGE = 2

# Word numbers the device rewrites after IDENTIFY was built.
W_VALIDITY = 53
W_CUR_CYLS = 54
W_CUR_HEADS = 55
W_CUR_SECS = 56
W_CUR_CAP_LO = 57
W_CUR_CAP_HI = 58
W_MULT_SETTING = 59
W_SWDMA = 62
W_MWDMA = 63
W_CMDSET_ENABLED1 = 85
W_UDMA = 88
# Word 85 bits: SMART enabled (0), write cache enabled (5), NOP (14)
CMDSET1_SMART = 1 << 0
CMDSET1_WCACHE = 1 << 5

_PARTITION = struct.Struct("<BBBBBBBBII")


@dataclass(frozen=True)
class Geometry:
    cylinders: int
    heads: int
    sectors: int


def _chs_for_size(nb_sectors: int) -> Geometry:
    """guess_chs_for_size: 16 heads, 63 sectors, cylinders clamped to 2..16383."""
    cyls = min(max(nb_sectors // (16 * 63), 2), MAX_CYLINDERS)
    return Geometry(cyls, 16, 63)


def _mbr_lchs(nb_sectors: int, mbr: bytes | None) -> Geometry | None:
    """guess_disk_lchs: the logical geometry an MS-DOS partition table was written with,
    assuming partitions end on a cylinder boundary."""
    if mbr is None or len(mbr) < 512 or mbr[510] != 0x55 or mbr[511] != 0xAA:
        return None
    for i in range(4):
        (_boot, _head, _sec, _cyl, _type, end_head, end_sector, _end_cyl, _start,
         nr_sects) = _PARTITION.unpack_from(mbr, 0x1BE + 16 * i)
        if not nr_sects or not end_head:
            continue
        heads = end_head + 1
        sectors = end_sector & 63
        if sectors == 0:
            continue
        cyls = nb_sectors // (heads * sectors)
        if not 1 <= cyls <= MAX_CYLINDERS:
            continue
        return Geometry(cyls, heads, sectors)
    return None


def guess_geometry(nb_sectors: int, mbr: bytes | None = None) -> Geometry:
    """hd_geometry_guess without a probed geometry: a partition table written with <= 16
    heads gives the physical geometry; otherwise (no table, or a table made under BIOS LBA
    translation with > 16 heads) the standard 16/63 geometry for the size."""
    lchs = _mbr_lchs(nb_sectors, mbr)
    if lchs is None or lchs.heads > 16:
        return _chs_for_size(nb_sectors)
    return lchs


def guess_translation(nb_sectors: int, mbr: bytes | None = None) -> int:
    """The BIOS translation hd_geometry_guess picks alongside the geometry (as a CMOS 0x39
    code): none when the geometry fits the INT 13h limits or comes from a <= 16-head table;
    LARGE for a > 16-head table on a disk of <= 131072 cylinder-heads; LBA otherwise."""
    lchs = _mbr_lchs(nb_sectors, mbr)
    g = guess_geometry(nb_sectors, mbr)
    if lchs is None:
        fits = g.cylinders <= 1024 and g.heads <= 16 and g.sectors <= 63
        return TRANSLATION_NONE if fits else TRANSLATION_LBA
    if lchs.heads > 16:
        return TRANSLATION_LARGE if g.cylinders * g.heads <= 131072 else TRANSLATION_LBA
    return TRANSLATION_NONE


def chs_words(nb_sectors: int, heads: int, sectors: int) -> dict[int, int]:
    """IDENTIFY words 54-58 for the current CHS translation (ATA-6 8.15.33-8.15.36); all zero
    when the translation is invalid (a sector count of 0), which word 53 bit 0 then denies."""
    if not heads or not sectors:
        return {W_CUR_CYLS: 0, W_CUR_HEADS: 0, W_CUR_SECS: 0, W_CUR_CAP_LO: 0, W_CUR_CAP_HI: 0}
    cyls = min(nb_sectors // (heads * sectors), 0xFFFF)
    cap = cyls * heads * sectors
    return {W_CUR_CYLS: cyls, W_CUR_HEADS: heads, W_CUR_SECS: sectors,
            W_CUR_CAP_LO: cap & 0xFFFF, W_CUR_CAP_HI: (cap >> 16) & 0xFFFF}


def _ata_string(text: str, nbytes: int) -> bytes:
    """ATA strings: space padded, the two bytes of each word swapped (QEMU padstr)."""
    raw = text.encode("ascii", "replace")[:nbytes].ljust(nbytes, b" ")
    out = bytearray(nbytes)
    out[0::2] = raw[1::2]
    out[1::2] = raw[0::2]
    return bytes(out)


def build_identify(nb_sectors: int, geometry: Geometry, *, serial: str, model: str,
                   firmware: str, mult_sectors: int, write_cache: bool,
                   trim: bool = False) -> bytearray:
    """The 512-byte IDENTIFY DEVICE page of QEMU's ide-hd: SMART supported and enabled
    (words 82/85 bit 0; no self-test or error log, words 84/87 bits 0-1 clear), and with
    `trim` the DATA SET MANAGEMENT TRIM bit (word 169), deterministic TRIM (word 69 bit 14)
    and, unlike QEMU, the payload limit in word 105."""
    c, h, s = geometry.cylinders, geometry.heads, geometry.sectors
    chs_capacity = c * h * s
    lba28 = min(nb_sectors, LBA28_LIMIT)
    words: dict[int, int] = {
        0: 0x0040,  # fixed (non-removable) ATA device
        1: c,
        3: h,
        4: 512 * s,  # retired: unformatted bytes per track
        5: 512,  # retired: unformatted bytes per sector
        6: s,
        20: 3,  # retired: buffer type
        21: 512,  # retired: buffer size in sectors
        22: 4,  # obsolete: ECC bytes
        47: 0x8000 | MAX_MULT_SECTORS,  # READ/WRITE MULTIPLE up to 16 sectors
        48: 1,  # dword I/O (QEMU sets it; the data port takes 32-bit accesses)
        49: (1 << 11) | (1 << 9) | (1 << 8),  # IORDY, LBA, DMA
        51: 0x200,  # PIO timing mode 2
        52: 0x200,  # DMA timing mode 2
        53: 0x7,  # words 54-58, 64-70 and 88 valid
        54: c,  # current CHS translation
        55: h,
        56: s,
        57: chs_capacity & 0xFFFF,
        58: (chs_capacity >> 16) & 0xFFFF,
        60: lba28 & 0xFFFF,
        61: lba28 >> 16,
        62: 0x07,  # single-word DMA 0-2 supported
        63: 0x07,  # multiword DMA 0-2 supported
        64: 0x03,  # PIO 3 and 4 supported
        65: 120,  # min multiword DMA cycle (ns)
        66: 120,  # recommended multiword DMA cycle
        67: 120,  # min PIO cycle without flow control
        68: 120,  # min PIO cycle with IORDY
        80: 0xF0,  # ATA-4 to ATA-7
        81: 0x16,  # minor version
        82: (1 << 14) | (1 << 5) | 1,  # NOP, write cache, SMART supported
        83: (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10),  # FLUSH EXT, FLUSH, 48-bit
        84: 1 << 14,
        85: (1 << 14) | ((1 << 5) if write_cache else 0) | 1,  # NOP; write cache; SMART on
        86: (1 << 13) | (1 << 12) | (1 << 10),  # FLUSH EXT, FLUSH, 48-bit enabled
        87: 1 << 14,
        88: 0x3F | (1 << 13),  # UDMA 0-5 supported, UDMA 5 selected
        93: 1 | (1 << 14) | 0x2000,  # hardware reset result (80-wire cable detected)
        100: nb_sectors & 0xFFFF,
        101: (nb_sectors >> 16) & 0xFFFF,
        102: (nb_sectors >> 32) & 0xFFFF,
        103: (nb_sectors >> 48) & 0xFFFF,
    }
    if mult_sectors:
        words[W_MULT_SETTING] = 0x100 | mult_sectors
    if trim:
        words[69] = 1 << 14  # deterministic read after TRIM
        words[105] = MAX_DSM_BLOCKS
        words[169] = 1  # DATA SET MANAGEMENT TRIM supported
    page = bytearray(512)
    for w, v in words.items():
        struct.pack_into("<H", page, 2 * w, v & 0xFFFF)
    page[20:40] = _ata_string(serial, 20)  # words 10-19
    page[46:54] = _ata_string(firmware, 8)  # words 23-26
    page[54:94] = _ata_string(model, 40)  # words 27-46
    return page


def set_word(page: bytearray, word: int, value: int) -> None:
    struct.pack_into("<H", page, 2 * word, value & 0xFFFF)


def get_word(page: bytes | bytearray, word: int) -> int:
    return int.from_bytes(page[2 * word : 2 * word + 2], "little")


def set_word_bits(page: bytearray, word: int, bits: int, on: bool) -> None:
    """Set (`on`) or clear `bits` of one word, the others kept."""
    v = get_word(page, word)
    set_word(page, word, (v | bits) if on else (v & ~bits))


def build_atapi_identify(*, serial: str, model: str, firmware: str) -> bytearray:
    """IDENTIFY PACKET DEVICE of QEMU's ide-cd (ide_atapi_identify, USE_DMA_CDROM)."""
    words: dict[int, int] = {
        0: (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5),  # ATAPI, CD-ROM, removable, 50us DRQ
        20: 3,
        21: 512,
        22: 4,
        48: 1,  # dword I/O (QEMU sets it on CD-ROMs too)
        49: (1 << 9) | (1 << 8),  # LBA, DMA
        53: 7,
        62: 7,  # single-word DMA 0-2
        63: 7,  # multiword DMA 0-2
        64: 3,  # PIO 3-4
        65: 0xB4,
        66: 0xB4,
        67: 0x12C,
        68: 0xB4,
        71: 30,
        72: 30,
        80: 0x1E,  # ATA/ATAPI-1 to -4
        88: 0x3F | (1 << 13),  # UDMA 0-5 supported, UDMA 5 selected
    }
    page = bytearray(512)
    for w, v in words.items():
        struct.pack_into("<H", page, 2 * w, v & 0xFFFF)
    page[20:40] = _ata_string(serial, 20)
    page[46:54] = _ata_string(firmware, 8)
    page[54:94] = _ata_string(model, 40)
    return page
