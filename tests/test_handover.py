"""Handover without loss between two captures (issue 10 item 6; ``capture/handover.py``), both engines.

A generated A/B feed (600,000 messages, about 155,000 frames, 7.8 s) is sent at 20k pps; a capture with
``--handover-socket`` takes it, a second one started beside it with ``--take-over`` takes the feed in the middle
(TPACKET: switches the fan-out group's program to itself; AF_XDP: takes the old one's sockets and rings over at
the index where it stopped).  The MoldUDP64 packets of both packets.csv together equal replay's of the pcap, each
(line, session, sequence, count) exactly as often -- none lost, none twice; the old capture stops with
``handover`` and exits 0; the new one says it started mid-session.  Root and a lab namespace.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import module_lab
from test_capture import REPO, _appliance, wait_capturing

pytestmark = [pytest.mark.root, pytest.mark.netns]

FEEDS = ["233.54.12.1:26400", "233.54.12.2:26400"]
PPS = "20000"

lab = module_lab("appl-ho", queues=1)


@pytest.fixture(scope="module")
def feed(tmp_path_factory):
    """The generated feed and replay's packets.csv of it (the reference)."""
    d = tmp_path_factory.mktemp("feed")
    pcap = d / "feed.pcap"
    done = subprocess.run(_appliance("generate", "--messages", "600000", "--ab", str(pcap)), capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(_appliance("replay", str(pcap), "--out", str(d / "replay"), "--packets", "-q"),
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return pcap, _packets(d / "replay" / "packets.csv")


def _packets(path: Path) -> Counter:
    """Every MoldUDP64 packet as (line, session, sequence, count); the status is left out: a packet's other
    line's copy may have been the first one in one process and not in the other."""
    with path.open() as f:
        return Counter((r["line"], r["session"], r["sequence"], r["count"]) for r in csv.DictReader(f))


def _capture(lab, out: Path, *extra: str, engine: str = "tpacket") -> subprocess.Popen:
    argv = ["capture", "--iface", "lab0", "--engine", engine, "--out", str(out), "--packets", "--no-prefault",
            "--linger", "1"]
    for f in FEEDS:
        argv += ["--feed", f]
    return subprocess.Popen(lab.netns_cmd(_appliance(*argv, *extra)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def _all_or_counted(sent: Counter, got: Counter, *summaries) -> None:
    """Every packet sent arrived once, or -- when the machine starved a capture long enough for its ring to fill
    (a busy CI box) -- the ones missing are exactly the frames the kernel counted as ring drops (one packet a
    frame): a frame lost by the switch itself, uncounted, fails this."""
    assert not got - sent                                 # nothing that was not sent, nothing more often
    dropped = sum(s["capture"]["drops"].get(where, 0) for s in summaries for where in ("ring", "socket", "xdp"))
    assert sum((sent - got).values()) == dropped, (sum((sent - got).values()), dropped)
    frames = sum(s["capture"]["counters"]["ring_frames"] for s in summaries)
    assert frames + dropped == sum(sent.values())


def _reap(procs: list[subprocess.Popen]) -> None:
    """Kill whatever a failed test left running."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("a capture did not stop: " + err)
    return err


@pytest.mark.parametrize("engine,version", [("tpacket", "3"), ("tpacket", "2"), ("xdp", None)])
def test_handover_in_the_middle_of_the_feed_loses_nothing_and_takes_nothing_twice(lab, feed, tmp_path, engine,
                                                                                  version):
    pcap, sent = feed
    sock = str(tmp_path / "handover.sock")
    ring = ("--tpacket-version", version) if version else ()
    procs = []
    try:
        old = _capture(lab, tmp_path / "old", *ring, "--handover-socket", sock, engine=engine)
        procs.append(old)
        said = wait_capturing(old)
        assert "capturing on" in said[-1], "".join(said) + old.stderr.read()
        sender = subprocess.Popen(lab.netns_cmd(_appliance("replay", str(pcap), "--send", "lab1", "--pps", PPS)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(sender)
        time.sleep(0.3)                     # the new one needs several seconds to start (imports, kernels, rings)
        new = _capture(lab, tmp_path / "new", *ring, "--take-over", sock, "--handover-socket", sock, engine=engine)
        procs.append(new)
        t0 = time.monotonic()
        new_said = wait_capturing(new)
        assert "capturing on" in new_said[-1], "".join(new_said) + new.stderr.read()
        assert sender.poll() is None, (f"the feed ended before the switch ({time.monotonic() - t0:.1f} s after the "
                                       "new capture started): the test proves nothing")
        old_err = _finish(old)
        assert old.returncode == 0, old_err
        _, sender_err = sender.communicate(timeout=60)
        assert sender.returncode == 0, sender_err
        new_err = _finish(new)
        assert new.returncode == 0, new_err
    finally:
        _reap(procs)
    assert not os.path.exists(sock)                # the new one listened after the old left, and removed it at exit

    old_sum = json.loads((tmp_path / "old" / "summary.json").read_text())
    new_sum = json.loads((tmp_path / "new" / "summary.json").read_text())
    got_old, got_new = _packets(tmp_path / "old" / "packets.csv"), _packets(tmp_path / "new" / "packets.csv")
    assert sum(got_old.values()) > 5_000 and sum(got_new.values()) > 5_000     # the switch was in the middle
    assert not set(got_old) & set(got_new)                # none twice
    _all_or_counted(sent, got_old + got_new, old_sum, new_sum)

    handed = old_sum["capture"]["handover"]["handed_over"]
    assert old_sum["capture"]["stop_reason"] == "handover" and handed["drained"] is True
    took = new_sum["capture"]["handover"]["took_over"]
    assert took["predecessor_pid"] and took["predecessor"]["frames"] == old_sum["capture"]["counters"]["ring_frames"]
    (session,) = took["sessions"]
    assert session["started_mid_session"] is True and session["first_sequence"] > 1
    (before,) = took["predecessor"]["sessions"]
    assert before["first_sequence"] == 1 and not before["started_mid_session"]
    # the first sequence the new one saw is at most one A/B packet past where the old one stopped
    assert session["first_sequence"] <= before["next_sequence"] + 20
    assert new_sum["capture"]["stop_reason"] == "end_of_session"
    if engine == "xdp":
        # one set of sockets, passed on: the new one started at the very indices the old one stopped at, and
        # the program stayed attached (a detach would have left the new one without frames); the program's
        # counters are split between the two at the switch (frames waiting in the rx ring then were redirected
        # under the old one's count and taken by the new one), so only the sums must agree
        assert took["took_at"] == handed["stopped_at"]
        both = (old_sum["capture"], new_sum["capture"])
        assert sum(c["xdp_counters"]["redirect"] for c in both) == \
            sum(c["counters"]["ring_frames"] + c["drops"]["socket"] for c in both)
        what = f"paused {took['switch_us']} us"
    else:
        what = f"switch {took['switch_us']} us, old drained in {handed['drain_seconds']} s"
    print(f"\n{engine} {version or ''}: {what}; old {sum(got_old.values()):,} packets, new {sum(got_new.values()):,}")


def test_take_over_needs_a_listening_capture_and_the_same_feeds(lab, tmp_path):
    missing = subprocess.run(lab.netns_cmd(_appliance(
        "capture", "--iface", "lab0", "--engine", "tpacket", "--feed", FEEDS[0], "--out", str(tmp_path / "x"),
        "--no-prefault", "--take-over", str(tmp_path / "nobody.sock"))), capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "no capture listens there" in missing.stderr, missing.stderr
    xdp = subprocess.run(lab.netns_cmd(_appliance(
        "capture", "--iface", "lab0", "--feed", FEEDS[0], "--out", str(tmp_path / "y"), "--take-over",
        str(tmp_path / "s.sock"))), capture_output=True, text=True, cwd=REPO)
    assert xdp.returncode == 2 and "no capture listens there" in xdp.stderr, xdp.stderr

    sock = str(tmp_path / "handover.sock")
    old = _capture(lab, tmp_path / "old", "--handover-socket", sock, "--no-stop-at-end")
    said = wait_capturing(old)
    assert "capturing on" in said[-1], "".join(said)
    other = subprocess.run(lab.netns_cmd(_appliance(
        "capture", "--iface", "lab0", "--engine", "tpacket", "--feed", FEEDS[0], "--out", str(tmp_path / "z"),
        "--no-prefault", "--take-over", sock)), capture_output=True, text=True, cwd=REPO)
    assert other.returncode == 2 and "same ones" in other.stderr, other.stderr
    engine = subprocess.run(lab.netns_cmd(_appliance(
        "capture", "--iface", "lab0", "--engine", "xdp", *(a for f in FEEDS for a in ("--feed", f)),
        "--out", str(tmp_path / "w"), "--no-prefault", "--take-over", sock)), capture_output=True, text=True, cwd=REPO)
    assert engine.returncode == 2 and "uses --engine tpacket" in engine.stderr, engine.stderr
    old.terminate()
    err = _finish(old)
    assert old.returncode == 0, err
    assert json.loads((tmp_path / "old" / "summary.json").read_text())["capture"]["stop_reason"] == "SIGTERM"


def _serve_config(root: Path, sock: str, port: int, engine: str = "tpacket") -> Path:
    lines = ", ".join(f'{{name = "{n}", group = "{f.split(":")[0]}", port = {f.split(":")[1]}}}'
                      for n, f in zip("AB", FEEDS))
    config = root / "appliance.toml"
    config.write_text(f"""[capture]
interface = "lab0"
engine = "{engine}"
prefault = false
[feeds.test]
lines = [{lines}]
[recording]
enabled = false
[outputs.tables]
kind = "csv"
directory = "{root / 'tables'}"
packets = true
[metrics]
listen = "127.0.0.1:{port}"
[service]
state_directory = "{root / 'state'}"
handover_socket = "{sock}"
""")
    return config


def _lines_until(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> list[str]:
    """serve's stderr lines up to one containing ``pattern`` (or its end)."""
    said, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        said.append(line)
        if pattern in line:
            return said
    raise AssertionError(f"serve never said {pattern!r}: " + "".join(said))


@pytest.mark.parametrize("engine", ["tpacket", "xdp"])
def test_serve_take_over_hands_the_session_to_a_new_serve_without_loss(lab, feed, tmp_path, engine):
    """`appliance serve --take-over` beside a running serve (the same config, service.handover_socket, the
    metrics port shared through SO_REUSEPORT): the old one stops with the handover, files what it had and exits
    0; the new one files the rest of the session next to it; their packets together are replay's, once each."""
    pcap, sent = feed
    sock = str(tmp_path / "handover.sock")
    config = _serve_config(tmp_path, sock, 9100 + os.getpid() % 700, engine)
    procs = []
    try:
        old = subprocess.Popen(lab.netns_cmd(_appliance("serve", "--config", str(config))), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(old)
        _lines_until(old, "capturing on lab0")
        # 10k pps: the feed lasts ~15 s, time for a new serve to start (imports, kernels, rings) on a busy machine
        sender = subprocess.Popen(lab.netns_cmd(_appliance("replay", str(pcap), "--send", "lab1", "--pps", "10000")),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(sender)
        time.sleep(0.3)
        new = subprocess.Popen(lab.netns_cmd(_appliance("serve", "--config", str(config), "--take-over")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(new)
        _lines_until(new, "capturing on lab0")
        assert sender.poll() is None, "the feed ended before the switch: the test proves nothing"
        old_err = _finish(old)
        assert old.returncode == 0, old_err
        assert "stopped by handover" in old_err, old_err
        _, sender_err = sender.communicate(timeout=60)
        assert sender.returncode == 0, sender_err
        _lines_until(new, "filed in")                  # the new one files the rest of the session at its end
        new.terminate()
        new_err = _finish(new)
        assert new.returncode == 0, new_err
    finally:
        _reap(procs)
    filed = sorted(p for p in (tmp_path / "tables").iterdir() if not p.name.startswith("incoming-"))
    assert len(filed) == 2, filed                      # the old one's part of the session, then the new one's
    first, second = (json.loads((p / "summary.json").read_text()) for p in filed)
    got = [_packets(p / "packets.csv") for p in filed]
    assert sum(got[0].values()) > 5_000 and sum(got[1].values()) > 5_000
    assert not set(got[0]) & set(got[1])
    _all_or_counted(sent, got[0] + got[1], first, second)
    assert first["capture"]["stop_reason"] == "handover"
    (session,) = second["capture"]["handover"]["took_over"]["sessions"]
    assert session["started_mid_session"] is True
    assert not os.path.exists(sock)


def test_an_xdp_successor_that_goes_away_before_yield_leaves_the_old_capture_whole(lab, tmp_path):
    """A would-be successor says hello, receives the AF_XDP offer with every fd (link, program, maps, sockets,
    UMEMs), then closes without asking the old capture to stop: the old one goes on, takes the whole feed and
    ends normally, with its program detached."""
    pcap = tmp_path / "small.pcap"
    made = subprocess.run(_appliance("generate", "--messages", "20000", "--ab", str(pcap)), capture_output=True,
                          text=True, cwd=REPO)
    assert made.returncode == 0, made.stderr
    sock = str(tmp_path / "handover.sock")
    old = _capture(lab, tmp_path / "old", "--handover-socket", sock, engine="xdp")
    try:
        said = wait_capturing(old)
        assert "capturing on" in said[-1], "".join(said) + old.stderr.read()
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        helper = lab.netns_cmd([sys.executable, "-c", f"""
import json, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect({sock!r})
s.sendall(json.dumps({{"op": "hello", "pid": 1, "engine": "xdp"}}).encode() + b"\\n")
data, fds, _, _ = socket.recv_fds(s, 65536, 64)
print(json.loads(data.split(b"\\n")[0])["op"], len(fds))
"""])
        offered = subprocess.run(helper, capture_output=True, text=True, timeout=30)
        assert offered.stdout.split() == ["xdp", "7"], offered.stdout + offered.stderr   # 5 + a socket and a UMEM
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(pcap), "--send", "lab1", "--pps", PPS)),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        err = _finish(old)
        assert old.returncode == 0, err
    finally:
        _reap([old])
    done = json.loads((tmp_path / "old" / "summary.json").read_text())
    assert done["capture"]["stop_reason"] == "end_of_session" and "handover" not in done["capture"]
    replay = subprocess.run(_appliance("replay", str(pcap), "--out", str(tmp_path / "replay"), "-q"),
                            capture_output=True, text=True, cwd=REPO)
    assert replay.returncode == 0, replay.stderr
    frames = json.loads((tmp_path / "replay" / "summary.json").read_text())["frames"]
    assert done["capture"]["counters"]["ring_frames"] + done["capture"]["drops"]["socket"] == frames
    assert "xdp" not in subprocess.run(lab.netns_cmd(["ip", "link", "show", "lab0"]), capture_output=True,
                                       text=True).stdout     # detached at the end: nobody else held the link
