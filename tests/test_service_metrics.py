"""Metrics, health and systemd notify (``appliance.service``), and ``appliance metrics`` against a live capture.

Unprivileged: the collector over a region made here (exact values, the latency histogram's buckets exact
against a slow count of the samples), ``promtool check metrics`` on the exposition, the HTTP endpoints, a port
in use, sd_notify into a datagram socket this test binds, and the command attached to this process's region.
Root + netns: a capture in a lab namespace with ``appliance metrics`` attached through its ready file, scraped
while the sample is sent and after; a real Prometheus server scrapes it and a PromQL query returns the count.
"""
from __future__ import annotations

import bisect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from appliance.cold import rows as R
from appliance.decode import counters as C
from appliance.errors import UserError
from appliance.ring.deliver import CAP_FRAMES, CAP_LAT_MAX, CAP_REC_BYTES, CAP_REC_DROPPED, CAP_SIZE, \
    CAP_WAKEUPS, HIST_SIZE, bucket_floor
from appliance.service.health import CaptureHealth
from appliance.service.http import MetricsServer, parse_listen
from appliance.service.metrics import NOMINAL_EDGES_NS, CaptureCollector, ServiceMetrics
from appliance.service.notify import Notifier, watchdog_period
from conftest import module_lab
from promtest import free_port, get, have_prometheus, promtool_check, start_prometheus, stop, wait_http, \
    wait_query

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTERS = {"cnt": C.SIZE, "by_type": 256, "cap": CAP_SIZE, "hist": HIST_SIZE}
FLOORS = [bucket_floor(i) for i in range(HIST_SIZE)]


def _region() -> R.Region:
    return R.Region.create({R.BBO: R.MIN_ROWS, R.TAPE: R.MIN_ROWS, R.GAPS: R.MIN_ROWS}, COUNTERS)


