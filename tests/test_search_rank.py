"""The SQLite relevance score (mailgw.search.rank): whole tokens, phrases, subject weight,
saturation and length, from the folded text alone."""

from __future__ import annotations

from mailgw.search.rank import Scorer, needle
from mailgw.search.rank import occurrences as _occurrences


def occurrences(text: str, phrase: tuple[str, ...]) -> int:
    return _occurrences(text, needle(phrase))


def score(phrases: list[tuple[str, ...]], subject: str, body: str) -> float:
    return Scorer(phrases)(subject, body)


def test_occurrences_count_whole_tokens_and_phrases() -> None:
    text = "ke hoach nam 2026 ke hoach chuyen doi so"
    assert occurrences(text, ("ke", "hoach")) == 2
    assert occurrences(text, ("ke",)) == 2
    assert occurrences(text, ("so",)) == 1  # last token
    assert occurrences(text, ("hoach", "nam")) == 1
    assert occurrences(text, ("oach",)) == 0  # part of a token is no match
    assert occurrences(text, ("doi", "ke")) == 0  # not adjacent
    assert occurrences("ke", ("ke",)) == 1 and occurrences("", ("ke",)) == 0


def test_subject_weighs_more_and_repetition_saturates() -> None:
    phrase = [("ke", "hoach")]
    in_subject = score(phrase, "ke hoach", "noi dung van ban")
    in_body = score(phrase, "thong bao", "ke hoach noi dung")
    assert in_subject > in_body > 0
    once, twice, many = (score(phrase, "", " ".join(["ke hoach"] * n)) for n in (1, 2, 40))
    assert once < twice < many < 2.2 * once  # more occurrences add less and less
    assert score(phrase, "", "khong lien quan") == 0.0


def test_longer_documents_are_discounted_and_every_word_counts() -> None:
    short = score([("dau", "tu")], "", "dau tu cong")
    long = score([("dau", "tu")], "", "dau tu cong " + "noi dung " * 400)
    assert short > long > 0
    both = score([("dau",), ("tu",)], "", "dau tu")
    one = score([("dau",), ("tu",)], "", "dau cong")
    assert both > one > 0
    assert score([("dau",)], "x", "dau tu") == score([("dau",)], "x", "dau tu")  # stable
