"""IDE: the PIIX3 IDE function (00:01.1) with ATA disks, ATAPI CD-ROMs and bus-master DMA.

`build_ide(machine, disks)` adds it to a machine; `diskspec.parse_diskspec` reads xl's
DISKSPEC syntax for `--disk`. Devices here are pure state machines; disk I/O goes through the
asynchronous `AsyncDisk` port of devmodel/backends/asyncdisk.py (submit, then a completion on
the daemon's loop), or a synchronous `DiskBackend` with inline completions.
"""

from .atapi import AtapiDrive, Cdrom, MediaLockedError
from .piix import PiixIde, build_ide, open_disks

__all__ = ["AtapiDrive", "Cdrom", "MediaLockedError", "PiixIde", "build_ide", "open_disks"]
