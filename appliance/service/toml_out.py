"""Write TOML: the effective config that ``appliance config check`` prints.

Only what a config holds: tables of tables, and values that are strings, integers, booleans, finite floats,
arrays and inline tables.  ``tomllib.loads(dumps(d)) == d`` (lists come back as lists; tests check it).
"""
from __future__ import annotations

import math
import re

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def dumps(document: dict) -> str:
    """``document`` as TOML: plain keys first, then one ``[header]`` per table (none for a table that holds
    only tables)."""
    out: list[str] = []
    _table(out, (), document)
    return "\n".join(out).lstrip("\n") + "\n"


def _table(out: list[str], path: tuple[str, ...], table: dict) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if path and (plain or not table):
        out.append(f"\n[{'.'.join(key(k) for k in path)}]")
    out.extend(f"{key(k)} = {value(v)}" for k, v in plain.items())
    for k, v in table.items():
        if isinstance(v, dict):
            _table(out, path + (k,), v)


def key(name: str) -> str:
    return name if _BARE.match(name) else string(name)


def string(text: str) -> str:
    def escape(ch: str) -> str:
        if ch in _ESCAPES:
            return _ESCAPES[ch]
        return f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
    return '"' + "".join(escape(ch) for ch in text) + '"'


def value(v) -> str:
    if isinstance(v, bool):                         # before int: True is an int
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{v} has no place in a config")
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)):
        if any(isinstance(item, dict) for item in v):          # a list of lines: one inline table a line
            return "[\n" + "".join(f"    {value(item)},\n" for item in v) + "]"
        return "[" + ", ".join(value(item) for item in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)} = {value(item)}" for k, item in v.items()) + "}"
    raise TypeError(f"cannot write a {type(v).__name__} as TOML")
