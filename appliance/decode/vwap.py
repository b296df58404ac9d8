"""VWAP over a sliding window of feed time, emitted every step of feed time.

Windows are driven by ITCH timestamps, never the wall clock, so a replay is deterministic.  Window ``e`` ends at
``e * step_ns`` and holds the printed trades (E, printable C, P) stamped in ``[e*step - window, e*step)``.
A window's row is emitted once feed time reaches its end, and only if the window holds trades; at the end of
input (or of an epoch) windows are emitted up to the one holding the latest message.

The kernel reads the tape the book kernel produced (rows of ``state.Out.trades``), so window emission never
interrupts message processing.  Besides trades, the tape carries feed-clock marks (kind 0): one whenever a
message enters a new step, so windows are emitted as feed time passes even without trades.  Each instrument keeps
a ring of ``window / step`` per-step buckets, and only instruments with trades inside the window are visited.

Feed time is the largest step seen.  A message more than a window older than that starts a new epoch (the next
day file of a multi-day replay starts again at midnight): the old epoch's windows are finished and the buckets
cleared.  A trade older than feed time but within a window of it cannot join windows already emitted: it joins
the windows still to come and is counted (``vwap_late_trades``).

Trades later broken by a B message stay in the windows (and in the instrument's volume and notional): a window
already written cannot be taken back, so the VWAP is that of the trades as printed.  B messages are on the tape
(kind 'B') only so the writers can list them in broken.csv; this kernel skips them, as it skips Q crosses.
"""
from collections import namedtuple

import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode.state import KIND_BROKEN, KIND_CLOCK, LOCATES, OUT_ROWS, TAPE_KIND, TAPE_LOCATE, TAPE_PRICE, \
    TAPE_SHARES, TAPE_TS

NEED_MORE, OUT_FULL = 0, 1
_NEVER = -(1 << 62)
_KIND_Q = ord("Q")

Vwap = namedtuple("Vwap", [
    "vol", "notional", "trades",   # int64[LOCATES, buckets]: per-step sums
    "tag",                         # int64[LOCATES, buckets]: the step each bucket holds
    "active",                      # int64[2 * LOCATES]: instruments with trades in the current window, in locate
                                   #   order after each window's sort; -1: went quiet (an instrument can be there
                                   #   twice until the next sort: quiet, then trading again)
    "is_active",                   # int8[LOCATES]
    "meta",                        # int64[6]: see M_* below
    "rows",                        # int64[OUT_ROWS, 5]: window_end_ns, locate, volume, notional, trades
    "n",                           # int64[1]: rows used
])
M_ACTIVE, M_NEXT_WINDOW, M_EMIT_POS, M_STEP, M_BUCKETS, M_LATEST = range(6)
VW_END, VW_LOCATE, VW_VOLUME, VW_NOTIONAL, VW_TRADES = range(5)       # columns of rows


def new_vwap(window_ns: int, step_ns: int) -> Vwap:
    buckets = window_ns // step_ns
    meta = np.zeros(6, np.int64)
    meta[M_STEP] = step_ns
    meta[M_BUCKETS] = buckets
    meta[M_LATEST] = _NEVER
    return Vwap(
        vol=np.zeros((LOCATES, buckets), np.int64), notional=np.zeros((LOCATES, buckets), np.int64),
        trades=np.zeros((LOCATES, buckets), np.int64), tag=np.full((LOCATES, buckets), _NEVER, np.int64),
        active=np.zeros(2 * LOCATES, np.int64), is_active=np.zeros(LOCATES, np.int8), meta=meta,
        rows=np.zeros((OUT_ROWS, 5), np.int64), n=np.zeros(1, np.int64),
    )


@kernel(inline="always")
def _sort_active(vw):
    """Start of a window: drop the instruments that went quiet (their slots hold -1) and put the rest in locate
    order, so each window's rows come out sorted and no writer has to sort them.  Insertion sort: the list is
    the previous window's, sorted, plus a few new instruments at the end."""
    meta = vw.meta
    active = vw.active
    n = 0
    for i in range(meta[M_ACTIVE]):
        loc = active[i]
        if loc >= 0:
            j = n
            while j > 0 and active[j - 1] > loc:
                active[j] = active[j - 1]
                j -= 1
            active[j] = loc
            n += 1
    meta[M_ACTIVE] = n


