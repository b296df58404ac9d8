"""``reference_replay``: inputs -> frames -> lines -> MoldUDP64 sequencing -> book, tape, bbo, VWAP.

The structures returned mirror what ``appliance replay --out DIR`` writes: ``summary`` is summary.json,
``bbo``/``trades``/``vwap`` are the CSV rows as tuples in column order (symbol resolved at the end, i.e. the
latest stock-directory name for the locate).
"""
from __future__ import annotations

import struct

from appliance.itch.layout import MESSAGES, TYPES
from .book import Book
from .frames import LINKTYPE_ETHERNET, Datagram, is_auto_feed, parse_feed, parse_frame
from .inputs import load
from .mold import Sequencer, parse_mold

MAX_AUTO_LINES = 16
FRAME_COUNTERS = ("frames", "unsupported_linktype", "non_ipv4", "bad_ip", "truncated_frames", "ip_fragments",
                  "non_udp", "bad_udp", "not_feed")


class Replay:
    def __init__(self, feeds=None):
        self.explicit = [parse_feed(f) if isinstance(f, str) else tuple(f) for f in feeds] if feeds else None
        self.lines: list[tuple[int, int]] = list(self.explicit or [])
        self.counters = dict.fromkeys(FRAME_COUNTERS + ("packets", "bad_packets", "bad_messages",
                                                         "truncated_records"), 0)
        self.by_type = dict.fromkeys(TYPES, 0)
        self.book = Book()
        self.last_timestamp: int | None = None
        self.applied: list[tuple] = []                # (session, sequence, decoded message)
        self.clock: list[tuple] = []                  # (timestamp, first tape row, end tape row) per message
        self.sequencer = Sequencer(self.apply)

    def apply(self, session: str, sequence: int | None, message: bytes) -> None:
        first = len(self.book.tape)
        decoded = self.book.apply(message)
        self.clock.append((decoded["Timestamp"], first, len(self.book.tape)))
        self.by_type[decoded["Message Type"]] += 1
        ts = decoded["Timestamp"]
        self.last_timestamp = ts if self.last_timestamp is None else max(self.last_timestamp, ts)
        self.applied.append((session, sequence, decoded))

    # -- captures -------------------------------------------------------------------------------------
    def capture(self, records) -> None:
        for record in records:
            self.counters["frames"] += 1
            if record.linktype != LINKTYPE_ETHERNET:
                self.counters["unsupported_linktype"] += 1
                continue
            verdict = parse_frame(record.data, record.wire_length)
            if isinstance(verdict, str):
                self.counters[verdict] += 1
                continue
            line = self._line(verdict)
            if line is None:
                self.counters["not_feed"] += 1
                continue
            self.counters["packets"] += 1
            packet = parse_mold(verdict.payload)
            if packet is None:
                self.counters["bad_packets"] += 1
                continue
            self.sequencer.receive(line, packet)

    def _line(self, datagram: Datagram) -> tuple[int, int] | None:
        destination = (datagram.group, datagram.port)
        if destination in self.lines:
            return destination
        if self.explicit is None and is_auto_feed(datagram.group) and len(self.lines) < MAX_AUTO_LINES:
            self.lines.append(destination)
            return destination
        return None

    # -- day files ------------------------------------------------------------------------------------
    def dayfile(self, raw: bytes) -> None:
        pos = 0
        while pos < len(raw):
            if pos + 2 > len(raw):
                self.counters["truncated_records"] += 1
                return
            (length,) = struct.unpack_from(">H", raw, pos)
            if pos + 2 + length > len(raw):
                self.counters["truncated_records"] += 1
                return
            message = raw[pos + 2:pos + 2 + length]
            pos += 2 + length
            spec = MESSAGES.get(chr(message[0])) if length else None
            if spec is None or spec.length != length:
                self.counters["bad_messages"] += 1
                continue
            self.apply("", None, message)

    # -- results --------------------------------------------------------------------------------------
    def result(self, window_ns: int, step_ns: int) -> dict:
        from .vwap import vwap_rows

        book, names = self.book, self.book.names
        symbol = lambda locate: names.get(locate, "")          # noqa: E731
        bbo = [(ts, locate, symbol(locate), *top) for ts, locate, *top in book.bbo]
        trades = [(ts, locate, symbol(locate), kind, side, shares, price, match)
                  for ts, locate, kind, side, shares, price, match in book.tape]
        vwap = [(end, locate, symbol(locate), volume, notional, price, count)
                for end, locate, volume, notional, price, count
                in vwap_rows(self.clock, book.tape, window_ns, step_ns)]
        return {"summary": self.summary(), "bbo": bbo, "trades": trades, "vwap": vwap,
                "messages": self.applied}

    def summary(self) -> dict:
        book, seq = self.book, self.sequencer
        symbols = {}
        for locate, name in sorted(self.book.names.items()):
            inst = book.instrument(locate)
            bid_price, bid_size, ask_price, ask_size = inst.top()
            symbols[name] = {"locate": locate, "bid_price": bid_price, "bid_size": bid_size,
                             "ask_price": ask_price, "ask_size": ask_size, "volume": inst.volume,
                             "notional": inst.notional, "trades": inst.trades,
                             "vwap": inst.notional / inst.volume if inst.volume else None,
                             "cross_volume": inst.cross_volume}
        c = self.counters
        return {
            "packets": c["packets"], "bad_packets": c["bad_packets"], "duplicate_packets": seq.duplicate_packets,
            "heartbeats": seq.heartbeats, "end_of_session": list(seq.end_of_session),
            "messages": sum(self.by_type.values()), "messages_by_type": dict(self.by_type),
            "gaps": [list(g) for g in seq.gaps], "open_orders": len(book.orders),
            "unknown_order_refs": book.unknown_order_refs, "rejected_adds": book.rejected_adds,
            "broken_trades": len(book.broken_match_numbers),
            "broken_match_numbers": list(book.broken_match_numbers),
            "bad_messages": c["bad_messages"], "truncated_records": c["truncated_records"],
            **{name: c[name] for name in FRAME_COUNTERS},
            "symbols": symbols,
        }


def reference_replay(paths, feeds=None, window_ns: int = 1_000_000_000, step_ns: int = 100_000_000) -> dict:
    """Replay ``paths`` in order as one stream; returns summary, bbo, trades, vwap (and the applied messages)."""
    if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__"):
        paths = [paths]
    replay = Replay(feeds)
    for path in paths:
        kind, content = load(path)
        if kind == "capture":
            replay.capture(content)
        else:
            replay.dayfile(content)
    replay.sequencer.finish()
    return replay.result(window_ns, step_ns)
