"""Apply one validated ITCH 5.0 message to the books, the trade tape and the per-instrument totals.

The contract (README, "Book semantics"): A/F add; E executes at the order's price, C at its own price and
counts in volume only when printable is 'Y'; X reduces; D deletes; U deletes the original and adds the new
reference with the same side and instrument; an execution or cancel for more than remains takes what remains;
a message naming an unknown reference is counted and ignored.  Volume, notional and trades come from E,
printable C and P; Q shares go to cross volume; B is counted and its match number listed.

Callers have already checked the message's length against its type, so fields are read without further
bounds checks.  Outputs go to caller-allocated rows; the caller guarantees room (state.ROW_MARGIN).
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode import levels, orders
from appliance.decode import offsets as O
from appliance.decode.state import BBO_ASK_PRICE, BBO_ASK_SIZE, BBO_BID_PRICE, BBO_BID_SIZE, BBO_LOCATE, BBO_TS, \
    CLOCK_FLOOR, CLOCK_NEXT, CLOCK_STEP, CLOCK_WINDOW, KIND_BROKEN, KIND_CLOCK, MSG_SEQUENCE, MSG_SESSION, MSG_SLOT, \
    N_BBO, N_BROKEN, N_MSGS, N_TRADES, SIDE_LAST_PRICE, SIDE_LAST_SIZE, SIDE_LEN, SIDE_START, STAT_CROSS, \
    STAT_NOTIONAL, STAT_TRADES, STAT_VOLUME, TAPE_KIND, TAPE_LOCATE, TAPE_MATCH, TAPE_PRICE, TAPE_SHARES, TAPE_SIDE, \
    TAPE_TS
from appliance.decode.prefetch import prefetch
from appliance.decode.wire import be16, be32, be48, be64u

_B, _S, _Y = ord("B"), ord("S"), ord("Y")
_KIND_P, _KIND_Q = ord("P"), ord("Q")


@kernel(inline="always")
def _names_order(t):
    """D, X, E, C and U name a resting order (by its reference, at the same offset in each)."""
    return t == O.T_DELETE or t == O.T_EXECUTED or t == O.T_CANCEL or t == O.T_EXECUTED_AT or t == O.T_REPLACE


@kernel(inline="always")
def copy_out(out, buf, p, mlen, sess, seq):
    """--messages: copy the applied message at ``buf[p]`` and where it came from into the output rows."""
    r = out.n[N_MSGS]
    for k in range(min(mlen, MSG_SLOT)):
        out.msgs[r, k] = buf[p + k]
    out.msg_meta[r, MSG_SESSION] = sess
    out.msg_meta[r, MSG_SEQUENCE] = seq
    out.n[N_MSGS] = r + 1


@kernel(inline="always")
def warm_far(buf, p, bk):
    """First stage of look-ahead for the message at ``buf[p]`` (length already checked): start loading its
    instrument's two book-side rows and, for a message naming an order, that order's ring slot."""
    t = buf[p]
    s = be16(buf, p + O.LOCATE) * 2
    prefetch(bk.side[s], 0)
    prefetch(bk.side[s + 1], 0)
    if _names_order(t):
        ref = be64u(buf, p + O.ORDER_REF)
        prefetch(bk.ot, orders.ring_row(bk.ot_meta, ref) * 3)


@kernel(inline="always")
def warm_near(buf, p, bk):
    """Second stage, a few messages later: the side rows and ring slot are in cache by now, so read them and
    start loading the top level of the book side the message will touch."""
    t = buf[p]
    side = -1
    locate = be16(buf, p + O.LOCATE)
    if t == O.T_ADD or t == O.T_ADD_MPID:
        side = _side(buf[p + O.ADD_SIDE])
    elif _names_order(t):
        ref = be64u(buf, p + O.ORDER_REF)
        row = orders.ring_row(bk.ot_meta, ref)
        if bk.ot[row * 3] == ref:
            side = orders.side_of(bk.ot, row)
            locate = orders.locate_of(bk.ot, row)
    if side >= 0:
        r = bk.side[locate * 2 + side]
        top = r[SIDE_START] + r[SIDE_LEN] - 1
        if top >= 0:
            prefetch(bk.lv[top], 0)


@kernel(inline="always")
def _check_top(bk, out, locate, side, ts):
    """Emit a bbo row when the top of book differs from the last row emitted for the instrument.

    Every book message changes one side only, so only that side's best level is read.
    """
    s = locate * 2 + side
    price, size = levels.best(bk, s, side)
    row = bk.side[s]
    if row[SIDE_LAST_PRICE] == price and row[SIDE_LAST_SIZE] == size:
        return
    row[SIDE_LAST_PRICE] = price
    row[SIDE_LAST_SIZE] = size
    other = bk.side[s ^ 1]
    bid = row if side == 0 else other
    ask = other if side == 0 else row
    r = out.n[N_BBO]
    out.bbo[r, BBO_TS] = ts
    out.bbo[r, BBO_LOCATE] = locate
    out.bbo[r, BBO_BID_PRICE] = bid[SIDE_LAST_PRICE]
    out.bbo[r, BBO_BID_SIZE] = bid[SIDE_LAST_SIZE]
    out.bbo[r, BBO_ASK_PRICE] = ask[SIDE_LAST_PRICE]
    out.bbo[r, BBO_ASK_SIZE] = ask[SIDE_LAST_SIZE]
    out.n[N_BBO] = r + 1


@kernel(inline="always")
def _feed_clock(out, ts):
    """Mark the tape when feed time enters a new VWAP step, or jumps back past a whole window (a new epoch,
    e.g. the next day file), so windows are emitted as feed time passes even without trades."""
    clock = out.clock
    if ts < clock[CLOCK_NEXT] and ts >= clock[CLOCK_FLOOR]:
        return
    step = clock[CLOCK_STEP]
    s = ts // step
    clock[CLOCK_NEXT] = (s + 1) * step
    clock[CLOCK_FLOOR] = s * step - clock[CLOCK_WINDOW]
    _tape(out, ts, 0, KIND_CLOCK, 0, 0, 0, 0)


@kernel(inline="always")
def _tape(out, ts, locate, kind, side, shares, price, match):
    """Append a row to the tape: a trade (E, C, P), a cross (Q), a broken trade (B) or a clock mark."""
    r = out.n[N_TRADES]
    row = out.trades[r]
    row[TAPE_TS] = ts
    row[TAPE_LOCATE] = locate
    row[TAPE_KIND] = kind
    row[TAPE_SIDE] = side
    row[TAPE_SHARES] = shares
    row[TAPE_PRICE] = price
    row[TAPE_MATCH] = match
    out.n[N_TRADES] = r + 1


@kernel(inline="always")
def _trade(bk, out, ts, locate, kind, side, shares, price, match):
    """Count a printed trade in the instrument's totals and append it to the tape."""
    st = bk.stats
    st[locate, STAT_VOLUME] += shares
    st[locate, STAT_NOTIONAL] += shares * price
    st[locate, STAT_TRADES] += 1
    _tape(out, ts, locate, kind, side, shares, price, match)


