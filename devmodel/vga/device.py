"""The PCI standard VGA (QEMU `-device VGA`, 1234:1111): VGA registers, the legacy memory
window, Bochs VBE DISPI, and VRAM shared with the hypervisor as the linear framebuffer.

Behaviour follows QEMU's hw/display/vga.c and vga-pci.c, which SeaVGABIOS (vgabios-stdvga.bin)
and the Linux bochs-drm driver are written against:

- Ports 0x3B0-0x3DF: attribute controller (one port, an index/data flip-flop that a read of
  input status 1 resets), sequencer, graphics controller, CRTC (at 0x3B4/0x3B5 or 0x3D4/0x3D5
  as misc output bit 0 selects; the other set reads 0xFF and drops writes; CR11 bit 7 protects
  CR00-CR07 except CR07 bit 4), DAC (separate read and write indexes, 3 steps per entry,
  6-bit values unless VBE asked for an 8-bit DAC), misc output, input status 0/1.
- Input status 1 retrace bits come from the injected clock (a 70 Hz, 31.5 kHz timing), and each
  read moves the beam on a little (regs.POLL_SKEW_NS), so a BIOS polling with no time passing
  still sees every phase and its loop ends.
- VRAM layout as QEMU's: planar byte offset o of plane p is vram[4*o + p]; chain-4 and VBE
  address VRAM linearly; odd/even (text) puts even bytes in plane 0, odd ones in plane 1, and
  the font lives in plane 2.
- 0xA0000-0xBFFFF is always claimed (it is trapped, and Xen may post writes to it as BUFIOREQ);
  GR06 bits 3:2 decide inside it which addresses decode, as QEMU's vga_mem_readb does. Every
  access ends in one bounds check on the final VRAM offset (hostile-guest catalog 31).
- VBE DISPI at 0x1CE/0x1CF and in BAR2 at 0x500 + 2*index. Every geometry write is validated
  in one place (_vbe_fixup) so that (y_offset + yres) * line_length <= VRAM and
  x_offset + xres <= virt_width (catalog 30). While VBE is enabled the display and the window
  take their geometry from the VBE registers only; VGA register writes cannot change it
  (catalog 32, QEMU's sr_vbe/cr_vbe fix does the same).
- VRAM is shared memory when the builder gives an fd and the machine can share regions
  (`machine.share_region`/`unshare_region`, proposed): BAR0 is then *not* claimed as MMIO; the
  hypervisor maps the memfd at BAR0's address (MEM_ADD, flags RAM|VRAM) and is told again
  whenever the BAR moves or stops decoding. Without that, BAR0 is an ordinary trapped BAR.
"""

from __future__ import annotations

import zlib
from typing import Any

from devmodel.bios.firmware import SharedRegion
from devmodel.core.bus import ALL_SIZES, Range
from devmodel.core.device import SnapshotError
from devmodel.core.pci import BAR0, BAR_MEM_PREFETCH, Bar, PciDevice
from devmodel.wire.constants import MEM_RAM, MEM_VRAM

from . import regs as R

# MASK16[n]: the 4-bit plane set n expanded to a byte mask per plane (QEMU mask16).
MASK16 = tuple(sum(0xFF << (8 * p) for p in range(4) if n >> p & 1) for n in range(16))
ONES32 = 0xFFFFFFFF


