"""Document number/symbol parsing, normalisation and own-vs-cited mentions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailgw.mime.symbols import (
    TYPE_CODES,
    find_mentions,
    normalize_symbol,
    symbol_from_filename,
    type_name,
)


def test_normalize_examples():
    cases = {
        "45/GM-UBND": "45/GM-UBND",
        "Số: 45 /GM- UBND": "45/GM-UBND",
        "30/2020/NĐ-CP": "30/2020/NĐ-CP",
        "19-NQ/TW": "19-NQ/TW",
        "123/UBND-VX": "123/UBND-VX",
        "112/SKHĐT-KTĐN": "112/SKHĐT-KTĐN",
        "1532/STC-TCHCSN": "1532/STC-TCHCSN",
        "125/QÐ-UBND": "125/QĐ-UBND",  # U+00D0
        "5/qđ-ubnd": "05/QĐ-UBND",
        "56/TTr-STC": "56/TTr-STC",
        "7/ttr-stc": "07/TTr-STC",
        "08/2026/QĐ-UBND": "08/2026/QĐ-UBND",
    }
    for raw, want in cases.items():
        assert normalize_symbol(raw) == want, raw


def test_not_symbols():
    for raw in ["Số:      /QĐ-UBND", "02/9/2026", "146 hộ/512", "", "hello", "45/", "/GM-UBND"]:
        assert normalize_symbol(raw) is None, raw


def test_type_names():
    assert type_name("GM") == "Giấy mời"
    assert type_name("QÐ") == "Quyết định"
    assert type_name("ĐA") == "Đề án" and type_name("DA") == "Dự án"
    assert type_name("XYZ") is None
    for code in ("NQ", "QyĐ", "CTr", "TTr", "BGN", "GUQ", "TrS", "TTh", "GN", "SL", "SY"):
        assert code in TYPE_CODES


def test_mentions_own_vs_cited():
    text = (
        "Phúc đáp Công văn số 412/STTTT-CNTT, Sở Tài chính gửi Công văn số 1532/STC-TCHCSN "
        "ngày 14/9/2026.\nCăn cứ Nghị định số 30/2020/NĐ-CP; Theo Quyết định số 52/QĐ-TTT\n"
        "ỦY BAN NHÂN DÂN\nSố: 215 /GM- UBND\nKèm theo Kế hoạch số 45/KH-UBND."
    )
    roles = {m.symbol: m.role for m in find_mentions(text)}
    assert roles == {
        "412/STTTT-CNTT": "cited",
        "1532/STC-TCHCSN": "own",
        "30/2020/NĐ-CP": "cited",
        "52/QĐ-TTT": "cited",
        "215/GM-UBND": "header",
        "45/KH-UBND": "cited",
    }


def test_symbols_in_file_names():
    assert symbol_from_filename("89-BC-UBND bao cao.pdf") == "89/BC-UBND"
    assert symbol_from_filename("08_2026_QĐ-UBND_Quy chế.pdf") == "08/2026/QĐ-UBND"
    assert symbol_from_filename("BC48-SNV.pdf") == "48/BC-SNV"
    assert symbol_from_filename("523-UBND-VX.pdf") == "523/UBND-VX"
    assert symbol_from_filename("56-TTr-STC.signed.pdf") == "56/TTr-STC"
    assert symbol_from_filename("Biên bản 03-BB-ĐTT ngày 15-5-2026.docx") == "03/BB-ĐTT"
    assert symbol_from_filename("scan_20260326_0932.pdf") is None
    assert symbol_from_filename("Dự thảo BC KT-XH quý I-2026.docx") is None
    assert symbol_from_filename(None) is None


CODES = sorted(TYPE_CODES)
ISSUER = st.text(alphabet="ABCDEGHKLMNPQSTUVXĐ", min_size=2, max_size=6)


@st.composite
def symbols(draw):
    number = draw(st.integers(min_value=1, max_value=9999))
    code = draw(st.sampled_from(CODES))
    issuers = draw(st.lists(ISSUER, min_size=1, max_size=2))
    year = draw(st.none() | st.integers(min_value=1990, max_value=2099))
    head = f"{number:02d}/{year}/" if year else f"{number:02d}/"
    return f"{head}{code}-{'-'.join(issuers)}"


@given(symbols())
def test_generated_symbol_is_canonical(sym):
    assert normalize_symbol(sym) == sym


@given(symbols(), st.data())
def test_generated_symbol_survives_formatting_variations(sym, data):
    messy = sym
    if data.draw(st.booleans()):
        messy = messy.replace("/", data.draw(st.sampled_from([" /", "/ ", " / "])), 1)
    if data.draw(st.booleans()):
        messy = messy.replace("-", data.draw(st.sampled_from([" -", "- ", " - "])), 1)
    if data.draw(st.booleans()):
        messy = messy.replace("Đ", "\u00d0")
    if data.draw(st.booleans()):
        messy = messy.lower()
    if messy[0] == "0" and data.draw(st.booleans()):
        messy = messy[1:]  # "5/..." instead of "05/..."
    if data.draw(st.booleans()):
        messy = "Số: " + messy
    assert normalize_symbol(messy) == sym, messy


@given(st.text(max_size=30))
def test_normalize_is_idempotent(s):
    once = normalize_symbol(s)
    if once is not None:
        assert normalize_symbol(once) == once
