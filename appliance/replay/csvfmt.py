"""Format int64 row buffers as CSV text in a numba kernel.

Output rows number in the millions for a day; Python's csv module would cost more than decoding them.  A
column spec says how each CSV column is made from the row:

* ``INT``: the integer in row column ``a``, as unsigned 64-bit;
* ``CHAR``: the byte in column ``a`` as one ASCII character ('?' if it could break the row), empty when 0;
* ``SYMBOL``: the stock name of the locate in column ``a`` (trailing spaces dropped);
* ``RATIO4``: column ``a`` / column ``b`` with 4 decimals, rounded half up, empty when ``b`` is 0 (VWAP =
  notional / volume, computed only here, at output).

The three big tables (bbo.csv, trades.csv, vwap.csv: about 18 M rows for the 20 M-message benchmark day) have
kernels of their own with the columns written out (``format_bbo``, ``format_trades``, ``format_vwap``): the
column-spec loop reads the spec and branches on every column of every row, and measured 98 ns a top-of-book row
against 79 ns written out.  ``format_rows`` serves the small tables (broken.csv).  ``format_messages`` writes
messages.csv rows straight from the message bytes, its columns derived from the layout table
(``message_spec``).
"""
import numpy as np

from appliance._jit import kernel
from appliance.decode.state import BBO_ASK_PRICE, BBO_ASK_SIZE, BBO_BID_PRICE, BBO_BID_SIZE, BBO_LOCATE, BBO_TS, \
    KIND_BROKEN, KIND_CLOCK, TAPE_KIND, TAPE_LOCATE, TAPE_MATCH, TAPE_PRICE, TAPE_SHARES, TAPE_SIDE, TAPE_TS
from appliance.decode.vwap import VW_END, VW_LOCATE, VW_NOTIONAL, VW_TRADES, VW_VOLUME
from appliance.itch.layout import MESSAGES, all_field_names

INT, CHAR, SYMBOL, RATIO4 = 0, 1, 2, 3
_10 = np.uint64(10)
MAX_ROW_BYTES = 256


# Two digits per division: half the (multiply-and-shift) divisions of one digit at a time, and no reversal.
_DIGIT_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), np.uint8).copy()
_POW10 = np.array([10 ** i for i in range(20)], np.uint64)
_100 = np.uint64(100)


