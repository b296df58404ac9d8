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
from appliance.decode.state import CLOCK_FLOOR, CLOCK_NEXT, CLOCK_STEP, CLOCK_WINDOW, KIND_CLOCK, N_BBO, \
    MSG_SLOT, N_BROKEN, N_MSGS, N_TRADES, SIDE_LAST_PRICE, SIDE_LAST_SIZE, SIDE_LEN, SIDE_START, STAT_CROSS, STAT_NOTIONAL, STAT_TRADES, STAT_VOLUME
from appliance.decode.prefetch import prefetch
from appliance.decode.wire import be16, be32, be48, be64u

_B, _S, _Y = ord("B"), ord("S"), ord("Y")
_KIND_E, _KIND_C, _KIND_P, _KIND_Q = ord("E"), ord("C"), ord("P"), ord("Q")


@kernel(inline="always")
def copy_out(out, buf, p, mlen, sess, seq):
    """--messages: copy the applied message at ``buf[p]`` and where it came from into the output rows."""
    r = out.n[N_MSGS]
    for k in range(min(mlen, MSG_SLOT)):
        out.msgs[r, k] = buf[p + k]
    out.msg_meta[r, 0] = sess
    out.msg_meta[r, 1] = seq
    out.n[N_MSGS] = r + 1


@kernel(inline="always")
def warm_far(buf, p, bk):
    """First stage of look-ahead for the message at ``buf[p]`` (length already checked): start loading its
    instrument's two book-side rows and, for a message naming an order, that order's ring slot."""
    t = buf[p]
    s = be16(buf, p + O.LOCATE) * 2
    prefetch(bk.side[s], 0)
    prefetch(bk.side[s + 1], 0)
    if t == 68 or t == 69 or t == 88 or t == 67 or t == 85:
        ref = be64u(buf, p + O.ORDER_REF)
        prefetch(bk.ot, orders.ring_row(bk.ot_meta, ref) * 3)


@kernel(inline="always")
def warm_near(buf, p, bk):
    """Second stage, a few messages later: the side rows and ring slot are in cache by now, so read them and
    start loading the top level of the book side the message will touch."""
    t = buf[p]
    side = -1
    locate = be16(buf, p + O.LOCATE)
    if t == 65 or t == 70:
        side = _side(buf[p + O.ADD_SIDE])
    elif t == 68 or t == 69 or t == 88 or t == 67 or t == 85:
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
    out.bbo[r, 0] = ts
    out.bbo[r, 1] = locate
    out.bbo[r, 2] = bid[SIDE_LAST_PRICE]
    out.bbo[r, 3] = bid[SIDE_LAST_SIZE]
    out.bbo[r, 4] = ask[SIDE_LAST_PRICE]
    out.bbo[r, 5] = ask[SIDE_LAST_SIZE]
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
    r = out.n[N_TRADES]
    row = out.trades[r]
    row[0] = ts
    row[1] = 0
    row[2] = KIND_CLOCK
    row[3] = 0
    row[4] = 0
    row[5] = 0
    row[6] = 0
    out.n[N_TRADES] = r + 1


@kernel(inline="always")
def _trade(bk, out, ts, locate, kind, side, shares, price, match):
    """Count a printed trade in the instrument's totals and append it to the tape."""
    st = bk.stats
    st[locate, STAT_VOLUME] += shares
    st[locate, STAT_NOTIONAL] += shares * price
    st[locate, STAT_TRADES] += 1
    r = out.n[N_TRADES]
    row = out.trades[r]
    row[0] = ts
    row[1] = locate
    row[2] = kind
    row[3] = side
    row[4] = shares
    row[5] = price
    row[6] = match
    out.n[N_TRADES] = r + 1


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
    if not orders.add(bk.ot, bk.ot_meta, bk.ot_hi, bk.ot_scratch, ref, price, shares, locate, side):
        cnt[C.REJECTED_ADDS] += 1
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
    if t == 65 or t == 70:                                   # A, F
        side = _side(buf[p + O.ADD_SIDE])
        _add(bk, cnt, be64u(buf, p + O.ADD_REF), locate, side, be32(buf, p + O.ADD_SHARES),
             be32(buf, p + O.ADD_PRICE))
        if side >= 0:
            _check_top(bk, out, locate, side, ts)
    elif t == 68 or t == 88 or t == 69 or t == 67 or t == 85:   # D, X, E, C, U name a resting order
        slot = orders.find(bk.ot, bk.ot_meta, bk.ot_hi, be64u(buf, p + O.ORDER_REF))
        if slot < 0:
            cnt[C.UNKNOWN_ORDER_REFS] += 1
            return
        # The order's own instrument and side, whatever the message's header says.
        locate = orders.locate_of(bk.ot, slot)
        side = orders.side_of(bk.ot, slot)
        if t == 68:
            _reduce(bk, cnt, slot, orders.shares_of(bk.ot, slot))
        elif t == 88:
            _reduce(bk, cnt, slot, be32(buf, p + O.CANCEL_SHARES))
        elif t == 85:
            _reduce(bk, cnt, slot, orders.shares_of(bk.ot, slot))
            _add(bk, cnt, be64u(buf, p + O.REPLACE_NEW_REF), locate, side, be32(buf, p + O.REPLACE_SHARES),
                 be32(buf, p + O.REPLACE_PRICE))
        else:
            if t == 69:
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
    elif t == 80:                                            # P
        shares = be32(buf, p + O.TRADE_SHARES)
        if shares > 0:
            _trade(bk, out, ts, locate, _KIND_P, buf[p + O.TRADE_SIDE], shares, be32(buf, p + O.TRADE_PRICE),
                   np.int64(be64u(buf, p + O.TRADE_MATCH)))
    elif t == 81:                                            # Q
        shares = np.int64(be64u(buf, p + O.CROSS_SHARES))
        if shares > 0:
            bk.stats[locate, STAT_CROSS] += shares
            r = out.n[N_TRADES]
            row = out.trades[r]
            row[0] = ts
            row[1] = locate
            row[2] = _KIND_Q
            row[3] = 0
            row[4] = shares
            row[5] = be32(buf, p + O.CROSS_PRICE)
            row[6] = np.int64(be64u(buf, p + O.CROSS_MATCH))
            out.n[N_TRADES] = r + 1
    elif t == 66:                                            # B
        cnt[C.BROKEN_TRADES] += 1
        out.broken[out.n[N_BROKEN]] = np.int64(be64u(buf, p + O.BROKEN_MATCH))
        out.n[N_BROKEN] += 1
    elif t == 82:                                            # R
        for i in range(8):
            bk.sym[locate, i] = buf[p + O.DIRECTORY_STOCK + i]
        bk.sym_set[locate] = 1
