"""Offsets and lengths the generator's kernels store at, bound as module constants from the layout table.

The book-building offsets are the decoder's own (``appliance.decode.offsets``); the generator also writes
fields the decoder never reads (stock on adds and trades, attribution, NOII and collar prices, trading
states), derived here from the same table.  numba freezes module-level integers into the compiled code.
"""
from appliance.decode.offsets import (  # noqa: F401  (re-exported for the kernels)
    ADD_PRICE, ADD_REF, ADD_SHARES, ADD_SIDE, BROKEN_MATCH, CANCEL_REF, CANCEL_SHARES, CROSS_MATCH, CROSS_PRICE,
    DELETE_REF, EXEC_MATCH, EXEC_PRICE, EXEC_PRINTABLE, EXEC_REF, EXEC_SHARES, LOCATE, REPLACE_NEW_REF,
    REPLACE_OLD_REF, REPLACE_PRICE, REPLACE_SHARES, TIMESTAMP, TRADE_MATCH, TRADE_PRICE, TRADE_SHARES, TRADE_SIDE)
from appliance.itch.layout import MESSAGE_LENGTH, MESSAGES, offset

TRACKING = offset("A", "Tracking Number")
ADD_STOCK = offset("A", "Stock")
assert ADD_STOCK == offset("F", "Stock")
ADD_ATTRIBUTION = offset("F", "Attribution")
TRADE_REF = offset("P", "Order Reference Number")
TRADE_STOCK = offset("P", "Stock")

TRADING_STATE = offset("H", "Trading State")
HALT_ACTION = offset("h", "Operational Halt Action")
NOII_FAR = offset("I", "Far Price")
NOII_NEAR = offset("I", "Near Price")
NOII_REFERENCE = offset("I", "Current Reference Price")
NOII_DIRECTION = offset("I", "Imbalance Direction")
COLLAR_REFERENCE = offset("J", "Auction Collar Reference Price")
COLLAR_UPPER = offset("J", "Upper Auction Collar Price")
COLLAR_LOWER = offset("J", "Lower Auction Collar Price")

# Every type shares the 11-byte header; the kernels rely on it.
assert all(offset(t, "Stock Locate") == LOCATE and offset(t, "Timestamp") == TIMESTAMP
           and offset(t, "Tracking Number") == TRACKING for t in MESSAGES)

LEN_A = int(MESSAGE_LENGTH[ord("A")])
LEN_F = int(MESSAGE_LENGTH[ord("F")])
LEN_E = int(MESSAGE_LENGTH[ord("E")])
LEN_C = int(MESSAGE_LENGTH[ord("C")])
LEN_X = int(MESSAGE_LENGTH[ord("X")])
LEN_D = int(MESSAGE_LENGTH[ord("D")])
LEN_U = int(MESSAGE_LENGTH[ord("U")])
LEN_P = int(MESSAGE_LENGTH[ord("P")])
LEN_B = int(MESSAGE_LENGTH[ord("B")])
