"""devmodel: a device-model daemon for HVM guests, spoken to over a Unix socket."""

__version__ = "0.1.0"
