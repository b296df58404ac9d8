"""Full-depth price levels: one sorted array segment per (stock locate, side) inside a shared pool.

Each side's levels are kept sorted by a key that puts the best level last (bids: key = price; asks:
key = 0xFFFFFFFF - price), so top of book is one load, and inserting or removing near the top -- where nearly
all activity is -- moves only the few levels above it.  A segment that fills is copied to a segment twice its
size taken from the pool's bump index; the old one is abandoned (at most as much waste as live data).  If the
pool is exhausted the level is not created, ``level_pool_full`` is counted, and that book is incomplete.

Layout is chosen for the cache: a side's segment bounds live in one 64-byte row (``Book.side``) beside the top
of book last emitted for it, and each level keeps its key and shares side by side, so a message near the top of
a book touches about two cache lines of level data.
"""

from appliance._jit import kernel
from appliance.decode import counters as C
from appliance.decode.state import LV_KEY, LV_NEXT, LV_SHARES, LV_SIZE, SIDE_CAP, SIDE_LEN, SIDE_START

ASK_FLIP = 0xFFFFFFFF
FIRST_SEGMENT = 8
TOP_SCAN = 8                 # levels below the top checked one by one before a binary search


@kernel(inline="always")
def level_key(side, price):
    return price if side == 0 else ASK_FLIP - price


@kernel(inline="always")
def key_price(side, key):
    return key if side == 0 else ASK_FLIP - key


@kernel(inline="always")
def _lower_bound(lv, start, n, key):
    """First index in [0, n) whose key is >= ``key`` (n if none).

    Nearly all activity is within a few levels of the top (the end of the segment), so the top few levels are
    scanned first; a binary search over the rest handles deep levels.
    """
    i = n - 1
    stop = n - TOP_SCAN if n > TOP_SCAN else 0
    while i >= stop:
        k = lv[start + i, LV_KEY]
        if k <= key:
            return i if k == key else i + 1
        i -= 1
    lo = 0
    hi = stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if lv[start + mid, LV_KEY] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def _grow(bk, s, cnt):
    row = bk.side[s]
    old_cap = row[SIDE_CAP]
    new_cap = FIRST_SEGMENT if old_cap == 0 else old_cap * 2
    base = bk.lv_meta[LV_NEXT]
    if base + new_cap > bk.lv_meta[LV_SIZE]:
        cnt[C.LEVEL_POOL_FULL] += 1
        return False
    old = row[SIDE_START]
    for i in range(row[SIDE_LEN]):
        bk.lv[base + i, LV_KEY] = bk.lv[old + i, LV_KEY]
        bk.lv[base + i, LV_SHARES] = bk.lv[old + i, LV_SHARES]
    row[SIDE_START] = base
    row[SIDE_CAP] = new_cap
    bk.lv_meta[LV_NEXT] = base + new_cap
    return True


@kernel(inline="always")
def add_shares(bk, s, key, shares, cnt):
    """Add ``shares`` at ``key`` on book side ``s`` (= locate * 2 + side), creating the level if needed."""
    row = bk.side[s]
    lv = bk.lv
    start = row[SIDE_START]
    n = row[SIDE_LEN]
    pos = _lower_bound(lv, start, n, key)
    if pos < n and lv[start + pos, LV_KEY] == key:
        lv[start + pos, LV_SHARES] += shares
        return
    if n == row[SIDE_CAP]:
        if not _grow(bk, s, cnt):
            return
        start = row[SIDE_START]
    for i in range(start + n, start + pos, -1):
        lv[i, LV_KEY] = lv[i - 1, LV_KEY]
        lv[i, LV_SHARES] = lv[i - 1, LV_SHARES]
    lv[start + pos, LV_KEY] = key
    lv[start + pos, LV_SHARES] = shares
    row[SIDE_LEN] = n + 1


@kernel(inline="always")
def remove_shares(bk, s, key, shares, cnt):
    """Take ``shares`` from the level at ``key``; the level goes when it reaches zero."""
    row = bk.side[s]
    lv = bk.lv
    start = row[SIDE_START]
    n = row[SIDE_LEN]
    pos = _lower_bound(lv, start, n, key)
    if pos == n or lv[start + pos, LV_KEY] != key:
        cnt[C.LEVEL_MISSING] += 1
        return
    left = lv[start + pos, LV_SHARES] - shares
    if left > 0:
        lv[start + pos, LV_SHARES] = left
        return
    for i in range(start + pos, start + n - 1):
        lv[i, LV_KEY] = lv[i + 1, LV_KEY]
        lv[i, LV_SHARES] = lv[i + 1, LV_SHARES]
    row[SIDE_LEN] = n - 1


@kernel(inline="always")
def best(bk, s, side):
    """(price, aggregate shares) of the best level on book side ``s``, (0, 0) when empty."""
    row = bk.side[s]
    n = row[SIDE_LEN]
    if n == 0:
        return 0, 0
    top = row[SIDE_START] + n - 1
    return key_price(side, bk.lv[top, LV_KEY]), bk.lv[top, LV_SHARES]
