"""The 82540EM's 64-word Microwire EEPROM (93C46) and its two access paths: bit-banging
through EECD (what Linux's e1000 does on this part) and the EERD read register (iPXE).

Layout from the 8254x SDM table 5-2 (and QEMU's e1000_eeprom_template): words 0-2 the MAC
address, 0x0A-0x0F init control / subsystem / device / vendor IDs, word 0x3F the checksum that
makes the sum of all 64 words 0xBABA (drivers refuse a NIC whose sum differs).
"""

from __future__ import annotations

from . import e1000_defs as d

EEPROM_WORDS = 64
EEPROM_SUM = 0xBABA
CHECKSUM_WORD = 0x3F
MICROWIRE_READ = 0b110  # start bit + READ opcode
ADDR_BITS = 6  # 64 words: EECD.EE_SIZE reads 0

_TEMPLATE = (
    0x0000, 0x0000, 0x0000, 0x0000, 0xFFFF, 0x0000, 0x0000, 0x0000,
    0x3000, 0x1000, 0x6403, 0x0000, 0x0000, 0x0000, 0x0000, 0x3040,
    0x0008, 0x2000, 0x7E14, 0x0048, 0x1000, 0x00D8, 0x0000, 0x2700,
    0x6CC9, 0x3150, 0x0722, 0x040B, 0x0984, 0x0000, 0xC000, 0x0706,
    0x1008, 0x0000, 0x0F04, 0x7FFF, 0x4D01, 0xFFFF, 0xFFFF, 0xFFFF,
    0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
    0x0100, 0x4000, 0x121C, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
    0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0x0000,
)


def build_eeprom(mac: bytes) -> list[int]:
    if len(mac) != 6:
        raise ValueError("MAC address must be 6 bytes")
    words = list(_TEMPLATE)
    for i in range(3):
        words[i] = mac[2 * i] | mac[2 * i + 1] << 8
    words[0x0B] = d.EEPROM_SUBSYS_ID
    words[0x0C] = d.EEPROM_SUBSYS_VENDOR
    words[0x0D] = d.DEVICE_82540EM
    words[0x0E] = d.VENDOR_INTEL
    words[CHECKSUM_WORD] = (EEPROM_SUM - sum(words[:CHECKSUM_WORD])) & 0xFFFF
    return words


class MicrowireEeprom:
    """EECD bit-bang state: CS rising edge starts a command; bits are sampled on SK rising
    edges (DI), and data bits advance on SK falling edges (DO), MSB first (93C46 datasheet)."""

    STATE = ("ee_latch", "ee_shift", "ee_bits_in", "ee_bit_out", "ee_reading")

    def __init__(self, words: list[int]) -> None:
        self.words = words
        self.reset()

    def reset(self) -> None:
        self.ee_latch = 0  # SK | CS | DI | FWE | REQ as last written
        self.ee_shift = 0
        self.ee_bits_in = 0
        self.ee_bit_out = 0
        self.ee_reading = 0

    def read_eecd(self) -> int:
        v = d.EECD_PRES | self.ee_latch
        if self.ee_latch & d.EECD_REQ:
            v |= d.EECD_GNT
        if not self.ee_reading:
            v |= d.EECD_DO  # the part's DO idles high (ready)
        else:
            word = self.words[(self.ee_bit_out >> 4) % EEPROM_WORDS]
            if (word >> (15 - (self.ee_bit_out & 15))) & 1:
                v |= d.EECD_DO
        return v

    def write_eecd(self, val: int) -> None:
        old = self.ee_latch
        self.ee_latch = val & (d.EECD_SK | d.EECD_CS | d.EECD_DI | d.EECD_FWE_MASK | d.EECD_REQ)
        if not val & d.EECD_CS:
            return
        if (val ^ old) & d.EECD_CS:  # CS rising edge: a new command
            self.ee_shift = self.ee_bits_in = self.ee_bit_out = self.ee_reading = 0
        if not (val ^ old) & d.EECD_SK:
            return
        if not val & d.EECD_SK:  # falling edge: next output bit
            if self.ee_reading:
                self.ee_bit_out = (self.ee_bit_out + 1) & 0xFFFF
            return
        # rising edge: sample DI (bounded: only the command bits are kept)
        self.ee_shift = ((self.ee_shift << 1) | (1 if val & d.EECD_DI else 0)) & 0xFFFF
        self.ee_bits_in += 1
        if self.ee_bits_in == 3 + ADDR_BITS and not self.ee_reading:
            addr = self.ee_shift & (EEPROM_WORDS - 1)
            if (self.ee_shift >> ADDR_BITS) & 7 == MICROWIRE_READ:
                self.ee_reading = 1
                # the dummy 0 bit precedes D15: the falling edge of this clock moves to D15
                self.ee_bit_out = (addr * 16 - 1) & 0xFFFF
        self.ee_bits_in = min(self.ee_bits_in, 64)

    def snapshot(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.STATE}

    def restore(self, state: dict[str, int]) -> None:
        for k in self.STATE:
            setattr(self, k, int(state[k]))


def eerd_read(words: list[int], eerd: int) -> int:
    """EERD (SDM 13.4.4): a read started by START completes at once, DONE set, DATA filled."""
    if not eerd & d.EERD_START:
        return eerd
    addr = (eerd >> d.EERD_ADDR_SHIFT) & 0xFF
    base = eerd & 0xFFFF & ~d.EERD_START
    if addr >= EEPROM_WORDS:
        return base | d.EERD_DONE
    return base | d.EERD_DONE | words[addr] << d.EERD_DATA_SHIFT
