"""Fuzz seeds from real boots (issue 10): the checked-in seeds (a SeaBIOS boot of the demo disk,
iPXE bringing up the e1000 and starting DHCP) load, replay into the device states the real
guest reached, mutate deterministically, and a seeded campaign runs clean. One test records a
fresh SeaBIOS boot with --trace and makes a seed from it, as tests/fuzz/seeds/record.py does."""

from __future__ import annotations

import pathlib
import random

import pytest

from devmodel.fuzz.engine import COPY, DIR, PCI_CONFIG, Limits, Session, Watchdog, run_input
from devmodel.fuzz.machine import FuzzSetup, parse_devices
from devmodel.fuzz.runner import random_campaign
from devmodel.fuzz.seeds import PASS_BELOW, load_seed, mutation_bytes, run_seed, shrink_trace
from devmodel.hvsim.firmware import DEFAULT_BIOS

SEEDS = pathlib.Path(__file__).parent / "seeds"
SEABIOS = SEEDS / "seabios-boot.trace.gz"
IPXE = SEEDS / "ipxe-e1000-dhcp.trace.gz"
E1000_DEVFN = 4 << 3  # where `devmodel boot --nic` and the fuzz machine both put it
E1000_RCTL, RCTL_EN = 0x100, 0x2
E1000_TCTL, TCTL_EN = 0x400, 0x2


pytestmark = pytest.mark.usefixtures("quiet_devmodel")


def _setup() -> FuzzSetup:
    return FuzzSetup(devices=parse_devices("all"))


def test_checked_in_seeds_are_small():
    sizes = {p.name: p.stat().st_size for p in SEEDS.glob("*.trace.gz")}
    assert {SEABIOS.name, IPXE.name} <= set(sizes)
    assert sum(sizes.values()) < 200 << 10, sizes


def test_seabios_seed_replays_pci_enumeration():
    seed = load_seed(str(SEABIOS))
    ios = [e for e in seed if e[0] == "io"]
    assert len(ios) > 1000 and any(e[0] == "clock" for e in seed)
    s = Session(_setup(), Limits())
    try:
        run_seed(s, seed, b"")  # no mutation bytes: the boot as recorded
        assert s.ioreqs == len(ios)
        # SeaBIOS enabled I/O decoding of the IDE function and programmed its BMDMA BAR4
        ide = s.m.device("piix3-ide")
        cmd = s.io(PCI_CONFIG, ide.devfn << 32 | 0x04, 0, 1, 2, DIR)
        bar4 = s.io(PCI_CONFIG, ide.devfn << 32 | 0x20, 0, 1, 4, DIR)
        assert cmd & 1 and bar4 & ~3 not in (0, 0xFFFC), (hex(cmd), hex(bar4))
    finally:
        s.close()


def test_ipxe_seed_brings_the_e1000_up():
    seed = load_seed(str(IPXE))
    s = Session(_setup(), Limits())
    try:
        run_seed(s, seed, b"")
        cmd = s.io(PCI_CONFIG, E1000_DEVFN << 32 | 0x04, 0, 1, 2, DIR)
        bar0 = s.io(PCI_CONFIG, E1000_DEVFN << 32 | 0x10, 0, 1, 4, DIR) & ~0xF
        assert cmd & 0x6 == 0x6, hex(cmd)  # memory decoding and bus mastering, as iPXE left them
        rctl = s.io(COPY, bar0 + E1000_RCTL, 0, 1, 4, DIR)
        tctl = s.io(COPY, bar0 + E1000_TCTL, 0, 1, 4, DIR)
        assert rctl & RCTL_EN and tctl & TCTL_EN, (hex(rctl), hex(tctl))
    finally:
        s.close()


def test_mutations_are_deterministic_and_change_the_stream():
    seed = load_seed(str(SEABIOS))
    data = mutation_bytes(random.Random("t:1"), len(seed), 0.02)
    assert data == mutation_bytes(random.Random("t:1"), len(seed), 0.02)
    assert sum(b >= PASS_BELOW for b in data) == int(len(seed) * 0.02)
    with Watchdog(2.0):
        a = run_input(data, _setup(), Limits(hang_s=2.0), seed=seed)
        b = run_input(data, _setup(), Limits(hang_s=2.0), seed=seed)
        plain = run_input(b"", _setup(), Limits(hang_s=2.0), seed=seed)
    assert a.events == b.events and not a.fatal
    assert a.events != plain.events


def test_seeded_campaign_runs_clean(tmp_path):
    corpus = [load_seed(str(SEABIOS)), load_seed(str(IPXE))]
    report = random_campaign(_setup(), Limits(hang_s=2.0), seed=3, runs=4, corpus=corpus,
                             mutation_rate=0.02, out_dir=str(tmp_path))
    fatal = [f for f in report.findings if f["kind"] not in ("slow",)]
    assert report.inputs == 4 and report.ioreqs > 20_000
    assert not report.failed, fatal
    assert report.slowest["device"] and report.p999_ioreq_us > 0
    assert (tmp_path / "slowest.qtest").exists()  # the slowest ioreq is kept as a reproducer


