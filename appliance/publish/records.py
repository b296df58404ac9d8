"""The published record: one fixed-layout little-endian struct per update, version 1, and its JSON twin.

Every record is a 36-byte header followed by its kind's body (no padding, no length prefix: the kind fixes
the length, and a NATS message carries exactly one record).  The layouts are the tables below (``HEADER``,
``BODIES``); ``struct`` formats, lengths and field names are all derived from them.

Header (every kind)::

    off  size  field       type  meaning
      0     1  version     u8    1 (``VERSION``); a reader refuses any other
      1     1  kind        u8    1 bbo, 2 trade, 3 broken trade, 4 vwap window, 5 status
      2     2  locate      u16   ITCH stock locate (0 for status)
      4     8  symbol      8s    ITCH stock, space padded (all spaces for status)
     12     8  publisher   u64   publisher id: random at each publisher start (the epoch)
     20     8  sequence    u64   per publisher, 1, 2, 3 ... over everything it sends, no holes
     28     8  timestamp   i64   feed time, ns since midnight (vwap: the window's end; status: the latest
                                 feed time the publisher had seen, 0 before any)

Bodies::

    bbo     (60 bytes)  bid_price u32, bid_size u64, ask_price u32, ask_size u64     (price 0: side empty)
    trade   (58 bytes)  trade_kind u8 ('E','C','P','Q'), side u8 ('B','S', 0 for a cross), price u32,
                        shares u64, match u64
    broken  (44 bytes)  match u64 (the match number of the broken trade)
    vwap    (68 bytes)  window_ns u64 (the window is (timestamp - window_ns, timestamp]), volume u64,
                        notional u64 (sum of price * shares, price in 1/10,000 $), trades u64
    status  (63 bytes)  code u8, session 10s (MoldUDP64 session, space padded), first u64, last u64

Status codes: 1 gap (first..last sequence numbers of ``session`` missing), 2 session start (a new MoldUDP64
session appeared; first = 0, last = 0), 3 session end (the capture finished this session), 4 publisher start
(always a publisher's sequence 1), 5 publisher loss (cumulative since the publisher started: first = records
it dropped because its buffer was full, last = ring rows it lost because it fell a ring behind).

Symbols and sessions are bytes on the wire; in Python and JSON they are ``str`` holding those bytes as
Latin-1 (one character per byte, so any byte value survives), trailing spaces removed (put back on encode).
The JSON form (``to_json``/``from_json``) is an object with exactly the binary fields, ``kind`` by name,
``trade_kind`` and ``side`` as one-character strings ("" for 0).

Subjects (``subject``/``parse_subject``)::

    md.<feed>.<symbol>.<kind>      kind: bbo | trade | broken | vwap
    md.<feed>._status              status records

``<feed>`` and ``<symbol>`` are escaped into valid NATS tokens, reversibly and with one spelling each: every
byte outside printable ASCII (0x21-0x7E), and ``.``, ``*``, ``>`` and ``~`` themselves, becomes ``~`` and two
upper-case hex digits (``BRK A`` -> ``BRK~20A``, ``A.B`` -> ``A~2EB``); an empty name is the token ``~``.  A
token with any other use of ``~`` (lower-case hex, an escape of a byte that needs none) is refused, so a
subject names one symbol and a symbol has one subject.  The JetStream stream of feed F is ``md_<F escaped>``
holding ``md.<F escaped>.>``.
"""
from __future__ import annotations

import dataclasses
import json
import operator
import struct
from dataclasses import dataclass
from typing import ClassVar

VERSION = 1
KIND_BBO, KIND_TRADE, KIND_BROKEN, KIND_VWAP, KIND_STATUS = 1, 2, 3, 4, 5
STATUS_GAP, STATUS_SESSION_START, STATUS_SESSION_END, STATUS_PUBLISHER_START, STATUS_LOSS = 1, 2, 3, 4, 5
STATUS_NAMES = {STATUS_GAP: "gap", STATUS_SESSION_START: "session start", STATUS_SESSION_END: "session end",
                STATUS_PUBLISHER_START: "publisher start", STATUS_LOSS: "publisher loss"}
