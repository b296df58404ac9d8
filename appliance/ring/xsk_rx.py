"""The AF_XDP receive kernel: takes descriptors off each queue's socket's rx ring in turn and gives the chunks
back through its fill ring (rings and UMEM are set up in ``ring.xsk``).  Only ``xsk_rx_peek`` and ``xsk_rx_release`` touch the
indices the kernel shares with us.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode.wire import le32
from appliance.ring.atomics import CLOCK_MONOTONIC, CLOCK_REALTIME, W_NAPPED, clock_ns, due, idle_wait, \
    kick, load_acquire_u32, store_release_u32
from appliance.ring.deliver import BUDGET, CAP_RING_MALFORMED, CAP_WAKEUPS, IDLE, deliver, room_for_frame

XDP_RING_NEED_WAKEUP = 1
META_SIZE = 16                # struct steer_meta { __u64 rx_ns; __u32 magic; __u32 rx_queue; } (xdp/feed_steer.h)
META_MAGIC_AT = 8

# geom[] slots: word indexes of the shared indices and descriptors, masks, our cached indices
X_RX_PROD, X_RX_CONS, X_RX_DESC, X_RX_MASK = 0, 1, 2, 3
X_FQ_PROD, X_FQ_DESC, X_FQ_MASK, X_FQ_FLAGS = 4, 5, 6, 7
X_CHUNK, X_UMEM_SIZE, X_MONO_TO_REAL, X_MAGIC = 8, 9, 10, 11
X_CONS, X_FQ_NEXT, X_NEED_WAKEUP = 12, 13, 14
X_SIZE = 16
# Frames taken from one queue before the next queue's turn: queues are served nearly in arrival order, so the
# session layer sees A/B lines (and a line a NIC spread over queues) about as they arrived.
QUEUE_TURN = 64


# -- ring ownership: the only functions that touch the shared indices ------------------------------------
@kernel(inline="always")
def xsk_rx_peek(rx_words, geom):
    """Descriptors the kernel has produced that we have not consumed.  Acquire: the descriptor reads that
    follow cannot move above the load of the producer index the kernel released (smp_store_release in
    xskq_prod_submit)."""
    return (load_acquire_u32(rx_words, geom[X_RX_PROD]) - geom[X_CONS]) & 0xFFFFFFFF


@kernel(inline="always")
def xsk_rx_release(rx_words, fq_words, geom):
    """Hand back what we consumed: the chunks we wrote into the fill ring, then the rx slots.  Release: our
    writes of the chunk addresses (and every read of the frames in them) complete before the kernel can see
    the new indices and reuse the chunks."""
    store_release_u32(fq_words, geom[X_FQ_PROD], geom[X_FQ_NEXT])
    store_release_u32(rx_words, geom[X_RX_CONS], geom[X_CONS])
    geom[X_NEED_WAKEUP] = load_acquire_u32(fq_words, geom[X_FQ_FLAGS]) & XDP_RING_NEED_WAKEUP


@kernel(inline="always")
def _drain(umem, rx_words, rx_addr, fq_words, fq_addr, geom, budget, own, pollfds, state):
    """Take up to ``budget`` frames from one socket's rx ring; returns (status, frames)."""
    avail = xsk_rx_peek(rx_words, geom)
    if avail == 0:
        return IDLE, 0
    if avail > budget:
        avail = budget
    chunk_mask = geom[X_CHUNK] - 1
    size = geom[X_UMEM_SIZE]
    status = IDLE
    taken = 0
    while taken < avail:
        slot = geom[X_CONS] & geom[X_RX_MASK]
        d = geom[X_RX_DESC] + 2 * slot                       # xdp_desc as two u64: addr, len | options << 32
        addr = np.int64(rx_addr[d])
        length = np.int64(rx_addr[d + 1] & 0xFFFFFFFF)
        base = addr & ~chunk_mask
        good = 0 <= addr and addr + length <= size and (addr + length - 1) & ~chunk_mask == base and length > 0
        if good:
            full = room_for_frame(length, state)
            if full != 0:
                status = full
                break
            rx_ns = np.int64(0)
            m = addr - META_SIZE
            if m >= base and le32(umem, m + META_MAGIC_AT) == geom[X_MAGIC]:
                rx_ns = np.int64(le32(umem, m)) | (np.int64(le32(umem, m + 4)) << 32)
                umem[m + META_MAGIC_AT] = 0                  # the chunk's next frame may come without one
            real = rx_ns + geom[X_MONO_TO_REAL] if rx_ns != 0 else clock_ns(CLOCK_REALTIME, state.ts)
            deliver(umem, addr, length, length, rx_ns, CLOCK_MONOTONIC, real, -1, state)
        else:
            state.cap[CAP_RING_MALFORMED] += 1
        if 0 <= base < size:
            fq_addr[geom[X_FQ_DESC] + (geom[X_FQ_NEXT] & geom[X_FQ_MASK])] = base
            geom[X_FQ_NEXT] = (geom[X_FQ_NEXT] + 1) & 0xFFFFFFFF
        geom[X_CONS] = (geom[X_CONS] + 1) & 0xFFFFFFFF
        taken += 1
    xsk_rx_release(rx_words, fq_words, geom)
    if geom[X_NEED_WAKEUP] != 0:
        kick(pollfds, own)
    return status, taken


@kernel
def xsk_rx(umems, rx_words, rx_addrs, fq_words, fq_addrs, geoms, budget, wait, pollfds, state):
    """Take up to ``budget`` frames from every socket's rx ring in turn (tuples: one entry per socket, ``geoms``
    one row each), waiting (``idle_wait``) while all are empty, until the deadline in ``wait``; returns (status,
    frames).  One call serves every queue, so frames arriving on several queues cost no trips through Python."""
    done = 0
    n = geoms.shape[0]
    while True:
        got = 0
        for i in range(n):
            status, taken = _drain(umems[i], rx_words[i], rx_addrs[i], fq_words[i], fq_addrs[i], geoms[i],
                                   min(QUEUE_TURN, budget - done), i, pollfds, state)
            got += taken
            done += taken
            if status != IDLE:
                return status, done
            if done >= budget:
                return BUDGET, done
        if got == 0:
            if idle_wait(wait, pollfds, state.ts):
                continue
            state.cap[CAP_WAKEUPS] += 1
            return IDLE, done
        wait[W_NAPPED] = 0
        if due(wait, state.ts):
            return BUDGET, done              # busy past the deadline, or asked to stop
