"""``capture --workers N`` (TPACKET_V3 fan-out), as a new user found it (issue 8):

* one readiness line once every worker takes frames (and ``--ready-file``);
* workers that join the fan-out group at different times must not split a line between them: a feed already
  flowing when the capture starts keeps each line on one worker;
* a worker whose lines all went elsewhere stops when another worker saw the end of session;
* every line on one worker is warned about.
Root and network namespaces; each test makes and deletes its own lab.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_capture import REPO, SAMPLE, _appliance, wait_capturing

pytestmark = [pytest.mark.root, pytest.mark.netns]

LINE_A = "233.54.12.1:26400"
PORTS = range(26400, 26408)          # eight lines of heartbeats: a split of any of them is seen

HEARTBEATS = textwrap.dedent("""
    import socket, struct, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.250.0.2"))
    ports = [int(p) for p in sys.argv[1:]]
    seq = 1
    while True:                      # MoldUDP64 heartbeats (count 0) on every line, about 4,000 a second
        for port in ports:
            s.sendto(b"HBTEST0001" + struct.pack(">QH", seq, 0), ("233.54.12.1", port))
        seq += 1
        time.sleep(0.002)
""")


def _workers(out: Path) -> dict:
    return json.loads((out / "workers.json").read_text())


def test_workers_announce_readiness_and_stop_together_at_end_of_session(tmp_path):
    """One line for two workers: one worker gets it all, the other nothing.  The parent says 'capturing on' once
    both take frames and writes the ready file; the busy worker stops at the end of session and the idle one
    follows (before: it never saw an end of session and the capture never stopped); the one-worker spread is
    warned about."""
    from appliance.capture.lab import Lab

    out, ready = tmp_path / "out", tmp_path / "ready.json"
    with Lab(f"appl-wk-{os.getpid()}", queues=1) as lab:
        proc = subprocess.Popen(lab.netns_cmd(_appliance(
            "capture", "--iface", "lab0", "--engine", "tpacket", "--workers", "2", "--feed", LINE_A, "--out",
            str(out), "--no-prefault", "--ready-file", str(ready))), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=REPO)
        said = wait_capturing(proc)
        assert said[-1].startswith("appliance: capturing on lab0 (TPACKET_V3, 2 workers, hash fan-out"), said
        assert json.loads(ready.read_text())["pid"] == proc.pid
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the capture did not stop after the end of session")
    assert proc.returncode == 0, stderr
    res = _workers(out)
    assert sorted(w["stop_reason"] for w in res["workers"]) == ["end_of_session", "peer_end_of_session"]
    assert sorted(w["lines"] for w in res["workers"]) == [[], [LINE_A]]
    assert res["total"]["frames"] > 4_000 and res["total"]["drops"] == 0
    assert "every line went to worker" in stderr and "every line went to worker" in res["warnings"][0]
    assert not ready.exists()


def test_a_feed_flowing_at_start_is_not_split_between_workers(tmp_path):
    """Heartbeats on eight lines flow before and while two workers start.  Before the start line, the first
    worker to join took every line until the second joined, which then took about half of them: those lines
    were split between the two.  Now no worker takes a frame before both have joined."""
    from appliance.capture.lab import Lab

    out = tmp_path / "out"
    feeds = [a for p in PORTS for a in ("--feed", f"233.54.12.1:{p}")]
    with Lab(f"appl-ws-{os.getpid()}", queues=1) as lab:
        sender = subprocess.Popen(lab.netns_cmd([sys.executable, "-c", HEARTBEATS, *map(str, PORTS)]))
        try:
            time.sleep(0.5)
            done = subprocess.run(lab.netns_cmd(_appliance(
                "capture", "--iface", "lab0", "--engine", "tpacket", "--workers", "2", *feeds, "--out", str(out),
                "--no-prefault", "--duration", "3", "-q")), capture_output=True, text=True, cwd=REPO, timeout=300)
        finally:
            sender.kill()
            sender.wait()
    assert done.returncode == 0, done.stderr
    res = _workers(out)
    holders = {}
    for w in res["workers"]:
        for line in w["lines"]:
            holders.setdefault(line, []).append(w["worker"])
    assert len(holders) == len(PORTS)
    assert all(len(workers) == 1 for workers in holders.values()), holders
    assert not any("split" in w for w in res["warnings"])


def _workers_of(out: Path) -> list[int]:
    """Pids of capture workers writing under ``out``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (entry.name.isdigit() and b"capture" in cmd and b"--workers" not in cmd
                and any(str(out).encode() in a for a in cmd)):
            found.append(int(entry.name))
    return found


def test_workers_stop_when_their_supervisor_is_killed(tmp_path):
    """SIGKILL of the `--workers` process (nothing of it runs again) once left its workers capturing for ever,
    orphaned; now each gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and stops, writing its summary."""
    from appliance.capture.lab import Lab

    out = tmp_path / "out"
    with Lab(f"appl-wd-{os.getpid()}", queues=1) as lab:
        proc = subprocess.Popen(lab.netns_cmd(_appliance(
            "capture", "--iface", "lab0", "--engine", "tpacket", "--workers", "2", "--feed", LINE_A, "--out",
            str(out), "--no-prefault")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            line = wait_capturing(proc)[-1]
            assert "capturing on" in line, line
            assert len(_workers_of(out)) == 2
            proc.kill()
            proc.wait()
            deadline = time.monotonic() + 60          # a worker waits up to 10 s for its peers, then writes
            while _workers_of(out) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = _workers_of(out)
        finally:
            for pid in _workers_of(out):
                os.kill(pid, 9)
    assert left == [], "workers outlived their supervisor"
    for k in range(2):
        summary = json.loads((out / f"worker-{k}" / "summary.json").read_text())
        assert summary["capture"]["stop_reason"] == "SIGTERM"
