"""AF_PACKET TPACKET_V3: the kernel writes frames into blocks of a ring we map; we read them in place.

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

Setup and teardown (socket, filter, ring, mmap, bind, fan-out, multicast joins) are in ``TpacketRing``, a
context manager that always unmaps and closes; the kernel ``tpacket_rx`` (``ring.tpacket_rx``) holds none.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct

import numpy as np

from appliance.errors import UserError
from appliance.ring.atomics import no_wait
from appliance.ring.tpacket_rx import G_BLOCK_SIZE, G_BLOCKS, G_LEFT, G_SIZE, tpacket_rx

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "qm": 5}     # PACKET_FANOUT_HASH, _LB, _CPU, _QM




# -- setup ----------------------------------------------------------------------------------------------
def feed_filter(feeds: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program accepting IPv4 UDP datagrams (first fragments included) to any (group, port) in
    ``feeds``.  The kernel has already moved a frame's first VLAN tag out of the data when taps see it, so the
    EtherType is at offset 12.  Instructions are (code, jt, jf, k)."""
    ld_h, ld_b, ld_w, ld_ind_h, ldx_msh = 0x28, 0x30, 0x20, 0x48, 0xB1
    jeq, jset, ret = 0x15, 0x45, 0x06
    prog: list[list] = [[ld_h, 0, "drop", 12], [jeq, 0, "drop", 0x0800], [ld_b, 0, "drop", 23],
                        [jeq, 0, "drop", 17], [ld_h, 0, 0, 20], [jset, "drop", 0, 0x1FFF]]
    for i, (group, port) in enumerate(feeds):
        nxt = f"f{i + 1}" if i + 1 < len(feeds) else "drop"
        prog += [["label", f"f{i}"], [ld_w, 0, 0, 30], [jeq, 0, nxt, group], [ldx_msh, 0, 0, 14],
                 [ld_ind_h, 0, 0, 16], [jeq, "accept", nxt, port]]
    prog += [["label", "drop"], [ret, 0, 0, 0], ["label", "accept"], [ret, 0, 0, 0x40000]]
    labels, code = {}, []
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = len(code)
        else:
            code.append(ins)
    out = []
    for pc, (op, jt, jf, k) in enumerate(code):
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
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
    """One TPACKET_V3 receive ring on ``ifname``; ``with TpacketRing(...) as ring`` maps it, exit unmaps it."""

    def __init__(self, ifname: str, feeds: list[tuple[int, int]], block_size: int = 1 << 20, blocks: int = 64,
                 retire_ms: int = 2, fanout: tuple[int, str] | None = None, frame_size: int = 2048):
        if block_size % mmap.PAGESIZE or block_size & (block_size - 1):
            raise UserError(f"--block-size {block_size} must be a power of two and a multiple of the page size")
        if not 0 < retire_ms < 60_000:
            raise UserError("--retire-ms must be between 1 and 59999")
        self.ifname, self.feeds = ifname, feeds
        self.block_size, self.blocks, self.retire_ms = block_size, blocks, retire_ms
        self.frame_size, self.fanout = frame_size, fanout
        self.sock: socket.socket | None = None
        self.igmp: socket.socket | None = None
        self.map: mmap.mmap | None = None
        self.ring = self.words = None
        self.geom = np.zeros(G_SIZE, np.int64)
        self.drops = self.packets = self.freezes = 0

    def __enter__(self) -> "TpacketRing":
        try:
            self.ifindex = socket.if_nametoindex(self.ifname)
        except OSError:
            raise UserError(f"interface {self.ifname!r} does not exist") from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        self.sock = sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # receives nothing until bind
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        if self.feeds:
            _attach_filter(sock, feed_filter(self.feeds))
        req = struct.pack("=7I", self.block_size, self.blocks, self.frame_size,
                          self.block_size * self.blocks // self.frame_size, self.retire_ms, 0, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        except OSError as err:
            raise UserError(f"the kernel refused a TPACKET_V3 ring of {self.blocks} x {self.block_size} bytes: "
                            f"{os.strerror(err.errno)}") from None
        size = self.block_size * self.blocks
        self.map = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.ring = np.frombuffer(self.map, np.uint8)
        self.words = np.frombuffer(self.map, np.uint32)
        self.geom[:] = 0
        self.geom[G_BLOCK_SIZE], self.geom[G_BLOCKS], self.geom[G_LEFT] = self.block_size, self.blocks, -1
        sock.bind((self.ifname, ETH_P_ALL))
        if self.fanout is not None:
            group_id, mode = self.fanout
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group_id & 0xFFFF) | (FANOUT_MODES[mode] << 16))
        self.stats()                                       # PACKET_STATISTICS resets on read: start from zero
        self.packets = self.drops = self.freezes = 0
        if self.feeds:
            self.igmp = join_groups(self.ifname, [g for g, _ in self.feeds])

    def receive(self, budget, decoder, cap, hist, rec, rec_meta, ts, wait=None, pollfds=None):
        """Run the ring kernel once; returns (status, frames).  Without ``wait`` it does not wait."""
        if wait is None:
            wait, pollfds = no_wait([self.fileno()])
        return tpacket_rx(self.ring, self.words, self.geom, budget, wait, pollfds, decoder.mold, decoder.book,
                          decoder.out, decoder.cnt, decoder.by_type, cap, hist, rec, rec_meta, ts)

    def fileno(self) -> int:
        return self.sock.fileno()

    def filenos(self) -> list[int]:
        return [self.sock.fileno()]

    def socket_errors(self) -> list[int]:
        """SO_ERROR of the socket (reading it clears it)."""
        return [self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]

    def stats(self) -> dict[str, int]:
        """Totals since open: the kernel's counters reset each time they are read, so they are summed here."""
        if self.sock is not None:
            packets, drops, freezes = struct.unpack("=3I", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
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
