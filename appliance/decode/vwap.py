"""VWAP over a sliding window of feed time, emitted every step of feed time.

Windows are driven by ITCH timestamps, never the wall clock, so a replay is deterministic.  Window ``e`` ends at
``e * step_ns`` and holds the printed trades (E, printable C, P) stamped in ``[e*step - window, e*step)``.
A window's row is emitted when feed time reaches its end -- the first trade at or after it, or the end of
input for windows up to the step holding the last message -- and only if the window holds trades.

The kernel reads the trade tape the book kernel produced (rows of ``state.Out.trades``), so window emission
never interrupts message processing; each instrument keeps a ring of ``window / step`` per-step buckets, and
only instruments with trades inside the window are visited at each step.  Feed time is assumed
non-decreasing: a trade stamped before the latest step already seen is left out of the windows and counted
(``vwap_late_trades``).
"""
from collections import namedtuple

import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode.state import LOCATES, OUT_ROWS

NEED_MORE, OUT_FULL = 0, 1
_NEVER = -(1 << 62)
_KIND_Q = ord("Q")

Vwap = namedtuple("Vwap", [
    "vol", "notional", "trades",   # int64[LOCATES, buckets]: per-step sums
    "tag",                         # int64[LOCATES, buckets]: the step each bucket holds
    "active",                      # int64[LOCATES]: instruments with trades in the current window
    "is_active",                   # int8[LOCATES]
    "meta",                        # int64[6]: see M_* below
    "rows",                        # int64[OUT_ROWS, 5]: window_end_ns, locate, volume, notional, trades
    "n",                           # int64[1]: rows used
])
M_ACTIVE, M_NEXT_WINDOW, M_EMIT_POS, M_STEP, M_BUCKETS = range(5)


def new_vwap(window_ns: int, step_ns: int) -> Vwap:
    buckets = window_ns // step_ns
    meta = np.zeros(6, np.int64)
    meta[M_STEP] = step_ns
    meta[M_BUCKETS] = buckets
    return Vwap(
        vol=np.zeros((LOCATES, buckets), np.int64), notional=np.zeros((LOCATES, buckets), np.int64),
        trades=np.zeros((LOCATES, buckets), np.int64), tag=np.full((LOCATES, buckets), _NEVER, np.int64),
        active=np.zeros(LOCATES, np.int64), is_active=np.zeros(LOCATES, np.int8), meta=meta,
        rows=np.zeros((OUT_ROWS, 5), np.int64), n=np.zeros(1, np.int64),
    )


@kernel
def _emit_until(vw, last):
    """Emit windows up to index ``last``; False when the row buffer filled (resumes where it stopped)."""
    meta = vw.meta
    buckets = meta[M_BUCKETS]
    while meta[M_NEXT_WINDOW] <= last:
        if meta[M_ACTIVE] == 0:
            meta[M_NEXT_WINDOW] = last + 1
            return True
        e = meta[M_NEXT_WINDOW]
        i = meta[M_EMIT_POS]
        while i < meta[M_ACTIVE]:
            if vw.n[0] == vw.rows.shape[0]:
                meta[M_EMIT_POS] = i
                return False
            loc = vw.active[i]
            vol = 0
            notional = 0
            trades = 0
            for b in range(buckets):
                t = vw.tag[loc, b]
                if t >= e - buckets and t < e:
                    vol += vw.vol[loc, b]
                    notional += vw.notional[loc, b]
                    trades += vw.trades[loc, b]
            if trades == 0:
                # Nothing left in the window: stop visiting it until it trades again.
                meta[M_ACTIVE] -= 1
                vw.active[i] = vw.active[meta[M_ACTIVE]]
                vw.is_active[loc] = 0
                continue
            r = vw.n[0]
            vw.rows[r, 0] = e * meta[M_STEP]
            vw.rows[r, 1] = loc
            vw.rows[r, 2] = vol
            vw.rows[r, 3] = notional
            vw.rows[r, 4] = trades
            vw.n[0] = r + 1
            i += 1
        meta[M_EMIT_POS] = 0
        meta[M_NEXT_WINDOW] = e + 1
    return True


@kernel
def feed_trades(tape, start, stop, vw, cnt):
    """Fold tape rows ``start..stop-1`` into the windows; returns (next row, status)."""
    meta = vw.meta
    step = meta[M_STEP]
    buckets = meta[M_BUCKETS]
    r = start
    while r < stop:
        if tape[r, 2] == _KIND_Q:
            r += 1
            continue
        ts = tape[r, 0]
        s = ts // step
        if s < meta[M_NEXT_WINDOW] - 1:
            cnt[C.VWAP_LATE_TRADES] += 1
            r += 1
            continue
        if not _emit_until(vw, s):
            return r, OUT_FULL
        loc = tape[r, 1]
        b = s % buckets
        if vw.tag[loc, b] != s:
            vw.tag[loc, b] = s
            vw.vol[loc, b] = 0
            vw.notional[loc, b] = 0
            vw.trades[loc, b] = 0
        shares = tape[r, 4]
        vw.vol[loc, b] += shares
        vw.notional[loc, b] += shares * tape[r, 5]
        vw.trades[loc, b] += 1
        if vw.is_active[loc] == 0:
            vw.is_active[loc] = 1
            vw.active[meta[M_ACTIVE]] = loc
            meta[M_ACTIVE] += 1
        r += 1
    return r, NEED_MORE


@kernel
def finish_windows(vw, last_timestamp):
    """End of input: emit the windows up to the one holding the last message; False if the buffer filled."""
    return _emit_until(vw, last_timestamp // vw.meta[M_STEP] + 1)
