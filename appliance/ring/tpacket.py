"""AF_PACKET TPACKET_V3 (or V2): the kernel writes frames into blocks of a ring we map; we read them in place.

Layout (linux/if_packet.h).  The ring is ``tp_block_nr`` blocks of ``tp_block_size`` bytes.  Each block starts
with ``struct tpacket_block_desc``::

    __u32 version; __u32 offset_to_priv;
    struct tpacket_hdr_v1 { __u32 block_status; __u32 num_pkts; __u32 offset_to_first_pkt; __u32 blk_len;
                            __aligned_u64 seq_num; struct tpacket_bd_ts ts_first_pkt, ts_last_pkt; }

and holds ``num_pkts`` frames, each behind a ``struct tpacket3_hdr``::

    __u32 tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status; __u16 tp_mac, tp_net;
    struct tpacket_hdr_variant1 { __u32 tp_rxhash, tp_vlan_tci; __u16 tp_vlan_tpid, tp_padding; } hv1;

The kernel fills a block and hands it over (``block_status`` gets ``TP_STATUS_USER``) when it is full or when
the retire timer (``tp_retire_blk_tov`` ms) fires; we give it back by writing ``TP_STATUS_KERNEL``.  When no
block is free the kernel drops the frame and counts it in ``PACKET_STATISTICS`` (``tp_drops``): a full ring is
never silent.  Frames are read where they lie and handed to ``deliver`` (the replay path).

``TpacketRing(version=2)`` sets up a TPACKET_V2 ring instead: the same blocks cut into fixed frame slots, each
handed over on its own as soon as the kernel has written it (layout and kernel in ``ring.tpacket2_rx``): no
retire wait, at the price of a status word, a slot and a wakeup per frame.

Setup and teardown (socket, filter, ring, mmap, bind, fan-out, multicast joins) are in ``TpacketRing``, a
context manager that always unmaps and closes; the kernels ``tpacket_rx`` (``ring.tpacket_rx``) and
``tpacket2_rx`` (``ring.tpacket2_rx``) hold none.
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import socket
import struct
import threading

import numpy as np

from appliance.decode.frames import ETH_P_IP, IPPROTO_UDP, MAX_TAGS, VLAN_TPIDS
from appliance.errors import UserError
from appliance.ring.atomics import no_wait
from appliance.ring import tpacket2_rx as v2
from appliance.ring.tpacket_rx import G_BLOCK_SIZE, G_BLOCKS, G_LEFT, G_SIZE, tpacket_rx

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
TPACKET_V2, TPACKET_V3 = 1, 2
PACKET_MR_PROMISC = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "qm": 5,     # PACKET_FANOUT_HASH, _LB, _CPU, _QM
                "cbpf": 6}                                  # PACKET_FANOUT_CBPF: a program picks the member
SIOCGIFMTU = 0x8921
# Where a TPACKET_V2 slot's frame starts: tpacket_rcv puts the network header at TPACKET_ALIGN(TPACKET2_HDRLEN
# (52: the 32-byte header, aligned, plus a 20-byte sockaddr_ll) + 16) = 80, the 14-byte MAC header before it.
V2_MAC_OFFSET = 66
TAGS_BYTES = 4 * MAX_TAGS                        # VLAN tags left in the data (the MTU does not count them)


def v2_frame_size(ifname: str) -> int:
    """A TPACKET_V2 slot that holds the largest frame ``ifname`` can deliver: the kernel truncates a frame longer
    than its slot.  2048 bytes up to an MTU of 1952, else the next power of two (slots tile the blocks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifreq = fcntl.ioctl(sock, SIOCGIFMTU, struct.pack("16si12x", ifname.encode(), 0))
    finally:
        sock.close()
    need = V2_MAC_OFFSET + 14 + TAGS_BYTES + struct.unpack_from("16xi", ifreq)[0]
    return max(2048, 1 << (need - 1).bit_length())


# -- setup ----------------------------------------------------------------------------------------------
# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h), named as the kernel composes them.
BPF_LD_W_ABS, BPF_LD_H_ABS = 0x20, 0x28
BPF_LD_W_IND, BPF_LD_H_IND, BPF_LD_B_IND, BPF_LD_W_LEN, BPF_LD_MEM = 0x40, 0x48, 0x50, 0x80, 0x60
BPF_LDX_IMM, BPF_LDX_MEM, BPF_ST, BPF_STX = 0x01, 0x61, 0x02, 0x03
BPF_ADD_K, BPF_ADD_X, BPF_AND_K, BPF_LSH_K, BPF_RSH_K, BPF_TAX = 0x04, 0x0C, 0x54, 0x64, 0x74, 0x07
BPF_JA, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_JGT_X, BPF_JGE_X, BPF_RET_K = 0x05, 0x15, 0x35, 0x45, 0x2D, 0x3D, 0x06
SKF_AD_VLAN_TAG_PRESENT = 0xFFFFF000 + 48       # SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT
SNAP_ALL = 0x40000                              # what an accepting filter returns: keep up to 256 KiB
BPF_MAXINSNS = 4096
M_IP, M_IHL, M_TOTAL, M_PORT, M_GROUP = range(5)   # scratch words


def _l2_blocks() -> list[list]:
    """Walk the tags (frames.py's acceptance policy, in full).  On receive the kernel moves a frame's outer
    802.1Q / 802.1ad tag into metadata before taps run, so SKF_AD_VLAN_TAG_PRESENT says whether one tag is
    already used up; the rest are in the data.  Block (s, d): s tags stripped, d tags walked in the data."""
    prog: list[list] = [[BPF_LD_W_ABS, 0, 0, SKF_AD_VLAN_TAG_PRESENT], [BPF_JEQ_K, "t0_0", "t1_0", 0]]
    for stripped in (0, 1):
        for d in range(MAX_TAGS - stripped + 1):
            more = stripped + d < MAX_TAGS
            prog += [["label", f"t{stripped}_{d}"], [BPF_LD_H_ABS, 0, 0, 12 + 4 * d],
                     [BPF_JEQ_K, 0, 2, ETH_P_IP], [BPF_LDX_IMM, 0, 0, 14 + 4 * d], [BPF_JA, 0, 0, "ip"]]
            if more:
                nxt = f"t{stripped}_{d + 1}"
                prog += [[BPF_JEQ_K, nxt, 0, tpid] for tpid in VLAN_TPIDS[:-1]]
                prog += [[BPF_JEQ_K, nxt, "drop", VLAN_TPIDS[-1]]]
            else:
                prog += [[BPF_JA, 0, 0, "drop"]]
    return prog


def _ip_udp_block() -> list[list]:
    """IPv4 at X: version 4, IHL >= 5, UDP, not a fragment, total length >= IHL*4 + 8 and within the frame, UDP
    length >= 8 and within the total length.  A load past the frame's end makes the filter return 0 (drop)."""
    return [["label", "ip"], [BPF_STX, 0, 0, M_IP],
            [BPF_LD_B_IND, 0, 0, 0], [BPF_RSH_K, 0, 0, 4], [BPF_JEQ_K, 0, "drop", 4],
            [BPF_LD_B_IND, 0, 0, 0], [BPF_AND_K, 0, 0, 0x0F], [BPF_JGE_K, 0, "drop", 5],
            [BPF_LSH_K, 0, 0, 2], [BPF_ST, 0, 0, M_IHL],
            [BPF_LD_B_IND, 0, 0, 9], [BPF_JEQ_K, 0, "drop", IPPROTO_UDP],
            [BPF_LD_H_IND, 0, 0, 6], [BPF_JSET_K, "drop", 0, 0x3FFF],           # MF or a fragment offset
            [BPF_LD_H_IND, 0, 0, 2], [BPF_ST, 0, 0, M_TOTAL],
            [BPF_LD_MEM, 0, 0, M_IHL], [BPF_ADD_K, 0, 0, 8], [BPF_TAX, 0, 0, 0],
            [BPF_LD_MEM, 0, 0, M_TOTAL], [BPF_JGE_X, 0, "drop", 0],              # total >= IHL*4 + 8
            [BPF_LDX_MEM, 0, 0, M_TOTAL], [BPF_LD_MEM, 0, 0, M_IP], [BPF_ADD_X, 0, 0, 0], [BPF_TAX, 0, 0, 0],
            [BPF_LD_W_LEN, 0, 0, 0], [BPF_JGE_X, 0, "drop", 0],                  # ip + total <= frame length
            [BPF_LD_MEM, 0, 0, M_IP], [BPF_LDX_MEM, 0, 0, M_IHL], [BPF_ADD_X, 0, 0, 0], [BPF_TAX, 0, 0, 0],
            [BPF_LD_H_IND, 0, 0, 2], [BPF_ST, 0, 0, M_PORT],
            [BPF_LD_H_IND, 0, 0, 4], [BPF_JGE_K, 0, "drop", 8],                  # UDP length >= 8
            [BPF_LDX_MEM, 0, 0, M_IHL], [BPF_ADD_X, 0, 0, 0], [BPF_LDX_MEM, 0, 0, M_TOTAL],
            [BPF_JGT_X, "drop", 0, 0],                                           # IHL*4 + UDP length <= total
            [BPF_LDX_MEM, 0, 0, M_IP], [BPF_LD_W_IND, 0, 0, 16], [BPF_ST, 0, 0, M_GROUP],
            [BPF_JA, 0, 0, "feeds"], ["label", "drop"], [BPF_RET_K, 0, 0, 0]]


def feed_filter(feeds: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program accepting exactly the frames ``decode/frames.py``'s policy accepts as a datagram
    of one of ``feeds`` (tests/test_frame_policy.py holds all three parsers to one table).  Instructions are
    (code, jt, jf, k); jump targets are labels until resolved here."""
    tail = []
    for group, port in feeds:
        tail += [[BPF_LD_MEM, 0, 0, M_GROUP], [BPF_JEQ_K, 0, 3, group], [BPF_LD_MEM, 0, 0, M_PORT],
                 [BPF_JEQ_K, 0, 1, port], [BPF_RET_K, 0, 0, SNAP_ALL]]
    return _policy_filter(tail + [[BPF_RET_K, 0, 0, 0]])


def multicast_filter(snaplen: int) -> list[tuple[int, int, int, int]]:
    """The same policy up to UDP, then any IPv4 multicast group outside 224.0.0.0/24 (link-local control:
    mDNS, SSDP's neighbours -- never a feed), keeping the first ``snaplen`` bytes: what the watcher for a wrong
    ``--feed`` samples (``capture/watch.py``)."""
    return _policy_filter([[BPF_LD_MEM, 0, 0, M_GROUP], [BPF_AND_K, 0, 0, 0xF0000000],
                           [BPF_JEQ_K, 0, 3, 0xE0000000],
                           [BPF_LD_MEM, 0, 0, M_GROUP], [BPF_AND_K, 0, 0, 0xFFFFFF00],
                           [BPF_JEQ_K, 0, 1, 0xE0000000], [BPF_RET_K, 0, 0, 0], [BPF_RET_K, 0, 0, snaplen]])


DROP_ALL = [(BPF_RET_K, 0, 0, 0)]                  # a member holding its place in a fan-out group (``hold``)


def _policy_filter(tail: list[list]) -> list[tuple[int, int, int, int]]:
    """The acceptance policy's tags, IPv4 and UDP checks (group and port left in scratch words), then ``tail``."""
    # The kernel's checker (check_load_and_stores) follows fall-through past a ret, so it would reach the feed
    # block from "drop" with nothing stored: write every scratch word first.
    prog = [[BPF_ST, 0, 0, m] for m in (M_IP, M_IHL, M_TOTAL, M_PORT, M_GROUP)]
    return _resolve(prog + _l2_blocks() + _ip_udp_block() + [["label", "feeds"]] + tail)


def _resolve(prog: list[list]) -> list[tuple[int, int, int, int]]:
    labels, code = {}, []
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = len(code)
        else:
            code.append(ins)
    if len(code) > BPF_MAXINSNS:
        raise UserError("too many --feed lines for one classic BPF filter")
    out = []
    for pc, (op, jt, jf, k) in enumerate(code):
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        k = labels[k] - pc - 1 if isinstance(k, str) else k
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise UserError("too many --feed lines for one classic BPF filter")
        out.append((op, jt, jf, k))
    return out


def _attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    insns = (ctypes.c_uint8 * (8 * len(prog)))()
    struct.pack_into("=" + "HBBI" * len(prog), insns, 0, *[v for ins in prog for v in ins])
    fprog = struct.pack("=HxxxxxxQ", len(prog), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def join_groups(ifname: str, groups: list[int]) -> socket.socket:
    """Join each group on the interface (IGMP) so the NIC's multicast filter passes the feed's MACs; the
    membership lasts as long as the returned UDP socket stays open (it is bound to no port: it receives
    nothing)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifindex = socket.if_nametoindex(ifname)
        for group in sorted(set(groups)):
            mreqn = struct.pack("=4s4si", group.to_bytes(4, "big"), b"\0\0\0\0", ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot join the feed's multicast groups on {ifname}: {os.strerror(err.errno)}") from None
    return sock


class TpacketRing:
    """One TPACKET_V3 (``version=3``) or TPACKET_V2 (``version=2``) receive ring on ``ifname``; ``with
    TpacketRing(...) as ring`` maps it, exit unmaps it.  ``frame_size`` is V2's slot size (None: from the MTU)."""

    def __init__(self, ifname: str, feeds: list[tuple[int, int]], block_size: int = 1 << 20, blocks: int = 64,
                 retire_ms: int = 2, fanout: tuple[int, str] | None = None, frame_size: int | None = None,
                 hold: bool = False, version: int = 3):
        if block_size % mmap.PAGESIZE or block_size & (block_size - 1):
            raise UserError(f"--block-size {block_size} must be a power of two and a multiple of the page size")
        if not 0 < retire_ms < 60_000:
            raise UserError("--retire-ms must be between 1 and 59999")
        if version not in (2, 3):
            raise UserError(f"TPACKET version {version}: 2 or 3")
        self.ifname, self.feeds, self.version = ifname, feeds, version
        self.block_size, self.blocks, self.retire_ms = block_size, blocks, retire_ms
        self.frame_size, self.fanout, self.holding = frame_size, fanout, hold
        self.sock: socket.socket | None = None
        self.igmp: socket.socket | None = None
        self.map: mmap.mmap | None = None
        self.ring = self.words = None
        self.geom = np.zeros(max(G_SIZE, v2.G2_SIZE), np.int64)
        self.drops = self.packets = self.freezes = 0
        self._stats_lock = threading.Lock()

    def __enter__(self) -> "TpacketRing":
        try:
            self.ifindex = socket.if_nametoindex(self.ifname)
        except OSError:
            raise UserError(f"interface {self.ifname!r} does not exist") from None
        if self.frame_size is None:
            self.frame_size = v2_frame_size(self.ifname) if self.version == 2 else 2048
        if self.frame_size > self.block_size:
            raise UserError(f"--block-size {self.block_size} cannot hold a {self.frame_size}-byte frame slot")
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        self.sock = sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # receives nothing until bind
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3 if self.version == 3 else TPACKET_V2)
        if self.holding:
            _attach_filter(sock, DROP_ALL)
        elif self.feeds:
            _attach_filter(sock, feed_filter(self.feeds))
        per_block = self.block_size // self.frame_size
        req = struct.pack("=4I", self.block_size, self.blocks, self.frame_size, per_block * self.blocks)
        if self.version == 3:                              # struct tpacket_req3: tpacket_req and three more
            req += struct.pack("=3I", self.retire_ms, 0, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        except OSError as err:
            raise UserError(f"the kernel refused a TPACKET_V{self.version} ring of {self.blocks} x {self.block_size} "
                            f"bytes: {os.strerror(err.errno)}") from None
        size = self.block_size * self.blocks
        self.map = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.ring = np.frombuffer(self.map, np.uint8)
        self.words = np.frombuffer(self.map, np.uint32)
        self.geom[:] = 0
        if self.version == 3:
            self.geom[G_BLOCK_SIZE], self.geom[G_BLOCKS], self.geom[G_LEFT] = self.block_size, self.blocks, -1
        else:
            self.geom[[v2.G2_BLOCK_SIZE, v2.G2_PER_BLOCK, v2.G2_FRAME_SIZE, v2.G2_FRAMES]] = \
                self.block_size, per_block, self.frame_size, per_block * self.blocks
        sock.bind((self.ifname, ETH_P_ALL))
        if self.fanout is not None:
            group_id, mode = self.fanout
            flags = PACKET_FANOUT_FLAG_UNIQUEID if group_id == 0 else 0    # 0: the kernel picks an unused id
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group_id & 0xFFFF) | ((FANOUT_MODES[mode] | flags) << 16))
            # getsockopt(PACKET_FANOUT) = id | (type | flags << 8) << 16: the id the kernel gave
            self.fanout = (struct.unpack("=I", sock.getsockopt(SOL_PACKET, PACKET_FANOUT, 4))[0] & 0xFFFF, mode)
        self.stats()                                       # PACKET_STATISTICS resets on read: start from zero
        self.packets = self.drops = self.freezes = 0
        if self.feeds:
            self.igmp = join_groups(self.ifname, [g for g, _ in self.feeds])

    def release(self) -> None:
        """Start taking the feed: a ring opened with ``hold`` joined its fan-out group with a filter that keeps
        nothing, so that every member can join before the kernel hands any frame out.  The group's flow-hash ->
        member mapping depends on how many members there are: a frame accepted while members were still joining
        would put the start of a line on one worker and the rest on another."""
        if self.holding:
            _attach_filter(self.sock, feed_filter(self.feeds) if self.feeds else [(BPF_RET_K, 0, 0, SNAP_ALL)])
            self.holding = False

    def hold(self) -> None:
        """Stop taking frames but stay in the fan-out group (the mirror of ``release``): a member that left while
        another still took frames would hand its lines' last frames to that one."""
        _attach_filter(self.sock, DROP_ALL)
        self.holding = True

    def steer_to(self, member: int) -> None:
        """A ``cbpf`` fan-out group: from the next frame on, every frame goes to member ``member`` (the kernel takes
        the program's return value modulo the number of members; members are numbered in the order they joined,
        and one that leaves is replaced by the last).  PACKET_FANOUT_DATA swaps the group's program with
        rcu_assign_pointer and then waits in synchronize_net() (net/packet/af_packet.c, __fanout_set_data_bpf):
        when this returns, every frame the old program sent elsewhere is already in that member's ring."""
        prog = [(BPF_RET_K, 0, 0, member)]
        insns = (ctypes.c_uint8 * 8)()
        struct.pack_into("=HBBI", insns, 0, *prog[0])
        self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, struct.pack("=HxxxxxxQ", 1, ctypes.addressof(insns)))

    def receive(self, budget, state, wait=None, pollfds=None):
        """Run the ring kernel once on ``state`` (a ``deliver.RxState``); returns (status, frames).  Without
        ``wait`` it does not wait."""
        if wait is None:
            wait, pollfds = no_wait([self.fileno()])
        rx = tpacket_rx if self.version == 3 else v2.tpacket2_rx
        return rx(self.ring, self.words, self.geom, budget, wait, pollfds, state)

    def fileno(self) -> int:
        return self.sock.fileno()

    def filenos(self) -> list[int]:
        return [self.sock.fileno()]

    def socket_errors(self) -> list[int]:
        """SO_ERROR of the socket (reading it clears it)."""
        return [self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]

    def stats(self) -> dict[str, int]:
        """Totals since open: the kernel's counters reset each time they are read, so they are summed here (under
        a lock: the control thread and a metrics scrape may both read)."""
        with self._stats_lock:
            return self._stats()

    def _stats(self) -> dict[str, int]:
        if self.sock is not None:
            # struct tpacket_stats_v3 {tp_packets, tp_drops, tp_freeze_q_cnt}; V2's struct tpacket_stats lacks
            # the third (no block to freeze)
            size = 12 if self.version == 3 else 8
            packets, drops, freezes = struct.unpack("=3I", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                                                 size).ljust(12, b"\0"))
            self.packets += packets
            self.drops += drops
            self.freezes += freezes
        return {"kernel_packets": self.packets, "ring_drops": self.drops, "ring_freezes": self.freezes}

    def close(self) -> None:
        if self.sock is not None:
            self.stats()
        self.ring = self.words = None                      # numpy views must go before the mapping
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.igmp is not None:
            self.igmp.close()
            self.igmp = None

    def __exit__(self, *exc) -> None:
        self.close()
