"""Ethernet II / 802.1Q / QinQ / IPv4 / UDP: find a feed datagram inside a captured frame.

A cursor walks the headers and checks that every byte it is about to read lies inside the captured length.
A frame that is not a feed datagram is counted by the reason it was skipped; nothing here can read past
``off + caplen``.

The acceptance policy.  Three parsers decide whether a frame is a feed datagram: this one (replay, and the
decoder behind both capture engines), the XDP program (``xdp/feed_steer.bpf.c``) and the TPACKET_V3 classic
BPF filter (``ring/tpacket.py: feed_filter``).  All three accept exactly this, and
``tests/test_frame_policy.py`` sends one table of frames through all three:

=========  ==================================================================================================
Ethernet   Ethernet II header (14 bytes)
tags       0 to ``MAX_TAGS`` (4) VLAN tags, each TPID one of ``VLAN_TPIDS`` (802.1Q 0x8100, 802.1ad 0x88A8,
           the pre-standard QinQ 0x9100), in any order; then EtherType 0x0800.  A tag the kernel moved out of
           the frame (``tp_vlan_tci``) counts as one of them.
IPv4       version 4, IHL >= 5 (options allowed), not a fragment (MF clear, offset 0), protocol 17 (UDP),
           total length >= IHL*4 + 8 and within the frame (trailing padding allowed)
UDP        length >= 8 and IHL*4 + length <= the IPv4 total length
feed       (destination group, destination port) is one of the ``--feed`` lines (replay without ``--feed``:
           any multicast group outside 224.0.0.0/24)
=========  ==================================================================================================

Everything else is skipped: here counted by reason, in the XDP program counted and passed to the stack, in
the classic filter dropped (it has no counters).  Checked against the captured length here; the filters see
whole frames, so their "within the frame" is the wire length.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode.state import LN_COUNT, LN_DISCOVER, MAX_LINES
from appliance.decode.wire import be16, be32

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_QINQ_OLD = 0x9100
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD)
MAX_TAGS = 4                # also FEED_MAX_TAGS in xdp/feed_steer.h (tests/test_steer.py checks they agree)
IPPROTO_UDP = 17


@kernel(inline="always")
def _line_of(mold, group, port, cnt):
    """Index of the line for (group, port), discovering multicast lines in auto mode; -1 if not a feed."""
    meta = mold.ln_meta
    for i in range(meta[LN_COUNT]):
        if mold.ln_group[i] == group and mold.ln_port[i] == port:
            return i
    # Auto mode takes every multicast destination outside 224.0.0.0/24 (link-local control traffic).
    if meta[LN_DISCOVER] == 0 or (group >> 28) != 14 or (group >> 8) == 0xE00000:
        cnt[C.NOT_FEED] += 1
        return -1
    if meta[LN_COUNT] == MAX_LINES:
        cnt[C.LINES_OVERFLOW] += 1
        return -1
    i = meta[LN_COUNT]
    mold.ln_group[i] = group
    mold.ln_port[i] = port
    meta[LN_COUNT] = i + 1
    return i


@kernel
def feed_payload(buf, off, caplen, wirelen, mold, cnt):
    """Locate the UDP payload of a feed datagram in the frame at ``buf[off:off+caplen]``.

    ``wirelen`` is the frame's length on the wire: a header that promises more bytes than were captured is a
    truncated capture when the capture was cut short, and a lie (bad_ip / bad_udp) when it was not.
    Returns (payload offset, payload length, line index); line -1 when the frame is not a feed datagram.
    """
    end = off + caplen
    p = off + 12
    if p + 2 > end:
        cnt[C.TRUNCATED_FRAMES] += 1
        return 0, 0, -1
    ethertype = be16(buf, p)
    tags = 0
    while ethertype == ETH_P_8021Q or ethertype == ETH_P_8021AD or ethertype == ETH_P_QINQ_OLD:
        tags += 1
        p += 4
        if tags > MAX_TAGS:
            cnt[C.NON_IPV4] += 1
            return 0, 0, -1
        if p + 2 > end:
            cnt[C.TRUNCATED_FRAMES] += 1
            return 0, 0, -1
        ethertype = be16(buf, p)
    if ethertype != ETH_P_IP:
        cnt[C.NON_IPV4] += 1
        return 0, 0, -1
    ip = p + 2
    if ip + 20 > end:
        cnt[C.TRUNCATED_FRAMES] += 1
        return 0, 0, -1
    vihl = buf[ip]
    ihl = np.int64(vihl & 15) * 4
    if (vihl >> 4) != 4 or ihl < 20:
        cnt[C.BAD_IP] += 1
        return 0, 0, -1
    total = be16(buf, ip + 2)
    if total < ihl:
        cnt[C.BAD_IP] += 1
        return 0, 0, -1
    if ip + total > end or ip + ihl > end:
        if caplen < wirelen:
            cnt[C.TRUNCATED_FRAMES] += 1
        else:
            cnt[C.BAD_IP] += 1
        return 0, 0, -1
    if (be16(buf, ip + 6) & 0x3FFF) != 0:                    # MF flag or a fragment offset
        cnt[C.IP_FRAGMENTS] += 1
        return 0, 0, -1
    if buf[ip + 9] != IPPROTO_UDP:
        cnt[C.NON_UDP] += 1
        return 0, 0, -1
    udp = ip + ihl
    if udp + 8 > ip + total:
        cnt[C.BAD_UDP] += 1
        return 0, 0, -1
    udp_len = be16(buf, udp + 4)
    if udp_len < 8 or udp + udp_len > ip + total:
        cnt[C.BAD_UDP] += 1
        return 0, 0, -1
    line = _line_of(mold, be32(buf, ip + 16), be16(buf, udp + 2), cnt)
    return udp + 8, udp_len - 8, line
