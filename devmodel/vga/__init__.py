"""Standard VGA with Bochs VBE (QEMU `-device VGA`): the device, its builder, rendering."""

from .build import SLOT_PC, SLOT_XENFV, VGABIOS_STDVGA, build_vga
from .device import StdVga
from .render import DisplayState, Frame, TileTracker, capture, render, text_screen

__all__ = ["SLOT_PC", "SLOT_XENFV", "VGABIOS_STDVGA", "DisplayState", "Frame", "StdVga",
           "TileTracker", "build_vga", "capture", "render", "text_screen"]