SYMBOL_BYTES, SESSION_BYTES = 8, 10

# (field, struct code): the one description of the layout
HEADER = (("version", "B"), ("kind", "B"), ("locate", "H"), ("symbol", "8s"), ("publisher", "Q"),
          ("sequence", "Q"), ("timestamp", "q"))
BODIES = {
    KIND_BBO: ("bbo", (("bid_price", "I"), ("bid_size", "Q"), ("ask_price", "I"), ("ask_size", "Q"))),
    KIND_TRADE: ("trade", (("trade_kind", "B"), ("side", "B"), ("price", "I"), ("shares", "Q"), ("match", "Q"))),
    KIND_BROKEN: ("broken", (("match", "Q"),)),
    KIND_VWAP: ("vwap", (("window_ns", "Q"), ("volume", "Q"), ("notional", "Q"), ("trades", "Q"))),
    KIND_STATUS: ("status", (("code", "B"), ("session", "10s"), ("first", "Q"), ("last", "Q"))),
}
KIND_NAMES = {kind: name for kind, (name, _) in BODIES.items()}
KINDS_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}
HEADER_BYTES = struct.calcsize("<" + "".join(code for _, code in HEADER))
_STRUCTS = {kind: struct.Struct("<" + "".join(code for _, code in HEADER + body)) for kind, (_, body) in BODIES.items()}
LENGTHS = {kind: s.size for kind, s in _STRUCTS.items()}
_CHAR_FIELDS = ("trade_kind", "side")            # u8 holding an ASCII letter: a one-character string in JSON


class RecordError(ValueError):
    """Bytes or JSON that are not a record of this version; the message is one sentence saying why."""


# -- the records ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Header:
    publisher: int
    sequence: int
    timestamp: int
    locate: int = 0
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class Bbo(_Header):
    kind: ClassVar[int] = KIND_BBO
    bid_price: int = 0
    bid_size: int = 0
    ask_price: int = 0
    ask_size: int = 0


@dataclass(frozen=True, slots=True)
class Trade(_Header):
    kind: ClassVar[int] = KIND_TRADE
    trade_kind: int = 0
    side: int = 0
    price: int = 0
    shares: int = 0
    match: int = 0


@dataclass(frozen=True, slots=True)
class Broken(_Header):
    kind: ClassVar[int] = KIND_BROKEN
    match: int = 0


@dataclass(frozen=True, slots=True)
class Vwap(_Header):
    kind: ClassVar[int] = KIND_VWAP
    window_ns: int = 0
    volume: int = 0
    notional: int = 0
    trades: int = 0

    @property
    def window_end(self) -> int:
        return self.timestamp


@dataclass(frozen=True, slots=True)
class Status(_Header):
    kind: ClassVar[int] = KIND_STATUS
    code: int = 0
    session: str = ""
    first: int = 0
    last: int = 0


CLASSES = {cls.kind: cls for cls in (Bbo, Trade, Broken, Vwap, Status)}
Record = Bbo | Trade | Broken | Vwap | Status
_FIELDS = {kind: [name for name, _ in HEADER + body] for kind, (_, body) in BODIES.items()}


def _pad(text: str, width: int, what: str) -> bytes:
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise RecordError(f"{what} {text!r} has a character beyond one byte (symbols are bytes, as Latin-1)") from None
    if len(raw) > width:
        raise RecordError(f"{what} {text!r} is longer than {width} bytes")
    return raw.ljust(width, b" ")


def _unpad(raw: bytes) -> str:
    return raw.rstrip(b" ").decode("latin-1")


# -- binary -----------------------------------------------------------------------------------------------------
_GETTERS = {kind: operator.attrgetter(*names[2:]) for kind, names in _FIELDS.items()}   # locate, symbol, ...
_SYMBOL_AT, _PUBLISHER_AT, _SEQUENCE_AT = 1, 2, 3
_SESSION_AT = _FIELDS[KIND_STATUS][2:].index("session")


