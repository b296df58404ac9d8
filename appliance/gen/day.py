"""A whole day of ITCH messages: the set-up schedule and the order flow merged by time, in one kernel.

``build_day(spec)`` does the Python set-up (instruments, schedule, flow timestamps, book arrays) and then
makes one kernel call that writes every message into a preallocated buffer.  Nothing per message happens
in Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance._jit import kernel
from appliance.decode.wire import be16 as read_be16
from appliance.decode import put
from appliance.errors import UserError
from appliance.gen.book import LADDER, LIVE, TARGET_LIVE, new_book
from appliance.gen.executions import break_trade, execute, next_match, recent_execution, reference_price, trade
from appliance.gen.fields import (
    BROKEN_MATCH, COLLAR_LOWER, COLLAR_REFERENCE, COLLAR_UPPER, CROSS_MATCH, CROSS_PRICE, HALT_ACTION, LOCATE,
    NOII_DIRECTION, NOII_FAR, NOII_NEAR, NOII_REFERENCE, TRADING_STATE)
from appliance.gen.orderflow import (
    ADD, ADD_ATTRIBUTED, BREAK, CANCEL, DELETE, EXECUTE, EXECUTE_PRICE, MIX, NEXT_MATCH, RECENT, REPLACE, RNG,
    TRADE, DOLLARS_PER_SPACING_TICK, MAX_SPACING, Market, Tape, add, alias_table, cancel, delete, replace)
from appliance.gen.rng import next_unit, stream_key
from appliance.gen.schedule import PATCH_BREAK, PATCH_COLLAR, PATCH_CROSS, PATCH_HALT, PATCH_NOII, \
    PATCH_TRADING_ACTION, build_schedule, mandatory_messages
from appliance.gen.spec import FeedSpec
from appliance.gen.timeline import TIMELINES, fill_flow_times, flow_buckets
from appliance.gen.universe import MPIDS, PRICE_SCALE, TICK, make_universe
from appliance.itch.layout import MAX_MESSAGE_LENGTH, MESSAGE_LENGTH

FIRST_MATCH = 1_000                    # match numbers are day-unique; start clear of 0
LIVE_ORDERS_PER_INSTRUMENT = 150       # the book stops growing past this many live orders per instrument


@dataclass(frozen=True)
class Day:
    buf: np.ndarray            # uint8: the messages, back to back
    offsets: np.ndarray        # int64[n + 1]: start of each message, then the end of the last
    ts: np.ndarray             # int64[n]: ITCH timestamps (ns since midnight), non-decreasing
    instruments: int

    def __len__(self) -> int:
        return len(self.ts)


@kernel
def flow_step(out, pos, ts, bk, mk, tape, key):
    """Write one order-flow message at ``pos``; returns the position after it."""
    action = np.searchsorted(mk.action_cdf, next_unit(key, tape.state, RNG), side="right")
    live, target = bk.counters[LIVE], bk.counters[TARGET_LIVE]
    # Past the target book size, turn some adds into deletes so the book levels off as a real one does.
    if (action == ADD or action == ADD_ATTRIBUTED) and live > target:
        if next_unit(key, tape.state, RNG) < min(0.5, (live - target) / target):
            action = DELETE
    end = -1
    if action == DELETE:
        end = delete(out, pos, ts, bk, key, tape)
    elif action == REPLACE:
        end = replace(out, pos, ts, bk, mk, key, tape)
    elif action == CANCEL:
        end = cancel(out, pos, ts, bk, key, tape)
    elif action == EXECUTE or action == EXECUTE_PRICE:
        end = execute(out, pos, ts, bk, mk, key, tape, action == EXECUTE_PRICE)
    elif action == TRADE:
        end = trade(out, pos, ts, bk, mk, key, tape)
    elif action == BREAK:
        end = break_trade(out, pos, ts, key, tape)
    if end < 0:                          # nothing to act on: an add always succeeds
        end = add(out, pos, ts, bk, mk, tape, key, action == ADD_ATTRIBUTED)
    return end


@kernel
def emit_scheduled(out, pos, tpl, at, patch, bk, mk, tape, key):
    """Copy one scheduled message and fill in what depends on the book at this moment."""
    n = np.int64(MESSAGE_LENGTH[tpl[at]])
    put.copy(out, pos, tpl, at, n)
    stock = read_be16(tpl, at + LOCATE) - 1
    if patch == PATCH_TRADING_ACTION:
        mk.halted[stock] = tpl[at + TRADING_STATE] != ord("T")
    elif patch == PATCH_HALT:
        mk.halted[stock] = tpl[at + HALT_ACTION] == ord("H")
    elif patch == PATCH_CROSS:
        put.be32(out, pos + CROSS_PRICE, reference_price(bk, mk, stock))
        put.be64(out, pos + CROSS_MATCH, next_match(tape, stock))
    elif patch == PATCH_NOII:
        ref = reference_price(bk, mk, stock)
        direction = tpl[at + NOII_DIRECTION]
        step = TICK if direction == ord("B") else (-TICK if direction == ord("S") else 0)
        put.be32(out, pos + NOII_REFERENCE, ref)
        put.be32(out, pos + NOII_NEAR, ref + step)
        put.be32(out, pos + NOII_FAR, ref + 2 * step)
    elif patch == PATCH_COLLAR:
        ref = reference_price(bk, mk, stock)
        band = max(TICK, ref // 20 // TICK * TICK)               # +-5%, whole ticks
        put.be32(out, pos + COLLAR_REFERENCE, ref)
        put.be32(out, pos + COLLAR_UPPER, ref + band)
        put.be32(out, pos + COLLAR_LOWER, max(TICK, ref - band))
    elif patch == PATCH_BREAK:
        match, traded = recent_execution(key, tape)
        if match >= 0:                   # the schedule puts its break after the open cross, so one exists
            put.be64(out, pos + BROKEN_MATCH, match)
            put.be16(out, pos + LOCATE, traded + 1)
    return pos + n


@kernel
def run_day(out, offsets, ts, sched_ts, sched_at, sched_patch, tpl, n_flow, bk, mk, tape, key):
    """Merge the schedule with the order flow by time; returns the bytes written.

    On entry ``ts[len(sched_ts):]`` holds the flow timestamps.  The merged timestamps are written over the
    same array: the write index (scheduled + flow messages so far) never passes the read index of the next
    flow timestamp (all scheduled + flow so far), so no unread value is overwritten.
    """
    n_sched = sched_ts.shape[0]
    pos = np.int64(0)            # not the literal 0: that would compile every callee twice
    i_s = 0
    i_f = 0
    while i_s < n_sched or i_f < n_flow:
        k = i_s + i_f
        offsets[k] = pos
        if i_s < n_sched and (i_f == n_flow or sched_ts[i_s] <= ts[n_sched + i_f]):
            ts[k] = sched_ts[i_s]
            pos = emit_scheduled(out, pos, tpl, sched_at[i_s], sched_patch[i_s], bk, mk, tape, key)
            i_s += 1
        else:
            t = ts[n_sched + i_f]
            ts[k] = t
            pos = flow_step(out, pos, t, bk, mk, tape, key)
            i_f += 1
    offsets[n_sched + n_flow] = pos
    return pos


def build_day(spec: FeedSpec) -> Day:
    spec.validate()
    need = mandatory_messages(spec.instruments) + 1
    if spec.messages < need:
        raise UserError(f"{spec.messages:,} messages is too few for {spec.instruments:,} instruments: a day needs "
                        f"at least {need:,} (six system events, a directory entry per instrument, one order)")
    tl = TIMELINES[spec.timeline]
    u = make_universe(spec.seed, spec.instruments)
    sched = build_schedule(u, tl, spec.messages, spec.seed)
    n = spec.messages
    n_flow = n - len(sched)
    ts = np.empty(n, np.int64)
    starts, lengths, counts = flow_buckets(tl, n_flow)
    scratch = int(counts.max()) + 1
    fill_flow_times(starts, lengths, counts, stream_key(spec.seed, "flow.times"), np.zeros(1, np.int64),
                    float(spec.burst_mean), float(spec.burst_gap_ns), np.empty(scratch, np.float64),
                    np.empty(scratch, np.bool_), ts[len(sched):])
    bk = new_book(n_flow, spec.instruments, LIVE_ORDERS_PER_INSTRUMENT * spec.instruments)
    mk = _market(u)
    tape = Tape(state=np.zeros(4, np.int64), recent=np.zeros((RECENT, 2), np.int64))
    tape.state[NEXT_MATCH] = FIRST_MATCH
    buf = np.empty(n * MAX_MESSAGE_LENGTH, np.uint8)        # untouched pages are never backed by memory
    offsets = np.empty(n + 1, np.int64)
    used = run_day(buf, offsets, ts, sched.ts, sched.offset, sched.patch, sched.templates, n_flow, bk, mk, tape,
                   stream_key(spec.seed, "flow.actions"))
    return Day(buf=buf[:used], offsets=offsets, ts=ts, instruments=spec.instruments)


def _market(u) -> Market:
    home = np.minimum(u.price // TICK - 1, LADDER // 2).astype(np.int64)   # level 0 stays >= one tick
    pick_prob, pick_alias = alias_table(u.activity)
    dollars = u.price // PRICE_SCALE
    spacing = np.clip(np.rint(dollars / DOLLARS_PER_SPACING_TICK), 1, MAX_SPACING).astype(np.int64)
    action_cdf = np.cumsum(MIX) / MIX.sum()
    return Market(names=np.ascontiguousarray(u.names), lo=u.price - home * TICK, home=home, anchor=home.copy(),
                  halted=np.zeros(len(u), np.uint8), lot=u.round_lot.copy(), spacing=spacing, pick_prob=pick_prob,
                  pick_alias=pick_alias,
                  mpids=np.frombuffer(b"".join(MPIDS), np.uint8).reshape(len(MPIDS), 4).copy(),
                  action_cdf=action_cdf)
