"""The NATS publisher process (appliance/publish/publisher.py) against a real nats-server with JetStream.

Rows are published into a Region by the test itself (no capture): the publisher process reads them with its own
consumer slot and sends them to a nats-server the test starts on a free loopback port with a temporary store.

* rows -> publisher -> JetStream -> a consumer using ``client``: top of book equals the rows' last bbo per
  locate, the trades are the tape's in order, VWAP windows are the fold's, sequences 1..N without a hole;
* server absent at start, appearing later, then killed mid-stream and restarted on the same store: every record
  is in the stream once, in sequence order, nothing acknowledged lost;
* server killed for good: the publisher keeps draining the rings (no ring row lost), drops what does not fit its
  buffer and counts it, and ends within its flush time; what it had acknowledged is in the store afterwards.
"""
from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time

import numpy as np
import pytest

from appliance.cold import rows as RW
from appliance.decode import state as S
from appliance.publish import client, records as R
from natstest import SERVER, SESSION, SYMBOLS, Server, free_port as _free_port, own as _own, publish as _publish, \
    region as _region, rows as _rows, wait as _wait

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install nats-py)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SERVER is None, reason="nats-server is not installed (apt-get install nats-server)")]

FEED = "itch.A"                         # a '.' in the feed: escaped in subjects and the stream name


@pytest.fixture
def servers(tmp_path):
    made = []

    def make(port=None):
        srv = Server(port or _free_port(), tmp_path / "store", tmp_path / "nats.log")
        made.append(srv)
        return srv
    yield make
    for srv in made:
        srv.kill()


def _start(region, servers_urls, **spec):
    from natstest import start_publisher
    return start_publisher(region, servers_urls, FEED, **spec)


def _fold(tape_rows):
    """The VWAP windows of the tape, folded here with the same fold the tables use."""
    from appliance.replay.decoder import VwapFold

    class Sink:
        def __init__(self):
            self.rows = []

        def vwap(self, rows, n, sym, last):
            self.rows += [tuple(int(v) for v in rows[i]) for i in range(n)]
    from appliance.decode import counters as C
    sink, late = Sink(), np.zeros(C.SIZE, np.int64)
    fold = VwapFold(1_000_000_000, 100_000_000, late)
    fold.feed(tape_rows, len(tape_rows), sink, None)
    fold.finish(sink, None)
    return sink.rows


async def _read_stream(url, timeout=20):
    from natstest import read_stream
    return await read_stream(url, FEED, timeout)


