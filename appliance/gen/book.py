"""The generator's own order book: which orders are live, and the best-priced, oldest one on each side.

The generator may only cancel, replace or execute orders that are live here, and executions must take the
order a matching engine would: the oldest at the best price (price-time priority).  So each instrument side
has a ladder of ``LADDER`` price levels one tick apart, each level a FIFO of order indices, plus its best
level.  Order references are dense (reference = ``REF_BASE`` + order index), so orders live in one flat
table indexed by creation order and a "recent" order is simply a high index.

Removal is lazy: a deleted order stays linked in its level's FIFO with zero shares and is skipped when it
reaches the front; the level's live count says when the level is empty (its FIFO is then reset).  That keeps
delete O(1) with one link per order.  Order indices are never reused, so a stale link is never ambiguous.

Layout is for the cache: the generator is bound by memory latency (a random instrument, an old order), so
each order's fields share one 16-byte row and each level's head, tail and count share 12 bytes.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from appliance._jit import kernel

LADDER = 1024            # price levels per instrument side: +-512 cents around the opening price
REF_BASE = 1             # order reference of the first order of the day
BUY, SELL = 0, 1
ROW, LEVEL, SHARES, NEXT = range(4)          # orders[o]: side row (2 * stock + side), level, shares, FIFO link
HEAD, TAIL, COUNT = range(3)                 # ladder[row, level]
BEST, DEPTH = range(2)                       # sides[row]: best level (-1 = empty side), live orders on the side
ORDERS, LIVE, LAST_REPLACE, TARGET_LIVE = range(4)

Book = namedtuple("Book", [
    "orders",       # int32[cap, 4]: ROW, LEVEL, SHARES (0 once gone), NEXT (-1 at a FIFO's tail)
    "ladder",       # int32[2 * n, LADDER, 3]: HEAD, TAIL (-1 when empty), COUNT of live orders
    "sides",        # int32[2 * n, 2]: BEST, DEPTH
    "counters",     # int64[4]: ORDERS created, LIVE now, LAST_REPLACE (order made by the last U), TARGET_LIVE
])


def new_book(capacity: int, instruments: int, target_live: int) -> Book:
    rows = 2 * instruments
    ladder = np.zeros((rows, LADDER, 3), np.int32)
    ladder[:, :, HEAD:TAIL + 1] = -1
    sides = np.zeros((rows, 2), np.int32)
    sides[:, BEST] = -1
    counters = np.array([0, 0, -1, target_live], np.int64)
    return Book(orders=np.zeros((capacity, 4), np.int32), ladder=ladder, sides=sides, counters=counters)


@kernel(inline="always")
def stock_of(bk, o):
    return np.int64(bk.orders[o, ROW]) >> 1


@kernel(inline="always")
def side_of(bk, o):
    return np.int64(bk.orders[o, ROW]) & 1


@kernel(inline="always")
def best_level(bk, stock, side):
    return np.int64(bk.sides[2 * stock + side, BEST])


@kernel(inline="always")
def enqueue(bk, stock, side, level, shares):
    """Create the next order at the back of its level's queue; returns its index."""
    o = bk.counters[ORDERS]
    bk.counters[ORDERS] = o + 1
    bk.counters[LIVE] += 1
    row = 2 * stock + side
    bk.orders[o, ROW] = row
    bk.orders[o, LEVEL] = level
    bk.orders[o, SHARES] = shares
    bk.orders[o, NEXT] = -1
    tail = bk.ladder[row, level, TAIL]
    if tail < 0:
        bk.ladder[row, level, HEAD] = o
    else:
        bk.orders[tail, NEXT] = o
    bk.ladder[row, level, TAIL] = o
    bk.ladder[row, level, COUNT] += 1
    bk.sides[row, DEPTH] += 1
    best = bk.sides[row, BEST]
    if best < 0 or (side == BUY and level > best) or (side == SELL and level < best):
        bk.sides[row, BEST] = level
    return o


@kernel(inline="always")
def remove(bk, o):
    """Take a live order off the book (delete, or the last share executed)."""
    row = np.int64(bk.orders[o, ROW])
    level = np.int64(bk.orders[o, LEVEL])
    bk.orders[o, SHARES] = 0
    bk.counters[LIVE] -= 1
    bk.sides[row, DEPTH] -= 1
    bk.ladder[row, level, COUNT] -= 1
    if bk.ladder[row, level, COUNT] > 0:
        return
    bk.ladder[row, level, HEAD] = -1
    bk.ladder[row, level, TAIL] = -1
    if bk.sides[row, BEST] != level:
        return
    if bk.sides[row, DEPTH] == 0:
        bk.sides[row, BEST] = -1
        return
    step = -1 if (row & 1) == BUY else 1      # bids fall back to lower prices, asks to higher ones
    level += step
    while bk.ladder[row, level, COUNT] == 0:  # DEPTH > 0 guarantees a live level further on
        level += step
    bk.sides[row, BEST] = level


@kernel(inline="always")
def reduce(bk, o, qty):
    """Cancel or execute ``qty`` shares of a live order; it leaves the book at zero.  Returns what is left."""
    left = bk.orders[o, SHARES] - qty
    if left <= 0:
        remove(bk, o)
        return 0
    bk.orders[o, SHARES] = left
    return left


@kernel(inline="always")
def front(bk, stock, side):
    """The oldest live order at the best price on one side, or -1 when that side is empty."""
    row = 2 * stock + side
    level = bk.sides[row, BEST]
    if level < 0:
        return -1
    o = bk.ladder[row, level, HEAD]
    while bk.orders[o, SHARES] == 0:          # deleted orders still linked: drop them from the front
        o = bk.orders[o, NEXT]
    bk.ladder[row, level, HEAD] = o
    return np.int64(o)