def _samples(text: str) -> dict:
    """{(name, sorted label items): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _exposition(*collectors) -> str:
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    return generate_latest(registry).decode()


def _bin(ns: int) -> int:
    """The histogram bin of a sample, from ``bucket_floor`` (the kernel's inverse) alone."""
    return bisect.bisect_right(FLOORS, ns) - 1


# -- the collector ------------------------------------------------------------------------------------------
@pytest.fixture
def region():
    made = _region()
    yield made
    made.close()


def _fill(region) -> list[int]:
    """Counter values, gap rows and consumer lines of a capture in mid-flight; returns the latency samples."""
    region.cnt[C.FRAMES], region.cnt[C.PACKETS], region.cnt[C.MESSAGES] = 1001, 990, 19_999
    region.cnt[C.DUPLICATE_PACKETS], region.cnt[C.HEARTBEATS], region.cnt[C.BAD_TYPE] = 7, 3, 2
    region.cnt[C.OPEN_ORDERS], region.cnt[C.LAST_FRAME_NS] = 42, 1_700_000_000_250_000_000
    region.by_type[ord("A")], region.by_type[ord("P")] = 12_000, 7_999
    region.cap[CAP_FRAMES], region.cap[CAP_REC_BYTES], region.cap[CAP_REC_DROPPED] = 1001, 123_456, 5
    region.cap[CAP_LAT_MAX] = 150_000_000
    gaps = [(0, 100, 109), (0, 500, 500), (1, 7, 26)]              # 10 + 1 + 20 messages lost
    for i, row in enumerate(gaps):
        region.gaps[i] = row
    region.ctl[R.GAPS * R.RING_CTL + R.RC_SEQ] = len(gaps)
    region.ctl[R.BBO * R.RING_CTL + R.RC_SEQ] = 5000
    line = region.consumer(R.BBO, 0)
    line[R.CS_PID], line[R.CS_CURSOR], line[R.CS_DELIVERED], line[R.CS_LOST] = os.getpid(), 4900, 4800, 100
    for r in (R.TAPE, R.GAPS):
        region.consumer(r, 0)[R.CS_PID] = os.getpid()
    rng = np.random.default_rng(7)
    samples = [int(v) for v in np.exp(rng.uniform(np.log(50), np.log(3e8), 20_000))]
    # every boundary of every bucket, and one below it
    for k in range(1, HIST_SIZE):
        if FLOORS[k] <= 200_000_000:
            samples += [FLOORS[k] - 1, FLOORS[k]]
    for ns in samples:
        region.hist[_bin(ns)] += 1
    return samples


def test_collector_gives_the_regions_counts_exactly(region):
    _fill(region)
    got = _samples(_exposition(CaptureCollector(region, pid=os.getpid())))
    for name, value in (("appliance_frames_total", 1001), ("appliance_packets_total", 990),
                        ("appliance_messages_total", 19_999), ("appliance_duplicate_packets_total", 7),
                        ("appliance_heartbeats_total", 3), ("appliance_gaps_total", 3),
                        ("appliance_messages_lost_total", 31), ("appliance_recorded_bytes_total", 123_456),
                        ("appliance_open_orders", 42), ("appliance_feed_last_frame_timestamp_seconds", 1.70000000025e9),
                        ("appliance_receive_to_book_latency_max_seconds", 0.15)):
        assert got[(name, ())] == value, name
    import numba

    from appliance import __version__
    python = ".".join(map(str, sys.version_info[:3]))
    assert got[("appliance_build_info", (("numba", numba.__version__), ("python", python),
                                         ("version", __version__)))] == 1
    assert got[("appliance_messages_by_type_total", (("type", "A"),))] == 12_000
    assert got[("appliance_messages_by_type_total", (("type", "P"),))] == 7_999
    assert got[("appliance_messages_by_type_total", (("type", "E"),))] == 0
    assert got[("appliance_decode_events_total", (("event", "bad_type"),))] == 2
    assert got[("appliance_dropped_frames_total", (("source", "recording"),))] == 5
    bbo = (("consumer", "slot0"), ("ring", "bbo"))
    assert got[("appliance_ring_published_rows_total", (("ring", "bbo"),))] == 5000
    assert got[("appliance_ring_delivered_rows_total", bbo)] == 4800
    assert got[("appliance_ring_lost_rows_total", bbo)] == 100
    assert got[("appliance_ring_behind_rows", bbo)] == 100
    assert got[("appliance_ring_capacity_rows", (("ring", "bbo"),))] == R.MIN_ROWS
    assert got[("appliance_capture_state", (("state", "starting"),))] == 1
    assert got[("appliance_capture_process_alive", ())] == 1
    assert got[("appliance_capture_cpu_seconds_total", (("mode", "user"),))] > 0
    assert got[("appliance_capture_resident_memory_bytes", ())] > 10 << 20
    # more gap rows later: the tally goes on from where it was
    region.gaps[3] = (1, 40, 44)
    region.ctl[R.GAPS * R.RING_CTL + R.RC_SEQ] = 4
    collector = CaptureCollector(region)
    collector.gaps.update(region)
    assert collector.gaps.lost_messages == 36 and collector.gaps.missed == 0


def test_publisher_counts_for_the_slots_publishers_hold(region):
    """A slot is a publisher's when its mark word says so: its counts are exported with its slot label, the
    other slots' own words (the table writer's, slot 0) are not read as a publisher's."""
    from appliance.publish.publisher import MARK, MARK_WORD, OWN, SERVER_PORT_WORD
    for slot in (0, 2):
        for r in range(R.N_RINGS):
            region.consumer(r, slot)[R.CS_PID] = 4242
    region.consumer(R.TAPE, 0)[R.CS_OWN:R.CS_OWN + 4] = (7, 8, 9, 10)         # the table writer's own words
    region.consumer(MARK_WORD[0], 2)[MARK_WORD[1]] = MARK
    region.consumer(SERVER_PORT_WORD[0], 2)[SERVER_PORT_WORD[1]] = 4222
    values = {"sent": 1000, "acknowledged": 990, "conflated": 55, "dropped": 3, "resent": 12, "ack_errors": 2,
              "reconnected": 1, "connected": 1}
    for name, value in values.items():
        r, word = OWN[name]
        region.consumer(r, 2)[word] = value
    region.consumer(R.BBO, 2)[R.CS_DELIVERED] = 1234
    got = _samples(_exposition(CaptureCollector(region)))
    slot2 = (("consumer", "slot2"),)
    for metric, name in (("records_sent", "sent"), ("records_acknowledged", "acknowledged"),
                         ("records_conflated", "conflated"), ("records_dropped", "dropped"),
                         ("records_resent", "resent"), ("ack_errors", "ack_errors"), ("reconnections", "reconnected")):
        assert got[(f"appliance_publisher_{metric}_total", slot2)] == values[name], metric
    assert got[("appliance_publisher_connected", slot2)] == 1
    assert got[("appliance_publisher_server_port", slot2)] == 4222
    assert got[("appliance_ring_delivered_rows_total", (("consumer", "slot2"), ("ring", "bbo")))] == 1234
    assert not [key for key in got if key[0].startswith("appliance_publisher_") and key[1] != slot2]


def test_latency_histogram_buckets_are_cumulative_and_exact(region):
    samples = np.array(_fill(region), np.int64)
    got = _samples(_exposition(CaptureCollector(region)))
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in got.items()
                     if name == "appliance_receive_to_book_latency_seconds_bucket")
    assert len(buckets) == len(NOMINAL_EDGES_NS) + 1 and buckets[-1][0] == float("inf")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == len(samples)
    assert got[("appliance_receive_to_book_latency_seconds_count", ())] == len(samples)
    for (le, count), nominal in zip(buckets, NOMINAL_EDGES_NS):
        le_ns = round(le * 1e9)
        assert abs(le_ns + 1 - nominal) <= nominal / 128, (le, nominal)       # the nearest bin boundary
        assert count == int((samples <= le_ns).sum()), le                    # exactly the samples <= le
    assert {round(le * 1e9) + 1 for le, _ in buckets[:2]} == {1000, 2000}     # 1 us, 2 us are boundaries


