"""Text for terminals and logs: strings that came from the wire or a file are made harmless first.

A MoldUDP64 session name, a stock symbol or a file name can hold ESC sequences (recolour the terminal, move the
cursor, retitle the window, write to the clipboard) or line breaks that forge log lines.  ``printable`` keeps
printable text as it is and writes every control character (C0, DEL, C1) and backslash as a visible escape, so
what reaches a terminal or journald is exactly one line of inert text.
"""
from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(match: re.Match) -> str:
    ch = match.group()
    return "\\\\" if ch == "\\" else f"\\x{ord(ch):02x}"


def printable(text: str, backslashes: bool = True) -> str:
    """``text`` with every control character and backslash escaped (``\\x1b``, ``\\\\``).  ``backslashes=False``
    leaves backslashes alone, for text that may already hold escapes (the last line of defence in the CLI)."""
    return (_UNSAFE if backslashes else _CONTROLS).sub(_escape, text)
