"""Seeds from real boots: a `--trace` recording (SeaBIOS, iPXE) as the starting point of fuzz
inputs, so the fuzzer begins from device states a real guest reaches (PCI enumerated, BARs
programmed, the disk identified, the NIC's rings set up) and mutates from there.

A seed is the hypervisor->daemon ioreq stream of a trace: IOREQ messages, BUFIOREQ batches
(each posted write becomes a plain write) and CLOCK steps. Everything else (HELLO, MEM_ADD,
dm_op replies, the daemon's answers) is left out: the fuzz machine is built in-process.
`shrink_trace` keeps only those records, up to a number of ioreqs, and gzips them (a seed
file of a SeaBIOS boot is ~30 KiB that way); `load_seed` reads either kind of file.

A seeded input is that stream plus mutation bytes (random mode draws them from the input's
RNG; atheris mode would take them from libFuzzer). One byte is read per seed event: below
PASS_BELOW the event runs as recorded, otherwise the byte picks a mutation and further bytes
its parameters. An input that runs out of bytes replays the rest of the seed unchanged, so
the empty input is the recorded boot itself.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator

from devmodel.trace import MAGIC, RECORD, TO_DM, TraceRecord, read_records, read_trace
from devmodel.wire import codec
from devmodel.wire.constants import FLAG_NO_REPLY, MsgType

from .engine import _OPS, DIR, PCI_CONFIG, PIO, PTR, Reader, Session

MAX_SEED_EVENTS = 200_000  # a seed longer than this is cut (bounds the memory of a campaign)
PASS_BELOW = 240  # decision byte < this: the event runs as recorded
INSERT_MAX = 8  # random ops inserted at one point at most
SQUASH_POLLS = 8  # a read repeated more often than this in a row is a polling loop
CLOCK_GRAIN_NS = 100_000  # CLOCK steps shorter than this since the last kept one are merged
# Posted writes left out of seeds: the text the firmware prints (VGA text window, debug
# console ports). Tens of thousands of them in a boot, and nothing a fuzzer learns from.
CONSOLE_MMIO = (0xA0000, 0xC0000)
CONSOLE_PORTS = frozenset({0x402, 0xE9})


def _keep_posted(typ: int, addr: int) -> bool:
    if typ == 1:
        return not CONSOLE_MMIO[0] <= addr < CONSOLE_MMIO[1]
    return addr not in CONSOLE_PORTS
GZIP_MAGIC = b"\x1f\x8b"


def _records(path: str) -> Iterator[TraceRecord]:
    with open(path, "rb") as f:
        head = f.read(2)
    if head != GZIP_MAGIC:
        yield from read_trace(path)
        return
    with gzip.open(path, "rb") as f:
        yield from read_records(f, path)


def load_seed(path: str, max_events: int = MAX_SEED_EVENTS) -> list[tuple]:
    """The ioreq stream of a trace (plain or gzipped): ("io", type, addr, data, count, size,
    bits) and ("clock", absolute_ns) tuples, in order."""
    out: list[tuple] = []
    for rec in _records(path):
        if rec.direction != TO_DM or len(out) >= max_events:
            continue
        mtype = codec.HEADER.unpack_from(rec.message, 0)[0]
        payload = rec.message[codec.HEADER.size :]
        if mtype == MsgType.IOREQ:
            addr, data, count, size, _vp, _ep, bits, typ = codec.IOREQ.unpack_from(payload, 0)
            out.append(("io", typ, addr, data, count, size, bits & 0xF0))
        elif mtype == MsgType.BUFIOREQ:
            for b in codec.decode_bufioreq(payload):
                out.append(("io", b.type, b.addr, b.data, 1, b.size, 0))
        elif mtype == MsgType.CLOCK:
            out.append(("clock", codec.CLOCK.unpack_from(payload, 0)[0]))
    return out[:max_events]


def shrink_trace(src: str, dst: str, max_ioreqs: int | None = None,
                 squash: int = SQUASH_POLLS) -> int:
    """Write the seed part of trace `src` (IOREQ, BUFIOREQ, CLOCK; at most `max_ioreqs`
    IOREQ/BUFIOREQ messages) to `dst`, gzipped. Polling loops are squashed: a read repeated
    more than `squash` times in a row (iPXE reads the e1000 ICR ~130k times while it waits
    for DHCP) is kept `squash` times, and of the CLOCK messages between dropped ioreqs only
    the last (CLOCK carries absolute time). CLOCK steps under CLOCK_GRAIN_NS are merged
    into the next one, and posted console writes (_keep_posted) are left out. Returns the
    number of messages kept."""
    kept = 0
    ioreqs = 0
    last_key: tuple | None = None
    run = 0
    clock: bytes | None = None  # the newest CLOCK not yet written
    clock_at = 0  # time of the last CLOCK written
    # mtime 0: the same trace always gives the same bytes (seeds are checked in)
    with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9,
                                               mtime=0) as out:
        out.write(MAGIC)

        def put(msg: bytes) -> None:
            # times are dropped (0): the CLOCK payloads carry the virtual time that matters
            out.write(RECORD.pack(TO_DM, 0, 0, len(msg), 0))
            out.write(msg)

        for rec in _records(src):
            if rec.direction != TO_DM:
                continue
            mtype = codec.HEADER.unpack_from(rec.message, 0)[0]
            if mtype == MsgType.CLOCK:
                clock = rec.message
                continue
            if mtype not in (MsgType.IOREQ, MsgType.BUFIOREQ):
                continue
            msg = rec.message
            if mtype == MsgType.BUFIOREQ:
                items = [(b.type, b.addr, b.size, b.data)
                         for b in codec.decode_bufioreq(msg[codec.HEADER.size :])
                         if _keep_posted(b.type, b.addr)]
                if not items:
                    continue
                _t, flags, _l, tag, chan = codec.HEADER.unpack_from(msg, 0)
                msg = codec.frame(MsgType.BUFIOREQ, codec.encode_bufioreq(items), tag=tag,
                                  flags=flags, chan=chan)
            key = None
            if mtype == MsgType.IOREQ:
                addr, _d, _c, size, _v, _e, bits, typ = codec.IOREQ.unpack_from(
                    rec.message, codec.HEADER.size)
                if bits & DIR and not bits & PTR:
                    key = (typ, addr, size, bits)
            run = run + 1 if key is not None and key == last_key else 0
            last_key = key
            if run >= squash:
                continue
            if max_ioreqs is not None and ioreqs >= max_ioreqs:
                clock = None  # time after the cut belongs to what was cut
                break
            if clock is not None:
                now = codec.CLOCK.unpack_from(clock, codec.HEADER.size)[0]
                if now - clock_at >= CLOCK_GRAIN_NS:
                    put(clock)
                    kept += 1
                    clock_at = now
                    clock = None
            put(msg)
            ioreqs += 1
            kept += 1
        if clock is not None:  # the time the recording ended at
            put(clock)
            kept += 1
    return kept


def events_to_trace_records(events: list[tuple]) -> bytes:
    """The inverse of load_seed (uncompressed, no HELLO): for tests and hand-made seeds."""
    out = bytearray(MAGIC)
    for tag, ev in enumerate(events, 1):
        if ev[0] == "clock":
            msg = codec.frame(MsgType.CLOCK, codec.CLOCK.pack(ev[1]), tag=tag, flags=FLAG_NO_REPLY)
        else:
            _, typ, addr, data, count, size, bits = ev
            msg = codec.frame(MsgType.IOREQ, codec.IOREQ.pack(addr, data, count, size, 0, 0,
                                                              bits | 1, typ), tag=tag)
        out += RECORD.pack(TO_DM, 0, 0, len(msg), 0) + msg
    return bytes(out)


def _run_event(s: Session, ev: tuple) -> None:
    if ev[0] == "clock":
        if ev[1] > s.now:
            s.clock_step(ev[1] - s.now)
        return
    _, typ, addr, data, count, size, bits = ev
    s.io(typ, addr, data, count, size, bits)


def _mutate(s: Session, r: Reader, ev: tuple, k: int) -> None:
    """Decision byte k >= PASS_BELOW: what to do with this event instead of running it."""
    kind = k - PASS_BELOW
    if ev[0] == "clock" or kind >= 12:
        # insert random ops (the plain fuzzer's decoder, on the rest of the bytes), then the event
        for _ in range(1 + r.u8() % INSERT_MAX):
            _OPS[r.u8() % len(_OPS)](s, r)
            s.targets.refresh()
        _run_event(s, ev)
        return
    _, typ, addr, data, count, size, bits = ev
    if kind < 4:  # another value
        data = (data ^ r.uint(4)) if kind < 2 else r.uint(8)
    elif kind < 6:  # another width (the bus splits or counts what the device lacks)
        size = (1, 2, 4, 8)[r.u8() % 4]
    elif kind < 8:  # read <-> write
        bits ^= DIR
    elif kind < 9:  # a nearby address (next register, or one before)
        addr = (addr + (r.u8() % 16) - 8) & ((1 << 64) - 1)
    elif kind < 10:  # a string access, or a longer one
        count = 1 + r.uint(2) % 4096 // max(size, 1)
        if not bits & PTR:
            bits |= PTR
            data = s.ram_ptr(r, size)
    elif kind < 11:  # dropped
        return
    else:  # twice
        s.io(typ, addr, data, count, size, bits)
    if typ == PCI_CONFIG and not 0 < size <= 4:
        size = 4
    if typ == PIO:
        addr &= 0xFFFF
    s.io(typ, addr, data, count, size, bits)


def run_seed(s: Session, seed: list[tuple], data: bytes) -> None:
    """Run a seed's events on the session, mutated by `data` (see the module docstring)."""
    r = Reader(data)
    for ev in seed:
        k = r.u8()
        if k < PASS_BELOW:
            _run_event(s, ev)
        else:
            _mutate(s, r, ev, k)
            s.targets.refresh()


def mutation_bytes(rng: random.Random, n_events: int, rate: float) -> bytes:
    """Mutation bytes for a seed of n_events: about `rate` of the events mutated. Only the
    decision bytes are drawn per event; parameter bytes come from the same stream."""
    out = bytearray(rng.randbytes(n_events))
    mutate_at = rng.sample(range(n_events), min(n_events, max(1, int(n_events * rate))))
    for i in range(n_events):
        if out[i] >= PASS_BELOW:
            out[i] %= PASS_BELOW
    for i in mutate_at:
        out[i] = PASS_BELOW + rng.randrange(256 - PASS_BELOW)
    return bytes(out)

