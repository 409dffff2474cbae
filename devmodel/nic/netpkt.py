"""Frame helpers for the NIC: Internet checksums, Ethernet/VLAN/IP parsing, FCS.

Pure functions on bytes; no I/O. The ones' complement sum is one int.from_bytes and a modulo
(C speed), see csum_add.
"""

from __future__ import annotations

import zlib

BROADCAST = b"\xff" * 6
ETH_HLEN = 14
ETH_ZLEN = 60  # minimum frame without FCS
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_VLAN = 0x8100


def csum_add(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The ones' complement sum of `data` as big-endian 16-bit words, plus `start`; callers
    fold it. Since 2**16 = 1 (mod 0xFFFF), the sum of the words is congruent to the whole
    even-length prefix read as one integer, so one C-speed int.from_bytes and one modulo
    replace a loop over the words (4-5x faster at 1514 bytes). The end-around-carry sum
    of nonzero data is never 0, hence 0xFFFF for a multiple of 0xFFFF (RFC 1071 1.)."""
    mv = memoryview(data)
    n = len(mv)
    total = start
    if n >= 2:
        # read little-endian (no byte reversal: faster); swapping the two bytes of the sum
        # is a multiplication by 2**8 modulo 0xFFFF (RFC 1071 2.(B), byte order independence)
        v = int.from_bytes(mv[: n & ~1], "little")
        r = v % 0xFFFF
        total += (r << 8) % 0xFFFF if r else 0xFFFF if v else 0
    if n & 1:
        total += mv[n - 1] << 8
    return total


def csum_fold(s: int) -> int:
    """A ones'-complement sum folded to 16 bits."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_finish(s: int) -> int:
    """Complement of the folded sum; a result of 0 is sent as 0xFFFF (QEMU
    net_checksum_finish_nozero; required for UDP, harmless for TCP and IP)."""
    v = ~csum_fold(s) & 0xFFFF
    return v or 0xFFFF


def csum_ok(data: bytes | bytearray | memoryview, pseudo: int = 0) -> bool:
    return csum_fold(csum_add(data, pseudo)) == 0xFFFF


def fcs(frame: bytes | bytearray | memoryview) -> bytes:
    """Ethernet CRC-32, transmitted least significant byte first."""
    return (zlib.crc32(frame) & 0xFFFFFFFF).to_bytes(4, "little")


def is_multicast(mac: bytes | bytearray | memoryview) -> bool:
    return bool(mac[0] & 1)


def parse_mac(text: str) -> bytes:
    """`52:54:00:12:34:56` (or with dashes) to 6 bytes; a clear ValueError otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"bad MAC address {text!r}: want six hex bytes like 00:16:3e:12:34:56")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}: not hex") from None
    if mac[0] & 1:
        raise ValueError(f"MAC address {text} is a multicast address")
    if mac == bytes(6):
        raise ValueError("MAC address 00:00:00:00:00:00 is not valid")
    return mac


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def l4_pseudo_sum(frame: bytes | bytearray, l3: int, proto: int, l4len: int) -> int | None:
    """The pseudo-header sum for the IPv4/IPv6 header at `l3`, or None."""
    ver = frame[l3] >> 4
    if ver == 4:
        return csum_add(frame[l3 + 12 : l3 + 20], proto + l4len)
    if ver == 6:
        return csum_add(frame[l3 + 8 : l3 + 40], proto + l4len)
    return None


def rx_checksums(frame: bytes | bytearray | memoryview) -> tuple[bool, bool | None, bool | None]:
    """What a receive checksum engine finds: (is IP, IPv4 header ok or None, L4 ok or None).

    Only IPv4 without fragments and TCP/UDP are checked (the 82540EM does not look past
    IPv4 options' end into IPv6 extension headers); None means "not checked"."""
    if len(frame) < ETH_HLEN + 20:
        return False, None, None
    off = 12
    etype = frame[off] << 8 | frame[off + 1]
    if etype == ETH_P_VLAN:
        off += 4
        etype = frame[off] << 8 | frame[off + 1]
    l3 = off + 2
    if etype == ETH_P_IPV4:
        ihl = (frame[l3] & 0xF) * 4
        if frame[l3] >> 4 != 4 or ihl < 20 or l3 + ihl > len(frame):
            return True, False, None
        ip_ok = csum_ok(frame[l3 : l3 + ihl])
        total = frame[l3 + 2] << 8 | frame[l3 + 3]
        frag = (frame[l3 + 6] << 8 | frame[l3 + 7]) & 0x3FFF
        proto = frame[l3 + 9]
        if frag or proto not in (6, 17) or total < ihl or l3 + total > len(frame):
            return True, ip_ok, None
        l4 = l3 + ihl
        l4len = total - ihl
    elif etype == ETH_P_IPV6:
        if len(frame) < l3 + 40:
            return True, None, None
        proto = frame[l3 + 6]
        plen = frame[l3 + 4] << 8 | frame[l3 + 5]
        if proto not in (6, 17) or l3 + 40 + plen > len(frame):
            return True, None, None
        l4 = l3 + 40
        l4len = plen
        ip_ok = None
    else:
        return False, None, None
    if proto == 17 and l4len >= 8 and frame[l4 + 6] == 0 and frame[l4 + 7] == 0:
        return True, ip_ok, None  # UDP without checksum
    if (proto == 6 and l4len < 20) or (proto == 17 and l4len < 8):
        return True, ip_ok, False
    pseudo = l4_pseudo_sum(bytes(frame), l3, proto, l4len)
    if pseudo is None:
        return True, ip_ok, None
    return True, ip_ok, csum_ok(frame[l4 : l4 + l4len], pseudo)
