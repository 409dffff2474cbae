"""The bus-master IDE function of one channel: command, status and PRD table pointer
(PIIX3 datasheet 2.7.x "BMICx / BMISx / BMIDTPx"; QEMU hw/ide/piix.c bmdma_* and
hw/ide/pci.c bmdma_prepare_buf).

The PRD walk is bounded: at most one 4 KiB page of table (512 entries) from the pointer, as
QEMU's fail-safe, and it stops at the entry with the end-of-table bit. A table that is too
short for the transfer, cyclic (never sets EOT) or larger than a page ends the transfer with
an error status; it can never make us loop (design rule 5, hostile-guest-catalog entry 8 and
the note on QEMU's prep_size assertion).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from devmodel.core.memory import GuestMemory

from . import ata

PRD_ENTRY_SIZE = 8
# QEMU BMDMA_PAGE_SIZE: the walk never reads more than one page worth of table.
PRD_TABLE_MAX_BYTES = 4096
PRD_MAX_ENTRIES = PRD_TABLE_MAX_BYTES // PRD_ENTRY_SIZE
PRD_MAX_BYTE_COUNT = 0x10000  # a byte count of 0 means 64 KiB
# Entries read from guest RAM per access during the walk (reading past the EOT entry is
# harmless: RAM reads have no side effects).
PRD_READ_BATCH = 16

_PRD = struct.Struct("<II")


@dataclass
class PrdWalk:
    """The scatter list for one transfer: (guest address, length) pairs covering `got`
    bytes; `more` when the table describes more than the transfer needed (QEMU keeps the
    Active bit set then, as the PIIX datasheet's Interrupt=1/Active=1 row says)."""

    sg: list[tuple[int, int]]
    got: int
    more: bool


class BusMaster:
    """Registers of one channel's bus master, in BAR4 at +0 (primary) or +8 (secondary)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.cmd = 0
        self.status = 0
        self.addr = 0

    # ---- register access (offsets 0-7 within the channel's block) -----------------------
    def read(self, off: int, size: int) -> int:
        if off >= ata.BM_PRD:
            # QEMU bmdma_addr_read: any width, little-endian slice of the pointer.
            return (self.addr >> (8 * (off - ata.BM_PRD))) & ((1 << (8 * size)) - 1)
        if size != 1:
            return (1 << (8 * size)) - 1  # QEMU piix bmdma_read: command/status are bytes
        if off == ata.BM_CMD:
            return self.cmd
        if off == ata.BM_STATUS:
            return self.status
        return 0xFF

    def write_status(self, val: int) -> None:
        """Bits 5-6 (drive DMA capable) are plain read/write; Error and Interrupt are
        write-1-to-clear; Active and Simplex are read-only (QEMU piix bmdma_write)."""
        st = self.status
        self.status = (val & 0x60) | (st & ata.BM_STATUS_ACTIVE) | (st & ~val & 0x06)

    def write_prd(self, off: int, size: int, val: int) -> None:
        """QEMU bmdma_addr_write: the pointer is dword aligned, bits 1:0 read as zero."""
        shift = 8 * (off - ata.BM_PRD)
        mask = ((1 << (8 * size)) - 1) << shift
        self.addr = ((self.addr & ~mask) | ((val << shift) & mask)) & 0xFFFFFFFC

    # ---- the PRD walk ---------------------------------------------------------------------
    def walk_prd(self, memory: GuestMemory, need: int) -> PrdWalk | None:
        """Collect PRD entries until `need` bytes are covered, EOT, or the one-page bound.
        None when a table entry is not in guest RAM (a bus error).

        Entries that continue where the previous one ended (Linux ata_bmdma_fill_sg splits
        one contiguous buffer at every 64 KiB boundary) are merged into one scatter
        element: one guest-RAM view and one iovec instead of one per 64 KiB. The table is
        read up to PRD_READ_BATCH entries at a time, as many as the rest of the transfer
        needs at 64 KiB per entry (one entry at a time where a batch would run out of
        guest RAM)."""
        sg: list[tuple[int, int]] = []
        got = 0
        entry_addr = self.addr
        batch: list[tuple[int, int]] = []
        for i in range(PRD_MAX_ENTRIES):
            if not batch:
                # as many entries as the rest needs at 64 KiB each (at least one), in batches
                n = min(PRD_READ_BATCH, PRD_MAX_ENTRIES - i,
                        max(1, -(-(need - got) // PRD_MAX_BYTE_COUNT)))
                raw = memory.read(entry_addr, n * PRD_ENTRY_SIZE)
                if raw is None:
                    raw = memory.read(entry_addr, PRD_ENTRY_SIZE)
                    if raw is None:
                        return None
                batch = list(_PRD.iter_unpack(raw))
                batch.reverse()
            base, count = batch.pop()
            length = count & 0xFFFE or PRD_MAX_BYTE_COUNT
            eot = bool(count & ata.PRD_EOT)
            take = min(length, need - got)
            if take:
                if sg and sg[-1][0] + sg[-1][1] == base:
                    sg[-1] = (sg[-1][0], sg[-1][1] + take)
                else:
                    sg.append((base, take))
                got += take
            entry_addr += PRD_ENTRY_SIZE
            if got == need:
                more = take < length or (not eot and i + 1 < PRD_MAX_ENTRIES)
                return PrdWalk(sg, got, more)
            if eot:
                break
        return PrdWalk(sg, got, False)
