"""Stop signals as a flag: SIGINT/SIGTERM ask a capture to stop at its next check instead of interrupting it.

Imports nothing heavy, so ``appliance capture`` installs it before numpy and numba load: a Ctrl-C during start-up
(imports, compiling, allocating the tables) then ends like one during the capture, with outputs and a summary.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def catch_stop_signals(stopping: dict) -> dict:
    """SIGINT/SIGTERM set ``stopping["flag"]`` to the first signal's name; returns the old handlers."""
    def on_signal(signum, _frame):
        stopping["flag"] = stopping["flag"] or signal.Signals(signum).name

    return {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}


def restore(old: dict) -> None:
    for s, handler in old.items():
        signal.signal(s, handler)
