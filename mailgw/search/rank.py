"""Relevance scores on SQLite, computed from the folded tokens of the ranked candidates.

FTS5's bm25() first counts, for every word of the query, the rows of the whole index that hold
it (its inverse document frequency): a full read of a common word's list, 130 ms at a million
documents, before a single row is scored. This score leaves that out, as PostgreSQL's
``ts_rank`` does: it depends on the document alone, so a page of results does not shift when
other mail arrives. Per query word or phrase: its occurrences (a subject occurrence counts
SUBJECT_WEIGHT times), saturated as in BM25 and normalised by the document's length.
"""

from __future__ import annotations

from collections.abc import Sequence

SUBJECT_WEIGHT = 4.0
K1 = 1.2  # how fast repeated occurrences stop adding
B = 0.75  # how much a long document is discounted
TYPICAL_TOKENS = 300  # the length at which no discount applies


Needle = tuple[str, str, str, str]  # a phrase as itself, inside, first and last in a text


def needle(phrase: Sequence[str]) -> Needle:
    bare = " ".join(phrase)
    return bare, f" {bare} ", f"{bare} ", f" {bare}"


def occurrences(text: str, phrase: Needle) -> int:
    """How often a phrase occurs as whole tokens in ``text`` (folded tokens separated by single
    spaces). A token repeated back to back ("a a") counts once per pair: close enough for a
    score, and no list of words is built."""
    bare, inside, first, last = phrase
    if not bare:
        return 0
    if text == bare:
        return 1
    return text.count(inside) + text.startswith(first) + text.endswith(last)


class Scorer:
    """Scores documents against one query's positive words and phrases (folded tokens)."""

    def __init__(self, phrases: Sequence[Sequence[str]]):
        self.needles = [needle(p) for p in phrases if p]

    def __call__(self, subject: str, body: str) -> float:
        """The relevance of a document given its folded subject and body tokens."""
        length = (subject.count(" ") + 1 if subject else 0) + (body.count(" ") + 1 if body else 0)
        norm = K1 * (1 - B + B * length / TYPICAL_TOKENS)
        total = 0.0
        for phrase in self.needles:
            tf = SUBJECT_WEIGHT * occurrences(subject, phrase) + occurrences(body, phrase)
            total += tf * (K1 + 1) / (tf + norm)
        return round(total, 6)
