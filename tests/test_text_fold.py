"""Vietnamese text: folding for search, TCVN3 (ABC) recovery."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from mailgw.mime.text import decode_tcvn3, encode_tcvn3, fold, looks_like_tcvn3, nfc, nfd

VOWELS = "aăâeêioôơuưy"
TONES = ["", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323"]  # huyền sắc hỏi ngã nặng
ALL_LOWER = [nfc(v + t) for v in VOWELS for t in TONES] + ["đ"]


def test_fold_examples():
    assert fold("Giấy mời") == "giay moi"
    assert fold("Đề án") == "de an"
    assert fold("  QUYẾT   ĐỊNH\n") == "quyet dinh"
    assert fold("QÐ-UBND") == "qd-ubnd"  # U+00D0 look-alike


def test_every_vietnamese_letter_folds_to_its_base():
    for v in VOWELS:
        base = fold(v)
        assert base in "aeiouy" and len(base) == 1
        for t in TONES:
            assert fold(nfc(v + t)) == base
            assert fold(nfc(v + t).upper()) == base


text_st = st.text(
    alphabet=st.sampled_from(
        list("abcdđĐ xyzAĂÂÊÔƠƯ\u0300\u0301\u0309\u0303\u0323\t\n-/") + ALL_LOWER
    ),
    max_size=40,
)


@given(text_st)
def test_fold_idempotent(s):
    assert fold(fold(s)) == fold(s)


@given(st.text(max_size=60))
def test_fold_has_no_marks_and_no_d_stroke(s):
    out = fold(s)
    assert not any(unicodedata.combining(c) for c in out)
    assert "đ" not in out and "Đ" not in out


@given(st.text(max_size=60))
def test_fold_ignores_normal_form(s):
    assert fold(nfc(s)) == fold(nfd(s))


def test_tcvn3_known_strings():
    assert decode_tcvn3("Qu¶ng Ng·i") == "Quảng Ngãi"
    assert (
        decode_tcvn3("Céng hßa x· héi chñ nghÜa ViÖt Nam") == "Cộng hòa xã hội chủ nghĩa Việt Nam"
    )
    assert decode_tcvn3("§éc lËp - Tù do - H¹nh phóc") == "Độc lập - Tự do - Hạnh phúc"
    assert decode_tcvn3("Tr\xadêng häc") == "Trường học"
    # upper-case font with lower-case codes: whole words/lines come back upper case
    assert decode_tcvn3("UBND TØNH QU¶NG NG·I") == "UBND TỈNH QUẢNG NGÃI"


def test_tcvn3_every_letter_with_every_tone_round_trips():
    for ch in ALL_LOWER:
        encoded = encode_tcvn3(ch)
        if ch.isascii():
            assert encoded == ch
            continue
        assert len(encoded) == 1 and 0xA0 <= ord(encoded) <= 0xFF, ch
        assert encoded.encode("latin-1")  # a real single byte
        assert decode_tcvn3(encoded) == ch
    for ch in "ĂÂÊÔƠƯĐ":
        assert decode_tcvn3(encode_tcvn3(ch)) == ch
    # the table is injective over the letters
    assert len({encode_tcvn3(c) for c in ALL_LOWER}) == len(ALL_LOWER)


def test_tcvn3_words_round_trip():
    words = (
        "Quảng Ngãi ủy ban nhân dân tỉnh giấy mời họp được thưởng khẩn hỏa tốc "
        "người nước ngoài quyết định thông báo kế hoạch tờ trình biên bản đề án "
        "nghĩa vụ yêu cầu thuyền khuỷu quỹ tuyển dụng sở tài chính"
    )
    assert decode_tcvn3(encode_tcvn3(words)) == words
    assert looks_like_tcvn3(encode_tcvn3(words))


def test_looks_like_tcvn3_rejects_other_text():
    assert not looks_like_tcvn3("Quảng Ngãi")  # real Unicode
    assert not looks_like_tcvn3("plain ascii")
    assert not looks_like_tcvn3("Größe Müller straße")  # German latin-1
    assert not looks_like_tcvn3("naïve façade à la carte")
    assert not looks_like_tcvn3("")
