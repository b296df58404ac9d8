"""The publisher's compiled wire (appliance/publish/wire.py) against the Python definitions it replaces.

* every record the kernels encode from ring rows is byte for byte ``records.encode`` of ``convert``'s record of
  the same row, stamped with the same publisher and sequence -- hostile symbols, negative match numbers, broken
  trades, feed-clock marks (skipped) included;
* tops are conflated per locate (latest wins, the first place kept, the count right); the queue drops what finds
  it full and keeps order across wrap-around;
* every HPUB command ``frames`` writes parses as the NATS protocol and carries exactly the subject, reply inbox,
  headers and payload the publisher asks for (nats-py's own header rule), binary and JSON payloads.
"""
from __future__ import annotations

import random

import numpy as np

from appliance.decode import state as S
from appliance.decode.vwap import VW_END, VW_LOCATE, VW_NOTIONAL, VW_TRADES, VW_VOLUME
from appliance.publish import convert, wire
from appliance.publish import records as R

PUB = 0xF123456789ABCDEF              # above 2**63: the kernels see it as a negative int64
SYMBOLS = [b"AAPL    ", b"BRK A   ", b"A.B*>~  ", b"\x00" * 8, b"\xff\xe9\t x   ", b"        ", b"ZZZZZZZZ"]


def _sym():
    sym = np.full((S.LOCATES, 8), 32, np.uint8)
    for loc, name in enumerate(SYMBOLS, start=1):
        sym[loc] = np.frombuffer(name, np.uint8)
    return sym


def _window(n):
    return np.zeros((n, wire.REC), np.uint8), np.zeros(n, np.int64)


def _record(window, wlens, seq):
    r = seq % len(wlens)
    return window[r, :wlens[r]].tobytes()


def test_tape_and_vwap_rows_encode_as_records_encode():
    rng = random.Random(5)
    sym = _sym()
    tape = np.array([[rng.randrange(1 << 40), rng.randrange(1, 9),
                      rng.choice([ord("E"), ord("C"), ord("P"), ord("Q"), S.KIND_BROKEN, S.KIND_CLOCK]),
                      rng.choice([ord("B"), ord("S"), 0]), rng.randrange(1 << 40), rng.randrange(1 << 32),
                      rng.choice([rng.randrange(1 << 62), -rng.randrange(1, 1 << 62), 0])] for _ in range(500)],
                    np.int64)
    vwap = np.zeros((50, VW_TRADES + 1), np.int64)
    for row in vwap:
        row[[VW_END, VW_LOCATE, VW_VOLUME, VW_NOTIONAL, VW_TRADES]] = (rng.randrange(1 << 46), rng.randrange(1, 9),
                                                                       rng.randrange(1 << 40), rng.randrange(1 << 62),
                                                                       rng.randrange(1 << 20))
    q = wire.Queue(1000)
    assert wire.add_tape(tape, len(tape), sym, wire.as_i64(PUB), q.slab, q.lens, q.state) == 0
    assert wire.add_vwap(vwap, len(vwap), sym, wire.as_i64(PUB), 10**9, q.slab, q.lens, q.state) == 0
    expected = [rec for rec in (convert.tape(row, sym) for row in tape) if rec is not None]
    expected += [convert.vwap(row, sym, 10**9) for row in vwap]
    assert len(q) == len(expected)
    window, wlens = _window(1024)
    assert wire.take_queue(q.slab, q.lens, q.state, window, wlens, 7, 10_000) == len(expected)
    for i, rec in enumerate(expected):
        assert _record(window, wlens, 7 + i) == R.encode(rec, PUB, 7 + i)
    assert len(q) == 0


def test_tops_are_conflated_per_locate_in_first_place_order():
    rng = random.Random(9)
    sym = _sym()
    rows = np.array([[rng.randrange(1 << 40), rng.randrange(1, 9), rng.randrange(1 << 32), rng.randrange(1 << 40),
                      rng.randrange(1 << 32), rng.randrange(1 << 40)] for _ in range(300)], np.int64)
    t = wire.Tops()
    conflated = wire.add_tops(rows, len(rows), sym, wire.as_i64(PUB), t.latest, t.waiting, t.fifo, t.state)
    order = list(dict.fromkeys(int(loc) for loc in rows[:, S.BBO_LOCATE]))
    last = {int(row[S.BBO_LOCATE]): row for row in rows}
    assert conflated == len(rows) - len(order) and len(t) == len(order)
    window, wlens = _window(16)
    assert wire.take_tops(t.latest, t.waiting, t.fifo, t.state, window, wlens, 1, 3) == 3
    assert wire.take_tops(t.latest, t.waiting, t.fifo, t.state, window, wlens, 4, 100) == len(order) - 3
    for i, loc in enumerate(order):
        assert _record(window, wlens, 1 + i) == R.encode(convert.bbo(last[loc], sym), PUB, 1 + i)
    # sent, so a new row for a locate waits again (not conflated with what went out)
    assert wire.add_tops(rows[:1], 1, sym, 1, t.latest, t.waiting, t.fifo, t.state) == 0 and len(t) == 1


