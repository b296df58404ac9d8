"""Ethernet II (optionally 802.1Q or QinQ tagged) / IPv4 / UDP frames carrying the MoldUDP64 packets.

Each line has one header template (``LineHeader``) built here in Python; the kernel copies it in front of
every packet and fills in the per-frame fields (IPv4 total length, identification and checksum, UDP
length).  ``udp_frame`` is the same construction in plain Python: it builds the hostile frames and is the
reference the tests hold the kernel to.  UDP checksums are 0 ("not computed", allowed for IPv4), as on
most exchange feeds.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import numpy as np

from appliance._jit import kernel
from appliance.decode.frames import ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, IPPROTO_UDP
from appliance.decode import put
from appliance.decode.mold import END_OF_SESSION, HEADER, HEARTBEAT
from appliance.gen.mold import BLOCK_PREFIX
from appliance.gen.spec import FeedSpec, parse_line

TTL = 64
IP_OPTION_PADDING = bytes([1, 1, 1, 0])       # NOP, NOP, NOP, EOL: a legal 4-byte option block (IHL 6)
IPV4_LEN, UDP_LEN = 20, 8


@dataclass(frozen=True)
class LineHeader:
    name: str                   # "A" or "B"
    group: ipaddress.IPv4Address
    port: int
    template: bytes             # Ethernet (+ tags) + IPv4 (+ options) + UDP, with zero lengths and checksum
    ip_offset: int
    ip_header_len: int

    @property
    def udp_offset(self) -> int:
        return self.ip_offset + self.ip_header_len


def multicast_mac(group: ipaddress.IPv4Address) -> bytes:
    """RFC 1112: 01:00:5e followed by the low 23 bits of the group address."""
    low = int(group) & 0x7FFFFF
    return bytes([0x01, 0x00, 0x5E]) + low.to_bytes(3, "big")


def source_mac(source: ipaddress.IPv4Address) -> bytes:
    """A locally administered unicast MAC derived from the source address (02:00 + the four octets)."""
    return b"\x02\x00" + source.packed


def ethernet(dst: bytes, src: bytes, ethertype: int, spec: FeedSpec) -> bytes:
    tags = b""
    if spec.qinq:
        tags += struct.pack(">HH", ETH_P_8021AD, spec.outer_vlan)
    if spec.vlan_id is not None:
        tags += struct.pack(">HH", ETH_P_8021Q, spec.vlan_id)
    return dst + src + tags + struct.pack(">H", ethertype)


def ipv4(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, proto: int, payload_len: int, ident: int,
         options: bytes = b"", ttl: int = TTL, flags_fragment: int = 0) -> bytes:
    """An IPv4 header with a correct checksum (DF clear unless ``flags_fragment`` says otherwise)."""
    ihl = (IPV4_LEN + len(options)) // 4
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + payload_len, ident & 0xFFFF, flags_fragment,
                       ttl, proto, 0, src.packed, dst.packed) + options
    return head[:10] + struct.pack(">H", internet_checksum(head)) + head[12:]


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def line_headers(spec: FeedSpec) -> list[LineHeader]:
    """Line A, and line B when the spec asks for A/B copies."""
    source = ipaddress.IPv4Address(spec.source)
    options = IP_OPTION_PADDING if spec.ip_options else b""
    lines = []
    for name, text in (("A", spec.line_a), ("B", spec.line_b))[:2 if spec.ab else 1]:
        group, port = parse_line(text, f"line_{name.lower()}")
        eth = ethernet(multicast_mac(group), source_mac(source), ETH_P_IP, spec)
        ip = ipv4(source, group, IPPROTO_UDP, UDP_LEN, 0, options)
        ip = ip[:2] + b"\x00\x00" + ip[4:10] + b"\x00\x00" + ip[12:]   # per-frame fields are the kernel's
        udp = struct.pack(">HHHH", port, port, 0, 0)
        lines.append(LineHeader(name, group, port, eth + ip + udp, len(eth), len(ip)))
    return lines


def udp_frame(line: LineHeader, payload: bytes, ident: int, source: str) -> bytes:
    """The frame the kernel writes for ``payload`` on ``line`` (Python reference and hostile-frame builder)."""
    eth = line.template[:line.ip_offset]
    options = line.template[line.ip_offset + IPV4_LEN:line.udp_offset]
    ip = ipv4(ipaddress.IPv4Address(source), line.group, IPPROTO_UDP, UDP_LEN + len(payload), ident, options)
    return eth + ip + struct.pack(">HHHH", line.port, line.port, UDP_LEN + len(payload), 0) + payload


def mold_payload(session: bytes, seq: int, count: int, blocks: list[bytes]) -> bytes:
    """MoldUDP64 downstream packet; ``blocks`` are messages, each gets its u16 length prefix."""
    return session + struct.pack(">QH", seq, count) + b"".join(struct.pack(">H", len(b)) + b for b in blocks)


def templates_array(lines: list[LineHeader]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8[lines, longest template], int64[lines, 3]: template length, IPv4 offset, IPv4 header length)."""
    width = max(len(h.template) for h in lines)
    tpl = np.zeros((len(lines), width), np.uint8)
    meta = np.zeros((len(lines), 3), np.int64)
    for i, h in enumerate(lines):
        tpl[i, :len(h.template)] = np.frombuffer(h.template, np.uint8)
        meta[i] = (len(h.template), h.ip_offset, h.ip_header_len)
    return tpl, meta


@kernel
def emit_frames(out, at, frame_line, frame_packet, frame_literal, frame_ident, tpl, tpl_meta, session,
                first_seq, packets, messages, literals):
    """Write every frame's bytes at ``out[at[f]:]``: a packet behind its line's header, or a literal frame.

    ``packets`` = (first message, count, payload bytes); ``messages`` = (buffer, offsets);
    ``literals`` = (buffer, start, captured length).
    """
    pk_first, pk_count, pk_payload = packets
    msg_buf, msg_off = messages
    lit_buf, lit_at, lit_len = literals
    for f in range(at.shape[0]):
        d = at[f]
        if frame_literal[f] >= 0:
            k = frame_literal[f]
            put.copy(out, d, lit_buf, lit_at[k], lit_len[k])
            continue
        line, p = frame_line[f], frame_packet[f]
        tlen, ip, ihl = tpl_meta[line, 0], tpl_meta[line, 1], tpl_meta[line, 2]
        put.copy(out, d, tpl[line], 0, tlen)
        q = d + tlen
        put.copy(out, q, session, 0, 10)
        put.be64(out, q + 10, first_seq + pk_first[p])
        count = pk_count[p]
        put.be16(out, q + 18, count)
        q += HEADER
        if count != HEARTBEAT and count != END_OF_SESSION:
            for m in range(pk_first[p], pk_first[p] + count):
                length = msg_off[m + 1] - msg_off[m]
                put.be16(out, q, length)
                put.copy(out, q + BLOCK_PREFIX, msg_buf, msg_off[m], length)
                q += BLOCK_PREFIX + length
        udp = d + ip + ihl
        put.be16(out, d + ip + 2, ihl + UDP_LEN + pk_payload[p])
        put.be16(out, d + ip + 4, frame_ident[f] & 0xFFFF)
        put.be16(out, d + ip + 10, put.ipv4_checksum(out, d + ip, ihl))   # the field is 0 in the template
        put.be16(out, udp + 4, UDP_LEN + pk_payload[p])
