"""The engine (``appliance replay``, in-process) against the reference on the same files.

Summary fields are compared exactly (VWAP floats approximately), CSVs row for row.  Inputs: feeds from the
generator in several shapes and formats, a hand-built hostile capture, and the RITCH day file.  Nothing here
skips when the engine or the generator is missing or wrong: such a test fails, saying what differed.
"""
from __future__ import annotations

import csv
import json
import random
import re
import tempfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.itch.layout import MESSAGES, decode
from reference import build as b
from reference import reference_replay
from reference.build import GROUP_A, GROUP_B, PORT

SUMMARY_KEYS = ("packets", "bad_packets", "duplicate_packets", "heartbeats", "end_of_session", "messages",
                "messages_by_type", "gaps", "open_orders", "unknown_order_refs", "rejected_adds", "broken_trades",
                "broken_match_numbers", "bad_messages", "frames", "non_ipv4", "bad_ip", "truncated_frames",
                "ip_fragments", "non_udp", "bad_udp", "not_feed")
# Counted by the contract but not in its list of summary.json fields: compared when the engine reports them.
COUNTED_KEYS = ("unsupported_linktype", "truncated_records")
SYMBOL_FIELDS = ("locate", "bid_price", "bid_size", "ask_price", "ask_size", "volume", "notional", "trades",
                 "vwap", "cross_volume")

CSV_COLUMNS = {   # file -> (header, converter per column)
    "bbo.csv": ("timestamp_ns,locate,symbol,bid_price,bid_size,ask_price,ask_size",
                (int, int, str, int, int, int, int)),
    "trades.csv": ("timestamp_ns,locate,symbol,kind,side,shares,price,match_number",
                   (int, int, str, str, str, int, int, int)),
    "vwap.csv": ("window_end_ns,locate,symbol,volume,notional,vwap,trades", (int, int, str, int, int, str, int)),
}
RESULT_OF = {"bbo.csv": "bbo", "trades.csv": "trades", "vwap.csv": "vwap"}
VWAP_PRINTED = re.compile(r"^\d+\.\d{4}$")
HALF_LAST_DIGIT = Fraction(1, 20_000)          # half of the 4th decimal: the most a correct rounding may move


# -- running both sides -------------------------------------------------------------------------------
def engine_replay(paths, out: Path, feeds=(), window_ms=None, step_ms=None, messages=False, extra=()) -> dict:
    from appliance.cli import main

    argv = ["replay", *[str(p) for p in paths], "--out", str(out), "-q", *extra]
    for feed in feeds:
        argv += ["--feed", feed]
    if window_ms is not None:
        argv += ["--vwap-window-ms", str(window_ms), "--vwap-step-ms", str(step_ms)]
    if messages:
        argv.append("--messages")
    assert main(argv) == 0, f"appliance {' '.join(argv)} failed"
    result = {"summary": json.loads((out / "summary.json").read_text())}
    for name, (header, converters) in CSV_COLUMNS.items():
        with open(out / name, newline="") as f:
            rows = list(csv.reader(f))
        assert rows and ",".join(rows[0]) == header, f"{name}: header {rows[:1]}"
        for number, row in enumerate(rows[1:], 1):
            assert len(row) == len(converters), f"{name} row {number}: {row}"
        result[RESULT_OF[name]] = [tuple(c(v) for c, v in zip(converters, row)) for row in rows[1:]]
    return result


def both(paths, out: Path, feeds=(), window_ms=None, step_ms=None):
    paths = list(paths)
    kwargs = {} if window_ms is None else {"window_ns": window_ms * 1_000_000, "step_ns": step_ms * 1_000_000}
    reference = reference_replay(paths, feeds=list(feeds) or None, **kwargs)
    engine = engine_replay(paths, out, feeds, window_ms, step_ms)
    return engine, reference


