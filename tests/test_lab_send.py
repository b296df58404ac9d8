"""``appliance lab`` and ``appliance replay --send``: a namespace with a multi-queue veth pair, frames sent
out of lab1 by tcpreplay and received on lab0 by tcpdump, and the one-sentence errors.

Every namespace here has a unique name and is deleted by a finalizer; nothing touches the host's interfaces.
"""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from appliance.capture import lab as L

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
APPLIANCE = [sys.executable, "-m", "appliance"]


def cli(*args, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    argv = APPLIANCE + [str(a) for a in args]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, **kw)


def in_ns(ns: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def one_sentence(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("appliance")]) == 1, proc.stderr


@pytest.fixture
def lab_name():
    name = f"appl-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)     # whatever the test left


def pcap_frames(path: Path) -> list[bytes]:
    """Frames of a classic pcap of either resolution (little-endian, as tcpdump writes here)."""
    data = path.read_bytes()
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), data[:4]
    pos, out = 24, []
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + 16 + incl > len(data):
            break
        out.append(data[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    return out


class Receiver:
    """tcpdump on lab0 (inbound only), writing each frame as it arrives."""

    def __init__(self, ns: str, path: Path):
        self.path = path
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", L.CAPTURE_IF, "-Q", "in", "-n",
                                      "-U", "--immediate-mode", "-B", "16384", "-w", str(path)],
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        assert "listening on" in line, line

    dropped = 0                                          # what tcpdump said the kernel dropped for it

    def wait_for(self, count: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(pcap_frames(self.path)) < count:
            time.sleep(0.05)
        time.sleep(0.2)                                  # anything beyond the count would show up now
        return self.stop()

    def stop(self) -> list[bytes]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)
            m = re.search(r"(\d+) packets? dropped by kernel", self.proc.stderr.read())
            self.dropped = int(m.group(1)) if m else 0
        return pcap_frames(self.path)


def tx_dropped(ns: str, dev: str = L.SENDER_IF) -> int:
    """What a veth counted as dropped on its way out: frames its peer's backlog had no room for (a busy CPU),
    which no receiver ever sees or counts."""
    link = json.loads(in_ns(ns, "ip", "-j", "-s", "link", "show", "dev", dev).stdout)[0]
    return link["stats64"]["tx"]["dropped"]


# -- the lab ----------------------------------------------------------------------------------------------
@pytest.mark.root
@pytest.mark.netns
def test_lab_up_is_idempotent_and_down_removes_it(lab_name):
    done = cli("lab", "up", "--name", lab_name, "--queues", "3")
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout and f"ip netns exec {lab_name} appliance replay" in done.stdout
    for dev in (L.CAPTURE_IF, L.SENDER_IF):
        queues = in_ns(lab_name, "ls", f"/sys/class/net/{dev}/queues").stdout.split()
        assert sorted(queues) == ["rx-0", "rx-1", "rx-2", "tx-0", "tx-1", "tx-2"]
        assert in_ns(lab_name, "cat", f"/sys/class/net/{dev}/mtu").stdout.strip() == "1500"
        assert in_ns(lab_name, "cat", f"/sys/class/net/{dev}/operstate").stdout.strip() == "up"
        assert in_ns(lab_name, "cat", f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").stdout.strip() == "1"
        addrs = json.loads(in_ns(lab_name, "ip", "-j", "addr", "show", "dev", dev).stdout)[0]["addr_info"]
        assert [f"{a['local']}/{a['prefixlen']}" for a in addrs] == [L.ADDRESSES[dev]]
    channels = in_ns(lab_name, "ethtool", "-l", L.CAPTURE_IF).stdout
    assert channels.split("Current hardware settings:")[1].split()[:2] == ["RX:", "3"]

    in_ns(lab_name, "ip", "link", "set", L.CAPTURE_IF, "down")
    again = cli("lab", "up", "--name", lab_name)           # no --queues: any count is accepted
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout and "3 rx and 3 tx queues" in again.stdout
    assert in_ns(lab_name, "cat", f"/sys/class/net/{L.CAPTURE_IF}/operstate").stdout.strip() == "up"

    other = cli("lab", "up", "--name", lab_name, "--queues", "2")
    assert other.returncode == 1 and "not 2" in other.stderr
    one_sentence(other)

    gone = cli("lab", "down", "--name", lab_name)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    assert not Path(f"/run/netns/{lab_name}").exists()
    absent = cli("lab", "down", "--name", lab_name)
    assert absent.returncode == 0 and "no such network namespace" in absent.stdout


@pytest.mark.root
@pytest.mark.netns
def test_lab_context_manager_always_deletes(lab_name):
    with pytest.raises(RuntimeError):
        with L.Lab(lab_name, 2) as lab:
            assert lab.exists()
            assert lab.netns_cmd(["true"]) == ["ip", "netns", "exec", lab_name, "true"]
            assert subprocess.run(lab.netns_cmd(["test", "-d", "/sys/class/net/lab0/queues/rx-1"])).returncode == 0
            raise RuntimeError("the body failed")
    assert not L.Lab(lab_name).exists()


@pytest.mark.root
def test_lab_needs_root_says_so(lab_name):
    done = cli("lab", "up", "--name", lab_name, user=65534, env={**os.environ, "HOME": "/tmp"})
    assert done.returncode == 77, done.stderr
    assert "needs root" in done.stderr
    one_sentence(done)


# -- sending ----------------------------------------------------------------------------------------------
@pytest.mark.root
@pytest.mark.netns
def test_sample_sent_from_lab1_arrives_whole_on_lab0(lab_name, tmp_path):
    expected = pcap_frames(SAMPLE)
    with L.Lab(lab_name) as lab:
        receiver = Receiver(lab.name, tmp_path / "got.pcap")
        try:
            sent = cli("replay", SAMPLE, "--send", L.SENDER_IF, "--pps", "20000", ns=lab.name)
            got = receiver.wait_for(len(expected))
        finally:
            receiver.stop()
        veth_dropped = tx_dropped(lab.name)
    assert sent.returncode == 0, sent.stderr
    assert f"sent       {len(expected):,} frames" in sent.stdout and "0 failed" in sent.stdout
    assert len(expected) == 8328
    # every frame, byte for byte -- or, when a busy machine starved tcpdump or the veth's backlog, the ones lost
    # are the ones the kernel counted as dropped (the sender's side is what this tests)
    assert not collections.Counter(got) - collections.Counter(expected)
    assert len(got) + receiver.dropped + veth_dropped == len(expected), (len(got), receiver.dropped, veth_dropped)


@pytest.mark.root
@pytest.mark.netns
def test_gzipped_pcapng_is_sent_twice(lab_name, tmp_path):
    feed = tmp_path / "feed.pcapng.gz"
    made = cli("generate", feed, "--format", "pcapng", "--gzip", "--messages", "3000", "--instruments", "20")
    assert made.returncode == 0, made.stderr
    decoded = cli("replay", feed, "--out", tmp_path / "out", "-q")
    assert decoded.returncode == 0, decoded.stderr
    frames = json.loads((tmp_path / "out" / "summary.json").read_text())["frames"]
    with L.Lab(lab_name) as lab:
        receiver = Receiver(lab.name, tmp_path / "got.pcap")
        before = tx_dropped(lab.name)
        try:
            sent = cli("replay", feed, "--send", L.SENDER_IF, "--pps", "50000", "--loop", "2", ns=lab.name)
            got = receiver.wait_for(2 * frames)
        finally:
            receiver.stop()
        veth_dropped = tx_dropped(lab.name) - before
        # As fast as it goes (~400k pps here), more than tcpdump keeps up with: tcpreplay's own count only.
        fast = cli("replay", SAMPLE, "--send", L.SENDER_IF, "--topspeed", ns=lab.name)
    assert sent.returncode == 0, sent.stderr
    assert f"sent       {2 * frames:,} frames" in sent.stdout
    # every frame twice -- or, on a busy machine, fewer by exactly what the kernel counted as dropped on the way
    # (the veth's backlog) or for tcpdump (the sender's side is what this tests)
    assert len(got) + receiver.dropped + veth_dropped == 2 * frames, (len(got), receiver.dropped, veth_dropped)
    assert fast.returncode == 0, fast.stderr
    assert "sent       8,328 frames" in fast.stdout and "0 failed" in fast.stdout


@pytest.mark.root
@pytest.mark.netns
def test_send_errors_inside_the_lab(lab_name, tmp_path):
    day = tmp_path / "day.itch"
    assert cli("generate", day, "--format", "dayfile", "--messages", "400", "--instruments", "10").returncode == 0
    with L.Lab(lab_name, 1) as lab:
        missing = cli("replay", SAMPLE, "--send", "lab9", ns=lab.name)
        assert missing.returncode == 2 and "interface 'lab9' does not exist" in missing.stderr
        one_sentence(missing)
        dayfile = cli("replay", day, "--send", L.SENDER_IF, ns=lab.name)
        assert dayfile.returncode == 2 and "is a NASDAQ day file" in dayfile.stderr
        one_sentence(dayfile)
        in_ns(lab.name, "ip", "link", "set", L.SENDER_IF, "down")
        down = cli("replay", SAMPLE, "--send", L.SENDER_IF, ns=lab.name)
        assert down.returncode == 1 and "tcpreplay failed" in down.stderr and "Network is down" in down.stderr
        one_sentence(down)


# -- command-line errors, unprivileged --------------------------------------------------------------------
@pytest.mark.parametrize("args, code, words", [
    (["replay", SAMPLE, "--send", "no-such-if0"], 2, "interface 'no-such-if0' does not exist"),
    (["replay", SAMPLE, "--send", "lo", "--out", "/tmp/x"], 2, "--out is a decode option"),
    (["replay", SAMPLE, "--send", "lo", "--feed", "233.54.12.1:26400", "--messages"], 2,
     "--feed, --messages are decode options"),
    (["replay", SAMPLE, "--out", "/tmp/x", "--pps", "5"], 2, "go with --send"),
    (["replay", SAMPLE], 2, "--out DIR is required"),
    (["replay", SAMPLE, "--send", "lo", "--pps", "5", "--topspeed"], 2, "not allowed with"),
    (["replay", "/nonexistent.pcap", "--send", "lo"], 3, "does not exist"),
    (["lab", "sideways"], 2, "invalid choice"),
    (["lab", "down", "--queues", "2"], 2, "--queues goes with 'up' only"),
])
def test_command_line_errors_are_one_sentence(args, code, words):
    done = cli(*args)
    assert done.returncode == code, done.stderr
    assert words in done.stderr
    one_sentence(done)


def test_day_file_has_nothing_to_send(tmp_path):
    day = tmp_path / "day.itch"
    assert cli("generate", day, "--format", "dayfile", "--messages", "400", "--instruments", "10").returncode == 0
    done = cli("replay", day, "--send", "lo")
    assert done.returncode == 2 and "is a NASDAQ day file" in done.stderr
    one_sentence(done)


def test_tcpreplay_statistics_are_parsed():
    from appliance.capture.send import parse_stats

    text = ("Actual: 8328 packets (1810895 bytes) sent in 0.416353 seconds\n"
            "Rated: 4349422.2 Bps, 34.79 Mbps, 20002.25 pps\n"
            "Flows: 3 flows, 7.20 fps, 8327 unique flow packets, 1 unique non-flow packets\n"
            "Statistics for network device: lab1\n\tSuccessful packets:        8326\n\tFailed packets:            2\n"
            "\tTruncated packets:         0\n\tRetried packets (ENOBUFS): 3\n\tRetried packets (EAGAIN):  0\n")
    r = parse_stats(text, "lab1")
    assert (r.sent, r.failed, r.bytes, r.elapsed_seconds, r.pps, r.mbps, r.retried_enobufs) == (
        8326, 2, 1810895, 0.416353, 20002.25, 34.79, 3)
