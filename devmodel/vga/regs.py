"""Register numbers, writable masks and limits of the standard VGA and the Bochs VBE DISPI
interface, as QEMU's hw/display/vga_regs.h, vga_int.h and vga.c define them (SeaVGABIOS and
the Linux bochs-drm driver are written against those)."""

from __future__ import annotations

# ---- legacy ports -------------------------------------------------------------------------
PORT_BASE = 0x3B0  # 0x3B0-0x3DF
PORT_COUNT = 0x30
ATT_W = 0x3C0  # attribute controller address/data (flip-flop)
ATT_R = 0x3C1
MIS_W = 0x3C2  # write: misc output; read: input status 0
VSE = 0x3C3  # video subsystem enable
SEQ_I = 0x3C4
SEQ_D = 0x3C5
PEL_MSK = 0x3C6
PEL_IR = 0x3C7  # write: DAC read index; read: DAC state
PEL_IW = 0x3C8
PEL_D = 0x3C9
FTC_R = 0x3CA  # feature control read
MIS_R = 0x3CC
GFX_I = 0x3CE
GFX_D = 0x3CF
CRT_IM, CRT_DM, IS1_RM = 0x3B4, 0x3B5, 0x3BA  # mono (misc output bit 0 = 0)
CRT_IC, CRT_DC, IS1_RC = 0x3D4, 0x3D5, 0x3DA  # colour (misc output bit 0 = 1)

MIS_COLOR = 0x01  # misc output bit 0: I/O address select (CRTC at 0x3Dx)

# Writable bits per sequencer / graphics register (QEMU sr_mask / gr_mask).
SR_MASK = (0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0xFF)
GR_MASK = (0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF) + (0,) * 7
AR_COUNT = 0x15  # AR00-AR14
CR_COUNT = 0x19  # CR00-CR18; higher indexes read 0 and drop writes here

# Sequencer
SR_CLOCK = 0x01  # bit 0 8-dot chars, bit 3 dot clock / 2, bit 5 screen off
SR_MAP_MASK = 0x02
SR_CHARMAP = 0x03
SR_MEMMODE = 0x04  # bit 2 odd/even disable, bit 3 chain-4
SR01_8DOT = 0x01
SR01_DOTCLK2 = 0x08
SR01_SCREEN_OFF = 0x20
SR04_CHAIN4 = 0x08

# Graphics controller
GR_SR_VALUE, GR_SR_ENABLE, GR_COMPARE, GR_DATA_ROTATE, GR_PLANE_READ = 0, 1, 2, 3, 4
GR_MODE, GR_MISC, GR_COMPARE_MASK, GR_BIT_MASK = 5, 6, 7, 8
GR05_ODD_EVEN = 0x10
GR05_READ_MODE1 = 0x08
GR05_SHIFT256 = 0x40
GR06_GRAPHICS = 0x01

# Attribute controller
AR_MODE = 0x10  # bit 0 graphics, bit 2 line graphics (9th column), bit 3 blink, bit 7 P5/P4
AR_PLANE_ENABLE = 0x12
AR_PEL_PAN = 0x13
AR_COLOR_SELECT = 0x14
AR_PAS = 0x20  # palette address source in the index: 0 = the display is off
# Writable bits of AR00-AR14 (QEMU vga_ioport_write, VGA_ATT_W).
AR_MASK = (0x3F,) * 16 + (0xEF, 0xFF, 0x3F, 0x0F, 0x0F)

# CRTC
CR_HDISP_END = 0x01
CR_OVERFLOW = 0x07
CR_MAX_SCAN = 0x09
CR_CURSOR_START = 0x0A
CR_CURSOR_END = 0x0B
CR_START_HI = 0x0C
CR_START_LO = 0x0D
CR_CURSOR_HI = 0x0E
CR_CURSOR_LO = 0x0F
CR_VSYNC_END = 0x11  # bit 7 protects CR00-CR07 (bit 4 of CR07 stays writable)
CR_VDISP_END = 0x12
CR_OFFSET = 0x13
CR_MODE = 0x17
CR_LINE_COMPARE = 0x18
CR11_PROTECT = 0x80

