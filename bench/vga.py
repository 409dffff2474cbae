"""VGA throughput (issue 5): VRAM writes through BUFIOREQ batches and through the shared linear
framebuffer, and full-frame render + PNG encode at 1024x768x32 beside a plain Pillow encode.

    .venv/bin/python bench/vga.py [--seconds 1.0] [--rounds 3] [--warmup 0.2] [--pin]

Through the real daemon (`python -m devmodel run`, a subprocess, over its socket; this process
plays Xen and the guest's vCPU, with bench/common.py's raw frames, as bench/ide.py):

- bufioreq_vbe_4b: 4-byte stores into the VBE bank window at 0xA0000 (bank 0, 64 KiB) as Xen
  posts them: batches of 511 slots (IOREQ_BUFFER_SLOT_NUM, the buffered ring) in BUFIOREQ
  messages, one INVALIDATE round trip (a barrier) per 64 KiB so the time counts the daemon
  applying them. The batches are encoded once, up front (Xen fills its ring in C).
- bufioreq_planar_1b: 1-byte stores in planar mode 12h, write mode 0 to all four planes (each
  store is a latch/bit-mask/map-mask update of 4 VRAM bytes), batched the same way.
- strict_vbe_4b: the same 4-byte stores as one synchronous ioreq round trip each: what a
  trapped store costs without posting.
- lfb_memfd: 1024x768x32 frames (3 MiB) written into this process's mapping of the VRAM memfd
  that the daemon shared with MEM_ADD when BAR0 was mapped, as the guest's stores into the
  linear framebuffer land in it on Xen (no ioreq, no daemon involvement).
- memcpy: the same frames copied into a private buffer: the memory-speed baseline.

In this process, on a StdVga with Bochs VBE 1024x768x32 showing a synthetic desktop:

- render_png: capture + render (devmodel.vga.render) + encode_png (devmodel.backends.display,
  zlib level 6), frames/s; render and encode_png alone too.
- pillow_png: Pillow's PNG encoder (compress_level 6, its default) on the same RGB frame,
  frames/s, measured in the same rounds (skipped, with a note, when Pillow is missing).

Rounds interleave the figures; medians are reported. One JSON object on stdout, a table on
stderr. Informative only: never assert on the timings (machine-limits.md).
"""

from __future__ import annotations

import io
import mmap
import os
import sys

from common import (
    Figures,
    Vcpu,
    arg_parser,
    emit,
    find_pci,
    measure,
    pin_both,
    print_figures,
    print_ratios,
    ratio,
    summarize_all,
)

from devmodel.backends.display import encode_png
from devmodel.client import DaemonProcess, Hypervisor
from devmodel.core.clock import Clock
from devmodel.core.machine import Machine
from devmodel.core.memory import GuestMemory
from devmodel.vga import build_vga, capture, render
from devmodel.vga import regs as R
from devmodel.wire import codec
from devmodel.wire.constants import (
    FLAG_NO_REPLY,
    IOREQ_TYPE_COPY,
    IOREQ_TYPE_INVALIDATE,
    MsgType,
)

RAM = 64 << 20
LFB = 0xE0000000
WINDOW = 0xA0000
BANK = 64 << 10
BUFFER_SLOTS = 511  # Xen's buffered ioreq ring (IOREQ_BUFFER_SLOT_NUM)
W, H, BPP = 1024, 768, 32
FRAME = W * H * BPP // 8
# Mode 12h (640x480x16, planar) as an IBM-compatible BIOS sets it: misc, SR1-4, GR, AR.
MODE12_SEQ = (0x03, 0x01, 0x0F, 0x00, 0x06)
MODE12_GFX = (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF)


def bufioreq_batches(writes: list[tuple[int, int, int]]) -> bytes:
    """(addr, size, value) stores as BUFIOREQ messages of at most BUFFER_SLOTS slots, framed."""
    out = bytearray()
    for i in range(0, len(writes), BUFFER_SLOTS):
        items = [(IOREQ_TYPE_COPY, a, s, v) for a, s, v in writes[i : i + BUFFER_SLOTS]]
        out += codec.frame(MsgType.BUFIOREQ, codec.encode_bufioreq(items), flags=FLAG_NO_REPLY)
    return bytes(out)


