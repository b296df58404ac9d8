"""``appliance warm``: every kernel a capture runs, compiled (or loaded) before a capture needs it.

Checked where it matters: with a numba cache of its own, ``warm`` then a live AF_XDP capture (with tables and a
recording) of the sample in a lab namespace, and the capture adds nothing to the cache -- the ring kernel it runs
is the very one ``warm`` compiled (same types), and so are its cold processes' and its end's.  About a minute and a
half of compiling; root and a lab.  The command line's refusals are checked quickly.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import module_lab
from test_capture import wait_capturing

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
FEEDS = ["233.54.12.1:26400", "233.54.12.2:26400"]

lab = module_lab("appl-warm")


def _appliance(*argv: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *argv]


def test_bad_queue_counts_are_one_sentence():
    for bad in ("0", "x", "3-1", "1-99"):
        done = subprocess.run(_appliance("warm", "--xdp-queues", bad), capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 2, (bad, done.stderr)
        assert "--xdp-queues" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.netns
def test_a_capture_after_warm_compiles_nothing(lab, tmp_path):
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    warmed = subprocess.run(_appliance("warm", "--xdp-queues", "1"), capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=1200)
    assert warmed.returncode == 0, warmed.stderr
    steps = [line.split(":")[1].strip() for line in warmed.stdout.splitlines()[:-1]]
    assert steps == ["AF_XDP ring kernel, 1 queue", "TPACKET_V3 ring kernel", "TPACKET_V2 ring kernel",
                     "cold side (output and recording processes)", "NATS publisher's wire"], warmed.stdout
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.nb*")}
    assert before

    argv = _appliance("capture", "--iface", "lab0", "--engine", "xdp", "--out", str(tmp_path / "out"),
                      "--record", str(tmp_path / "rec"))
    for feed in FEEDS:
        argv += ["--feed", feed]
    proc = subprocess.Popen(lab.netns_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    try:
        said = wait_capturing(proc)
        assert "capturing on" in said[-1], "".join(said) + proc.stderr.read()
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        _, err = proc.communicate(timeout=300)             # the sample ends its session: the capture stops
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*.nb*")}
    changed = sorted(p.name for p in after if after[p] != before.get(p))
    assert not changed, f"the capture compiled: {changed}"
