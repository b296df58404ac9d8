"""Sliding-window VWAP per locate over the counted trades (tape kinds E, C and P; crosses are not counted).

Feed time is the largest step (timestamp // step) of the applied messages so far.  A message more than a
window's worth of steps older than feed time starts a new epoch (e.g. the next day file).  A counted trade whose
step is below feed time, within the same epoch, is late: it joins only the windows ending after feed time.

Within an epoch, window ends are multiples of the step; the window ending at E covers trade timestamps in
[E - window, E).  Rows exist only for windows holding a trade, for window ends up to (F + 1) * step, where F is
the epoch's final feed time.  Epochs' rows follow one another; within an epoch they are sorted by window end,
then locate.
"""
from __future__ import annotations

COUNTED_KINDS = ("E", "C", "P")


def _epochs(clock, tape, window_ns: int, step_ns: int):
    """Split the counted trades into epochs: yields (trades, final feed-time step)."""
    buckets = window_ns // step_ns
    trades: list[tuple] = []
    latest = None
    for ts, first, end in clock:
        step = ts // step_ns
        if latest is not None and step < latest - buckets:
            yield trades, latest
            trades, latest = [], step
        elif latest is None or step > latest:
            latest = step
        for row in tape[first:end]:
            if row[2] in COUNTED_KINDS:
                # the first window it may join: the one after its step, or after feed time if that is later
                trades.append((row, max(step, latest) + 1))
    if latest is not None:
        yield trades, latest


def vwap_rows(clock, tape, window_ns: int, step_ns: int) -> list[tuple]:
    """(window_end, locate, volume, notional, vwap, trades) rows.

    ``clock`` holds one (timestamp, first tape row, end tape row) per applied message, in order.
    """
    rows: list[tuple] = []
    for trades, latest in _epochs(clock, tape, window_ns, step_ns):
        last_end = (latest + 1) * step_ns
        windows: dict[tuple[int, int], list[int]] = {}
        for (ts, locate, _kind, _side, shares, price, _match), first_window in trades:
            first_end = first_window * step_ns
            for end in range(first_end, min(ts + window_ns, last_end) + 1, step_ns):
                totals = windows.setdefault((end, locate), [0, 0, 0])
                totals[0] += shares
                totals[1] += shares * price
                totals[2] += 1
        rows += [(end, locate, volume, notional, notional / volume, count)
                 for (end, locate), (volume, notional, count) in sorted(windows.items())]
    return rows
