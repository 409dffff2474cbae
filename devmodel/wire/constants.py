"""Numbers of the wire contract (docs/protocol.md) and of the Xen ABI it mirrors.

Xen values come from xen/include/public/hvm/ioreq.h and hvm/dm_op.h; see
shared/docs/xen-protocol.md sections 1-3.
"""

from __future__ import annotations

import enum

PROTOCOL_VERSION = 1
PAGE_SIZE = 4096

HEADER_SIZE = 16
IOREQ_SIZE = 32
BUFIOREQ_SLOT_SIZE = 8
DMOP_SIZE = 32
# Largest payload a peer may announce. Big enough for a 511-slot BUFIOREQ batch and a
# track_dirty_vram bitmap of 1 GiB (32 KiB), small enough that a hostile length cannot make
# the daemon buffer an unbounded amount.
MAX_PAYLOAD = 1 << 20
MAX_BUFIOREQ_SLOTS = 4096
MAX_FDS_PER_MESSAGE = 1
# vCPUs of one domain (HELLO nr_vcpus, --vcpus): Xen's HVM_MAX_VCPUS.
MAX_VCPUS = 128


class MsgType(enum.IntEnum):
    HELLO = 1
    MEM_ADD = 2
    MEM_DEL = 3
    IOREQ = 4
    IORESP = 5
    BUFIOREQ = 6
    DMOP = 7
    DMOP_REPLY = 8
    ERROR = 9
    CLOCK = 10


FLAG_NO_REPLY = 1 << 0
FLAG_HAS_FDS = 1 << 1
KNOWN_FLAGS = FLAG_NO_REPLY | FLAG_HAS_FDS

# HELLO feature bits.
FEATURE_BUFIOREQ = 1 << 0
FEATURE_MEMFD_RAM = 1 << 1
FEATURE_PCI_CONFIG = 1 << 2

# MEM_ADD flags.
MEM_RAM = 1 << 0
MEM_READONLY = 1 << 1
MEM_VRAM = 1 << 2
MEM_KNOWN_FLAGS = MEM_RAM | MEM_READONLY | MEM_VRAM
# Region ids of memory the daemon owns and shares (MEM_ADD/MEM_DEL from the daemon) have
# bit 31 set; the hypervisor's do not (docs/protocol.md 4.7).
DAEMON_REGION_BIT = 1 << 31


class ErrorCode(enum.IntEnum):
    """Codes of the ERROR message. The text says what exactly was wrong."""

    BAD_HEADER = 1  # unknown flags, oversized payload
    UNKNOWN_TYPE = 2
    BAD_LENGTH = 3  # payload length does not fit the type
    BAD_FIELD = 4  # a field value is out of range (ioreq size, region overlap...)
    BAD_STATE = 5  # message not allowed now (IOREQ before HELLO, second HELLO)
    BAD_FDS = 6  # missing or unexpected file descriptors
    INTERNAL = 7  # the daemon failed; the connection survives


# ioreq_t
IOREQ_WRITE = 0
IOREQ_READ = 1

STATE_IOREQ_NONE = 0
STATE_IOREQ_READY = 1
STATE_IOREQ_INPROCESS = 2
STATE_IORESP_READY = 3

IOREQ_TYPE_PIO = 0
IOREQ_TYPE_COPY = 1
IOREQ_TYPE_PCI_CONFIG = 2
IOREQ_TYPE_TIMEOFFSET = 7
IOREQ_TYPE_INVALIDATE = 8


class DmOp(enum.IntEnum):
    CREATE_IOREQ_SERVER = 1
    GET_IOREQ_SERVER_INFO = 2
    MAP_IO_RANGE_TO_IOREQ_SERVER = 3
    UNMAP_IO_RANGE_FROM_IOREQ_SERVER = 4
    SET_IOREQ_SERVER_STATE = 5
    DESTROY_IOREQ_SERVER = 6
    TRACK_DIRTY_VRAM = 7
    SET_PCI_INTX_LEVEL = 8
    SET_ISA_IRQ_LEVEL = 9
    SET_PCI_LINK_ROUTE = 10
    MODIFIED_MEMORY = 11
    SET_MEM_TYPE = 12
    INJECT_EVENT = 13
    INJECT_MSI = 14
    MAP_MEM_TYPE_TO_IOREQ_SERVER = 15
    REMOTE_SHUTDOWN = 16
    RELOCATE_MEMORY = 17
    PIN_MEMORY_CACHEATTR = 18
    SET_IRQ_LEVEL = 19
    NR_VCPUS = 20


# DMOPs sent fire-and-forget (NO_REPLY): they cannot fail for valid arguments.
NO_REPLY_DMOPS = frozenset(
    {DmOp.SET_PCI_INTX_LEVEL, DmOp.SET_ISA_IRQ_LEVEL, DmOp.SET_PCI_LINK_ROUTE, DmOp.INJECT_MSI}
)

IO_RANGE_PORT = 0
IO_RANGE_MEMORY = 1
IO_RANGE_PCI = 2

HVM_IOREQSRV_BUFIOREQ_OFF = 0
HVM_IOREQSRV_BUFIOREQ_LEGACY = 1
HVM_IOREQSRV_BUFIOREQ_ATOMIC = 2

SHUTDOWN_POWEROFF = 0
SHUTDOWN_REBOOT = 1
SHUTDOWN_SUSPEND = 2
SHUTDOWN_CRASH = 3
SHUTDOWN_WATCHDOG = 4
SHUTDOWN_SOFT_RESET = 5


def sbdf(bus: int, dev: int, fn: int, seg: int = 0) -> int:
    """The SBDF encoding of map_pcidev and of PCI_CONFIG ioreq addresses."""
    return (seg & 0xFFFF) << 16 | (bus & 0xFF) << 8 | (dev & 0x1F) << 3 | (fn & 7)