def test_the_kernels_bins_are_the_ones_the_test_assumes():
    from appliance.ring.deliver import _bucket

    for ns in (0, 127, 128, 999, 1000, 1007, 1008, 50_175, 50_176, 99_614_719, 10 ** 12):
        assert _bucket(ns) == _bin(ns), ns


def test_gap_rows_overwritten_before_the_tally_read_them_are_counted(region):
    rows = region.rows[R.GAPS]
    seq = rows + 2 * R.PUBLISH_CHUNK
    for s in range(seq):
        region.gaps[s & (rows - 1)] = (0, 10 * s, 10 * s + 1)        # two messages a gap
    region.ctl[R.GAPS * R.RING_CTL + R.RC_SEQ] = seq
    collector = CaptureCollector(region)
    collector.gaps.update(region)
    readable = rows - R.PUBLISH_CHUNK
    assert collector.gaps.missed == seq - readable and collector.gaps.lost_messages == 2 * readable


def test_service_metrics_as_the_caller_sets_them(tmp_path):
    now = [1000.0]
    svc = ServiceMetrics(clock=lambda: now[0])
    svc.line_heard("nasdaq", "A")
    now[0] += 2.5
    svc.line_heard("nasdaq", "B")
    now[0] += 0.5
    svc.add_bytes("recording", 4096)
    svc.add_bytes("tables", 100)
    svc.add_error("tables", "ENOSPC")
    svc.add_error("tables", "ENOSPC")
    svc.watch_disk(str(tmp_path), "recording")
    svc.set_restarts(3)
    with pytest.raises(ValueError):
        svc.add_bytes("parquet", 1)
    got = _samples(_exposition(svc))
    assert got[("appliance_line_seconds_since_heard", (("feed", "nasdaq"), ("line", "A")))] == 3.0
    assert got[("appliance_line_seconds_since_heard", (("feed", "nasdaq"), ("line", "B")))] == 0.5
    assert got[("appliance_recording_written_bytes_total", ())] == 4096
    assert got[("appliance_tables_written_bytes_total", ())] == 100
    assert got[("appliance_tables_errors_total", (("reason", "ENOSPC"),))] == 2
    assert got[("appliance_restarts_total", ())] == 3
    st = os.statvfs(tmp_path)
    where = (("directory", str(tmp_path)), ("role", "recording"))
    assert got[("appliance_disk_size_bytes", where)] == st.f_blocks * st.f_frsize
    assert abs(got[("appliance_disk_free_bytes", where)] - st.f_bavail * st.f_frsize) < 256 << 20


