"""A command that fails with an exception of ours (not a QmpError) is still answered, with
GenericError, and the monitor goes on serving: a QMP client never waits for a reply that does
not come (QEMU answers every command)."""

from __future__ import annotations

import json
import socket

from devmodel.qmp import commands
from devmodel.qmp.server import QmpSession


class Loop:
    def add_reader(self, *_a) -> None:
        pass

    def add_writer(self, *_a) -> None:
        pass


class Server:
    controller = None
    loop = Loop()


def replies(sock: socket.socket) -> list[dict]:
    return [json.loads(line) for line in sock.recv(1 << 16).split(b"\r\n") if line]


def test_an_unexpected_exception_in_a_command_is_answered_and_the_session_goes_on(
        monkeypatch, caplog) -> None:
    ours, theirs = socket.socketpair()
    try:
        session = QmpSession(ours, Server())  # type: ignore[arg-type]
        assert "QMP" in replies(theirs)[0]
        session.negotiated = True

        def broken(_s):
            raise KeyError("bug")

        monkeypatch.setattr(commands.COMMANDS["query-status"], "fn", broken)
        session._handle(b'{"execute": "query-status", "id": 3}')
        assert replies(theirs) == [{"error": {"class": "GenericError",
                                              "desc": "internal error: 'bug'"}, "id": 3}]
        assert any("QMP command failed" in r.getMessage() for r in caplog.records)
        session._handle(b'{"execute": "query-commands", "id": 4}')
        (reply,) = replies(theirs)
        assert reply["id"] == 4 and {"name": "query-status"} in reply["return"]
    finally:
        ours.close()
        theirs.close()
