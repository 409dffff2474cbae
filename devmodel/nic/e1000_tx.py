"""82540EM transmit: the descriptor ring walk, legacy and extended (context + data)
descriptors, checksum offload, TCP segmentation (TSO), VLAN insertion, padding, write-back.

Behaviour follows the 8254x SDM chapter 3.3 and QEMU's process_tx_desc/xmit_seg, with the
bounds QEMU lacked (hostile-guest-catalog entries 11-13 and 16):
- the walk checks TDH/TDT against TDLEN before it starts and stops at head wraparound; at
  most TX_MAX_DESC_PER_KICK descriptors per doorbell, the rest continue on a zero-delay timer;
- a packet is at most TX_MAX_PACKET bytes and TX_MAX_DESC_PER_PACKET descriptors (a ring of
  descriptors without EOP), else it is dropped and counted;
- a TSO context with MSS 0 or a header length that does not fit is refused when loaded; a
  segmentation makes at most TX_MAX_TSO_SEGMENTS frames and every step consumes MSS bytes;
- a packet that mixes legacy and extended data descriptors is dropped and the contexts reset;
- a descriptor or buffer outside guest RAM is a master abort: the packet is dropped.
"""

from __future__ import annotations

from . import e1000_defs as d
from .e1000_stats import FrameTally
from .netpkt import ETH_ZLEN, csum_add, csum_finish

TX_MAX_DESC_PER_KICK = 4096
TX_MAX_PACKET = 0x10000  # what the 16-bit IP total length and the SDM's TSO limit allow
TX_MAX_DESC_PER_PACKET = 256
TX_MAX_TSO_SEGMENTS = 2048
TX_MAX_HDRLEN = 240  # header bytes the segmentation engine copies per segment

KIND_NONE, KIND_LEGACY, KIND_DATA = 0, 1, 2
# the fast path's packet: a legacy descriptor with EOP, without IC (checksum) or VLE (tag)
_FAST_MASK = d.TXD_CMD_EOP | d.TXD_CMD_DEXT | d.TXD_CMD_IC | d.TXD_CMD_VLE
_WB_MASK = d.TXD_CMD_RS | d.TXD_CMD_RPS
# context: [ipcss, ipcso, ipcse, tucss, tucso, tucse, paylen, hdrlen, mss, tucmd, valid]
EMPTY_CTX = [0] * 11
C_IPCSS, C_IPCSO, C_IPCSE, C_TUCSS, C_TUCSO, C_TUCSE, C_PAYLEN, C_HDRLEN, C_MSS, C_TUCMD, C_VALID = range(11)


def _putsum(frame: bytearray, cso: int, css: int, cse: int) -> None:
    """Insert the ones' complement of bytes css..cse (0: to the end) at cso (QEMU putsum)."""
    n = len(frame)
    if cse and cse < n:
        n = cse + 1
    if css >= n or cso + 2 > len(frame):
        return
    s = csum_finish(csum_add(frame[css:n]))
    frame[cso] = s >> 8
    frame[cso + 1] = s & 0xFF