def test_promtool_accepts_the_exposition(region, tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    _fill(region)
    svc = ServiceMetrics()
    svc.line_heard("nasdaq", "A")
    svc.watch_disk(str(tmp_path), "recording")
    svc.add_error("recording", "EIO")
    text = _exposition(CaptureCollector(region, pid=os.getpid(), interface="lo"), svc)
    done = promtool_check(text)
    assert done.returncode == 0, done.stdout + done.stderr


# -- HTTP ---------------------------------------------------------------------------------------------------
def test_http_endpoints_answer_with_the_checks_verdicts(region):
    region.cnt[C.MESSAGES] = 77
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaptureCollector(region))

    def broken():
        raise RuntimeError("no region")

    with MetricsServer("127.0.0.1:0", registry, lambda: (True, {"loop": "turning"}),
                       lambda: (False, {"feed": "no feed frame yet"})) as server:
        base = f"http://{server.address}"
        code, body = get(base + "/metrics")
        assert code == 200 and "appliance_messages_total 77.0" in body
        assert get(base + "/healthz") == (200, json.dumps({"ok": True, "reasons": {"loop": "turning"}}) + "\n")
        code, body = get(base + "/readyz")
        assert code == 503 and json.loads(body) == {"ok": False, "reasons": {"feed": "no feed frame yet"}}
        assert get(base + "/nothing")[0] == 404
        server.checks["/readyz"] = broken
        code, body = get(base + "/readyz")
        assert code == 503 and json.loads(body)["reasons"] == {"check_failed": "RuntimeError: no region"}
    # closed: the port is free again, and nothing answers on it
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/healthz", timeout=2)
    MetricsServer(server.address, CollectorRegistry(), lambda: (True, {}), lambda: (True, {})).close()


def test_ipv6_listen_address():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with MetricsServer("[::1]:0", CollectorRegistry(), lambda: (True, {}), lambda: (True, {})) as server:
        assert server.address.startswith("[::1]:")
        assert get(f"http://{server.address}/healthz")[0] == 200


def test_listen_addresses_are_checked():
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    for bad in ("9108", "::1:9108", "host:port", "127.0.0.1:70000", "[::1:9108"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_a_port_in_use_is_one_sentence():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError) as err:
            MetricsServer(f"127.0.0.1:{port}", CollectorRegistry(), lambda: (True, {}), lambda: (True, {}))
        assert str(err.value) == f"cannot listen on 127.0.0.1:{port}: the port is in use (choose another with --listen)"


# -- systemd notify -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("abstract", [False, True])
def test_notify_datagrams_reach_the_socket(tmp_path, abstract):
    name = f"@appliance-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:] if abstract else name)
        sock.settimeout(5)
        note = Notifier({"NOTIFY_SOCKET": name})
        assert note.enabled
        assert note.ready("capturing on lab0")
        assert sock.recv(4096) == b"READY=1\nSTATUS=capturing on lab0"
        note.status("1,000 msg/s")
        assert sock.recv(4096) == b"STATUS=1,000 msg/s"
        note.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        note.reloading()
        got = sock.recv(4096).decode().split("\n")
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert got[0] == "RELOADING=1" and before <= int(got[1].removeprefix("MONOTONIC_USEC=")) <= after
        note.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
        with pytest.raises(ValueError):
            note.status("two\nlines")


def test_notify_without_a_socket_does_nothing():
    note = Notifier({})
    assert not note.enabled and not note.ready() and not note.watchdog()


