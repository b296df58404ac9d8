"""One acceptance policy for feed frames, three parsers held to it (policy table: appliance/decode/frames.py).

The same table of frames goes through
* ``decode/frames.py``'s ``feed_payload`` directly (replay, and the decoder behind both capture engines);
* the XDP program (``xdp/feed_steer.bpf.c``) through BPF_PROG_TEST_RUN (root);
* the TPACKET_V3 classic BPF filter (``ring/tpacket.py: feed_filter``) attached to an AF_PACKET socket on a veth
  pair inside a namespace the test creates and deletes (root + netns): classic BPF cannot be test-run, and
  the live path is the point -- the kernel moves an outer 802.1Q / 802.1ad tag out of the frame before the
  filter runs, which is what made QinQ feeds vanish under TPACKET_V3.
Each row says whether the frame is a datagram of the subscribed feed; all three must agree with it.
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from appliance.decode import frames

REPO = Path(__file__).resolve().parents[1]
GROUP, PORT = 0xE9360C01, 26400
Q, AD, OLD = 0x8100, 0x88A8, 0x9100


def udp_frame(vlans=(), group=GROUP, port=PORT, ihl=5, frag_off=0, proto=17, version=4, payload=b"ITCH" * 4,
              tot_len=None, udp_len=None, ethertype=0x0800, pad=0) -> bytes:
    """Ethernet (+ tags) / IPv4 / UDP, every field overridable to break it; the source MAC is set per row."""
    options = b"\x01" * (4 * ihl - 20) if ihl > 5 else b""
    udp = struct.pack("!HHHH", 40000, port, udp_len if udp_len is not None else 8 + len(payload), 0) + payload
    length = tot_len if tot_len is not None else 4 * max(ihl, 5) + len(udp)
    ip = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, length, 1, frag_off, 16, proto, 0,
                     socket.inet_aton("10.1.2.3"), group.to_bytes(4, "big")) + options
    l2 = bytes.fromhex("01005e360c01 000000000000")
    for tpid in vlans:
        l2 += struct.pack("!HH", tpid, 5)
    return l2 + struct.pack("!H", ethertype) + ip + udp + bytes(pad)


MAX = frames.MAX_TAGS
ROWS = [  # (name, frame, a datagram of the feed?)
    ("no tag", udp_frame(), True),
    ("other group", udp_frame(group=GROUP + 1), False),
    ("other port", udp_frame(port=PORT + 1), False),
    ("one 802.1Q tag", udp_frame([Q]), True),
    ("one 802.1ad tag", udp_frame([AD]), True),
    ("one 0x9100 tag", udp_frame([OLD]), True),
    ("QinQ 802.1ad + 802.1Q", udp_frame([AD, Q]), True),
    ("QinQ 0x9100 + 802.1Q", udp_frame([OLD, Q]), True),
    ("QinQ 802.1Q + 802.1Q", udp_frame([Q, Q]), True),
    ("max tags, 802.1ad outer", udp_frame([AD] + [Q] * (MAX - 1)), True),
    ("max tags, 0x9100 outer", udp_frame([OLD] + [Q] * (MAX - 1)), True),
    ("max tags, mixed", udp_frame(([Q, OLD, AD] * MAX)[:MAX]), True),
    ("max+1 tags, 802.1ad outer", udp_frame([AD] + [Q] * MAX), False),
    ("max+1 tags, 0x9100 outer", udp_frame([OLD] + [Q] * MAX), False),
    ("max+1 tags, 802.1Q", udp_frame([Q] * (MAX + 1)), False),
    ("IPv4 options", udp_frame(ihl=7), True),
    ("IHL 15", udp_frame(ihl=15), True),
    ("tagged with options", udp_frame([AD, Q], ihl=6), True),
    ("padding after the datagram", udp_frame(pad=20), True),
    ("IHL 4", udp_frame(ihl=4), False),
    ("version 6 in an IPv4 EtherType", udp_frame(version=6), False),
    ("IPv6 EtherType", udp_frame(ethertype=0x86DD), False),
    ("ARP", bytes.fromhex("ffffffffffff 000000000000 0806") + bytes(28), False),
    ("TCP", udp_frame(proto=6), False),
    ("first fragment (MF)", udp_frame(frag_off=0x2000), False),
    ("later fragment", udp_frame(frag_off=0x0010), False),
    ("tagged fragment", udp_frame([Q], frag_off=0x2000), False),
    ("total length short of IP + UDP", udp_frame(tot_len=24), False),
    ("total length beyond the frame", udp_frame(tot_len=200), False),
    ("UDP length under 8", udp_frame(udp_len=4), False),
    ("UDP length beyond the datagram", udp_frame(udp_len=200), False),
    ("truncated in UDP", udp_frame()[:14 + 20 + 4], False),
    ("truncated in IPv4", udp_frame()[:14 + 10], False),
    ("truncated after a 0x9100 tag", udp_frame([OLD])[:18], False),
    ("Ethernet header only", udp_frame()[:14], False),
    ("options beyond the frame", udp_frame(ihl=15)[:14 + 40], False),
]
IDS = [r[0] for r in ROWS]
EXPECTED = {name: accepted for name, _, accepted in ROWS}


def with_source(frame: bytes, row: int) -> bytes:
    """The row number in the source MAC, so the live test can tell which frames came through."""
    return frame[:6] + bytes([2, 0, 0, 0, 0, row]) + frame[12:]


def test_rows_are_distinct():
    assert len(set(IDS)) == len(ROWS) < 256


# -- frames.py ---------------------------------------------------------------------------------------------
def test_frames_py_follows_the_table():
    from appliance.replay.engine import Options, Replay

    dec = Replay(Options(feeds=[(GROUP, PORT)], order_capacity=64, level_pool=64), sink=None)
    got = {}
    for name, frame, _ in ROWS:
        buf = np.frombuffer(frame, np.uint8)
        _, _, line = frames.feed_payload(buf, 0, len(frame), len(frame), dec.mold, dec.cnt)
        got[name] = bool(line >= 0)
    assert got == EXPECTED


# -- the XDP program ----------------------------------------------------------------------------------------
@pytest.mark.root
def test_xdp_program_follows_the_table():
    from appliance.ring import steer

    obj = steer._Object(steer.ensure_built())
    try:
        obj.fill_feeds([(GROUP, PORT)])
        got = {}
        for name, frame, _ in ROWS:
            before = obj.counters()["no_socket"]                 # subscribed; no socket bound, so passed
            action, _ = obj.test_run(frame)
            assert action == steer.XDP_PASS
            got[name] = obj.counters()["no_socket"] == before + 1
    finally:
        obj.close()
    assert got == EXPECTED


# -- the classic BPF filter, live on a veth pair ----------------------------------------------------------------
RECEIVER = r"""
import json, select, socket, struct, sys, time
from appliance.ring.tpacket import _attach_filter, feed_filter
rows = [bytes.fromhex(h) for h in json.loads(sys.argv[1])]
feeds = [tuple(f) for f in json.loads(sys.argv[2])]
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
_attach_filter(rx, feed_filter(feeds))
rx.bind(("pt0", 0x0003))
rx.setsockopt(263, 8, 1)                                      # PACKET_AUXDATA: was a tag moved out?
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind(("pt1", 0))
for frame in rows:
    tx.send(frame)
