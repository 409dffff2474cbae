"""Re-record the fuzz seeds in this directory from real boots (issue 10):

    .venv/bin/python tests/fuzz/seeds/record.py [OUTDIR]

- seabios-boot.trace.gz: SeaBIOS (/usr/share/seabios) on the simulator boots the demo disk
  (`devmodel boot`), recorded with the daemon's --trace;
- ipxe-e1000-dhcp.trace.gz: SeaBIOS boots from the e1000's iPXE ROM (`--boot n`); iPXE
  brings the NIC up and sends DHCP over a UDP backend to the discard port (nobody answers:
  the seed is the driver's set-up and transmit path, the polling for an answer is squashed).

Each trace is shrunk into a seed with `devmodel fuzz --make-seed` (devmodel.fuzz.seeds.
shrink_trace: only the ioreq stream, polling loops and console output squashed, gzipped).
Boots run on virtual time, so a re-recording differs only where the wall-clock timeout of
the iPXE run cuts it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from devmodel.boot import BootConfig, boot
from devmodel.fuzz.seeds import load_seed, shrink_trace

HERE = os.path.dirname(os.path.abspath(__file__))
IPXE_NIC = "model=e1000,mac=52:54:00:12:34:56,backend=udp,peer=127.0.0.1:9"
IPXE_WALL_S = 12.0  # iPXE is waiting for DHCP answers long before this


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="devmodel-seeds-")
    runs = {
        "seabios-boot": BootConfig(timeout=60),
        "ipxe-e1000-dhcp": BootConfig(timeout=IPXE_WALL_S, daemon_args=["--boot", "n", "--nic", IPXE_NIC]),
    }
    for name, cfg in runs.items():
        trace = os.path.join(tmp, f"{name}.trace")
        cfg.daemon_args = [*cfg.daemon_args, "--trace", trace]
        res = boot(cfg)
        seed = os.path.join(out, f"{name}.trace.gz")
        kept = shrink_trace(trace, seed)
        print(json.dumps({"seed": seed, "boot": res.outcome, "exits": res.exits, "messages": kept,
                          "events": len(load_seed(seed)), "bytes": os.path.getsize(seed)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