# -- comparing ----------------------------------------------------------------------------------------
def summary_value(summary: dict, key: str):
    """A summary field, at the top level or (as this engine also writes them) under "counters"."""
    if key in summary:
        return summary[key]
    return summary.get("counters", {}).get(key, "<absent>")


def summary_differences(engine: dict, reference: dict) -> list[str]:
    diffs = []
    for key in SUMMARY_KEYS:
        got, want = summary_value(engine, key), reference[key]
        if got != want:
            diffs.append(f"summary.json {key}: engine {_short(got)} != reference {_short(want)}")
    for key in COUNTED_KEYS:
        got = summary_value(engine, key)
        if got != "<absent>" and got != reference[key]:
            diffs.append(f"summary.json {key}: engine {got} != reference {reference[key]}")
    got_symbols, want_symbols = engine.get("symbols", {}), reference["symbols"]
    if set(got_symbols) != set(want_symbols):
        diffs.append(f"summary.json symbols: engine names {sorted(got_symbols)} != reference {sorted(want_symbols)}")
    for name in sorted(set(got_symbols) & set(want_symbols)):
        for field in SYMBOL_FIELDS:
            got, want = got_symbols[name].get(field, "<absent>"), want_symbols[name][field]
            if field == "vwap" and want is not None and isinstance(got, (int, float)):
                volume, notional = want_symbols[name]["volume"], want_symbols[name]["notional"]
                same = within_half_a_tick_digit(Fraction(got), Fraction(notional, volume))
            else:
                same = got == want
            if not same:
                diffs.append(f"summary.json symbols[{name}].{field}: engine {got} != reference {want}")
    return diffs


def row_differences(name: str, engine_rows: list, reference_rows: list) -> list[str]:
    if name == "vwap.csv":
        printed = [row[5] for row in engine_rows]
        bad = [p for p in printed if not VWAP_PRINTED.match(p)]
        if bad:
            return [f"vwap.csv: vwap not printed with 4 decimals, e.g. {bad[0]!r}"]
    for index, (got, want) in enumerate(zip(engine_rows, reference_rows)):
        if name == "vwap.csv":
            exact = Fraction(want[4], want[3])                      # notional / volume, no float involved
            same = (got[:5] == want[:5] and got[6:] == want[6:]
                    and abs(Fraction(Decimal(got[5])) - exact) <= HALF_LAST_DIGIT)
        else:
            same = got == want
        if not same:
            return [f"{name}: first difference at data row {index + 1}: engine {got} != reference {want} "
                    f"(engine {len(engine_rows)} rows, reference {len(reference_rows)})"]
    if len(engine_rows) != len(reference_rows):
        index = min(len(engine_rows), len(reference_rows))
        extra = engine_rows[index] if len(engine_rows) > index else reference_rows[index]
        return [f"{name}: engine has {len(engine_rows)} rows, reference {len(reference_rows)}; "
                f"first unmatched row {index + 1}: {extra}"]
    return []


def within_half_a_tick_digit(value: Fraction, exact: Fraction) -> bool:
    """A VWAP correct to 4 decimals: a correct rounding of the exact value (either way at a tie), or the
    double nearest to it (a float error of 1e-12 of the value is allowed on top)."""
    return abs(value - exact) <= HALF_LAST_DIGIT + abs(exact) * Fraction(1, 10**12)


def assert_equivalent(engine: dict, reference: dict) -> None:
    diffs = summary_differences(engine["summary"], reference["summary"])
    for name, key in RESULT_OF.items():
        diffs += row_differences(name, engine[key], reference[key])
    assert not diffs, "engine and reference disagree:\n  " + "\n  ".join(diffs)


