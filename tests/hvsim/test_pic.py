"""8259A pair: initialisation, masking, priority, EOI, cascade, ELCR level mode, poll."""

from __future__ import annotations

from devmodel.hvsim.pic import DualPic


def init_pc(pic: DualPic, master_base: int = 0x08, slave_base: int = 0x70) -> None:
    """The ICW sequence every PC BIOS uses (SeaBIOS pic_setup)."""
    for port, val in ((0x20, 0x11), (0x21, master_base), (0x21, 0x04), (0x21, 0x01),
                      (0xA0, 0x11), (0xA1, slave_base), (0xA1, 0x02), (0xA1, 0x01)):
        pic.io_write(port, val)
    pic.io_write(0x21, 0x00)
    pic.io_write(0xA1, 0x00)


def eoi(pic: DualPic, slave: bool = False) -> None:
    if slave:
        pic.io_write(0xA0, 0x20)
    pic.io_write(0x20, 0x20)


def test_vector_base_and_edge_delivery() -> None:
    pic = DualPic()
    init_pc(pic)
    assert pic.vector_base() == (0x08, 0x70)
    assert not pic.has_interrupt()
    pic.set_irq(1, 1)
    assert pic.has_interrupt()
    assert pic.acknowledge() == 0x09
    assert pic.master.isr == 0x02 and pic.master.irr == 0
    assert not pic.has_interrupt()
    eoi(pic)
    assert pic.master.isr == 0
    # Still high: an edge-triggered input does not fire again until it drops and rises.
    pic.set_irq(1, 1)
    assert not pic.has_interrupt()
    pic.set_irq(1, 0)
    pic.set_irq(1, 1)
    assert pic.acknowledge() == 0x09


def test_imr_masks_and_unmask_delivers_latched_request() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.io_write(0x21, 0x01)
    pic.set_irq(0, 1)
    assert not pic.has_interrupt()
    assert pic.io_read(0x21) == 0x01
    pic.io_write(0x21, 0x00)
    assert pic.acknowledge() == 0x08


def test_priority_and_nesting() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.set_irq(4, 1)
    pic.set_irq(3, 1)
    assert pic.acknowledge() == 0x0B  # IRQ3 beats IRQ4
    assert not pic.has_interrupt()  # IRQ4 is lower than the one in service
    pic.set_irq(1, 1)
    assert pic.acknowledge() == 0x09  # higher priority nests
    eoi(pic)  # non-specific EOI clears the highest in-service bit (IRQ1)
    assert pic.master.isr == 0x08
    eoi(pic)
    assert pic.acknowledge() == 0x0C


def test_specific_eoi_and_read_isr() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.set_irq(5, 1)
    pic.acknowledge()
    pic.io_write(0x20, 0x0B)  # OCW3: read ISR
    assert pic.io_read(0x20) == 0x20
    pic.io_write(0x20, 0x60 | 5)  # specific EOI for IRQ5
    assert pic.io_read(0x20) == 0
    pic.io_write(0x20, 0x0A)  # OCW3: read IRR
    pic.set_irq(6, 1)
    assert pic.io_read(0x20) == 0x40


def test_cascade_slave_vector_and_both_eois() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.set_irq(14, 1)
    assert pic.has_interrupt()
    assert pic.acknowledge() == 0x76
    assert pic.slave.isr == 0x40 and pic.master.isr == 0x04
    eoi(pic, slave=True)
    assert pic.slave.isr == 0 and pic.master.isr == 0
    pic.set_irq(14, 0)
    pic.set_irq(9, 1)
    assert pic.acknowledge() == 0x71


def test_elcr_level_mode_reasserts_until_line_drops() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.io_write(0x4D1, 0xFF)
    assert pic.io_read(0x4D1) == 0xDE  # IRQ 8 and 13 cannot be level
    pic.io_write(0x4D0, 0xFF)
    assert pic.io_read(0x4D0) == 0xF8  # IRQ 0, 1, 2 cannot be level
    pic.set_irq(11, 1)
    assert pic.acknowledge() == 0x73
    eoi(pic, slave=True)
    # Level: still asserted, so it is requested again without a new edge.
    assert pic.acknowledge() == 0x73
    eoi(pic, slave=True)
    pic.set_irq(11, 0)
    # The master latched the cascade edge before the line dropped: the INTA finds nothing
    # on the slave and gets the slave's spurious vector (IRQ 15), as on real hardware.
    assert pic.acknowledge() == 0x77
    assert pic.spurious == 1
    assert not pic.has_interrupt()


def test_spurious_when_request_vanishes() -> None:
    pic = DualPic()
    init_pc(pic)
    assert pic.acknowledge() == 0x0F
    assert pic.spurious == 1
    assert pic.master.isr == 0


def test_poll_mode_and_auto_eoi() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.set_irq(3, 1)
    pic.io_write(0x20, 0x0C)  # OCW3 poll
    assert pic.io_read(0x20) == 0x83
    assert pic.master.isr == 0x08
    pic2 = DualPic()
    for port, val in ((0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x03)):  # ICW4 AEOI
        pic2.io_write(port, val)
    pic2.io_write(0x21, 0)
    pic2.set_irq(0, 1)
    assert pic2.acknowledge() == 0x20
    assert pic2.master.isr == 0


def test_icw1_clears_masks_and_edge_requests() -> None:
    pic = DualPic()
    init_pc(pic)
    pic.io_write(0x21, 0xFF)
    pic.set_irq(3, 1)
    init_pc(pic)
    assert pic.master.imr == 0 and pic.master.irr == 0
