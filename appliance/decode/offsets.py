"""Byte offsets the kernels read, bound as module constants from the one layout table.

numba freezes module-level integers into the compiled code, so these cost nothing at run time; deriving them
from ``appliance.itch.layout`` keeps the kernels and the reference decoder on one definition.
"""
from appliance.itch.layout import MESSAGE_LENGTH, offset

MSG_LENGTH = MESSAGE_LENGTH          # uint16[256]: type byte -> length, 0 = unknown type

# Message type bytes the book acts on (the spec's letters; every other type is only counted).
T_ADD, T_ADD_MPID, T_EXECUTED, T_EXECUTED_AT, T_CANCEL, T_DELETE, T_REPLACE = (ord(c) for c in "AFECXDU")
T_TRADE, T_CROSS, T_BROKEN, T_DIRECTORY = (ord(c) for c in "PQBR")
assert all(MESSAGE_LENGTH[t] for t in (T_ADD, T_ADD_MPID, T_EXECUTED, T_EXECUTED_AT, T_CANCEL, T_DELETE, T_REPLACE,
                                       T_TRADE, T_CROSS, T_BROKEN, T_DIRECTORY))

LOCATE = offset("A", "Stock Locate")
TIMESTAMP = offset("A", "Timestamp")

ADD_REF = offset("A", "Order Reference Number")
ADD_SIDE = offset("A", "Buy/Sell Indicator")
ADD_SHARES = offset("A", "Shares")
ADD_PRICE = offset("A", "Price")
assert (ADD_REF, ADD_SIDE, ADD_SHARES, ADD_PRICE) == tuple(
    offset("F", f) for f in ("Order Reference Number", "Buy/Sell Indicator", "Shares", "Price"))

# Every message naming a resting order (D, X, E, C, U) carries that reference at the same offset.
ORDER_REF = offset("D", "Order Reference Number")
assert ORDER_REF == offset("X", "Order Reference Number") == offset("E", "Order Reference Number") \
    == offset("C", "Order Reference Number") == offset("U", "Original Order Reference Number")

EXEC_REF = offset("E", "Order Reference Number")
EXEC_SHARES = offset("E", "Executed Shares")
EXEC_MATCH = offset("E", "Match Number")
assert (EXEC_REF, EXEC_SHARES, EXEC_MATCH) == tuple(
    offset("C", f) for f in ("Order Reference Number", "Executed Shares", "Match Number"))
EXEC_PRINTABLE = offset("C", "Printable")
EXEC_PRICE = offset("C", "Execution Price")

CANCEL_REF = offset("X", "Order Reference Number")
CANCEL_SHARES = offset("X", "Cancelled Shares")
DELETE_REF = offset("D", "Order Reference Number")

REPLACE_OLD_REF = offset("U", "Original Order Reference Number")
REPLACE_NEW_REF = offset("U", "New Order Reference Number")
REPLACE_SHARES = offset("U", "Shares")
REPLACE_PRICE = offset("U", "Price")

TRADE_SIDE = offset("P", "Buy/Sell Indicator")
TRADE_SHARES = offset("P", "Shares")
TRADE_PRICE = offset("P", "Price")
TRADE_MATCH = offset("P", "Match Number")

CROSS_SHARES = offset("Q", "Shares")
CROSS_PRICE = offset("Q", "Cross Price")
CROSS_MATCH = offset("Q", "Match Number")

BROKEN_MATCH = offset("B", "Match Number")

DIRECTORY_STOCK = offset("R", "Stock")
