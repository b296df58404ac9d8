"""Sliding-window VWAP per locate over the counted trades (tape kinds E, C and P; crosses are not counted).

Window ends are multiples of the step; the window ending at E covers trade timestamps in [E - window, E).
Rows exist only for windows holding a trade, for window ends up to (floor(T / step) + 1) * step, where T is
the largest timestamp of any applied message.
"""
from __future__ import annotations

COUNTED_KINDS = ("E", "C", "P")


def vwap_rows(tape, last_timestamp, window_ns: int, step_ns: int) -> list[tuple]:
    """(window_end, locate, volume, notional, vwap, trades) sorted by window end, then locate."""
    if last_timestamp is None:
        return []
    last_end = (last_timestamp // step_ns + 1) * step_ns
    windows: dict[tuple[int, int], list[int]] = {}
    for ts, locate, kind, _side, shares, price, _match in tape:
        if kind not in COUNTED_KINDS:
            continue
        first_end = (ts // step_ns + 1) * step_ns            # the first window end strictly after ts
        for end in range(first_end, min(ts + window_ns, last_end) + 1, step_ns):
            totals = windows.setdefault((end, locate), [0, 0, 0])
            totals[0] += shares
            totals[1] += shares * price
            totals[2] += 1
    return [(end, locate, volume, notional, notional / volume, trades)
            for (end, locate), (volume, notional, trades) in sorted(windows.items())]
