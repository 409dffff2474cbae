"""Firmware-facing devices and the tables they serve: fw_cfg, SMBIOS, e820, firmware images."""
