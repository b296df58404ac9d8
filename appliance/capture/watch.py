"""Which multicast lines reach the interface while the feed does not: the hint for a wrong ``--feed``.

A capture pointed at the wrong group or port receives nothing and, without this, says nothing.  While no frame
of the feed has arrived, ``MulticastWatch`` samples the IPv4 UDP multicast datagrams the interface delivers
(an AF_PACKET socket whose classic BPF filter, the acceptance policy up to UDP, keeps only multicast outside
224.0.0.0/24 and only their first ``SNAPLEN`` bytes) and counts them per (group, port).  It is closed at the
first feed frame, so a capture that works pays for it only until the feed starts.

It is a sample, not a census: it reads at most ``BUDGET`` datagrams a tick into a small socket buffer (the
kernel drops the rest), so its counts are lower bounds.  It does not put the interface into all-multicast mode:
on a NIC it sees the groups the interface already receives (joined here or by another process, or passed by the
NIC's filter or an unsnooped switch); on veth, everything sent to it.  Under AF_XDP it sees what the XDP program
passed on, which is every frame that is not the feed.
"""
from __future__ import annotations

import ipaddress
import socket
import time

from appliance.decode.frames import ETH_P_IP, IPPROTO_UDP, MAX_TAGS, VLAN_TPIDS
from appliance.ring.tpacket import ETH_P_ALL, _attach_filter, multicast_filter

SNAPLEN = 128                 # Ethernet, 4 tags, the longest IPv4 header, the UDP ports: 94 bytes
BUDGET = 1024                 # datagrams read per tick at most
RCVBUF = 256 << 10
MAX_LINES = 64                # (group, port) pairs counted one by one; beyond, only their total
PACKET_OUTGOING = 4           # linux/if_packet.h: a frame this host sent (the tap sees both directions)


def group_port(frame: bytes) -> tuple[int, int] | None:
    """(group, destination port) of an Ethernet frame carrying IPv4 UDP, lengths checked before each read
    (the kernel filtered already; the frame is still treated as hostile)."""
    pos, tags = 12, 0
    while pos + 2 <= len(frame) and int.from_bytes(frame[pos:pos + 2], "big") in VLAN_TPIDS and tags < MAX_TAGS:
        pos, tags = pos + 4, tags + 1
    if pos + 2 > len(frame) or int.from_bytes(frame[pos:pos + 2], "big") != ETH_P_IP:
        return None
    ip = pos + 2
    if ip + 20 > len(frame) or frame[ip + 9] != IPPROTO_UDP:
        return None
    udp = ip + (frame[ip] & 0x0F) * 4
    if udp + 4 > len(frame):
        return None
    return int.from_bytes(frame[ip + 16:ip + 20], "big"), int.from_bytes(frame[udp + 2:udp + 4], "big")


class MulticastWatch:
    """``with MulticastWatch(iface) as watch``: ``drain()`` each tick until ``close()`` (first feed frame)."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.sock: socket.socket | None = None
        self.lines: dict[tuple[int, int], int] = {}
        self.other_lines = self.other_frames = 0
        self.opened = self.seconds = 0.0
        self.until = "end"

    def __enter__(self) -> "MulticastWatch":
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)     # receives nothing until bound
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            _attach_filter(sock, multicast_filter(SNAPLEN))
            sock.bind((self.ifname, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock, self.opened = sock, time.monotonic()
        return self

    def drain(self) -> None:
        for _ in range(BUDGET):
            try:
                frame, addr = self.sock.recvfrom(SNAPLEN)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:                     # the interface went away: the capture notices it itself
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            line = group_port(frame)
            if line is not None:
                self.count(line)

    def count(self, line: tuple[int, int]) -> None:
        if line in self.lines or len(self.lines) < MAX_LINES:
            self.lines[line] = self.lines.get(line, 0) + 1
        else:
            self.other_frames += 1

    def close(self, until: str = "end") -> None:
        """Stop watching (``until``: why -- "first_feed_frame" or "end"); idempotent."""
        if self.sock is not None:
            self.drain()
            self.sock.close()
            self.sock = None
            self.seconds = time.monotonic() - self.opened
            self.until = until

    @property
    def watching(self) -> bool:
        return self.sock is not None

    def __exit__(self, *exc) -> None:
        self.close()

    def result(self) -> dict:
        """For summary.json: the lines seen, most frames first."""
        ranked = sorted(self.lines.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"lines": [{"group": str(ipaddress.IPv4Address(g)), "port": p, "frames": n} for (g, p), n in ranked],
                "other_frames": self.other_frames, "seconds": round(self.seconds, 3), "until": self.until}


def no_feed_sentence(feeds: list[str], iface: str, seen: dict, fanout: bool) -> str:
    """What to tell the operator when no frame of the feed arrived, from ``result()`` (or a merge of several)."""
    wanted = ", ".join(feeds)
    head = f"no frame of the feed ({wanted}) arrived on {iface} in {seen['seconds']:,.1f} s"
    lines = seen["lines"]
    if not lines and not seen["other_frames"]:
        return head + "; no IPv4 UDP multicast arrived there at all (is the feed routed to this interface?)"
    shown = ", ".join(f"{ln['group']}:{ln['port']} ({ln['frames']:,} frames)" for ln in lines[:8])
    more = len(lines) - 8 + (1 if seen["other_frames"] else 0)
    hint = "; check --feed" + (" (other members of the fan-out group may have taken the feed)" if fanout else "")
    return f"{head}; multicast that did arrive (sampled): {shown}" + (f" and {more} more" if more > 0 else "") + hint


def merge(results: list[dict]) -> dict:
    """One view of several watchers that watched the same interface (fan-out workers): the largest count per
    line, not the sum -- each saw the same datagrams."""
    lines: dict[tuple[str, int], int] = {}
    for r in results:
        for ln in r.get("lines", []):
            key = (ln["group"], ln["port"])
            lines[key] = max(lines.get(key, 0), ln["frames"])
    ranked = sorted(lines.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"lines": [{"group": g, "port": p, "frames": n} for (g, p), n in ranked],
            "other_frames": max((r.get("other_frames", 0) for r in results), default=0),
            "seconds": max((r.get("seconds", 0.0) for r in results), default=0.0),
            "until": "end"}
