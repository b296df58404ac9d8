"""The TPACKET_V2 receive kernel: takes frames one slot at a time (ring set up by ``ring.tpacket``, version 2).

Layout (linux/if_packet.h).  The ring is ``tp_block_nr`` blocks of ``tp_block_size`` bytes, each cut into
``tp_block_size / tp_frame_size`` frame slots (a slot never spans two blocks); slot ``i`` is slot ``i % per_block``
of block ``i / per_block``, as the kernel's packet_lookup_frame() finds it.  Each slot starts with
``struct tpacket2_hdr``::

    __u32 tp_status, tp_len, tp_snaplen; __u16 tp_mac, tp_net; __u32 tp_sec, tp_nsec;
    __u16 tp_vlan_tci, tp_vlan_tpid; __u8 tp_padding[4];

followed by a ``struct sockaddr_ll`` and, at ``tp_mac`` from the slot's start, the frame (``tp_snaplen`` bytes of
``tp_len``).  Ownership is per slot: the kernel writes a frame into the next slot whose ``tp_status`` is
``TP_STATUS_KERNEL`` and then sets ``TP_STATUS_USER`` (plus flags) in it -- the frame is ours the moment it has
landed, with no block to fill or retire timer to wait for; we give the slot back by writing
``TP_STATUS_KERNEL``.  When the next slot is still ours the kernel drops the frame and counts it in
``PACKET_STATISTICS`` (``tp_drops``).  The kernel fills slots in order, so we read them in order.  Only
``user_owns_frame`` and ``release_frame`` touch ``tp_status``.

The price of per-frame ownership: one status word, one kernel wakeup (``sk_data_ready``) per frame and a fixed
slot per frame (``tp_frame_size`` bytes however short the frame), where TPACKET_V3 hands over a block of
packed frames at once -- see the README's Capture section for the measured trade-off.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode.wire import le16, le32
from appliance.ring.atomics import CLOCK_REALTIME, W_NAPPED, due, \
    idle_wait, load_acquire_u32, store_release_u32
from appliance.ring.deliver import BUDGET, CAP_RING_MALFORMED, CAP_WAKEUPS, IDLE, deliver, room_for_frame

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
HDR2 = 32                   # sizeof(struct tpacket2_hdr)
OFF_LEN, OFF_SNAPLEN, OFF_MAC, OFF_SEC, OFF_NSEC, OFF_VLAN_TCI, OFF_VLAN_TPID = 4, 8, 12, 16, 20, 24, 26
DEADLINE_EVERY = 64         # frames between looks at the clock while the ring stays full (a power of two)

# geom[] slots the kernel keeps between calls
G2_BLOCK_SIZE, G2_PER_BLOCK, G2_FRAME_SIZE, G2_FRAMES, G2_NEXT = range(5)
G2_SIZE = 8


# -- ring ownership: the only two functions that touch tp_status -------------------------------------------
@kernel(inline="always")
def user_owns_frame(words, base):
    """The slot at byte ``base``'s status word if the slot is ours (TP_STATUS_USER set; the other bits are the
    frame's flags), else 0.  Acquire: none of our reads of the slot's header or frame may happen before we saw
    TP_STATUS_USER, which the kernel stores after writing them (tpacket_rcv: smp_mb() after the copy, then
    __packet_set_status: WRITE_ONCE of tp_status followed by smp_wmb())."""
    status = load_acquire_u32(words, base >> 2)
    return status if status & TP_STATUS_USER else 0


@kernel(inline="always")
def release_frame(words, base):
    """Give the slot back.  Release: every read of its frame happens before the kernel can see TP_STATUS_KERNEL
    (its READ_ONCE in __packet_get_status, when it looks for the next free slot) and overwrite it."""
    store_release_u32(words, base >> 2, TP_STATUS_KERNEL)


@kernel(inline="always")
def _slot(geom, i):
    return (i // geom[G2_PER_BLOCK]) * geom[G2_BLOCK_SIZE] + (i % geom[G2_PER_BLOCK]) * geom[G2_FRAME_SIZE]


@kernel
def tpacket2_rx(ring, words, geom, budget, wait, pollfds, state):
    """Take up to ``budget`` frames, slot by slot, waiting (``idle_wait``) while the next slot is not ours, until
    the deadline in ``wait``; returns (status, frames).  A frame that does not fit the outputs stays on its
    slot (not released) and is taken on the next call.  A slot whose header points outside it is counted as
    malformed and given back."""
    fsize = geom[G2_FRAME_SIZE]
    cap, ts = state.cap, state.ts
    done = 0
    while True:
        base = _slot(geom, geom[G2_NEXT])
        status = user_owns_frame(words, base)
        if status == 0:
            if idle_wait(wait, pollfds, ts):
                continue
            cap[CAP_WAKEUPS] += 1
            return IDLE, done
        wait[W_NAPPED] = 0
        if done >= budget:
            return BUDGET, done
        if done > 0 and done & (DEADLINE_EVERY - 1) == 0 and due(wait, ts):
            return BUDGET, done                  # the ring never emptied (deadline), or asked to stop
        snap = le32(ring, base + OFF_SNAPLEN)
        mac = base + le16(ring, base + OFF_MAC)
        if mac < base + HDR2 or mac + snap > base + fsize:
            cap[CAP_RING_MALFORMED] += 1
        else:
            full = room_for_frame(snap, state)
            if full != 0:
                return full, done
            real_ns = np.int64(le32(ring, base + OFF_SEC)) * 1_000_000_000 + le32(ring, base + OFF_NSEC)
            vlan = -1
            if status & TP_STATUS_VLAN_VALID:
                tpid = le16(ring, base + OFF_VLAN_TPID) if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                vlan = (tpid << 16) | le16(ring, base + OFF_VLAN_TCI)
            deliver(ring, mac, snap, le32(ring, base + OFF_LEN), real_ns, CLOCK_REALTIME, real_ns, vlan, state)
            done += 1
        release_frame(words, base)
        geom[G2_NEXT] = (geom[G2_NEXT] + 1) % geom[G2_FRAMES]
