"""The hypervisor-side client library: AsyncHypervisor with several ioreqs in flight, and the
pytest plugin's fixtures (`hv`, `hv_factory`, `devmodel_daemon`)."""

from __future__ import annotations

import asyncio

import pytest

from devmodel.client import AsyncHypervisor, ProtocolError
from devmodel.wire import codec
from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import IOREQ_TYPE_PCI_CONFIG, IOREQ_TYPE_PIO, MsgType


async def test_async_connect_gather_and_pci(devmodel_daemon):
    proc = devmodel_daemon("--domid", "11")
    hv = await AsyncHypervisor.connect(proc.socket_path, nr_vcpus=4)
    try:
        assert hv.state.server_enabled
        assert await hv.pci_cfg_read(0, 0, 4) == 0x12378086
        assert await hv.pci_cfg_read(8, 0x0E, 1) == 0x80
        await hv.add_ram(4 << 20)

        # one ioreq per vCPU, all in flight at once; each answer comes back on its chan
        reqs = [Ioreq(addr=devfn << 32, size=4, dir=1, type=IOREQ_TYPE_PCI_CONFIG)
                for devfn in (0, 8, 0xF8, 0)]
        answers = await asyncio.gather(*(hv.ioreq(r, chan=i) for i, r in enumerate(reqs)))
        assert [a.data for a in answers] == [0x12378086, 0x70008086, 0xFFFFFFFF, 0x12378086]
        assert all(a.state == 3 for a in answers)

        # a burst of mixed requests; futures are matched by tag, whatever the order of awaits
        await hv.outb(0x92, 0x02)
        results = await asyncio.gather(
            hv.inb(0x92), hv.inl(0xCF8), hv.pci_cfg_read(8, 0x60, 4), hv.pci_cfg_read(0, 8, 1),
            *(hv.inb(0x92) for _ in range(20)))
        assert results[:4] == [0x02, 0, 0x80808080, 0x02]
        assert results[4:] == [0x02] * 20

        await hv.pci_cfg_write(8, 0x61, 1, 0x0A)
        assert hv.state.link_route[1] == 10
        await hv.outl(0xCF8, 0x80000000)
        assert await hv.inl(0xCFC) == 0x12378086

        # an ERROR answer becomes ProtocolError on the awaiting request
        with pytest.raises(ProtocolError) as ei:
            await hv.request(MsgType.IOREQ, Ioreq(size=3, type=IOREQ_TYPE_PIO).pack())
        assert ei.value.code == 4
        with pytest.raises(ProtocolError):
            await hv.request(MsgType.HELLO, codec.HELLO.pack(1, 4096, 1, 0, 0, 0))
        assert await hv.inb(0x92) == 0x02
    finally:
        await hv.close()
    assert proc.wait_exit() == 0


async def test_async_clock_is_fire_and_forget(devmodel_daemon):
    proc = devmodel_daemon("--domid", "12", "--clock", "virtual")
    async with await AsyncHypervisor.connect(proc.socket_path) as hv:
        assert await hv.clock(1_000_000) is None
        assert await hv.readl(0xFEB00000) == 0xFFFFFFFF
        await hv.writel(0xFEB00000, 1)
        assert hv.unsolicited == []


def test_hv_fixture(hv):
    assert hv.process is not None and hv.ram is not None
    assert hv.pci_scan()[8]["device"] == 0x7000
    hv.ram.write(0x1000, b"\xaa\xbb")
    hv.outs(0x92, 1, 1, 0x1000)
    assert hv.inb(0x92) == 0xAA


def test_hv_factory_options(hv_factory):
    a = hv_factory("--domid", "21", ram=None)
    b = hv_factory("--domid", "22", "--clock", "virtual", ram=8 << 20, nr_vcpus=3)
    assert a.ram is None and a.hello_reply[4] == 21
    assert b.hello_reply[2] == 3 and b.hello_reply[4] == 22
    b.clock(5)
    assert b.inb(0x92) == 0
    assert a.process.pid != b.process.pid


def test_pipelined_sync_ioreqs(hv):
    answers = hv.ioreqs([Ioreq(addr=0x92, size=1, dir=1)] * 50 + [Ioreq(addr=0, size=4, dir=1,
                                                                        type=IOREQ_TYPE_PCI_CONFIG)])
    assert [a.data for a in answers[:50]] == [0] * 50 and answers[-1].data == 0x12378086


async def test_async_client_maps_memory_the_daemon_shares(devmodel_daemon):
    """The VGA's VRAM is daemon-owned memory (docs/protocol.md 4.7): once the guest places BAR0
    and enables memory decoding, the daemon sends MEM_ADD with the memfd, which the async
    client receives with its fd (SCM_RIGHTS) and records as the sync client does."""
    import os

    proc = devmodel_daemon("--domid", "13")
    async with await AsyncHypervisor.connect(proc.socket_path) as hv:
        await hv.add_ram(4 << 20)
        ids = [await hv.pci_cfg_read(devfn, 0, 4) for devfn in range(0, 256, 8)]
        vga = ids.index(0x11111234) * 8
        await hv.pci_cfg_write(vga, 0x10, 4, 0xE0000000)
        await hv.pci_cfg_write(vga, 0x04, 2, 0x0003)
        assert await hv.inb(0x92) is not None  # a barrier: the MEM_ADD came before this answer
        (region,) = [r for r in hv.state.dm_regions.values() if r[0] == 0xE0000000]
        gpa, size, _flags, fd = region
        assert size == 16 << 20 and os.fstat(fd).st_size >= size
    assert not hv.state.dm_regions  # closed with the client
    assert proc.wait_exit() == 0
