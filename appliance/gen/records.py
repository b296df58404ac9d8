"""Writers for the order-flow messages, for the kernels: each stores one message at ``pos`` and returns the
position after it.  Offsets and lengths come from the layout table (``appliance.gen.fields``).

The tracking number is always 0: it is NASDAQ-internal and no consumer may depend on it.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode import put
from appliance.gen.fields import (
    ADD_ATTRIBUTION, ADD_PRICE, ADD_REF, ADD_SHARES, ADD_SIDE, ADD_STOCK, BROKEN_MATCH, CANCEL_REF, CANCEL_SHARES,
    DELETE_REF, EXEC_MATCH, EXEC_PRICE, EXEC_PRINTABLE, EXEC_REF, EXEC_SHARES, LEN_A, LEN_B, LEN_C, LEN_D, LEN_E,
    LEN_F, LEN_P, LEN_U, LEN_X, LOCATE, REPLACE_NEW_REF, REPLACE_OLD_REF, REPLACE_PRICE, REPLACE_SHARES, TIMESTAMP,
    TRACKING, TRADE_MATCH, TRADE_PRICE, TRADE_REF, TRADE_SHARES, TRADE_SIDE, TRADE_STOCK)

SIDE_CODE = np.array([ord("B"), ord("S")], dtype=np.uint8)       # indexed by BUY / SELL


@kernel(inline="always")
def header(out, pos, mtype, locate, ts):
    out[pos] = mtype
    put.be16(out, pos + LOCATE, locate)
    put.be16(out, pos + TRACKING, 0)
    put.be48(out, pos + TIMESTAMP, ts)


@kernel
def add(out, pos, ts, names, stock, ref, side, shares, price, mpids, mpid):
    """Add Order: 'A', or 'F' with the attribution ``mpids[mpid]`` when ``mpid >= 0``."""
    header(out, pos, ord("A") if mpid < 0 else ord("F"), stock + 1, ts)
    put.be64(out, pos + ADD_REF, ref)
    out[pos + ADD_SIDE] = SIDE_CODE[side]
    put.be32(out, pos + ADD_SHARES, shares)
    put.copy(out, pos + ADD_STOCK, names[stock], 0, 8)
    put.be32(out, pos + ADD_PRICE, price)
    if mpid < 0:
        return pos + LEN_A
    put.copy(out, pos + ADD_ATTRIBUTION, mpids[mpid], 0, 4)
    return pos + LEN_F


@kernel
def executed(out, pos, ts, stock, ref, shares, match):
    header(out, pos, ord("E"), stock + 1, ts)
    put.be64(out, pos + EXEC_REF, ref)
    put.be32(out, pos + EXEC_SHARES, shares)
    put.be64(out, pos + EXEC_MATCH, match)
    return pos + LEN_E


@kernel
def executed_with_price(out, pos, ts, stock, ref, shares, match, printable, price):
    header(out, pos, ord("C"), stock + 1, ts)
    put.be64(out, pos + EXEC_REF, ref)
    put.be32(out, pos + EXEC_SHARES, shares)
    put.be64(out, pos + EXEC_MATCH, match)
    out[pos + EXEC_PRINTABLE] = ord("Y") if printable else ord("N")
    put.be32(out, pos + EXEC_PRICE, price)
    return pos + LEN_C


@kernel
def cancel(out, pos, ts, stock, ref, shares):
    header(out, pos, ord("X"), stock + 1, ts)
    put.be64(out, pos + CANCEL_REF, ref)
    put.be32(out, pos + CANCEL_SHARES, shares)
    return pos + LEN_X


@kernel
def delete(out, pos, ts, stock, ref):
    header(out, pos, ord("D"), stock + 1, ts)
    put.be64(out, pos + DELETE_REF, ref)
    return pos + LEN_D


@kernel
def replace(out, pos, ts, stock, old_ref, new_ref, shares, price):
    header(out, pos, ord("U"), stock + 1, ts)
    put.be64(out, pos + REPLACE_OLD_REF, old_ref)
    put.be64(out, pos + REPLACE_NEW_REF, new_ref)
    put.be32(out, pos + REPLACE_SHARES, shares)
    put.be32(out, pos + REPLACE_PRICE, price)
    return pos + LEN_U


@kernel
def trade(out, pos, ts, names, stock, side, shares, price, match):
    """Non-cross trade against a non-displayed order; the public feed carries order reference 0."""
    header(out, pos, ord("P"), stock + 1, ts)
    put.be64(out, pos + TRADE_REF, 0)
    out[pos + TRADE_SIDE] = SIDE_CODE[side]
    put.be32(out, pos + TRADE_SHARES, shares)
    put.copy(out, pos + TRADE_STOCK, names[stock], 0, 8)
    put.be32(out, pos + TRADE_PRICE, price)
    put.be64(out, pos + TRADE_MATCH, match)
    return pos + LEN_P


@kernel
def broken(out, pos, ts, stock, match):
    header(out, pos, ord("B"), stock + 1, ts)
    put.be64(out, pos + BROKEN_MATCH, match)
    return pos + LEN_B
