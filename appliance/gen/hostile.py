"""Hostile frames injected between good ones, one builder per kind, each derived from a real packet.

Every kind must be caught by a correct decoder, at the layer ``KINDS`` names:

* ``frame`` -- dropped before MoldUDP64 is looked at: a frame cut short by the capture, a UDP length past
  the end of the datagram, an IP fragment, a non-IP frame (ARP), a non-UDP IPv4 packet (IGMP report);
* ``moldudp64`` -- a UDP datagram on the feed group and port whose MoldUDP64 packet is invalid and must be
  counted as bad with none of its messages applied.

The MoldUDP64-level ones reuse the sequence number and messages of a packet already sent on that line
(``source``), so they never claim sequence numbers of their own: whatever a decoder does with them, the good
packets around them decode exactly.
"""
from __future__ import annotations

import ipaddress
import struct

from appliance.decode.mold import END_OF_SESSION, HEADER, HEARTBEAT
from appliance.gen.rng import Stream
from appliance.gen.wire import (IPV4_LEN, UDP_LEN, LineHeader, internet_checksum, ipv4, mold_payload,
                                source_mac, udp_frame)
from appliance.itch.layout import MESSAGE_LENGTH

FRAME, MOLD = "frame", "moldudp64"
KINDS = (
    ("truncated_frame", FRAME),          # captured length shorter than the IPv4 total length says
    ("udp_length_past_end", FRAME),      # UDP length beyond the IPv4 datagram
    ("count_too_large", MOLD),           # count says more messages than the packet holds
    ("count_too_small", MOLD),           # trailing bytes after the counted messages
    ("block_length_mismatch", MOLD),     # a block one byte shorter than its ITCH type
    ("unknown_message_type", MOLD),      # a type byte ITCH 5.0 does not define
    ("zero_length_block", MOLD),         # an empty message block
    ("garbage_payload", MOLD),           # random bytes to the feed group and port
    ("ip_fragment", FRAME),              # first fragment (MF set) of a datagram whose rest never comes
    ("non_ip", FRAME),                   # an ARP request
    ("non_udp", FRAME),                  # an IGMPv2 membership report for the feed group
)
LAYER = dict(KINDS)
UNKNOWN_TYPE = next(b for b in b"Zzqrstuvw" if MESSAGE_LENGTH[b] == 0)
ARP_TARGET = ipaddress.IPv4Address("10.1.1.254")
ETH_P_ARP = 0x0806
IPPROTO_IGMP = 2
ROUTER_ALERT = bytes([0x94, 0x04, 0x00, 0x00])   # RFC 2113, as IGMP reports carry it
ETH_MIN_FRAME = 60                               # without the FCS


def build(kind: str, line: LineHeader, source: str, session: bytes, seq: int, messages: list[bytes], ident: int,
          draws: Stream) -> tuple[bytes, int]:
    """(captured bytes, original length on the wire) of one hostile frame."""
    good = mold_payload(session, seq, len(messages), messages)
    if kind == "truncated_frame":
        frame = udp_frame(line, good, ident, source)
        return frame[:line.udp_offset + UDP_LEN + HEADER // 2], len(frame)
    if kind == "udp_length_past_end":
        frame = bytearray(udp_frame(line, good, ident, source))
        struct.pack_into(">H", frame, line.udp_offset + 4, UDP_LEN + len(good) + 64)
        return bytes(frame), len(frame)
    if kind == "ip_fragment":
        return _fragment(line, source, good, ident)
    if kind == "non_ip":
        return _arp(line, source)
    if kind == "non_udp":
        return _igmp_report(line, source, ident)
    payload = _bad_mold(kind, session, seq, messages, draws)
    frame = udp_frame(line, payload, ident, source)
    return frame, len(frame)


def _bad_mold(kind: str, session: bytes, seq: int, messages: list[bytes], draws: Stream) -> bytes:
    n = len(messages)
    if kind == "count_too_large":
        return mold_payload(session, seq, n + 3, messages)
    if kind == "count_too_small":
        blocks = messages if n > 1 else messages + messages     # keep count >= 1: 0 would be a heartbeat
        return mold_payload(session, seq, len(blocks) - 1, blocks)
    if kind == "block_length_mismatch":
        return mold_payload(session, seq, n, [messages[0][:-1]] + messages[1:])
    if kind == "unknown_message_type":
        return mold_payload(session, seq, n, [bytes([UNKNOWN_TYPE]) + messages[0][1:]] + messages[1:])
    if kind == "zero_length_block":
        return mold_payload(session, seq, n + 1, [b""] + messages)
    if kind == "garbage_payload":
        while True:
            size = HEADER + 1 + int(draws.below(1, 180)[0])
            payload = draws.u64((size + 7) // 8).tobytes()[:size]
            if not well_formed(payload):
                return payload
    raise ValueError(f"unknown hostile kind {kind!r}")


def well_formed(payload: bytes) -> bool:
    """MoldUDP64 framing check, the way a decoder must do it (count agrees with the blocks, lengths match
    their ITCH types); used to make sure garbage really is garbage."""
    if len(payload) < HEADER:
        return False
    (count,) = struct.unpack_from(">H", payload, 18)
    if count in (HEARTBEAT, END_OF_SESSION):
        return len(payload) == HEADER
    q = HEADER
    for _ in range(count):
        if q + 2 > len(payload):
            return False
        (length,) = struct.unpack_from(">H", payload, q)
        if length == 0 or q + 2 + length > len(payload) or MESSAGE_LENGTH[payload[q + 2]] != length:
            return False
        q += 2 + length
    return q == len(payload)


def _fragment(line: LineHeader, source: str, payload: bytes, ident: int) -> tuple[bytes, int]:
    """The first fragment of the datagram: whole 8-byte units of it, More Fragments set."""
    datagram = struct.pack(">HHHH", line.port, line.port, UDP_LEN + len(payload), 0) + payload
    part = datagram[:max(16, len(datagram) // 2 // 8 * 8)]
    options = line.template[line.ip_offset + IPV4_LEN:line.udp_offset]
    ip = ipv4(ipaddress.IPv4Address(source), line.group, 17, len(part), ident, options, flags_fragment=0x2000)
    frame = line.template[:line.ip_offset] + ip + part
    return frame, len(frame)


def _arp(line: LineHeader, source: str) -> tuple[bytes, int]:
    """Who has 10.1.1.254? Tell <source>: broadcast, not IP at all."""
    src = ipaddress.IPv4Address(source)
    eth = line.template[:line.ip_offset - 2]             # keep the line's VLAN tags
    frame = b"\xff" * 6 + eth[6:] + struct.pack(">H", ETH_P_ARP)
    frame += struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, source_mac(src), src.packed, b"\x00" * 6,
                         ARP_TARGET.packed)
    frame = frame.ljust(ETH_MIN_FRAME, b"\x00")
    return frame, len(frame)


def _igmp_report(line: LineHeader, source: str, ident: int) -> tuple[bytes, int]:
    """IGMPv2 membership report for the feed group: IPv4 to the group, but protocol 2, not UDP."""
    igmp = struct.pack(">BBH4s", 0x16, 0, 0, line.group.packed)
    igmp = igmp[:2] + struct.pack(">H", internet_checksum(igmp)) + igmp[4:]
    ip = ipv4(ipaddress.IPv4Address(source), line.group, IPPROTO_IGMP, len(igmp), ident, ROUTER_ALERT, ttl=1)
    frame = line.template[:line.ip_offset] + ip + igmp
    frame = frame.ljust(ETH_MIN_FRAME, b"\x00")
    return frame, len(frame)
