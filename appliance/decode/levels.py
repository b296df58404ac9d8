"""Full-depth price levels: one sorted array segment per (stock locate, side) inside a shared pool.

Each side's levels are kept sorted by a key that puts the best level last (bids: key = price; asks:
key = 0xFFFFFFFF - price), so top of book is one load, and inserting or removing near the top -- where nearly
all activity is -- moves only the few levels above it.  A segment that fills is copied to a segment twice its
size taken from the pool's bump index; the old one is abandoned (at most as much waste as live data).  If the
pool is exhausted the level is not created, ``level_pool_full`` is counted, and that book is incomplete.
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode import counters as C

_ASK_FLIP = 0xFFFFFFFF
FIRST_SEGMENT = 8


@kernel(inline="always")
def level_key(side, price):
    return price if side == 0 else _ASK_FLIP - price


@kernel(inline="always")
def key_price(side, key):
    return key if side == 0 else _ASK_FLIP - key


@kernel(inline="always")
def _lower_bound(keys, start, n, key):
    """First index in [0, n) whose key is >= ``key`` (n if none); checks the top first, where activity is."""
    if n == 0 or np.int64(keys[start + n - 1]) < key:
        return n
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if np.int64(keys[start + mid]) < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel
def _grow(bk, s, cnt):
    old_cap = bk.lv_cap[s]
    new_cap = FIRST_SEGMENT if old_cap == 0 else old_cap * 2
    base = bk.lv_meta[0]
    if base + new_cap > bk.lv_meta[1]:
        cnt[C.LEVEL_POOL_FULL] += 1
        return False
    old = bk.lv_start[s]
    for i in range(bk.lv_len[s]):
        bk.lv_key[base + i] = bk.lv_key[old + i]
        bk.lv_shares[base + i] = bk.lv_shares[old + i]
    bk.lv_start[s] = base
    bk.lv_cap[s] = new_cap
    bk.lv_meta[0] = base + new_cap
    return True


@kernel(inline="always")
def add_shares(bk, s, key, shares, cnt):
    """Add ``shares`` at ``key`` on book side ``s`` (= locate * 2 + side), creating the level if needed."""
    start = bk.lv_start[s]
    n = bk.lv_len[s]
    pos = _lower_bound(bk.lv_key, start, n, key)
    if pos < n and np.int64(bk.lv_key[start + pos]) == key:
        bk.lv_shares[start + pos] += shares
        return
    if n == bk.lv_cap[s]:
        if not _grow(bk, s, cnt):
            return
        start = bk.lv_start[s]
    for i in range(start + n, start + pos, -1):
        bk.lv_key[i] = bk.lv_key[i - 1]
        bk.lv_shares[i] = bk.lv_shares[i - 1]
    bk.lv_key[start + pos] = key
    bk.lv_shares[start + pos] = shares
    bk.lv_len[s] = n + 1


@kernel(inline="always")
def remove_shares(bk, s, key, shares, cnt):
    """Take ``shares`` from the level at ``key``; the level goes when it reaches zero."""
    start = bk.lv_start[s]
    n = bk.lv_len[s]
    pos = _lower_bound(bk.lv_key, start, n, key)
    if pos == n or np.int64(bk.lv_key[start + pos]) != key:
        cnt[C.LEVEL_MISSING] += 1
        return
    left = bk.lv_shares[start + pos] - shares
    if left > 0:
        bk.lv_shares[start + pos] = left
        return
    for i in range(start + pos, start + n - 1):
        bk.lv_key[i] = bk.lv_key[i + 1]
        bk.lv_shares[i] = bk.lv_shares[i + 1]
    bk.lv_len[s] = n - 1


@kernel(inline="always")
def best(bk, s, side):
    """(price, aggregate shares) of the best level on book side ``s``, (0, 0) when empty."""
    n = bk.lv_len[s]
    if n == 0:
        return 0, 0
    top = bk.lv_start[s] + n - 1
    return key_price(side, np.int64(bk.lv_key[top])), bk.lv_shares[top]
