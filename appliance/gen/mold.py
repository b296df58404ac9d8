"""MoldUDP64 packetization: which messages share a packet, when the session heartbeats, and its end.

A sender flushes a packet when the matching engine pauses: here a message joins the open packet while it
follows the previous one within ``batch_window_ns`` and still fits ``max_payload``.  After
``heartbeat_ns`` without a packet the session sends a heartbeat (count 0, sequence = the next sequence it
will use), again every ``heartbeat_ns`` while idle, and it ends with one end-of-session packet (count
0xFFFF).  A packet leaves at the timestamp of its last message.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance._jit import kernel
from appliance.decode.mold import END_OF_SESSION, HEADER, HEARTBEAT

BLOCK_PREFIX = 2                 # u16 length before each message
END_DELAY_NS = 1_000_000         # end of session goes out 1 ms after the last message


@dataclass(frozen=True)
class Packets:
    first: np.ndarray            # int64: first message (heartbeat, end of session: the next message)
    count: np.ndarray            # int64: messages, HEARTBEAT or END_OF_SESSION
    ts: np.ndarray               # int64: ITCH time (ns since midnight) the packet leaves
    payload: np.ndarray          # int64: UDP payload bytes (MoldUDP64 header included)

    def __len__(self) -> int:
        return len(self.first)

    @property
    def is_data(self) -> np.ndarray:
        return (self.count != HEARTBEAT) & (self.count != END_OF_SESSION)


@kernel
def _packetize(offsets, ts, max_payload, window_ns, heartbeat_ns, first, count, when, payload):
    n = ts.shape[0]
    p = 0
    i = 0
    while i < n:
        if p > 0:                                 # idle since the last packet: heartbeats
            t = when[p - 1] + heartbeat_ns
            while t < ts[i]:
                first[p], count[p], when[p], payload[p] = i, HEARTBEAT, t, HEADER
                p += 1
                t += heartbeat_ns
        start = i
        size = HEADER
        while i < n:
            grown = size + BLOCK_PREFIX + offsets[i + 1] - offsets[i]
            if i > start and (grown > max_payload or ts[i] - ts[i - 1] > window_ns):
                break
            size = grown
            i += 1
        first[p], count[p], when[p], payload[p] = start, i - start, ts[i - 1], size
        p += 1
    first[p], count[p], when[p], payload[p] = n, END_OF_SESSION, when[p - 1] + END_DELAY_NS, HEADER
    return p + 1


def packetize(offsets: np.ndarray, ts: np.ndarray, max_payload: int, window_ns: int,
              heartbeat_ns: int) -> Packets:
    n = len(ts)
    capacity = n + int((ts[-1] - ts[0]) // heartbeat_ns) + 2
    first, count, when, payload = (np.empty(capacity, np.int64) for _ in range(4))
    used = _packetize(offsets, ts, max_payload, window_ns, heartbeat_ns, first, count, when, payload)
    return Packets(first[:used].copy(), count[:used].copy(), when[:used].copy(), payload[:used].copy())
