"""Pipelined replay (issue 9, item 4): decoding on the calling thread, formatting and writing on the writer
thread (``replay.writer.BackgroundSink`` in front of ``replay.output.CsvSink``).  A full queue makes the
decoder wait and loses no row; a failed write stops the decoding at the next hand-off; messages.csv from the command equals, byte for byte, the
reference replay's messages written by Python's csv module (the writer it had before its kernel)."""
from __future__ import annotations

import csv
import json
import io
import time

import numpy as np
import pytest

from appliance.replay.writer import BackgroundSink
from appliance.decode import counters as C
from appliance.decode.state import OUT_ROWS
from appliance.itch.layout import all_field_names
from appliance.replay.engine import Options, Replay
from appliance.replay.output import CsvSink, OutputFailed
from reference import reference_replay

TABLES = ("bbo.csv", "trades.csv", "broken.csv", "vwap.csv", "messages.csv")


@pytest.fixture(scope="module")
def busy_day(tmp_path_factory):
    """A day file whose rows fill every output buffer several times (so the queue fills and wraps)."""
    from appliance.gen import FeedSpec, write_feed

    path = tmp_path_factory.mktemp("pipeline") / "day.itch50"
    write_feed(path, FeedSpec(seed=11, messages=4 * OUT_ROWS, instruments=40), fmt="dayfile")
    return path


def tables(out) -> dict:
    return {name: (out / name).read_bytes() for name in TABLES}


def replay_direct(path, out) -> Replay:
    """The unpipelined replay: the decoder folds the windows and writes every row itself."""
    sink = CsvSink(str(out), messages=True)
    engine = Replay(Options(messages=True), sink)
    engine.run([str(path)])
    sink.close()
    return engine


class SlowCsv(CsvSink):
    """A writer slower than the decoder: each top-of-book hand-off waits a little."""

    def bbo(self, rows, n, sym):
        time.sleep(0.05)
        super().bbo(rows, n, sym)


def test_a_full_queue_makes_the_decoder_wait_and_loses_nothing(busy_day, tmp_path):
    direct = replay_direct(busy_day, tmp_path / "direct")
    options = Options(messages=True)
    sink = BackgroundSink(SlowCsv(str(tmp_path / "piped"), messages=True), depth=1, fail_fast=True)
    piped = Replay(options, sink)
    piped.run([str(busy_day)])
    sink.close()
    assert sink.stats()["output_waits"] > 0                 # the queue was full and the decoder waited
    assert tables(tmp_path / "piped") == tables(tmp_path / "direct")
    assert direct.cnt[C.MESSAGES] == piped.cnt[C.MESSAGES] == 4 * OUT_ROWS
    assert piped.cnt[C.VWAP_LATE_TRADES] == direct.cnt[C.VWAP_LATE_TRADES]


def test_the_command_writes_what_the_unpipelined_replay_writes(busy_day, tmp_path):
    from appliance.cli import main

    replay_direct(busy_day, tmp_path / "direct")
    assert main(["replay", str(busy_day), "--out", str(tmp_path / "cmd"), "-q"]) == 0
    assert main(["replay", str(busy_day), "--out", str(tmp_path / "cmd-msgs"), "-q", "--messages"]) == 0
    assert tables(tmp_path / "cmd-msgs") == tables(tmp_path / "direct")
    plain = {name: (tmp_path / "cmd" / name).read_bytes() for name in TABLES[:-1]}
    assert plain == {name: data for name, data in tables(tmp_path / "direct").items() if name != "messages.csv"}


def test_messages_csv_equals_the_csv_module_over_the_reference(tmp_path):
    """End to end, with session names and sequence numbers from MoldUDP64 packets on two lines."""
    from appliance.cli import main
    from appliance.gen import FeedSpec, write_feed

    path = tmp_path / "ab.pcap"
    write_feed(path, FeedSpec(seed=12, messages=3000, instruments=6, ab=True, gaps=2, gaps_on="A"), fmt="pcap")
    assert main(["replay", str(path), "--out", str(tmp_path / "out"), "-q", "--messages"]) == 0
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    fields = all_field_names()
    writer.writerow(["session", "sequence"] + fields)
    for session, sequence, decoded in reference_replay([path])["messages"]:
        writer.writerow([session, sequence] + [decoded.get(f, "") for f in fields])
    assert (tmp_path / "out" / "messages.csv").read_bytes() == text.getvalue().encode("utf-8")


