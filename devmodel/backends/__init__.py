"""Backends: the I/O side of devices (disk files, ...). Devices see them only through small interfaces."""