@kernel(inline="always")
def _digits(u):
    """Decimal digits of ``u`` (uint64) in at most five comparisons (times have 14, prices 6-7, sizes 1-4)."""
    lo, hi = 1, 20                           # answer in [lo, hi]: the smallest d with u < 10**d (or 20)
    while lo < hi:
        mid = (lo + hi) // 2
        if u < _POW10[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@kernel(inline="always")
def _put_uint(dst, q, v):
    """Decimal digits of ``v`` read as unsigned 64-bit: every column is a count, a price, a time or a match
    number (a u64 on the wire, which a hostile feed may set past 2**63)."""
    u = np.uint64(v)
    digits = _digits(u)
    p = q + digits
    while u >= _100:
        pair = np.int64(u % _100) * 2
        u //= _100
        p -= 2
        dst[p] = _DIGIT_PAIRS[pair]
        dst[p + 1] = _DIGIT_PAIRS[pair + 1]
    if u >= _10:
        pair = np.int64(u) * 2
        dst[p - 2] = _DIGIT_PAIRS[pair]
        dst[p - 1] = _DIGIT_PAIRS[pair + 1]
    else:
        dst[p - 1] = 48 + np.int64(u)
    return q + digits


@kernel(inline="always")
def _put_int(dst, q, v):
    """Signed decimal (a sequence number that a hostile feed set past 2**63 reads back negative, as before)."""
    if v < 0:
        dst[q] = 45                                          # '-'
        return _put_uint(dst, q + 1, np.uint64(0) - np.uint64(v))
    return _put_uint(dst, q, v)


@kernel(inline="always")
def _safe(ch):
    """A byte from the feed, as a character that cannot break a CSV row ('?' for anything else)."""
    return ch if 32 < ch < 127 and ch != 44 and ch != 34 else 63


@kernel(inline="always")
def _put_symbol(dst, q, sym, loc):
    """The stock name of ``loc`` without its trailing spaces; the directory is hostile input too."""
    end = 8
    while end > 0 and sym[loc, end - 1] == 32:
        end -= 1
    for k in range(end):
        dst[q + k] = _safe(sym[loc, k])
    return q + end


@kernel(inline="always")
def _put_ratio4(dst, q, num_i, den):
    """``num_i`` / ``den`` with 4 decimals, rounded half up; nothing when ``den`` is 0 or less.  Notional is a
    u64 sum (shares and prices are u32); volume fits easily in int64."""
    if den <= 0:
        return q
    num = np.uint64(num_i)
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
    dst[q] = 46                                              # '.'
    dst[q + 1] = 48 + frac // 1000
    dst[q + 2] = 48 + (frac // 100) % 10
    dst[q + 3] = 48 + (frac // 10) % 10
    dst[q + 4] = 48 + frac % 10
    return q + 5


@kernel
def format_rows(rows, n, spec, sym, dst):
    """Write rows ``0..n-1`` as CSV lines into ``dst`` by the column spec; returns (rows written, bytes used)."""
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
                q = _put_symbol(dst, q, sym, rows[r, a])
            else:
                q = _put_ratio4(dst, q, rows[r, a], rows[r, spec[c, 2]])
        dst[q] = 10
        q += 1
    return n, q


@kernel
def format_bbo(rows, n, sym, dst):
    """bbo.csv lines: timestamp_ns,locate,symbol,bid_price,bid_size,ask_price,ask_size (``state.Out.bbo`` rows);
    returns (rows written, bytes used)."""
    q = 0
    for r in range(n):
        if q + MAX_ROW_BYTES > dst.shape[0]:
            return r, q
        loc = rows[r, BBO_LOCATE]
        q = _put_uint(dst, q, rows[r, BBO_TS])
        dst[q] = 44
        q = _put_uint(dst, q + 1, loc)
        dst[q] = 44
        q = _put_symbol(dst, q + 1, sym, loc)
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, BBO_BID_PRICE])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, BBO_BID_SIZE])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, BBO_ASK_PRICE])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, BBO_ASK_SIZE])
        dst[q] = 10
        q += 1
    return n, q


@kernel
def format_trades(rows, n, sym, dst):
    """trades.csv lines from the trade tape (``state.Out.trades``): timestamp_ns,locate,symbol,kind,side,shares,
    price,match_number -- feed-clock marks and broken trades skipped (those go to the VWAP fold and broken.csv);
    returns (tape rows consumed, bytes used)."""
    q = 0
    for r in range(n):
        if q + MAX_ROW_BYTES > dst.shape[0]:
            return r, q
        kind = rows[r, TAPE_KIND]
        if kind == KIND_CLOCK or kind == KIND_BROKEN:
            continue
        loc = rows[r, TAPE_LOCATE]
        q = _put_uint(dst, q, rows[r, TAPE_TS])
        dst[q] = 44
        q = _put_uint(dst, q + 1, loc)
        dst[q] = 44
        q = _put_symbol(dst, q + 1, sym, loc)
        dst[q] = 44
        q += 1
        if kind != 0:
            dst[q] = _safe(kind & 0xFF)
            q += 1
        dst[q] = 44
        q += 1
        side = rows[r, TAPE_SIDE]
        if side != 0:
            dst[q] = _safe(side & 0xFF)
            q += 1
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, TAPE_SHARES])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, TAPE_PRICE])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, TAPE_MATCH])
        dst[q] = 10
        q += 1
    return n, q


@kernel
def format_vwap(rows, n, sym, dst):
    """vwap.csv lines from the fold's rows (``vwap.Vwap.rows``): window_end_ns,locate,symbol,volume,notional,
    vwap,trades, the VWAP (notional / volume) computed only here, at output; returns (rows written, bytes
    used)."""
    q = 0
    for r in range(n):
        if q + MAX_ROW_BYTES > dst.shape[0]:
            return r, q
        loc = rows[r, VW_LOCATE]
        q = _put_uint(dst, q, rows[r, VW_END])
        dst[q] = 44
        q = _put_uint(dst, q + 1, loc)
        dst[q] = 44
        q = _put_symbol(dst, q + 1, sym, loc)
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, VW_VOLUME])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, VW_NOTIONAL])
        dst[q] = 44
        q = _put_ratio4(dst, q + 1, rows[r, VW_NOTIONAL], rows[r, VW_VOLUME])
        dst[q] = 44
        q = _put_uint(dst, q + 1, rows[r, VW_TRADES])
        dst[q] = 10
        q += 1
    return n, q


