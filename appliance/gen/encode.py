"""Vectorised ITCH encoding for the set-up messages (directory, trading actions, crosses...).

A numpy structured dtype per message type is derived from the one layout table, so a block of a few thousand
R or H messages is one array fill and no offset is written down twice.  The order-flow kernels do not use
this: they store fields at offsets bound from the same table (``appliance.gen.fields``).
"""
from __future__ import annotations

from functools import cache

import numpy as np

from appliance.itch.layout import MESSAGES

_INT_FORMATS = {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}


@cache
def message_dtype(mtype: str) -> np.dtype:
    """Big-endian structured dtype whose itemsize is the message length (6-byte timestamps as raw bytes)."""
    names, formats, offsets = [], [], []
    for f in MESSAGES[mtype].fields:
        names.append(f.name)
        offsets.append(f.offset)
        if f.kind == "alpha":
            formats.append(f"S{f.size}")
        elif f.kind == "timestamp":
            formats.append(("u1", (f.size,)))
        else:
            formats.append(_INT_FORMATS[f.size])
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": MESSAGES[mtype].length})
    assert dtype.itemsize == MESSAGES[mtype].length
    return dtype


def _alpha(value, size: int):
    """Left-justified, space-padded ASCII (numpy's own padding would be NUL bytes)."""
    if isinstance(value, (str, bytes)):
        raw = value.encode("ascii") if isinstance(value, str) else value
        if len(raw) > size:
            raise ValueError(f"{raw!r} is longer than {size} bytes")
        return raw.ljust(size, b" ")
    return np.array([_alpha(v, size) for v in value], dtype=f"S{size}")


def encode_rows(mtype: str, n: int, **columns) -> np.ndarray:
    """``n`` messages of ``mtype`` as a (n, length) uint8 array.

    Keyword names are the layout's field names with spaces, slashes and hyphens written as underscores
    (``Stock_Locate``, ``Buy_Sell_Indicator``); values are scalars or length-n sequences.  Unset integer fields
    are 0, unset alpha fields blank; the type byte is always ``mtype``.
    """
    spec = MESSAGES[mtype]
    rows = np.zeros(n, dtype=message_dtype(mtype))
    by_key = {_key(f.name): f for f in spec.fields}
    unknown = set(columns) - set(by_key)
    if unknown:
        raise KeyError(f"ITCH {mtype!r} has no field(s) {sorted(unknown)}")
    for f in spec.fields:
        if f.kind == "alpha":
            rows[f.name] = _alpha(columns.get(_key(f.name), b""), f.size)
        elif f.kind == "timestamp":
            ts = np.asarray(columns.get(_key(f.name), 0), dtype=np.int64)
            shifts = np.arange(8 * (f.size - 1), -1, -8, dtype=np.int64)
            rows[f.name] = ((ts[..., None] >> shifts) & 0xFF).astype(np.uint8)
        elif _key(f.name) in columns:
            rows[f.name] = columns[_key(f.name)]
    rows["Message Type"] = mtype.encode("ascii")
    return rows.view(np.uint8).reshape(n, spec.length)


def _key(field_name: str) -> str:
    return field_name.replace(" ", "_").replace("/", "_").replace("-", "_").replace("(", "").replace(")", "")
