"""Rows of the capture's rings (``decode.state``'s columns) as published records, one Python object each.

The publisher's own path is compiled (``wire``: rows to record bytes in bulk); these are the readable reference
its tests compare it with byte for byte, and what the publisher uses for the rare status records (gaps,
session names).  The publisher stamps ``publisher`` and ``sequence`` when it sends; the functions here leave
both 0. ``sym`` is the region's ``uint8[LOCATES, 8]`` symbol table (the names as of now); ``session_names`` its
``ss_name``.
"""
from __future__ import annotations

from appliance.decode.state import BBO_ASK_PRICE, BBO_ASK_SIZE, BBO_BID_PRICE, BBO_BID_SIZE, BBO_LOCATE, BBO_TS, \
    GAP_FIRST, GAP_LAST, GAP_SESSION, KIND_BROKEN, KIND_CLOCK, TAPE_KIND, TAPE_LOCATE, TAPE_MATCH, TAPE_PRICE, \
    TAPE_SHARES, TAPE_SIDE, TAPE_TS
from appliance.decode.vwap import VW_END, VW_LOCATE, VW_NOTIONAL, VW_TRADES, VW_VOLUME
from appliance.publish import records as R

U64 = (1 << 64) - 1           # match numbers are u64 on the wire; the kernels keep them as int64 (may be negative)


def symbol_of(sym, locate: int) -> str:
    return bytes(sym[locate]).rstrip(b" ").decode("latin-1")


def bbo(row, sym) -> R.Bbo:
    loc = int(row[BBO_LOCATE])
    return R.Bbo(0, 0, int(row[BBO_TS]), loc, symbol_of(sym, loc), int(row[BBO_BID_PRICE]), int(row[BBO_BID_SIZE]),
                 int(row[BBO_ASK_PRICE]), int(row[BBO_ASK_SIZE]))


def tape(row, sym) -> R.Trade | R.Broken | None:
    """A trade or a broken trade; None for a feed-clock mark (those only drive the VWAP windows)."""
    kind = int(row[TAPE_KIND])
    if kind == KIND_CLOCK:
        return None
    loc = int(row[TAPE_LOCATE])
    if kind == KIND_BROKEN:
        return R.Broken(0, 0, int(row[TAPE_TS]), loc, symbol_of(sym, loc), int(row[TAPE_MATCH]) & U64)
    return R.Trade(0, 0, int(row[TAPE_TS]), loc, symbol_of(sym, loc), kind & 0xFF, int(row[TAPE_SIDE]) & 0xFF,
                   int(row[TAPE_PRICE]), int(row[TAPE_SHARES]), int(row[TAPE_MATCH]) & U64)


def vwap(row, sym, window_ns: int) -> R.Vwap:
    loc = int(row[VW_LOCATE])
    return R.Vwap(0, 0, int(row[VW_END]), loc, symbol_of(sym, loc), window_ns, int(row[VW_VOLUME]),
                  int(row[VW_NOTIONAL]), int(row[VW_TRADES]))


def session_name(session_names, index: int) -> str:
    if 0 <= index < len(session_names):
        return bytes(session_names[index]).rstrip(b" \0").decode("latin-1")
    return ""


def gap(row, session_names, timestamp: int) -> R.Status:
    return R.Status(0, 0, timestamp, code=R.STATUS_GAP, session=session_name(session_names, int(row[GAP_SESSION])),
                    first=int(row[GAP_FIRST]), last=int(row[GAP_LAST]))