def _short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- generator feeds ----------------------------------------------------------------------------------
SHAPES = {
    "plain-pcap": (dict(seed=1, messages=20_000, instruments=8), "pcap", False),
    "ab-gaps-on-A-pcapng": (dict(seed=2, messages=20_000, instruments=12, ab=True, gaps=6, gaps_on="A"),
                            "pcapng", False),
    "ab-gaps-on-both-gzip": (dict(seed=3, messages=20_000, instruments=9, ab=True, gaps=6, gaps_on="both"),
                             "pcap", True),
    "hostile-qinq-options-malformed": (dict(seed=4, messages=20_000, instruments=20, ab=True, gaps=4,
                                            gaps_both=3, malformed=60, vlan=100, qinq=True, ip_options=True),
                                       "pcapng", True),
    "single-line-gaps-malformed": (dict(seed=5, messages=20_000, instruments=30, gaps=5, gaps_on="both",
                                        malformed=25, vlan=7), "pcap", False),
    "dayfile-gzip": (dict(seed=6, messages=20_000, instruments=10), "dayfile", True),
}


def generate(path: Path, fmt: str, compressed: bool, **spec):
    from appliance.gen import FeedSpec, write_feed

    return write_feed(path, FeedSpec(**spec), fmt=fmt, gzip=compressed)


def assert_manifest_agrees(reference: dict, manifest) -> None:
    """The generator's account of what it wrote, as a third opinion on the reference."""
    s = reference["summary"]
    session = manifest.sessions[0].rstrip(" ") if manifest.sessions else ""
    got = {"gaps": s["gaps"], "messages": s["messages"], "bad_packets": s["bad_packets"]}
    want = {"gaps": [[session, first, last] for first, last in manifest.gaps],
            "messages": manifest.expected_messages if manifest.format != "dayfile" else manifest.messages,
            "bad_packets": manifest.expected_bad_packets}
    if manifest.format != "dayfile":
        got.update(frames=s["frames"], duplicate_packets=s["duplicate_packets"], heartbeats=s["heartbeats"])
        want.update(frames=manifest.frames, duplicate_packets=manifest.expected_duplicate_packets,
                    heartbeats=manifest.heartbeats)
    if not manifest.gaps:
        got["messages_by_type"], want["messages_by_type"] = s["messages_by_type"], manifest.messages_by_type
    assert got == want, "reference and generator manifest disagree"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_generated_feed(tmp_path, shape):
    spec, fmt, compressed = SHAPES[shape]
    path = tmp_path / f"feed.{fmt}"
    manifest = generate(path, fmt, compressed, **spec)
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert_manifest_agrees(reference, manifest)
    assert reference["trades"] and reference["bbo"] and reference["vwap"]
    if spec.get("ab") and spec.get("gaps_on") == "A" and not spec.get("gaps_both"):
        assert reference["summary"]["gaps"] == [], "holes on line A only must be filled from line B"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), messages=st.integers(200, 20_000), instruments=st.integers(8, 60),
       ab=st.booleans(), gaps=st.integers(0, 8), gaps_on=st.sampled_from(["A", "both"]),
       gaps_both=st.integers(0, 3), malformed=st.integers(0, 30), vlan=st.sampled_from([None, 0, 42]),
       qinq=st.booleans(), ip_options=st.booleans(), fmt=st.sampled_from(["pcap", "pcapng", "dayfile"]),
       compressed=st.booleans(), window=st.sampled_from([(1000, 100), (500, 250), (300, 100)]))
def test_generated_feeds_of_many_shapes(seed, messages, instruments, ab, gaps, gaps_on, gaps_both, malformed, vlan,
                                        qinq, ip_options, fmt, compressed, window):
    if fmt == "dayfile":                      # no session layer: nothing to copy, drop or corrupt
        ab, gaps, gaps_both, malformed = False, 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feed"
        manifest = generate(path, fmt, compressed, seed=seed, messages=messages, instruments=instruments, ab=ab,
                            gaps=gaps, gaps_on=gaps_on, gaps_both=gaps_both, malformed=malformed, vlan=vlan,
                            qinq=qinq and vlan is not None, ip_options=ip_options)
        engine, reference = both([path], Path(tmp) / "out", window_ms=window[0], step_ms=window[1])
        assert_equivalent(engine, reference)
        assert_manifest_agrees(reference, manifest)


