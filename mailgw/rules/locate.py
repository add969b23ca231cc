"""Where each key and value of a (syntactically valid) TOML document stands in its text.

``tomllib`` reports positions only for syntax errors. To tell IT staff the right line for a
semantic error ("unknown operator", "bad regex", ...), :func:`scan_positions` walks the text
once more and records, for every key and every array element, its path in the parsed data and
its (line, column). Paths are tuples of table keys and array indices, e.g.
``("rule", 2, "when", "all", 0, "contains")`` for the ``contains`` key of the first condition
of the third ``[[rule]]``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE_CHARS = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


@dataclass
class Positions:
    """Offsets of keys and values by path; ``where`` turns a path into (line, col)."""

    text: str
    keys: dict[Path, int] = field(default_factory=dict)
    values: dict[Path, int] = field(default_factory=dict)
    _line_starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]

    def line_col(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def where(self, path: Path, at: str = "key") -> tuple[int, int]:
        """Position of ``path`` (its key, or its value with ``at="value"``); falls back to the
        nearest enclosing path that was recorded, and to 1:1."""
        p = tuple(path)
        while True:
            table = self.values if at == "value" else self.keys
            if p in table:
                return self.line_col(table[p])
            other = self.keys if at == "value" else self.values
            if p in other:
                return self.line_col(other[p])
            if not p:
                return 1, 1
            p = p[:-1]


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.pos = Positions(text)
        self.arrays_of_tables: dict[Path, int] = {}

    # -- low level ------------------------------------------------------------------------
    def skip_ws(self, newlines: bool) -> None:
        s, n = self.s, self.n
        while self.i < n:
            c = s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = n if j < 0 else j
            else:
                return

    def skip_line(self) -> None:
        j = self.s.find("\n", self.i)
        self.i = self.n if j < 0 else j + 1

    def parse_string(self) -> str:
        s = self.s
        if s.startswith('"""', self.i) or s.startswith("'''", self.i):
            q = s[self.i : self.i + 3]
            start = self.i + 3
            j = start
            while True:
                j = s.find(q, j)
                if j < 0:
                    self.i = self.n
                    return s[start:]
                if q == '"""' and _escaped(s, j):
                    j += 1
                    continue
                # a closing delimiter may be followed by up to two more quotes
                while s.startswith(q[0], j + 3) and j + 3 < self.n:
                    j += 1
                self.i = j + 3
                return s[start:j]
        q = s[self.i]
        self.i += 1
        out = []
        while self.i < self.n:
            c = s[self.i]
            if c == q:
                self.i += 1
                break
            if c == "\\" and q == '"' and self.i + 1 < self.n:
                out.append(_ESCAPE_CHARS.get(s[self.i + 1], s[self.i + 1]))
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        return "".join(out)

    def parse_key(self) -> list[tuple[str, int]]:
        parts: list[tuple[str, int]] = []
        while True:
            self.skip_ws(False)
            start = self.i
            if self.i < self.n and self.s[self.i] in "\"'":
                parts.append((self.parse_string(), start))
            else:
                m = _BARE_KEY.match(self.s, self.i)
                if not m:
                    return parts
                parts.append((m.group(), start))
                self.i = m.end()
            self.skip_ws(False)
            if self.i < self.n and self.s[self.i] == ".":
                self.i += 1
                continue
            return parts

    # -- values ----------------------------------------------------------------------------
    def parse_value(self, path: Path) -> None:
        self.pos.values.setdefault(path, self.i)
        if self.i >= self.n:
            return
        c = self.s[self.i]
        if c in "\"'":
            self.parse_string()
        elif c == "[":
            self.i += 1
            idx = 0
            while self.i < self.n:
                self.skip_ws(True)
                if self.i < self.n and self.s[self.i] == "]":
                    self.i += 1
                    return
                self.parse_value((*path, idx))
                idx += 1
                self.skip_ws(True)
                if self.i < self.n and self.s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while self.i < self.n:
                self.skip_ws(True)
                if self.i < self.n and self.s[self.i] == "}":
                    self.i += 1
                    return
                if self.i < self.n and self.s[self.i] == ",":
                    self.i += 1
                    continue
                before = self.i
                self.key_value(path)
                if self.i == before:  # not valid TOML; never loop forever
                    self.i += 1
        else:
            while self.i < self.n and self.s[self.i] not in ",]}\n#":
                self.i += 1

    def key_value(self, table: Path) -> None:
        parts = self.parse_key()
        path = table
        for name, off in parts:
            path = (*path, name)
            self.pos.keys.setdefault(path, off)
        self.skip_ws(False)
        if self.i < self.n and self.s[self.i] == "=":
            self.i += 1
            self.skip_ws(False)
            self.parse_value(path)

    # -- document --------------------------------------------------------------------------
    def resolve(self, parts: list[tuple[str, int]], array: bool, header: int) -> Path:
        path: Path = ()
        for k, (name, off) in enumerate(parts):
            path = (*path, name)
            last = k == len(parts) - 1
            if last and array:
                count = self.arrays_of_tables.get(path, -1) + 1
                self.arrays_of_tables[path] = count
                self.pos.keys.setdefault(path, off)
                path = (*path, count)
                self.pos.keys[path] = header
                self.pos.values[path] = header
            else:
                self.pos.keys.setdefault(path, off)
                if path in self.arrays_of_tables:
                    path = (*path, self.arrays_of_tables[path])
        return path

    def run(self) -> Positions:
        table: Path = ()
        while self.i < self.n:
            self.skip_ws(True)
            if self.i >= self.n:
                break
            header = self.i
            if self.s.startswith("[[", self.i):
                self.i += 2
                table = self.resolve(self.parse_key(), array=True, header=header)
                self.skip_line()
            elif self.s[self.i] == "[":
                self.i += 1
                table = self.resolve(self.parse_key(), array=False, header=header)
                self.skip_line()
            else:
                before = self.i
                self.key_value(table)
                if self.i == before:
                    self.skip_line()
        return self.pos


def _escaped(s: str, j: int) -> bool:
    backslashes = 0
    while j - 1 - backslashes >= 0 and s[j - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def scan_positions(text: str) -> Positions:
    """Record the position of every key and array element of a valid TOML document."""
    return _Scanner(text).run()
