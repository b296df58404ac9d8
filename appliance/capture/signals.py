"""Stop signals as a flag: SIGINT/SIGTERM ask a capture to stop at its next check instead of interrupting it.

SIGUSR1 says "the session ended elsewhere" (``capture --workers``: another worker saw the end of session): the
capture then stops, as at its own end of session, once its lines have been quiet for ``--linger``.  A worker
whose lines all hashed to other workers sees no end of session of its own and would otherwise never stop.

Imports nothing heavy, so ``appliance capture`` installs it before numpy and numba load: a Ctrl-C during start-up
(imports, compiling, allocating the tables) then ends like one during the capture, with outputs and a summary.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PEER_ENDED = signal.SIGUSR1


def catch_stop_signals(stopping: dict) -> dict:
    """SIGINT/SIGTERM set ``stopping["flag"]`` to the first signal's name, SIGUSR1 sets ``stopping["peer_ended"]``;
    returns the old handlers."""
    def on_signal(signum, _frame):
        stopping["flag"] = stopping["flag"] or signal.Signals(signum).name

    def on_peer_ended(_signum, _frame):
        stopping["peer_ended"] = True

    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    old[PEER_ENDED] = signal.signal(PEER_ENDED, on_peer_ended)
    return old


def restore(old: dict) -> None:
    for s, handler in old.items():
        signal.signal(s, handler)
