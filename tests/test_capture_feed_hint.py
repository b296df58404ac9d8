"""What a live capture tells its operator (issue 8, "smaller things a user tripped over", and item 12):

* a capture on the wrong ``--feed`` names the multicast lines that did arrive (summary.json and one sentence) and
  exits 1; one that received no multicast at all says so and exits 0;
* ``-q`` keeps the readiness line, and ``--ready-file`` appears once the rings are up and is gone at the end;
* a hostile session name reaches validate's messages escaped.
Root and network namespaces; each test makes and deletes its own lab.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
SAMPLE_LINES = {"233.54.12.1:26400", "233.54.12.2:26400"}
WRONG = "233.54.12.9:26400"


def _appliance(*argv: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *argv]


def _wait_for_file(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds                    # a first run compiles the kernels
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists():
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no ready file; capture said: {proc.communicate()[1]}")


@pytest.mark.parametrize("engine", ["tpacket", "xdp"])
def test_wrong_feed_names_the_lines_that_arrived(engine, tmp_path):
    """The sample's two lines are sent to a capture of another group: exit 1, one sentence naming both lines
    with frame counts, the same in summary.json; -q printed no report but did print the readiness line; the
    ready file was there while capturing and is gone after."""
    from appliance.capture.lab import Lab

    ready, out = tmp_path / "ready.json", tmp_path / "out"
    with Lab(f"appl-wf-{os.getpid()}", queues=1) as lab:
        proc = subprocess.Popen(lab.netns_cmd(_appliance(
            "capture", "--iface", "lab0", "--engine", engine, "--feed", WRONG, "--out", str(out), "-q",
            "--no-prefault", "--ready-file", str(ready))), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO)
        _wait_for_file(ready, proc)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid and info["interface"] == "lab0" and info["engine"] == engine
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        time.sleep(0.5)                                        # a tick or two for the watcher to read
        proc.send_signal(signal.SIGINT)                        # ip netns exec execs python: the same pid
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert stdout == ""                                        # -q: no report
    assert any(line.startswith("appliance: capturing on lab0") for line in stderr.splitlines())
    last = stderr.strip().splitlines()[-1]
    assert f"no frame of the feed ({WRONG}) arrived on lab0" in last and "check --feed" in last
    for line in SAMPLE_LINES:
        assert f"{line} (" in last
    seen = json.loads((out / "summary.json").read_text())["capture"]["multicast_seen"]
    assert {f"{ln['group']}:{ln['port']}" for ln in seen["lines"]} == SAMPLE_LINES
    assert all(ln["frames"] > 0 for ln in seen["lines"]) and seen["until"] == "end"
    assert not ready.exists()


def test_capture_that_receives_no_multicast_warns_and_exits_0(tmp_path):
    from appliance.capture.lab import Lab

    out = tmp_path / "out"
    with Lab(f"appl-nf-{os.getpid()}", queues=1) as lab:
        done = subprocess.run(lab.netns_cmd(_appliance(
            "capture", "--iface", "lab0", "--engine", "tpacket", "--feed", WRONG, "--out", str(out), "-q",
            "--no-prefault", "--duration", "1")), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("appliance: warning: no frame of the feed") and "no IPv4 UDP multicast arrived" in last
    seen = json.loads((out / "summary.json").read_text())["capture"]["multicast_seen"]
    assert seen["lines"] == [] and seen["seconds"] >= 0.9


def test_feed_frames_close_the_watcher(tmp_path):
    """A capture of the right feed: the watcher stopped at the first feed frame, no warning."""
    from appliance.capture.lab import Lab

    ready, out = tmp_path / "ready.json", tmp_path / "out"
    with Lab(f"appl-ok-{os.getpid()}", queues=1) as lab:
        argv = _appliance("capture", "--iface", "lab0", "--engine", "tpacket", "--out", str(out), "--no-prefault",
                          "--ready-file", str(ready), *[a for f in sorted(SAMPLE_LINES) for a in ("--feed", f)])
        proc = subprocess.Popen(lab.netns_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        _wait_for_file(ready, proc)
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        stdout, stderr = proc.communicate(timeout=120)          # stops at the end of session
    assert proc.returncode == 0, stderr
    assert "no frame of the feed" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["messages"] == 19_999
    assert summary["capture"]["multicast_seen"]["until"] == "first_feed_frame"
    assert not ready.exists()


def _cut_and_rename(src: Path, dst: Path, records: int, old: bytes, new: bytes) -> None:
    """The first ``records`` frames of a classic pcap (the end-of-session packet is the last), with the session
    name replaced (same length: no length field changes; the decoders do not check UDP checksums)."""
    data = src.read_bytes()
    pos, kept = 24, 0
    while kept < records and pos + 16 <= len(data):
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "little")
        kept += 1
    dst.write_bytes(data[:pos].replace(old, new))


def test_hostile_session_name_is_escaped_in_validate_messages(tmp_path):
    """A session named with an ESC sequence and no end-of-session packet: validate announces that it will stop the
    capture itself, naming the session -- escaped, never the raw ESC byte -- and still passes."""
    hostile = b"\x1b[31mEVIL!"
    assert len(hostile) == len(b"TEST000001")
    feed = tmp_path / "hostile.pcap"
    _cut_and_rename(SAMPLE, feed, 8300, b"TEST000001", hostile)
    done = subprocess.run(_appliance("validate", str(feed), "--engine", "tpacket", "--out", str(tmp_path / "v")),
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    assert "no end-of-session packet for session \\x1b[31mEVIL!" in done.stderr
    replay = json.loads((tmp_path / "v" / "replay" / "summary.json").read_text())
    assert replay["sessions"][0]["session"] == hostile.decode()         # summary.json keeps the bytes as sent
