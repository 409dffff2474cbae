"""The legacy window: memory map select, chain-4, odd/even, planar read and write modes,
latches, set/reset, rotate, logical ops, bit mask and map mask, against expected VRAM."""

from __future__ import annotations

import pytest
from vgahelp import MODE3, MODE12, MODE13, WINDOW, Bus, make, set_mode


@pytest.fixture
def vga():
    m, dev = make(1)
    return Bus(m), dev


def planes(dev, off: int) -> list[int]:
    return list(dev.vram[4 * off : 4 * off + 4])


def test_memory_map_select(vga) -> None:
    bus, dev = vga
    set_mode(bus, MODE3)  # GR06 = 0x0E: B8000-BFFFF
    bus.writeb(0xB8000, ord("A"))
    assert dev.vram[0] == ord("A")
    assert bus.readb(0xA0000) == 0xFF  # does not decode
    bus.writeb(0xA0000, 0x55)  # dropped
    bus.gfx(6, 0x0A)  # B0000-B7FFF (mode 7)
    assert bus.readb(0xB0000) == ord("A")
    assert bus.readb(0xB8000) == 0xFF
    bus.gfx(6, 0x02)  # A0000-BFFFF, 128 KiB
    assert bus.readb(0xA0000) == ord("A")


def test_odd_even_text_layout(vga) -> None:
    bus, dev = vga
    set_mode(bus, MODE3)
    bus.writeb(0xB8000, 0x1F41, 2)  # 'A' on blue, one 16-bit write
    bus.writeb(0xB8002, ord("B"))
    bus.writeb(0xB8003, 0x07)
    assert planes(dev, 0)[:2] == [0x41, 0x1F]
    assert planes(dev, 1)[:2] == [0x42, 0x07]
    assert planes(dev, 0)[2] == 0  # plane 2 (font) untouched: map mask 3
    assert bus.readb(0xB8000, 2) == 0x1F41
    assert bus.readb(0xB8003) == 0x07


def test_chain4_mode13(vga) -> None:
    bus, dev = vga
    set_mode(bus, MODE13)
    for i in range(8):
        bus.writeb(WINDOW + i, 0x10 + i)
    assert bytes(dev.vram[0:8]) == bytes(range(0x10, 0x18))
    assert bus.readb(WINDOW + 5) == 0x15
    bus.seq(2, 0x05)  # map mask: planes 0 and 2 only
    for i in range(4):
        bus.writeb(WINDOW + i, 0xEE)
    assert bytes(dev.vram[0:4]) == bytes([0xEE, 0x11, 0xEE, 0x13])


def planar_setup(bus) -> None:
    set_mode(bus, MODE12)
    bus.seq(2, 0x0F)


def test_write_mode0_plain_and_map_mask(vga) -> None:
    bus, dev = vga
    planar_setup(bus)
    bus.writeb(WINDOW + 3, 0xA5)
    assert planes(dev, 3) == [0xA5] * 4
    bus.seq(2, 0x06)
    bus.writeb(WINDOW + 3, 0x3C)
    assert planes(dev, 3) == [0xA5, 0x3C, 0x3C, 0xA5]


def test_write_mode0_set_reset_rotate_bitmask(vga) -> None:
    bus, dev = vga
    planar_setup(bus)
    bus.gfx(0, 0x05)  # set/reset value: planes 0 and 2
    bus.gfx(1, 0x03)  # enabled for planes 0 and 1
    bus.writeb(WINDOW, 0x0F)
    assert planes(dev, 0) == [0xFF, 0x00, 0x0F, 0x0F]
    bus.gfx(1, 0)
    bus.gfx(3, 0x04)  # rotate right by 4
    bus.writeb(WINDOW + 1, 0x0F)
    assert planes(dev, 1) == [0xF0] * 4
    bus.gfx(3, 0)
    bus.readb(WINDOW + 1)  # latches = F0 F0 F0 F0
    bus.gfx(8, 0x0F)  # bit mask: low nibble from the data, high from the latches
    bus.writeb(WINDOW + 1, 0x05)
    assert planes(dev, 1) == [0xF5] * 4


@pytest.mark.parametrize("func,expected", [(1, 0x30), (2, 0xFC), (3, 0xCC)])
def test_logical_operations_with_latches(vga, func: int, expected: int) -> None:
    bus, dev = vga
    planar_setup(bus)
    bus.writeb(WINDOW + 2, 0xF0)
    bus.readb(WINDOW + 2)  # latch F0
    bus.gfx(3, func << 3)
    bus.writeb(WINDOW + 2, 0x3C)
    assert planes(dev, 2) == [expected] * 4


