"""Defects a code review found, each pinned by the input that triggered it: engine and reference must agree,
and the expected values are worked out by hand."""
from __future__ import annotations

import csv

from reference import build as b
from test_equivalence import assert_equivalent, both

A, B = b.GROUP_A, b.GROUP_B
S = 100_000_000                                   # the default VWAP step


def cap(tmp_path, frames, name="cap.pcap"):
    return b.write(tmp_path / name, b.pcap_bytes(frames))


def day(tmp_path, messages, name="day.bin"):
    return b.write(tmp_path / name, b.dayfile_bytes(messages))


def test_match_number_past_2_to_the_63_prints_unsigned(tmp_path):
    """A u64 match number >= 2**63 once sent the CSV formatter into an endless loop."""
    path = day(tmp_path, [b.directory(1, "AAA"), b.trade("B", 10, 20_000, 2**64 - 1, ts=1),
                          b.trade("S", 10, 20_000, 2**63, ts=2)])
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    with open(tmp_path / "out" / "trades.csv") as fh:
        matches = [row["match_number"] for row in csv.DictReader(fh)]
    assert matches == [str(2**64 - 1), str(2**63)]


def test_hostile_side_byte_cannot_break_a_csv_row(tmp_path):
    path = day(tmp_path, [b.directory(1, "AAA"), b.trade(",", 7, 20_000, 13, ts=1), b.trade("\n", 7, 20_000, 14, ts=2)])
    both([path], tmp_path / "out")
    with open(tmp_path / "out" / "trades.csv") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 3
    assert all(line.count(",") == 7 for line in lines)
    assert [line.split(",")[4] for line in lines[1:]] == ["?", "?"]


def test_notional_past_int64_is_kept_as_the_u64_it_is(tmp_path):
    top = 0xFFFFFFFF
    path = day(tmp_path, [b.directory(1, "ZZZ"), b.trade("B", top, top, 1, ts=1)])
    engine, reference = both([path], tmp_path / "out")
    assert engine["summary"]["symbols"]["ZZZ"]["notional"] == top * top
    assert engine["summary"]["symbols"]["ZZZ"]["vwap"] == top
    assert_equivalent(engine, reference)


