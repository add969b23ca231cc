"""The search query parser (pure): terms, fields, phrases, negation, errors with positions."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.mime.text import fold
from mailgw.search import snippets
from mailgw.search.query import FIELDS, MAX_LENGTH, QueryError, parse
from mailgw.search.snippets import fold_with_offsets, highlight, matches, snippet


def test_words_phrases_fields_and_negation() -> None:
    q = parse('Giấy mời "Đề án" -nháp from:vanthu@tinh.gov.vn -tag:"dự thảo" after:2026-01-31')
    words = [(t.field, t.tokens, t.phrase, t.negated) for t in q.terms]
    assert words == [
        (None, ("giay",), False, False),
        (None, ("moi",), False, False),
        (None, ("de", "an"), True, False),
        (None, ("nhap",), False, True),
        ("from", ("vanthu", "tinh", "gov", "vn"), True, False),
        ("tag", (), False, True),
        ("after", (), False, False),
    ]
    assert q.terms[5].key == "du thao" and q.terms[6].key == dt.date(2026, 1, 31)
    assert q.highlight_tokens() == {"giay", "moi", "de", "an"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("symbol:45/GM-UBND", "45/gm-ubnd"),
        ("symbol:7/qđ-ubnd", "07/qd-ubnd"),
        ("type:QĐ", "qd"),
        ("urgency:hoa_toc", "hoa_toc"),
        ('urgency:"thượng khẩn"', "thuong_khan"),
        ("signed:YES", "yes"),
        ("number:17", 17),
        ("year:2026", 2026),
        ("category:Report", "report"),
        ("register:confidential", "confidential"),
        ("sha256:" + "AB" * 32, "ab" * 32),
        ("before:2026-02-28", dt.date(2026, 2, 28)),
    ],
)
def test_field_values_are_normalised(text: str, key: object) -> None:
    [term] = parse(text).terms
    assert term.key == key


def test_words_with_punctuation_and_sql_are_words() -> None:
    assert [t.tokens for t in parse("'; DROP TABLE x; --").terms] == [("drop",), ("table",), ("x",)]
    assert parse("10:30").terms[0].tokens == ("10", "30")  # not a field: digits before ':'
    assert parse("45/GM-UBND").terms[0].phrase


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ('a "b c', 2, "unbalanced quote"),
        ('a"b"', 1, "quote must start a phrase"),
        ('"a"b', 3, "space between"),
        ("Foo:bar", 0, "unknown field 'Foo:'"),
        ("from:", 5, "needs a value"),
        ("from: x", 5, "needs a value"),
        ("after:2026-1-1", 6, "YYYY-MM-DD"),
        ("after:2026-02-30", 6, "not a real date"),
        ("number:-3", 7, "whole number"),
        ("year:12", 5, "plausible year"),
        ("urgency:gap", 8, "urgency"),
        ("signed:maybe", 7, "signed"),
        ("sha256:xyz", 7, "64 hexadecimal"),
        ('subject:"--"', 8, "no letters or digits"),
        ("", 0, "empty"),
        ("- -- &&", 0, "must be followed"),
        ("&& ||", 0, "empty"),
        ("-a -b", 0, "not negated"),
        ("a\nb", 1, "control"),
        ("a\u200bb", 1, "control"),
        ("x" * (MAX_LENGTH + 1), MAX_LENGTH, "at most"),
        ("a " * 33, 64, "too many terms"),
    ],
)
def test_errors_name_the_place_and_the_reason(text: str, position: int, words: str) -> None:
    with pytest.raises(QueryError) as err:
        parse(text)
    assert err.value.position == position and words in err.value.message


def test_every_field_is_known() -> None:
    for name in FIELDS:
        value = {"after": "2026-01-01", "before": "2026-01-01", "number": "1", "year": "2026",
                 "urgency": "khan", "signed": "no", "sha256": "0" * 64}.get(name, "x")  # fmt: skip
        assert parse(f"{name}:{value}").terms[0].field == name


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_parser_raises_only_query_errors(text: str) -> None:
    try:
        q = parse(text)
    except QueryError as exc:
        assert 0 <= exc.position <= max(len(text), 0) and exc.message
    else:
        assert q.terms and any(not t.negated for t in q.terms)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["giấy", "mời", '"đề án"', "-x", "tag:a", "from:b@c",
                                 "after:2026-01-01", "ĐỀ", "-category:report", ":", "-"]),
                max_size=12))  # fmt: skip
def test_parser_on_query_like_text(parts: list[str]) -> None:
    text = " ".join(parts)
    try:
        parse(text)
    except QueryError as exc:
        assert exc.position <= len(text)


def test_snippet_offsets_map_to_the_original() -> None:
    folded, offsets = fold_with_offsets("Đề án ĐỔI MỚI")
    assert folded == "de an doi moi" and offsets is None
    folded, offsets = fold_with_offsets("ﬁle Straße đi")  # ligature and ß fold to 2 letters
    assert folded == "file strasse di" and offsets is not None
    assert (
        highlight("ﬁle Straße đi", {"strasse", "di"}) == "ﬁle <mark>Straße</mark> <mark>đi</mark>"
    )
    assert highlight("a <b> Đề", {"de"}) == "a &lt;b&gt; <mark>Đề</mark>"


def _matches_by_definition(s: str, tokens: set[str]) -> list[tuple[int, int, str]]:
    """Whole-token matches found the slow, plain way: each character folded on its own, the
    words searched with a look-behind, positions mapped back through a per-character table."""
    folded, index = "", []
    for i, ch in enumerate(s):
        f = " " if ch.isspace() else fold(ch)
        folded += f
        index += [i] * len(f)
    index.append(len(s))
    words = "|".join(map(re.escape, sorted(tokens, key=lambda t: (-len(t), t))))
    pattern = re.compile(r"(?<![^\W_])(?:" + words + r")(?![^\W_])")
    return [(index[m.start()], index[m.end() - 1] + 1, m.group()) for m in pattern.finditer(folded)]


TEXT_CHARS = st.sampled_from(
    [*"aăâbdđeêoôơuưAĐÔ1_ -.,\n", "ề", "ớ", "o\u0301", "ﬁ", "ß", "İ", "\uffff", "x"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT_CHARS, max_size=60).map("".join),
       st.sets(st.sampled_from(["a", "ab", "do", "o", "ss", "fi", "1", "ae", "x1", "i"]),
               min_size=1, max_size=4))  # fmt: skip
def test_snippet_matches_are_whole_folded_words(text: str, tokens: set[str]) -> None:
    assert matches(text, tokens) == _matches_by_definition(text, tokens)


def test_a_snippet_from_the_first_characters_is_the_whole_texts(monkeypatch) -> None:
    """snippet() may look at the first characters only; it must still give what the whole
    text gives. 3,000 seeded random texts (hypothesis's small examples rarely take that path)."""
    rnd = random.Random(15)
    words = ["ab", "do", "x1", "Đổ", "ﬁ", "zz", "abdo", "wxyz", "w" * 25]
    seps = [" ", "  ", "\n", ". ", "-"]
    scanned: list[int] = []
    whole_matches = snippets.matches
    monkeypatch.setattr(
        snippets, "matches", lambda s, t: (scanned.append(len(s)), whole_matches(s, t))[1]
    )
    early = 0
    for _ in range(3000):
        text = "".join(rnd.choice(words) + rnd.choice(seps) for _ in range(rnd.randrange(150)))
        tokens = set(rnd.sample(["ab", "do", "x1", "fi"], rnd.randrange(1, 4)))
        width, first = rnd.choice([8, 20, 60]), rnd.choice([60, 120, 300])
        scanned.clear()
        quick = snippet(text, tokens, width, first)
        early += scanned == [first]
        assert quick == snippet(text, tokens, width, 10**9), (text, tokens, width, first)
    assert early > 500  # the first characters alone were enough that often


def test_a_snippet_widened_to_a_space_past_the_first_characters() -> None:
    """The window grows to the next space (up to 30 characters): a match there that the
    first characters cut in two must still be marked."""
    text = "zz " * 13 + " " + "ab do" + "-zz-zz-zz-zzz-" + "ab" + "-zz" * 10 + " end"
    assert text.index("ab-zz") == 59  # across the cut at 60
    whole = snippet(text, {"ab", "do"}, 8, 10**9)
    assert whole is not None and "-<mark>ab</mark>-zz" in whole
    assert snippet(text, {"ab", "do"}, 8, 60) == whole


def test_snippet_is_cut_around_the_matches() -> None:
    text = "mở đầu " * 100 + "Về việc triển khai Đề án chuyển đổi số" + " kết thúc" * 100
    s = snippet(text, {"de", "an", "chuyen", "doi"})
    assert s is not None and s.startswith("…") and s.endswith("…")
    assert "<mark>Đề</mark> <mark>án</mark> <mark>chuyển</mark> <mark>đổi</mark> số" in s
    assert len(s) < 400
    assert snippet("không có gì", {"x"}) == "không có gì"