@pytest.mark.skipif(not DEFAULT_BIOS.exists(), reason="SeaBIOS missing (apt-get install seabios)")
def test_seed_from_a_fresh_seabios_boot(tmp_path):
    """The seed pipeline end to end: a real SeaBIOS boot (simulator + daemon) recorded with
    --trace, shrunk into a seed, loaded and replayed without a finding."""
    from devmodel.boot import BootConfig, boot

    trace = tmp_path / "boot.trace"
    res = boot(BootConfig(daemon_args=["--trace", str(trace)], timeout=60))
    assert res.exit_code == 0, res.message
    seed_path = tmp_path / "boot.trace.gz"
    kept = shrink_trace(str(trace), str(seed_path))
    seed = load_seed(str(seed_path))
    assert len(seed) >= kept > 1000  # kept counts messages; a posted batch is many events
    assert seed_path.stat().st_size < trace.stat().st_size // 10
    with Watchdog(2.0):
        out = run_input(b"", _setup(), Limits(hang_s=2.0), seed=seed)
    assert not out.fatal and out.ioreqs > 1000


def test_cli_make_seed_corpus_ioreqs_and_progress(tmp_path):
    """The command line of a long campaign: --make-seed, --corpus, --ioreqs, --progress; the
    JSON report carries the latency figures and the slowest ioreq's reproducer."""
    import json
    import subprocess
    import sys

    seed = tmp_path / "s.trace.gz"
    out = subprocess.run([sys.executable, "-m", "devmodel", "fuzz", "--make-seed", str(SEABIOS),
                          str(seed), "--seed-ioreqs", "500"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["events"] == len(load_seed(str(seed))) and 500 <= made["events"] < 4000
    res = subprocess.run([sys.executable, "-m", "devmodel", "fuzz", "--devices", "all",
                          "--corpus", str(seed), "--ioreqs", "3000", "--progress", "0.001",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["ioreqs"] >= 3000 and report["escapes"] == report["hangs"] == 0
    assert report["p999_ioreq_us"] >= report["p50_ioreq_us"] > 0
    assert report["slowest"]["reproducer"].endswith("slowest")
    assert (tmp_path / "out" / "slowest.trace").exists()
    assert '"progress_s"' in res.stderr


def test_shrink_squashes_polling_and_console_output(tmp_path):
    """A hand-made recording: a register polled 100 times with a CLOCK between polls, posted
    writes to the debug console and to the VGA index port, then real work. The seed keeps
    SQUASH_POLLS of the polls, only CLOCKs that moved time by CLOCK_GRAIN_NS (and the last),
    the posted VGA write but not the console's, and the work in order."""
    from devmodel.fuzz.seeds import CLOCK_GRAIN_NS, SQUASH_POLLS, events_to_trace_records
    from devmodel.trace import RECORD, TO_DM
    from devmodel.wire import codec
    from devmodel.wire.constants import MsgType

    events: list[tuple] = [("io", 0, 0xCF8, 0x80000000, 1, 4, 0)]
    for i in range(100):
        events.append(("io", 1, 0xFEBC00C0, 0, 1, 4, DIR))  # an e1000 ICR poll
        events.append(("clock", (i + 1) * 10_000))  # 10 us apart
    tail = [("io", 0, 0x1F7, 0xC8, 1, 1, 0), ("clock", 5_000_000)]
    raw = tmp_path / "rec.trace"
    raw.write_bytes(events_to_trace_records(events + tail))
    assert load_seed(str(raw)) == events + tail  # the inverse of load_seed
    posted = codec.frame(MsgType.BUFIOREQ, codec.encode_bufioreq(
        [(0, 0x402, 1, ord("x"))] * 20 + [(0, 0x3D4, 1, 0x0E)]), tag=7)
    data = raw.read_bytes()
    cut = len(events_to_trace_records(events))  # the posted batch goes before the tail
    raw.write_bytes(data[:cut] + RECORD.pack(TO_DM, 0, 0, len(posted), 0) + posted + data[cut:])
    seed_path = tmp_path / "rec.trace.gz"
    shrink_trace(str(raw), str(seed_path))
    seed = load_seed(str(seed_path))
    polls = [e for e in seed if e[0] == "io" and e[2] == 0xFEBC00C0]
    assert len(polls) == SQUASH_POLLS
    clocks = [e[1] for e in seed if e[0] == "clock"]
    assert all(b - a >= CLOCK_GRAIN_NS for a, b in zip(clocks, clocks[1:], strict=False))
    assert not [e for e in seed if e[0] == "io" and e[2] == 0x402]
    assert seed[0] == events[0]
    assert seed[-3:] == [("io", 0, 0x3D4, 0x0E, 1, 1, 0), *tail]