def test_full_pending_table_and_an_older_packet(tmp_path):
    """1,024 packets held on line A; then an older one arrives: it ends the hole and applies at once."""
    frames = [b.udp_frame(b.mold(1, [b.directory(1, "AAA")]), group=A),
              b.udp_frame(b.mold(1, [b.directory(1, "AAA")]), group=B)]
    frames += [b.udp_frame(b.mold(seq, [b.add(seq, "B", 1, 10_000 + seq)]), group=A) for seq in range(100, 1124)]
    frames.append(b.udp_frame(b.mold(50, [b.add(50, "S", 1, 20_000)]), group=A))
    engine, reference = both([cap(tmp_path, frames)], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert engine["summary"]["gaps"] == [["TEST000001", 2, 49], ["TEST000001", 51, 99]]
    assert engine["summary"]["messages"] == 1 + 1 + 1024
    assert engine["summary"]["duplicate_packets"] == 1


def test_hole_announced_by_one_line_is_a_gap_at_end_of_input(tmp_path):
    frames = [b.udp_frame(b.mold(1, [b.directory(1, "AAA")]), group=A),
              b.udp_frame(b.mold(1, [b.directory(1, "AAA")]), group=B),
              b.udp_frame(b.heartbeat(20), group=A)]
    engine, reference = both([cap(tmp_path, frames)], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert engine["summary"]["gaps"] == [["TEST000001", 2, 19]]


def test_new_epoch_forgets_instruments_gone_quiet(tmp_path):
    """Locate 1 trades at 5.05 s, goes quiet; feed time reaches 30 s; then the next day's 4.55 s trade."""
    path = day(tmp_path, [b.directory(1, "ONE"), b.directory(2, "TWO"),
                          b.trade("B", 100, 10, 1, locate=1, ts=5_050_000_000),
                          b.trade("B", 5, 10, 2, locate=2, ts=30_000_000_000),
                          b.trade("B", 7, 11, 3, locate=1, ts=4_550_000_000)])
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    rows = [(int(row[0]), int(row[1]), int(row[3])) for row in engine["vwap"]]
    epoch_two = rows[rows.index((30_100_000_000, 2, 5)) + 1:]
    # input ends at 4.55 s: the new epoch's one window holds its 7 shares and nothing of epoch one's 5.05 s
    assert epoch_two == [(4_600_000_000, 1, 7)]


def test_late_trade_joins_the_windows_still_to_come(tmp_path):
    path = day(tmp_path, [b.directory(2, "TWO"), b.trade("B", 1, 10, 1, locate=2, ts=10_000_000_000),
                          b.trade("B", 5, 10, 2, locate=2, ts=9_500_000_000)])
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    windows = {int(row[0]): int(row[3]) for row in engine["vwap"]}
    assert windows == {10_100_000_000: 6}
    assert engine["summary"]["counters"]["vwap_late_trades"] == 1


def test_order_table_overflow_grows_without_losing_an_order(tmp_path, monkeypatch):
    """A small ring and an overflow that starts at 64 slots: long-lived orders migrate and the overflow doubles
    many times during the feed; books, trades and top-of-book rows still equal the reference."""
    from appliance.decode import orders, state
    from appliance.gen import FeedSpec, write_feed
    from appliance.replay.engine import Options, Replay
    from appliance.replay.output import CsvSink
    from reference import reference_replay
    from test_equivalence import engine_replay

    monkeypatch.setattr(state, "OVERFLOW_START", 64)
    path = tmp_path / "feed.itch50"
    write_feed(path, FeedSpec(seed=5, messages=150_000, instruments=200), fmt="dayfile")
    sink = CsvSink(str(tmp_path / "direct"), messages=False)
    engine = Replay(Options(order_capacity=20_000), sink)
    engine.run([str(path)])
    sink.close()
    meta = engine.book.ot_meta
    assert meta[orders.OVER_MASK] + 1 >= 1024, "the overflow never grew: the test does not test growth"
    assert engine.cnt[state.C.ORDER_TABLE_FULL] == 0
    # the same small table through the command line, against the reference (which has no capacity limit)
    small = engine_replay([path], tmp_path / "out", extra=["--order-capacity", "20000"])
    assert small["summary"]["counters"]["order_table_full"] == 0
    assert_equivalent(small, reference_replay([path]))


# -- issue 8.1: order reference 0 is never a live order ----------------------------------------------------
def test_messages_naming_reference_zero_are_unknown_refs(tmp_path):
    """D, X, E, C naming reference 0 once matched an empty slot: open orders went to -3."""
    events = [b.system_event(code, ts=i) for i, code in enumerate("OSQMEC" + "OS")]
    path = day(tmp_path, [*events, b.directory(1, "AAA"), b.delete(0, ts=10), b.cancel(0, 5, ts=11),
                          b.execute(0, 5, 1, ts=12), b.execute_at(0, 5, 2, 10_000, ts=13), b.delete(0, ts=14)])
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert engine["summary"]["open_orders"] == 0
    assert engine["summary"]["unknown_order_refs"] == 5
    assert engine["trades"] == []


def test_replace_of_reference_zero_adds_no_phantom_order(tmp_path):
    path = day(tmp_path, [b.directory(1, "AAA"), b.add(7, "B", 100, 10_000, ts=1),
                          b.replace(0, 8, 300, 12_000, ts=2)])
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert engine["summary"]["open_orders"] == 1
    assert engine["summary"]["unknown_order_refs"] == 1
    assert [row[3:5] for row in engine["bbo"]] == [(10_000, 100)]     # the phantom 300 @ 1.2 never appears


def test_small_order_table_with_reference_zero_traffic_ends(tmp_path):
    """Once open_orders went negative, more orders went in than the table holds and the overflow probe looped
    for ever.  Now the deletes of 0 are unknown and the capacity holds: a run in a subprocess ends in time."""
    import subprocess
    import sys

    msgs = [b.directory(1, "AAA")] + [b.delete(0, ts=1)] * 400
    # far more long-lived orders than the capacity, spread so they all migrate to the overflow
    msgs += [b.add(1 + 4096 * i, "B", 1, 10_000 + i, ts=2) for i in range(600)]
    path = day(tmp_path, msgs)
    done = subprocess.run([sys.executable, "-m", "appliance", "replay", str(path), "--out", str(tmp_path / "out"),
                           "-q", "--order-capacity", "300"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    import json
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["open_orders"] == 300
    assert summary["unknown_order_refs"] == 400
    assert summary["counters"]["order_table_full"] == 300