class FailingSink:
    dir = None

    def __init__(self):
        self.calls = 0

    def bbo(self, rows, n, sym):
        self.calls += 1
        raise OutputFailed("writing bbo.csv failed: No space left on device")

    def close(self):
        pass


def _wait_for_error(sink):
    deadline = time.monotonic() + 10
    while sink.error is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert sink.error is not None


def test_a_failed_write_stops_a_replay_at_the_next_hand_off():
    rows, sym = np.zeros((4, 7), np.int64), np.zeros((8, 8), np.uint8)
    sink = BackgroundSink(FailingSink(), fail_fast=True)
    sink.bbo(rows, 1, sym)
    _wait_for_error(sink)
    with pytest.raises(OutputFailed, match="No space left"):
        sink.bbo(rows, 1, sym)                              # the decoder learns it here, not after the day
    assert sink.sink.calls == 1
    assert not sink.thread.is_alive()
    with pytest.raises(OutputFailed):
        sink.close()


def test_a_capture_keeps_going_after_a_failed_write_and_hears_of_it_at_the_end():
    rows, sym = np.zeros((4, 7), np.int64), np.zeros((8, 8), np.uint8)
    sink = BackgroundSink(FailingSink())
    sink.bbo(rows, 1, sym)
    _wait_for_error(sink)
    sink.bbo(rows, 1, sym)                                  # no raise: a capture keeps receiving
    with pytest.raises(OutputFailed):
        sink.drain()
    assert sink.sink.calls == 1                             # nothing is written after the failure


def test_summary_json_reads_back_and_keeps_one_member_a_line():
    from appliance.replay.output import _json_text

    data = {"a": 1, "symbols": {"AAA": {"vwap": 1.5, "n": [1, 2]}, 7: None}, "empty": {}, "s": "x\n\"y\""}
    text = _json_text(data)
    assert json.loads(text) == {**data, "symbols": {"AAA": {"vwap": 1.5, "n": [1, 2]}, "7": None}}
    assert text.splitlines()[3] == '  "AAA": {"vwap": 1.5, "n": [1, 2]},'


def test_background_sink_keeps_order_copies_rows_and_reports_errors(tmp_path):
    import time as _time

    class Slow:
        dir = tmp_path

        def __init__(self):
            self.seen = []

        def bbo(self, rows, n, sym):
            _time.sleep(0.01)
            self.seen.append(("bbo", rows[:n, 0].tolist(), bytes(sym[0])))

        def trades(self, rows, n, sym):
            if rows[0, 0] < 0:
                raise OSError(28, "No space left on device")
            self.seen.append(("trades", rows[:n, 0].tolist()))

    inner = Slow()
    sink = BackgroundSink(inner, depth=2)
    rows, sym = np.zeros((10, 6), np.int64), np.full((4, 8), 65, np.uint8)
    for i in range(6):
        rows[:, 0] = i
        sink.bbo(rows, 3, sym)
        sink.trades(rows, 2, sym)
        rows[:, 0] = -99                     # the caller reuses its buffer at once: the queued copy is unaffected
        sym[0, 0] = 66
    sink.drain()
    assert inner.seen[0] == ("bbo", [0, 0, 0], b"AAAAAAAA")
    assert [s[1][0] for s in inner.seen] == [i for i in range(6) for _ in (0, 1)]
    assert sink.stats()["output_waits"] > 0                # depth 2 against a slow writer: the caller waited

    failing = BackgroundSink(Slow())
    rows[:, 0] = -1
    failing.trades(rows, 1, sym)
    from appliance.errors import UserError

    with pytest.raises(UserError, match="No space left"):
        failing.drain()
