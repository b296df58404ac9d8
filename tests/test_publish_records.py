"""The published record, its subjects and the consumer-side client (appliance/publish), without a server.

* every kind round-trips through bytes and JSON, hostile symbols and sessions included;
* the byte layout of one record of each kind is pinned, written out here by hand from the documented table;
* decode refuses short, long, unknown-version and unknown-kind input with one sentence;
* subject tokens round-trip for hostile names and refuse every spelling ``token`` does not make;
* TopOfBook rebuilt from records of random bbo rows equals the last row per locate;
* SequenceTracker reports a gap with its exact span, a new publisher epoch, a late start and duplicates.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from appliance.decode import state as S
from appliance.publish import client, convert
from appliance.publish import records as R

HOSTILE = ["", "A", "AAPL", "BRK A", "BRK.A", "*", ">", "~", "~41", "a.b*c>d", " LEAD", "TAB\tX", "\x00\x01",
           "\xe9t\xe9", "\xff" * 8, "ZZZZZZZZ", "$SYS", "_status", "..", "~~"]


def _samples(symbol="AAPL"):
    return [
        R.Bbo(0x1122334455667788, 1, 34_200_000_000_123, 13, symbol, 1_500_100, 300, 1_500_200, 2**40),
        R.Trade(0xFFFFFFFFFFFFFFFF, 2, 57_600_000_000_000, 65535, symbol, ord("E"), ord("S"), 4_294_967_295,
                2**63, 2**64 - 1),
        R.Trade(7, 3, 1, 2, symbol, ord("Q"), 0, 100, 5, 9),
        R.Broken(7, 4, 0, 0, symbol, 123456789),
        R.Vwap(7, 5, 35_000_000_000_000, 9, symbol, 1_000_000_000, 1200, 1200 * 1_500_000, 4),
        R.Status(7, 6, 0, code=R.STATUS_GAP, session="000012345\xff", first=101, last=120),
        R.Status(7, 7, 123, code=R.STATUS_PUBLISHER_START),
        R.Status(7, 8, 124, code=R.STATUS_LOSS, first=2**64 - 1, last=0),
    ]


@pytest.mark.parametrize("symbol", HOSTILE)
def test_every_kind_round_trips_through_bytes_and_json(symbol):
    if len(symbol.encode("latin-1")) > 8:
        pytest.skip("longer than a symbol")
    for rec in _samples(symbol.rstrip(" ")):
        data = R.encode(rec)
        assert len(data) == R.LENGTHS[rec.kind]
        assert R.decode(data) == rec
        text = R.to_json(rec)
        assert R.from_json(text) == rec
        assert json.loads(text)["kind"] == R.KIND_NAMES[rec.kind]
        assert R.decode(R.encode(R.from_json(text))) == rec


def test_trailing_spaces_are_padding_and_any_byte_survives():
    raw = bytes(range(256))
    for i in range(0, 256, 8):
        chunk = raw[i:i + 8]
        name = chunk.rstrip(b" ").decode("latin-1")
        rec = R.Bbo(1, 1, 0, 0, name)
        data = R.encode(rec)
        assert data[4:12] == chunk.rstrip(b" ").ljust(8, b" ")
        assert R.decode(data).symbol == name


def _le(value, size):
    return value.to_bytes(size, "little", signed=value < 0)


def _header(kind, locate, symbol, publisher, sequence, ts):
    return bytes([1, kind]) + _le(locate, 2) + symbol + _le(publisher, 8) + _le(sequence, 8) + _le(ts, 8)


def test_byte_layout_is_pinned_for_every_kind():
    b = R.encode(R.Bbo(0x0102030405060708, 42, 34_200_000_000_000, 0x1234, "AAPL", 1_500_100, 300, 1_500_200, 2**40))
    assert b == (_header(1, 0x1234, b"AAPL    ", 0x0102030405060708, 42, 34_200_000_000_000)
                 + _le(1_500_100, 4) + _le(300, 8) + _le(1_500_200, 4) + _le(2**40, 8))
    assert len(b) == 60 and b[:4].hex() == "01013412" and b[4:12] == b"AAPL    "
    assert b[12:20].hex() == "0807060504030201"

    t = R.encode(R.Trade(5, 6, 7, 8, "MSFT", ord("P"), ord("B"), 2_000_000, 100, 0xA1B2C3D4E5F60718))
    assert t == (_header(2, 8, b"MSFT    ", 5, 6, 7) + b"PB" + _le(2_000_000, 4) + _le(100, 8)
                 + bytes.fromhex("1807F6E5D4C3B2A1"))
    assert len(t) == 58

    k = R.encode(R.Broken(5, 6, 7, 8, "MSFT", 99))
    assert k == _header(3, 8, b"MSFT    ", 5, 6, 7) + _le(99, 8) and len(k) == 44

    v = R.encode(R.Vwap(5, 6, 36_000_000_000_000, 8, "MSFT", 1_000_000_000, 300, 600_000_000, 3))
    assert v == (_header(4, 8, b"MSFT    ", 5, 6, 36_000_000_000_000) + _le(1_000_000_000, 8) + _le(300, 8)
                 + _le(600_000_000, 8) + _le(3, 8))
    assert len(v) == 68

    s = R.encode(R.Status(5, 6, 7, code=R.STATUS_GAP, session="SESSION01", first=101, last=120))
    assert s == _header(5, 0, b" " * 8, 5, 6, 7) + b"\x01" + b"SESSION01 " + _le(101, 8) + _le(120, 8)
    assert len(s) == 63
    assert R.HEADER_BYTES == 36


@pytest.mark.parametrize("data, says", [
    (b"", "0 bytes is too short to be a record"),
    (b"\x01", "1 bytes is too short"),
    (b"\x02\x01" + bytes(58), "record version 2 is not the version this reader knows (1)"),
    (b"\x00\x01" + bytes(58), "record version 0"),
    (b"\x01\x09" + bytes(58), "record kind 9 is not a known kind"),
    (b"\x01\x01" + bytes(57), "a bbo record is 60 bytes, not 59"),
    (b"\x01\x01" + bytes(59), "a bbo record is 60 bytes, not 61"),
    (b"\x01\x05" + bytes(10), "a status record is 63 bytes, not 12"),
])
def test_decode_refuses_wrong_input_in_one_sentence(data, says):
    with pytest.raises(R.RecordError) as err:
        R.decode(data)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_encode_and_from_json_refuse_values_that_do_not_fit():
    with pytest.raises(R.RecordError, match="out of range"):
        R.encode(R.Bbo(1, 1, 0, 70_000, "A"))
    with pytest.raises(R.RecordError, match="out of range"):
        R.encode(R.Trade(1, 1, 0, 0, "A", match=-1))
    with pytest.raises(R.RecordError, match="longer than 8 bytes"):
        R.encode(R.Bbo(1, 1, 0, 0, "ABCDEFGHI"))
    with pytest.raises(R.RecordError, match="beyond one byte"):
        R.encode(R.Bbo(1, 1, 0, 0, "\u20ac"))
    good = R.to_dict(R.Trade(1, 2, 3, 4, "A", ord("E"), ord("B"), 5, 6, 7))
    for bad, says in [({**good, "version": 2}, "version 2"), ({**good, "kind": "quote"}, "kind 'quote'"),
                      ({**good, "extra": 1}, "extra ['extra']"), ({k: v for k, v in good.items() if k != "price"},
                                                                  "missing ['price']"),
                      ({**good, "side": "BS"}, "one-character"), ({**good, "price": "5"}, "integer"),
                      ({**good, "price": True}, "integer"), ({**good, "shares": -1}, "out of range")]:
        with pytest.raises(R.RecordError, match=says.replace("[", r"\[").replace("]", r"\]")):
            R.from_dict(bad)
    with pytest.raises(R.RecordError, match="not JSON"):
        R.from_json("{")


@pytest.mark.parametrize("name", HOSTILE + ["x" * 40, "ÿ~.", "NORMAL"])
def test_subject_tokens_round_trip_and_are_valid_nats_tokens(name):
    for kind in ("bbo", "trade", "broken", "vwap"):
        subj = R.subject("itch.A", name, kind)
        tokens = subj.split(".")
        assert len(tokens) == 4 and all(tokens) and tokens[0] == "md"
        assert all(0x21 <= ord(c) < 0x7F and c not in "*>" for c in subj.replace(".", ""))
        assert R.parse_subject(subj) == ("itch.A", name, kind)
    assert R.parse_subject(R.subject(name, "", "status")) == (name, None, "status")


def test_escaping_is_as_documented():
    assert R.subject("itch", "BRK A", R.KIND_BBO) == "md.itch.BRK~20A.bbo"
    assert R.subject("feed.1", "A.B", "trade") == "md.feed~2E1.A~2EB.trade"
    assert R.subject("itch", "", "vwap") == "md.itch.~.vwap"
    assert R.subject("itch", "~", "vwap") == "md.itch.~7E.vwap"
    assert R.subject("itch", "x", "status") == "md.itch._status"
    assert R.token("\xe9") == "~E9" and R.token("*>") == "~2A~3E"
    assert R.stream_name("feed.1") == "md_feed~2E1" and R.feed_filter("itch") == "md.itch.>"


@pytest.mark.parametrize("subj, says", [
    ("md.itch.~41.bbo", "written plain"),            # 'A' escaped: a second spelling of "A"
    ("md.itch.~2e.bbo", "upper-case hex"),
    ("md.itch.A~.bbo", "two upper-case hex"),
    ("md.itch.A~4.bbo", "two upper-case hex"),
    ("md.itch.~~.bbo", "two upper-case hex"),
    ("md.itch.AAPL.quote", "not one of bbo"),
    ("md.itch.AAPL.status", "not one of bbo"),
    ("md.itch.AAPL", "is not md."),
    ("xx.itch.AAPL.bbo", "is not md."),
    ("md.itch..bbo", "empty subject token"),
    ("md.itch.A B.bbo", "not allowed"),
    ("md.itch.A*.bbo", "not allowed"),
    ("md.itch.AAPL.bbo.x", "is not md."),
])
def test_parse_subject_refuses_what_subject_never_makes(subj, says):
    with pytest.raises(R.RecordError, match=says):
        R.parse_subject(subj)


def test_subject_refuses_unknown_kind_and_wide_characters():
    with pytest.raises(R.RecordError):
        R.subject("itch", "A", "quote")
    with pytest.raises(R.RecordError):
        R.subject("itch", "\u20ac", "bbo")


def _sym_table(rng):
    sym = np.full((S.LOCATES, 8), 32, np.uint8)
    for loc in range(1, 60):
        name = bytes(rng.choice(b"ABCXYZ. *>~\xe9") for _ in range(rng.randint(1, 8)))
        sym[loc, :len(name)] = np.frombuffer(name, np.uint8)
    return sym


def test_top_of_book_rebuilt_from_records_equals_the_last_bbo_row_per_locate():
    rng = random.Random(7)
    sym = _sym_table(rng)
    rows = np.zeros((5000, 6), np.int64)
    for i in range(len(rows)):
        rows[i] = [34_200_000_000_000 + i * 1000, rng.randint(1, 59), rng.choice([0, rng.randint(1, 2**32 - 1)]),
                   rng.randint(0, 2**40), rng.choice([0, rng.randint(1, 2**32 - 1)]), rng.randint(0, 10**6)]
    book = client.TopOfBook()
    for i, row in enumerate(rows):
        rec = R.replace(convert.bbo(row, sym), publisher=9, sequence=i + 1)
        book.apply(R.decode(R.encode(rec)))            # through the wire form, as a consumer gets it
    last = {}
    for row in rows:
        last[int(row[S.BBO_LOCATE])] = tuple(int(v) for v in row)
    assert {loc: top.as_row() for loc, top in book.tops.items()} == last
    for loc, top in book.tops.items():
        assert top.symbol == bytes(sym[loc]).rstrip(b" ").decode("latin-1")
    assert not book.apply(R.Trade(9, 1, 0, 1, "A"))


def test_tape_rows_become_trades_and_broken_trades_and_clock_marks_nothing():
    sym = np.full((S.LOCATES, 8), 32, np.uint8)
    sym[3, :4] = np.frombuffer(b"AAPL", np.uint8)
    trade = np.array([5, 3, ord("E"), ord("B"), 100, 1_500_000, -2], np.int64)      # a match >= 2**63 wraps
    rec = convert.tape(trade, sym)
    assert rec == R.Trade(0, 0, 5, 3, "AAPL", ord("E"), ord("B"), 1_500_000, 100, 2**64 - 2)
    assert convert.tape(np.array([6, 3, S.KIND_BROKEN, 0, 0, 0, 77], np.int64), sym) == R.Broken(0, 0, 6, 3, "AAPL", 77)
    assert convert.tape(np.array([7, 0, S.KIND_CLOCK, 0, 0, 0, 0], np.int64), sym) is None
    names = np.zeros((4, 10), np.uint8)
    names[1] = np.frombuffer(b"SESSION001", np.uint8)
    assert convert.gap(np.array([1, 101, 120]), names, 9) == R.Status(0, 0, 9, code=R.STATUS_GAP, session="SESSION001",
                                                                      first=101, last=120)


def test_sequence_tracker_reports_gaps_epochs_late_starts_and_duplicates():
    t = client.SequenceTracker()
    assert t.observe_sequence(0xAA, 1) == []
    assert t.observe_sequence(0xAA, 2) == []
    [gap] = t.observe_sequence(0xAA, 23)
    assert (gap.kind, gap.first, gap.last) == ("gap", 3, 22)
    assert gap.text == "publisher 00000000000000aa: records 3-22 missing"
    [one] = t.observe_sequence(0xAA, 25)
    assert one.text.endswith("record 24 missing") and t.missing == 21
    [dup] = t.observe_sequence(0xAA, 25)
    assert dup.kind == "duplicate"
    [epoch] = t.observe_sequence(0xBB, 1)
    assert (epoch.kind, epoch.publisher, epoch.first, epoch.last) == ("epoch", 0xBB, 1, 25)
    assert "new epoch after publisher 00000000000000aa (its last record seen: 25)" in epoch.text
    assert t.observe_sequence(0xBB, 2) == []
    # a record of the old epoch arriving late is checked against that epoch, not taken for a third one
    [late_old] = t.observe_sequence(0xAA, 26 + 4)
    assert late_old.kind == "gap" and t.current[""] == 0xBB
    # a source of its own: its first publisher is no new epoch, but starting at 101 is said
    [late] = t.observe_sequence(0xCC, 101, source="itch")
    assert (late.kind, late.first, late.last) == ("late_start", 1, 100)
    assert late.text == "publisher 00000000000000cc: records 1-100 were sent before this consumer's first"
    assert t.current == {"": 0xBB, "itch": 0xCC}


def test_sequence_tracker_over_records():
    t = client.SequenceTracker()
    recs = [R.replace(r, publisher=5, sequence=i + 1) for i, r in enumerate(_samples())]
    events = [e for r in recs[:3] + recs[5:] for e in t.observe(r)]
    assert [(e.kind, e.first, e.last) for e in events] == [("gap", 4, 5)]
