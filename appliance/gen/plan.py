"""Which frames go into the capture, on which line, in what order: A/B copies, drops and hostile frames.

Everything here is decided from the seed (``Stream``) and recorded exactly, so the manifest can say what a
correct decoder must report: the packets dropped (from line A only, which line B fills, or from both lines:
a true gap), and every hostile frame with the layer that must reject it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.errors import UserError
from appliance.gen import hostile
from appliance.gen.day import Day
from appliance.gen.mold import Packets
from appliance.gen.rng import Stream
from appliance.gen.spec import FeedSpec
from appliance.gen.wire import LineHeader

LINE_A, LINE_B = 0, 1
HOSTILE_DELAY_NS = 1            # a hostile frame follows the good packet it was made from by 1 ns


@dataclass
class Impairments:
    dropped: list[tuple[int, int]] = field(default_factory=list)     # (first_seq, last_seq) per dropped packet
    dropped_lines: list[str] = field(default_factory=list)           # "A" or "both", parallel to dropped
    gaps: list[tuple[int, int]] = field(default_factory=list)        # ranges on no line: what an arbiter reports
    malformed: dict[str, int] = field(default_factory=lambda: {k: 0 for k, _ in hostile.KINDS})


@dataclass(frozen=True)
class FramePlan:
    ts: np.ndarray              # int64: ITCH time of each frame (ns since midnight), non-decreasing
    line: np.ndarray            # int64: LINE_A or LINE_B
    packet: np.ndarray          # int64: packet index, -1 for a literal frame
    literal: np.ndarray         # int64: literal index, -1 for a packet
    ident: np.ndarray           # int64: IPv4 identification (per line, counting up)
    caplen: np.ndarray          # int64: bytes captured
    origlen: np.ndarray         # int64: bytes on the wire
    literal_buf: np.ndarray     # uint8: literal frames back to back
    literal_at: np.ndarray      # int64
    literal_len: np.ndarray     # int64: captured bytes of each literal

    def __len__(self) -> int:
        return len(self.ts)


def plan_frames(spec: FeedSpec, day: Day, packets: Packets,
                lines: list[LineHeader]) -> tuple[FramePlan, Impairments]:
    """Line A gets every packet but its drops, plus the hostile frames; line B (with ``ab``) a delayed copy
    of every packet but its drops.  Frames are in time order; IPv4 identification counts up per line."""
    imp = Impairments()
    data = np.flatnonzero(packets.is_data)
    on_a = np.ones(len(packets), bool)
    on_b = np.full(len(packets), spec.ab)
    _drop(spec, packets, data, on_a, on_b, imp)
    delay = np.zeros(len(packets), np.int64)
    if spec.ab:
        lo, hi = spec.b_delay_ns
        delay = lo + Stream(spec.seed, "plan.b_delay").below(len(packets), hi - lo + 1)
    a_idx, b_idx = np.flatnonzero(on_a), np.flatnonzero(on_b)
    sources = _hostile_sources(spec, data, on_a)
    ts = np.concatenate([packets.ts[a_idx], packets.ts[sources] + HOSTILE_DELAY_NS, packets.ts[b_idx] + delay[b_idx]])
    line = np.concatenate([np.full(len(a_idx) + len(sources), LINE_A), np.full(len(b_idx), LINE_B)])
    packet = np.concatenate([a_idx, np.full(len(sources), -1), b_idx])
    literal = np.concatenate([np.full(len(a_idx), -1), np.arange(len(sources)), np.full(len(b_idx), -1)])
    order = np.argsort(ts, kind="stable")          # stable: same-time frames keep A, hostile, B order
    ts, line, packet, literal = ts[order], line[order], packet[order], literal[order]
    ident = np.zeros(len(ts), np.int64)
    for value in (LINE_A, LINE_B):
        mine = line == value
        ident[mine] = np.arange(int(mine.sum())) & 0xFFFF
    in_literal_order = np.argsort(literal[literal >= 0])
    lit = _literals(spec, day, packets, lines[LINE_A], sources, ident[literal >= 0][in_literal_order], imp)
    tlen = np.array([len(h.template) for h in lines], np.int64)
    caplen = np.where(packet >= 0, tlen[line] + packets.payload[np.maximum(packet, 0)], 0)
    origlen = caplen.copy()
    lit_rows = literal >= 0
    caplen[lit_rows] = lit[2][literal[lit_rows]]
    origlen[lit_rows] = lit[3][literal[lit_rows]]
    imp.gaps = _true_gaps(spec, packets, data, on_a | on_b)
    return FramePlan(ts, line, packet, literal, ident, caplen, origlen, lit[0], lit[1], lit[2]), imp


def _drop(spec: FeedSpec, packets: Packets, data: np.ndarray, on_a: np.ndarray, on_b: np.ndarray,
          imp: Impairments) -> None:
    """Drop ``gaps`` packets (line A, or both lines) and ``gaps_both`` more from both lines.

    Never the first or last data packet.  The drops are spread over the day, one per stretch, and never two
    neighbours (adjacent drops from both lines would merge into one gap) unless the feed is too short for
    that; the manifest lists each dropped packet either way.
    """
    k = spec.gaps + spec.gaps_both
    if k == 0:
        return
    candidates = data[1:-1]
    if len(candidates) < k:
        raise UserError(f"cannot drop {k} packets from a feed of {len(data):,} data packets (the first and last "
                        "are never dropped): ask for more messages or fewer gaps")
    draws = Stream(spec.seed, "plan.drops")
    stretch = len(candidates) // k
    if stretch >= 3:
        picks = candidates[np.arange(k) * stretch + draws.below(k, stretch - 1)]   # stretch - 1: no neighbours
    else:
        picks = np.sort(candidates[draws.permutation(len(candidates))[:k]])
    both = np.zeros(k, bool)
    both[draws.permutation(k)[:spec.gaps_both]] = True
    if spec.gaps_on == "both":
        both[:] = True
    for p, on_both in zip(picks.tolist(), both.tolist()):
        on_a[p] = False
        if on_both:
            on_b[p] = False
        first = spec.start_seq + int(packets.first[p])
        imp.dropped.append((first, first + int(packets.count[p]) - 1))
        imp.dropped_lines.append("both" if on_both else "A")


def _hostile_sources(spec: FeedSpec, data: np.ndarray, on_a: np.ndarray) -> np.ndarray:
    """The good packets (sent on line A) the hostile frames are made from, one per stretch of the day; in a
    feed with fewer packets than hostile frames, several follow the same packet."""
    k = spec.malformed
    sent = data[on_a[data]]                # never empty: the first data packet is never dropped
    if k == 0:
        return np.zeros(0, np.int64)
    if len(sent) < k:
        return sent[np.arange(k) * len(sent) // k]
    stretch = len(sent) // k
    return np.sort(sent[np.arange(k) * stretch + Stream(spec.seed, "plan.hostile").below(k, stretch)])


def _literals(spec: FeedSpec, day: Day, packets: Packets, line_a: LineHeader, sources: np.ndarray,
              idents: np.ndarray, imp: Impairments) -> tuple[np.ndarray, ...]:
    """Build the hostile frames; returns (buffer, start, captured length, wire length)."""
    draws = Stream(spec.seed, "plan.garbage")
    session = spec.session.encode("ascii")
    frames, wire = [], []
    for j, (p, ident) in enumerate(zip(sources.tolist(), idents.tolist())):
        kind = hostile.KINDS[j % len(hostile.KINDS)][0]
        first, count = int(packets.first[p]), int(packets.count[p])
        messages = [bytes(day.buf[day.offsets[m]:day.offsets[m + 1]]) for m in range(first, first + count)]
        frame, length = hostile.build(kind, line_a, spec.source, session, spec.start_seq + first, messages, ident,
                                      draws)
        frames.append(frame)
        wire.append(length)
        imp.malformed[kind] += 1
    lengths = np.array([len(f) for f in frames], np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    buf = np.frombuffer(b"".join(frames), np.uint8) if frames else np.zeros(0, np.uint8)
    return buf, starts, lengths, np.array(wire, np.int64)


def _true_gaps(spec: FeedSpec, packets: Packets, data: np.ndarray, delivered: np.ndarray) -> list[tuple[int, int]]:
    """Sequence ranges carried by no line, adjacent ranges merged."""
    gaps: list[tuple[int, int]] = []
    for p in data[~delivered[data]].tolist():
        first = spec.start_seq + int(packets.first[p])
        last = first + int(packets.count[p]) - 1
        if gaps and gaps[-1][1] + 1 == first:
            gaps[-1] = (gaps[-1][0], last)
        else:
            gaps.append((first, last))
    return gaps