@kernel
def _emit_until(vw, last):
    """Emit windows up to index ``last``, each window's rows in locate order; False when the row buffer filled
    (resumes where it stopped)."""
    meta = vw.meta
    buckets = meta[M_BUCKETS]
    while meta[M_NEXT_WINDOW] <= last:
        if meta[M_EMIT_POS] == 0:
            _sort_active(vw)
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
            if loc < 0:
                i += 1
                continue
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
                # Nothing left in the window: stop visiting it until it trades again (dropped at the next sort).
                vw.active[i] = -1
                vw.is_active[loc] = 0
                i += 1
                continue
            r = vw.n[0]
            vw.rows[r, VW_END] = e * meta[M_STEP]
            vw.rows[r, VW_LOCATE] = loc
            vw.rows[r, VW_VOLUME] = vol
            vw.rows[r, VW_NOTIONAL] = notional
            vw.rows[r, VW_TRADES] = trades
            vw.n[0] = r + 1
            i += 1
        meta[M_EMIT_POS] = 0
        meta[M_NEXT_WINDOW] = e + 1
    return True


@kernel
def _new_epoch(vw, s):
    """Forget every bucket of the finished epoch (an instrument gone quiet keeps tags that could match the new
    epoch's steps) and restart feed time at step ``s``.  Epochs are rare: a pass over all locates is fine."""
    meta = vw.meta
    for i in range(meta[M_ACTIVE]):
        if vw.active[i] >= 0:
            vw.is_active[vw.active[i]] = 0
    for loc in range(vw.tag.shape[0]):
        for b in range(meta[M_BUCKETS]):
            vw.tag[loc, b] = _NEVER
    meta[M_ACTIVE] = 0
    meta[M_EMIT_POS] = 0
    meta[M_NEXT_WINDOW] = s + 1
    meta[M_LATEST] = s


@kernel(inline="always")
def _add_trade(vw, tape, r, s):
    """Add tape row ``r`` (a counted trade at step ``s``, no older than a window) to its instrument's bucket."""
    meta = vw.meta
    loc = tape[r, TAPE_LOCATE]
    b = s % meta[M_BUCKETS]
    if vw.tag[loc, b] != s:          # the bucket holds an older step, outside every window still to come
        vw.tag[loc, b] = s
        vw.vol[loc, b] = 0
        vw.notional[loc, b] = 0
        vw.trades[loc, b] = 0
    shares = tape[r, TAPE_SHARES]
    vw.vol[loc, b] += shares
    vw.notional[loc, b] += shares * tape[r, TAPE_PRICE]
    vw.trades[loc, b] += 1
    if vw.is_active[loc] == 0:
        vw.is_active[loc] = 1
        vw.active[meta[M_ACTIVE]] = loc
        meta[M_ACTIVE] += 1


@kernel
def feed_trades(tape, start, stop, vw, cnt):
    """Fold tape rows ``start..stop-1`` (trades and clock marks) into the windows; returns (next row, status)."""
    meta = vw.meta
    step = meta[M_STEP]
    buckets = meta[M_BUCKETS]
    r = start
    while r < stop:
        kind = tape[r, TAPE_KIND]
        if kind == _KIND_Q or kind == KIND_BROKEN:           # crosses and breaks are not in the windows
            r += 1
            continue
        s = tape[r, TAPE_TS] // step
        latest = meta[M_LATEST]
        if latest == _NEVER:
            _new_epoch(vw, s)
        elif s < latest - buckets:
            if not _emit_until(vw, latest + 1):
                return r, OUT_FULL
            _new_epoch(vw, s)
        elif s < latest:
            # Feed time already passed this trade's step: it joins only the windows not yet written.
            if kind != KIND_CLOCK:
                cnt[C.VWAP_LATE_TRADES] += 1
                if s > latest - buckets:         # else every window it belongs to is already written
                    _add_trade(vw, tape, r, s)
            r += 1
            continue
        if not _emit_until(vw, s):
            return r, OUT_FULL
        meta[M_LATEST] = s
        if kind != KIND_CLOCK:
            _add_trade(vw, tape, r, s)
        r += 1
    return r, NEED_MORE


@kernel
def finish_windows(vw):
    """End of input: emit the windows up to the one holding the latest message; False if the buffer filled."""
    if vw.meta[M_LATEST] == _NEVER:
        return True
    return _emit_until(vw, vw.meta[M_LATEST] + 1)
