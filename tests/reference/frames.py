"""Ethernet II / VLAN / IPv4 / UDP, as the contract states them; one frame in, one verdict out.

A verdict is either a counter name (the frame is counted there and dropped) or a ``Datagram``.

Where the contract says "else bad_ip; if the captured length is shorter than what the headers say, count
truncated_frames instead", this reads "captured length shorter" as the capture's own record saying so
(captured bytes < wire length): a length check that fails on a frame the capture cut short is a truncated
frame, the same check failing on a frame captured whole is a lying header, bad_ip.  A frame too short for
its Ethernet header or a VLAN tag is always a truncated frame (there is no IP header to blame).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
MAX_VLAN_TAGS = 4
IPPROTO_UDP = 17


@dataclass(frozen=True)
class Datagram:
    group: int            # IPv4 destination address as an integer
    port: int             # UDP destination port
    payload: bytes


def parse_frame(data: bytes, wire_length: int) -> Datagram | str:
    cut_short = len(data) < wire_length

    def short() -> str:
        return "truncated_frames" if cut_short else "bad_ip"

    if len(data) < 14:
        return "truncated_frames"
    (ethertype,) = struct.unpack_from(">H", data, 12)
    pos = 14
    tags = 0
    while ethertype in VLAN_TPIDS and tags < MAX_VLAN_TAGS:
        if pos + 4 > len(data):
            return "truncated_frames"
        (ethertype,) = struct.unpack_from(">H", data, pos + 2)
        pos += 4
        tags += 1
    if ethertype != ETHERTYPE_IPV4:
        return "non_ipv4"

    ip = data[pos:]
    if len(ip) < 1:
        return short()
    version, ihl = ip[0] >> 4, ip[0] & 0x0F
    if version != 4 or ihl < 5:
        return "bad_ip"
    header_length = ihl * 4
    if header_length > len(ip):
        return short()
    total_length, flags_fragment = struct.unpack_from(">HxxH", ip, 2)
    if total_length < header_length:
        return "bad_ip"
    if total_length > len(ip):
        return short()
    more_fragments = flags_fragment & 0x2000
    fragment_offset = flags_fragment & 0x1FFF
    if more_fragments or fragment_offset:
        return "ip_fragments"
    if ip[9] != IPPROTO_UDP:
        return "non_udp"
    (destination,) = struct.unpack_from(">I", ip, 16)

    udp = ip[header_length:total_length]
    if len(udp) < 8:
        return "bad_udp"
    port, udp_length = struct.unpack_from(">HH", udp, 2)
    if udp_length < 8 or udp_length > len(udp):
        return "bad_udp"
    return Datagram(destination, port, udp[8:udp_length])


def is_auto_feed(group: int) -> bool:
    """IPv4 multicast (224.0.0.0/4) outside the link-local control block 224.0.0.0/24."""
    return (group >> 28) == 0xE and (group >> 8) != 0xE00000


def parse_feed(text: str) -> tuple[int, int]:
    """"GROUP:PORT" -> (address as integer, port)."""
    group, port = text.rsplit(":", 1)
    octets = [int(part) for part in group.split(".")]
    if len(octets) != 4 or not all(0 <= o <= 255 for o in octets):
        raise ValueError(f"not an IPv4 address: {group!r}")
    return int.from_bytes(bytes(octets), "big"), int(port)
