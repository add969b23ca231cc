"""The search query language (docs/search.md): text → terms, or a QueryError with a position.

    giấy mời "kế hoạch năm" from:vanthu@example.gov.vn category:report -tag:draft after:2026-01-01

Pure: no database, no I/O. Words and phrases are folded (no diacritics, đ→d, case-folded) and
cut into tokens exactly as the index does (``mailgw.search.index.tokens``).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from mailgw.mime.model import URGENCY_LEVELS
from mailgw.mime.text import fold
from mailgw.search.index import TOKEN, symbol_key, type_key

MAX_LENGTH = 1000
MAX_TERMS = 32
MIN_YEAR, MAX_YEAR = 1900, 9999  # year: and the dates of after:/before:

TEXT_FIELDS = ("from", "to", "subject", "filename", "issuer")  # words within one field
EXACT_FIELDS = ("category", "tag", "symbol", "type", "register", "urgency", "signed", "sha256")
NUMBER_FIELDS = ("number", "year")
DATE_FIELDS = ("after", "before")
FIELDS = TEXT_FIELDS + EXACT_FIELDS + NUMBER_FIELDS + DATE_FIELDS
DOCUMENT_ONLY = ("register", "number")
SIGNED_VALUES = ("yes", "no", "invalid")

_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9_]*):")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_SHA = re.compile(r"[0-9a-f]{64}\Z")


class QueryError(ValueError):
    """A malformed query: ``position`` is the 0-based character offset of the problem."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Term:
    """One clause. ``field`` None: free words (all tokens must match, adjacent if ``phrase``)."""

    field: str | None
    value: str  # as written (without quotes)
    tokens: tuple[str, ...] = ()  # folded tokens (text fields and free words)
    key: str | int | dt.date | None = None  # normalised value of exact, number, date fields
    phrase: bool = False
    negated: bool = False
    position: int = 0


@dataclass(frozen=True)
class Query:
    text: str
    terms: tuple[Term, ...]

    @property
    def words(self) -> list[Term]:
        """Free words and phrases (positive and negated)."""
        return [t for t in self.terms if t.field is None]

    def highlight_tokens(self) -> set[str]:
        """Tokens to mark in snippets: positive free words and subject words."""
        return {
            tok
            for t in self.terms
            if not t.negated and t.field in (None, "subject")
            for tok in t.tokens
        }


def _check_characters(q: str) -> None:
    if len(q) > MAX_LENGTH:
        raise QueryError(f"the query is {len(q)} characters long; at most {MAX_LENGTH}", MAX_LENGTH)
    for i, ch in enumerate(q):
        cat = unicodedata.category(ch)
        if ch in " \t":
            continue
        if cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch not in "\u200c\u200d"):
            raise QueryError(f"control or invalid character U+{ord(ch):04X} is not allowed", i)


def _read_quoted(q: str, start: int) -> tuple[str, int]:
    """q[start] is '"'; returns (content, index after the closing quote)."""
    end = q.find('"', start + 1)
    if end < 0:
        raise QueryError('unbalanced quote: this phrase has no closing "', start)
    return q[start + 1 : end], end + 1


def _read_bare(q: str, start: int) -> tuple[str, int]:
    i = start
    while i < len(q) and q[i] not in ' \t"':
        i += 1
    if i < len(q) and q[i] == '"':
        raise QueryError('a quote must start a phrase (put a space before ")', i)
    return q[start:i], i


def parse(q: str) -> Query:
    """Parse a query; raises QueryError (and nothing else) for anything malformed."""
    if not isinstance(q, str):
        raise QueryError("the query must be text", 0)
    _check_characters(q)
    terms: list[Term] = []
    i, n = 0, len(q)
    while i < n:
        if q[i] in " \t":
            i += 1
            continue
        start = i
        negated = q[i] == "-"
        if negated:
            i += 1
            if i >= n or q[i] in " \t":
                raise QueryError("'-' must be followed by a word, phrase or filter", start)
        field = None
        m = _FIELD.match(q, i)
        if m:
            name = m.group(1).lower()
            if name not in FIELDS:
                raise QueryError(
                    f"unknown field '{m.group(1)}:'; known fields: {', '.join(FIELDS)}", i
                )
            field = name
            i = m.end()
            if i >= n or q[i] in " \t":
                raise QueryError(f"'{name}:' needs a value", i)
        value_at = i
        if q[i] == '"':
            value, i = _read_quoted(q, i)
            quoted = True
        else:
            value, i = _read_bare(q, i)
            quoted = False
        if i < n and q[i] not in " \t":
            raise QueryError("put a space between a phrase and what follows it", i)
        term = _term(field, value, quoted, negated, start, value_at)
        if term is not None:
            terms.append(term)
            if len(terms) > MAX_TERMS:
                raise QueryError(f"too many terms: at most {MAX_TERMS}", start)
    if not terms:
        raise QueryError('the query is empty: give words, a "phrase" or a filter', 0)
    if all(t.negated for t in terms):
        raise QueryError("a query needs at least one term that is not negated", 0)
    return Query(q, tuple(terms))


def _term(
    field: str | None, value: str, quoted: bool, negated: bool, start: int, value_at: int
) -> Term | None:
    if field is None or field in TEXT_FIELDS:
        toks = tuple(TOKEN.findall(fold(value)))
        if not toks:
            if field is None and not quoted:
                return None  # punctuation only ("-", "&", "--"): not a word, ignored
            what = f"'{field}:'" if field else "the phrase"
            raise QueryError(f"{what} has no letters or digits to search for", value_at)
        return Term(field, value, toks, None, len(toks) > 1, negated, start)
    value = value.strip()
    if not value:
        raise QueryError(f"'{field}:' needs a value", value_at)
    key: str | int | dt.date
    if field in DATE_FIELDS:
        if not _DATE.match(value):
            raise QueryError(f"'{field}:' needs a date as YYYY-MM-DD, not '{value}'", value_at)
        try:
            key = dt.date.fromisoformat(value)
        except ValueError:
            raise QueryError(f"'{field}:{value}' is not a real date", value_at) from None
        if not MIN_YEAR <= key.year <= MAX_YEAR:  # (0001-01-01 has no UTC start: overflow)
            raise QueryError(f"'{field}:{value}' is not a plausible date", value_at)
    elif field in NUMBER_FIELDS:
        if not value.isascii() or not value.isdigit() or len(value) > 9:
            raise QueryError(f"'{field}:' needs a whole number, not '{value}'", value_at)
        key = int(value)
        if field == "year" and not MIN_YEAR <= key <= MAX_YEAR:
            raise QueryError(f"'year:{value}' is not a plausible year", value_at)
    elif field == "sha256":
        key = value.lower()
        if not _SHA.match(key):
            raise QueryError("'sha256:' needs 64 hexadecimal digits", value_at)
    elif field == "urgency":
        key = "_".join(TOKEN.findall(fold(value)))
        if key not in URGENCY_LEVELS:
            raise QueryError(
                f"'urgency:' is one of {', '.join(URGENCY_LEVELS)}, not '{value}'", value_at
            )
    elif field == "signed":
        key = fold(value)
        if key not in SIGNED_VALUES:
            raise QueryError(f"'signed:' is one of {', '.join(SIGNED_VALUES)}", value_at)
    elif field in ("symbol", "type"):
        key = (symbol_key(value) if field == "symbol" else type_key(value)) or ""
        if not key:
            raise QueryError(f"'{field}:' needs a value", value_at)
    elif field in ("tag", "category"):
        key = fold(value)[:255]
    else:  # register
        key = value
    return Term(field, value, (), key, False, negated, start)