def encode(record: Record, publisher: int | None = None, sequence: int | None = None) -> bytes:
    """The record's bytes -- stamped with ``publisher`` and ``sequence`` when given (the publisher's send path:
    no new record made) --; RecordError if a field does not fit its type."""
    kind = record.kind
    values = list(_GETTERS[kind](record))
    values[_SYMBOL_AT] = _pad(values[_SYMBOL_AT], SYMBOL_BYTES, "symbol")
    if kind == KIND_STATUS:
        values[_SESSION_AT] = _pad(values[_SESSION_AT], SESSION_BYTES, "session")
    if publisher is not None:
        values[_PUBLISHER_AT] = publisher
    if sequence is not None:
        values[_SEQUENCE_AT] = sequence
    try:
        return _STRUCTS[kind].pack(VERSION, kind, *values)
    except struct.error as err:
        raise RecordError(f"a {KIND_NAMES[kind]} record with a field out of range for its type ({err})") from None


def decode(data: bytes) -> Record:
    """The record in ``data`` (exactly one); RecordError if it is of another version, unknown kind or length."""
    if len(data) < 2:
        raise RecordError(f"{len(data)} bytes is too short to be a record (the header alone is {HEADER_BYTES})")
    if data[0] != VERSION:
        raise RecordError(f"record version {data[0]} is not the version this reader knows ({VERSION})")
    kind = data[1]
    if kind not in LENGTHS:
        raise RecordError(f"record kind {kind} is not a known kind ({', '.join(map(str, sorted(LENGTHS)))})")
    if len(data) != LENGTHS[kind]:
        raise RecordError(f"a {KIND_NAMES[kind]} record is {LENGTHS[kind]} bytes, not {len(data)}")
    values = _STRUCTS[kind].unpack(data)
    fields = dict(zip(_FIELDS[kind][2:], values[2:]))
    fields["symbol"] = _unpad(fields["symbol"])
    if kind == KIND_STATUS:
        fields["session"] = _unpad(fields["session"])
    return CLASSES[kind](**fields)


# -- JSON -------------------------------------------------------------------------------------------------------
def to_dict(record: Record) -> dict:
    out = {"version": VERSION, "kind": KIND_NAMES[record.kind]}
    for name in _FIELDS[record.kind][2:]:
        value = getattr(record, name)
        out[name] = (chr(value) if value else "") if name in _CHAR_FIELDS else value
    return out


def to_json(record: Record) -> str:
    return json.dumps(to_dict(record), separators=(",", ":"))


def from_dict(obj: dict) -> Record:
    if not isinstance(obj, dict):
        raise RecordError("a JSON record must be an object")
    if obj.get("version") != VERSION:
        raise RecordError(f"JSON record version {obj.get('version')!r} is not the version this reader knows ({VERSION})")
    kind = KINDS_BY_NAME.get(obj.get("kind"))
    if kind is None:
        raise RecordError(f"JSON record kind {obj.get('kind')!r} is not one of {', '.join(KINDS_BY_NAME)}")
    want = set(_FIELDS[kind])
    if set(obj) != want:
        extra, missing = sorted(set(obj) - want), sorted(want - set(obj))
        raise RecordError(f"a JSON {KIND_NAMES[kind]} record has fields {sorted(want)}: missing {missing}, "
                          f"extra {extra}")
    fields = {}
    for name in _FIELDS[kind][2:]:
        value = obj[name]
        if name in _CHAR_FIELDS:
            if not isinstance(value, str) or len(value) > 1:
                raise RecordError(f"JSON field {name} must be a one-character string or \"\", not {value!r}")
            value = ord(value) if value else 0
        elif name in ("symbol", "session"):
            if not isinstance(value, str):
                raise RecordError(f"JSON field {name} must be a string, not {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool):
            raise RecordError(f"JSON field {name} must be an integer, not {value!r}")
        fields[name] = value
    record = CLASSES[kind](**fields)
    encode(record)                                  # the same ranges as the binary form, or RecordError
    return record


def from_json(text: str | bytes) -> Record:
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise RecordError(f"not JSON: {err}") from None
    return from_dict(obj)


def replace(record: Record, **changes) -> Record:
    return dataclasses.replace(record, **changes)


# -- subjects ---------------------------------------------------------------------------------------------------
PREFIX = "md"
STATUS_TOKEN = "_status"
_ESCAPE = "~"
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("."), ord("*"), ord(">"), ord(_ESCAPE)}
_HEX = "0123456789ABCDEF"


