"""The QMP transport as QEMU frames it: greeting, capabilities negotiation, ids, errors, the
JSON stream, one client per monitor socket, the socket's mode."""

from __future__ import annotations

import os
import socket
import stat

import pytest
from qemu.qmp import QMPClient
from qemu.qmp.qmp_client import ExecuteError
from qmp_support import RawQmp, client, start


@pytest.fixture
def dm():
    d = start(hypervisor=False)
    yield d
    d.close()


def test_greeting_is_qemus_and_socket_is_private(dm):
    assert stat.S_IMODE(os.stat(dm.qmp).st_mode) == 0o600
    q = RawQmp(dm.qmp)
    g = q.recv()
    assert set(g) == {"QMP"} and g["QMP"]["capabilities"] == []
    v = g["QMP"]["version"]
    assert set(v["qemu"]) == {"major", "minor", "micro"} and v["package"].startswith("devmodel")
    q.close()


def test_commands_refused_until_qmp_capabilities(dm):
    q = RawQmp(dm.qmp)
    q.recv()
    r = q.cmd("query-status", id=7)
    assert r == {"error": {"class": "CommandNotFound",
                           "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"},
                 "id": 7}
    assert q.cmd("qmp_capabilities", id=8) == {"return": {}, "id": 8}
    again = q.cmd("qmp_capabilities", id=9)
    assert again["error"]["class"] == "CommandNotFound" and again["id"] == 9
    assert q.cmd("query-status", id=10)["return"]["status"] == "running"
    q.close()


def test_oob_capability_is_not_offered(dm):
    q = RawQmp(dm.qmp)
    q.recv()
    r = q.cmd("qmp_capabilities", {"enable": ["oob"]})
    assert r["error"]["class"] == "GenericError"
    q.close()


def test_ids_of_any_json_type_are_echoed_and_absent_ids_stay_absent(dm):
    q = RawQmp(dm.qmp)
    q.negotiate()
    for ident in ("abc", 5, {"x": [1, 2]}, None):
        q.send({"execute": "query-version", "id": ident})
        r = q.reply()
        assert r["id"] == ident and "qemu" in r["return"]
    q.send({"execute": "query-version"})
    assert "id" not in q.reply()
    q.close()


@pytest.mark.parametrize("msg,cls,desc", [
    ({"execute": "no-such-command"}, "CommandNotFound", "The command no-such-command has not been found"),
    ({"arguments": {}}, "GenericError", "QMP input lacks member 'execute'"),
    ({"execute": 3}, "GenericError", "QMP input member 'execute' must be a string"),
    ({"execute": "query-status", "arguments": []}, "GenericError",
     "QMP input member 'arguments' must be an object"),
    ({"execute": "query-status", "bogus": 1}, "GenericError", "QMP input member 'bogus' is unexpected"),
    ({"execute": "query-status", "arguments": {"x": 1}}, "GenericError", "Parameter 'x' is unexpected"),
    ({"execute": "xen-save-devices-state", "arguments": {}}, "GenericError",
     "Parameter 'filename' is missing"),
    ({"execute": "set_link", "arguments": {"name": "nic0", "up": "yes"}}, "GenericError",
     "Invalid parameter type for 'up', expected: boolean"),
])
def test_malformed_commands_get_qemus_error(dm, msg, cls, desc):
    q = RawQmp(dm.qmp)
    q.negotiate()
    q.send(msg)
    assert q.reply()["error"] == {"class": cls, "desc": desc}
    q.close()


def test_json_stream_framing(dm):
    q = RawQmp(dm.qmp)
    q.negotiate()
    # two commands in one write, LF and CRLF, then one split over three writes
    q.send(b'{"execute": "query-kvm", "id": 1}\n  {"execute":"query-vnc","id":2}\r\n')
    assert q.reply() == {"return": {"enabled": False, "present": False}, "id": 1}
    assert q.reply() == {"return": {"enabled": False}, "id": 2}
    for part in (b'{"execute": "query-na', b'me", "id": {"s": "}{\\"', b'"}}'):
        q.send(part)
    assert q.reply() == {"return": {}, "id": {"s": '}{"'}}
    # garbage and non-objects are answered and the stream goes on
    q.send(b'{"execute": }\r\n')
    assert q.reply()["error"]["class"] == "GenericError"
    q.send(b"42\r\n")
    assert q.reply()["error"] == {"class": "GenericError", "desc": "QMP input must be a JSON object"}
    q.send(b"[1, 2]\r\n")
    assert q.reply()["error"]["desc"] == "QMP input must be a JSON object"
    assert q.cmd("query-status", id=3)["id"] == 3
    q.close()


def test_output_is_crlf_terminated_json(dm):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(dm.qmp)
    data = b""
    while not data.endswith(b"\r\n"):
        data += s.recv(4096)
    assert data.count(b"\r\n") == 1 and data.startswith(b'{"QMP": ')
    s.close()


def test_one_client_at_a_time_the_next_is_served_after(dm):
    first = RawQmp(dm.qmp)
    first.negotiate()
    second = RawQmp(dm.qmp, timeout=0.3)  # connects (listen backlog) but is not served yet
    with pytest.raises(TimeoutError):
        second.recv()
    first.close()
    second.sock.settimeout(5)
    assert "QMP" in second.recv()
    second.close()


async def test_qemu_qmp_client_negotiates_and_lists_commands(dm):
    c = await client(dm.qmp)
    names = {x["name"] for x in await c.execute("query-commands")}
    libxl = {"qmp_capabilities", "query-status", "cont", "stop", "quit", "add-fd", "remove-fd",
             "query-fdsets", "xen-save-devices-state", "xen-load-devices-state",
             "xen-set-global-dirty-log", "query-vnc", "change-vnc-password", "query-chardev",
             "eject", "blockdev-change-medium", "change", "device_add", "device_del",
             "query-pci", "query-cpus-fast", "query-hotpluggable-cpus", "system_wakeup",
             "human-monitor-command", "query-command-line-options"}
    issue = {"system_reset", "system_powerdown", "screendump", "query-block", "set_link",
             "input-send-event", "query-version", "query-commands"}
    assert libxl | issue <= names
    with pytest.raises(ExecuteError) as ei:
        await c.execute("no-such-command")
    assert ei.value.error_class == "CommandNotFound"
    await c.disconnect()


async def test_without_negotiation_qemu_qmp_sees_command_not_found(dm):
    c = QMPClient("raw")
    c.negotiate = False
    await c.connect(dm.qmp)
    with pytest.raises(ExecuteError) as ei:
        await c.execute("query-status")
    assert ei.value.error_class == "CommandNotFound"
    await c.disconnect()