def test_write_mode1_copies_latches(vga) -> None:
    bus, dev = vga
    planar_setup(bus)
    dev.vram[0:4] = bytes([1, 2, 3, 4])
    bus.readb(WINDOW)
    bus.gfx(5, 0x01)
    bus.writeb(WINDOW + 9, 0x00)  # the value is ignored
    assert planes(dev, 9) == [1, 2, 3, 4]


def test_write_mode2_colour_fill_under_bit_mask(vga) -> None:
    bus, dev = vga
    planar_setup(bus)
    bus.gfx(5, 0x02)
    bus.gfx(8, 0x81)
    bus.writeb(WINDOW + 4, 0x0B)  # colour 1011: planes 0, 1, 3
    assert planes(dev, 4) == [0x81, 0x81, 0x00, 0x81]


def test_write_mode3_set_reset_with_rotated_data_mask(vga) -> None:
    bus, dev = vga
    planar_setup(bus)
    bus.gfx(5, 0x03)
    bus.gfx(0, 0x06)  # colour 0110
    bus.gfx(8, 0xF0)
    bus.gfx(3, 0x01)  # rotate 1
    bus.writeb(WINDOW + 5, 0x3C)  # rotated: 0x1E, & bit mask F0 -> 0x10
    assert planes(dev, 5) == [0x00, 0x10, 0x10, 0x00]


def test_read_modes(vga) -> None:
    bus, dev = vga
    planar_setup(bus)
    dev.vram[40:44] = bytes([0x0F, 0x33, 0x55, 0xFF])
    for p in range(4):
        bus.gfx(4, p)
        assert bus.readb(WINDOW + 10) == dev.vram[40 + p]
    bus.gfx(5, 0x08)  # read mode 1: colour compare
    bus.gfx(2, 0x0F)
    bus.gfx(7, 0x0F)
    # pixel colour bits: plane p bit; colour 15 where all four planes are set
    assert bus.readb(WINDOW + 10) == 0x0F & 0x33 & 0x55 & 0xFF
    bus.gfx(7, 0x01)  # only plane 0 compared
    assert bus.readb(WINDOW + 10) == 0x0F


def test_wide_window_accesses_are_split(vga) -> None:
    bus, dev = vga
    set_mode(bus, MODE13)
    bus.writeb(WINDOW + 0x100, 0x0807060504030201, 8)
    assert bytes(dev.vram[0x100:0x108]) == bytes(range(1, 9))
    assert bus.readb(WINDOW + 0x100, 4) == 0x04030201


def test_wide_chain4_stores_follow_map_mask_and_decode(vga) -> None:
    bus, dev = vga
    set_mode(bus, MODE13)
    bus.writeb(WINDOW + 0x200, 0x44332211, 4)  # all planes writable: a plain copy
    assert bytes(dev.vram[0x200:0x204]) == bytes((0x11, 0x22, 0x33, 0x44))
    bus.seq(2, 0x0A)  # planes 1 and 3 only: byte by byte, the others keep their value
    bus.writeb(WINDOW + 0x200, 0xDDCCBBAA, 4)
    assert bytes(dev.vram[0x200:0x204]) == bytes((0x11, 0xBB, 0x33, 0xDD))
    bus.seq(2, 0x0F)
    bus.gfx(6, 0x09)  # B0000-B7FFF: a store across its end keeps only the decoded bytes
    dev.vram[0x7FFE:0x8004] = bytes(6)
    bus.writeb(0xB7FFE, 0x0807060504030201, 8)
    assert bytes(dev.vram[0x7FFE:0x8004]) == bytes((1, 2, 0, 0, 0, 0))
    assert bus.readb(0xB7FFE, 4) == 0xFFFF0201


@pytest.mark.parametrize("map_mask", [0x03, 0x0F, 0x04, 0x0A, 0x00])
def test_odd_even_word_stores_match_byte_stores(map_mask: int) -> None:
    # The one-call path for 16-bit text stores (_odd_even_word) against two byte stores.
    results = []
    for wide in (True, False):
        m, dev = make(1)
        bus = Bus(m)
        set_mode(bus, MODE3)
        bus.seq(2, map_mask)
        dev.vram[0:0x400] = bytes(range(256)) * 4
        for i, addr in enumerate((0xB8000, 0xB8002, 0xB8100, 0xB8001, 0xBFFFE, 0xB8003)):
            value = 0x1F41 + 0x0101 * i
            if wide:
                bus.writeb(addr, value, 2)
            else:
                bus.writeb(addr, value & 0xFF)
                bus.writeb(addr + 1, value >> 8)
        results.append((bytes(dev.vram[:0x20000]), dict(dev.counters)))
    assert results[0] == results[1]
