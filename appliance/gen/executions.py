"""Executions and trades: E and C against the top of the book, P against hidden liquidity, B breaking one.

Executions take the oldest live order at the best price of a side, as price-time priority would, and never
happen while the instrument is halted or paused.  Every execution, trade and cross takes the next match
number; the latest ones are kept in a small ring so a broken trade (B) names a real, recent execution.
"""
from __future__ import annotations

import numpy as np

from appliance._jit import kernel
from appliance.gen import records
from appliance.gen.book import BUY, LEVEL, REF_BASE, SELL, SHARES, best_level, front, reduce
from appliance.gen.orderflow import EXECUTIONS, NEXT_MATCH, RECENT, RNG, draw_shares, pick_instrument, price_of
from appliance.gen.rng import next_below, next_unit
from appliance.gen.universe import TICK

P_FULL_FILL = 0.55          # share of executions that take the whole remaining order
P_PRINTABLE = 0.75          # C messages printed to the tape; the rest are e.g. cross components


@kernel(inline="always")
def next_match(tape, stock):
    """A new match number, remembered in the ring of recent executions."""
    match = tape.state[NEXT_MATCH]
    tape.state[NEXT_MATCH] = match + 1
    slot = tape.state[EXECUTIONS] % RECENT
    tape.recent[slot, 0] = match
    tape.recent[slot, 1] = stock
    tape.state[EXECUTIONS] += 1
    return match


@kernel(inline="always")
def execute(out, pos, ts, bk, mk, key, tape, with_price):
    """E (or C, at an improved price) against the top of a random side of a busy instrument."""
    stock = pick_instrument(mk, key, tape)
    if mk.halted[stock]:
        return -1
    side = next_below(key, tape.state, RNG, 2)
    o = front(bk, stock, side)
    if o < 0:
        side = 1 - side
        o = front(bk, stock, side)
        if o < 0:
            return -1
    shares = np.int64(bk.orders[o, SHARES])
    qty = shares
    if shares > 1 and next_unit(key, tape.state, RNG) >= P_FULL_FILL:
        qty = 1 + next_below(key, tape.state, RNG, shares - 1)
    level = np.int64(bk.orders[o, LEVEL])
    mk.anchor[stock] = level
    match = next_match(tape, stock)
    reduce(bk, o, qty)
    if not with_price:
        return records.executed(out, pos, ts, stock, REF_BASE + o, qty, match)
    # A resting buy filled below its limit, or a sell above it: half a tick (midpoint) or a whole one.
    improvement = (TICK // 2) * (1 + next_below(key, tape.state, RNG, 2))
    price = price_of(mk, stock, level) + (-improvement if side == BUY else improvement)
    printable = next_unit(key, tape.state, RNG) < P_PRINTABLE
    return records.executed_with_price(out, pos, ts, stock, REF_BASE + o, qty, match, printable, price)


@kernel
def reference_price(bk, mk, stock):
    """Midpoint of the book (rounded down to a tick), one side's best, or the last trade."""
    bid = best_level(bk, stock, BUY)
    ask = best_level(bk, stock, SELL)
    if bid >= 0 and ask >= 0:
        return price_of(mk, stock, (np.int64(bid) + ask) // 2)
    if bid >= 0 or ask >= 0:
        return price_of(mk, stock, np.int64(max(bid, ask)))
    return price_of(mk, stock, mk.anchor[stock])


@kernel(inline="always")
def trade(out, pos, ts, bk, mk, key, tape):
    """P: a fill against a non-displayed order, priced inside the spread (at the midpoint when both sides
    are quoted, which is where most hidden and midpoint-peg liquidity executes)."""
    stock = pick_instrument(mk, key, tape)
    if mk.halted[stock]:
        return -1
    bid = best_level(bk, stock, BUY)
    ask = best_level(bk, stock, SELL)
    if bid >= 0 and ask >= 0:
        price = (price_of(mk, stock, bid) + price_of(mk, stock, ask)) // 2
    else:
        price = reference_price(bk, mk, stock)
    side = next_below(key, tape.state, RNG, 2)
    shares = draw_shares(mk, stock, key, tape)
    match = next_match(tape, stock)
    return records.trade(out, pos, ts, mk.names, stock, side, shares, price, match)


@kernel
def recent_execution(key, tape):
    """(match number, instrument) of one of the latest executions, or (-1, -1) before the first."""
    seen = min(tape.state[EXECUTIONS], RECENT)
    if seen == 0:
        return -1, -1
    slot = (tape.state[EXECUTIONS] - 1 - next_below(key, tape.state, RNG, seen)) % RECENT
    return tape.recent[slot, 0], tape.recent[slot, 1]


@kernel(inline="always")
def break_trade(out, pos, ts, key, tape):
    match, stock = recent_execution(key, tape)
    if match < 0:
        return -1
    return records.broken(out, pos, ts, stock, match)
