"""When things happen: the system-event times of a day and the timestamps of the order flow.

Two layouts.  ``full`` is a real NASDAQ day (start of messages 03:30, system hours 04:00-20:00, market hours
09:30-16:00).  ``compact`` keeps the same phases in the same order but squeezes them into half an hour around
the open: a 20,000-message sample laid over sixteen hours would be mostly one-per-second heartbeats.

Flow timestamps are laid out in fixed buckets whose message counts follow the intraday intensity (thin
pre-market, the U shape of regular hours with its spikes at the open and close, a decaying post-market).
Inside a bucket messages come in bursts -- a quote change sets off a cascade of cancels and replaces within
microseconds -- with idle time between bursts.  That clustering is what lets MoldUDP64 packets carry several
messages, as on the real feed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from appliance._jit import kernel
from appliance.gen.rng import next_exponential, next_unit

SECOND = 1_000_000_000


def hms(h: int, m: int = 0, s: int = 0) -> int:
    """Nanoseconds since midnight."""
    return ((h * 60 + m) * 60 + s) * SECOND


@dataclass(frozen=True)
class Timeline:
    name: str
    start_of_messages: int      # System Event 'O'
    start_of_system: int        # 'S'; the order flow starts here
    market_open: int            # 'Q'
    market_close: int           # 'M'
    end_of_system: int          # 'E'; the order flow has stopped
    end_of_messages: int        # 'C'
    bucket_ns: int              # flow buckets; counts follow the intensity profile bucket by bucket
    pause_ns: int               # how long a trading pause or halt lasts (5 minutes for a LULD pause)

    def market_fraction(self, x: float) -> int:
        """The time a fraction ``x`` of the way through regular market hours."""
        return self.market_open + int(x * (self.market_close - self.market_open))


TIMELINES = {
    "full": Timeline("full", hms(3, 30), hms(4), hms(9, 30), hms(16), hms(20), hms(20, 5),
                     bucket_ns=60 * SECOND, pause_ns=300 * SECOND),
    "compact": Timeline("compact", hms(9, 24), hms(9, 25), hms(9, 30), hms(9, 45), hms(9, 50), hms(9, 50, 30),
                        bucket_ns=SECOND, pause_ns=20 * SECOND),
}

# Share of the order flow in each phase, and the intensity shape inside it (x = fraction of the phase).
PRE_MARKET_SHARE, MARKET_SHARE, POST_MARKET_SHARE = 0.05, 0.90, 0.05


def _pre_market(x: float) -> float:
    return 0.3 + x * x


def _market(x: float) -> float:
    return 1.0 + 3.0 * math.exp(-x / 0.04) + 2.0 * math.exp(-(1.0 - x) / 0.03)


def _post_market(x: float) -> float:
    return math.exp(-x / 0.15)


def flow_buckets(tl: Timeline, n_flow: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, length, count) of the flow buckets from start of system to end of system; counts sum to n_flow."""
    starts, lengths, expected = [], [], []
    phases = ((tl.start_of_system, tl.market_open, PRE_MARKET_SHARE, _pre_market),
              (tl.market_open, tl.market_close, MARKET_SHARE, _market),
              (tl.market_close, tl.end_of_system, POST_MARKET_SHARE, _post_market))
    for begin, end, share, shape in phases:
        edges = list(range(begin, end, tl.bucket_ns)) + [end]
        weights = [shape(((a + b) / 2 - begin) / (end - begin)) * (b - a) for a, b in zip(edges, edges[1:])]
        total = sum(weights)
        for a, b, w in zip(edges, edges[1:], weights):
            starts.append(a)
            lengths.append(b - a)
            expected.append(n_flow * share * w / total)
    # Whole counts that add up exactly: floor the running total, difference it.
    running = np.floor(np.cumsum(np.array(expected)) * (n_flow / sum(expected)) + 1e-6).astype(np.int64)
    running[-1] = n_flow
    counts = np.diff(np.concatenate(([0], running)))
    return np.array(starts, np.int64), np.array(lengths, np.int64), counts


@kernel
def fill_flow_times(b_start, b_len, b_count, key, state, burst_mean, burst_gap_ns, gap, first, out):
    """Timestamps of the order flow, non-decreasing, into ``out``; returns how many were written.

    In each bucket every message either starts a burst (probability 1/burst_mean) or follows the previous
    one after a short exponential gap (mean ``burst_gap_ns``).  The long gaps before each burst, plus one
    after the last, are scaled to fill the rest of the bucket.  ``gap``/``first`` are scratch arrays at least
    as long as the largest bucket.
    """
    k = 0
    p_start = 1.0 / burst_mean
    for b in range(b_start.shape[0]):
        c = b_count[b]
        if c == 0:
            continue
        long_total = 0.0
        short_total = 0.0
        for j in range(c):
            first[j] = j == 0 or next_unit(key, state, 0) < p_start
            if first[j]:
                gap[j] = next_exponential(key, state, 0, 1.0)
                long_total += gap[j]
            else:
                gap[j] = next_exponential(key, state, 0, burst_gap_ns)
                short_total += gap[j]
        long_total += next_exponential(key, state, 0, 1.0)      # idle time after the last burst
        length = np.float64(b_len[b])
        short_scale = 1.0
        room = length - short_total
        if room < 0.1 * length:               # a bucket too busy for its bursts: squeeze them as well
            short_scale = 0.9 * length / short_total
            room = 0.1 * length
        long_scale = room / long_total
        t = 0.0
        for j in range(c):
            t += gap[j] * (long_scale if first[j] else short_scale)
            out[k] = b_start[b] + min(np.int64(t), b_len[b] - 1)
            k += 1
    return k
