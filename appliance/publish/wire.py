"""The publisher's hot loop, compiled: ring rows encoded as records, and records framed as NATS HPUB commands.

The publisher used to make a Python object per record, pack it with ``struct`` and hand it to nats-py's
``publish``, which checks the subject and builds the headers byte by byte: about 24 us a record, 41k records/s
-- less than the ~75k records/s a 50k-packet/s feed yields (1.5 trades and VWAP windows a frame). Here the same
bytes are written by kernels straight from the rings' rows into preallocated slabs (one row of ``REC`` bytes per
record), and one call frames a run of records as the protocol commands nats-py would have written, ready to be
sent as one buffer.

Three places hold encoded records (every one a ``uint8[rows, REC]`` slab and an ``int64`` state array):

* ``Tops``: the latest top of book per stock locate (``LOCATES`` rows) and a FIFO of the locates waiting to be
  sent, oldest first; a row for a locate already waiting replaces its record and keeps its place (conflated).
* ``Queue``: trades, broken trades and VWAP windows in arrival order, a ring of ``limit`` rows; a record that
  finds it full is not written (dropped, counted by the caller from the return value).
* the publisher's in-flight window: records sent and not yet acknowledged, record ``s`` at row ``s % W``.

Records are stamped with the publisher id when encoded and with their sequence number when moved into the
in-flight window (``take_*``). The layout is ``records``' (its module docstring is the one description; the
tests check these kernels byte for byte against ``records.encode``). The symbol bytes are the region's
``sym`` table as of encoding, copied verbatim (space padded, as ``records.encode`` pads).  A value wider than
its field is cut to the field's low bytes, where ``records.encode`` refuses it; the capture's rows never hold
one (ITCH prices are u32, sizes and volumes are sums of u32 shares), so for every row the decoder writes the
bytes are ``records.encode``'s.

Frames (``frames``): for sequence ``s``::

    HPUB <subject> [<inbox>.<s>] <header bytes> <total bytes>\\r\\n
    NATS/1.0\\r\\nNats-Msg-Id: <publisher hex>-<s>\\r\\n[Nats-Expected-Last-Msg-Id: <publisher hex>-<s-1>\\r\\n]\\r\\n
    <record>\\r\\n

with the reply inbox when ``s`` is a multiple of ``ack_every`` or the last of the run, and the expectation when
``s - 1`` is not yet acknowledged (the publisher's docstring says why each).  The subject is
``records.subject``'s, its symbol token escaped by the same rule (``_token``).
"""
from __future__ import annotations

import numpy as np

from appliance._jit import kernel
from appliance.decode.state import BBO_ASK_PRICE, BBO_ASK_SIZE, BBO_BID_PRICE, BBO_BID_SIZE, BBO_LOCATE, BBO_TS, \
    KIND_BROKEN, KIND_CLOCK, LOCATES, TAPE_KIND, TAPE_LOCATE, TAPE_MATCH, TAPE_PRICE, TAPE_SHARES, TAPE_SIDE, \
    TAPE_TS
from appliance.decode.vwap import VW_END, VW_LOCATE, VW_NOTIONAL, VW_TRADES, VW_VOLUME
from appliance.publish import records as R

VERSION = R.VERSION
REC = 72                               # slab row: the longest record (vwap, 68 bytes), rounded up
KIND_BBO, KIND_TRADE, KIND_BROKEN_REC, KIND_VWAP, KIND_STATUS = (R.KIND_BBO, R.KIND_TRADE, R.KIND_BROKEN,
                                                                 R.KIND_VWAP, R.KIND_STATUS)
LEN_BBO, LEN_TRADE, LEN_BROKEN, LEN_VWAP = (R.LENGTHS[k] for k in (KIND_BBO, KIND_TRADE, KIND_BROKEN_REC, KIND_VWAP))
Q_HEAD, Q_COUNT = range(2)             # state words of a Queue and of Tops' FIFO
# Fixed text of a frame, and the most bytes one frame can take besides its feed token, inbox and payload: the
# words, four spaces, three decimal numbers of at most 20 digits, the symbol token (8 bytes, 3 each escaped),
# the kind word and two publisher ids.
_HPUB, _HDR, _MSG_ID, _EXPECT = b"HPUB ", b"NATS/1.0\r\n", b"Nats-Msg-Id: ", b"Nats-Expected-Last-Msg-Id: "
FRAME_FIXED = len(_HPUB) + 4 + 3 * 20 + 2 + len(_HDR) + len(_MSG_ID) + len(_EXPECT) + 2 * (16 + 1 + 20 + 2) + 2 \
    + len("md..") + 24 + len(".broken") + 2 + 20