def test_watchdog_period_is_half_the_interval_for_this_process_only():
    assert watchdog_period({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_period({}) is None


# -- health ------------------------------------------------------------------------------------------------
def test_health_follows_the_loop_the_feed_and_the_consumers(region):
    now, wall = [100.0], [1_700_000_000.0]
    health = CaptureHealth(region, os.getpid(), stale=5, stall=2, clock=lambda: now[0], wall=lambda: wall[0])
    health.sample()
    ok, why = health.healthz()
    assert ok and why["loop"] == "turning"
    now[0] += 3
    health.sample()
    ok, why = health.healthz()
    assert not ok and why["loop"] == "the receive loop has not turned for 3.0 s"
    region.cap[CAP_WAKEUPS] += 1
    health.sample()
    assert health.healthz()[0]
    ok, why = health.readyz()
    assert not ok and why["feed"] == "no feed frame yet"
    region.cnt[C.LAST_FRAME_NS] = int((wall[0] - 1) * 1e9)
    assert health.readyz() == (True, {"region": "attached", "producer": f"pid {os.getpid()} running",
                                      "loop": "turning", "feed": "last frame 1.0 s ago",
                                      "rings": "no consumer losing rows"})
    line = region.consumer(R.BBO, 1)
    line[R.CS_PID] = os.getpid()
    line[R.CS_LOST] = 10
    health.sample()
    ok, why = health.readyz()
    assert not ok and why["rings"] == {"bbo/slot1": "lost rows within the last 5 s"}
    now[0] += 6                                          # no loss for longer than --stale: ready again
    region.cap[CAP_WAKEUPS] += 1
    health.sample()
    assert health.readyz()[0]
    line[R.CS_CURSOR] = region.published(R.BBO) - int(0.95 * R.MIN_ROWS)     # saturated: 95% of the ring behind
    ok, why = health.readyz()
    assert not ok and why["rings"] == {"bbo/slot1": f"{int(0.95 * R.MIN_ROWS)} of {R.MIN_ROWS} rows behind"}
    line[R.CS_PID] = -os.getpid()                        # detached: no longer judged
    assert health.readyz()[0]
    wall[0] += 10
    ok, why = health.readyz()
    assert not ok and why["feed"] == "no feed frame for 11.0 s (more than 5 s)"
    region.set_state(R.STATE_FINISHED)
    ok, why = health.healthz()
    assert not ok and why["state"] == "the capture has finished"


# -- the command, attached to a region of this process -----------------------------------------------------
def _appliance(*argv: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *argv]


def _wait_serving(proc, timeout=60) -> str:
    line = proc.stderr.readline()
    assert "serving the metrics" in line, line + proc.stderr.read()
    return line.rsplit("http://", 1)[1].split("/metrics")[0]


def test_the_command_serves_a_region_and_says_a_port_in_use_in_one_sentence(region, tmp_path):
    ready = tmp_path / "ready.json"
    ready.write_text(json.dumps({"pid": os.getpid(), "rows_fd": region.fd, "interface": "lo"}))
    region.cnt[C.MESSAGES] = 31
    turning = threading.Event()

    def turn():
        while not turning.wait(0.05):
            region.cap[CAP_WAKEUPS] += 1

    spinner = threading.Thread(target=turn)
    spinner.start()
    proc = subprocess.Popen(_appliance("metrics", "--ready-file", str(ready), "--listen", f"127.0.0.1:{free_port()}"),
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        address = _wait_serving(proc)
        code, body = get(f"http://{address}/metrics")
        assert code == 200 and "appliance_messages_total 31.0" in body
        assert get(f"http://{address}/healthz")[0] == 200
        code, body = get(f"http://{address}/readyz")
        assert code == 503 and json.loads(body)["reasons"]["feed"] == "no feed frame yet"
        port = address.rsplit(":", 1)[1]
        again = subprocess.run(_appliance("metrics", "--ready-file", str(ready), "--listen", f"127.0.0.1:{port}"),
                               capture_output=True, text=True, cwd=REPO, timeout=60)
        assert again.returncode == 2
        assert again.stderr == (f"appliance: cannot listen on 127.0.0.1:{port}: the port is in use "
                                "(choose another with --listen)\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        turning.set()
        spinner.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_command_without_a_capture_is_one_sentence(tmp_path):
    ready = tmp_path / "ready.json"
    done = subprocess.run(_appliance("metrics", "--ready-file", str(ready)), capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 3 and done.stderr.count("\n") == 1 and "no ready file at" in done.stderr
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ready.write_text(json.dumps({"pid": gone.pid, "rows_fd": 3}))
    done = subprocess.run(_appliance("metrics", "--ready-file", str(ready)), capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1
    assert done.stderr == f"appliance: the capture (pid {gone.pid}) is not running any more\n"


# -- live: a capture in a lab, the command attached, a real Prometheus scraping it -----------------------------
lab = module_lab("appl-metrics")

@pytest.mark.root
@pytest.mark.netns
@pytest.mark.slow
def test_metrics_of_a_live_capture_equal_its_summary_and_prometheus_reads_them(lab, tmp_path):
    from test_capture import SAMPLE, _start_capture

    if have_prometheus():
        pytest.skip(have_prometheus())
    ready, out = tmp_path / "ready.json", tmp_path / "out"
    capture = metrics = prom = sender = None
    try:
        capture = _start_capture(lab, out, "--engine", "xdp", "--ready-file", str(ready))
        metrics = subprocess.Popen(_appliance("metrics", "--ready-file", str(ready), "--listen",
                                              f"127.0.0.1:{free_port()}", "--linger", "120", "--disk", str(tmp_path)),
                                   stderr=subprocess.PIPE, text=True, cwd=REPO)
        address = _wait_serving(metrics)
        base = f"http://{address}"
        wait_http(base + "/healthz", 10)                          # the loop turns while nothing is sent
        code, body = get(base + "/readyz")
        assert code == 503 and json.loads(body)["reasons"]["feed"] == "no feed frame yet"
        prom, promql = start_prometheus(tmp_path, address)
        sender = subprocess.Popen(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "10000")),
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen, ready_seen = [], False
        while sender.poll() is None:                                # scrape while the feed is sent
            seen.append(_samples(get(base + "/metrics")[1])[("appliance_messages_total", ())])
            ready_seen = ready_seen or get(base + "/readyz")[0] == 200
            time.sleep(0.2)
        assert sender.wait() == 0, sender.stderr.read()
        _, err = capture.communicate(timeout=120)
        assert capture.returncode == 0, err
        assert seen == sorted(seen) and 0 < max(seen)
        assert ready_seen, "/readyz never said ready while the feed was sent"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["messages"] == 19_999
        got = _samples(get(base + "/metrics")[1])                  # after the end: the final counts
        assert got[("appliance_messages_total", ())] == summary["messages"]
        assert got[("appliance_frames_total", ())] == summary["frames"]
        assert got[("appliance_packets_total", ())] == summary["packets"]
        assert got[("appliance_heartbeats_total", ())] == summary["heartbeats"]
        assert got[("appliance_duplicate_packets_total", ())] == summary["duplicate_packets"]
        assert got[("appliance_gaps_total", ())] == len(summary["gaps"])
        for t, n in summary["messages_by_type"].items():
            assert got[("appliance_messages_by_type_total", (("type", t),))] == n, t
        output = summary["capture"]["output"]
        assert got[("appliance_ring_published_rows_total", (("ring", "bbo"),))] == output["published"]["bbo"]
        tables = output["consumers"]["tables"]["rings"]["bbo"]
        assert got[("appliance_ring_delivered_rows_total", (("consumer", "slot0"), ("ring", "bbo")))] \
            == tables["delivered"]
        assert got[("appliance_receive_to_book_latency_seconds_count", ())] == summary["capture"]["latency"]["samples"]
        assert got[("appliance_capture_state", (("state", "finished"),))] == 1
        assert got[("appliance_dropped_frames_total", (("source", "kernel"),))] == 0
        assert ("appliance_disk_free_bytes", (("directory", str(tmp_path)), ("role", "watched"))) in got
        code, body = get(base + "/healthz")                         # the capture has ended
        assert code == 503 and "finished" in json.loads(body)["reasons"]["state"]
        value = wait_query(promql, 'appliance_messages_total{job="appliance"}', summary["messages"])
        assert value == summary["messages"] == 19_999
        metrics.send_signal(signal.SIGTERM)
        assert metrics.wait(30) == 0
        assert metrics.stderr.read() == f"the capture (pid {capture.pid}) finished\n"
    finally:
        for proc in (sender, prom, metrics, capture):
            stop(proc)
