"""xl vif syntax for --nic."""

from __future__ import annotations

import pytest

from devmodel.nic.nicspec import parse_nicspec


def test_xl_vif_syntax():
    s = parse_nicspec("mac=00:16:3e:01:02:03,model=e1000,type=ioemu,bridge=xenbr0,vifname=web")
    assert s.mac == bytes.fromhex("00163e010203")
    assert s.backend == "tap" and s.ifname == "web-emu" and s.bridge == "xenbr0"
    assert s.rom == ""
    s = parse_nicspec("model=e1000,mac=52:54:00:12:34:56,backend=tap,ifname=vif1.0-emu,rom=off")
    assert s.ifname == "vif1.0-emu" and s.rom is None and s.mac_text == "52:54:00:12:34:56"
    s = parse_nicspec("model=e1000,backend=udp,peer=127.0.0.1:5000,capture=/tmp/x.pcap,script=vif-bridge")
    assert s.backend == "udp" and s.capture == "/tmp/x.pcap"
    assert parse_nicspec("model=e1000").mac[:3] == b"\x00\x16\x3e"


@pytest.mark.parametrize("spec,msg", [
    ("mac=00:16:3e:01:02", "bad MAC"),
    ("mac=01:16:3e:01:02:03", "multicast"),
    ("mac=zz:16:3e:01:02:03", "not hex"),
    ("model=rtl8139", "not emulated"),
    ("type=vif", "PV-only"),
    ("backend=stream,path=/x", "not implemented"),
    ("backend=udp", "needs peer"),
    ("colour=blue", "unknown key"),
    ("ifname=averyveryverylongname", "longer than 15"),
    ("mac=00:16:3e:01:02:03,mac=00:16:3e:01:02:04", "twice"),
    ("bridge", "KEY=VALUE"),
])
def test_clear_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_nicspec(spec)


def test_missing_tap_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="tap|tun"):
        parse_nicspec("backend=tap,ifname=nosuchtap0").open_backend()
