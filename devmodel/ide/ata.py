"""ATA register bits and command codes (ATA/ATAPI-6, ACS-2 Table B.2), named as QEMU's
hw/ide/internal.h names them where that helps reading both side by side."""

from __future__ import annotations

SECTOR_SIZE = 512

# Status register (0x1F7 / alternate status 0x3F6)
ERR_STAT = 0x01
INDEX_STAT = 0x02
ECC_STAT = 0x04  # "corrected data", obsolete
DRQ_STAT = 0x08
SEEK_STAT = 0x10  # DSC, device seek complete
SRV_STAT = 0x10
WRERR_STAT = 0x20  # device fault
READY_STAT = 0x40
BUSY_STAT = 0x80

# Error register (0x1F1 read)
MARK_ERR = 0x01  # also the "device 0 passed" diagnostic code
TRK0_ERR = 0x02
ABRT_ERR = 0x04
MCR_ERR = 0x08
IDNF_ERR = 0x10
MC_ERR = 0x20
UNC_ERR = 0x40  # uncorrectable data error
BBD_ERR = 0x80

# Device/head register (0x1F6)
DEV_HS = 0x0F  # head, or LBA28 bits 27:24
DEV_SELECT = 0x10  # DEV bit: device 1
DEV_LBA = 0x40
DEV_ALWAYS_ON = 0xA0  # obsolete bits 7 and 5, QEMU forces them on

# Device control register (0x3F6 write)
CTRL_NIEN = 0x02
CTRL_SRST = 0x04
CTRL_HOB = 0x80

# Commands (only those the disk model knows; everything else aborts)
CMD_NOP = 0x00
CMD_DSM = 0x06
CMD_DEVICE_RESET = 0x08
CMD_RECALIBRATE = 0x10
CMD_READ = 0x20
CMD_READ_ONCE = 0x21
CMD_READ_EXT = 0x24
CMD_READ_DMA_EXT = 0x25
CMD_READ_NATIVE_MAX_EXT = 0x27
CMD_READ_MULTIPLE_EXT = 0x29
CMD_WRITE = 0x30
CMD_WRITE_ONCE = 0x31
CMD_WRITE_EXT = 0x34
CMD_WRITE_DMA_EXT = 0x35
CMD_WRITE_MULTIPLE_EXT = 0x39
CMD_WRITE_VERIFY = 0x3C
CMD_VERIFY = 0x40
CMD_VERIFY_ONCE = 0x41
CMD_VERIFY_EXT = 0x42
CMD_SEEK = 0x70
CMD_DIAGNOSE = 0x90
CMD_SPECIFY = 0x91  # INITIALIZE DEVICE PARAMETERS
CMD_STANDBY_NOW2 = 0x94
CMD_IDLE_IMMEDIATE2 = 0x95
CMD_STANDBY2 = 0x96
CMD_SET_IDLE2 = 0x97
CMD_CHECK_POWER_MODE2 = 0x98
CMD_SLEEP_NOW2 = 0x99
CMD_PACKET = 0xA0
CMD_IDENTIFY_PACKET = 0xA1
CMD_SMART = 0xB0
CMD_READ_MULTIPLE = 0xC4
CMD_WRITE_MULTIPLE = 0xC5
CMD_SET_MULTIPLE = 0xC6
CMD_READ_DMA = 0xC8
CMD_READ_DMA_ONCE = 0xC9
CMD_WRITE_DMA = 0xCA
CMD_WRITE_DMA_ONCE = 0xCB
CMD_STANDBY_NOW1 = 0xE0
CMD_IDLE_IMMEDIATE = 0xE1
CMD_STANDBY = 0xE2
CMD_SET_IDLE1 = 0xE3
CMD_CHECK_POWER_MODE1 = 0xE5
CMD_SLEEP_NOW1 = 0xE6
CMD_FLUSH_CACHE = 0xE7
CMD_FLUSH_CACHE_EXT = 0xEA
CMD_IDENTIFY = 0xEC
CMD_SET_FEATURES = 0xEF
CMD_READ_NATIVE_MAX = 0xF8

# SET FEATURES subcommands (features register)
FEAT_WCACHE_ON = 0x02
FEAT_XFER_MODE = 0x03
FEAT_WCACHE_OFF = 0x82
FEAT_REVERT_ON = 0xCC  # reverting to power-on defaults (CHS translation) at reset: enable
FEAT_REVERT_OFF = 0x66  # ... disable

# DATA SET MANAGEMENT (06h) features: bit 0 = TRIM (ACS-2 7.10)
DSM_TRIM = 0x01

# SMART (B0h): features register subcommands, and the key in LBA mid/high (ACS-2 7.52)
SMART_READ_DATA = 0xD0
SMART_READ_THRESH = 0xD1
SMART_ATTR_AUTOSAVE = 0xD2
SMART_SAVE_ATTR = 0xD3
SMART_EXECUTE_OFFLINE = 0xD4
SMART_READ_LOG = 0xD5
SMART_ENABLE = 0xD8
SMART_DISABLE = 0xD9
SMART_STATUS = 0xDA
SMART_LCYL = 0x4F
SMART_HCYL = 0xC2
SMART_LCYL_EXCEEDED = 0xF4  # RETURN STATUS: a threshold was exceeded
SMART_HCYL_EXCEEDED = 0x2C

# ATAPI: interrupt reason in the sector count register (ATA-6 9.10 / QEMU ATAPI_INT_REASON_*)
ATAPI_INT_REASON_CD = 0x01  # CoD: command (packet or status), not data
ATAPI_INT_REASON_IO = 0x02  # IO: to the host
ATAPI_INT_REASON_REL = 0x04
ATAPI_SIG_LCYL = 0x14  # packet device signature in LBA mid/high (ATA-6 9.12)
ATAPI_SIG_HCYL = 0xEB
ATAPI_FEAT_DMA = 0x01  # PACKET features: data phase by DMA
ATAPI_FEAT_OVL = 0x02  # ... overlapped (not supported: aborts, as QEMU)

# Bus-master IDE (BAR4), per channel at +0 (primary) / +8 (secondary)
BM_CMD = 0
BM_STATUS = 2
BM_PRD = 4
BM_CMD_START = 0x01
BM_CMD_READ = 0x08  # bus master writes memory (device-to-memory, i.e. ATA READ DMA)
BM_STATUS_ACTIVE = 0x01
BM_STATUS_ERROR = 0x02
BM_STATUS_INT = 0x04
BM_STATUS_DRV0_DMA = 0x20
BM_STATUS_DRV1_DMA = 0x40
BM_STATUS_SIMPLEX = 0x80
PRD_EOT = 0x80000000
