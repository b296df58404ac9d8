"""What a generated feed contains and what a correct decoder must report for it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Manifest:
    path: str
    format: str                         # "pcap", "pcapng" or "dayfile"
    gzip: bool
    bytes: int                          # size of the file written
    frames: int                         # link-layer records in the file (0 for a day file)
    packets: int                        # MoldUDP64 packets written, every line, heartbeats, end of session and
    #                                     the hostile injections included (equal to frames: one packet a frame)
    messages: int                       # distinct ITCH messages generated
    dropped: list[tuple[int, int]]      # (first_seq, last_seq) of every dropped packet
    malformed: dict[str, int]           # hostile kind -> frames injected (every kind listed)
    expected_bad_packets: int           # hostile frames a decoder must count as bad MoldUDP64 packets
    expected_frame_drops: int           # hostile frames a decoder must drop before MoldUDP64
    messages_by_type: dict[str, int]    # ITCH type letter -> messages (every type listed)
    sessions: list[str]
    dropped_lines: list[str] = field(default_factory=list)   # "A" or "both", parallel to dropped
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing from every line: the gaps to report
    data_packets: int = 0               # distinct sequenced packets (before copies and drops)
    heartbeats: int = 0                 # heartbeat packets written, all lines
    end_of_session: int = 0             # end-of-session packets written, all lines
    packets_by_line: dict[str, int] = field(default_factory=dict)   # good MoldUDP64 packets per line
    first_seq: int = 1
    next_seq: int = 1                   # the sequence number after the last message
    expected_messages: int = 0          # messages a correct arbiter applies (all but those in gaps)
    expected_duplicate_packets: int = 0  # data packets delivered on both lines: the second copy is a duplicate
    instruments: int = 0
    seed: int = 0
    timeline: str = ""

    def summary(self) -> str:
        """One paragraph for the operator."""
        kind = self.format + (" (gzip)" if self.gzip else "")
        busiest = ", ".join(f"{t} {n:,}" for t, n in sorted(self.messages_by_type.items(), key=lambda x: -x[1])[:5])
        text = (f"Wrote {self.path}: {kind}, {self.bytes:,} bytes, {self.messages:,} ITCH 5.0 messages "
                f"({busiest}, all {sum(1 for n in self.messages_by_type.values() if n)} types present) "
                f"for {self.instruments:,} instruments, seed {self.seed}, {self.timeline} timeline")
        if self.format == "dayfile":
            return text + "."
        lines = " and ".join(f"line {k} {v:,}" for k, v in self.packets_by_line.items())
        text += (f"; session {', '.join(self.sessions)}, sequences {self.first_seq:,}-{self.next_seq - 1:,} in "
                 f"{self.data_packets:,} data packets; {self.frames:,} frames ({lines} MoldUDP64 packets, "
                 f"{self.heartbeats:,} heartbeats and {self.end_of_session} end-of-session among them)")
        if self.dropped:
            a_only = sum(1 for w in self.dropped_lines if w == "A")
            text += (f"; dropped {len(self.dropped)} packets ({a_only} from line A only, "
                     f"{len(self.dropped) - a_only} from every line)")
        gaps = ", ".join(f"{a:,}-{b:,}" for a, b in self.gaps) or "none"
        text += f"; a correct decoder reports gaps: {gaps}, applies {self.expected_messages:,} messages"
        hostile = sum(self.malformed.values())
        if hostile:
            text += (f"; {hostile} malformed frames injected: {self.expected_bad_packets} bad MoldUDP64 packets "
                     f"and {self.expected_frame_drops} dropped at the frame layer")
        return text + "."
