"""``write_feed``: a day of messages, packetized, framed, impaired on request, written in one format."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.errors import UserError
from appliance.gen import capture, hostile
from appliance.gen.day import Day, build_day
from appliance.gen.manifest import Manifest
from appliance.gen.mold import END_OF_SESSION, HEARTBEAT, Packets, packetize
from appliance.gen.plan import FramePlan, Impairments, plan_frames
from appliance.gen.spec import FeedSpec, epoch_seconds
from appliance.gen.wire import emit_frames, line_headers, templates_array
from appliance.itch.layout import TYPES

FORMATS = ("pcap", "pcapng", "dayfile")


def generate_messages(spec: FeedSpec) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 buffer of the day's ITCH messages back to back, int64 offset of each message), in feed order."""
    day = build_day(spec)
    return day.buf, day.offsets[:-1]


def write_feed(path, spec: FeedSpec, fmt: str = "pcap", gzip: bool = False, nanosecond: bool = True,
               big_endian: bool = False, pcapng_tsresol: int = 9, pcapng_spb: bool = False) -> Manifest:
    """Generate the day ``spec`` describes and write it to ``path``; returns what was written.

    ``fmt="dayfile"`` has no session layer, so A/B copies, gaps and malformed packets are refused there
    (VLAN and IP options, which concern frames, do not apply to it).
    """
    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    spec.validate()
    if fmt == "dayfile" and spec.impaired:
        raise UserError("a day file has no session layer, so A/B lines, gaps and malformed packets need "
                        "--format pcap or pcapng")
    if fmt == "pcapng":
        capture.check_tsresol(pcapng_tsresol)
    path = Path(path)
    day = build_day(spec)
    if fmt == "dayfile":
        size = capture.write(path, capture.dayfile(day.buf, day.offsets), gzip)
        return _manifest(path, fmt, gzip, size, spec, day)
    packets = packetize(day.offsets, day.ts, spec.max_payload, spec.batch_window_ns, spec.heartbeat_every_ns)
    lines = line_headers(spec)
    plan, imp = plan_frames(spec, day, packets, lines)
    tpl, tpl_meta = templates_array(lines)
    session = np.frombuffer(spec.session.encode("ascii"), np.uint8)

    def emit(out: np.ndarray, at: np.ndarray) -> None:
        emit_frames(out, at, plan.line, plan.packet, plan.literal, plan.ident, tpl, tpl_meta, session,
                    spec.start_seq, (packets.first, packets.count, packets.payload), (day.buf, day.offsets),
                    (plan.literal_buf, plan.literal_at, plan.literal_len))

    ts_ns = epoch_seconds(spec.date) * capture.NS + plan.ts
    if fmt == "pcap":
        data = capture.pcap(ts_ns, plan.caplen, plan.origlen, emit, nanosecond=nanosecond, big_endian=big_endian)
    else:
        data = capture.pcapng(ts_ns, plan.caplen, plan.origlen, emit, tsresol=pcapng_tsresol, simple=pcapng_spb,
                              big_endian=big_endian)
    size = capture.write(path, data, gzip)
    return _manifest(path, fmt, gzip, size, spec, day, packets, plan, imp)


def _manifest(path: Path, fmt: str, gzip: bool, size: int, spec: FeedSpec, day: Day, packets: Packets | None = None,
              plan: FramePlan | None = None, imp: Impairments | None = None) -> Manifest:
    types = np.bincount(day.buf[day.offsets[:-1]], minlength=256)
    m = Manifest(path=str(path), format=fmt, gzip=gzip, bytes=size, frames=0, packets=0, messages=len(day),
                 dropped=[], malformed={k: 0 for k, _ in hostile.KINDS}, expected_bad_packets=0,
                 expected_frame_drops=0, messages_by_type={t: int(types[ord(t)]) for t in TYPES},
                 sessions=[], first_seq=spec.start_seq, next_seq=spec.start_seq + len(day),
                 expected_messages=len(day), instruments=spec.instruments, seed=spec.seed, timeline=spec.timeline)
    if plan is None:
        return m
    good = plan.packet >= 0
    count = packets.count[plan.packet[good]]
    m.frames = m.packets = len(plan)
    m.sessions = [spec.session]
    m.data_packets = int(packets.is_data.sum())
    m.heartbeats = int((count == HEARTBEAT).sum())
    m.end_of_session = int((count == END_OF_SESSION).sum())
    m.packets_by_line = {name: int((plan.line[good] == i).sum()) for i, name in enumerate("AB"[:1 + spec.ab])}
    m.dropped, m.dropped_lines, m.gaps, m.malformed = imp.dropped, imp.dropped_lines, imp.gaps, imp.malformed
    m.expected_bad_packets = sum(n for k, n in imp.malformed.items() if hostile.LAYER[k] == hostile.MOLD)
    m.expected_frame_drops = sum(n for k, n in imp.malformed.items() if hostile.LAYER[k] == hostile.FRAME)
    m.expected_messages = len(day) - sum(b - a + 1 for a, b in imp.gaps)
    data_frames = plan.packet[good][packets.is_data[plan.packet[good]]]
    m.expected_duplicate_packets = int(len(data_frames) - len(np.unique(data_frames)))
    return m