def token(name: str) -> str:
    """``name`` (a feed or symbol, bytes as Latin-1) as one valid NATS subject token; see the module docstring."""
    try:
        raw = name.encode("latin-1")
    except UnicodeEncodeError:
        raise RecordError(f"{name!r} has a character beyond one byte (names are bytes, as Latin-1)") from None
    if not raw:
        return _ESCAPE
    return "".join(chr(b) if b in _PLAIN else f"{_ESCAPE}{b:02X}" for b in raw)


def untoken(tok: str) -> str:
    """The name ``token`` made ``tok`` from; RecordError for a token no name gives (not canonical)."""
    if tok == _ESCAPE:
        return ""
    out, i = bytearray(), 0
    while i < len(tok):
        c = tok[i]
        if c == _ESCAPE:
            pair = tok[i + 1:i + 3]
            if len(pair) != 2 or any(h not in _HEX for h in pair):
                raise RecordError(f"subject token {tok!r}: '~' must be followed by two upper-case hex digits")
            b = int(pair, 16)
            if b in _PLAIN:
                raise RecordError(f"subject token {tok!r}: {pair} is {chr(b)!r}, which is written plain, not escaped")
            out.append(b)
            i += 3
        elif ord(c) in _PLAIN:
            out.append(ord(c))
            i += 1
        else:
            raise RecordError(f"subject token {tok!r}: {c!r} is not allowed in a token")
    if not out:
        raise RecordError("an empty subject token")
    return out.decode("latin-1")


def subject(feed: str, symbol: str, kind: int | str) -> str:
    """``md.<feed>.<symbol>.<kind>`` (``md.<feed>._status`` for status; ``symbol`` is then ignored)."""
    kind = KINDS_BY_NAME.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in KIND_NAMES:
        raise RecordError(f"{kind!r} is not a record kind")
    if kind == KIND_STATUS:
        return f"{PREFIX}.{token(feed)}.{STATUS_TOKEN}"
    return f"{PREFIX}.{token(feed)}.{token(symbol)}.{KIND_NAMES[kind]}"


def record_subject(feed: str, record: Record) -> str:
    return subject(feed, record.symbol, record.kind)


def parse_subject(subj: str) -> tuple[str, str | None, str]:
    """(feed, symbol, kind name) of a subject ``subject`` made (symbol None for status); RecordError otherwise."""
    parts = subj.split(".")
    if len(parts) == 3 and parts[0] == PREFIX and parts[2] == STATUS_TOKEN:
        return untoken(parts[1]), None, "status"
    if len(parts) != 4 or parts[0] != PREFIX:
        raise RecordError(f"subject {subj!r} is not md.<feed>.<symbol>.<kind> or md.<feed>._status")
    if parts[3] not in KINDS_BY_NAME or parts[3] == "status":
        raise RecordError(f"subject {subj!r}: {parts[3]!r} is not one of bbo, trade, broken, vwap")
    return untoken(parts[1]), untoken(parts[2]), parts[3]


def feed_filter(feed: str) -> str:
    """The subjects of one feed: ``md.<feed>.>``."""
    return f"{PREFIX}.{token(feed)}.>"


def stream_name(feed: str) -> str:
    """The JetStream stream holding one feed (stream names may not hold '.', '*', '>', so ``md_`` + token)."""
    return f"{PREFIX}_{token(feed)}"
