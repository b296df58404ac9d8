"""The order table: order reference -> (price, shares, stock locate, side).

References rise through the day and most orders die young, so the table is a direct-mapped *ring* indexed by
the reference's low bits, backed by an open-addressing *overflow* hash for the few orders that outlive a full
turn of the ring:

* an add writes slot ``ref & ring_mask`` -- consecutive references fill consecutive slots, so adds stream
  through memory and deletes of recent orders hit cache lines written moments ago;
* when that slot still holds an older live order, the older order moves to the overflow hash;
* a lookup checks the ring slot and, only if that misses and the overflow may hold the reference (it holds
  references no higher than the highest one it ever took), probes the overflow.

Both parts live in one flat uint64 array of 3-word rows -- ring rows ``[0, R)``, overflow rows ``[R, R + S)`` --
so a row number is a handle whichever part holds the order: word 0 the reference (0 = empty; a real feed never
uses 0: an add naming it is refused, and a lookup of it finds nothing, since an empty slot would "match" it),
word 1 ``price << 32 | shares``, word 2 ``locate << 8 | side``.

The overflow hash keeps runs of 16 consecutive references in neighbouring slots and spreads the blocks by
Fibonacci hashing; linear probing with backward-shift deletion keeps chains short without tombstones.  Its
address space is reserved for the table's whole capacity, so it cannot fill before the live-order limit is
reached, but it starts small and doubles (a rehash through ``ot_scratch``, a handful of times a day) when it
passes 3/4 load: a day whose long-lived orders are few touches -- and has the kernel zero -- only what it uses.
Measured on the benchmark day, a full-size overflow cost about a fifth of the replay's throughput.

Every probe is bounded by the overflow's size: the live-order limit keeps an empty row in it, but the loops do
not rely on that invariant -- a probe that finds neither the reference nor an empty row after one full turn
gives up (``NOWHERE``), and an add that cannot place an evicted order refuses the new one (counted by the
caller as ``order_table_full``) rather than lose a resting order.
"""
import numpy as np

from appliance._jit import kernel

_FIB = np.uint64(0x9E3779B97F4A7C15)
_4 = np.uint64(4)
_15 = np.uint64(15)
_32 = np.uint64(32)
_8 = np.uint64(8)
_LOW32 = np.uint64(0xFFFFFFFF)

# ot_meta slots
RING_MASK, OVER_MASK, OVER_SHIFT, MAX_LIVE, OVER_COUNT, OVER_MAX_MASK = range(6)
NOWHERE = -1                 # a probe's give-up: no row holds the reference and no empty row was found

# add() results
ADDED, ALREADY_LIVE, NO_ROOM = 0, 1, 2


@kernel(inline="always")
def _home(ref, meta):
    x = (ref >> _4) * _FIB
    return np.int64(((x >> np.uint64(meta[OVER_SHIFT])) << _4) | (ref & _15)) & meta[OVER_MASK]


@kernel(inline="always")
def _over_probe(ot, meta, ref):
    """Overflow row holding ``ref``, or the empty overflow row where it belongs: (row, present); (NOWHERE,
    False) after one full turn of the hash without either."""
    base = meta[RING_MASK] + 1
    mask = meta[OVER_MASK]
    i = _home(ref, meta)
    for _ in range(mask + 1):
        k = ot[(base + i) * 3]
        if k == ref:
            return base + i, True
        if k == 0:
            return base + i, False
        i = (i + 1) & mask
    return NOWHERE, False


@kernel(inline="always")
def _may_overflow(meta, hi, ref):
    return meta[OVER_COUNT] > 0 and ref <= hi[0]


@kernel(inline="always")
def ring_row(meta, ref):
    return np.int64(ref & np.uint64(meta[RING_MASK]))


@kernel(inline="always")
def find(ot, meta, hi, ref):
    """Row holding the live order ``ref``, or -1 (always for reference 0, which marks an empty row)."""
    if ref == 0:
        return -1
    r = np.int64(ref & np.uint64(meta[RING_MASK]))
    if ot[r * 3] == ref:
        return r
    if _may_overflow(meta, hi, ref):
        row, present = _over_probe(ot, meta, ref)
        if present:
            return row
    return -1


