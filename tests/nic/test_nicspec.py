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


def test_qemu_stream_and_dgram_backends():
    s = parse_nicspec("model=e1000,mac=00:16:3e:00:00:07,backend=stream,path=/run/n.sock,server=on")
    assert (s.backend, s.path, s.addr, s.server) == ("stream", "/run/n.sock", None, True)
    s = parse_nicspec("backend=stream,addr=127.0.0.1:5555")
    assert (s.backend, s.path, s.addr, s.server) == ("stream", None, "127.0.0.1:5555", False)
    s = parse_nicspec("backend=dgram,peer=127.0.0.1:5000,path=127.0.0.1:5001")
    assert s.backend == "dgram"


def test_dgram_is_udp_or_unix_datagrams_as_qemu(tmp_path):
    import socket

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    b = parse_nicspec(f"backend=dgram,peer=127.0.0.1:{peer.getsockname()[1]}").open_backend()
    try:
        assert b.sock.family == socket.AF_INET and b.sock.type == socket.SOCK_DGRAM
        b.send(b"\x01" * 60)
        peer.settimeout(2)
        assert peer.recv(100) == b"\x01" * 60  # one frame per datagram, no length prefix
    finally:
        b.close()
        peer.close()
    ours, theirs = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    b = parse_nicspec(f"backend=dgram,path={ours},peer={theirs}").open_backend()
    try:
        assert b.sock.family == socket.AF_UNIX and b.sock.getsockname() == ours
    finally:
        b.close()


@pytest.mark.parametrize("spec,msg", [
    ("mac=00:16:3e:01:02", "bad MAC"),
    ("mac=01:16:3e:01:02:03", "multicast"),
    ("mac=zz:16:3e:01:02:03", "not hex"),
    ("model=rtl8139", "not emulated"),
    ("type=vif", "PV-only"),
    ("backend=stream", "needs path=SOCKET"),
    ("backend=stream,path=/x,addr=127.0.0.1:5", "needs path=SOCKET"),
    ("backend=stream,path=/x,server=maybe", "expected on or off"),
    ("backend=tap,server=on", "server=on is for backend=stream"),
    ("backend=dgram", "needs peer"),
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


@pytest.mark.parametrize("spec", ["backend=stream,path=/x,server=on,reconnect=1",
                                  "backend=tap,reconnect=1", "backend=stream,path=/x,reconnect=0",
                                  "backend=stream,path=/x,reconnect=soon"])
def test_reconnect_is_for_stream_clients(spec):
    with pytest.raises(ValueError, match="reconnect"):
        parse_nicspec(spec)
    assert parse_nicspec("backend=stream,path=/x,reconnect=0.5").reconnect == 0.5


def test_devid_names_the_nic_as_libxl_does():
    assert parse_nicspec("mac=00:16:3e:01:02:03,devid=2").qdev_id == "nic2"
    assert parse_nicspec("mac=00:16:3e:01:02:03").qdev_id is None
    for bad in ("devid=-1", "devid=x", "devid=70000"):
        with pytest.raises(ValueError, match="devid"):
            parse_nicspec(bad)


def test_devid_reaches_the_device_and_duplicates_are_refused():
    from devmodel.pc import PcOptions, build_pc

    m = build_pc(PcOptions(nics=["backend=null,rom=off,devid=1", "backend=null,rom=off"],
                           xen_platform=False, vga="none"))
    try:
        names = [getattr(d, "name", "") for d in m.devices]
        assert "nic1" in names and any(n.startswith("e1000.") for n in names)
    finally:
        m.close_backends()
    with pytest.raises(ValueError, match="devid=1 given to two NICs"):
        build_pc(PcOptions(nics=["backend=null,rom=off,devid=1", "backend=null,rom=off,devid=1"]))
