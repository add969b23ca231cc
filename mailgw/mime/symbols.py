"""Document numbers and symbols (số, ký hiệu), Decree 30/2020/NĐ-CP appendix I and III.

Forms: ``45/GM-UBND`` (number/type-issuer), ``123/UBND-VX`` (công văn: issuer-unit, no type),
``30/2020/NĐ-CP`` (legal documents carry the year), ``19-NQ/TW`` (Party documents),
multi-part issuers ``112/SKHĐT-KTĐN``. Real text is messy ("Số: 45 /GM- UBND", "QÐ" with
U+00D0, lower case): :func:`normalize_symbol` gives one canonical spelling.

:func:`find_mentions` finds symbols in running text and tells how each is used: the document's
own number (the "Số:" line of the header block, "gửi Báo cáo số ...", "attached ... No. ...")
versus a *cited* one ("Căn cứ", "Thực hiện", "Theo", "Phúc đáp", "Kèm theo", ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .text import fold, nfc

__all__ = [
    "TYPE_CODES",
    "Mention",
    "Symbol",
    "find_mentions",
    "format_symbol",
    "normalize_symbol",
    "parse_symbol",
    "symbol_from_filename",
    "type_name",
]

# Type codes (appendix III) with their Vietnamese names, in canonical spelling.
TYPE_CODES: dict[str, str] = {
    "NQ": "Nghị quyết",
    "QĐ": "Quyết định",
    "CT": "Chỉ thị",
    "QC": "Quy chế",
    "QyĐ": "Quy định",
    "TC": "Thông cáo",
    "TB": "Thông báo",
    "HD": "Hướng dẫn",
    "CTr": "Chương trình",
    "KH": "Kế hoạch",
    "PA": "Phương án",
    "ĐA": "Đề án",
    "DA": "Dự án",
    "BC": "Báo cáo",
    "BB": "Biên bản",
    "TTr": "Tờ trình",
    "HĐ": "Hợp đồng",
    "CĐ": "Công điện",
    "BGN": "Bản ghi nhớ",
    "BTT": "Bản thỏa thuận",
    "GUQ": "Giấy ủy quyền",
    "GM": "Giấy mời",
    "GGT": "Giấy giới thiệu",
    "GNP": "Giấy nghỉ phép",
    "PG": "Phiếu gửi",
    "PC": "Phiếu chuyển",
    "PB": "Phiếu báo",
    "SY": "Bản sao y",
    "TrS": "Bản trích sao",
    "SL": "Bản sao lục",
    "GN": "Giấy nghỉ phép",  # older texts
    "TTh": "Thông tri",  # older texts
    "NĐ": "Nghị định",  # Government decrees (30/2020/NĐ-CP)
    "TT": "Thông tư",  # ministerial circulars (01/2011/TT-BNV)
}
_CODE_KEY = {code.upper(): code for code in TYPE_CODES}
CONG_VAN = "Công văn"


def _key(seg: str) -> str:
    return seg.replace("\u00d0", "Đ").replace("\u00f0", "Đ").replace("đ", "Đ").upper()


def type_name(code: str | None) -> str | None:
    """Vietnamese name of a type code ("GM" -> "Giấy mời"); None -> None."""
    if code is None:
        return None
    canon = _CODE_KEY.get(_key(code))
    return TYPE_CODES.get(canon) if canon else None


@dataclass(frozen=True)
class Symbol:
    number: str  # zero-padded to two digits: "05", "45", "1532"
    issuer: str  # "UBND", "SKHĐT-KTĐN", "TW"
    type_code: str | None = None  # canonical code, None for a công văn
    year: str | None = None  # "2020" in 30/2020/NĐ-CP
    party: bool = False  # 19-NQ/TW

    def __str__(self) -> str:
        return format_symbol(self)

    @property
    def type_name(self) -> str:
        return type_name(self.type_code) or CONG_VAN if self.type_code else CONG_VAN


def format_symbol(sym: Symbol) -> str:
    if sym.party:
        return f"{sym.number}-{sym.type_code}/{sym.issuer}"
    head = f"{sym.number}/{sym.year}/" if sym.year else f"{sym.number}/"
    if sym.type_code:
        return f"{head}{sym.type_code}-{sym.issuer}"
    return f"{head}{sym.issuer}"


_LETTERS = "A-Za-zĐđÐð"
_SEG = rf"[{_LETTERS}][{_LETTERS}&0-9]{{0,11}}"
_H = r"[ \t]*"
# number / [year /] seg(-seg)+   |   number - TYPE / seg(-seg)*
_STANDARD = (
    rf"(?P<num>\d{{1,5}}){_H}/{_H}(?:(?P<year>(?:19|20)\d\d){_H}/{_H})?"
    rf"(?P<segs>{_SEG}(?:{_H}-{_H}{_SEG})+)"
)
_PARTY = (
    rf"(?P<pnum>\d{{1,5}}){_H}-{_H}(?P<ptype>{_SEG}){_H}/{_H}(?P<psegs>{_SEG}(?:{_H}-{_H}{_SEG})*)"
)
_SYMBOL_RE = re.compile(
    rf"(?<![\w/.\-])(?:{_STANDARD}|{_PARTY})(?![\w/]|-[{_LETTERS}0-9])",
)


def _number(num: str) -> str:
    n = int(num)
    return f"{n:02d}"


def _segments_ok(segs: list[str], first_is_type: bool) -> bool:
    """Case sanity: symbols are upper case; accept all-lower text and mixed-case type codes."""
    rest = segs[1:] if first_is_type else segs
    if all(s == s.upper() for s in rest) and (first_is_type or segs[0] == segs[0].upper()):
        return True
    whole = "".join(segs)
    return first_is_type and whole == whole.lower()


def _build(num: str, year: str | None, segs: list[str], party_type: str | None) -> Symbol | None:
    segs = [nfc(s.replace("\u00d0", "Đ").replace("\u00f0", "đ")) for s in segs]
    if party_type is not None:
        code = _CODE_KEY.get(_key(party_type))
        if code is None or not segs:
            return None
        if not _segments_ok([party_type, *segs], True):
            return None
        return Symbol(_number(num), "-".join(_key(s) for s in segs), code, None, True)
    if not segs:
        return None
    code = _CODE_KEY.get(_key(segs[0])) if len(segs) >= 2 else None
    if not _segments_ok(segs, code is not None):
        return None
    if code is not None:
        issuer = "-".join(_key(s) for s in segs[1:])
        return Symbol(_number(num), issuer, code, year)
    if year is not None:
        # 01/2020/UBND-VX is not a form in use; keep it readable anyway
        return Symbol(_number(num), "-".join(_key(s) for s in segs), None, year)
    return Symbol(_number(num), "-".join(_key(s) for s in segs), None, None)


def _from_match(m: re.Match[str]) -> Symbol | None:
    if m.group("num") is not None:
        segs = re.split(rf"{_H}-{_H}", m.group("segs"))
        return _build(m.group("num"), m.group("year"), segs, None)
    segs = re.split(rf"{_H}-{_H}", m.group("psegs"))
    return _build(m.group("pnum"), None, segs, m.group("ptype"))


def parse_symbol(text: str) -> Symbol | None:
    """Parse one symbol written in any usual messy way; None if ``text`` holds none."""
    if not text:
        return None
    s = nfc(text).strip()
    s = re.sub(r"^(?:s[ốo]|no\.?|number)\s*:?\s*", "", s, flags=re.I)
    m = _SYMBOL_RE.search(s)
    if not m or s[: m.start()].strip() or s[m.end() :].strip(" .;,)"):
        return None
    return _from_match(m)


def normalize_symbol(text: str) -> str | None:
    """Canonical spelling: "Số: 5 /qđ- ubnd" -> "05/QĐ-UBND"; None if not a symbol."""
    sym = parse_symbol(text)
    return format_symbol(sym) if sym else None


# --- mentions in running text ------------------------------------------------------------
CITE_MARKERS = (
    "can cu", "thuc hien", "theo", "phuc dap", "tiep theo", "kem theo", "tai van ban",
    "tai cong van", "trien khai", "tra loi", "thay the", "sua doi", "quy dinh tai",
    "huong dan tai", "bai bo", "pursuant to", "following", "according to", "in reply to",
    "with reference to", "referring to", "in accordance with", "further to", "under",
    "implementing",
)  # fmt: skip
OWN_MARKERS = (
    "gui", "xin gui", "ban hanh", "dinh kem", "gui kem", "chuyen", "attached", "please find",
    "sends", "send", "enclosed", "forward",
)  # fmt: skip
_CITE_RE = re.compile(r"\b(?:" + "|".join(re.escape(m) for m in CITE_MARKERS) + r")\b")
_OWN_RE = re.compile(r"\b(?:" + "|".join(re.escape(m) for m in OWN_MARKERS) + r")\b")
_HEADER_PREFIX = re.compile(r"(?:^|\s)(?:so|no\.?|number|ky hieu)\s*:\s*$")
_NO_PREFIX = re.compile(r"(?:^|\s)(?:no\.?|so)\s*$")
_CLAUSE_BREAK = re.compile(r"[.;:!?()\[\]\n]|,\s")


@dataclass(frozen=True)
class Mention:
    symbol: str  # normalised
    start: int
    end: int
    role: str  # "header" ("Số: ..." line), "own" (sent/attached), "cited", "neutral"


def _role(text: str, start: int, prev_end: int) -> str:
    line_start = text.rfind("\n", 0, start) + 1
    line_prefix = fold(text[line_start:start])
    # "Số: 45/GM-UBND" / "Invitation No.: 18/GM-STTTT": a header line, unless the line
    # itself is a citation ("Căn cứ Quyết định số: ...")
    header = len(line_prefix) <= 40 and _HEADER_PREFIX.search(line_prefix)
    if header and not _CITE_RE.search(line_prefix):
        return "header"
    lo = max(line_start, prev_end, start - 160)
    window = text[lo:start]
    breaks = list(_CLAUSE_BREAK.finditer(window))
    clause = window[breaks[-1].end() :] if breaks else window
    clause_f = fold(clause)
    cite = [m.end() for m in _CITE_RE.finditer(clause_f)]
    own = [m.end() for m in _OWN_RE.finditer(clause_f)]
    if cite and (not own or cite[-1] > own[-1]):
        return "cited"
    if own:
        return "own"
    if _NO_PREFIX.search(clause_f) and len(clause_f) < 40 and re.search(r"\w", clause_f):
        return "own"  # "Report No. 09/BC-STTTT", "NOTICE No. 21/TB-STTTT" at a clause start
    return "neutral"


# Between two numbers of one citation list: "Căn cứ Nghị quyết số 19-NQ/TW ngày 16/6/2022 của
# Trung ương và Kế hoạch số 38-KH/TU của Tỉnh ủy; ..." - the second is cited too, until the
# sentence or the list item ends.
_LIST_END = re.compile(r"[;!?\n]|\.(?:\s|$)")


def find_mentions(text: str) -> list[Mention]:
    """All symbols in ``text`` with how they are used (header/own/cited/neutral)."""
    out: list[Mention] = []
    prev_end = 0
    prev_role = None
    for m in _SYMBOL_RE.finditer(text):
        sym = _from_match(m)
        if sym is None:
            continue
        role = _role(text, m.start(), prev_end)
        if role in ("neutral", "own") and prev_role == "cited":
            between = text[prev_end : m.start()]
            if not _LIST_END.search(between) and not _OWN_RE.search(fold(between)):
                role = "cited"
        out.append(Mention(format_symbol(sym), m.start(), m.end(), role))
        prev_end = m.end()
        prev_role = role
    return out


_FILE_STD = re.compile(
    rf"(?<![0-9{_LETTERS}])(?P<num>\d{{1,5}})[ _.-]+(?:(?P<year>(?:19|20)\d\d)[ _.-]+)?"
    rf"(?P<segs>{_SEG}(?:-{_SEG})+)(?![{_LETTERS}])"
)
_FILE_TYPE_FIRST = re.compile(
    rf"(?<![{_LETTERS}0-9])(?P<type>[{_LETTERS}]{{2,4}})[ _.]?(?P<num>\d{{1,5}})"
    rf"-(?P<segs>{_SEG}(?:-{_SEG})*)(?![{_LETTERS}])"
)


def symbol_from_filename(name: str | None) -> str | None:
    """A symbol written in a file name: "89-BC-UBND ...pdf", "08_2026_QĐ-UBND_...", "BC48-SNV",
    "GM 23-PGDĐT.pdf" (type code, then the number, then the issuer).

    "/" cannot appear in file names, so writers use "-" or "_". Only forms whose first letter
    segment is a known type code, or that look like a công văn (two upper-case segments), count.
    """
    if not name:
        return None
    stem = nfc(name)
    stem = re.sub(r"\.(?:signed\.)?[A-Za-z0-9]{1,5}$", "", stem)
    stem = re.sub(r"\.signed$", "", stem)
    for m in _FILE_STD.finditer(stem):
        segs = m.group("segs").split("-")
        if any(s != s.upper() and _key(s) not in _CODE_KEY for s in segs):
            continue
        code = _CODE_KEY.get(_key(segs[0]))
        if code is None and (len(segs) < 2 or any(len(s) < 2 for s in segs)):
            continue
        if code is None and m.group("year"):
            continue
        sym = _build(m.group("num"), m.group("year"), segs, None)
        if sym is not None:
            return format_symbol(sym)
    for m2 in _FILE_TYPE_FIRST.finditer(stem):
        if _key(m2.group("type")) not in _CODE_KEY:
            continue
        segs = [m2.group("type"), *m2.group("segs").split("-")]
        if all(s == s.upper() for s in segs[1:]):
            sym = _build(m2.group("num"), None, segs, None)
            if sym is not None:
                return format_symbol(sym)
    return None