@kernel(inline="always")
def _write(ot, row, ref, word1, word2):
    ot[row * 3] = ref
    ot[row * 3 + 1] = word1
    ot[row * 3 + 2] = word2


@kernel
def _grow(ot, meta, scratch):
    """Double the overflow hash: park its entries in ``scratch``, empty it, rehash them at the new size."""
    base = meta[RING_MASK] + 1
    n = meta[OVER_MASK] + 1
    k = 0
    for i in range(n):
        row = (base + i) * 3
        if ot[row] != 0:
            scratch[k * 3] = ot[row]
            scratch[k * 3 + 1] = ot[row + 1]
            scratch[k * 3 + 2] = ot[row + 2]
            ot[row] = 0
            k += 1
    meta[OVER_MASK] = 2 * n - 1          # rows [n, 2n) were never used: still zero
    meta[OVER_SHIFT] -= 1
    for j in range(k):
        row, _ = _over_probe(ot, meta, scratch[j * 3])
        if row != NOWHERE:                   # cannot happen: twice the rows for the same entries
            _write(ot, row, scratch[j * 3], scratch[j * 3 + 1], scratch[j * 3 + 2])


@kernel(inline="always")
def add(ot, meta, hi, scratch, ref, price, shares, locate, side):
    """Insert ``ref`` (never 0): ADDED, ALREADY_LIVE, or NO_ROOM when an older order it displaces from the
    ring finds no overflow row (nothing changed).  The caller has checked capacity."""
    r = np.int64(ref & np.uint64(meta[RING_MASK]))
    k = ot[r * 3]
    if k == ref:
        return ALREADY_LIVE
    if _may_overflow(meta, hi, ref):
        _, present = _over_probe(ot, meta, ref)
        if present:
            return ALREADY_LIVE
    if k != 0:
        # The ring slot holds an older live order: it outlived a turn of the ring; keep it in the overflow.
        size = meta[OVER_MASK] + 1
        if 4 * (meta[OVER_COUNT] + 1) > 3 * size and meta[OVER_MASK] < meta[OVER_MAX_MASK]:
            _grow(ot, meta, scratch)
        row, _ = _over_probe(ot, meta, k)
        if row == NOWHERE:
            return NO_ROOM
        _write(ot, row, k, ot[r * 3 + 1], ot[r * 3 + 2])
        meta[OVER_COUNT] += 1
        if k > hi[0]:
            hi[0] = k
    _write(ot, r, ref, (np.uint64(price) << _32) | np.uint64(shares), (np.uint64(locate) << _8) | np.uint64(side))
    return ADDED


@kernel(inline="always")
def remove(ot, meta, row):
    """Delete the order in ``row`` (a ring row, or an overflow row whose probe run is then repaired)."""
    base = meta[RING_MASK] + 1
    if row < base:
        ot[row * 3] = 0
        return
    meta[OVER_COUNT] -= 1
    mask = meta[OVER_MASK]
    i = row - base
    j = i
    for _ in range(mask):                    # at most every other row once
        j = (j + 1) & mask
        k = ot[(base + j) * 3]
        if k == 0:
            break
        h = _home(k, meta)
        # The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
        if (i <= j and (h <= i or h > j)) or (i > j and h <= i and h > j):
            _write(ot, base + i, k, ot[(base + j) * 3 + 1], ot[(base + j) * 3 + 2])
            i = j
    ot[(base + i) * 3] = 0


@kernel(inline="always")
def price_of(ot, row):
    return np.int64(ot[row * 3 + 1] >> _32)


@kernel(inline="always")
def shares_of(ot, row):
    return np.int64(ot[row * 3 + 1] & _LOW32)


@kernel(inline="always")
def set_shares(ot, row, shares):
    ot[row * 3 + 1] = (ot[row * 3 + 1] & (_LOW32 << _32)) | np.uint64(shares)


@kernel(inline="always")
def locate_of(ot, row):
    return np.int64(ot[row * 3 + 2] >> _8)


@kernel(inline="always")
def side_of(ot, row):
    return np.int64(ot[row * 3 + 2] & np.uint64(0xFF))
