"""Every buffer the decode kernels touch, allocated once, up front.

The kernels take these named tuples of numpy arrays and never allocate.  What happens when each fixed-size
structure fills is decided here and documented in the README ("Capacities"):

* order table (open addressing, sized for ``order_capacity`` live orders at load <= 3/4): a new add beyond
  capacity is refused and counted (``order_table_full``); later messages naming it count as unknown refs.
* price-level pool (``level_pool`` levels shared by every book side, each side a sorted segment that doubles
  when full): a level that cannot be created is counted (``level_pool_full``) and that book is incomplete.
* session table (``MAX_SESSIONS``) and line table (``MAX_LINES``): packets beyond them are counted and skipped.
* pending table (``MAX_PENDING`` packets held while another line may fill a hole, each up to
  ``PENDING_SLOT`` bytes): when it is full the oldest hole is declared a gap early (``pending_forced``).
* output buffers: the kernels stop at a record boundary before any can overflow; the driver writes them out
  and calls again, so no row is ever dropped.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from appliance.decode import counters as C

LOCATES = 1 << 16            # stock locate is a u16: books are indexed directly by it
SIDES = 2                    # 0 = buy ('B'), 1 = sell ('S')
MAX_LINES = 16
MAX_SESSIONS = 64
MAX_PENDING = 1024
PENDING_SLOT = 9216          # a jumbo frame's UDP payload fits
OUT_ROWS = 1 << 16
# Worst case rows one record can add to an output buffer: a 64 KiB payload of 14-byte blocks, each of which
# may add a trade and a feed-clock mark to the tape (held packets are released one at a time, checked again).
ROW_MARGIN = 9600
MSG_SLOT = 64                # --messages copies each applied message into a slot this wide

DEFAULT_ORDER_CAPACITY = 6_000_000
DEFAULT_LEVEL_POOL = 1 << 24

Book = namedtuple("Book", [
    "ot",           # uint64[(ring + overflow) * 3]: the order table (orders.py): rows of order_ref,
                    #   price << 32 | shares, stock_locate << 8 | side; ref 0 = empty
    "ot_meta",      # int64[6]: ring mask, overflow mask, overflow hash shift, max live orders, overflow count,
                    #   largest overflow mask (the overflow starts small and doubles up to it)
    "ot_hi",        # uint64[1]: highest reference ever moved to the overflow
    "ot_scratch",   # uint64[overflow * 3 * 3/4]: where the overflow's entries wait while it doubles
    "side",         # int64[LOCATES * SIDES, 8]: one cache line per book side (index locate * 2 + side), see SIDE_*
    "lv",           # int64[pool, 2]: level key (price for bids, 0xFFFFFFFF - price for asks: best is last),
                    #   aggregate shares; a side's levels are a sorted segment of this pool
    "lv_meta",      # int64[2]: LV_NEXT pool bump index, LV_SIZE pool size
    "stats",        # int64[LOCATES, 4]: volume, notional, trades, cross_volume
    "sym",          # uint8[LOCATES, 8]: stock name from the directory (R)
    "sym_set",      # int8[LOCATES]: 1 once an R named the locate
])
STAT_VOLUME, STAT_NOTIONAL, STAT_TRADES, STAT_CROSS = range(4)
LV_KEY, LV_SHARES = range(2)           # lv columns
LV_NEXT, LV_SIZE = range(2)            # lv_meta slots
# Book side row: its level segment (pool start, capacity, levels in use) and the top of book last emitted for it
SIDE_START, SIDE_CAP, SIDE_LEN, SIDE_LAST_PRICE, SIDE_LAST_SIZE = range(5)

Mold = namedtuple("Mold", [
    "ln_group",     # int64[MAX_LINES]: IPv4 destination group of each line
    "ln_port",      # int64[MAX_LINES]
    "ln_meta",      # int64[2]: LN_COUNT lines in use, LN_DISCOVER auto-discover flag
    "ln_packets",   # int64[MAX_LINES]: datagrams received per line
    "ss_name",      # uint8[MAX_SESSIONS, 10]
    "ss_next",      # int64[MAX_SESSIONS]: next expected sequence number
    "ss_first",     # int64[MAX_SESSIONS]: first sequence number seen (-1: session not started)
    "ss_line_next",  # int64[MAX_SESSIONS, MAX_LINES]: per line, next sequence it will send (0 = not seen)
    "ss_ended",     # int64[MAX_SESSIONS]: 1 after an end-of-session packet
    "ss_meta",      # int64[2]: SS_COUNT sessions in use, SS_RESOLVE resolve-needed flag
    "pd_used",      # int64[MAX_PENDING]: 1 while the slot holds a packet
    "pd_sess", "pd_seq", "pd_count",
    "stash",        # uint8[MAX_PENDING * PENDING_SLOT]: copies of held packets (live rings recycle frames)
])
LN_COUNT, LN_DISCOVER = range(2)       # ln_meta slots
SS_COUNT, SS_RESOLVE = range(2)        # ss_meta slots

# The decode kernels' state as one argument (walk.frame, the walkers, the ring kernels): adding a table to the
# decoder is a change here and in ``Decoder``, not in every kernel signature.
Decode = namedtuple("Decode", ["mold", "book", "out", "cnt", "by_type"])

Out = namedtuple("Out", [
    "n",            # int64[8]: rows used per buffer (indices below), then flags
    "bbo",          # int64[OUT_ROWS, 6]: timestamp, locate, bid_price, bid_size, ask_price, ask_size
    "trades",       # int64[OUT_ROWS, 7]: timestamp, locate, kind, side, shares, price, match_number
    "msgs",         # uint8[OUT_ROWS, MSG_SLOT]: applied message bytes (only with --messages)
    "msg_meta",     # int64[OUT_ROWS, 2]: session index (-1 for a day file), sequence number
    "broken",       # int64[OUT_ROWS]: match numbers of B messages
    "gaps",         # int64[OUT_ROWS, 3]: session index, first missing, last missing
    "packets",      # int64[OUT_ROWS, 6]: frame number, line, session index, sequence, count, status (--packets)
    "clock",        # int64[4]: VWAP step ns, window ns, next mark at, epoch floor (see book._feed_clock)
])
CLOCK_STEP, CLOCK_WINDOW, CLOCK_NEXT, CLOCK_FLOOR = range(4)
KIND_CLOCK = 0               # a tape row of this kind is a feed-clock mark, not a trade
KIND_BROKEN = ord("B")       # a tape row of this kind is a B message: the trade with its match number was broken
# columns of out.trades (the tape) and out.bbo
TAPE_TS, TAPE_LOCATE, TAPE_KIND, TAPE_SIDE, TAPE_SHARES, TAPE_PRICE, TAPE_MATCH = range(7)
BBO_TS, BBO_LOCATE, BBO_BID_PRICE, BBO_BID_SIZE, BBO_ASK_PRICE, BBO_ASK_SIZE = range(6)
MSG_SESSION, MSG_SEQUENCE = range(2)                                    # columns of out.msg_meta
GAP_SESSION, GAP_FIRST, GAP_LAST = range(3)                             # columns of out.gaps
PKT_FRAME, PKT_LINE, PKT_SESSION, PKT_SEQUENCE, PKT_COUNT, PKT_STATUS = range(6)   # columns of out.packets
N_BBO, N_TRADES, N_MSGS, N_BROKEN, N_GAPS, N_PACKETS = range(6)
FLAG_PACKETS = 6             # out.n[6] = 1 when every MoldUDP64 packet is listed
FLAG_MESSAGES = 7            # out.n[7] = 1 when applied messages are copied out


OVERFLOW_START = 1 << 16    # overflow slots at the start of a replay (1.5 MiB); doubles as it fills
MAX_RING = 1 << 22          # 4 Mi references (96 MiB): orders outliving that many later adds move to overflow


def order_table_slots(order_capacity: int) -> tuple[int, int]:
    """(ring slots, overflow slots): powers of two; the overflow alone holds ``order_capacity`` at <= 3/4 load."""
    need = max(64, (order_capacity * 4 + 2) // 3)
    ring = min(MAX_RING, 1 << (max(64, order_capacity) - 1).bit_length())
    return ring, 1 << (need - 1).bit_length()


def table_bytes(order_capacity: int, level_pool: int) -> tuple[int, int]:
    """Address space the order table (with its rehash scratch) and the level pool reserve, in bytes."""
    ring, slots = order_table_slots(order_capacity)
    return ((ring + slots) * 3 + (slots * 3 // 4 + 1) * 3) * 8, level_pool * 16


def new_book(order_capacity: int = DEFAULT_ORDER_CAPACITY, level_pool: int = DEFAULT_LEVEL_POOL) -> Book:
    """The decoder's tables; MemoryError (or ValueError for sizes numpy cannot express) when they do not fit."""
    ring, slots = order_table_slots(order_capacity)
    start = min(slots, OVERFLOW_START)
    bits = start.bit_length() - 1
    sides = LOCATES * SIDES
    # np.zeros maps untouched pages lazily, so a large default costs only what a feed really uses.
    return Book(
        ot=np.zeros((ring + slots) * 3, np.uint64),
        ot_meta=np.array([ring - 1, start - 1, 64 - (bits - 4), order_capacity, 0, slots - 1], np.int64),
        ot_hi=np.zeros(1, np.uint64), ot_scratch=np.zeros((slots * 3 // 4 + 1) * 3, np.uint64),
        side=np.zeros((sides, 8), np.int64), lv=np.zeros((level_pool, 2), np.int64),
        lv_meta=np.array([0, level_pool], np.int64), stats=np.zeros((LOCATES, 4), np.int64),
        sym=np.full((LOCATES, 8), 32, np.uint8), sym_set=np.zeros(LOCATES, np.int8),
    )


def new_mold(feeds: list[tuple[int, int]] | None) -> Mold:
    """Session-layer state; ``feeds`` is a list of (group as int, port), or None to discover multicast lines."""
    feeds = feeds or []
    if len(feeds) > MAX_LINES:
        raise ValueError(f"at most {MAX_LINES} feeds")
    group = np.zeros(MAX_LINES, np.int64)
    port = np.zeros(MAX_LINES, np.int64)
    for i, (g, p) in enumerate(feeds):
        group[i], port[i] = g, p
    return Mold(
        ln_group=group, ln_port=port, ln_meta=np.array([len(feeds), 0 if feeds else 1], np.int64),
        ln_packets=np.zeros(MAX_LINES, np.int64),
        ss_name=np.zeros((MAX_SESSIONS, 10), np.uint8), ss_next=np.zeros(MAX_SESSIONS, np.int64),
        ss_first=np.full(MAX_SESSIONS, -1, np.int64), ss_line_next=np.zeros((MAX_SESSIONS, MAX_LINES), np.int64),
        ss_ended=np.zeros(MAX_SESSIONS, np.int64), ss_meta=np.zeros(2, np.int64),
        pd_used=np.zeros(MAX_PENDING, np.int64), pd_sess=np.zeros(MAX_PENDING, np.int64),
        pd_seq=np.zeros(MAX_PENDING, np.int64), pd_count=np.zeros(MAX_PENDING, np.int64),
        stash=np.zeros(MAX_PENDING * PENDING_SLOT, np.uint8),
    )


def new_out(messages: bool = False, packets: bool = False, step_ns: int = 100_000_000,
            window_ns: int = 1_000_000_000) -> Out:
    n = np.zeros(8, np.int64)
    n[FLAG_MESSAGES] = 1 if messages else 0
    n[FLAG_PACKETS] = 1 if packets else 0
    msg_rows = OUT_ROWS if messages else 1
    return Out(
        n=n, bbo=np.zeros((OUT_ROWS, 6), np.int64), trades=np.zeros((OUT_ROWS, 7), np.int64),
        msgs=np.zeros((msg_rows, MSG_SLOT), np.uint8), msg_meta=np.zeros((msg_rows, 2), np.int64),
        broken=np.zeros(OUT_ROWS, np.int64), gaps=np.zeros((OUT_ROWS, 3), np.int64),
        packets=np.zeros((OUT_ROWS if packets else 1, 6), np.int64),
        clock=np.array([step_ns, window_ns, 0, -(1 << 62)], np.int64),
    )


def new_counters() -> tuple[np.ndarray, np.ndarray]:
    """The counter array (slots in ``counters``) and messages by type byte."""
    return np.zeros(C.SIZE, np.int64), np.zeros(256, np.int64)