@kernel(inline="always")
def _add(bk, cnt, ref, locate, side, shares, price):
    """Add an order on ``side`` (0 buy, 1 sell, -1 not a side); refuse (and count) what a real feed never sends
    or what the table cannot hold."""
    if side < 0 or ref == 0 or shares == 0:
        cnt[C.REJECTED_ADDS] += 1
        return
    if cnt[C.OPEN_ORDERS] >= bk.ot_meta[orders.MAX_LIVE]:
        cnt[C.REJECTED_ADDS] += 1
        cnt[C.ORDER_TABLE_FULL] += 1
        return
    added = orders.add(bk.ot, bk.ot_meta, bk.ot_hi, bk.ot_scratch, ref, price, shares, locate, side)
    if added != orders.ADDED:
        cnt[C.REJECTED_ADDS] += 1
        if added == orders.NO_ROOM:
            cnt[C.ORDER_TABLE_FULL] += 1
        return
    cnt[C.OPEN_ORDERS] += 1
    levels.add_shares(bk, locate * 2 + side, levels.level_key(side, price), shares, cnt)


@kernel(inline="always")
def _side(side_char):
    return 0 if side_char == _B else (1 if side_char == _S else -1)


@kernel(inline="always")
def _reduce(bk, cnt, slot, want):
    """Take up to ``want`` shares from the order in ``slot``; return what was taken."""
    ot = bk.ot
    left = orders.shares_of(ot, slot)
    taken = want if want < left else left
    side = orders.side_of(ot, slot)
    locate = orders.locate_of(ot, slot)
    if taken > 0:
        levels.remove_shares(bk, locate * 2 + side, levels.level_key(side, orders.price_of(ot, slot)), taken,
                             cnt)
    if taken == left:
        orders.remove(ot, bk.ot_meta, slot)
        cnt[C.OPEN_ORDERS] -= 1
    else:
        orders.set_shares(ot, slot, left - taken)
    return taken


