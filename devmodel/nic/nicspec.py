"""`--nic` specifications in xl's vif syntax (xl-network-configuration(5)).

    mac=00:16:3e:01:02:03,model=e1000,type=ioemu,bridge=xenbr0,vifname=web
    model=e1000,mac=52:54:00:12:34:56,backend=tap,ifname=vif1.0-emu
    model=e1000,backend=udp,peer=127.0.0.1:5000[,path=127.0.0.1:5001]
    model=e1000,backend=unix,path=/run/nic.sock,peer=/run/peer.sock
    model=e1000,backend=stream,path=/run/nic.sock[,server=on]     QEMU -netdev stream (Unix)
    model=e1000,backend=stream,addr=HOST:PORT[,server=on]        QEMU -netdev stream (TCP)
    ...,backend=stream,path=...,reconnect=SECONDS                 client: retry a lost peer
    model=e1000,backend=dgram,peer=HOST:PORT|SOCK[,path=LOCAL]   QEMU -netdev dgram (udp/unix)
    ...,capture=/tmp/nic.pcap       every frame both ways, pcap
    ...,rom=off | rom=/path/to/efi-e1000.rom

The tap: `ifname` names an existing device (create=on makes it if missing); otherwise, as
libxl names the emulated side of a vif, `vifname` plus "-emu"; with neither, a new tap named by
the kernel. `bridge` is recorded for the toolstack (it bridges the tap, as on Xen); devmodel
does not touch bridges. `type=vif` (PV only) is refused for an emulated NIC; `script`, `ip`,
`rate`, `backend_domain` are accepted and ignored. `devid=N` names the NIC `nicN`, the qdev
id libxl gives QEMU's `-device e1000,id=nicN` (QMP set_link, device_del, DEVICE_DELETED and
query-pci use it); without it the NIC is `e1000.SLOT`. A missing MAC is generated in
Xen's 00:16:3e OUI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .netpkt import format_mac, parse_mac

MODELS = ("e1000",)
BACKENDS = ("tap", "stream", "dgram", "udp", "unix", "null")
IGNORED = ("script", "ip", "rate", "backend_domain", "gatewaydev", "accel", "trusted",
           "mtu")
KEYS = ("mac", "model", "type", "backend", "bridge", "vifname", "ifname", "path", "peer", "addr",
        "server", "reconnect", "capture", "rom", "netns", "create", "devid", *IGNORED)


@dataclass(frozen=True)
class NicSpec:
    mac: bytes
    model: str = "e1000"
    backend: str = "tap"
    ifname: str = ""
    bridge: str = ""
    path: str | None = None
    peer: str | None = None
    capture: str | None = None
    rom: str | None = ""  # "" default ROM, None no ROM
    netns: str | None = None
    create: bool | None = None  # tap: None = only when unnamed
    addr: str | None = None  # stream over TCP: HOST:PORT
    server: bool = False  # stream: listen (QEMU server=on) instead of connecting
    devid: int | None = None  # libxl's vif devid: the NIC's qdev id is then nicN
    reconnect: float = 0.0  # stream client: seconds between connection attempts (QEMU's)

    @property
    def qdev_id(self) -> str | None:
        return None if self.devid is None else f"nic{self.devid}"

    @property
    def mac_text(self) -> str:
        return format_mac(self.mac)

    def open_backend(self):
        from devmodel.backends.net import open_backend

        return open_backend(self.backend, ifname=self.ifname, netns=self.netns, path=self.path,
                            peer=self.peer, capture=self.capture, create=self.create,
                            addr=self.addr, server=self.server, reconnect=self.reconnect)


def random_mac() -> bytes:
    tail = bytearray(os.urandom(3))
    tail[0] &= 0x7F  # libxl keeps the top bit clear
    return b"\x00\x16\x3e" + bytes(tail)


def parse_nicspec(text: str) -> NicSpec:
    fields: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"nic {text!r}: {item!r} is not KEY=VALUE")
        if key not in KEYS:
            raise ValueError(f"nic {text!r}: unknown key {key!r}; known: {', '.join(KEYS[:12])}")
        if key in fields:
            raise ValueError(f"nic {text!r}: {key} given twice")
        fields[key] = value.strip()
    model = fields.get("model", "e1000").lower()
    if model not in MODELS:
        raise ValueError(f"nic model {model!r} is not emulated; available: {', '.join(MODELS)}")
    vtype = fields.get("type", "ioemu").lower()
    if vtype == "vif":
        raise ValueError("nic type=vif is a PV-only interface; an emulated NIC is type=ioemu")
    if vtype not in ("ioemu", "tap"):
        raise ValueError(f"nic type {vtype!r}: expected ioemu")
    mac = parse_mac(fields["mac"]) if "mac" in fields else random_mac()
    backend = fields.get("backend", "tap").lower()
    if backend not in BACKENDS:
        raise ValueError(f"nic backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    ifname = fields.get("ifname", "")
    if not ifname and fields.get("vifname"):
        ifname = fields["vifname"] + "-emu"
    if len(ifname.encode()) > 15:
        raise ValueError(f"nic ifname {ifname!r} is longer than 15 bytes (IFNAMSIZ)")
    if backend in ("udp", "unix", "dgram") and not (fields.get("peer") or fields.get("path")):
        raise ValueError(f"nic backend={backend} needs peer= (and optionally path=)")
    if backend == "stream" and ("path" in fields) == ("addr" in fields):
        raise ValueError("nic backend=stream needs path=SOCKET (Unix) or addr=HOST:PORT (TCP)")
    server = _flag(fields, "server", False)
    if server and backend != "stream":
        raise ValueError("nic server=on is for backend=stream")
    reconnect = 0.0
    if "reconnect" in fields:
        try:
            reconnect = float(fields["reconnect"])
        except ValueError:
            raise ValueError(f"nic reconnect={fields['reconnect']!r}: expected seconds") from None
        if backend != "stream" or server or not 0 < reconnect <= 3600:
            raise ValueError("nic reconnect=SECONDS (0 < s <= 3600) is for a backend=stream client")
    devid = None
    if "devid" in fields:
        if not fields["devid"].isdigit() or int(fields["devid"]) > 0xFFFF:
            raise ValueError(f"nic devid={fields['devid']!r}: expected a number 0-65535")
        devid = int(fields["devid"])
    rom = fields.get("rom", "")
    create = _flag(fields, "create", None)
    return NicSpec(mac=mac, model=model, backend=backend, ifname=ifname,
                   bridge=fields.get("bridge", ""), path=fields.get("path"),
                   peer=fields.get("peer"), capture=fields.get("capture") or None,
                   rom=None if rom.lower() in ("off", "none", "no") else rom,
                   netns=fields.get("netns") or None, create=create,
                   addr=fields.get("addr") or None, server=server, reconnect=reconnect, devid=devid)


def _flag(fields: dict[str, str], key: str, default: bool | None) -> bool | None:
    if key not in fields:
        return default
    flag = fields[key].lower()
    if flag not in ("on", "off", "yes", "no", "1", "0", "true", "false"):
        raise ValueError(f"nic {key}={fields[key]!r}: expected on or off")
    return flag in ("on", "yes", "1", "true")
