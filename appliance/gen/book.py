"""The generator's own order book: which orders are live, and the best-priced, oldest one on each side.

The generator may only cancel, replace or execute orders that are live here, and executions must take the
order a matching engine would: the oldest at the best price (price-time priority).  So each instrument side
has a ladder of ``LADDER`` price levels one tick apart, each level a FIFO of order indices, plus its best
level.  Order references are dense (reference = ``REF_BASE`` + order index), so orders live in flat arrays
indexed by creation order and a "recent" order is simply a high index.

Removal is lazy: a deleted order stays linked in its level's FIFO with zero shares and is skipped when it
reaches the front; the level's live count says when the level is empty (its FIFO is then reset).  That keeps
delete O(1) with one link per order.  Order indices are never reused, so a stale link is never ambiguous.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from appliance._jit import kernel

LADDER = 1024            # price levels per instrument side: +-512 cents around the opening price
REF_BASE = 1             # order reference of the first order of the day
BUY, SELL = 0, 1

Book = namedtuple("Book", [
    "stock",        # uint16[cap]: instrument index (stock locate - 1)
    "side",         # uint8[cap]: BUY or SELL
    "level",        # int32[cap]: ladder level; price = lo[stock] + level * TICK
    "shares",       # int32[cap]: remaining shares, 0 once deleted, cancelled or fully executed
    "next",         # int32[cap]: next order queued at the same level, -1 at the tail
    "head",         # int32[2 * n, LADDER]: front of each level's FIFO, -1 when empty (row = 2 * stock + side)
    "tail",         # int32[2 * n, LADDER]
    "count",        # int32[2 * n, LADDER]: live orders at the level
    "best",         # int32[2 * n]: best level of the side, -1 when the side is empty
    "counters",     # int64[4]: see ORDERS..TARGET_LIVE
])
ORDERS, LIVE, LAST_REPLACE, TARGET_LIVE = range(4)


def new_book(capacity: int, instruments: int, target_live: int) -> Book:
    rows = 2 * instruments
    counters = np.zeros(4, np.int64)
    counters[LAST_REPLACE] = -1
    counters[TARGET_LIVE] = target_live
    return Book(stock=np.zeros(capacity, np.uint16), side=np.zeros(capacity, np.uint8),
                level=np.zeros(capacity, np.int32), shares=np.zeros(capacity, np.int32),
                next=np.zeros(capacity, np.int32), head=np.full((rows, LADDER), -1, np.int32),
                tail=np.full((rows, LADDER), -1, np.int32), count=np.zeros((rows, LADDER), np.int32),
                best=np.full(rows, -1, np.int32), counters=counters)


@kernel
def enqueue(bk, stock, side, level, shares):
    """Create the next order at the back of its level's queue; returns its index."""
    o = bk.counters[ORDERS]
    bk.counters[ORDERS] = o + 1
    bk.counters[LIVE] += 1
    bk.stock[o] = stock
    bk.side[o] = side
    bk.level[o] = level
    bk.shares[o] = shares
    bk.next[o] = -1
    row = 2 * stock + side
    if bk.tail[row, level] < 0:
        bk.head[row, level] = o
    else:
        bk.next[bk.tail[row, level]] = o
    bk.tail[row, level] = o
    bk.count[row, level] += 1
    best = bk.best[row]
    if best < 0 or (side == BUY and level > best) or (side == SELL and level < best):
        bk.best[row] = level
    return o


@kernel
def remove(bk, o):
    """Take a live order off the book (delete, or the last share executed)."""
    bk.shares[o] = 0
    bk.counters[LIVE] -= 1
    side = bk.side[o]
    row = 2 * np.int64(bk.stock[o]) + side
    level = bk.level[o]
    bk.count[row, level] -= 1
    if bk.count[row, level] > 0:
        return
    bk.head[row, level] = -1
    bk.tail[row, level] = -1
    if bk.best[row] != level:
        return
    step = -1 if side == BUY else 1          # bids fall back to lower prices, asks to higher ones
    lv = level + step
    while 0 <= lv < LADDER and bk.count[row, lv] == 0:
        lv += step
    bk.best[row] = lv if 0 <= lv < LADDER else -1


@kernel
def reduce(bk, o, qty):
    """Cancel or execute ``qty`` shares of a live order; it leaves the book at zero.  Returns what is left."""
    left = bk.shares[o] - qty
    if left <= 0:
        remove(bk, o)
        return 0
    bk.shares[o] = left
    return left


@kernel
def front(bk, stock, side):
    """The oldest live order at the best price on one side, or -1 when that side is empty."""
    row = 2 * stock + side
    level = bk.best[row]
    if level < 0:
        return -1
    o = bk.head[row, level]
    while bk.shares[o] == 0:                 # deleted orders still linked: drop them from the front
        o = bk.next[o]
    bk.head[row, level] = o
    return o


@kernel
def best_level(bk, stock, side):
    return bk.best[2 * stock + side]
