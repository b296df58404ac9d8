"""The TPACKET_V3 receive kernel: walks the blocks the kernel handed over (layout in ``ring.tpacket``).

The kernel fills a block and hands it over (``block_status`` gets ``TP_STATUS_USER``) when it is full or when
the retire timer fires; we give it back by writing ``TP_STATUS_KERNEL``.  Only ``user_owns_block`` and
``release_block`` touch that word.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode.frames import ETH_P_8021Q
from appliance.decode.wire import le16, le32
from appliance.ring.atomics import CLOCK_REALTIME, W_NAPPED, due, \
    idle_wait, load_acquire_u32, store_release_u32
from appliance.ring.deliver import BUDGET, CAP_BLOCKS, CAP_RING_MALFORMED, CAP_WAKEUPS, IDLE, deliver, \
    room_for_frame

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

# Offsets of the kernel structs' fields (include/uapi/linux/if_packet.h), read in place in the ring::
#
#   struct tpacket_block_desc {
#       __u32 version;
#       __u32 offset_to_priv;
#       union tpacket_bd_header_u hdr;     /* hdr.bh1: struct tpacket_hdr_v1, from byte 8 */
#   };
#   struct tpacket_hdr_v1 {
#       __u32 block_status;                /* @8 of the block */
#       __u32 num_pkts;                    /* @12 */
#       __u32 offset_to_first_pkt;         /* @16 */
#       __u32 blk_len;
#       __aligned_u64 seq_num;
#       struct tpacket_bd_ts ts_first_pkt, ts_last_pkt;
#   };
#   struct tpacket3_hdr {
#       __u32 tp_next_offset;              /* @0 */
#       __u32 tp_sec;                      /* @4 */
#       __u32 tp_nsec;                     /* @8 */
#       __u32 tp_snaplen;                  /* @12 */
#       __u32 tp_len;                      /* @16 */
#       __u32 tp_status;                   /* @20 */
#       __u16 tp_mac;                      /* @24 */
#       __u16 tp_net;
#       union {
#           struct tpacket_hdr_variant1 {
#               __u32 tp_rxhash;
#               __u32 tp_vlan_tci;         /* @32 */
#               __u16 tp_vlan_tpid;        /* @36 */
#               __u16 tp_padding;
#           } hv1;
#       };
#       __u8 tp_padding[8];
#   };
BLOCK_DESC = 48             # sizeof(struct tpacket_block_desc) rounded as the kernel lays out the first frame
HDR3 = 48                   # sizeof(struct tpacket3_hdr) including its padding
OFF_BLOCK_STATUS, OFF_NUM_PKTS, OFF_FIRST_PKT = 8, 12, 16
OFF_TP_NEXT_OFFSET, OFF_TP_SEC, OFF_TP_NSEC, OFF_TP_SNAPLEN, OFF_TP_LEN, OFF_TP_STATUS = 0, 4, 8, 12, 16, 20
OFF_TP_MAC, OFF_TP_VLAN_TCI, OFF_TP_VLAN_TPID = 24, 32, 36

# geom[] slots the kernel keeps between calls
G_BLOCK_SIZE, G_BLOCKS, G_BLOCK, G_LEFT, G_POS = range(5)
G_SIZE = 8


# -- ring ownership: the only two functions that touch block_status ----------------------------------------
@kernel(inline="always")
def user_owns_block(words, base):
    """The block at byte ``base`` is ours.  Acquire: none of our reads of its frames may happen before we saw
    the kernel's TP_STATUS_USER, which the kernel stores after writing them (smp_wmb in prb_close_block)."""
    return (load_acquire_u32(words, (base + OFF_BLOCK_STATUS) >> 2) & TP_STATUS_USER) != 0


@kernel(inline="always")
def release_block(words, base):
    """Give the block back.  Release: every read of its frames happens before the kernel can see it free and
    overwrite them."""
    store_release_u32(words, (base + OFF_BLOCK_STATUS) >> 2, TP_STATUS_KERNEL)


@kernel
def tpacket_rx(ring, words, geom, budget, wait, pollfds, state):
    """Take up to ``budget`` frames, block by block, waiting (``idle_wait``) while no block is ours, until the
    deadline in ``wait``; returns (status, frames).  A block is released when its last frame is done; a stop in
    the middle of one (budget, full output) resumes at the saved frame."""
    bsize = geom[G_BLOCK_SIZE]
    cap, ts = state.cap, state.ts
    done = 0
    while True:
        base = geom[G_BLOCK] * bsize
        if geom[G_LEFT] < 0:
            if not user_owns_block(words, base):
                if idle_wait(wait, pollfds, ts):
                    continue
                cap[CAP_WAKEUPS] += 1
                return IDLE, done
            wait[W_NAPPED] = 0
            if done > 0 and due(wait, ts):
                return BUDGET, done              # busy past the deadline, or asked to stop
            first = le32(ring, base + OFF_FIRST_PKT)
            geom[G_LEFT] = le32(ring, base + OFF_NUM_PKTS)
            geom[G_POS] = base + first
            cap[CAP_BLOCKS] += 1
        end = base + bsize
        while geom[G_LEFT] > 0:
            p = geom[G_POS]
            if p < base + BLOCK_DESC or p + HDR3 > end:
                cap[CAP_RING_MALFORMED] += 1
                break
            snap = le32(ring, p + OFF_TP_SNAPLEN)
            mac = p + le16(ring, p + OFF_TP_MAC)
            if mac < p + HDR3 or mac + snap > end:
                cap[CAP_RING_MALFORMED] += 1
                break
            if done >= budget:
                return BUDGET, done
            full = room_for_frame(snap, state)
            if full != 0:
                return full, done
            real_ns = np.int64(le32(ring, p + OFF_TP_SEC)) * 1_000_000_000 + le32(ring, p + OFF_TP_NSEC)
            status = le32(ring, p + OFF_TP_STATUS)
            vlan = -1
            if status & TP_STATUS_VLAN_VALID:
                tpid = le16(ring, p + OFF_TP_VLAN_TPID) if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                vlan = (tpid << 16) | (le32(ring, p + OFF_TP_VLAN_TCI) & 0xFFFF)
            deliver(ring, mac, snap, le32(ring, p + OFF_TP_LEN), real_ns, CLOCK_REALTIME, real_ns, vlan, state)
            done += 1
            geom[G_LEFT] -= 1
            nxt = le32(ring, p + OFF_TP_NEXT_OFFSET)
            if geom[G_LEFT] > 0 and nxt == 0:
                cap[CAP_RING_MALFORMED] += 1
                break
            geom[G_POS] = p + nxt
        release_block(words, base)
        geom[G_LEFT] = -1
        geom[G_BLOCK] = (geom[G_BLOCK] + 1) % geom[G_BLOCKS]