class E1000Tx:
    TX_FIELDS = ("tx_buffer", "tx_kind", "tx_ndesc", "tx_popts", "tx_tse", "tx_drop",
                 "tx_ctx", "tx_tso_ctx")

    def tx_init(self) -> None:
        self._tx_abort_packet("")  # the per-packet state, nothing counted
        self.tx_ctx = list(EMPTY_CTX)
        self.tx_tso_ctx = list(EMPTY_CTX)
        self._tx_busy = False

    @property
    def tx_buffer(self) -> bytes:
        return bytes(self._tx_data)

    @tx_buffer.setter
    def tx_buffer(self, data: bytes) -> None:
        self._tx_data = bytearray(data[:TX_MAX_PACKET])

    # ---- doorbells ----------------------------------------------------------------------
    def _w_tdt(self, old: int, new: int) -> None:
        # The doorbell is a posted write: the walk runs once the write is answered, before the
        # machine serves anything else (Machine.post), so the next register read (ICR) sees
        # its causes. Without a machine that posts, at once.
        machine = self.ctx.machine if self.ctx is not None else None
        if machine is not None:
            machine.post(self, self.tx_kick)
        else:
            self.tx_kick()

    def _w_tctl(self, old: int, new: int) -> None:
        self.tx_kick()

    def _tx_resume(self, now: int) -> None:
        self.tx_kick()

    def tx_kick(self) -> None:
        """One doorbell: walk TDH..TDT (bounded), then raise the causes once.

        The ring is one writable view of guest RAM when it lies in one region (always, for a
        sane guest): descriptors are unpacked in place with one precompiled struct and DD is
        written back in place. The common packet, one legacy descriptor with EOP and no
        checksum or VLAN request, goes from guest RAM to the port with one copy and its
        statistics are tallied per doorbell; everything else takes _tx_descriptor."""
        regs = self.regs
        values = regs.values
        if not values["TCTL"] & d.TCTL_EN or self._tx_busy or not self.bus_master:
            return
        n = values["TDLEN"] // d.DESC_SIZE
        head, tail = values["TDH"], values["TDT"]
        if head == tail:
            return
        if n == 0 or head >= n or tail >= n:
            # CVE-2016-1981: a head or tail outside the ring never meets the other
            self.guest_error(f"tx ring pointers outside TDLEN: {head} {tail} {values['TDLEN']:#x}")
            return
        base = values["TDBAH"] << 32 | values["TDBAL"]
        mem = self.ctx.memory
        views = mem.views(base, n * d.DESC_SIZE, write=True)
        ring = views[0] if views is not None and len(views) == 1 else None
        port = self.transmit
        fast = ring is not None and port is not None and self.phy_link and not self.loopback_mode()
        # the fast path's frames go to the port together, once per walk (or before a packet
        # of the general path, which sends its own): one call into the backend per doorbell
        batch: list[bytes] = []
        pad = values["TCTL"] & d.TCTL_PSP
        tidv = values["TIDV"] & 0xFFFF
        unpack = d.TX_GENERIC.unpack_from
        tally = FrameTally()
        keep = batch.append
        win_start = win_end = 0
        win = None  # the RAM region of the last buffer (dma.py)
        cause = 0
        written = False
        budget = min(n, TX_MAX_DESC_PER_KICK)
        self._tx_busy = True
        try:
            while head != tail and budget:
                budget -= 1
                off = head * d.DESC_SIZE
                if fast:
                    buf, lower, upper = unpack(ring, off)
                    cmd = lower >> 24
                    length = lower & 0xFFFF
                    if cmd & _FAST_MASK == d.TXD_CMD_EOP and length and not self.tx_kind:
                        if not (win_start <= buf and buf + length <= win_end):
                            w = mem.window(buf, length)
                            if w is not None:
                                win_start, win_end, win = w
                        if win_start <= buf and buf + length <= win_end:
                            frame = bytes(win[buf - win_start : buf - win_start + length])
                            if pad and length < ETH_ZLEN:
                                frame += bytes(ETH_ZLEN - length)
                            keep(frame)
                            if cmd & _WB_MASK:
                                ring[off + 12] = (ring[off + 12] | d.TXD_STAT_DD) & ~0x0E
                                written = True
                                if not cmd & d.TXD_CMD_IDE or not tidv:
                                    cause |= d.ICR_TXDW
                                else:
                                    cause |= self._tx_done_cause(cmd)
                            head = head + 1 if head + 1 < n else 0
                            continue
                if batch:
                    self._tx_send(batch, tally)
                    batch.clear()
                addr = base + off
                raw = mem.read(addr, d.DESC_SIZE)
                if raw is None:
                    self.dma_error(f"tx descriptor outside RAM: {addr:#x}")
                    self._tx_abort_packet("descriptor fetch")
                    break
                cause |= self._tx_descriptor(raw, addr)
                head = head + 1 if head + 1 < n else 0
        finally:
            self._tx_busy = False
            values["TDH"] = head
            if batch:
                self._tx_send(batch, tally)
            if tally.frames:
                self.stat_tally(tally, "GPTC", "GOTCL", "TPT", "TOTL", d.PTC_REGS, "BPTC", "MPTC")
                self.counters["tx frames"] += tally.frames
            if written:
                mem.mark_dirty(base, n * d.DESC_SIZE)
        if head != tail and budget == 0:
            self.timer("tx_resume").arm_in(0)
        if head == tail:
            cause |= d.ICR_TXQE
        if cause:
            self.raise_cause(cause)

    def _tx_send(self, frames: list[bytes], tally: FrameTally) -> None:
        """The fast path's frames, in ring order: tallied, then handed to the backend in one
        call when it takes batches (`transmit_batch`), else one by one."""
        tally.add_many(frames)
        send_batch = self.transmit_batch
        if send_batch is not None:
            send_batch(frames)
            return
        port = self.transmit
        for frame in frames:
            port(frame)

    # ---- one descriptor -----------------------------------------------------------------
    def _tx_descriptor(self, raw: bytes, addr: int) -> int:
        buf, lower, upper = d.TX_GENERIC.unpack(raw)
        cmd = lower >> 24
        dtyp = (lower >> 20) & 0xF
        if cmd & d.TXD_CMD_DEXT:
            if dtyp == d.DTYP_CONTEXT:
                self._tx_context(raw)
                return self._tx_writeback(raw, addr, cmd)
            if dtyp != d.DTYP_DATA:
                self.guest_error(f"tx descriptor type reserved: {dtyp}")
                self._tx_abort_packet("descriptor type")
                return self._tx_writeback(raw, addr, cmd)
            kind = KIND_DATA
            length = lower & 0xFFFFF
        else:
            kind = KIND_LEGACY
            length = lower & 0xFFFF
        if self.tx_kind and kind != self.tx_kind and not self.tx_drop:
            # CVE-2021-20257: mixing descriptor types inside one packet drops the whole
            # packet (through its EOP) and resets the offload contexts
            self.guest_error("tx packet mixes legacy and extended descriptors")
            self.tx_ctx = list(EMPTY_CTX)
            self.tx_tso_ctx = list(EMPTY_CTX)
            self.tx_drop = "mixed descriptors"
        if not self.tx_kind:
            self.tx_kind = kind
            if kind == KIND_DATA:
                self.tx_popts = (upper >> 8) & 0xFF
                self.tx_tse = 1 if cmd & d.TXD_CMD_TSE else 0
        self.tx_ndesc += 1
        if self.tx_ndesc > TX_MAX_DESC_PER_PACKET and not self.tx_drop:
            self.guest_error("tx packet spans too many descriptors")
            self.tx_drop = "too many descriptors"
        if length and not self.tx_drop:
            if len(self._tx_data) + length > TX_MAX_PACKET:
                self.guest_error("tx packet longer than TX_MAX_PACKET")
                self.tx_drop = "too long"
            else:
                data = self.ctx.memory.read(buf, length)
                if data is None:
                    self.dma_error(f"tx buffer outside RAM: {buf:#x}+{length}")
                    self.tx_drop = "buffer outside RAM"
                else:
                    self._tx_data += data
        if cmd & d.TXD_CMD_EOP:
            self._tx_end_of_packet(kind, lower, upper)
        return self._tx_writeback(raw, addr, cmd)

    def _tx_writeback(self, raw: bytes, addr: int, cmd: int) -> int:
        if not cmd & (d.TXD_CMD_RS | d.TXD_CMD_RPS):
            return 0
        # DD set; EC, LC and TU cleared: no collisions on a full-duplex link (SDM 3.3.3.2)
        status = (raw[12] | d.TXD_STAT_DD) & ~0x0E
        if not self.ctx.memory.write(addr + 12, bytes((status,))):
            self.dma_error(f"tx write-back outside RAM: {addr:#x}")
            return 0
        return self._tx_done_cause(cmd)

    def _tx_done_cause(self, cmd: int) -> int:
        """TXDW now, or after TIDV/TADV for descriptors with IDE (SDM 3.4.1)."""
        regs = self.regs
        tidv = regs["TIDV"] & 0xFFFF
        if not cmd & d.TXD_CMD_IDE or not tidv:
            return d.ICR_TXDW
        self.timer("tidv").arm_in(tidv * 1024)
        tadv = regs["TADV"] & 0xFFFF
        if tadv and not self.timer("tadv").armed:
            self.timer("tadv").arm_in(tadv * 1024)
        return 0

    def _tx_delay_expired(self, now: int) -> None:
        self.timer("tidv").cancel()
        self.timer("tadv").cancel()
        self.raise_cause(d.ICR_TXDW)

    def _tx_context(self, raw: bytes) -> None:
        (ipcss, ipcso, ipcse, tucss, tucso, tucse, cmdlen, _sta, hdrlen,
         mss) = d.TX_CONTEXT.unpack(raw)
        tucmd = cmdlen >> 24
        ctx = [ipcss, ipcso, ipcse, tucss, tucso, tucse, cmdlen & 0xFFFFF, hdrlen, mss, tucmd, 1]
        if tucmd & d.TUCMD_TSE:
            # CVE-2015-6815: a TSO context that cannot make progress is refused here
            if mss == 0 or hdrlen == 0 or hdrlen > TX_MAX_HDRLEN:
                self.guest_error(f"tso context refused: mss {mss} hdrlen {hdrlen}")
                ctx[C_VALID] = 0
            self.tx_tso_ctx = ctx
        else:
            self.tx_ctx = ctx

    def _tx_abort_packet(self, why: str) -> None:
        if why and (self.tx_kind or self._tx_data):
            self.counters[f"tx dropped: {why}"] += 1
        self._tx_data = bytearray()
        self.tx_kind = KIND_NONE
        self.tx_ndesc = 0
        self.tx_popts = 0
        self.tx_tse = 0
        self.tx_drop = ""

    # ---- a whole packet -----------------------------------------------------------------
    def _tx_end_of_packet(self, kind: int, lower: int, upper: int) -> None:
        data = self._tx_data
        vlan = None
        cmd = lower >> 24
        if cmd & d.TXD_CMD_VLE and self.regs["CTRL"] & d.CTRL_VME:
            vlan = upper >> 16
        if self.tx_drop:
            self._tx_abort_packet(self.tx_drop)
            return
        if kind == KIND_DATA and self.tx_tse:
            self._tx_segment(data, vlan)
        elif data:
            frame = bytearray(data)
            if kind == KIND_LEGACY:
                if cmd & d.TXD_CMD_IC:
                    # legacy checksum: CSS to the end, stored at CSO (SDM 3.3.2)
                    _putsum(frame, (lower >> 16) & 0xFF, (upper >> 8) & 0xFF, 0)
            else:
                self._tx_offload(frame, self.tx_ctx)
            self._tx_out(frame, vlan)
        self._tx_abort_packet("")  # clears the per-packet state; nothing counted when sent

    def _tx_offload(self, frame: bytearray, ctx: list[int]) -> None:
        if not ctx[C_VALID]:
            if self.tx_popts:
                self.counters["tx checksum without context"] += 1
            return
        if self.tx_popts & d.POPTS_TXSM:
            _putsum(frame, ctx[C_TUCSO], ctx[C_TUCSS], ctx[C_TUCSE])
        if self.tx_popts & d.POPTS_IXSM:
            _putsum(frame, ctx[C_IPCSO], ctx[C_IPCSS], ctx[C_IPCSE])

    def _tx_segment(self, data: bytearray, vlan: int | None) -> None:
        """TCP/UDP segmentation (SDM 3.5): per segment the IPv4 total length and
        identification, or the IPv6 payload length; the TCP sequence number, with PSH and
        FIN kept only on the last segment; the UDP length; then the offloaded checksums,
        the L4 pseudo-header sum (seeded by the driver without length) completed with it."""
        ctx = self.tx_tso_ctx
        hdrlen, mss = ctx[C_HDRLEN], ctx[C_MSS]
        ipcss, tucss = ctx[C_IPCSS], ctx[C_TUCSS]
        ipv4 = ctx[C_TUCMD] & d.TUCMD_IP
        tcp = ctx[C_TUCMD] & d.TUCMD_TCP
        need = max(ipcss + (20 if ipv4 else 40), tucss + (20 if tcp else 8))
        if not ctx[C_VALID] or len(data) <= hdrlen or need > hdrlen:
            self.guest_error(f"tso packet refused: {len(data)} bytes, hdrlen {hdrlen} needs {need}")
            self.counters["tx dropped: tso"] += 1
            return
        payload = len(data) - hdrlen
        nseg = -(-payload // mss)
        if nseg > TX_MAX_TSO_SEGMENTS:
            self.guest_error(f"tso packet refused: {nseg} segments")
            self.counters["tx dropped: tso"] += 1
            return
        if ctx[C_PAYLEN] != payload:
            self.counters["tso paylen mismatch"] += 1
        hdr = bytes(data[:hdrlen])
        seq = int.from_bytes(hdr[tucss + 4 : tucss + 8], "big")
        ip_id = int.from_bytes(hdr[ipcss + 4 : ipcss + 6], "big")
        l4seed = hdr[ctx[C_TUCSO]] << 8 | hdr[ctx[C_TUCSO] + 1] if ctx[C_TUCSO] + 2 <= hdrlen else 0
        for i in range(nseg):
            start = hdrlen + i * mss
            chunk = data[start : start + mss]
            frame = bytearray(hdr)
            frame += chunk
            size = len(frame)
            if ipv4:
                frame[ipcss + 2 : ipcss + 4] = (size - ipcss).to_bytes(2, "big")
                frame[ipcss + 4 : ipcss + 6] = ((ip_id + i) & 0xFFFF).to_bytes(2, "big")
            else:
                frame[ipcss + 4 : ipcss + 6] = (size - ipcss - 40).to_bytes(2, "big")
            l4len = size - tucss
            if tcp:
                frame[tucss + 4 : tucss + 8] = ((seq + i * mss) & 0xFFFFFFFF).to_bytes(4, "big")
                if i != nseg - 1:
                    frame[tucss + 13] &= ~0x09  # PSH, FIN
            else:
                frame[tucss + 4 : tucss + 6] = l4len.to_bytes(2, "big")
            if self.tx_popts & d.POPTS_TXSM and ctx[C_TUCSO] + 2 <= hdrlen:
                seed = l4seed + l4len
                seed = (seed & 0xFFFF) + (seed >> 16)
                frame[ctx[C_TUCSO] : ctx[C_TUCSO] + 2] = seed.to_bytes(2, "big")
                _putsum(frame, ctx[C_TUCSO], tucss, ctx[C_TUCSE])
            if self.tx_popts & d.POPTS_IXSM:
                _putsum(frame, ctx[C_IPCSO], ipcss, ctx[C_IPCSE])
            self._tx_out(frame, vlan)
        self.stat_add("TSCTC")

    def _tx_out(self, frame: bytearray, vlan: int | None) -> None:
        if vlan is not None and len(frame) >= 12:
            frame[12:12] = (self.regs["VET"] & 0xFFFF).to_bytes(2, "big") + vlan.to_bytes(2, "big")
        if self.regs["TCTL"] & d.TCTL_PSP and len(frame) < ETH_ZLEN:
            frame += bytes(ETH_ZLEN - len(frame))
        self.stat_frame("GPTC", "GOTCL", "TPT", "TOTL", d.PTC_REGS, "BPTC", "MPTC", frame)
        if self.loopback_mode():
            self.loopback_queue_frame(bytes(frame))
            return
        if not self.phy_link:
            self.counters["tx while link down"] += 1
            return
        port = self.transmit
        if port is None:
            self.counters["tx without backend"] += 1
            return
        port(bytes(frame))
        self.counters["tx frames"] += 1
