"""The consumer's side of the published records: rebuild top of book, and account for every sequence number.

Typical use with nats-py (any source of decoded records will do: a JetStream consumer, a file, a test)::

    from appliance.publish import client, records
    book, seqs = client.TopOfBook(), client.SequenceTracker()
    async def on_message(msg):
        rec = records.decode(msg.data)             # or records.from_json(msg.data)
        for event in seqs.observe(rec):
            print(event.text)                      # a gap or a new publisher epoch: never silent
        book.apply(rec)
    await js.subscribe("md.itch.>", cb=on_message, deliver_policy=DeliverPolicy.ALL)

``TopOfBook`` keeps, per stock locate, the latest bbo record (bbo records are conflated by the publisher, so
some intermediate tops may never be seen, but the latest one always is). ``SequenceTracker`` checks that each
publisher's sequence numbers come without holes, and reports a new publisher id on a source (a restart) as an
epoch, with what the previous publisher's last record was.
"""
from __future__ import annotations

from dataclasses import dataclass

from appliance.publish import records as R


@dataclass(frozen=True)
class Top:
    """One symbol's top of book as last published."""

    locate: int
    symbol: str
    timestamp: int
    bid_price: int
    bid_size: int
    ask_price: int
    ask_size: int

    def as_row(self) -> tuple[int, int, int, int, int, int]:
        """The row the capture's bbo ring held: timestamp, locate, bid price, bid size, ask price, ask size."""
        return self.timestamp, self.locate, self.bid_price, self.bid_size, self.ask_price, self.ask_size


class TopOfBook:
    """Every symbol's top of book, rebuilt from a stream of decoded records (other kinds are ignored)."""

    def __init__(self):
        self.tops: dict[int, Top] = {}

    def apply(self, record: R.Record) -> bool:
        """Take ``record``; True if it changed a top of book."""
        if record.kind != R.KIND_BBO:
            return False
        top = Top(record.locate, record.symbol, record.timestamp, record.bid_price, record.bid_size,
                  record.ask_price, record.ask_size)
        if self.tops.get(record.locate) == top:
            return False
        self.tops[record.locate] = top
        return True

    def by_symbol(self) -> dict[str, Top]:
        return {top.symbol: top for top in self.tops.values()}

    def __getitem__(self, locate: int) -> Top:
        return self.tops[locate]

    def __len__(self) -> int:
        return len(self.tops)


@dataclass(frozen=True)
class Event:
    """Something the sequence numbers say: ``kind`` is "gap" (records ``first``..``last`` of ``publisher`` never
    arrived), "epoch" (a new publisher on the source; ``first`` is its first sequence seen, ``last`` the previous
    publisher's last), "late_start" (the first record seen of a publisher is not its sequence 1: ``first``..``last``
    were before this consumer started) or "duplicate" (sequence ``first`` again, or older than the last)."""

    kind: str
    source: str
    publisher: int
    first: int
    last: int
    text: str


class SequenceTracker:
    """Per source (e.g. a feed; "" by default), the current publisher and the last sequence seen from it.

    ``observe`` returns the events a record brings (empty when it is the next one expected) and keeps them in
    ``events``; ``missing`` counts the records reported missing in gaps."""

    def __init__(self):
        self.current: dict[str, int] = {}          # source -> publisher id
        self.last: dict[int, int] = {}             # publisher id -> last sequence seen
        self.events: list[Event] = []
        self.missing = 0

    def observe(self, record: R.Record, source: str = "") -> list[Event]:
        return self.observe_sequence(record.publisher, record.sequence, source)

    def observe_sequence(self, publisher: int, sequence: int, source: str = "") -> list[Event]:
        new: list[Event] = []
        who = f"publisher {publisher:016x}"
        previous = self.current.get(source)
        if previous != publisher:
            if publisher in self.last:
                # an old epoch's record arriving after the new one's (e.g. redelivery): not a new epoch
                return self._sequence(new, source, publisher, sequence, who)
            self.current[source] = publisher
            if previous is not None:
                before = self.last[previous]
                new.append(Event("epoch", source, publisher, sequence, before,
                                 f"{who} started{self._on(source)}: a new epoch after publisher {previous:016x} "
                                 f"(its last record seen: {before})"))
            if sequence != 1:
                new.append(Event("late_start", source, publisher, 1, sequence - 1,
                                 f"{who}: records 1-{sequence - 1} were sent before this consumer's first"))
            self.last[publisher] = sequence
            self.events += new
            return new
        return self._sequence(new, source, publisher, sequence, who)

    def _sequence(self, new, source, publisher, sequence, who) -> list[Event]:
        last = self.last[publisher]
        if sequence == last + 1:
            self.last[publisher] = sequence
        elif sequence > last + 1:
            self.missing += sequence - last - 1
            span = f"record {last + 1}" if sequence == last + 2 else f"records {last + 1}-{sequence - 1}"
            new.append(Event("gap", source, publisher, last + 1, sequence - 1, f"{who}: {span} missing"))
            self.last[publisher] = sequence
        else:
            new.append(Event("duplicate", source, publisher, sequence, sequence,
                             f"{who}: record {sequence} again (already past {last})"))
        self.events += new
        return new

    @staticmethod
    def _on(source: str) -> str:
        return f" on {source}" if source else ""