# Input status 1
ST01_DISP_ENABLE = 0x01  # set while the display is NOT showing pixels (blanking)
ST01_V_RETRACE = 0x08

# ---- retrace timing: a 70 Hz, 31.5 kHz VGA (640x400 text), from the injected clock -------
LINE_NS = 31_778
LINES_PER_FRAME = 449
ACTIVE_LINES = 400
VRETRACE_FIRST_LINE = 412
VRETRACE_LINES = 2
HACTIVE_NS = 25_422  # 640 of 800 dot clocks
FRAME_NS = LINE_NS * LINES_PER_FRAME
# Each read of input status 1 moves the device's view of the beam on by this much, so a
# guest that polls without time passing (a frozen virtual clock) still sees every phase:
# a wait for vertical retrace ends within FRAME_NS / POLL_SKEW_NS (~3600) reads. It is less
# than the horizontal blank (6.4 us), so no phase is skipped.
POLL_SKEW_NS = 4_000

# ---- Bochs VBE DISPI (ports 0x1CE index / 0x1CF data, BAR2 0x500 + index * 2) ------------
VBE_PORT_INDEX = 0x1CE
VBE_PORT_COUNT = 3  # 0x1CE index, 0x1CF data, 0x1D0 data alias (QEMU, non-x86 port)
VBE_INDEX_ID = 0
VBE_INDEX_XRES = 1
VBE_INDEX_YRES = 2
VBE_INDEX_BPP = 3
VBE_INDEX_ENABLE = 4
VBE_INDEX_BANK = 5
VBE_INDEX_VIRT_WIDTH = 6
VBE_INDEX_VIRT_HEIGHT = 7
VBE_INDEX_X_OFFSET = 8
VBE_INDEX_Y_OFFSET = 9
VBE_INDEX_VIDEO_MEMORY_64K = 0xA
VBE_NB_REGS = 0xA
VBE_ID0 = 0xB0C0
VBE_ID5 = 0xB0C5
VBE_DISABLED = 0x00
VBE_ENABLED = 0x01
VBE_GETCAPS = 0x02
VBE_8BIT_DAC = 0x20
VBE_LFB_ENABLED = 0x40
VBE_NOCLEARMEM = 0x80
VBE_MAX_XRES = 16000
VBE_MAX_YRES = 12000
VBE_MAX_BPP = 32
VBE_BPPS = (8, 15, 16, 24, 32)

# ---- PCI (QEMU hw/display/vga-pci.c) -------------------------------------------------------
VENDOR_QEMU = 0x1234
DEVICE_STDVGA = 0x1111
CLASS_VGA = 0x030000
MMIO_SIZE = 0x1000
MMIO_VGA_BASE = 0x400  # ports 0x3C0-0x3DF
MMIO_VGA_SIZE = 0x20
MMIO_BOCHS_BASE = 0x500  # DISPI register n at 0x500 + 2n
MMIO_BOCHS_SIZE = 0x2 * (VBE_INDEX_VIDEO_MEMORY_64K + 1)
MMIO_QEXT_BASE = 0x600
QEXT_REG_SIZE = 0x0  # reads the size of the qext region
QEXT_REG_BYTEORDER = 0x4
QEXT_SIZE = 8
QEXT_LITTLE_ENDIAN = 0x1E1E1E1E
QEXT_BIG_ENDIAN = 0xBEBEBEBE

# ---- memory ---------------------------------------------------------------------------------
WINDOW_BASE = 0xA0000
WINDOW_SIZE = 0x20000
VRAM_MIN_MB = 1
VRAM_MAX_MB = 256
VRAM_DEFAULT_MB = 16
REGION_VRAM = 0x8000_0010  # daemon-owned region id (bit 31 set, docs/protocol.md 4.7)
