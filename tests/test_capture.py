"""Live capture end to end, in a lab namespace each test module creates and deletes (veth lab0 <-> lab1).

* ``appliance validate`` passes for both engines: live capture of pcaps/sample.pcap equals its offline replay;
* a full ring is never silent: frames sent while nobody reads are either received later or counted as drops
  by the kernel, for TPACKET_V3 (tp_drops) and AF_XDP (rx_dropped / rx_ring_full);
* a capture killed with SIGKILL leaves no XDP program attached, and the next capture starts;
* rings and UMEM are unmapped when their context exits;
* recorded files of a capture killed with SIGKILL read back in tshark and in replay.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import module_lab

pytestmark = [pytest.mark.root, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
FEEDS = ["233.54.12.1:26400", "233.54.12.2:26400"]


def _appliance(*argv: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *argv]


lab = module_lab("appl-cap", queues=2)


def _in_lab(lab, code: str, timeout: float = 120) -> dict:
    """Run a Python snippet in the lab's namespace; it prints one JSON line last."""
    done = subprocess.run(lab.netns_cmd([sys.executable, "-c", textwrap.dedent(code)]), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _attached(lab) -> str:
    out = subprocess.run(["ip", "-n", lab.name, "-d", "-j", "link", "show", "dev", "lab0"], capture_output=True,
                         text=True, check=True).stdout
    return json.dumps(json.loads(out)[0].get("xdp", {}))


def _start_capture(lab, out: Path, *extra: str) -> subprocess.Popen:
    argv = _appliance("capture", "--iface", "lab0", "--out", str(out), *extra)
    for feed in FEEDS:
        argv += ["--feed", feed]
    proc = subprocess.Popen(lab.netns_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    said = wait_capturing(proc)
    if "capturing on" in said[-1]:
        return proc
    proc.kill()
    raise AssertionError("capture did not start: " + "".join(said) + proc.stderr.read())


def wait_capturing(proc: subprocess.Popen, timeout: float = 300) -> list[str]:
    """The capture's stderr lines up to its readiness line ("capturing on"), or up to its end (a first run
    compiles the kernels, hence the long timeout)."""
    said = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        said.append(proc.stderr.readline())
        if "capturing on" in said[-1] or not said[-1]:
            break
    return said


@pytest.mark.parametrize("engine", ["tpacket", "xdp"])
def test_validate_passes(engine, tmp_path):
    done = subprocess.run(_appliance("validate", str(SAMPLE), "--engine", engine, "--pps", "20000", "--out",
                                     str(tmp_path), "--lab", f"appl-val-{os.getpid()}"),
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"PASS  {engine}")
    live = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert live["messages"] == 19_999 and live["capture"]["engine"] == engine
    assert sum(live["capture"]["drops"].values()) == 0
    assert live["capture"]["latency"]["samples"] >= live["packets"]
    assert (tmp_path / "live" / "bbo.csv").read_bytes() == (tmp_path / "replay" / "bbo.csv").read_bytes()


SENDER = """
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("lab1", 0))
frame = bytes.fromhex("01005e360c01" "020000000001" "0800" "4500003c00004000" "0111" "0000" "0afa0002" "e9360c01"
                      "1234" "6720" "0028" "0000") + bytes(32)
for _ in range({n}):
    s.send(frame)
"""


def test_full_tpacket_ring_drops_are_counted(lab):
    """Nobody reads a 2-block ring while 3,000 frames arrive: every frame is either read later or a tp_drop."""
    res = _in_lab(lab, f"""
        import json, numpy as np, time
        from appliance.ring.tpacket import TpacketRing
        from appliance.capture.engine import Capture, CaptureOptions
        from appliance.ring.deliver import CAP_FRAMES, IDLE
        opts = CaptureOptions(iface="lab0", feeds=[(0xE9360C01, 26400)], engine="tpacket")
        cap = Capture(opts)
        with TpacketRing("lab0", opts.feeds, block_size=4096, blocks=2, retire_ms=1) as ring:
            {SENDER.format(n=3000).strip().replace(chr(10), chr(10) + " " * 12)}
            time.sleep(0.3)
            got = 0
            for _ in range(50):
                status, n = ring.receive(1 << 20, cap.rx)
                got += n
                time.sleep(0.01)
            stats = ring.stats()
        print(json.dumps(dict(got=got, **stats)))
    """)
    assert res["ring_drops"] > 0
    assert res["got"] + res["ring_drops"] == 3000, res
    assert res["kernel_packets"] == 3000


def test_full_xsk_ring_drops_are_counted(lab):
    """64 UMEM frames, nobody reading, 2,000 frames sent: each is either read later or in XDP_STATISTICS."""
    res = _in_lab(lab, f"""
        import json, time
        from appliance.ring import steer
        from appliance.ring.xsk import XskReceiver, XskSocket
        from appliance.capture.engine import Capture, CaptureOptions
        from appliance.capture.warm import warm
        from appliance.ring.deliver import CAP_LAT_COUNT, CAP_NO_RX_TS
        opts = CaptureOptions(iface="lab0", feeds=[(0xE9360C01, 26400)], engine="xdp")
        cap = Capture(opts)
        warm("xdp", queues=[0, 1])    # compiling with the UMEM's views would keep them past close (cold cache)
        socks = [XskSocket("lab0", q, frames=64, ring=64, magic=steer.STEER_META_MAGIC).__enter__() for q in (0, 1)]
        with steer.SteerProgram("lab0", opts.feeds) as prog:
            for q, s in enumerate(socks):
                prog.set_socket(q, s.fileno())
            {SENDER.format(n=2000).strip().replace(chr(10), chr(10) + " " * 12)}
            time.sleep(0.3)
            got = 0
            both = XskReceiver(socks)
            for _ in range(20):
                status, n = both.receive(1 << 20, cap.rx)
                got += n
            both.close()
            counters = prog.counters()
        stats = [s.stats() for s in socks]
        for s in socks:
            s.close()
        dropped = sum(st["rx_dropped"] + st["rx_ring_full"] for st in stats)
        print(json.dumps(dict(got=got, dropped=dropped, redirect=counters["redirect"],
                              no_rx_ts=int(cap.cap[CAP_NO_RX_TS]), latency=int(cap.cap[CAP_LAT_COUNT]))))
    """)
    assert res["redirect"] == 2000
    assert res["dropped"] > 0
    assert res["got"] + res["dropped"] == 2000, res
    assert res["no_rx_ts"] == 0 and res["latency"] == res["got"]     # every frame carried the XDP stamp


def test_rings_are_unmapped_on_exit(lab):
    """Every mapping a ring made (TPACKET_V3 ring; AF_XDP UMEM, rx, fill and completion rings) is in
    /proc/self/maps while open and gone after the context exits."""
    res = _in_lab(lab, """
        import json
        from appliance.ring.tpacket import TpacketRing
        from appliance.ring.xsk import XskSocket
        def mapped(addresses):
            spans = []
            for line in open("/proc/self/maps"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                spans.append((lo, hi))
            return [any(lo <= a < hi for lo, hi in spans) for a in addresses]
        with TpacketRing("lab0", [(0xE9360C01, 26400)], block_size=1 << 16, blocks=8) as ring:
            with XskSocket("lab0", 0, frames=256, ring=256) as xsk:
                addresses = [ring.ring.ctypes.data, xsk.umem.ctypes.data, xsk.rx_words.ctypes.data,
                             xsk.fq_words.ctypes.data]
                during = mapped(addresses)
        after = mapped(addresses)
        print(json.dumps(dict(during=during, after=after)))
    """)
    assert all(res["during"]), res
    assert not any(res["after"]), res


def test_sigkill_leaves_no_program_and_next_start_works(lab, tmp_path):
    proc = _start_capture(lab, tmp_path / "a", "--engine", "xdp")
    assert '"prog"' in _attached(lab)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _attached(lab) == "{}"                      # the BPF link went with the process
    proc = _start_capture(lab, tmp_path / "b", "--engine", "xdp", "--duration", "1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["capture"]["stop_reason"] == "duration"
    assert _attached(lab) == "{}"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
@pytest.mark.parametrize("engine", ["tpacket", "xdp"])
def test_recording_survives_sigkill(lab, tmp_path, engine):
    rec = tmp_path / "rec"
    proc = _start_capture(lab, tmp_path / "out", "--engine", engine, "--record", str(rec), "--no-stop-at-end")
    sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                          capture_output=True, text=True, cwd=REPO)
    assert sent.returncode == 0, sent.stderr
    time.sleep(1.0)                                    # every frame received
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the recording process sees the capture's life pipe hang up, writes every frame published, and exits 1
    deadline = time.monotonic() + 20
    while _recording_processes(rec):
        assert time.monotonic() < deadline, "the recording process outlived its capture"
        time.sleep(0.05)
    files = sorted(rec.glob("*.pcap"))
    assert files
    frames = 0
    for f in files:
        t = subprocess.run(["tshark", "-r", str(f), "-T", "fields", "-e", "frame.number"], capture_output=True,
                           text=True)
        assert t.returncode == 0 or "cut short" in t.stderr, t.stderr
        frames += len(t.stdout.split())
    # what the filter / XDP program let through: every feed frame of the sample but the malformed ones
    assert frames == 8_322
    done = subprocess.run(_appliance("replay", *map(str, files), "--out", str(tmp_path / "re"), "-q"),
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode in (0, 4), done.stderr
    summary = json.loads((tmp_path / "re" / "summary.json").read_text())
    assert summary["messages"] == 19_999 and summary["end_of_session"] == ["TEST000001"]


def _recording_processes(rec: Path) -> list[int]:
    """Pids of recording processes writing into ``rec``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"appliance.cold.recording" in cmd and str(rec).encode() in cmd:
            found.append(int(entry.name))
    return found


def test_fanout_workers_split_the_lines(lab, tmp_path):
    """--workers 2 (hash fan-out): every frame reaches exactly one worker; a line stays on one worker."""
    argv = _appliance("capture", "--iface", "lab0", "--engine", "tpacket", "--workers", "2", "--out", str(tmp_path),
                      "--duration", "20")
    for feed in FEEDS:
        argv += ["--feed", feed]
    proc = subprocess.Popen(lab.netns_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    line = wait_capturing(proc)[-1]                    # every worker takes frames
    assert "capturing on" in line, line
    sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                          capture_output=True, text=True, cwd=REPO)
    assert sent.returncode == 0, sent.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    res = json.loads((tmp_path / "workers.json").read_text())
    assert [w["exit"] for w in res["workers"]] == [0, 0]
    replay_feed_frames = 8_322                         # what the acceptance policy takes of sample.pcap: not its
    #                                                    non-IPv4, non-UDP, fragment, truncated and bad-UDP frames
    assert res["total"]["frames"] == replay_feed_frames and res["total"]["drops"] == 0
    lines = [line for w in res["workers"] for line in w["lines"]]
    assert sorted(lines) == sorted(FEEDS)              # each line on exactly one worker


def test_tpacket_filter_keeps_only_feeds_and_recording_restores_vlan_tags(lab):
    """The classic BPF filter passes the feed (tagged or not) and nothing else; the kernel moves a VLAN tag out
    of the frame, and the recording puts it back where it was."""
    res = _in_lab(lab, """
        import json, socket, struct, time
        import numpy as np
        from appliance.capture.engine import Capture, CaptureOptions
        from appliance.ring.tpacket import TpacketRing
        from appliance.ring.deliver import CAP_FRAMES, CAP_REC_FRAMES, REC_META_SIZE, recorded_bytes, recording_on
        from appliance.decode import counters as C

        def frame(group, port, frag=0, vlan=None):
            udp = struct.pack(">HHHH", 1234, port, 8 + 32, 0) + bytes(32)
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, frag, 1, 17, 0,
                             bytes([10, 250, 0, 2]), group.to_bytes(4, "big"))
            tag = struct.pack(">HH", 0x8100, vlan) if vlan is not None else b""
            return bytes.fromhex("01005e360c01020000000001") + tag + b"\\x08\\x00" + ip + udp

        feed = 0xE9360C01
        opts = CaptureOptions(iface="lab0", feeds=[(feed, 26400)], engine="tpacket")
        cap = Capture(opts)
        cap.rx = recording_on(cap.rx, np.zeros(1 << 20, np.uint8), np.zeros(REC_META_SIZE, np.int64), 65535)
        with TpacketRing("lab0", opts.feeds, block_size=1 << 16, blocks=4, retire_ms=1) as ring:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(("lab1", 0))
            for f in [frame(feed, 26400), frame(feed + 1, 26400), frame(feed, 26401), frame(feed, 26400, frag=1),
                      frame(feed, 26400, vlan=100)] * 5:
                s.send(f)
            time.sleep(0.3)
            for _ in range(10):
                ring.receive(1 << 20, cap.rx)
                time.sleep(0.01)
        rec = recorded_bytes(cap.rx)
        used, tagged, p = len(rec), 0, 0
        while p < used:
            incl = int.from_bytes(rec[p + 8:p + 12].tobytes(), "little")
            body = rec[p + 16:p + 16 + incl].tobytes()
            tagged += body[12:16] == bytes.fromhex("81000064")
            p += 16 + incl
        print(json.dumps(dict(frames=int(cap.cap[CAP_FRAMES]), recorded=int(cap.cap[CAP_REC_FRAMES]),
                              tagged=tagged, decoded=int(cap.decoder.cnt[C.FRAMES]))))
    """)
    assert res == {"frames": 10, "recorded": 10, "tagged": 5, "decoded": 10}


def test_stale_program_of_ours_is_replaced_by_capture(lab, tmp_path):
    """A copy of our program attached the old way (netlink, as a crashed older run or xdp-loader leaves it) is
    replaced at start, and nothing is attached after the capture ends."""
    from appliance.ring.steer import OBJECT_PATH, ensure_built

    ensure_built()
    subprocess.run(["ip", "-n", lab.name, "link", "set", "dev", "lab0", "xdpgeneric", "obj", str(OBJECT_PATH),
                    "sec", "xdp"], check=True, capture_output=True)
    assert '"prog"' in _attached(lab)
    proc = _start_capture(lab, tmp_path, "--engine", "xdp", "--duration", "1")
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert json.loads((tmp_path / "summary.json").read_text())["capture"]["replaced_stale_program"] is True
    assert _attached(lab) == "{}"


def _free_hugepages() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HugePages_Free:"):
            return int(line.split()[1])
    return 0


@pytest.mark.hugepages
def test_umem_on_hugepages_when_free(lab):
    """With free 2 MB hugepages the UMEM lands on them (the test never reserves any: that is host-wide)."""
    if _free_hugepages() < 8:
        pytest.skip("hugepages: no free 2 MB hugepages reserved on this host (a test never reserves them; "
                    "'appliance tune apply' does)")
    res = _in_lab(lab, """
        import json
        from appliance.ring.xsk import XskSocket
        with XskSocket("lab0", 0, frames=4096, ring=4096) as s:
            huge = s.on_hugepages
        with XskSocket("lab0", 0, frames=4096, ring=4096, hugepages=False) as s:
            plain = s.on_hugepages
        print(json.dumps(dict(huge=huge, plain=plain)))
    """)
    assert res == {"huge": True, "plain": False}


def test_no_tables_keeps_books_and_summary_only(lab, tmp_path):
    proc = _start_capture(lab, tmp_path, "--engine", "tpacket", "--no-tables", "--idle", "nap")
    sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                          capture_output=True, text=True, cwd=REPO)
    assert sent.returncode == 0, sent.stderr
    proc.communicate(timeout=120)                      # stops at the end of session
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["messages"] == 19_999 and summary["capture"]["stop_reason"] == "end_of_session"
    assert summary["symbols"]["XCSR"]["volume"] == 26_968
    assert not any((tmp_path / name).exists() for name in ("bbo.csv", "trades.csv", "vwap.csv"))


@pytest.mark.parametrize("engine", ["xdp", "tpacket"])
def test_validate_on_a_larger_feed_with_gaps_and_vlan(engine, tmp_path):
    """300k messages on A/B lines with drops on line A and both lines, VLAN-tagged: many output flushes and
    VWAP folds on the writer thread, arbitration live -- still equal to replay, vwap.csv included."""
    feed = tmp_path / "feed.pcap"
    made = subprocess.run(_appliance("generate", str(feed), "--messages", "300000", "--instruments", "800", "--ab",
                                     "--gaps", "20", "--gaps-both", "3", "--vlan", "42", "--seed", "11"),
                          capture_output=True, text=True, cwd=REPO)
    assert made.returncode == 0, made.stderr
    done = subprocess.run(_appliance("validate", str(feed), "--engine", engine, "--pps", "50000", "--out",
                                     str(tmp_path / "v"), "--lab", f"appl-val2-{os.getpid()}"),
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    live = json.loads((tmp_path / "v" / "live" / "summary.json").read_text())
    assert live["messages"] > 290_000 and len(live["gaps"]) >= 3
    assert (tmp_path / "v" / "live" / "vwap.csv").stat().st_size > 100_000


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_capture_without_privileges_is_one_sentence(tmp_path):
    """Run as nobody: one sentence naming what is missing, exit 77, before anything is compiled or opened."""
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                           sys.executable, "-m", "appliance", "capture", "--iface", "lo", "--feed",
                           "233.54.12.1:26400", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 77, done.stderr
    assert "CAP_NET_RAW" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("engine, idle", [("tpacket", "poll"), ("xdp", "poll"), ("xdp", "spin")])
def test_interface_going_away_ends_the_capture(tmp_path, engine, idle):
    """The capture interface is deleted mid-capture: the capture writes what it has, says so in one sentence and
    exits 1 within a second or two, instead of spinning on a socket in error."""
    from appliance.capture.lab import Lab

    with Lab(f"appl-gone-{os.getpid()}", queues=1) as lab:
        proc = _start_capture(lab, tmp_path, "--engine", engine, "--idle", idle, "--no-stop-at-end")
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        time.sleep(0.5)                                # the last block retired and every frame decoded
        subprocess.run(["ip", "-n", lab.name, "link", "del", "lab0"], check=True)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 5
    assert proc.returncode == 1, err
    assert "went away" in err.strip().splitlines()[-1]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["capture"]["stop_reason"] == "interface_gone" and summary["messages"] == 19_999
