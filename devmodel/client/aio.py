"""The asyncio flavour of the hypervisor-side client. Same state and helpers as the sync one;
replies are futures keyed by tag, so many ioreqs (several vCPUs) can be in flight."""

from __future__ import annotations

import array
import asyncio
import os
import socket
from collections.abc import Sequence

from devmodel.wire import codec
from devmodel.wire.codec import Ioreq
from devmodel.wire.constants import (
    FLAG_HAS_FDS,
    FLAG_NO_REPLY,
    IOREQ_READ,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_PCI_CONFIG,
    IOREQ_TYPE_PIO,
    IOREQ_WRITE,
    MEM_RAM,
    PAGE_SIZE,
    MsgType,
)
from devmodel.wire.framing import Deframer, Message, received_fds

from .guestram import GuestRam
from .state import HypervisorState
from .sync import DEFAULT_FEATURES, ProtocolError


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class AsyncHypervisor:
    def __init__(self, sock: socket.socket, *, nr_vcpus: int = 1, domid: int = 1,
                 features: int = DEFAULT_FEATURES, timeout: float = 10.0) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.nr_vcpus = nr_vcpus
        self.domid = domid
        self.features = features
        self.timeout = timeout
        self.state = HypervisorState()
        self.ram: GuestRam | None = None
        self._deframer = Deframer()
        self._waiters: dict[int, asyncio.Future[Message]] = {}
        self._next_tag = 1
        self._enabled = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self.unsolicited: list[Message] = []

    @classmethod
    async def connect(cls, path: str, **kw) -> AsyncHypervisor:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        await loop.sock_connect(s, path)
        hv = cls(s, **kw)
        hv._reader = asyncio.create_task(hv._read_loop())
        await hv.hello()
        await asyncio.wait_for(hv._enabled.wait(), hv.timeout)
        return hv

    async def __aenter__(self) -> AsyncHypervisor:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, ConnectionError):
                pass
        self.sock.close()
        for _gpa, _size, _flags, fd in self.state.dm_regions.values():
            os.close(fd)
        self.state.dm_regions.clear()
        if self.ram is not None:
            self.ram.close()
            self.ram = None

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data, fds = await self._recvmsg(loop)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    raise ConnectionError("daemon closed the connection")
                self._deframer.feed(data, fds)
                for msg in self._deframer.messages():
                    if msg.type == MsgType.DMOP:
                        reply = self.state.handle_dmop(msg)
                        if reply is not None:
                            await loop.sock_sendall(self.sock, reply)
                        if self.state.server_enabled:
                            self._enabled.set()
                        continue
                    if msg.type == MsgType.MEM_ADD:
                        # Memory the daemon shares (docs/protocol.md 4.7: VRAM, option ROMs),
                        # recorded with its fd in state.dm_regions as the sync client does.
                        self.state.handle_mem_add(msg)
                        continue
                    if msg.type == MsgType.MEM_DEL:
                        self.state.handle_mem_del(msg)
                        continue
                    fut = self._waiters.pop(msg.tag, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                    else:
                        self.unsolicited.append(msg)
        except Exception as e:
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(str(e)))
            raise

    async def _recvmsg(self, loop: asyncio.AbstractEventLoop) -> tuple[bytes, list[int]]:
        """One recvmsg with the fds that came with it (loop.sock_recv would drop SCM_RIGHTS)."""
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(1 << 18, socket.CMSG_SPACE(4 * 4))
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self.sock.fileno(), _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.sock.fileno())
                continue
            return data, received_fds(anc)

    def _tag(self) -> int:
        t = self._next_tag
        self._next_tag = t % 0xFFFFFFFF + 1
        return t

    async def request(self, mtype: int, payload: bytes, *, chan: int = 0, flags: int = 0,
                      fds: Sequence[int] = ()) -> Message | None:
        tag = self._tag()
        data = codec.frame(mtype, payload, tag=tag, chan=chan, flags=flags)
        fut: asyncio.Future[Message] | None = None
        if not flags & FLAG_NO_REPLY and mtype in (MsgType.HELLO, MsgType.IOREQ):
            fut = asyncio.get_running_loop().create_future()
            self._waiters[tag] = fut
        if fds:
            # A short message with its fd goes out in one sendmsg on the non-blocking socket.
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
        else:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        if fut is None:
            return None
        msg = await asyncio.wait_for(fut, self.timeout)
        if msg.type == MsgType.ERROR:
            raise ProtocolError(*codec.decode_error(msg.payload))
        return msg

    async def hello(self) -> tuple[int, ...]:
        msg = await self.request(MsgType.HELLO, codec.HELLO.pack(
            1, PAGE_SIZE, self.nr_vcpus, self.features, self.domid, 0))
        assert msg is not None
        return codec.HELLO.unpack(msg.payload)

    async def add_ram(self, size: int, layout: str = "pc") -> GuestRam:
        ram = GuestRam(size)
        for rid, (gpa, length) in enumerate(ram.regions(layout)):
            await self.request(MsgType.MEM_ADD,
                               codec.MEM_ADD.pack(gpa, length, gpa, MEM_RAM, rid),
                               flags=FLAG_HAS_FDS, fds=[ram.fd])
        self.ram = ram
        return ram

    async def ioreq(self, req: Ioreq, chan: int = 0) -> Ioreq:
        msg = await self.request(MsgType.IOREQ, req.pack(), chan=chan)
        assert msg is not None
        return Ioreq.unpack(msg.payload)

    async def _io(self, typ: int, addr: int, size: int, dir: int, data: int = 0,
                  count: int = 1, ptr: int = 0, df: int = 0, chan: int = 0) -> int:
        r = await self.ioreq(Ioreq(addr=addr, data=data, count=count, size=size,
                                   data_is_ptr=ptr, dir=dir, df=df, type=typ), chan)
        return r.data

    async def inb(self, port: int) -> int:
        return await self._io(IOREQ_TYPE_PIO, port, 1, IOREQ_READ)

    async def inl(self, port: int) -> int:
        return await self._io(IOREQ_TYPE_PIO, port, 4, IOREQ_READ)

    async def outb(self, port: int, v: int) -> None:
        await self._io(IOREQ_TYPE_PIO, port, 1, IOREQ_WRITE, v)

    async def outl(self, port: int, v: int) -> None:
        await self._io(IOREQ_TYPE_PIO, port, 4, IOREQ_WRITE, v)

    async def readl(self, gpa: int) -> int:
        return await self._io(IOREQ_TYPE_COPY, gpa, 4, IOREQ_READ)

    async def writel(self, gpa: int, v: int) -> None:
        await self._io(IOREQ_TYPE_COPY, gpa, 4, IOREQ_WRITE, v)

    async def pci_cfg_read(self, sbdf: int, reg: int, size: int) -> int:
        return await self._io(IOREQ_TYPE_PCI_CONFIG, sbdf << 32 | reg, size, IOREQ_READ)

    async def pci_cfg_write(self, sbdf: int, reg: int, size: int, value: int) -> None:
        await self._io(IOREQ_TYPE_PCI_CONFIG, sbdf << 32 | reg, size, IOREQ_WRITE, value)

    async def clock(self, now_ns: int) -> None:
        await self.request(MsgType.CLOCK, codec.CLOCK.pack(now_ns), flags=FLAG_NO_REPLY)