def desktop_frame(seed: int = 1) -> bytes:
    """A 1024x768 BGRX picture with what a desktop has: a gradient background, flat windows,
    title bars and lines of small 'text' (so PNG compresses it as it would a real screen)."""
    import random

    rnd = random.Random(seed)
    rows = [bytes((40 + y // 8, 60 + y // 12, 90 + y // 6, 0)) * W for y in range(H)]
    img = bytearray(b"".join(rows))
    for _ in range(6):  # windows
        x0, y0 = rnd.randrange(0, W - 400), rnd.randrange(0, H - 300)
        ww, wh = rnd.randrange(200, 400), rnd.randrange(150, 300)
        for y in range(y0, y0 + wh):
            colour = bytes((200, 120, 60, 0)) if y < y0 + 20 else bytes((240, 240, 240, 0))
            o = 4 * (y * W + x0)
            img[o : o + 4 * ww] = colour * ww
            if y0 + 28 <= y < y0 + wh - 8 and (y - y0) % 14 < 9:  # a line of glyph dots
                for x in range(x0 + 8, x0 + ww - 8, 3):
                    if rnd.random() < 0.35:
                        p = 4 * (y * W + x)
                        img[p : p + 4] = b"\x20\x20\x20\x00"
    return bytes(img)


def vbe_vga() -> tuple[object, bytes]:
    m = Machine(GuestMemory.fake(1 << 20), Clock(virtual=True), strict=True)
    vga = build_vga(m, 2, 16, rom_path=None, shared=False)
    for index, value in ((R.VBE_INDEX_XRES, W), (R.VBE_INDEX_YRES, H), (R.VBE_INDEX_BPP, BPP),
                         (R.VBE_INDEX_ENABLE, R.VBE_ENABLED | R.VBE_LFB_ENABLED)):
        m.handle_ioreq(0, 0x1CE, index, 1, 2, 0x01)
        m.handle_ioreq(0, 0x1CF, value, 1, 2, 0x01)
    picture = desktop_frame()
    vga.vram[0:FRAME] = picture
    return vga, picture


def main() -> int:
    args = arg_parser(__doc__, pin=True).parse_args()
    try:
        from PIL import Image
    except ImportError:
        Image = None  # noqa: N806

    figures = Figures()
    add = figures.add
    extra: dict[str, dict] = {}

    # ---- in-process: render + PNG at 1024x768x32 -------------------------------------------
    vga, picture = vbe_vga()
    frame = render(capture(vga))
    if (frame.width, frame.height, frame.mode) != (W, H, "vbe32"):
        raise RuntimeError(f"VBE frame is {frame.width}x{frame.height} {frame.mode}")
    want_rgb = bytearray(3 * W * H)
    want_rgb[0::3], want_rgb[1::3], want_rgb[2::3] = picture[2::4], picture[1::4], picture[0::4]
    if frame.rgb != want_rgb:
        raise RuntimeError("the rendered frame is not the picture in VRAM")
    png = encode_png(W, H, frame.rgb)
    extra["encode_png"] = {"png_bytes": len(png)}
    if Image is not None:
        if Image.open(io.BytesIO(png)).convert("RGB").tobytes() != frame.rgb:
            raise RuntimeError("Pillow does not decode our PNG to the frame")
        buf = io.BytesIO()
        Image.frombytes("RGB", (W, H), frame.rgb).save(buf, "PNG")
        extra["pillow_png"] = {"png_bytes": len(buf.getvalue())}

    def render_png(i: int) -> None:
        f = render(capture(vga, copy_vram=False))
        encode_png(f.width, f.height, f.rgb)

    def pillow_png(i: int) -> None:
        b = io.BytesIO()
        Image.frombytes("RGB", (W, H), frame.rgb).save(b, "PNG", compress_level=6)

    # ---- the daemon ---------------------------------------------------------------------------
    proc = DaemonProcess.start(["--memory", f"{RAM >> 20}M"])
    lfb_map = None
    try:
        if args.pin:
            pin_both(proc.pid)
        hv = Hypervisor.connect(proc.socket_path, nr_vcpus=1)
        hv.add_ram(RAM)
        hv.barrier()
        devfn = find_pci(hv, R.VENDOR_QEMU, R.DEVICE_STDVGA)
        hv.pci_program_bar(devfn, 0, LFB)
        hv.pci_enable(devfn, io=True, mem=True)
        region = hv.state.dm_regions.get(R.REGION_VRAM)
        if region is None or region[0] != LFB:
            raise RuntimeError(f"the daemon did not share VRAM at BAR0 (regions {hv.state.dm_regions})")
        _gpa, vram_size, _flags, vram_fd = region
        lfb_map = mmap.mmap(vram_fd, vram_size)
        lfb = memoryview(lfb_map)
        vcpu = Vcpu(hv)
        sock = vcpu.sock
        barrier = vcpu.frame(0, 1, False, typ=IOREQ_TYPE_INVALIDATE)

        def mmio(addr: int, size: int, read: bool, data: int = 0) -> bytearray:
            return vcpu.frame(addr, size, read, data, typ=IOREQ_TYPE_COPY)

        def vbe(index: int, value: int) -> None:
            vcpu.io(vcpu.frame(0x1CE, 2, False, index))
            vcpu.io(vcpu.frame(0x1CF, 2, False, value))

        def set_vbe() -> None:
            vbe(R.VBE_INDEX_ENABLE, 0)
            vbe(R.VBE_INDEX_XRES, W)
            vbe(R.VBE_INDEX_YRES, H)
            vbe(R.VBE_INDEX_BPP, BPP)
            vbe(R.VBE_INDEX_ENABLE, R.VBE_ENABLED | R.VBE_LFB_ENABLED | R.VBE_NOCLEARMEM)
            vbe(R.VBE_INDEX_BANK, 0)

        def set_mode12() -> None:
            vbe(R.VBE_INDEX_ENABLE, 0)
            vcpu.io(vcpu.frame(0x3C2, 1, False, 0xE3))
            for i, v in enumerate(MODE12_SEQ):
                vcpu.io(vcpu.frame(0x3C4, 1, False, i))
                vcpu.io(vcpu.frame(0x3C5, 1, False, v))
            for i, v in enumerate(MODE12_GFX):
                vcpu.io(vcpu.frame(0x3CE, 1, False, i))
                vcpu.io(vcpu.frame(0x3CF, 1, False, v))

        # One bank of 4-byte stores and 64 KiB of planar byte stores (values change per round
        # so a check can tell this round's data from the last one's).
        def vbe_stores(seed: int) -> tuple[bytes, bytes]:
            data = bytes((seed * 7 + i) & 0xFF for i in range(BANK))
            writes = [(WINDOW + o, 4, int.from_bytes(data[o : o + 4], "little")) for o in range(0, BANK, 4)]
            return bufioreq_batches(writes), data

        def planar_stores(seed: int) -> tuple[bytes, bytes]:
            data = bytes((seed * 13 + i * 5) & 0xFF for i in range(BANK))
            return bufioreq_batches([(WINDOW + o, 1, data[o]) for o in range(BANK)]), data

        vbe_msgs, vbe_data = vbe_stores(1)
        planar_msgs, planar_data = planar_stores(1)
        strict_frames = [mmio(WINDOW + o, 4, False, int.from_bytes(vbe_data[o : o + 4], "little"))
                         for o in range(0, BANK, 4)]
        extra["bufioreq_vbe_4b"] = {"slots_per_batch": BUFFER_SLOTS,
                                    "messages_per_64k": -(-(BANK // 4) // BUFFER_SLOTS)}
        extra["bufioreq_planar_1b"] = {"slots_per_batch": BUFFER_SLOTS,
                                       "messages_per_64k": -(-BANK // BUFFER_SLOTS)}

        def post(msgs: bytes) -> None:
            sock.sendall(msgs)
            vcpu.io(barrier)  # INVALIDATE: answered after everything before it was applied

        # correctness once: the posted stores are in VRAM (seen through the shared mapping)
        set_vbe()
        lfb[0:BANK] = bytes(BANK)
        post(vbe_msgs)
        if bytes(lfb[0:BANK]) != vbe_data:
            raise RuntimeError("BUFIOREQ stores to the VBE window did not reach VRAM")
        set_mode12()
        lfb[0 : 4 * BANK] = bytes(4 * BANK)
        post(planar_msgs)
        for p in range(4):  # write mode 0, map mask 0xF, bit mask 0xFF: each plane gets the byte
            if bytes(lfb[p : 4 * BANK : 4]) != planar_data:
                raise RuntimeError(f"planar stores did not reach plane {p}")
        # ... and a store into the mapping is what the daemon's window reads see
        set_vbe()
        lfb[0:4] = b"\x11\x22\x33\x44"
        got = vcpu.io(mmio(WINDOW, 4, True))
        if got != 0x44332211:
            raise RuntimeError(f"{got:#x}: the daemon does not see VRAM written through the shared mapping")
        pictures = [picture, bytes(reversed(picture))]
        private = memoryview(bytearray(FRAME))

        for _ in range(args.rounds):
            set_vbe()
            t, n = measure(lambda i: post(vbe_msgs), args.seconds, args.warmup)
            add("bufioreq_vbe_4b", n * BANK / t / 1e6)
            add("bufioreq_vbe_4b_stores", n * (BANK // 4) / t)

            def strict(i: int) -> None:
                for fr in strict_frames[:1024]:
                    vcpu.io(fr)

            t, n = measure(strict, args.seconds / 2, args.warmup / 2)
            add("strict_vbe_4b", n * 4096 / t / 1e6)
            add("strict_vbe_4b_stores", n * 1024 / t)
            set_mode12()
            t, n = measure(lambda i: post(planar_msgs), args.seconds, args.warmup)
            add("bufioreq_planar_1b", n * BANK / t / 1e6)

            def lfb_write(i: int) -> None:
                lfb[0:FRAME] = pictures[i & 1]

            def copy(i: int) -> None:
                private[0:FRAME] = pictures[i & 1]

            t, n = measure(lfb_write, args.seconds / 2, args.warmup / 2)
            add("lfb_memfd", n * FRAME / t / 1e9)
            t, n = measure(copy, args.seconds / 2, args.warmup / 2)
            add("memcpy", n * FRAME / t / 1e9)

            t, n = measure(lambda i: render(capture(vga, copy_vram=False)), args.seconds, args.warmup)
            add("render", n / t)
            t, n = measure(lambda i: encode_png(W, H, frame.rgb), args.seconds, args.warmup)
            add("encode_png", n / t)
            t, n = measure(render_png, args.seconds, args.warmup)
            add("render_png", n / t)
            if Image is not None:
                t, n = measure(pillow_png, args.seconds, args.warmup)
                add("pillow_png", n / t)
        if hv.state.errors:
            raise RuntimeError(f"the client recorded protocol errors: {hv.state.errors}")
        lfb.release()
        hv.ram = None  # views of the mappings are still alive: the process exit unmaps them
        hv.sock.close()
    finally:
        if lfb_map is not None:
            try:
                lfb_map.close()
            except BufferError:
                pass
        proc.stop()

    units = {"bufioreq_vbe_4b": "MB/s", "bufioreq_planar_1b": "MB/s", "strict_vbe_4b": "MB/s",
             "bufioreq_vbe_4b_stores": "stores/s", "strict_vbe_4b_stores": "stores/s",
             "lfb_memfd": "GB/s", "memcpy": "GB/s", "render": "frames/s", "encode_png": "frames/s",
             "render_png": "frames/s", "pillow_png": "frames/s"}
    out_fig = summarize_all(figures, units.__getitem__, extra)

    def vs(a: str, b: str) -> dict:
        if a not in out_fig or b not in out_fig:
            return {"value": None, "target": None, "met": None, "note": f"{b} not measured"}
        return ratio(out_fig, a, b)

    ratios = {
        "lfb_memfd_vs_memcpy": vs("lfb_memfd", "memcpy"),
        "bufioreq_vs_strict_vbe_4b": vs("bufioreq_vbe_4b", "strict_vbe_4b"),
        "render_png_vs_pillow_png": vs("render_png", "pillow_png"),
        "encode_png_vs_pillow_png": vs("encode_png", "pillow_png"),
    }
    result = {
        "config": {"seconds": args.seconds, "rounds": args.rounds, "pin": args.pin,
                   "frame": f"{W}x{H}x{BPP}",
                   "pillow": None if Image is None else __import__("PIL").__version__,
                   "pid": os.getpid(), "cpus": os.cpu_count()},
        "figures": out_fig,
        "ratios": ratios,
    }
    print_figures(out_fig, 26)
    print_ratios(ratios, 26, target=False)
    return emit(result)


if __name__ == "__main__":
    sys.exit(main())