def spec(*columns: tuple) -> np.ndarray:
    """Column spec from (kind, a[, b]) tuples."""
    out = np.zeros((len(columns), 3), np.int64)
    for i, col in enumerate(columns):
        out[i, :len(col)] = col
    return out


# -- messages.csv ---------------------------------------------------------------------------------------------
# One row per applied message: session, sequence, then every field name of the layout table (the union over
# types, in table order); a field the message's type lacks is empty.  The text is exactly what Python's csv
# module wrote from ``layout.decode`` before this kernel existed (tests/test_message_rows.py keeps that writer
# as the reference): integers in decimal, alpha fields as latin-1 with trailing spaces dropped and encoded as
# UTF-8, quoted (with '"' doubled) when they hold ',', '"', CR or LF; rows end in CR LF.
F_ABSENT, F_INT, F_ALPHA = 0, 1, 2
MAX_MESSAGE_ROW_BYTES = 1024


def message_spec() -> tuple[np.ndarray, list[str]]:
    """(kind, offset, size) of every messages.csv field column for each type byte (int64[256, columns, 3]),
    and the column names, both derived from the layout table."""
    names = all_field_names()
    out = np.zeros((256, len(names), 3), np.int64)
    widest = 0
    for m in MESSAGES.values():
        for f in m.fields:
            out[ord(m.type), names.index(f.name)] = (F_ALPHA if f.kind == "alpha" else F_INT, f.offset, f.size)
        # an integer field: at most 20 digits; an alpha field: every byte doubled by quoting or UTF-8, 2 quotes
        widest = max(widest, sum(20 if f.kind != "alpha" else 2 * f.size + 2 for f in m.fields))
    # a session name (at most 64 bytes here), a signed sequence, the commas, CR LF
    assert 64 + 21 + len(names) + 1 + widest + 2 <= MAX_MESSAGE_ROW_BYTES
    return out, names


@kernel(inline="always")
def _put_alpha(dst, q, msgs, i, start, size):
    end = start + size
    while end > start and msgs[i, end - 1] == 32:
        end -= 1
    quote = False
    for k in range(start, end):
        ch = msgs[i, k]
        if ch == 44 or ch == 34 or ch == 10 or ch == 13:
            quote = True
    if quote:
        dst[q] = 34
        q += 1
    for k in range(start, end):
        ch = np.int64(msgs[i, k])
        if ch < 128:
            dst[q] = ch
            q += 1
            if ch == 34:
                dst[q] = 34
                q += 1
        else:                                                # latin-1 -> UTF-8: two bytes
            dst[q] = 0xC0 | (ch >> 6)
            dst[q + 1] = 0x80 | (ch & 0x3F)
            q += 2
    if quote:
        dst[q] = 34
        q += 1
    return q


@kernel
def format_messages(msgs, meta, n, fields, names, name_len, dst):
    """messages.csv lines for messages ``0..n-1`` (``meta``: session index or -1, sequence; ``names``: the
    sessions' CSV-safe names) into ``dst``; returns (messages written, bytes used)."""
    q = 0
    for i in range(n):
        if q + MAX_MESSAGE_ROW_BYTES > dst.shape[0]:
            return i, q
        sess = meta[i, 0]
        if 0 <= sess < names.shape[0]:
            for k in range(name_len[sess]):
                dst[q] = names[sess, k]
                q += 1
        dst[q] = 44
        q = _put_int(dst, q + 1, meta[i, 1])
        t = msgs[i, 0]
        for c in range(fields.shape[1]):
            dst[q] = 44
            q += 1
            kind = fields[t, c, 0]
            if kind == F_INT:
                v = np.uint64(0)
                for k in range(fields[t, c, 1], fields[t, c, 1] + fields[t, c, 2]):
                    v = (v << np.uint64(8)) | np.uint64(msgs[i, k])
                q = _put_uint(dst, q, v)
            elif kind == F_ALPHA:
                q = _put_alpha(dst, q, msgs, i, fields[t, c, 1], fields[t, c, 2])
        dst[q] = 13
        dst[q + 1] = 10
        q += 2
    return n, q