def test_queue_drops_when_full_and_keeps_order_across_wrap_around():
    sym = _sym()
    q, window, wlens = wire.Queue(5), *_window(64)
    seq, sent = 1, []
    for batch in range(6):
        rows = np.array([[batch * 10 + i, 1, ord("E"), ord("B"), 1, 100, batch * 10 + i] for i in range(4)], np.int64)
        before = len(q)
        dropped = wire.add_tape(rows, len(rows), sym, 1, q.slab, q.lens, q.state)
        assert dropped == max(0, before + 4 - 5)
        took = wire.take_queue(q.slab, q.lens, q.state, window, wlens, seq, 3)
        sent += [R.decode(_record(window, wlens, s)).match for s in range(seq, seq + took)]
        seq += took
    assert sent == sorted(sent) and len(set(sent)) == len(sent)


def _parse(data: bytes):
    """HPUB commands -> [(subject, reply, headers bytes, payload)], checking every length the command states."""
    out, at = [], 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        words = data[at:end].split(b" ")
        assert words[0] == b"HPUB" and len(words) in (4, 5), data[at:end]
        hdr_len, total = int(words[-2]), int(words[-1])
        body = data[end + 2:end + 2 + total]
        assert len(body) == total and data[end + 2 + total:end + 4 + total] == b"\r\n"
        out.append((words[1].decode(), words[2].decode() if len(words) == 5 else "", body[:hdr_len], body[hdr_len:]))
        at = end + 4 + total
    return out


def _headers(msg_id: str, expect: str | None) -> bytes:
    """The header block nats-py's publish writes for these headers."""
    text = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n"
    if expect is not None:
        text += f"Nats-Expected-Last-Msg-Id: {expect}\r\n"
    return (text + "\r\n").encode()


def test_frames_carry_the_subject_reply_headers_and_payload_the_publisher_asks_for():
    from appliance.publish.publisher import Outbox

    sym = _sym()
    feed = "it.ch*"                                       # a feed name that needs escaping too
    w = 512
    window, wlens = _window(w)
    box = Outbox(2000, PUB)                               # status, then trades and broken trades, then tops
    box.add_status(R.Status(0, 0, 5, code=R.STATUS_GAP, session="0000000042", first=3, last=9))
    box.add_tape(np.array([[i, 1 + i % 7, ord("E") if i % 5 else S.KIND_BROKEN, ord("S"), 10, 100, i]
                           for i in range(1400)], np.int64), sym)
    box.add_bbo(np.array([[1, loc, 100, 1, 200, 2] for loc in range(1, 8)], np.int64), sym)
    assert len(box) == 1408
    framer = wire.Framer(feed, "_INBOX.abc", PUB, 256, w)
    seq, kinds = 1, set()                                 # sequences cross 9/10, 99/100, 999/1000 and the window
    for lag, most in ((0, 300), (5, 300), (200, 100), (0, w), (1, w)):   # lag: earlier records not acknowledged
        acked = max(0, seq - 1 - lag)
        k = box.take(window, wlens, seq, most)
        first, last = seq, seq + k - 1
        for as_json in (False, True):
            blob = offsets = None
            if as_json:
                parts = [R.to_json(R.decode(_record(window, wlens, s))).encode() for s in range(first, last + 1)]
                offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
                blob = np.frombuffer(bytearray(b"".join(parts)), np.uint8)
            frames = _parse(framer.frame(window, wlens, first, last, acked, blob, offsets))
            assert len(frames) == k
            for s, (subject, reply, headers, payload) in zip(range(first, last + 1), frames):
                binary = _record(window, wlens, s)
                rec = R.decode(binary)
                kinds.add(rec.kind)
                assert rec.sequence == s and rec.publisher == PUB
                assert payload == (R.to_json(rec).encode() if as_json else binary)
                assert subject == R.record_subject(feed, rec)
                assert reply == (f"_INBOX.abc.{s}" if s % 256 == 0 or s == last else "")
                expect = f"{PUB:016x}-{s - 1}" if s - 1 > acked else None
                assert headers == _headers(f"{PUB:016x}-{s}", expect)
        seq = last + 1
    assert seq == 1409 and len(box) == 0
    assert kinds == {R.KIND_STATUS, R.KIND_TRADE, R.KIND_BROKEN, R.KIND_BBO}