def _checked(records):
    """The records' sequences are 1..N of one publisher with nothing missing or repeated."""
    tracker = client.SequenceTracker()
    for rec in records:
        tracker.observe(rec, FEED)
    assert [e.text for e in tracker.events] == []
    assert [r.sequence for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == R.KIND_STATUS and records[0].code == R.STATUS_PUBLISHER_START
    return records


def test_rows_to_jetstream_to_top_of_book(servers):
    srv = servers().start()
    region = _region()
    proc = _start(region, [srv.url])
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == max(10, mine)    # below the capture (the default nice)
    rng = random.Random(11)
    bbo_rows, tape_rows = _rows(rng, 6000, 34_200_000_000_000)
    third = len(bbo_rows) // 3
    _publish(region, bbo_rows[:third], tape_rows[:third])
    time.sleep(0.3)
    _publish(region, bbo_rows[third:], tape_rows[third:], gaps=[(101, 120)])
    assert proc.finish() == 0
    report = proc.report()
    assert report["dropped"] == 0 and report["unacknowledged_at_exit"] == 0 and report["ring_lost"] == 0
    assert report["acknowledged"] == report["sent"]
    assert report["rows"] == {"bbo": len(bbo_rows), "tape": len(tape_rows), "gaps": 1}

    records = _checked(asyncio.run(_read_stream(srv.url)))
    assert len(records) == report["sent"]
    book = client.TopOfBook()
    for rec in records:
        book.apply(rec)
    last = {int(row[S.BBO_LOCATE]): tuple(int(v) for v in row) for row in bbo_rows}
    assert {loc: top.as_row() for loc, top in book.tops.items()} == last
    assert {top.symbol for top in book.tops.values()} == set(SYMBOLS)
    bbos = sum(r.kind == R.KIND_BBO for r in records)
    assert bbos + report["conflated"] == len(bbo_rows)

    trades = [(r.timestamp, r.locate, r.trade_kind, r.side, r.shares, r.price, r.match)
              for r in records if r.kind == R.KIND_TRADE]
    tape_trades = [tuple(int(v) for v in row) for row in tape_rows if row[S.TAPE_KIND] not in (S.KIND_CLOCK,
                                                                                              S.KIND_BROKEN)]
    assert trades == tape_trades
    assert [r.match for r in records if r.kind == R.KIND_BROKEN] == \
        [int(row[S.TAPE_MATCH]) for row in tape_rows if row[S.TAPE_KIND] == S.KIND_BROKEN]
    vwaps = [(r.timestamp, r.locate, r.volume, r.notional, r.trades) for r in records if r.kind == R.KIND_VWAP]
    assert vwaps == _fold(tape_rows) and vwaps
    status = [(r.code, r.session, r.first, r.last) for r in records if r.kind == R.KIND_STATUS]
    assert status == [(R.STATUS_PUBLISHER_START, "", 0, 0), (R.STATUS_SESSION_START, SESSION.decode(), 0, 0),
                      (R.STATUS_GAP, SESSION.decode(), 101, 120), (R.STATUS_SESSION_END, SESSION.decode(), 0, 0)]
    region.close()


def test_server_absent_at_start_then_up_then_killed_and_restarted(servers):
    port = _free_port()
    region = _region()
    proc = _start(region, [f"nats://127.0.0.1:{port}"], buffer_records=1 << 20, ack_window=64)
    slot = 0
    rng = random.Random(5)
    bbo_rows, tape_rows = _rows(rng, 8000, 34_200_000_000_000, bbo=False)
    half = len(tape_rows) // 2
    _publish(region, bbo_rows, tape_rows[:half])
    time.sleep(1.0)
    assert _own(region, slot, "connected") == 0 and _own(region, slot, "sent") == 0   # nothing to send to yet
    assert _own(region, slot, "server_port") == 0
    from appliance.publish.publisher import MARK
    assert _own(region, slot, "mark") == MARK
    srv = servers(port).start()
    _wait(lambda: _own(region, slot, "acknowledged") > 500, what="the first acknowledgements")
    assert _own(region, slot, "server_port") == port
    srv.kill()                                                                          # mid-stream
    acked_before = _own(region, slot, "acknowledged")
    _publish(region, bbo_rows, tape_rows[half:])
    time.sleep(0.5)
    srv.start()                                                                         # the same store
    assert proc.finish() == 0
    report = proc.report()
    assert report["dropped"] == 0 and report["unacknowledged_at_exit"] == 0
    assert report["acknowledged"] == report["sent"] > acked_before
    records = _checked(asyncio.run(_read_stream(srv.url)))
    assert len(records) == report["sent"]                 # each once: the resends were suppressed by message id
    trades = [(r.timestamp, r.locate, r.shares, r.price, r.match) for r in records if r.kind == R.KIND_TRADE]
    assert trades == [(int(t[0]), int(t[1]), int(t[4]), int(t[5]), int(t[6])) for t in tape_rows
                      if t[S.TAPE_KIND] not in (S.KIND_CLOCK, S.KIND_BROKEN)]
    region.close()


def test_server_killed_for_good_publisher_keeps_draining_and_counts_drops(servers):
    srv = servers().start()
    region = _region(RW.MIN_ROWS)
    proc = _start(region, [srv.url], buffer_records=500, flush_s=2.0)
    rng = random.Random(9)
    bbo_rows, tape_rows = _rows(rng, 2000, 34_200_000_000_000)
    _publish(region, bbo_rows, tape_rows)
    _wait(lambda: _own(region, 0, "acknowledged") > 100, what="the first acknowledgements")
    srv.kill()
    more_bbo, more_tape = _rows(rng, 12000, 35_000_000_000_000)
    for i in range(0, len(more_bbo), 2000):                 # more than a ring (4,096 rows) in all: must keep up
        _publish(region, more_bbo[i:i + 2000], more_tape[i:i + 2000])
        time.sleep(0.2)
    started = time.monotonic()
    assert proc.finish() == 0
    assert time.monotonic() - started < 15                  # flush_s bounds the wait for a server that is gone
    report = proc.report()
    assert report["ring_lost"] == 0
    assert report["rows"]["bbo"] == len(bbo_rows) + len(more_bbo)
    assert report["rows"]["tape"] == len(tape_rows) + len(more_tape)
    assert report["dropped"] > 0 and report["unacknowledged_at_exit"] > 0
    assert report["conflated"] > 0
    assert report["acknowledged"] <= report["sent"]       # all of it may have been acknowledged before the kill
    for name in ("dropped", "conflated", "sent", "acknowledged", "unacknowledged_at_exit"):
        assert _own(region, 0, name) == report[name], name
    assert region.consumer(RW.TAPE, 0)[RW.CS_PID] < 0          # detached
    srv.start()                                              # what it had acknowledged is in the store
    records = asyncio.run(_read_stream(srv.url))
    assert [r.sequence for r in records] == list(range(1, len(records) + 1))
    assert len(records) >= report["acknowledged"]
    region.close()


def _tail(url, *args, timeout=60):
    import sys
    return subprocess.run([sys.executable, "-m", "appliance", "tail", *args, "--server", url], capture_output=True,
                          text=True, timeout=timeout)


def test_tail_prints_history_and_says_when_a_publisher_restarts(servers):
    """`appliance tail md.<feed>.> --all --json` prints every record of two publisher runs in stream order; the
    second run is reported as a new epoch on stderr; a narrower subject prints only its series; errors are one
    sentence."""
    srv = servers().start()
    rng = random.Random(3)
    sent = []
    for run in range(2):                                   # a publisher, then a restarted one (a new epoch)
        region = _region()
        proc = _start(region, [srv.url])
        bbo_rows, tape_rows = _rows(rng, 300, 34_200_000_000_000 + run * 10**12)
        _publish(region, bbo_rows, tape_rows)
        assert proc.finish() == 0
        sent.append(proc.report()["sent"])
        region.close()
    done = _tail(srv.url, R.feed_filter(FEED), "--all", "--json", "--idle", "2")
    assert done.returncode == 0, done.stderr
    printed = [R.from_json(text) for text in done.stdout.splitlines()]
    stored = asyncio.run(_read_stream(srv.url))
    assert printed == stored and len(printed) == sum(sent)
    epochs = [x for x in done.stderr.splitlines() if "a new epoch" in x]
    assert len(epochs) == 1 and f"{printed[-1].publisher:016x} started" in epochs[0]
    assert "missing" not in done.stderr and "disconnected" not in done.stderr
    one = R.subject(FEED, "A.B", "bbo")
    series = [r for r in stored if r.kind == R.KIND_BBO and r.symbol.rstrip() == "A.B"]
    done = _tail(srv.url, one, "--all", "--count", "2", "--idle", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(series) >= 2 and len(lines) == 2                       # --count stops it
    assert all(" bbo " in x and " A.B(" in x and f":{r.sequence} " in x for x, r in zip(lines, series))
    assert "not checked" in done.stderr
    done = _tail(srv.url, "md.nosuchfeed.>", "--all", "--idle", "1")
    assert done.returncode == 2 and "no JetStream stream holds" in done.stderr and "Traceback" not in done.stderr
    done = _tail(f"nats://127.0.0.1:{_free_port()}", R.feed_filter(FEED), "--idle", "1")
    assert done.returncode == 1 and "cannot reach a NATS server" in done.stderr and "Traceback" not in done.stderr



lab = None
try:
    from conftest import module_lab
    lab = module_lab("appl-nats")
except ImportError:                                       # pragma: no cover (conftest is always there)
    pass


@pytest.mark.root
@pytest.mark.netns
def test_live_capture_publishes_what_its_tables_say(lab, tmp_path):
    """`appliance capture --publish` in a lab namespace with a nats-server (JetStream) inside it: the stream,
    read back with `appliance tail --all --json`, rebuilds every symbol's last top of book as bbo.csv has it and
    holds exactly trades.csv's trades, in order, with one publisher's sequences unbroken."""
    import csv
    import json
    from test_capture import REPO, SAMPLE, _appliance, _start_capture

    port = _free_port()
    store = tmp_path / "store"
    server = subprocess.Popen(lab.netns_cmd([SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    try:
        time.sleep(1.0)
        assert server.poll() is None
        out = tmp_path / "out"
        proc = _start_capture(lab, out, "--publish", url, "--publish-feed", "lab")
        sent = subprocess.run(lab.netns_cmd(_appliance("replay", str(SAMPLE), "--send", "lab1", "--pps", "20000")),
                              capture_output=True, text=True, cwd=REPO)
        assert sent.returncode == 0, sent.stderr
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        tail = subprocess.run(lab.netns_cmd(_appliance("tail", "md.lab.>", "--all", "--json", "--idle", "3",
                                                        "--server", url)), capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert tail.returncode == 0, tail.stderr
    finally:
        server.kill()
        server.wait()
    records = [R.from_json(x) for x in tail.stdout.splitlines()]
    assert [r.sequence for r in records] == list(range(1, len(records) + 1)) and len({r.publisher for r in records}) == 1
    summary = json.loads((out / "summary.json").read_text())
    (pub,) = summary["capture"]["publishers"]
    assert pub["exit_status"] == 0 and pub["sent"] == pub["acknowledged"] == len(records) and pub["dropped"] == 0
    # the tables' consumer and the publisher each had a slot of their own: both saw every row
    assert len((out / "bbo.csv").read_text().splitlines()) - 1 == summary["capture"]["output"]["published"]["bbo"] \
        == pub["rows"]["bbo"]
    book = client.TopOfBook()
    for r in records:
        book.apply(r)
    with (out / "bbo.csv").open() as f:
        last = {int(row["locate"]): (int(row["timestamp_ns"]), int(row["locate"]), int(row["bid_price"]),
                                     int(row["bid_size"]), int(row["ask_price"]), int(row["ask_size"]))
                for row in csv.DictReader(f)}
    assert {loc: top.as_row() for loc, top in book.tops.items()} == last and len(last) > 100
    with (out / "trades.csv").open() as f:
        table = [(int(row["timestamp_ns"]), int(row["locate"]), row["symbol"], int(row["shares"]), int(row["price"]),
                  int(row["match_number"])) for row in csv.DictReader(f)]
    published = [(r.timestamp, r.locate, r.symbol.rstrip(), r.shares, r.price, r.match) for r in records
                 if r.kind == R.KIND_TRADE]
    assert published == table and table


def test_server_restarted_after_the_duplicate_window_takes_the_next_records(servers):
    """A restarted server knows a stream's last message id only from the records inside the duplicate window: a
    publisher idle for longer than it must not have its next records refused for ever (the record after an
    acknowledged one carries no expectation of its predecessor)."""
    srv = servers().start()
    region = _region()
    proc = _start(region, [srv.url], duplicate_window_s=1.0, flush_s=8.0)
    rng = random.Random(21)
    bbo_rows, tape_rows = _rows(rng, 400, 34_200_000_000_000)
    _publish(region, bbo_rows[:200], tape_rows[:200])
    _wait(lambda: _own(region, 0, "acknowledged") == _own(region, 0, "sent") > 50, what="every record acknowledged")
    time.sleep(2.0)                                        # idle past the duplicate window
    srv.kill()
    srv.start()                                            # the same store
    _wait(lambda: _own(region, 0, "connected") == 1, what="the publisher back")
    _publish(region, bbo_rows[200:], tape_rows[200:])
    assert proc.finish() == 0
    report = proc.report()
    assert report["unacknowledged_at_exit"] == 0 and report["acknowledged"] == report["sent"], report
    records = _checked(asyncio.run(_read_stream(srv.url)))
    assert len(records) == report["sent"]
    region.close()