class StdVga(PciDevice):
    SNAPSHOT_FIELDS = PciDevice.SNAPSHOT_FIELDS + (
        "misc", "fcr", "vss", "sr_index", "sr", "gr_index", "gr", "ar_index", "ar",
        "ar_flip_flop", "cr_index", "cr", "pel_mask", "dac_state", "dac_sub_index",
        "dac_read_index", "dac_write_index", "dac_cache", "palette", "dac_8bit", "latch",
        "vbe_index", "vbe_regs", "poll_skew", "qext_byteorder",
    )

    def __init__(self, vram: Any, *, vram_fd: int | None = None, rom: bytes | None = None,
                 name: str = "vga", qext: bool = True) -> None:
        size = len(vram)
        if size & (size - 1) or not R.VRAM_MIN_MB << 20 <= size <= R.VRAM_MAX_MB << 20:
            raise ValueError(f"VRAM of {size:#x} bytes: must be a power of two, "
                             f"{R.VRAM_MIN_MB}-{R.VRAM_MAX_MB} MiB")
        # QEMU sets revision 2 when the qext registers are there (vga-pci.c).
        super().__init__(name, vendor_id=R.VENDOR_QEMU, device_id=R.DEVICE_STDVGA,
                         class_code=R.CLASS_VGA, revision=2 if qext else 0)
        self.vram = vram  # bytearray, or the mmap of the shared memfd (never resized)
        self.vram_size = size
        self.vram_fd = vram_fd
        self.qext = qext
        self.vram_bar = self.add_bar(Bar(0, size, False, self._lfb_read, self._lfb_write,
                                         "vram", prefetch=True, sizes=ALL_SIZES))
        self.add_bar(Bar(2, R.MMIO_SIZE, False, self._mmio_read, self._mmio_write, "mmio",
                         sizes=frozenset({1, 2, 4})))
        if rom:
            self.set_rom(rom)
        self.shared = False  # decided at attach: the machine can share regions, we have an fd
        # Set at build time by a display backend (devmodel.backends.screen) that keeps the
        # latest frame: an object with current() -> Frame. None: screendump renders itself.
        self.renderer: Any = None
        self._told_gpa: int | None = None  # where the hypervisor maps VRAM now
        self.vbe_bank_mask = (size >> 16) - 1
        self._init_state()

    def _init_state(self) -> None:
        self.misc = 0
        self.fcr = 0
        self.vss = 0
        self.sr_index = 0
        self.sr = bytearray(8)
        self.gr_index = 0
        self.gr = bytearray(16)
        self.ar_index = 0
        self.ar = bytearray(R.AR_COUNT)
        self.ar_flip_flop = 0
        self.cr_index = 0
        self.cr = bytearray(256)
        self.pel_mask = 0xFF
        self.dac_state = 0
        self.dac_sub_index = 0
        self.dac_read_index = 0
        self.dac_write_index = 0
        self.dac_cache = bytearray(3)
        self.palette = bytearray(768)
        self.dac_8bit = 0
        self.latch = 0
        self.vbe_index = 0
        self.vbe_regs = [0] * R.VBE_NB_REGS
        self.vbe_regs[R.VBE_INDEX_ID] = R.VBE_ID5
        self.poll_skew = 0
        self.qext_byteorder = R.QEXT_LITTLE_ENDIAN
        # derived from vbe_regs by _vbe_fixup
        self.bank_offset = 0
        self.vbe_line_offset = 0
        self.vbe_start_addr = 0

    # ---- wiring -------------------------------------------------------------------------
    def attach(self, ctx) -> None:
        super().attach(ctx)
        machine = ctx.machine
        if (self.vram_fd is not None and callable(getattr(machine, "share_region", None))
                and callable(getattr(machine, "unshare_region", None))):
            # BAR0 stays in config space (sizing, address) but leaves the PCI bus's list,
            # so it is never claimed as MMIO: the hypervisor maps the memory itself.
            self.shared = True
            self.bars[0] = None

    def pio_ranges(self) -> list[Range]:
        return [
            Range(R.PORT_BASE, R.PORT_COUNT, self._port_read, self._port_write, f"{self.name}.io",
                  self, frozenset({1})),
            Range(R.VBE_PORT_INDEX, R.VBE_PORT_COUNT, self._vbe_port_read, self._vbe_port_write,
                  f"{self.name}.vbe", self, frozenset({1, 2})),
        ]

    def mmio_ranges(self) -> list[Range]:
        return [Range(R.WINDOW_BASE, R.WINDOW_SIZE, self._window_read, self._window_write,
                      f"{self.name}.window", self, ALL_SIZES, write_fill=self._window_fill,
                      write_rep=self._window_block)]

    def reset(self) -> None:
        super().reset()
        if self.shared:  # BAR0 is not in self.bars: put its type bits back ourselves
            self.config[BAR0 : BAR0 + 4] = BAR_MEM_PREFETCH.to_bytes(4, "little")
        self._init_state()
        self._sync_vram()

    # ---- VRAM sharing (docs/protocol.md 4.7 and the proposed 4.7.1) ---------------------
    def vram_region(self, gpa: int) -> SharedRegion:
        assert self.vram_fd is not None
        return SharedRegion(R.REGION_VRAM, gpa, self.vram_size, self.vram_fd, MEM_RAM | MEM_VRAM)

    def shared_regions(self) -> list[SharedRegion]:
        """What the daemon announces right after HELLO: VRAM if BAR0 already decodes (after a
        restore); normally nothing yet, and the region follows once the guest maps BAR0."""
        rom = super().shared_regions()  # the shared ROM BAR, if it decodes
        if not self.shared:
            return rom
        gpa = self.bar_address(self.vram_bar)
        self._told_gpa = gpa
        return rom if gpa is None else [*rom, self.vram_region(gpa)]

    def config_written(self, off: int, size: int, value: int) -> None:
        if off < 0x06 and off + size > 0x04 or off < BAR0 + 4 and off + size > BAR0:
            self._sync_vram()

    def _sync_vram(self) -> None:
        """Tell the hypervisor where VRAM is mapped now: MEM_ADD at the new address (the same
        region id replaces the old mapping) or its removal when BAR0 stops decoding."""
        if not self.shared or self.ctx is None:
            return
        machine = self.ctx.machine
        gpa = self.bar_address(self.vram_bar)
        if not machine.announcing:
            return  # the HELLO exchange sends shared_regions() as it is then
        if gpa == self._told_gpa:
            return
        if gpa is None:
            machine.unshare_region(R.REGION_VRAM)
        else:
            machine.share_region(self.vram_region(gpa))
        self._told_gpa = gpa
        self.counters["vram_moves"] += 1

    # ---- legacy ports -------------------------------------------------------------------
    def _port_read(self, off: int, size: int) -> int:
        return self.ioport_read(R.PORT_BASE + off)

    def _port_write(self, off: int, size: int, value: int) -> None:
        self.ioport_write(R.PORT_BASE + off, value & 0xFF)

    def _port_invalid(self, port: int) -> bool:
        if self.misc & R.MIS_COLOR:
            return 0x3B0 <= port <= 0x3BF
        return 0x3D0 <= port <= 0x3DF

    def ioport_read(self, port: int) -> int:
        if self._port_invalid(port):
            return 0xFF
        if port == R.ATT_W:
            return self.ar_index
        if port == R.ATT_R:
            idx = self.ar_index & 0x1F
            return self.ar[idx] if idx < R.AR_COUNT else 0
        if port == R.MIS_W:
            return 0  # input status 0: no switch sense, no CRT interrupt
        if port == R.VSE:
            return self.vss
        if port == R.SEQ_I:
            return self.sr_index
        if port == R.SEQ_D:
            return self.sr[self.sr_index]
        if port == R.PEL_MSK:
            return self.pel_mask
        if port == R.PEL_IR:
            return self.dac_state
        if port == R.PEL_IW:
            return self.dac_write_index
        if port == R.PEL_D:
            v = self.palette[self.dac_read_index * 3 + self.dac_sub_index]
            self.dac_sub_index += 1
            if self.dac_sub_index == 3:
                self.dac_sub_index = 0
                self.dac_read_index = (self.dac_read_index + 1) & 0xFF
            return v
        if port == R.FTC_R:
            return self.fcr
        if port == R.MIS_R:
            return self.misc
        if port == R.GFX_I:
            return self.gr_index
        if port == R.GFX_D:
            return self.gr[self.gr_index]
        if port in (R.CRT_IM, R.CRT_IC):
            return self.cr_index
        if port in (R.CRT_DM, R.CRT_DC):
            return self.cr[self.cr_index]
        if port in (R.IS1_RM, R.IS1_RC):
            self.ar_flip_flop = 0
            return self.input_status1()
        return 0

    def ioport_write(self, port: int, val: int) -> None:
        if self._port_invalid(port):
            return
        if port == R.ATT_W:
            if self.ar_flip_flop == 0:
                self.ar_index = val & 0x3F
            else:
                idx = self.ar_index & 0x1F
                if idx < R.AR_COUNT:
                    self.ar[idx] = val & R.AR_MASK[idx]
            self.ar_flip_flop ^= 1
        elif port == R.MIS_W:
            self.misc = val & ~0x10 & 0xFF
        elif port == R.VSE:
            self.vss = val & 1
        elif port == R.SEQ_I:
            self.sr_index = val & 7
        elif port == R.SEQ_D:
            self.sr[self.sr_index] = val & R.SR_MASK[self.sr_index]
        elif port == R.PEL_MSK:
            self.pel_mask = val
        elif port == R.PEL_IR:
            self.dac_read_index = val
            self.dac_sub_index = 0
            self.dac_state = 3
        elif port == R.PEL_IW:
            self.dac_write_index = val
            self.dac_sub_index = 0
            self.dac_state = 0
        elif port == R.PEL_D:
            self.dac_cache[self.dac_sub_index] = val if self.dac_8bit else val & 0x3F
            self.dac_sub_index += 1
            if self.dac_sub_index == 3:
                i = self.dac_write_index * 3
                self.palette[i : i + 3] = self.dac_cache
                self.dac_sub_index = 0
                self.dac_write_index = (self.dac_write_index + 1) & 0xFF
        elif port == R.GFX_I:
            self.gr_index = val & 0x0F
        elif port == R.GFX_D:
            self.gr[self.gr_index] = val & R.GR_MASK[self.gr_index]
        elif port in (R.CRT_IM, R.CRT_IC):
            self.cr_index = val
        elif port in (R.CRT_DM, R.CRT_DC):
            idx = self.cr_index
            if self.cr[R.CR_VSYNC_END] & R.CR11_PROTECT and idx <= R.CR_OVERFLOW:
                # CR00-CR07 are write-protected; only the line compare bit 8 in CR07 passes.
                if idx == R.CR_OVERFLOW:
                    self.cr[idx] = (self.cr[idx] & ~0x10) | (val & 0x10)
                return
            self.cr[idx] = val
        elif port in (R.IS1_RM, R.IS1_RC):
            self.fcr = val & 0x10

    def input_status1(self) -> int:
        """Display-enable (bit 0, set in blanking) and vertical retrace (bit 3) from the beam
        position at the injected time plus the poll skew; each read moves the beam on."""
        now = self.ctx.clock.now() if self.ctx is not None else 0
        t = now + self.poll_skew
        self.poll_skew = (self.poll_skew + R.POLL_SKEW_NS) % R.FRAME_NS
        line, in_line = divmod(t % R.FRAME_NS, R.LINE_NS)
        v = 0
        if line >= R.ACTIVE_LINES or in_line >= R.HACTIVE_NS:
            v |= R.ST01_DISP_ENABLE
        if R.VRETRACE_FIRST_LINE <= line < R.VRETRACE_FIRST_LINE + R.VRETRACE_LINES:
            v |= R.ST01_V_RETRACE
        return v

    # ---- the legacy window 0xA0000-0xBFFFF ---------------------------------------------
    def _window_read(self, off: int, size: int) -> int:
        if size == 1:
            return self.mem_readb(off)
        a = self._linear_span(off, size)
        if a >= 0:
            return int.from_bytes(self.vram[a : a + size], "little")
        v = 0
        for i in range(size):
            v |= self.mem_readb(off + i) << (8 * i)
        return v

    def _window_write(self, off: int, size: int, value: int) -> None:
        if size == 1:
            self.mem_writeb(off, value & 0xFF)
            return
        a = self._linear_span(off, size)
        if a >= 0:
            self.vram[a : a + size] = value.to_bytes(size, "little")
            return
        if size == 2 and self._odd_even_word(off, value):
            return
        for i in range(size):
            self.mem_writeb(off + i, (value >> (8 * i)) & 0xFF)

    def _window_fill(self, off: int, size: int, count: int, value: int) -> None:
        """A forward REP STOS into the window: what `count` _window_write calls at off,
        off + size, ... do. The VGA BIOS's text clear (REP STOSW of 16k words in odd/even
        mode) is done with one strided slice store per written plane; anything else goes
        element by element."""
        if size == 2 and count > 1 and self._odd_even_fill(off, count, value):
            return
        write = self._window_write
        for i in range(count):
            write(off + i * size, size, value)

    def _window_block(self, off: int, size: int, data: bytes | memoryview) -> None:
        """A forward REP MOVS from RAM into the window: what _window_write of each `size`-byte
        element of `data` at off, off + size, ... does. Two cases are one slice store: a
        linear window (VBE banked, or chain-4 with all planes writable) and the planar store
        that leaves every plane bit to the CPU byte (write mode 0, no rotation, set/reset or
        logic op, bit mask 0xFF: the VGA BIOS loading a font into plane 2, one REP MOVSB per
        glyph); each enabled plane then takes the bytes at a stride of 4. The rest goes
        element by element."""
        n = len(data)
        if n == 0:
            return
        a = self._linear_span(off, n)
        if a >= 0:
            self.vram[a : a + n] = data
            return
        if self._planar_copy(off, data):
            return
        view = memoryview(data)
        write = self._window_write
        for i in range(0, n - n % size, size):
            write(off + i, size, int.from_bytes(view[i : i + size], "little"))

    def _planar_copy(self, off: int, data: bytes | memoryview) -> bool:
        gr, sr = self.gr, self.sr
        if (self.vbe_enabled() or sr[R.SR_MEMMODE] & R.SR04_CHAIN4
                or not sr[R.SR_MEMMODE] & 0x04  # odd/even
                or gr[R.GR_MODE] & 3 or gr[R.GR_DATA_ROTATE] or gr[R.GR_SR_ENABLE] & 0x0F
                or gr[R.GR_BIT_MASK] != 0xFF):
            return False
        n = len(data)
        a = self._legacy_window_offset(off)
        if a < 0 or self._legacy_window_offset(off + n - 1) != a + n - 1:
            return False
        base, end = a << 2, (a + n) << 2
        if end > self.vram_size:
            return False
        planes = sr[R.SR_MAP_MASK] & 0x0F
        vram = self.vram
        for p in range(4):
            if planes >> p & 1:
                vram[base + p : end : 4] = data
        return True

    def _odd_even_base(self, off: int, count: int) -> int:
        """The VRAM offset of the first of `count` words at off, off + 2, ... stored in
        odd/even mode, when every one of them can be (_linear_span is -1 for all: not VBE,
        not chain-4; `off` is even; the window decodes the whole span contiguously, the
        decoded part being one interval mapped linearly; the last word's dword is inside
        VRAM), else -1: the bytes go one at a time (mem_writeb counts what is outside)."""
        memmode = self.sr[R.SR_MEMMODE]
        if off & 1 or memmode & (R.SR04_CHAIN4 | 0x04) or self.vbe_enabled():
            return -1
        a = self._legacy_window_offset(off)  # not VBE (tested above)
        nbytes = 2 * count
        if a < 0 or self._legacy_window_offset(off + nbytes - 1) != a + nbytes - 1:
            return -1
        base = a << 1
        return base if base + 4 * count <= self.vram_size else -1

    def _odd_even_fill(self, off: int, count: int, value: int) -> bool:
        """`count` words of _odd_even_word at off, off + 2, ... at once, when every one of
        them takes that path (_odd_even_base). False: not this case, nothing written."""
        base = self._odd_even_base(off, count)
        if base < 0:
            return False
        end = base + 4 * count
        planes = self.sr[R.SR_MAP_MASK]
        vram = self.vram
        lo, hi = bytes((value & 0xFF,)) * count, bytes((value >> 8 & 0xFF,)) * count
        if planes & 1:
            vram[base:end:4] = lo
        if planes & 2:
            vram[base + 1 : end : 4] = hi
        if planes & 4:
            vram[base + 2 : end : 4] = lo
        if planes & 8:
            vram[base + 3 : end : 4] = hi
        return True

    def _odd_even_word(self, off: int, value: int) -> bool:
        """A 16-bit store at an even address in odd/even mode (text: character and attribute)
        done at once: the low byte to planes 0/2 and the high byte to planes 1/3 of the same
        VRAM dword, under the map mask, exactly as the two mem_writeb calls would store them.
        (The VGA BIOS's REP STOSW text clear is _odd_even_fill.) False: not this case, the
        bytes go one at a time."""
        base = self._odd_even_base(off, 1)
        if base < 0:
            return False
        planes = self.sr[R.SR_MAP_MASK]
        vram = self.vram
        lo, hi = value & 0xFF, value >> 8 & 0xFF
        if planes & 1:
            vram[base] = lo
        if planes & 2:
            vram[base + 1] = hi
        if planes & 4:
            vram[base + 2] = lo
        if planes & 8:
            vram[base + 3] = hi
        return True

    def _linear_span(self, off: int, size: int) -> int:
        """The VRAM offset of a multi-byte window access that is one plain copy (VBE banked,
        or chain-4 with all four planes writable), else -1: the bytes go one at a time. The
        posted 2/4/8-byte stores of a VBE or mode 13h frame buffer are then one slice each
        instead of 2-8 trips through mem_writeb."""
        if self.vbe_enabled():
            if off + size > 0x10000:
                return -1
            a = off + self.bank_offset
        elif self.sr[R.SR_MEMMODE] & R.SR04_CHAIN4 and self.sr[R.SR_MAP_MASK] & 0x0F == 0x0F:
            a = self._window_offset(off)
            if a < 0 or self._window_offset(off + size - 1) != a + size - 1:
                return -1  # (partly) outside the decoded part of the window
        else:
            return -1
        return a if a + size <= self.vram_size else -1

    def vbe_enabled(self) -> bool:
        return bool(self.vbe_regs[R.VBE_INDEX_ENABLE] & R.VBE_ENABLED)

    def _window_offset(self, addr: int) -> int:
        """The window offset after GR06 memory map select (and the VBE bank), or -1 when the
        address does not decode."""
        if self.vbe_enabled():  # VBE: A0000-AFFFF, banked, linear
            return addr + self.bank_offset if addr < 0x10000 else -1
        return self._legacy_window_offset(addr)

    def _legacy_window_offset(self, addr: int) -> int:
        """_window_offset with VBE off (GR06 memory map select alone): for callers that have
        tested vbe_enabled already (_odd_even_base, once per odd/even word store or fill)."""
        mode = (self.gr[R.GR_MISC] >> 2) & 3
        if mode == 0:
            return addr
        if mode == 1:
            return addr + self.bank_offset if addr < 0x10000 else -1
        addr -= 0x10000 if mode == 2 else 0x18000
        return addr if 0 <= addr < 0x8000 else -1

    def _oob(self, what: str) -> None:
        self.guest_error(f"{what} past VRAM")

    def mem_readb(self, addr: int) -> int:
        a = self._window_offset(addr)
        if a < 0:
            return 0xFF
        vram = self.vram
        if self.vbe_enabled() or self.sr[R.SR_MEMMODE] & R.SR04_CHAIN4:
            if a >= self.vram_size:
                self._oob("window read")
                return 0xFF
            return vram[a]
        gr = self.gr
        if gr[R.GR_MODE] & R.GR05_ODD_EVEN:
            plane = (gr[R.GR_PLANE_READ] & 2) | (a & 1)
            a = ((a & ~1) << 1) | plane
            if a >= self.vram_size:
                self._oob("window read")
                return 0xFF
            return vram[a]
        base = a << 2
        if base + 4 > self.vram_size:
            self._oob("window read")
            return 0xFF
        latch = self.latch = int.from_bytes(vram[base : base + 4], "little")
        if not gr[R.GR_MODE] & R.GR05_READ_MODE1:
            return (latch >> (8 * (gr[R.GR_PLANE_READ] & 3))) & 0xFF
        # read mode 1: colour compare against GR02 on the planes GR07 cares about
        ret = (latch ^ MASK16[gr[R.GR_COMPARE]]) & MASK16[gr[R.GR_COMPARE_MASK]]
        ret |= ret >> 16
        ret |= ret >> 8
        return ~ret & 0xFF

    def mem_writeb(self, addr: int, val: int) -> None:
        a = self._window_offset(addr)
        if a < 0:
            return
        vram = self.vram
        if self.vbe_enabled():
            if a >= self.vram_size:
                self._oob("window write")
                return
            vram[a] = val
            return
        sr = self.sr
        if sr[R.SR_MEMMODE] & R.SR04_CHAIN4:
            if sr[R.SR_MAP_MASK] & (1 << (a & 3)):
                if a >= self.vram_size:
                    self._oob("window write")
                    return
                vram[a] = val
            return
        if not sr[R.SR_MEMMODE] & 0x04:
            # odd/even: even addresses reach planes 0 and 2, odd ones planes 1 and 3
            planes = sr[R.SR_MAP_MASK] & (0x0A if a & 1 else 0x05)
            base = (a & ~1) << 1
            if base + 4 > self.vram_size:
                self._oob("window write")
                return
            for p in range(4):
                if planes >> p & 1:
                    vram[base + p] = val
            return
        self._planar_write(a, val)

    def _planar_write(self, a: int, val: int) -> None:
        gr = self.gr
        base = a << 2
        if base + 4 > self.vram_size:
            self._oob("window write")
            return
        latch = self.latch
        mode = gr[R.GR_MODE] & 3
        if mode == 1:
            v = latch
        else:
            rot = gr[R.GR_DATA_ROTATE] & 7
            if mode == 0:
                b = ((val >> rot) | (val << (8 - rot))) & 0xFF
                v = b * 0x01010101
                set_mask = MASK16[gr[R.GR_SR_ENABLE]]
                v = (v & ~set_mask & ONES32) | (MASK16[gr[R.GR_SR_VALUE]] & set_mask)
                bit_mask = gr[R.GR_BIT_MASK]
            elif mode == 2:
                v = MASK16[val & 0x0F]
                bit_mask = gr[R.GR_BIT_MASK]
            else:
                b = ((val >> rot) | (val << (8 - rot))) & 0xFF
                bit_mask = gr[R.GR_BIT_MASK] & b
                v = MASK16[gr[R.GR_SR_VALUE]]
            func = (gr[R.GR_DATA_ROTATE] >> 3) & 3
            if func == 1:
                v &= latch
            elif func == 2:
                v |= latch
            elif func == 3:
                v ^= latch
            bm = bit_mask * 0x01010101
            v = (v & bm) | (latch & ~bm & ONES32)
        wm = MASK16[self.sr[R.SR_MAP_MASK] & 0x0F]
        old = int.from_bytes(self.vram[base : base + 4], "little")
        self.vram[base : base + 4] = ((old & ~wm & ONES32) | (v & wm)).to_bytes(4, "little")

    # ---- BAR0 when it is trapped (no shared memory) -------------------------------------
    def _lfb_read(self, off: int, size: int) -> int:
        return int.from_bytes(self.vram[off : off + size], "little")

    def _lfb_write(self, off: int, size: int, value: int) -> None:
        self.vram[off : off + size] = value.to_bytes(size, "little")

    # ---- Bochs VBE DISPI ----------------------------------------------------------------
    def _vbe_port_read(self, off: int, size: int) -> int:
        v = self.vbe_index if off == 0 else self.vbe_read()
        return v & (0xFF if size == 1 else 0xFFFF)

    def _vbe_port_write(self, off: int, size: int, value: int) -> None:
        if off == 0:
            self.vbe_index = value & 0xFFFF
        else:
            self.vbe_write(value & 0xFFFF)

    def vbe_read(self) -> int:
        i = self.vbe_index
        r = self.vbe_regs
        if i < R.VBE_NB_REGS:
            if r[R.VBE_INDEX_ENABLE] & R.VBE_GETCAPS:
                caps = {R.VBE_INDEX_XRES: R.VBE_MAX_XRES, R.VBE_INDEX_YRES: R.VBE_MAX_YRES,
                        R.VBE_INDEX_BPP: R.VBE_MAX_BPP}
                if i in caps:
                    return caps[i]
            return r[i]
        if i == R.VBE_INDEX_VIDEO_MEMORY_64K:
            return self.vram_size >> 16
        return 0

    def vbe_write(self, val: int) -> None:
        i = self.vbe_index
        r = self.vbe_regs
        if i == R.VBE_INDEX_ID:
            if R.VBE_ID0 <= val <= R.VBE_ID5:
                r[i] = val
        elif i in (R.VBE_INDEX_XRES, R.VBE_INDEX_YRES, R.VBE_INDEX_BPP, R.VBE_INDEX_VIRT_WIDTH,
                   R.VBE_INDEX_VIRT_HEIGHT, R.VBE_INDEX_X_OFFSET, R.VBE_INDEX_Y_OFFSET):
            if i == R.VBE_INDEX_BPP and val == 0:
                val = 8
            r[i] = val
            self._vbe_fixup()
        elif i == R.VBE_INDEX_BANK:
            r[i] = val & self.vbe_bank_mask
            self.bank_offset = r[i] << 16
        elif i == R.VBE_INDEX_ENABLE:
            if val & R.VBE_ENABLED and not r[i] & R.VBE_ENABLED:
                r[R.VBE_INDEX_VIRT_WIDTH] = r[R.VBE_INDEX_XRES]
                r[R.VBE_INDEX_VIRT_HEIGHT] = r[R.VBE_INDEX_YRES]
                r[R.VBE_INDEX_X_OFFSET] = 0
                r[R.VBE_INDEX_Y_OFFSET] = 0
                r[i] |= R.VBE_ENABLED
                self._vbe_fixup()
                if not val & R.VBE_NOCLEARMEM:
                    n = min(r[R.VBE_INDEX_YRES] * self.vbe_line_offset, self.vram_size)
                    self.vram[0:n] = bytes(n)
            elif not val & R.VBE_ENABLED:
                self.bank_offset = 0
            self.dac_8bit = 1 if val & R.VBE_8BIT_DAC else 0
            r[i] = val
            self._vbe_fixup()
        else:
            self.guest_error(f"VBE write to index {i:#x}")

    def _vbe_fixup(self) -> None:
        """Validate the VBE geometry, the single source the display and window use: clamp so
        that x_offset + xres <= virt_width and (y_offset + yres) * line_length <= VRAM."""
        r = self.vbe_regs
        if not r[R.VBE_INDEX_ENABLE] & R.VBE_ENABLED:
            self.vbe_line_offset = 0
            self.vbe_start_addr = 0
            return
        if r[R.VBE_INDEX_BPP] not in R.VBE_BPPS:
            r[R.VBE_INDEX_BPP] = 8
        bytespp = (r[R.VBE_INDEX_BPP] + 7) // 8
        xres = min(max(r[R.VBE_INDEX_XRES] & ~7, 8), R.VBE_MAX_XRES)
        vw = min(max(r[R.VBE_INDEX_VIRT_WIDTH] & ~7, xres), R.VBE_MAX_XRES)
        if vw * bytespp > self.vram_size:  # only with a tiny VRAM; keep one line in VRAM
            vw = (self.vram_size // bytespp) & ~7
            xres = min(xres, vw)
        line = vw * bytespp
        maxy = self.vram_size // line
        yres = min(max(r[R.VBE_INDEX_YRES], 1), R.VBE_MAX_YRES, maxy)
        vh = min(max(r[R.VBE_INDEX_VIRT_HEIGHT], yres), maxy)
        xo = min(r[R.VBE_INDEX_X_OFFSET], vw - xres)
        yo = min(r[R.VBE_INDEX_Y_OFFSET], maxy - yres)
        r[R.VBE_INDEX_XRES], r[R.VBE_INDEX_YRES] = xres, yres
        r[R.VBE_INDEX_VIRT_WIDTH], r[R.VBE_INDEX_VIRT_HEIGHT] = vw, vh
        r[R.VBE_INDEX_X_OFFSET], r[R.VBE_INDEX_Y_OFFSET] = xo, yo
        self.vbe_line_offset = line
        self.vbe_start_addr = xo * bytespp + yo * line

    # ---- BAR2: VGA ports, DISPI registers, qext -----------------------------------------
    def _mmio_read(self, off: int, size: int) -> int:
        if R.MMIO_VGA_BASE <= off < R.MMIO_VGA_BASE + R.MMIO_VGA_SIZE:
            port = off - R.MMIO_VGA_BASE + R.ATT_W
            v = 0
            for i in range(min(size, 2)):  # QEMU impl: 1-2 bytes
                v |= self.ioport_read(port + i) << (8 * i)
            return v
        if R.MMIO_BOCHS_BASE <= off < R.MMIO_BOCHS_BASE + R.MMIO_BOCHS_SIZE:
            rel = off - R.MMIO_BOCHS_BASE
            self.vbe_index = rel >> 1
            v = self.vbe_read()
            return (v >> 8 * (rel & 1)) & (0xFF if size == 1 else 0xFFFF)
        if self.qext and R.MMIO_QEXT_BASE <= off < R.MMIO_QEXT_BASE + R.QEXT_SIZE:
            rel = off - R.MMIO_QEXT_BASE
            word = R.QEXT_SIZE if rel < 4 else self.qext_byteorder
            return (word >> (8 * (rel & 3))) & ((1 << (8 * size)) - 1)
        return (1 << (8 * size)) - 1

    def _mmio_write(self, off: int, size: int, value: int) -> None:
        if R.MMIO_VGA_BASE <= off < R.MMIO_VGA_BASE + R.MMIO_VGA_SIZE:
            port = off - R.MMIO_VGA_BASE + R.ATT_W
            for i in range(min(size, 2)):
                self.ioport_write(port + i, (value >> (8 * i)) & 0xFF)
        elif R.MMIO_BOCHS_BASE <= off < R.MMIO_BOCHS_BASE + R.MMIO_BOCHS_SIZE:
            rel = off - R.MMIO_BOCHS_BASE
            self.vbe_index = rel >> 1
            if size == 1:  # a byte merges into the 16-bit register
                shift = 8 * (rel & 1)
                value = (self.vbe_read() & ~(0xFF << shift)) | ((value & 0xFF) << shift)
            self.vbe_write(value & 0xFFFF)
        elif self.qext and off == R.MMIO_QEXT_BASE + R.QEXT_REG_BYTEORDER and size == 4:
            if value == R.QEXT_LITTLE_ENDIAN:
                self.qext_byteorder = value
            else:  # a big-endian framebuffer is not offered
                self.guest_error(f"qext byte order {value:#x}")
        else:
            self.guest_error(f"BAR2 write at {off:#x}")

    # ---- screendump (QMP) ---------------------------------------------------------------
    def screendump(self, fmt: str = "ppm") -> bytes:
        """The current screen as image bytes, PPM (P6, QEMU's default) or PNG; the QMP
        command writes them where it was told (no file I/O here)."""
        if fmt not in ("ppm", "png"):
            from devmodel.controller import ControlError

            raise ControlError(f"Parameter 'format' does not accept value '{fmt}'")
        from devmodel.backends.display import encode_png

        from .render import capture, render

        frame = self.renderer.current() if self.renderer is not None else render(capture(self))
        if fmt == "png":
            return encode_png(frame.width, frame.height, frame.rgb)
        return b"P6\n%d %d\n255\n" % (frame.width, frame.height) + frame.rgb

    # ---- snapshot -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        snap["state"]["vram_z"] = zlib.compress(bytes(self.vram[0 : self.vram_size]), 1)
        return snap

    def restore(self, snap: dict[str, Any]) -> None:
        blob = snap.get("state", {}).get("vram_z")
        if not isinstance(blob, (bytes, bytearray)):
            raise SnapshotError(f"{self.name}: snapshot lacks vram_z")
        d = zlib.decompressobj()
        try:
            data = d.decompress(blob, self.vram_size + 1)
        except zlib.error as e:
            raise SnapshotError(f"{self.name}: VRAM does not decompress: {e}") from None
        if len(data) != self.vram_size or d.unconsumed_tail:
            raise SnapshotError(f"{self.name}: VRAM snapshot is not {self.vram_size} bytes")
        checks = {"sr": 8, "gr": 16, "ar": R.AR_COUNT, "cr": 256, "palette": 768, "dac_cache": 3}
        state = snap.get("state", {})
        for f, n in checks.items():
            if len(state.get(f, b"")) != n:
                raise SnapshotError(f"{self.name}: {f} must have {n} bytes")
        if len(state.get("vbe_regs", ())) != R.VBE_NB_REGS:
            raise SnapshotError(f"{self.name}: vbe_regs must have {R.VBE_NB_REGS} entries")
        super().restore(snap)
        self.vram[0 : self.vram_size] = data

    def post_restore(self) -> None:
        super().post_restore()
        # Restored state is input too (catalog, "state restore is input"): mask what the
        # registers could never hold, then recompute the derived VBE geometry.
        self.sr_index &= 7
        self.gr_index &= 0x0F
        self.ar_index &= 0x3F
        self.cr_index &= 0xFF
        self.ar_flip_flop &= 1
        self.dac_sub_index %= 3
        self.dac_read_index &= 0xFF
        self.dac_write_index &= 0xFF
        self.latch &= ONES32
        self.vbe_regs = [int(v) & 0xFFFF for v in self.vbe_regs]
        self.vbe_regs[R.VBE_INDEX_BANK] &= self.vbe_bank_mask
        self.bank_offset = self.vbe_regs[R.VBE_INDEX_BANK] << 16 if self.vbe_enabled() else 0
        self.poll_skew %= R.FRAME_NS
        self._vbe_fixup()
        if self.shared:
            self._told_gpa = -1  # unknown: re-announce wherever BAR0 decodes now
            self._sync_vram()
