"""The line of every key in a TOML file, so that a config error can name it.

``tomllib`` returns values without positions.  This scanner walks a document that ``tomllib`` has already
accepted (so it checks nothing and assumes valid syntax) and maps each key path to the line where it is
defined: ``("capture", "queues")``, ``("feeds", "nyse", "lines", 1, "group")``.  It follows table headers
(``[a.b]``), arrays of tables (``[[a]]``, numbered as tomllib numbers them), dotted keys, quoted keys, inline
tables and arrays (an element's path ends in its index), and skips strings of every kind and comments.
"""
from __future__ import annotations

import bisect
import re
import tomllib

KeyPath = tuple  # of str (keys) and int (array indices)

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[,\]}\n#]")


def key_lines(text: str) -> dict[KeyPath, int]:
    """Each key path of ``text`` (and each table header, each array element) -> its 1-based line; where a path
    is defined twice (a table implied by a dotted key, then named), the first place counts."""
    scanner = _Scanner(text)
    scanner.document()
    return scanner.lines


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, else of the nearest enclosing table or key that is in the file, else ``None``."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._breaks = [i for i, ch in enumerate(text) if ch == "\n"]
        self._arrays: dict[KeyPath, int] = {}          # array-of-tables path -> elements so far

    # -- positions ---------------------------------------------------------------------------------------
    def line(self) -> int:
        return bisect.bisect_left(self._breaks, self.pos) + 1

    def record(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def skip_blanks(self, newlines: bool = True) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    # -- the document --------------------------------------------------------------------------------------
    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blanks()
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.key_value(table)

    def header(self) -> KeyPath:
        line, many = self.line(), self.peek(2) == "[["
        self.pos += 2 if many else 1
        keys = self.key()
        self.pos += 2 if many else 1                # "]]" or "]"
        if not many:
            path = self.resolve(keys)
            self.record(path, line)
            return path
        array = self.resolve(keys[:-1]) + (keys[-1],)
        self._arrays[array] = self._arrays.get(array, 0) + 1
        path = array + (self._arrays[array] - 1,)
        self.record(path, line)
        return path

    def resolve(self, keys: list[str]) -> KeyPath:
        """A header's keys as a path: a key naming an array of tables means its last element."""
        path: KeyPath = ()
        for key in keys:
            path += (key,)
            if path in self._arrays:
                path += (self._arrays[path] - 1,)
        return path

    def key_value(self, table: KeyPath) -> None:
        line = self.line()
        path = table + tuple(self.key())
        self.record(path, line)
        self.skip_blanks(newlines=False)
        self.pos += 1                               # "="
        self.skip_blanks(newlines=False)
        self.value(path)

    def key(self) -> list[str]:
        keys = []
        while True:
            self.skip_blanks(newlines=False)
            ch = self.peek()
            if ch in "\"'":
                start = self.pos
                self.string()
                keys.append(tomllib.loads("k = " + self.text[start:self.pos])["k"])
            else:
                match = _BARE.match(self.text, self.pos)
                keys.append(match.group())
                self.pos = match.end()
            self.skip_blanks(newlines=False)
            if self.peek() != ".":
                return keys
            self.pos += 1

    # -- values --------------------------------------------------------------------------------------------
    def value(self, path: KeyPath) -> None:
        ch = self.peek()
        if ch == "{":
            self.inline_table(path)
        elif ch == "[":
            self.array(path)
        elif ch in "\"'":
            self.string()
        else:
            match = _SCALAR_END.search(self.text, self.pos)
            self.pos = match.start() if match else len(self.text)

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self.skip_blanks()
            if self.peek() == "}":
                self.pos += 1
                return
            if self.peek() == ",":
                self.pos += 1
                continue
            self.key_value(path)

    def array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self.skip_blanks()
            if self.peek() == "]":
                self.pos += 1
                return
            if self.peek() == ",":
                self.pos += 1
                index += 1
                continue
            self.record(path + (index,), self.line())
            self.value(path + (index,))

    def string(self) -> None:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            end = self._find(quote * 3, self.pos + 3, escapes=quote == '"')
            # Up to two quotes may end the content just before the closing three: """a""""" is a"".
            run = end
            while run - end < 2 and self.text[run + 3:run + 4] == quote:
                run += 1
            self.pos = run + 3
        else:
            self.pos = self._find(quote, self.pos + 1, escapes=quote == '"') + 1

    def _find(self, closing: str, at: int, escapes: bool) -> int:
        while True:
            if escapes and self.text[at] == "\\":
                at += 2
            elif self.text.startswith(closing, at):
                return at
            else:
                at += 1
