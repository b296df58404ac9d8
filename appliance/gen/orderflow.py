"""One order-flow message at a time: choose an action, find the order it applies to, write the message.

The mix (``MIX``) is that of a NASDAQ day: mostly adds, deletes and replaces, a few percent executions,
about 2% partial cancels, 1-2% attributed adds, under 1% hidden trades.  Every action that names an existing
order takes a live one from the generator's book (``appliance.gen.book``), so a correct decoder sees no
unknown reference on a clean feed.  When an action has nothing to act on (empty book, halted instrument) the
step becomes an add instead, which always succeeds, so the kernel writes exactly one message per step.

Realism that decoders feel:
* locality: deletes, cancels and replaces mostly hit orders added moments ago (``pick_live``), a minority
  hit orders from much earlier -- that is what decides an order table's cache behaviour;
* replace chains: a third of replaces re-replace the order the last replace created;
* executions take the oldest order at the best price (what a matching engine does);
* new orders join, improve or sit behind the best price of their side and never cross the other side, with
  a pull back towards the opening price so each instrument's price walks but stays on its ladder.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from appliance._jit import kernel
from appliance.gen import records
from appliance.gen.book import BUY, LADDER, LAST_REPLACE, LEVEL, LIVE, ORDERS, REF_BASE, SELL, SHARES, \
    best_level, enqueue, reduce, remove, side_of, stock_of
from appliance.gen.rng import next_below, next_exponential, next_unit
from appliance.gen.universe import TICK

ACTIONS = "AFDUXECPB"
MIX = np.array([0.430, 0.016, 0.372, 0.098, 0.021, 0.040, 0.004, 0.009, 0.000002])
ADD, ADD_ATTRIBUTED, DELETE, REPLACE, CANCEL, EXECUTE, EXECUTE_PRICE, TRADE, BREAK = range(9)
# Price dynamics.  A cent is a lot for a $5 stock and nothing for a $400 one: books of dearer stocks are
# spread wider (``spacing`` ticks between levels, one tick per $40 of price, at most MAX_SPACING) and their
# price walks as far in relative terms.  The walk is pulled back to the opening price once it is
# TILT_SPACINGS spacings away, which keeps a day's range near 1-5% and inside the ladder.
DOLLARS_PER_SPACING_TICK = 40
MAX_SPACING = 8
TILT_SPACINGS = 64

Market = namedtuple("Market", [
    "names",        # uint8[n, 8]: symbols
    "lo",           # int64[n]: price of ladder level 0
    "home",         # int64[n]: ladder level of the opening reference price
    "anchor",       # int64[n]: level of the last trade: where a book with both sides empty restarts
    "halted",       # uint8[n]: 1 while halted or paused (no executions then)
    "lot",          # int64[n]: round lot
    "spacing",      # int64[n]: typical gap between price levels, in ticks (wider for dearer stocks)
    "pick_prob",    # float64[n]: alias table of the activity distribution (Walker/Vose), to pick an
    "pick_alias",   # int64[n]:   instrument in O(1): a binary search over 3,000 weights costs more
    "mpids",        # uint8[k, 4]: attributions for 'F' adds
    "action_cdf",   # float64[len(MIX)]
])
Tape = namedtuple("Tape", [
    "state",        # int64[4]: RNG counter, next match number, executions so far, (spare)
    "recent",       # int64[RECENT, 2]: (match number, instrument) of the latest executions, a ring
])
RNG, NEXT_MATCH, EXECUTIONS = 0, 1, 2
RECENT = 4096


@kernel(inline="always")
def pick_instrument(mk, key, tape):
    """An instrument drawn by activity: the alias method (one draw picks a column and a coin)."""
    x = next_unit(key, tape.state, RNG) * mk.pick_prob.shape[0]
    i = np.int64(x)
    return i if x - i < mk.pick_prob[i] else mk.pick_alias[i]


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table for ``weights``: column i keeps itself with probability prob[i], else alias[i]."""
    n = len(weights)
    scaled = [float(w) * n / float(weights.sum()) for w in weights]
    prob, alias = np.ones(n), np.arange(n, dtype=np.int64)
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return prob, alias


@kernel(inline="always")
def price_of(mk, stock, level):
    return mk.lo[stock] + level * TICK


@kernel
def draw_shares(mk, stock, key, tape):
    lot = mk.lot[stock]
    r = next_unit(key, tape.state, RNG)
    if r < 0.12:
        return 1 + next_below(key, tape.state, RNG, 99)                    # odd lot
    if r < 0.93:
        return lot * (1 + np.int64(next_exponential(key, tape.state, RNG, 1.5)))
    return lot * (5 + next_below(key, tape.state, RNG, 96))                 # a block