_KIND_WORDS = np.zeros((8, 8), np.uint8)
_KIND_LENS = np.zeros(8, np.int64)
for _k, _name in R.KIND_NAMES.items():
    _word = ("." + (R.STATUS_TOKEN if _k == R.KIND_STATUS else _name)).encode()
    _KIND_WORDS[_k, :len(_word)] = np.frombuffer(_word, np.uint8)
    _KIND_LENS[_k] = len(_word)
_HEXDIGITS = np.frombuffer(b"0123456789ABCDEF", np.uint8)
_TEXT = {name: np.frombuffer(text, np.uint8) for name, text in
         (("hpub", _HPUB), ("hdr", _HDR), ("msg_id", _MSG_ID), ("expect", _EXPECT), ("md", b"md."))}


# -- records ----------------------------------------------------------------------------------------------------
@kernel
def _le(out, r, off, value, nbytes):
    """``nbytes`` low bytes of ``value`` (int64, two's complement) at ``out[r, off:]``, little-endian."""
    for k in range(nbytes):
        out[r, off + k] = (value >> (8 * k)) & 0xFF


@kernel
def _header(out, r, kind, locate, sym, publisher, timestamp):
    out[r, 0] = VERSION
    out[r, 1] = kind
    _le(out, r, 2, locate, 2)
    for k in range(8):
        out[r, 4 + k] = sym[locate, k]
    _le(out, r, 12, publisher, 8)
    _le(out, r, 20, 0, 8)
    _le(out, r, 28, timestamp, 8)


@kernel
def _bbo(out, r, row, sym, publisher):
    _header(out, r, KIND_BBO, row[BBO_LOCATE] & 0xFFFF, sym, publisher, row[BBO_TS])
    _le(out, r, 36, row[BBO_BID_PRICE], 4)
    _le(out, r, 40, row[BBO_BID_SIZE], 8)
    _le(out, r, 48, row[BBO_ASK_PRICE], 4)
    _le(out, r, 52, row[BBO_ASK_SIZE], 8)


@kernel
def add_tops(rows, n, sym, publisher, latest, waiting, fifo, state):
    """Bbo rows ``rows[:n]`` into ``Tops``; returns how many replaced a record still waiting (conflated)."""
    conflated = 0
    for i in range(n):
        loc = rows[i, BBO_LOCATE] & 0xFFFF
        _bbo(latest, loc, rows[i], sym, publisher)
        if waiting[loc]:
            conflated += 1
        else:
            waiting[loc] = 1
            fifo[(state[Q_HEAD] + state[Q_COUNT]) % LOCATES] = loc
            state[Q_COUNT] += 1
    return conflated


@kernel
def _push(state, limit):
    """The row for a ``Queue``'s next record (counted in), or -1 when it is full."""
    if state[Q_COUNT] >= limit:
        return -1
    state[Q_COUNT] += 1
    return (state[Q_HEAD] + state[Q_COUNT] - 1) % limit


@kernel
def add_tape(rows, n, sym, publisher, slab, lens, state):
    """Trades and broken trades of tape rows ``rows[:n]`` (feed-clock marks skipped) onto a ``Queue``; returns
    how many found it full (not written)."""
    limit, dropped = len(lens), 0
    for i in range(n):
        kind = rows[i, TAPE_KIND]
        if kind == KIND_CLOCK:
            continue
        r = _push(state, limit)
        if r < 0:
            dropped += 1
            continue
        loc = rows[i, TAPE_LOCATE] & 0xFFFF
        if kind == KIND_BROKEN:
            _header(slab, r, KIND_BROKEN_REC, loc, sym, publisher, rows[i, TAPE_TS])
            _le(slab, r, 36, rows[i, TAPE_MATCH], 8)
            lens[r] = LEN_BROKEN
        else:
            _header(slab, r, KIND_TRADE, loc, sym, publisher, rows[i, TAPE_TS])
            slab[r, 36] = kind & 0xFF
            slab[r, 37] = rows[i, TAPE_SIDE] & 0xFF
            _le(slab, r, 38, rows[i, TAPE_PRICE], 4)
            _le(slab, r, 42, rows[i, TAPE_SHARES], 8)
            _le(slab, r, 50, rows[i, TAPE_MATCH], 8)
            lens[r] = LEN_TRADE
    return dropped


@kernel
def add_vwap(rows, n, sym, publisher, window_ns, slab, lens, state):
    """VWAP window rows ``rows[:n]`` (``decode.vwap``'s columns) onto a ``Queue``; returns how many found it full."""
    limit, dropped = len(lens), 0
    for i in range(n):
        r = _push(state, limit)
        if r < 0:
            dropped += 1
            continue
        _header(slab, r, KIND_VWAP, rows[i, VW_LOCATE] & 0xFFFF, sym, publisher, rows[i, VW_END])
        _le(slab, r, 36, window_ns, 8)
        _le(slab, r, 44, rows[i, VW_VOLUME], 8)
        _le(slab, r, 52, rows[i, VW_NOTIONAL], 8)
        _le(slab, r, 60, rows[i, VW_TRADES], 8)
        lens[r] = LEN_VWAP
    return dropped


