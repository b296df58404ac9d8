"""MoldUDP64: packet validation, and per-session sequencing across lines (first copy wins).

``Sequencer.receive`` takes each valid packet from a line and calls ``apply(session, sequence, message)``
for every message the stream delivers, in sequence order, exactly once; holes that every line carrying the
session has moved past are declared as gaps.  A bad packet never reaches the sequencer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from appliance.itch.layout import MESSAGES

HEADER_LENGTH = 20
HEARTBEAT = 0
END_OF_SESSION = 0xFFFF
PENDING_CAP = 1024


@dataclass(frozen=True)
class MoldPacket:
    session: bytes                  # the 10 raw bytes
    sequence: int
    count: int
    messages: tuple[bytes, ...]     # empty for heartbeat and end of session

    @property
    def is_data(self) -> bool:
        return self.count not in (HEARTBEAT, END_OF_SESSION)

    @property
    def line_next(self) -> int:
        return self.sequence + self.count if self.is_data else self.sequence


def session_name(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip(" ")


def parse_mold(payload: bytes) -> MoldPacket | None:
    """The packet, or None when it is bad (too short, a block that does not fit or lies, trailing bytes)."""
    if len(payload) < HEADER_LENGTH:
        return None
    session = payload[:10]
    sequence, count = struct.unpack_from(">QH", payload, 10)
    if count in (HEARTBEAT, END_OF_SESSION):
        # No blocks to walk, and the bytes must still be used exactly: a longer heartbeat is bad.
        return MoldPacket(session, sequence, count, ()) if len(payload) == HEADER_LENGTH else None
    messages = []
    pos = HEADER_LENGTH
    for _ in range(count):
        if pos + 2 > len(payload):
            return None
        (length,) = struct.unpack_from(">H", payload, pos)
        pos += 2
        if length == 0 or pos + length > len(payload):
            return None
        message = payload[pos:pos + length]
        spec = MESSAGES.get(chr(message[0]))
        if spec is None or spec.length != length:
            return None
        messages.append(message)
        pos += length
    if pos != len(payload):
        return None
    return MoldPacket(session, sequence, count, tuple(messages))


@dataclass
class SessionState:
    name: str
    next: int
    line_next: dict = field(default_factory=dict)        # line -> furthest sequence that line has shown
    pending: list = field(default_factory=list)          # (sequence, arrival, MoldPacket), kept sorted


class Sequencer:
    def __init__(self, apply):
        self.apply = apply                  # apply(session name, sequence, message bytes)
        self.sessions: dict[bytes, SessionState] = {}   # insertion order = order of first appearance
        self.gaps: list[list] = []
        self.duplicate_packets = 0
        self.heartbeats = 0
        self.end_of_session: list[str] = []
        self._arrivals = 0

    def receive(self, line, packet: MoldPacket) -> None:
        state = self.sessions.get(packet.session)
        if state is None:
            state = SessionState(session_name(packet.session), packet.sequence)
            self.sessions[packet.session] = state
        state.line_next[line] = max(state.line_next.get(line, 0), packet.line_next)
        if packet.count == HEARTBEAT:
            self.heartbeats += 1
        elif packet.count == END_OF_SESSION:
            if state.name not in self.end_of_session:
                self.end_of_session.append(state.name)
        elif packet.sequence > state.next:
            self._arrivals += 1
            state.pending.append((packet.sequence, self._arrivals, packet))
            state.pending.sort(key=lambda held: held[:2])
            while len(state.pending) > PENDING_CAP:
                self._force_smallest(state)
        else:
            self._deliver(state, packet)
        self._resolve(state)

    def finish(self) -> None:
        """End of all input: what is still held is delivered in sequence order, holes become gaps, and what
        any line announced beyond the last delivered message (data or heartbeat) is a final gap."""
        for state in self.sessions.values():
            while state.pending:
                self._force_smallest(state)
            announced = max(state.line_next.values(), default=0)
            if announced > state.next:
                self._gap(state, announced)

    def _force_smallest(self, state: SessionState) -> None:
        sequence, _, packet = state.pending.pop(0)
        if sequence > state.next:
            self._gap(state, sequence)
        self._deliver(state, packet)

    def _deliver(self, state: SessionState, packet: MoldPacket) -> None:
        """A packet whose first sequence is at or before ``next``: a duplicate, or news from ``next`` on."""
        end = packet.sequence + packet.count
        if end <= state.next:
            self.duplicate_packets += 1
            return
        for index in range(state.next - packet.sequence, packet.count):
            self.apply(state.name, packet.sequence + index, packet.messages[index])
        state.next = end

    def _gap(self, state: SessionState, up_to: int) -> None:
        self.gaps.append([state.name, state.next, up_to - 1])
        state.next = up_to

    def _resolve(self, state: SessionState) -> None:
        while True:
            if state.pending and state.pending[0][0] <= state.next:
                self._deliver(state, state.pending.pop(0)[2])
                continue
            horizon = min(state.line_next.values())
            if horizon > state.next:
                stop = min(horizon, state.pending[0][0]) if state.pending else horizon
                self._gap(state, stop)
                continue
            return