@kernel
def place(bk, mk, stock, side, key, tape):
    """Ladder level for a new order on ``side``: improve, join or sit behind the side's best; -1 if no room."""
    bid = best_level(bk, stock, BUY)
    ask = best_level(bk, stock, SELL)
    sign = 1 if side == BUY else -1                   # +1 moves a bid towards the ask, and vice versa
    own, other = (bid, ask) if side == BUY else (ask, bid)
    if own >= 0:
        ref = np.int64(own)
    elif other >= 0:
        ref = np.int64(other) - sign
    else:
        ref = mk.anchor[stock] - sign
    # Pull back towards the opening price: a side above its home improves less often, the other more.
    spacing = mk.spacing[stock]
    tilt = min(1.0, max(-1.0, sign * (ref - mk.home[stock]) / min(0.4 * LADDER, TILT_SPACINGS * spacing)))
    p_improve = 0.10 * (1.0 - tilt)
    r = next_unit(key, tape.state, RNG)
    if r < p_improve and own >= 0:
        level = ref + sign * (1 + next_below(key, tape.state, RNG, spacing))
    elif r < p_improve + 0.30:
        level = ref
    else:
        level = ref - sign * spacing * (1 + np.int64(next_exponential(key, tape.state, RNG, 3.0)))
    if other >= 0 and sign * (level - other) >= 0:    # never lock or cross the other side
        level = np.int64(other) - sign
    level = min(LADDER - 1, max(0, level))
    if other >= 0 and sign * (level - other) >= 0:
        return -1
    return level


@kernel(inline="always")
def add(out, pos, ts, bk, mk, tape, key, attributed):
    stock = pick_instrument(mk, key, tape)
    side = next_below(key, tape.state, RNG, 2)
    level = place(bk, mk, stock, side, key, tape)
    if level < 0:
        side = 1 - side
        level = place(bk, mk, stock, side, key, tape)
    shares = draw_shares(mk, stock, key, tape)
    o = enqueue(bk, stock, side, level, shares)
    mpid = next_below(key, tape.state, RNG, mk.mpids.shape[0]) if attributed else -1
    return records.add(out, pos, ts, mk.names, stock, REF_BASE + o, side, shares, price_of(mk, stock, level),
                       mk.mpids, mpid)


@kernel
def pick_live(bk, key, tape):
    """A live order, most often one of the last few dozen added; -1 if none is found nearby."""
    n = bk.counters[ORDERS]
    if bk.counters[LIVE] == 0:
        return -1
    r = next_unit(key, tape.state, RNG)
    if r < 0.78:
        back = np.int64(next_exponential(key, tape.state, RNG, 24.0))     # moments ago
    elif r < 0.92:
        back = next_below(key, tape.state, RNG, min(n, 16384))            # earlier in the session
    else:
        back = next_below(key, tape.state, RNG, n)                        # any time today
    start = max(0, n - 1 - back)
    for o in range(start, max(-1, start - 512), -1):
        if bk.orders[o, SHARES] > 0:
            return o
    for o in range(start + 1, min(n, start + 512)):
        if bk.orders[o, SHARES] > 0:
            return o
    return -1


@kernel(inline="always")
def delete(out, pos, ts, bk, key, tape):
    o = pick_live(bk, key, tape)
    if o < 0:
        return -1
    remove(bk, o)
    return records.delete(out, pos, ts, stock_of(bk, o), REF_BASE + o)


@kernel(inline="always")
def cancel(out, pos, ts, bk, key, tape):
    """Partial cancel; an order of one share is deleted instead (X never takes an order to zero)."""
    o = pick_live(bk, key, tape)
    if o < 0:
        return -1
    if bk.orders[o, SHARES] < 2:
        remove(bk, o)
        return records.delete(out, pos, ts, stock_of(bk, o), REF_BASE + o)
    qty = 1 + next_below(key, tape.state, RNG, bk.orders[o, SHARES] - 1)
    reduce(bk, o, qty)
    return records.cancel(out, pos, ts, stock_of(bk, o), REF_BASE + o, qty)


@kernel(inline="always")
def replace(out, pos, ts, bk, mk, key, tape):
    """Cancel-replace: same instrument and side, a new reference, often a new price; loses time priority."""
    o = bk.counters[LAST_REPLACE]
    if o < 0 or bk.orders[o, SHARES] == 0 or next_unit(key, tape.state, RNG) >= 0.35:
        o = pick_live(bk, key, tape)
        if o < 0:
            return -1
    stock, side = stock_of(bk, o), side_of(bk, o)
    level, shares = np.int64(bk.orders[o, LEVEL]), np.int64(bk.orders[o, SHARES])
    remove(bk, o)
    r = next_unit(key, tape.state, RNG)
    step = mk.spacing[stock] * (1 + next_below(key, tape.state, RNG, 2))
    moved = level + (0 if r < 0.3 else (step if r < 0.65 else -step))
    other = best_level(bk, stock, 1 - side)
    sign = 1 if side == BUY else -1
    if 0 <= moved < LADDER and (other < 0 or sign * (moved - other) < 0):
        level = moved                         # otherwise keep the old price, which was valid
    if next_unit(key, tape.state, RNG) < 0.3:
        shares = draw_shares(mk, stock, key, tape)
    n = enqueue(bk, stock, side, level, shares)
    bk.counters[LAST_REPLACE] = n
    return records.replace(out, pos, ts, stock, REF_BASE + o, REF_BASE + n, shares, price_of(mk, stock, level))