got = {}
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    if not select.select([rx], [], [], 0.1)[0]:
        continue
    data, anc, _, _ = rx.recvmsg(4096, socket.CMSG_SPACE(20))
    status = next((struct.unpack_from("=I", d)[0] for lvl, typ, d in anc if (lvl, typ) == (263, 8)), 0)
    got[data[11]] = bool(status & 0x10)                       # TP_STATUS_VLAN_VALID
print(json.dumps(got))
"""


@pytest.mark.root
@pytest.mark.netns
def test_classic_filter_follows_the_table_on_a_live_veth():
    ns = f"policy-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "pt0", "type", "veth", "peer", "name", "pt1"], ["link", "set", "pt0", "up"],
                    ["link", "set", "pt1", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        sent = [with_source(frame, i).hex() for i, (_, frame, _) in enumerate(ROWS)]
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", RECEIVER, json.dumps(sent),
                               json.dumps([[GROUP, PORT]])], capture_output=True, text=True, cwd=REPO, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert done.returncode == 0, done.stderr
    received = {int(k): tag for k, tag in json.loads(done.stdout).items()}
    assert {name: i in received for i, name in enumerate(IDS)} == EXPECTED
    # the tagged rows took the path that made QinQ vanish: the kernel had moved their outer tag out
    for i, (_, frame, accepted) in enumerate(ROWS):
        if accepted:
            assert received[i] == (frame[12:14] in (b"\x81\x00", b"\x88\xa8")), IDS[i]
