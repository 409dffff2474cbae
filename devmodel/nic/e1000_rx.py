"""82540EM receive: filters, VLAN stripping, checksum offload, descriptors, moderation.

8254x SDM chapter 3.2 and QEMU's e1000_receive_iov, with the catalog's bounds (entries 10, 12,
14, 15):
- frame size rules: at most RX_MAX_SHORT bytes without RCTL.LPE, RX_MAX_LONG with it, else
  the frame is dropped and counted in ROC (SBP does not lift the hard cap);
- a frame is spread over descriptors only within each descriptor's buffer size (BSIZE/BSEX),
  all descriptors it needs are checked before anything is written, null-buffer descriptors
  (skipped, as the SDM says) count against RX_MAX_DESC_PER_PACKET;
- RDH/RDT outside RDLEN: the frame is missed (MPC, RXO), never a walk;
- no room: `receive` returns False (RNBC counted) and the backend keeps the frame until
  `on_rx_space`; a backend that has to drop calls `rx_missed()` (MPC, RXO);
- loopback (RCTL.LBM or PHY loopback) goes through a bounded queue and a zero-delay timer,
  never a recursive call into the receive path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from . import e1000_defs as d
from .e1000_stats import BUCKET, FrameTally
from .netpkt import (
    BROADCAST,
    ETH_P_IPV4,
    ETH_P_IPV6,
    ETH_P_VLAN,
    ETH_ZLEN,
    csum_add,
    csum_fold,
    fcs,
    rx_checksums,
)

RX_MAX_SHORT = 1518  # 14 header + 4 VLAN tag + 1500, without FCS (1522 on the wire)
RX_MAX_LONG = 16384 - 4  # the 82540EM's 16 KiB packet buffer limit, without FCS
RX_MAX_DESC_PER_PACKET = 96  # 16 KiB in 256-byte buffers is 64, plus skipped null buffers
LOOPBACK_QUEUE_MAX = 64
_U64 = struct.Struct("<Q")
_CSUM_TYPES = frozenset((ETH_P_IPV4, ETH_P_IPV6, ETH_P_VLAN))  # what rx_checksums looks into
_BSIZE = {(0, 0): 2048, (0, 1): 1024, (0, 2): 512, (0, 3): 256,
          (1, 1): 16384, (1, 2): 8192, (1, 3): 4096, (1, 0): 2048}
_MTA_SHIFT = (4, 3, 2, 0)
_RAL = tuple(f"RAL{i}" for i in range(d.NUM_RA))
_RAH = tuple(f"RAH{i}" for i in range(d.NUM_RA))
_MTA = tuple(f"MTA{i}" for i in range(d.NUM_MTA))
_VFTA = tuple(f"VFTA{i}" for i in range(d.NUM_VFTA))


# The packet checksum of a frame longer than this folds the frame's integer before the modulo:
# 2**16 = 1 (mod 0xFFFF), so v = (v >> h) + (v & (2**h - 1)) (mod 0xFFFF) for h a multiple of 16,
# and the folded value is 0 only when v was. About 0.6 us less per 1514-byte frame.
_FOLD_FROM = 256
_MASKS: dict[int, int] = {}


def _mask(bits: int) -> int:
    m = _MASKS.get(bits)
    if m is None:
        m = _MASKS[bits] = (1 << bits) - 1  # at most RX_MAX_SHORT * 4 / 16 entries per fold
    return m


def rx_buffer_size(rctl: int) -> int:
    bsex = 1 if rctl & d.RCTL_BSEX else 0
    return _BSIZE[(bsex, (rctl >> d.RCTL_BSIZE_SHIFT) & 3)]


class E1000Rx:
    RX_FIELDS = ("loop_queue",)

    def rx_init(self) -> None:
        self.loop_queue: list[bytes] = []
        self.rx_bufsize = 2048
        self._rx_tally: FrameTally | None = None
        self._rx_cause = 0
        self._rx_ring: memoryview | bool | None = None  # per batch: see _rx_store

    def rx_post_restore(self) -> None:
        self.rx_bufsize = rx_buffer_size(self.regs["RCTL"])
        self.loop_queue = [bytes(f) for f in self.loop_queue][:LOOPBACK_QUEUE_MAX]

    # ---- register side effects ----------------------------------------------------------
    def _w_rctl(self, old: int, new: int) -> None:
        self.rx_bufsize = rx_buffer_size(new)
        if (new & d.RCTL_BSEX) and not (new >> d.RCTL_BSIZE_SHIFT) & 3:
            self.guest_error("RCTL BSEX with BSIZE 00 is reserved")
        if new & d.RCTL_EN:
            self.rx_space_changed()

    def _w_rdt(self, old: int, new: int) -> None:
        self.rx_space_changed()

    def _w_rdtr(self, old: int, new: int) -> None:
        self.regs["RDTR"] = new & 0xFFFF
        if new & d.RDTR_FPD and (self.timer("rdtr").armed or self.timer("radv").armed):
            self._rx_delay_expired(0)  # flush partial descriptor block: fire now

    def rx_space_changed(self) -> None:
        """Descriptors were given back (or the receiver came on): backends may retry."""
        if self.loop_queue and self.timer("loopback") is not None:
            self.timer("loopback").arm_in(0)
        if self.on_rx_space is not None:
            self.on_rx_space()

    # ---- the port -----------------------------------------------------------------------
    def can_receive(self) -> bool:
        regs = self.regs
        return bool(regs["RCTL"] & d.RCTL_EN and regs["STATUS"] & d.STATUS_LU and self.bus_master)

    def rx_missed(self) -> None:
        """A frame was lost for want of room (the backend's queue or ours was full)."""
        self.stat_add("MPC")
        self.raise_cause(d.ICR_RXO)

    def receive(self, frame: bytes | bytearray | memoryview) -> bool:
        """Offer one frame (without FCS). True: consumed (stored, filtered or counted as
        dropped); False: no descriptors now, offer it again after `on_rx_space`."""
        return self.receive_many((frame,)) == 1

    def receive_many(self, frames: Iterable[bytes | bytearray | memoryview]) -> int:
        """Offer frames in order; returns how many were consumed (the rest wait for
        `on_rx_space`). Statistics and interrupt causes are evaluated once for the batch: the
        guest sees the same registers and line as after the frames one by one, since no time
        passes in between (moderation timers are armed from the same `now`)."""
        tally = FrameTally()
        self._rx_tally = tally
        self._rx_cause = 0
        self._rx_ring = None
        done = 0
        try:
            done = self._rx_batch(frames, tally)
        finally:
            self._rx_tally = None
            self._rx_ring = None
            if tally.frames:
                self.stat_tally(tally, "GPRC", "GORCL", "TPR", "TORL", d.PRC_REGS, "BPRC", "MPRC")
                self.counters["rx frames"] += tally.frames
            cause = self._rx_cause
            if tally.frames:
                if self.regs.values["RDTR"] & 0xFFFF:
                    self._rx_interrupt()
                else:
                    cause |= d.ICR_RXT0
            if cause:
                self.raise_cause(cause)
        return done

    def _rx_batch(self, frames: Iterable[bytes | bytearray | memoryview], tally: FrameTally) -> int:
        """The receive loop. What cannot change while a batch runs (no ioreq comes in between)
        is read once: the ring as one writable view, buffer size, filters, checksum start.
        The common frame (60..1518 bytes, untagged, to our address, broadcast or promiscuous,
        fitting one buffer at the head) is stored right here; any other frame, or a ring not
        in one piece of RAM, takes _rx_frame with the full rules."""
        values = self.regs.values
        rctl = values["RCTL"]
        mem = self.ctx.memory
        n = values["RDLEN"] // d.DESC_SIZE
        head, tail = values["RDH"], values["RDT"]
        ring = None
        if (rctl & d.RCTL_EN and values["STATUS"] & d.STATUS_LU and self.bus_master
                and not values["CTRL"] & d.CTRL_VME and head < n and tail < n):
            views = mem.views(values["RDBAH"] << 32 | values["RDBAL"], n * d.DESC_SIZE, write=True)
            if views is not None and len(views) == 1:
                ring = self._rx_ring = views[0]
        done = 0
        if ring is None:
            for frame in frames:
                if not self._rx_frame(frame):
                    break
                done += 1
            return done
        fcs_len = 0 if rctl & d.RCTL_SECRC else 4
        max_fast = min(RX_MAX_SHORT, self.rx_bufsize - fcs_len)
        rxcsum = values["RXCSUM"]
        pcss = rxcsum & d.RXCSUM_PCSS_MASK
        csum_on = rxcsum & (d.RXCSUM_IPOFL | d.RXCSUM_TUOFL)
        vet = values["VET"] & 0xFFFF
        upe = rctl & d.RCTL_UPE
        bam = rctl & d.RCTL_BAM
        rah0 = values["RAH0"]
        own = (values["RAL0"].to_bytes(4, "little") + (rah0 & 0xFFFF).to_bytes(2, "little")
               if rah0 & d.RAH_AV and not rah0 & 0x30000 else None)
        low_mark = n >> (((rctl >> d.RCTL_RDMTS_SHIFT) & 3) + 1)
        base = values["RDBAH"] << 32 | values["RDBAL"]
        dirty = mem.dirty_log is not None
        unpack = _U64.unpack_from
        pack_into = d.RX_DESC.pack_into
        from_bytes = int.from_bytes
        win_start = win_end = 0
        win = None  # the RAM region of the last buffer (dma.py)
        # the batch's statistics, handed to the tally at the end
        frames_ok = octets = bcast = mcast = 0
        buckets = tally.buckets
        cause = 0
        try:
            for frame in frames:
                f = frame if type(frame) is bytes else bytes(frame)
                size = len(f)
                if ETH_ZLEN <= size <= max_fast and head != tail:
                    et = f[12] << 8 | f[13]
                    dst = f[:6]
                    if et != vet and (dst == own or (dst == BROADCAST and bam)
                                      or (upe and not dst[0] & 1)):
                        off = head * d.DESC_SIZE
                        buf = unpack(ring, off)[0]
                        if buf:
                            if csum_on and et in _CSUM_TYPES:
                                status, errors = self._rx_checksum(f)
                            else:
                                status, errors = d.RXD_STAT_IXSM, 0
                            if pcss == 0 and not size & 1:
                                # csum_add inlined for the default start and an even length
                                v = from_bytes(f, "little")
                                if size > _FOLD_FROM:
                                    # halve the integer twice before the modulo (CPython's
                                    # modulo by a small int is one division per 30 bits)
                                    h = size << 2 & ~15
                                    v = (v >> h) + (v & _mask(h))
                                    h = size << 1 & ~15
                                    v = (v >> h) + (v & _mask(h))
                                r = v % 0xFFFF
                                pkt_csum = (r << 8) % 0xFFFF if r else 0xFFFF if v else 0
                            else:
                                pkt_csum = csum_fold(csum_add(memoryview(f)[pcss:])) if pcss < size else 0
                            data = f + fcs(f) if fcs_len else f
                            dlen = len(data)
                            if not (win_start <= buf and buf + dlen <= win_end):
                                w = mem.window(buf, dlen, write=True)
                                if w is not None:
                                    win_start, win_end, win = w
                            if win_start <= buf and buf + dlen <= win_end:
                                win[buf - win_start : buf - win_start + dlen] = data
                                if dirty:
                                    mem.mark_dirty(buf, dlen)
                            elif not mem.write(buf, data):
                                self.dma_error(f"rx buffer outside RAM: {buf:#x}+{dlen}")
                                errors |= d.RXD_ERR_RXE
                            pack_into(ring, off, buf, dlen, pkt_csum,
                                      d.RXD_STAT_DD | d.RXD_STAT_EOP | status, errors, 0)
                            if dirty:
                                mem.mark_dirty(base + off, d.DESC_SIZE)
                            head = head + 1 if head + 1 < n else 0
                            frames_ok += 1
                            octets += size + 4
                            buckets[BUCKET[size + 4 if size < 1020 else 1024]] += 1
                            if dst[0] & 1:
                                if dst == BROADCAST:
                                    bcast += 1
                                else:
                                    mcast += 1
                            if (tail - head) % n <= low_mark:
                                cause |= d.ICR_RXDMT0
                            done += 1
                            continue
                values["RDH"] = head
                ok = self._rx_frame(f)
                head = values["RDH"]
                if not ok:
                    break
                done += 1
        finally:
            values["RDH"] = head
            self._rx_cause |= cause
            tally.frames += frames_ok
            tally.octets += octets
            tally.bcast += bcast
            tally.mcast += mcast
        return done

    def _rx_frame(self, frame: bytes | bytearray | memoryview) -> bool:
        values = self.regs.values
        rctl = values["RCTL"]
        if not rctl & d.RCTL_EN or not values["STATUS"] & d.STATUS_LU:
            self.counters["rx dropped: receiver off or link down"] += 1
            return True
        if not self.bus_master:
            return False
        f = frame if type(frame) is bytes else bytes(frame)
        size = len(f)
        if size < ETH_ZLEN:
            f += bytes(ETH_ZLEN - size)  # as QEMU: a tap frame is not padded
            size = ETH_ZLEN
        if size > RX_MAX_LONG or (size > RX_MAX_SHORT and not rctl & (d.RCTL_LPE | d.RCTL_SBP)):
            self.stat_add("ROC")  # CVE-2012-6075: too long for the buffer rules
            return True
        if not self._rx_filter(f, rctl):
            self.counters["rx filtered"] += 1
            return True
        status = 0
        special = 0
        if values["CTRL"] & d.CTRL_VME and (f[12] << 8 | f[13]) == values["VET"] & 0xFFFF:
            special = f[14] << 8 | f[15]
            f = f[:12] + f[16:]
            status |= d.RXD_STAT_VP
        if (f[12] << 8 | f[13]) in _CSUM_TYPES:
            csum_status, errors = self._rx_checksum(f)
        else:
            csum_status, errors = d.RXD_STAT_IXSM, 0  # not IP: nothing to check (SDM 3.2.9)
        pcss = values["RXCSUM"] & d.RXCSUM_PCSS_MASK
        pkt_csum = csum_fold(csum_add(memoryview(f)[pcss:])) if pcss < len(f) else 0
        data = f if rctl & d.RCTL_SECRC else f + fcs(f)
        return self._rx_store(f, data, status | csum_status, errors, special, pkt_csum)

    def _rx_store(self, f: bytes, data: bytes, status: int, errors: int, special: int,
                  pkt_csum: int) -> bool:
        values = self.regs.values
        n = values["RDLEN"] // d.DESC_SIZE
        head, tail = values["RDH"], values["RDT"]
        if n == 0 or head >= n or tail >= n:
            self.guest_error(f"rx ring pointers outside RDLEN: {head} {tail} {values['RDLEN']:#x}")
            self.rx_missed()
            return True
        bufsize = self.rx_bufsize
        total = len(data)
        needed = -(-total // bufsize)
        avail = (tail - head) % n
        base = values["RDBAH"] << 32 | values["RDBAL"]
        mem = self.ctx.memory
        ring = self._rx_ring
        if ring is None:
            # the ring as one writable view, once per batch (the guest cannot move it while
            # a batch runs); None when it straddles regions or leaves RAM: then one access
            # per descriptor, which also reports the bus error
            views = mem.views(base, n * d.DESC_SIZE, write=True)
            ring = self._rx_ring = views[0] if views is not None and len(views) == 1 else False
        if ring and needed == 1 and avail:
            # the common frame: one buffer, in the descriptor at the head
            off = head * d.DESC_SIZE
            buf = _U64.unpack_from(ring, off)[0]
            if buf:
                err = errors
                if not mem.write(buf, data):
                    self.dma_error(f"rx buffer outside RAM: {buf:#x}+{total}")
                    err |= d.RXD_ERR_RXE
                d.RX_DESC.pack_into(ring, off, buf, total, pkt_csum,
                                    d.RXD_STAT_DD | d.RXD_STAT_EOP | status, err, special)
                if mem.dirty_log is not None:
                    mem.mark_dirty(base + off, d.DESC_SIZE)
                return self._rx_stored(f, head + 1 if head + 1 < n else 0, tail, n)
        descs: list[tuple[int, int]] = []  # (descriptor offset in the ring, buffer address)
        found = 0
        idx = head
        for _ in range(min(avail, RX_MAX_DESC_PER_PACKET)):
            off = idx * d.DESC_SIZE
            if ring:
                buf = _U64.unpack_from(ring, off)[0]
            else:
                buf = mem.read_int(base + off, 8)
                if buf is None:
                    self.dma_error(f"rx descriptor outside RAM: {base + off:#x}")
                    self.rx_missed()
                    return True
            descs.append((off, buf))
            if buf:
                found += 1
                if found == needed:
                    break
            idx = idx + 1 if idx + 1 < n else 0
        if found < needed:
            if len(descs) >= RX_MAX_DESC_PER_PACKET or needed > n - 1:
                # catalog 15: a packet that cannot be placed within the budget is dropped
                self.guest_error(f"rx frame cannot be placed in the ring: {total} bytes")
                self.rx_missed()
                return True
            self.stat_add("RNBC")
            return False
        pos = 0
        last = len(descs) - 1
        write = mem.write
        for i, (off, buf) in enumerate(descs):
            length = 0
            err = 0
            st = d.RXD_STAT_DD
            if buf:
                chunk = data[pos : pos + bufsize] if total > bufsize else data
                length = len(chunk)
                pos += length
                if not write(buf, chunk):
                    self.dma_error(f"rx buffer outside RAM: {buf:#x}+{length}")
                    err = d.RXD_ERR_RXE
            if i == last:
                st |= d.RXD_STAT_EOP | status
                err |= errors
                fields = (buf, length, pkt_csum, st, err, special)
            else:
                fields = (buf, length, 0, st, err, 0)
            if ring:
                d.RX_DESC.pack_into(ring, off, *fields)
            elif not write(base + off, d.RX_DESC.pack(*fields)):
                self.dma_error(f"rx write-back outside RAM: {base + off:#x}")
        if ring and mem.dirty_log is not None:
            mem.mark_dirty(base, n * d.DESC_SIZE)  # written in place: the pages may have wrapped
        return self._rx_stored(f, (head + len(descs)) % n, tail, n)

    def _rx_stored(self, f: bytes, head: int, tail: int, n: int) -> bool:
        values = self.regs.values
        values["RDH"] = head
        if self._rx_tally is not None:
            self._rx_tally.add(f)
        free = (tail - head) % n
        shift = ((values["RCTL"] >> d.RCTL_RDMTS_SHIFT) & 3) + 1
        if free <= n >> shift:
            self._rx_cause |= d.ICR_RXDMT0
        return True

    def _rx_checksum(self, f: bytes) -> tuple[int, int]:
        rxcsum = self.regs["RXCSUM"]
        if not rxcsum & (d.RXCSUM_IPOFL | d.RXCSUM_TUOFL):
            return d.RXD_STAT_IXSM, 0
        is_ip, ip_ok, l4_ok = rx_checksums(f)
        if not is_ip:
            return d.RXD_STAT_IXSM, 0
        status = errors = 0
        if rxcsum & d.RXCSUM_IPOFL and ip_ok is not None:
            status |= d.RXD_STAT_IPCS
            if not ip_ok:
                errors |= d.RXD_ERR_IPE
        if rxcsum & d.RXCSUM_TUOFL and l4_ok is not None:
            status |= d.RXD_STAT_TCPCS
            if not l4_ok:
                errors |= d.RXD_ERR_TCPE
        return status, errors

    def _rx_filter(self, f: bytes, rctl: int) -> bool:
        """VLAN filter (VFTA when RCTL.VFE), then broadcast/multicast/unicast acceptance:
        BAM, MPE, UPE, the 16 exact addresses, the 4096-bit multicast hash (SDM 3.2.1)."""
        regs = self.regs
        if (f[12] << 8 | f[13]) == regs["VET"] & 0xFFFF and rctl & d.RCTL_VFE:
            vid = (f[14] << 8 | f[15]) & 0xFFF
            if not regs[_VFTA[vid >> 5]] >> (vid & 31) & 1:
                return False
        dst = f[:6]
        if dst == BROADCAST:
            if rctl & d.RCTL_BAM:
                return True
        elif dst[0] & 1:
            if rctl & d.RCTL_MPE:
                return True
        elif rctl & d.RCTL_UPE:
            return True
        lo = int.from_bytes(dst[:4], "little")
        hi = dst[4] | dst[5] << 8
        for i in range(d.NUM_RA):
            rah = regs[_RAH[i]]
            if rah & d.RAH_AV and not rah & 0x30000 and regs[_RAL[i]] == lo and rah & 0xFFFF == hi:
                return True
        bit = ((dst[5] << 8 | dst[4]) >> _MTA_SHIFT[(rctl >> d.RCTL_MO_SHIFT) & 3]) & 0xFFF
        return bool(regs[_MTA[bit >> 5]] >> (bit & 31) & 1)

    # ---- moderation ---------------------------------------------------------------------
    def _rx_interrupt(self) -> None:
        """RXT0 at once with RDTR 0 (already in the batch's causes); else after RDTR since the
        last frame (restarted by each) or RADV since the first, whichever comes first (SDM
        3.2.7)."""
        regs = self.regs
        rdtr = regs["RDTR"] & 0xFFFF
        if not rdtr:
            return
        self.timer("rdtr").arm_in(rdtr * 1024)
        radv = regs["RADV"] & 0xFFFF
        if radv and not self.timer("radv").armed:
            self.timer("radv").arm_in(radv * 1024)

    def _rx_delay_expired(self, now: int) -> None:
        self.timer("rdtr").cancel()
        self.timer("radv").cancel()
        self.raise_cause(d.ICR_RXT0)

    # ---- loopback -----------------------------------------------------------------------
    def loopback_mode(self) -> bool:
        return bool(self.regs["RCTL"] & d.RCTL_LBM_MASK or self.phy[d.MII_BMCR] & d.BMCR_LOOPBACK)

    def loopback_queue_frame(self, frame: bytes) -> None:
        if len(self.loop_queue) >= LOOPBACK_QUEUE_MAX:
            self.rx_missed()
            return
        self.loop_queue.append(frame)
        timer = self.timer("loopback")
        if timer is not None and not timer.armed:
            timer.arm_in(0)

    def _loopback_deliver(self, now: int) -> None:
        for _ in range(LOOPBACK_QUEUE_MAX):
            if not self.loop_queue:
                return
            if not self.receive(self.loop_queue[0]):
                return  # no descriptors: rx_space_changed re-arms the timer
            self.loop_queue.pop(0)