def test_same_feed_as_pcap_pcapng_and_day_file_gives_the_same_books_and_trades(tmp_path):
    spec = dict(seed=11, messages=15_000, instruments=16)
    results = {}
    for fmt in ("pcap", "pcapng", "dayfile"):
        path = tmp_path / f"feed.{fmt}"
        generate(path, fmt, False, **spec, ab=fmt != "dayfile", vlan=None if fmt == "dayfile" else 5)
        engine, reference = both([path], tmp_path / f"out-{fmt}")
        assert_equivalent(engine, reference)
        results[fmt] = engine
    for fmt in ("pcapng", "dayfile"):
        for key in ("bbo", "trades", "vwap"):
            assert results[fmt][key] == results["pcap"][key], f"{key} from {fmt} differs from pcap"
        for key in ("messages", "messages_by_type", "open_orders", "unknown_order_refs", "rejected_adds",
                    "broken_match_numbers", "symbols"):
            assert summary_value(results[fmt]["summary"], key) == summary_value(results["pcap"]["summary"], key), key


def test_several_generated_inputs_are_one_stream(tmp_path):
    """Two captures of one feed, split mid-stream: state (books, sequencing) carries across the files."""
    whole = tmp_path / "whole.pcap"
    generate(whole, "pcap", False, seed=21, messages=8_000, instruments=4, ab=True, gaps=3, gaps_on="both")
    records = _pcap_split(whole.read_bytes())
    first = b.write(tmp_path / "first.pcap", records[0])
    second = b.write(tmp_path / "second.pcap", records[1], gzip=True)
    engine, reference = both([first, second], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert reference == reference_replay(whole)


def _pcap_split(raw: bytes) -> tuple[bytes, bytes]:
    """Cut a little-endian or big-endian classic pcap in two at the middle record boundary."""
    import struct

    order = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    header, pos, starts = raw[:24], 24, []
    while pos + 16 <= len(raw):
        starts.append(pos)
        pos += 16 + struct.unpack_from(order + "I", raw, pos + 8)[0]
    middle = starts[len(starts) // 2]
    return raw[:middle], header + raw[middle:]


# -- hand-built hostile capture -----------------------------------------------------------------------
HOSTILE_SESSION = b"HOSTILE001"


def hostile_capture(seed: int = 7):
    """Frames of an A/B feed wrapped in hostility, and the (sequence, message) pairs that must come out.

    Packets of 1-6 messages; line A loses some, line B others, both lose a few (true gaps); between and
    around the good packets: truncated copies, lengths past the end, unknown types, zero-length and
    wrong-length messages, wrong counts, trailing bytes, garbage datagrams, garbage frames, fragments,
    non-UDP, VLAN and QinQ tags, IP options, heartbeats, a second session, traffic on other groups.
    """
    rng = random.Random(seed)
    messages = b.book_activity(rng, 1_500)
    packets, seq = [], 1
    while seq <= len(messages):
        n = min(rng.randrange(1, 7), len(messages) - seq + 1)
        packets.append((seq, messages[seq - 1:seq - 1 + n]))
        seq += n
    lost_both = set(rng.sample(range(1, len(packets)), 6))
    lost_a = set(rng.sample(range(len(packets)), 25)) | lost_both
    lost_b = set(rng.sample(range(len(packets)), 25)) | lost_both
    delivered = [(s + i, m) for k, (s, group) in enumerate(packets) if not (k in lost_a and k in lost_b)
                 for i, m in enumerate(group)]

    def sends(group, line_lost, k, s, msgs):
        if k in line_lost:
            return []
        options = rng.choice([{}, {"vlans": (0x8100,)}, {"vlans": (0x88A8, 0x8100)}, {"ip_options": b"\x01" * 8}])
        return [b.udp_frame(b.mold(s, msgs, session=HOSTILE_SESSION), group=group, **options)]

    frames = []
    for k, (s, msgs) in enumerate(packets):
        frames += sends(GROUP_A, lost_a, k, s, msgs)
        frames += hostility(rng, s, msgs)
        frames += sends(GROUP_B, lost_b, k, s, msgs)
        if k % 40 == 0:
            frames.append(b.udp_frame(b.heartbeat(s + len(msgs), session=HOSTILE_SESSION), group=GROUP_B))
    frames.append(b.udp_frame(b.end_of_session(len(messages) + 1, session=HOSTILE_SESSION), group=GROUP_A))
    return frames, delivered


def hostility(rng: random.Random, seq: int, msgs: list[bytes]) -> list:
    """A few bad frames and bad packets that look like the good packet at ``seq``."""
    good = b.mold(seq, msgs, session=HOSTILE_SESSION)
    group = rng.choice([GROUP_A, GROUP_B])
    bad_payloads = [
        good[:rng.randrange(1, 20)],                                              # shorter than the header
        good[:-rng.randrange(1, 10)],                                             # last block past the end
        b.mold(seq, msgs[:-1] + [b"\xff" + msgs[-1][1:]], session=HOSTILE_SESSION),   # unknown type
        b.mold(seq, msgs + [b""], session=HOSTILE_SESSION),                      # zero-length message
        b.mold(seq, msgs[:-1] + [msgs[-1] + b"\x00"], session=HOSTILE_SESSION),  # length != type's length
        b.mold(seq, msgs, session=HOSTILE_SESSION, count=len(msgs) + 1),         # count too large
        b.mold(seq, msgs, session=HOSTILE_SESSION, count=len(msgs) - 1) if len(msgs) > 1 else good + b"\x01",
        good + bytes(rng.randrange(1, 4)),                                        # trailing bytes
        b"HOSTILE001" + rng.randbytes(8) + b"\x00\x02" + b"\xff\xff" + rng.randbytes(30),  # garbage
    ]
    out = [b.udp_frame(rng.choice(bad_payloads), group=group)]
    roll = rng.random()
    if roll < 0.25:
        frame = b.udp_frame(good, group=group)
        out.append((frame[:rng.randrange(1, len(frame))], len(frame)))           # cut by the capture
    elif roll < 0.35:
        out.append(rng.randbytes(rng.randrange(0, 120)))                          # not even Ethernet
    elif roll < 0.45:
        out.append(b.udp_frame(good, group=group, flags_fragment=rng.choice([0x2000, 0x0100])))
    elif roll < 0.50:
        out.append(b.udp_frame(good, group=group, protocol=6))
    elif roll < 0.55:
        out.append(b.udp_frame(b.mold(1, [b.add(1, "B", 1, 1)], session=b"ELSEWHERE "), group="10.0.0.9"))
    elif roll < 0.60:
        out.append(b.udp_frame(good, group="224.0.0.1"))                           # control block: never a feed
    elif roll < 0.70:
        out.append(b.udp_frame(good, group=group, **rng.choice([                   # headers that lie, unambiguously
            {"version": 6}, {"ihl": rng.randrange(0, 5)}, {"total_length": rng.randrange(0, 20)},
            {"udp_length": rng.randrange(0, 8)}, {"udp_length": len(good) + 9 + rng.randrange(0, 50)},
            {"ethertype": 0x86DD}, {"vlans": (0x8100,) * 5}])))
    return out


def expected_rows(delivered):
    return [(HOSTILE_SESSION.decode(), seq, decode(m)) for seq, m in delivered]


def read_engine_messages(path: Path) -> list[tuple]:
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            spec = MESSAGES[row["Message Type"]]
            fields = {fld.name: row[fld.name] if fld.kind == "alpha" else int(row[fld.name]) for fld in spec.fields}
            out.append((row["session"], int(row["sequence"]) if row["sequence"] else None, fields))
    return out


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_hostile_capture(tmp_path, fmt):
    frames, delivered = hostile_capture()
    raw = b.pcap_bytes(frames) if fmt == "pcap" else b.pcapng_bytes(frames, big_endian=True)
    path = b.write(tmp_path / f"hostile.{fmt}", raw)
    reference = reference_replay(path)
    assert reference["messages"] == expected_rows(delivered), "reference did not deliver exactly the good packets"
    out = tmp_path / "out"
    engine = engine_replay([path], out, messages=True)
    assert_equivalent(engine, reference)
    engine_messages = read_engine_messages(out / "messages.csv")
    for index, (got, want) in enumerate(zip(engine_messages, expected_rows(delivered))):
        assert got == want, f"messages.csv row {index + 1}: engine {got} != sent {want}"
    assert len(engine_messages) == len(delivered)


def test_hostile_capture_with_explicit_feeds(tmp_path):
    frames, delivered = hostile_capture(seed=8)
    path = b.write(tmp_path / "hostile.pcap", b.pcap_bytes(frames), gzip=True)
    feeds = [f"{GROUP_B}:{PORT}", f"{GROUP_A}:{PORT}"]
    engine, reference = both([path], tmp_path / "out", feeds=feeds)
    assert_equivalent(engine, reference)
    assert reference["summary"]["not_feed"] > 0


def hostile_day_file(seed: int = 9) -> tuple[bytes, list[bytes]]:
    """Good records with bad ones between them (zero length, unknown type, a length one off the type's) and a
    record that runs past the end; returns the bytes and the messages that must be applied."""
    rng = random.Random(seed)
    good = b.book_activity(rng, 2_000)
    raw, kept = bytearray(b.dayfile_bytes(good[:20])), list(good[:20])
    for message in good[20:]:
        raw += b.dayfile_bytes([message])
        kept.append(message)
        roll = rng.random()
        if roll < 0.03:
            raw += b"\x00\x00"
        elif roll < 0.06:
            raw += b.dayfile_bytes([bytes([rng.choice(b"abcGMTZ\x00\xff")]) + rng.randbytes(rng.randrange(0, 60))])
        elif roll < 0.09:
            other = rng.choice(good)
            raw += b.dayfile_bytes([other + b"\x00" if rng.random() < 0.5 else other[:-1]])
    raw += b.dayfile_bytes([good[0]])[:-3]
    return bytes(raw), kept


@pytest.mark.parametrize("compressed", [False, True])
def test_hostile_day_file(tmp_path, compressed):
    raw, kept = hostile_day_file()
    path = b.write(tmp_path / "day", raw, gzip=compressed)
    reference = reference_replay(path)
    assert [m for _s, _q, m in reference["messages"]] == [decode(m) for m in kept]
    assert reference["summary"]["bad_messages"] > 50 and reference["summary"]["truncated_records"] == 1
    out = tmp_path / "out"
    engine = engine_replay([path], out, messages=True)
    assert_equivalent(engine, reference)
    got = [fields for _session, _seq, fields in read_engine_messages(out / "messages.csv")]
    assert got == [decode(m) for m in kept]


def test_ritch_day_file(shared_fixtures, tmp_path):
    engine, reference = both([shared_fixtures / "ex20101224.TEST_ITCH_50"], tmp_path / "out")
    assert_equivalent(engine, reference)


def test_summary_json_carries_the_contract_fields_at_its_top_level(tmp_path):
    path = b.write(tmp_path / "day.bin", b.dayfile_bytes([b.directory(1, "A"), b.add(1, "B", 1, 1)]))
    engine = engine_replay([path], tmp_path / "out")
    missing = [key for key in SUMMARY_KEYS + ("symbols",) if key not in engine["summary"]]
    assert not missing, f"summary.json lacks top-level {missing} (found under 'counters': " \
                        f"{[k for k in missing if k in engine['summary'].get('counters', {})]})"


# -- readings of the contract where its words leave room ---------------------------------------------
def _good(seq, ref, ts=1):
    return b.udp_frame(b.mold(seq, [b.add(ref, "B", 100, 1000 + ref, ts=ts)]))


def _edge_frames(kind: str):
    """Frames (or a day file's bytes) for one reading, between good packets so sequencing is observable."""
    whole = b.udp_frame(b.mold(2, [b.add(2, "B", 100, 1002)]))
    if kind == "ip-total-length-past-a-whole-capture-is-bad_ip":
        return [_good(1, 1), b.udp_frame(b.mold(2, [b.add(2, "B", 1, 1)]), total_length=1400), whole]
    if kind == "ip-header-cut-by-the-capture-is-truncated":
        return [_good(1, 1), (whole[:30], len(whole)), whole]
    if kind == "runt-ethernet-frame-is-truncated":
        return [_good(1, 1), whole[:10], whole]
    if kind == "unsupported-linktype-records-count-as-frames":
        return "pcapng-linktype-101"
    if kind == "heartbeat-with-trailing-bytes-is-bad":
        return [_good(1, 1), b.udp_frame(b.heartbeat(3) + b"\x00\x00"), whole]
    if kind == "end-of-session-with-trailing-bytes-is-bad":
        return [_good(1, 1), b.udp_frame(b.end_of_session(3) + b"\x00"), whole]
    if kind == "day-file-whose-first-record-is-bad-is-still-a-day-file":
        return b"\x00\x00" + b.dayfile_bytes(b.book_activity(random.Random(3), 30))
    if kind == "sessions-still-held-at-the-end-resolve-in-order-of-first-appearance":
        # line B carries both sessions, then falls silent; line A's later packets are held to the end
        first, second = b"SECOND    ", b"FIRST     "
        frames = []
        for session, base in ((first, 1), (second, 100)):
            for group in (GROUP_A, GROUP_B):
                frames.append(b.udp_frame(b.mold(1, [b.add(base, "B", 10, base, ts=1)], session=session),
                                          group=group))
        for session, base in ((second, 100), (first, 1)):
            frames.append(b.udp_frame(b.mold(3, [b.add(base + 1, "S", 10, 2000 + base, ts=2)], session=session)))
        return frames
    if kind == "end-of-session-repeated-is-listed-once":
        return [_good(1, 1), b.udp_frame(b.end_of_session(2)), b.udp_frame(b.end_of_session(2)),
                b.udp_frame(b.end_of_session(2), group=GROUP_B)]
    if kind == "symbol-is-the-final-directory-name":
        return [b.udp_frame(b.mold(1, [b.directory(1, "OLD"), b.add(1, "B", 100, 5, ts=1),
                                       b.execute(1, 10, 1, ts=2), b.directory(1, "NEW")]))]
    if kind == "day-file-record-past-the-end-with-unknown-type-is-truncated":
        return b.dayfile_bytes(b.book_activity(random.Random(3), 30)) + b"\x00\x30Z" + bytes(5)
    if kind == "execution-naming-another-locate-moves-the-orders-book":
        return [b.udp_frame(b.mold(1, [b.add(1, "B", 100, 5, locate=3, ts=1), b.execute(1, 10, 1, locate=4, ts=2),
                                       b.replace(1, 2, 70, 6, locate=4, ts=3), b.cancel(2, 10, locate=4, ts=4),
                                       b.execute_at(2, 5, 2, 7, locate=4, ts=5), b.delete(2, locate=4, ts=6)]))]
    raise KeyError(kind)


EDGE_KINDS = ["ip-total-length-past-a-whole-capture-is-bad_ip", "ip-header-cut-by-the-capture-is-truncated",
              "runt-ethernet-frame-is-truncated", "unsupported-linktype-records-count-as-frames",
              "heartbeat-with-trailing-bytes-is-bad", "end-of-session-with-trailing-bytes-is-bad",
              "end-of-session-repeated-is-listed-once", "day-file-whose-first-record-is-bad-is-still-a-day-file",
              "symbol-is-the-final-directory-name", "day-file-record-past-the-end-with-unknown-type-is-truncated",
              "execution-naming-another-locate-moves-the-orders-book",
              "sessions-still-held-at-the-end-resolve-in-order-of-first-appearance"]


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_contract_reading(tmp_path, kind):
    """The reference's reading of a loose phrase (see tests/reference docstrings); the engine must match it or
    the two readings must be reconciled in the contract."""
    content = _edge_frames(kind)
    if content == "pcapng-linktype-101":
        raw = b.pcapng_bytes([_good(1, 1), _good(2, 2)], linktype=101)
    elif isinstance(content, bytes):
        raw = content
    else:
        raw = b.pcap_bytes(content)
    path = b.write(tmp_path / "edge.bin", raw)
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)


def test_pending_cap_forces_the_oldest_hole(tmp_path):
    """Line B falls silent after sequence 1; line A lost 2 and 600 and goes on, so A's packets are held.  When
    1,024 wait, the oldest hole is declared and what was held flows at once: the rows of session 1 then appear
    among those of an unrelated session 2 (locate 2) that is flowing meanwhile, not after all of them."""
    other = b"OTHER     "
    frames = [b.udp_frame(b.mold(1, [b.add(1, "B", 10, 100, ts=1)]), group=group) for group in (GROUP_A, GROUP_B)]
    for seq in range(3, 1_103):
        if seq != 600:
            frames.append(b.udp_frame(b.mold(seq, [b.add(seq, "B" if seq % 2 else "S", 10, 100 + seq % 50,
                                                         ts=seq * 1_000_000)])))
        frames.append(b.udp_frame(b.mold(seq, [b.add(10_000 + seq, "B", 1, seq, locate=2, ts=seq * 1_000_000)],
                                         session=other), group="239.9.9.9"))
    frames.append(b.udp_frame(b.mold(1_900, [b.delete(5, ts=2_000_000_000)])))
    path = b.write(tmp_path / "cap.pcap", b.pcap_bytes(frames))
    engine, reference = both([path], tmp_path / "out")
    assert_equivalent(engine, reference)
    assert reference["summary"]["gaps"] == [["TEST000001", 2, 2], ["TEST000001", 600, 600],
                                            ["TEST000001", 1_103, 1_899]]
    locates = [row[1] for row in reference["bbo"]]
    first_forced = locates.index(1, 1)                  # the first row of session 1 after sequence 1
    assert 0 < locates[first_forced:].count(2) < 1_100 - 1_024, "the hole was not forced at the cap"


def test_vwap_feed_time_steps_back_late_trades_and_new_epochs(tmp_path):
    """Feed time is the largest step seen.  Within a file it steps back by 50 ms and by exactly one window:
    those trades are late (left out of the windows, counted).  The second day file starts again at midnight,
    more than a window back: a new epoch whose windows are all emitted."""
    first = b.dayfile_bytes([b.directory(1, "ONE"), b.directory(2, "TWO")] + [
        b.trade("B", 100 + i, 10 + i, i, locate=1 + i % 2, ts=ts)
        for i, ts in enumerate([5_000_000_000, 4_950_000_000, 4_000_000_000, 5_020_000_000, 5_010_000_000,
                                5_500_000_000, 5_450_000_000, 5_600_000_000])])
    second = b.dayfile_bytes([b.directory(1, "ONE")] + [b.trade("S", 7, 99, 100 + i, ts=1_000_000_000 + i * 10**8)
                                                       for i in range(10)])
    paths = [b.write(tmp_path / "day1.bin", first), b.write(tmp_path / "day2.bin", second)]
    engine, reference = both(paths, tmp_path / "out")
    assert_equivalent(engine, reference)
    assert engine["summary"]["counters"]["vwap_late_trades"] == 3           # at 4.95 s, 4.0 s and 5.45 s
    second_day = [row for row in engine["vwap"] if int(row[0]) <= 2_000_000_000]
    assert len(second_day) == 10 and int(second_day[-1][6]) == 10
