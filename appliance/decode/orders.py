"""The order table: order reference -> (price, shares, stock locate, side), open addressing in one flat array.

Layout: ``ot`` is uint64[slots, 3], one 24-byte row per slot, so a probe that finds its key already holds the
order's fields in the same cache line.  Key 0 marks an empty slot (a real feed never uses reference 0; an add
naming it is refused).

Hash: references rise through the day and deletes mostly hit recent orders, so runs of 16 consecutive
references keep their low 4 bits and land in neighbouring slots (one or two cache lines), while the block
number is spread by Fibonacci hashing so old live orders do not pile up in one region.  Linear probing with
backward-shift deletion keeps probe chains short without tombstones.
"""
import numpy as np

from appliance._jit import kernel

_FIB = np.uint64(0x9E3779B97F4A7C15)
_4 = np.uint64(4)
_15 = np.uint64(15)
_32 = np.uint64(32)
_8 = np.uint64(8)
_LOW32 = np.uint64(0xFFFFFFFF)


@kernel(inline="always")
def home_slot(ref, mask, shift):
    x = (ref >> _4) * _FIB
    return np.int64(((x >> np.uint64(shift)) << _4) | (ref & _15)) & mask


@kernel(inline="always")
def find(ot, meta, ref):
    """Slot holding ``ref``, or -1."""
    mask = meta[0]
    i = home_slot(ref, mask, meta[1])
    while True:
        k = ot[i, 0]
        if k == ref:
            return i
        if k == 0:
            return -1
        i = (i + 1) & mask


@kernel(inline="always")
def insert(ot, meta, ref, price, shares, locate, side):
    """Insert a reference known to be absent; the caller has checked capacity."""
    mask = meta[0]
    i = home_slot(ref, mask, meta[1])
    while ot[i, 0] != 0:
        i = (i + 1) & mask
    ot[i, 0] = ref
    ot[i, 1] = (np.uint64(price) << _32) | np.uint64(shares)
    ot[i, 2] = (np.uint64(locate) << _8) | np.uint64(side)


@kernel(inline="always")
def remove(ot, meta, i):
    """Empty slot ``i`` and pull later members of its probe run back so no lookup stops short."""
    mask = meta[0]
    shift = meta[1]
    j = i
    while True:
        j = (j + 1) & mask
        k = ot[j, 0]
        if k == 0:
            break
        h = home_slot(k, mask, shift)
        # The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
        if (i <= j and (h <= i or h > j)) or (i > j and h <= i and h > j):
            ot[i, 0] = ot[j, 0]
            ot[i, 1] = ot[j, 1]
            ot[i, 2] = ot[j, 2]
            i = j
    ot[i, 0] = 0


@kernel(inline="always")
def price_of(ot, i):
    return np.int64(ot[i, 1] >> _32)


@kernel(inline="always")
def shares_of(ot, i):
    return np.int64(ot[i, 1] & _LOW32)


@kernel(inline="always")
def set_shares(ot, i, shares):
    ot[i, 1] = (ot[i, 1] & (_LOW32 << _32)) | np.uint64(shares)


@kernel(inline="always")
def locate_of(ot, i):
    return np.int64(ot[i, 2] >> _8)


@kernel(inline="always")
def side_of(ot, i):
    return np.int64(ot[i, 2] & np.uint64(0xFF))