@kernel
def take_queue(slab, lens, state, window, wlens, seq, most):
    """Up to ``most`` records off the front of a ``Queue`` into the in-flight ``window`` as sequences ``seq``,
    ``seq + 1`` ...; returns how many."""
    limit, w = len(lens), len(wlens)
    k = min(most, state[Q_COUNT])
    for j in range(k):
        src, dst = (state[Q_HEAD] + j) % limit, (seq + j) % w
        for b in range(lens[src]):
            window[dst, b] = slab[src, b]
        wlens[dst] = lens[src]
        _le(window, dst, 20, seq + j, 8)
    state[Q_HEAD] = (state[Q_HEAD] + k) % limit
    state[Q_COUNT] -= k
    return k


@kernel
def take_tops(latest, waiting, fifo, state, window, wlens, seq, most):
    """Up to ``most`` waiting tops of book, oldest first, into the in-flight ``window``; returns how many."""
    w = len(wlens)
    k = min(most, state[Q_COUNT])
    for j in range(k):
        loc = fifo[(state[Q_HEAD] + j) % LOCATES]
        waiting[loc] = 0
        dst = (seq + j) % w
        for b in range(LEN_BBO):
            window[dst, b] = latest[loc, b]
        wlens[dst] = LEN_BBO
        _le(window, dst, 20, seq + j, 8)
    state[Q_HEAD] = (state[Q_HEAD] + k) % LOCATES
    state[Q_COUNT] -= k
    return k


class Queue:
    """Trades, broken trades and VWAP windows waiting to be sent, in order, at most ``limit``."""

    def __init__(self, limit: int):
        self.slab = np.zeros((max(1, limit), REC), np.uint8)
        self.lens = np.zeros(max(1, limit), np.int64)
        self.state = np.zeros(2, np.int64)

    def __len__(self) -> int:
        return int(self.state[Q_COUNT])


class Tops:
    """The latest unsent top of book of every locate, and the order they are waiting in."""

    def __init__(self):
        self.latest = np.zeros((LOCATES, REC), np.uint8)
        self.waiting = np.zeros(LOCATES, np.uint8)
        self.fifo = np.zeros(LOCATES, np.int64)
        self.state = np.zeros(2, np.int64)

    def __len__(self) -> int:
        return int(self.state[Q_COUNT])


# -- frames -----------------------------------------------------------------------------------------------------
@kernel
def _put(out, at, text, n):
    for k in range(n):
        out[at + k] = text[k]
    return at + n


@kernel
def _digits(v):
    n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


@kernel
def _decimal(out, at, v):
    n = _digits(v)
    for k in range(n - 1, -1, -1):
        out[at + k] = 48 + v % 10
        v //= 10
    return at + n


@kernel
def _token(out, at, rec, hexdigits):
    """The record's symbol (bytes 4-11, trailing spaces dropped) as a subject token (``records.token``)."""
    end = 12
    while end > 4 and rec[end - 1] == 32:
        end -= 1
    if end == 4:
        out[at] = 126                                       # '~': the empty name
        return at + 1
    for k in range(4, end):
        b = rec[k]
        if 0x21 <= b <= 0x7E and b != 46 and b != 42 and b != 62 and b != 126:     # not . * > ~
            out[at] = b
            at += 1
        else:
            out[at] = 126
            out[at + 1] = hexdigits[b >> 4]
            out[at + 2] = hexdigits[b & 15]
            at += 3
    return at


