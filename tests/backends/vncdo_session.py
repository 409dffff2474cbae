"""Run by test_vnc_vncdotool.py as a separate program: one vncdotool client session (its
threaded API) that asks for ZRLE, captures the screen, waits for a line on stdin (the test
changes the guest's mode meanwhile), waits until the screen shows EXPECTED.png (a capture
right after the change may still be an update the server had in flight, as for any VNC
client), captures again and disconnects.

    python vncdo_session.py HOST::PORT FIRST.png EXPECTED.png SECOND.png
"""

from __future__ import annotations

import sys

from vncdotool import api
from vncdotool.client import VNCDoToolClient, VNCDoToolFactory
from vncdotool.const import Encoding


class ZrleClient(VNCDoToolClient):
    encoding = Encoding.ZRLE


class ZrleFactory(VNCDoToolFactory):
    protocol = ZrleClient


def main() -> int:
    server, first, expected, second = sys.argv[1:5]
    client = api.connect(server, None, ZrleFactory, timeout=30)
    try:
        client.captureScreen(first)
        print("captured", flush=True)
        sys.stdin.readline()
        client.expectScreen(expected, 0)
        client.captureScreen(second)
        client.disconnect()
    finally:
        api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
