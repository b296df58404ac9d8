"""Format int64 row buffers as CSV text in a numba kernel.

Output rows number in the millions for a day; Python's csv module would cost more than decoding them.  A
column spec says how each CSV column is made from the row:

* ``INT``: the integer in row column ``a``, as unsigned 64-bit;
* ``CHAR``: the byte in column ``a`` as one ASCII character ('?' if it could break the row), empty when 0;
* ``SYMBOL``: the stock name of the locate in column ``a`` (trailing spaces dropped);
* ``RATIO4``: column ``a`` / column ``b`` with 4 decimals, rounded half up, empty when ``b`` is 0 (VWAP =
  notional / volume, computed only here, at output).
"""
import numpy as np

from appliance._jit import kernel

INT, CHAR, SYMBOL, RATIO4 = 0, 1, 2, 3
_10 = np.uint64(10)
MAX_ROW_BYTES = 256


@kernel(inline="always")
def _put_uint(dst, q, v):
    """Decimal digits of ``v`` read as unsigned 64-bit: every column is a count, a price, a time or a match
    number (a u64 on the wire, which a hostile feed may set past 2**63)."""
    u = np.uint64(v)
    start = q
    while True:
        dst[q] = 48 + np.int64(u % _10)
        q += 1
        u //= _10
        if u == 0:
            break
    i, j = start, q - 1
    while i < j:
        t = dst[i]
        dst[i] = dst[j]
        dst[j] = t
        i += 1
        j -= 1
    return q


@kernel(inline="always")
def _safe(ch):
    """A byte from the feed, as a character that cannot break a CSV row ('?' for anything else)."""
    return ch if 32 < ch < 127 and ch != 44 and ch != 34 else 63


@kernel
def format_rows(rows, n, spec, sym, dst):
    """Write rows ``0..n-1`` as CSV lines into ``dst``; returns (rows written, bytes used)."""
    q = 0
    for r in range(n):
        if q + MAX_ROW_BYTES > dst.shape[0]:
            return r, q
        for c in range(spec.shape[0]):
            if c > 0:
                dst[q] = 44                                  # ','
                q += 1
            kind = spec[c, 0]
            a = spec[c, 1]
            if kind == INT:
                q = _put_uint(dst, q, rows[r, a])
            elif kind == CHAR:
                if rows[r, a] != 0:
                    dst[q] = _safe(rows[r, a] & 0xFF)
                    q += 1
            elif kind == SYMBOL:
                loc = rows[r, a]
                end = 8
                while end > 0 and sym[loc, end - 1] == 32:
                    end -= 1
                for k in range(end):
                    dst[q] = _safe(sym[loc, k])        # the directory is hostile input too
                    q += 1
            else:
                # notional is a u64 sum (shares and prices are u32); volume fits easily in int64
                num = np.uint64(rows[r, a])
                den = rows[r, spec[c, 2]]
                if den > 0:
                    d = np.uint64(den)
                    whole = num // d
                    rem = num - whole * d
                    if den < (1 << 48):
                        frac = np.int64((rem * np.uint64(20000) + d) // (np.uint64(2) * d))
                    else:
                        frac = np.int64(np.float64(rem) / np.float64(d) * 10000.0 + 0.5)
                    if frac >= 10000:
                        whole += np.uint64(1)
                        frac -= 10000
                    q = _put_uint(dst, q, whole)
                    dst[q] = 46                              # '.'
                    q += 1
                    for k in range(4):
                        div = 1000 if k == 0 else (100 if k == 1 else (10 if k == 2 else 1))
                        dst[q] = 48 + (frac // div) % 10
                        q += 1
        dst[q] = 10
        q += 1
    return n, q


def spec(*columns: tuple) -> np.ndarray:
    """Column spec from (kind, a[, b]) tuples."""
    out = np.zeros((len(columns), 3), np.int64)
    for i, col in enumerate(columns):
        out[i, :len(col)] = col
    return out
