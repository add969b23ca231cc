"""Highlighted snippets cut from the ORIGINAL text (with diacritics).

The text is folded character by character (the same folding as the index: no marks, đ→d,
case-folded), so a match found in the folded text maps back to the original characters. For
Vietnamese (and most text) every character folds to exactly one character and the mapping is
the identity; otherwise an offset table maps folded positions back.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable

from mailgw.mime.text import fold

MARK_OPEN, MARK_CLOSE = "<mark>", "</mark>"
WIDTH = 200  # characters of context in a snippet
MAX_SCAN = 200_000  # characters of a text looked at
FIRST_SCAN = 4_000  # characters looked at first (snippet)


NOT_ONE = "\uffff"  # in _ONE_TO_ONE: this character folds to more or fewer than one


def _fold_char(ch: str) -> str:
    return " " if ch.isspace() else fold(ch)


class _FoldTable(dict):
    """code point → its folded character, filled as characters are met (a search's snippets
    fold the same alphabet again and again); NOT_ONE where the fold is not one character."""

    def __missing__(self, cp: int) -> str:
        folded = _fold_char(chr(cp))
        self[cp] = value = folded if len(folded) == 1 else NOT_ONE
        return value


_ONE_TO_ONE = _FoldTable()


def fold_with_offsets(s: str) -> tuple[str, list[int] | None]:
    """(folded, offsets): offsets[i] is the original index of folded character i (None: same)."""
    folded = s.translate(_ONE_TO_ONE)
    if NOT_ONE not in folded:
        return folded, None
    out: list[str] = []
    offsets: list[int] = []
    for i, ch in enumerate(s):
        f = _fold_char(ch)
        out.append(f)
        offsets.extend([i] * len(f))
    offsets.append(len(s))
    return "".join(out), offsets


@functools.lru_cache(maxsize=256)
def _compiled(toks: tuple[str, ...]) -> re.Pattern[str]:
    # No look-behind in front: a pattern that starts with its words is searched for much
    # faster; matches() drops those that follow a letter or digit.
    return re.compile(r"(?:" + "|".join(map(re.escape, toks)) + r")(?![^\W_])")


def _pattern(tokens: Iterable[str]) -> re.Pattern[str] | None:
    toks = tuple(sorted({t for t in tokens if t}, key=lambda t: (-len(t), t)))
    return _compiled(toks) if toks else None


def matches(s: str, tokens: Iterable[str]) -> list[tuple[int, int, str]]:
    """(start, end, token) in the original string of every whole-token match."""
    pattern = _pattern(tokens)
    if pattern is None or not s:
        return []
    s = s[:MAX_SCAN]
    folded, offsets = fold_with_offsets(s)
    found = []
    for m in pattern.finditer(folded):
        a, b = m.span()
        if a and folded[a - 1].isalnum():
            continue  # inside a word (tokens are letters and digits: no match starts in it)
        if offsets is not None:
            a, b = offsets[a], offsets[b - 1] + 1
        found.append((a, b, m.group()))
    return found


def _render(s: str, spans: list[tuple[int, int, str]], start: int, end: int) -> str:
    out, at = [], start
    for a, b, _ in spans:
        if a < start or b > end:
            continue
        out.append(html.escape(s[at:a]))
        out.append(MARK_OPEN + html.escape(s[a:b]) + MARK_CLOSE)
        at = b
    out.append(html.escape(s[at:end]))
    return "".join(out)


def highlight(s: str | None, tokens: Iterable[str]) -> str | None:
    """The whole text, HTML-escaped, every matched word in <mark>…</mark> (for subjects)."""
    if s is None:
        return None
    return _render(s, matches(s, tokens), 0, len(s))


def _densest(spans: list[tuple[int, int, str]], width: int) -> tuple[int, int]:
    """(index, count): the first of the first 200 spans whose ``width`` characters hold the
    most different tokens, and that number."""
    best, best_count = 0, -1
    for i, (a, _, _) in enumerate(spans[:200]):
        seen = set()
        for _, end, tok in spans[i:]:
            if end > a + width:
                break  # spans are in order and do not overlap: the ends only grow
            seen.add(tok)
        if len(seen) > best_count:
            best, best_count = i, len(seen)
    return best, best_count


def _snippet_spans(s: str, tokens: set[str], width: int, first_scan: int) -> list:
    """matches() of ``s``; of its first ``first_scan`` characters alone when those already
    hold a window with every token, far enough from the cut for the snippet to be the one
    the whole text gives (an attachment's text can run to 200,000 characters)."""
    if len(s) > first_scan:
        spans = matches(s[:first_scan], tokens)
        if spans:
            best, count = _densest(spans, width)
            margin = width + 31  # the window and its widening to a space (see below)
            if count == len(tokens) and spans[best][0] + margin < first_scan:
                return spans
    return matches(s, tokens)


def snippet(
    s: str | None, tokens: Iterable[str], width: int = WIDTH, first_scan: int = FIRST_SCAN
) -> str | None:
    """About ``width`` characters around the densest group of matches, HTML-escaped, matched
    words in <mark>…</mark>, "…" where the text was cut; the start of the text if nothing
    matches."""
    if not s:
        return None
    toks = {t for t in tokens if t}
    spans = _snippet_spans(s, toks, width, first_scan) if toks else []
    if not spans:
        cut = s[:width]
        return html.escape(" ".join(cut.split())) + ("…" if len(s) > width else "")
    a = spans[_densest(spans, width)[0]][0]
    start = max(0, a - width // 4)
    while start > 0 and not s[start - 1].isspace() and a - start < width // 2:
        start -= 1
    end = min(len(s), start + width)
    while end < len(s) and not s[end].isspace() and end - start < width + 30:
        end += 1
    body = " ".join(_render(s, spans, start, end).split())
    return ("…" if start > 0 else "") + body + ("…" if end < len(s) else "")
