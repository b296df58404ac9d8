"""What to generate (``FeedSpec``), checked once, up front, with one-sentence errors."""
from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass

from appliance.decode.mold import HEADER as MOLD_HEADER
from appliance.errors import UserError
from appliance.gen.timeline import TIMELINES
from appliance.itch.layout import MAX_MESSAGE_LENGTH

MAX_INSTRUMENTS = 10_000       # NASDAQ carries about 9,000; the generator's book costs ~25 KB per instrument
MAX_MESSAGES = 2_000_000_000
DEFAULT_VLAN = 100


@dataclass
class FeedSpec:
    """A synthetic NASDAQ TotalView-ITCH 5.0 day and how it is carried.

    The first fifteen fields are the public contract; the rest tune realism and framing and have defaults
    that match the defaults of ``appliance generate``.
    """
    seed: int = 1
    messages: int = 20_000                  # ITCH messages in the day, set-up messages included
    instruments: int = 300
    session: str = "TEST000001"             # MoldUDP64 session, 10 ASCII characters
    start_seq: int = 1                      # sequence number of the first message
    vlan: int | None = None                 # 802.1Q VLAN id (the inner C-tag with qinq); True: DEFAULT_VLAN
    qinq: bool = False                      # add an outer 802.1ad S-tag (0x88a8) with ``outer_vlan``
    ip_options: bool = False                # IHL 6: a 4-byte NOP/EOL option in every feed packet
    ab: bool = False                        # send every packet on line B too, a few microseconds later
    gaps: int = 0                           # packets dropped from ``gaps_on``
    gaps_on: str = "A"                      # "A": line A only (line B fills them) or "both": true gaps
    malformed: int = 0                      # hostile packets injected between good ones
    heartbeat_every_ns: int = 1_000_000_000  # heartbeat after this much idle feed time
    max_payload: int = 1400                 # MoldUDP64 payload bytes per packet, header included
    gaps_both: int = 0                      # further packets dropped from both lines (true gaps)
    timeline: str = "compact"               # "compact": the day's phases within 30 minutes; "full": 03:30-20:05
    burst_mean: float = 8.0                 # mean messages per burst of order flow
    burst_gap_ns: int = 300                 # mean gap between messages of a burst
    batch_window_ns: int = 2_000            # a message this soon after the previous one joins its packet
    line_a: str = "233.54.12.1:26400"
    line_b: str = "233.54.12.2:26400"
    source: str = "10.1.1.1"                # IPv4 source of both lines
    outer_vlan: int = 200                   # S-tag VLAN id with qinq
    date: str = "2026-11-25"                # capture date: frame time = this date's UTC midnight + ITCH time
    b_delay_ns: tuple = (2_000, 8_000)      # line B copy lags line A by a uniform delay in this range

    def validate(self) -> None:
        """Raise UserError, in one sentence, for the first thing wrong with this spec."""
        _check(isinstance(self.seed, int) and 0 <= self.seed < 2**64, f"seed {self.seed!r} must be 0 to 2**64-1")
        _check(isinstance(self.instruments, int) and 1 <= self.instruments <= MAX_INSTRUMENTS,
               f"instruments must be 1 to {MAX_INSTRUMENTS:,}, not {self.instruments!r}")
        _check(isinstance(self.messages, int) and 0 < self.messages <= MAX_MESSAGES,
               f"messages must be 1 to {MAX_MESSAGES:,}, not {self.messages!r}")
        _check(isinstance(self.session, str) and len(self.session) == 10 and self.session.isascii()
               and self.session.isprintable(),
               f"session {self.session!r} must be exactly 10 printable ASCII characters")
        _check(isinstance(self.start_seq, int) and 1 <= self.start_seq < 2**62,
               f"start_seq must be at least 1, not {self.start_seq!r}")
        _check(self.vlan is None or (isinstance(self.vlan, int) and 0 <= self.vlan <= 4095),
               f"vlan must be a VLAN id 0 to 4095, not {self.vlan!r}")
        _check(0 <= self.outer_vlan <= 4095, f"outer_vlan must be 0 to 4095, not {self.outer_vlan!r}")
        for name in ("gaps", "gaps_both", "malformed"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 0, f"{name} must be a whole number >= 0, not {value!r}")
        _check(self.gaps_on in ("A", "both"), f"gaps_on must be 'A' or 'both', not {self.gaps_on!r}")
        _check(self.heartbeat_every_ns > 0, "heartbeat_every_ns must be positive")
        smallest = MOLD_HEADER + 2 + MAX_MESSAGE_LENGTH
        _check(smallest <= self.max_payload <= 8972, f"max_payload must be {smallest} to 8972 bytes "
               f"(one largest message, up to a jumbo frame), not {self.max_payload!r}")
        _check(self.timeline in TIMELINES, f"timeline must be one of {', '.join(TIMELINES)}, not {self.timeline!r}")
        _check(self.burst_mean >= 1, "burst_mean must be at least 1")
        _check(self.burst_gap_ns >= 0 and self.batch_window_ns >= 0, "burst and batch windows must be >= 0")
        lo, hi = self.b_delay_ns
        _check(0 <= lo <= hi, f"b_delay_ns {self.b_delay_ns!r} must be (low, high) with 0 <= low <= high")
        for name in ("line_a", "line_b"):
            parse_line(getattr(self, name), name)
        _check(parse_line(self.line_a, "line_a") != parse_line(self.line_b, "line_b"),
               "line_a and line_b must differ")
        _ipv4(self.source, "source")
        epoch_seconds(self.date)

    @property
    def vlan_id(self) -> int | None:
        """The 802.1Q id to tag with, or None: ``vlan`` may also be a bool (False: untagged, True: the default
        id), and QinQ always has an inner tag."""
        if self.vlan is None or self.vlan is False:
            return DEFAULT_VLAN if self.qinq else None
        return DEFAULT_VLAN if self.vlan is True else int(self.vlan)

    @property
    def impaired(self) -> bool:
        return bool(self.ab or self.gaps or self.gaps_both or self.malformed)


def _check(ok: bool, sentence: str) -> None:
    if not ok:
        raise UserError(sentence)


def _ipv4(text: str, name: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise UserError(f"{name} {text!r} is not an IPv4 address") from None


def parse_line(text: str, name: str) -> tuple[ipaddress.IPv4Address, int]:
    """'GROUP:PORT' -> (multicast group, port)."""
    group, _, port = str(text).rpartition(":")
    addr = _ipv4(group, name)
    _check(addr.is_multicast and port.isdigit() and 0 < int(port) < 65536,
           f"{name} {text!r} must be an IPv4 multicast GROUP:PORT such as 233.54.12.1:26400")
    return addr, int(port)


def epoch_seconds(date: str) -> int:
    """Seconds since the epoch of UTC midnight on ``date`` (YYYY-MM-DD)."""
    try:
        day = _dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise UserError(f"date {date!r} is not YYYY-MM-DD") from None
    return int(_dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp())