@kernel
def frames(window, wlens, first, last, acked, ack_every, feed, inbox, idhex, blob, offsets, words, word_lens,
           hexdigits, text_hpub, text_hdr, text_msg_id, text_expect, text_md, out):
    """HPUB commands for sequences ``first``..``last`` of the in-flight ``window`` into ``out`` (sized by the
    caller: ``frame_bound``); returns the bytes written.  ``offsets`` empty: each record's payload is its
    binary record; else record ``first + j``'s payload is ``blob[offsets[j]:offsets[j + 1]]`` (JSON)."""
    w, at = len(wlens), 0
    for s in range(first, last + 1):
        r = s % w
        rec = window[r]
        kind = rec[1]
        if len(offsets):
            p0, p1 = offsets[s - first], offsets[s - first + 1]
        else:
            p0, p1 = 0, wlens[r]
        hdr_len = len(text_hdr) + len(text_msg_id) + len(idhex) + 1 + _digits(s) + 2 + 2
        expect = s - 1 > acked
        if expect:
            hdr_len += len(text_expect) + len(idhex) + 1 + _digits(s - 1) + 2
        at = _put(out, at, text_hpub, len(text_hpub))
        at = _put(out, at, text_md, len(text_md))
        at = _put(out, at, feed, len(feed))
        if kind != KIND_STATUS:
            out[at] = 46
            at = _token(out, at + 1, rec, hexdigits)
        at = _put(out, at, words[kind], word_lens[kind])
        out[at] = 32
        at += 1
        if s % ack_every == 0 or s == last:
            at = _put(out, at, inbox, len(inbox))
            out[at] = 46
            at = _decimal(out, at + 1, s)
            out[at] = 32
            at += 1
        at = _decimal(out, at, hdr_len)
        out[at] = 32
        at = _decimal(out, at + 1, hdr_len + p1 - p0)
        out[at], out[at + 1] = 13, 10
        at = _put(out, at + 2, text_hdr, len(text_hdr))
        at = _put(out, at, text_msg_id, len(text_msg_id))
        at = _put(out, at, idhex, len(idhex))
        out[at] = 45
        at = _decimal(out, at + 1, s)
        out[at], out[at + 1] = 13, 10
        at += 2
        if expect:
            at = _put(out, at, text_expect, len(text_expect))
            at = _put(out, at, idhex, len(idhex))
            out[at] = 45
            at = _decimal(out, at + 1, s - 1)
            out[at], out[at + 1] = 13, 10
            at += 2
        out[at], out[at + 1] = 13, 10
        at += 2
        if len(offsets):
            for k in range(p0, p1):
                out[at] = blob[k]
                at += 1
        else:
            for k in range(p0, p1):
                out[at] = rec[k]
                at += 1
        out[at], out[at + 1] = 13, 10
        at += 2
    return at


class Framer:
    """``frames`` with the publisher's fixed arguments, and the output buffer sized for ``most`` records."""

    NO_OFFSETS = np.zeros(0, np.int64)
    NO_BLOB = np.zeros(0, np.uint8)

    def __init__(self, feed: str, inbox: str, publisher: int, ack_every: int, most: int):
        self.feed = np.frombuffer(R.token(feed).encode(), np.uint8)
        self.inbox = np.frombuffer(inbox.encode(), np.uint8)
        self.idhex = np.frombuffer(f"{publisher:016x}".encode(), np.uint8)
        self.ack_every = ack_every
        self.per_frame = FRAME_FIXED + len(self.feed) + len(self.inbox) + REC
        self.out = np.zeros(self.per_frame * max(1, most), np.uint8)

    def frame(self, window, wlens, first: int, last: int, acked: int, blob=None, offsets=None) -> bytes:
        n = last - first + 1
        need = n * self.per_frame + (len(blob) if blob is not None else 0)
        out = self.out if need <= len(self.out) else np.zeros(need, np.uint8)      # JSON: payloads are longer
        used = frames(window, wlens, first, last, acked, self.ack_every, self.feed, self.inbox, self.idhex,
                      self.NO_BLOB if blob is None else blob, self.NO_OFFSETS if offsets is None else offsets,
                      _KIND_WORDS, _KIND_LENS, _HEXDIGITS, _TEXT["hpub"], _TEXT["hdr"], _TEXT["msg_id"],
                      _TEXT["expect"], _TEXT["md"], out)
        return out[:used].tobytes()


def as_i64(value: int) -> int:
    """A u64 (the publisher id) as the int64 with the same bits, for the kernels."""
    return value - (1 << 64) if value >= 1 << 63 else value


def warm() -> None:
    """Compile (or load) every kernel here on tiny inputs: the publisher calls it before it says ready."""
    sym = np.full((LOCATES, 8), 32, np.uint8)
    tops, queue = Tops(), Queue(4)
    window, wlens = np.zeros((4, REC), np.uint8), np.zeros(4, np.int64)
    add_tops(np.zeros((1, 6), np.int64), 1, sym, 1, tops.latest, tops.waiting, tops.fifo, tops.state)
    add_tape(np.zeros((1, 7), np.int64), 1, sym, 1, queue.slab, queue.lens, queue.state)
    add_vwap(np.zeros((1, VW_TRADES + 1), np.int64), 1, sym, 1, 1, queue.slab, queue.lens, queue.state)
    take_queue(queue.slab, queue.lens, queue.state, window, wlens, 1, 2)
    take_tops(tops.latest, tops.waiting, tops.fifo, tops.state, window, wlens, 3, 1)
    framer = Framer("warm", "_INBOX.x", 1, 256, 4)
    framer.frame(window, wlens, 1, 3, 0)
    framer.frame(window, wlens, 1, 1, 0, np.zeros(4, np.uint8), np.array([0, 4], np.int64))