@kernel(inline="always")
def apply_message(buf, p, bk, out, cnt, by_type):
    """Apply the message at ``buf[p]`` (length already validated against its type)."""
    t = buf[p]
    by_type[t] += 1
    cnt[C.MESSAGES] += 1
    ts = be48(buf, p + O.TIMESTAMP)
    if ts > cnt[C.MAX_TIMESTAMP]:
        cnt[C.MAX_TIMESTAMP] = ts
    _feed_clock(out, ts)
    locate = be16(buf, p + O.LOCATE)
    if t == O.T_ADD or t == O.T_ADD_MPID:
        side = _side(buf[p + O.ADD_SIDE])
        _add(bk, cnt, be64u(buf, p + O.ADD_REF), locate, side, be32(buf, p + O.ADD_SHARES),
             be32(buf, p + O.ADD_PRICE))
        if side >= 0:
            _check_top(bk, out, locate, side, ts)
    elif _names_order(t):
        slot = orders.find(bk.ot, bk.ot_meta, bk.ot_hi, be64u(buf, p + O.ORDER_REF))
        if slot < 0:
            cnt[C.UNKNOWN_ORDER_REFS] += 1
            return
        # The order's own instrument and side, whatever the message's header says.
        locate = orders.locate_of(bk.ot, slot)
        side = orders.side_of(bk.ot, slot)
        if t == O.T_DELETE:
            _reduce(bk, cnt, slot, orders.shares_of(bk.ot, slot))
        elif t == O.T_CANCEL:
            _reduce(bk, cnt, slot, be32(buf, p + O.CANCEL_SHARES))
        elif t == O.T_REPLACE:
            _reduce(bk, cnt, slot, orders.shares_of(bk.ot, slot))
            _add(bk, cnt, be64u(buf, p + O.REPLACE_NEW_REF), locate, side, be32(buf, p + O.REPLACE_SHARES),
                 be32(buf, p + O.REPLACE_PRICE))
        else:
            if t == O.T_EXECUTED:
                price = orders.price_of(bk.ot, slot)
                printed = True
            else:
                price = be32(buf, p + O.EXEC_PRICE)
                printed = buf[p + O.EXEC_PRINTABLE] == _Y
            taken = _reduce(bk, cnt, slot, be32(buf, p + O.EXEC_SHARES))
            if printed and taken > 0:
                _trade(bk, out, ts, locate, t, _B if side == 0 else _S, taken, price,
                       np.int64(be64u(buf, p + O.EXEC_MATCH)))
        _check_top(bk, out, locate, side, ts)
    elif t == O.T_TRADE:                                     # P
        shares = be32(buf, p + O.TRADE_SHARES)
        if shares > 0:
            _trade(bk, out, ts, locate, _KIND_P, buf[p + O.TRADE_SIDE], shares, be32(buf, p + O.TRADE_PRICE),
                   np.int64(be64u(buf, p + O.TRADE_MATCH)))
    elif t == O.T_CROSS:                                     # Q
        shares = np.int64(be64u(buf, p + O.CROSS_SHARES))
        if shares > 0:
            bk.stats[locate, STAT_CROSS] += shares
            _tape(out, ts, locate, _KIND_Q, 0, shares, be32(buf, p + O.CROSS_PRICE),
                  np.int64(be64u(buf, p + O.CROSS_MATCH)))
    elif t == O.T_BROKEN:                                    # B
        # Listed, and marked on the tape so broken.csv says which trade it breaks; the trade's row, totals and
        # VWAP windows (perhaps already written) are left as printed.
        cnt[C.BROKEN_TRADES] += 1
        match = np.int64(be64u(buf, p + O.BROKEN_MATCH))
        out.broken[out.n[N_BROKEN]] = match
        out.n[N_BROKEN] += 1
        _tape(out, ts, locate, KIND_BROKEN, 0, 0, 0, match)
    elif t == O.T_DIRECTORY:                                 # R
        for i in range(8):
            bk.sym[locate, i] = buf[p + O.DIRECTORY_STOCK + i]
        bk.sym_set[locate] = 1
