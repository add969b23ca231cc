"""What a message says about the official document it carries (DocumentFacts).

Evidence comes from the subject, the body, attachment names and attachment text. The own
number/symbol is chosen by weighing each mention by where it stands (see ``_WEIGHTS``): the
"Số:" line of a header block, the subject, a file name and "gửi Báo cáo số ..." count a lot;
a bare mention a little; a cited number ("Căn cứ", "Thực hiện", ...) nothing. Quoted reply
text ("> ...") counts half. A message that only cites numbers has no symbol.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from .model import Attachment, DocumentFacts
from .symbols import CONG_VAN, find_mentions, parse_symbol, symbol_from_filename, type_name
from .text import fold, nfc

__all__ = [
    "build_facts",
    "detect_confidentiality",
    "detect_urgency",
    "reply_forward",
    "strip_prefixes",
]

# source -> role -> weight
_WEIGHTS = {
    "subject": {"header": 6.0, "own": 6.0, "neutral": 6.0, "cited": 0.0},
    "body": {"header": 5.0, "own": 5.0, "neutral": 2.0, "cited": 0.0},
    "filename": {"own": 6.0},
    "attachment": {"header": 5.0, "own": 1.0, "neutral": 0.5, "cited": 0.0},
}
_MIN_SCORE = 2.0
_HEADER_ZONE = 1500  # only the first "Số:" line near the top of an attachment is its header

# --- reply / forward ---------------------------------------------------------------------
_PREFIX = re.compile(
    r"^\s*(?:\[\s*)?(re|aw|sv|tl|tr[aả] l[oờ]i|fwd?|fw|tr|chuy[eể]n ti[eế]p|forward)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)
_REPLY = {"re", "aw", "sv", "tl", "tra loi"}
_FORWARD = {"fwd", "fw", "tr", "chuyen tiep", "forward"}


def reply_forward(subject: str) -> tuple[bool, bool, str]:
    """(is_reply, is_forward, subject without the prefixes); prefixes may repeat."""
    is_reply = is_forward = False
    s = nfc(subject or "")
    for _ in range(20):
        m = _PREFIX.match(s)
        if not m:
            break
        key = fold(m.group(1))
        if key in _REPLY:
            is_reply = True
        elif key in _FORWARD:
            is_forward = True
        s = s[m.end() :]
    return is_reply, is_forward, s.strip()


def strip_prefixes(subject: str) -> str:
    return reply_forward(subject)[2]


# --- urgency / confidentiality ---------------------------------------------------------------
_URGENCY_ORDER = {"thuong": 0, "khan": 1, "thuong_khan": 2, "hoa_toc": 3}
_URGENCY_WORDS = (("hoa toc", "hoa_toc"), ("thuong khan", "thuong_khan"), ("khan", "khan"))
_URG_ALT = r"hoa toc|thuong khan|khan"
# a marking standing alone on its line: "KHẨN", "- HỎA TỐC -", "Thượng khẩn"
_URG_LINE = re.compile(rf"^[\s\-–*•\[\](]*({_URG_ALT})[\s\-–*\]).!:]*$", re.M)
# "Độ khẩn: Khẩn"
_URG_FIELD = re.compile(rf"\bdo khan\s*:\s*({_URG_ALT}|thuong)\b")
# in brackets anywhere in the subject: "[KHẨN]", "(Hỏa tốc)"
_URG_BRACKET = re.compile(rf"[\[(]\s*({_URG_ALT})\s*[\])]")
# at the start of the subject: "KHẨN: ...", "HỎA TỐC - ..."
_URG_START = re.compile(rf"^\W*({_URG_ALT})\s*[:\-–!]")
# upper-case marking in the subject: "... KHẨN ..." (not "KHẨN TRƯƠNG", "KHẨN CẤP")
_URG_UPPER = re.compile(r"(HỎA TỐC|HOẢ TỐC|THƯỢNG KHẨN|KHẨN)(?!\s*(?:TRƯƠNG|CẤP|CHƯƠNG))")
_URG_EN = re.compile(r"^\W*(very urgent|urgent)\b\s*[:\-–!]?", re.I)


def _level(word: str) -> str:
    for key, level in _URGENCY_WORDS:
        if word == key:
            return level
    return "thuong"


def _max_level(levels: Sequence[str]) -> str:
    return max(levels, key=lambda lv: _URGENCY_ORDER[lv], default="thuong")


def detect_urgency(subject: str, texts: Sequence[str]) -> str:
    """Highest urgency marking in the subject or the texts; "thuong" when unmarked.

    Only *markings* count, never the word in prose: "khẩn trương", "khẩn cấp" are ordinary
    words. "thượng khẩn" contains "khẩn": the longest marking is matched first.
    """
    found: list[str] = []
    subj = strip_prefixes(subject)
    fs = fold(subj)
    for rx in (_URG_BRACKET, _URG_START, _URG_LINE, _URG_FIELD):
        found.extend(_level(m.group(1)) for m in rx.finditer(fs))
    for m in _URG_UPPER.finditer(subj):
        found.append(_level(fold(m.group(1))))
    m_en = _URG_EN.match(subj)
    if m_en:
        found.append("thuong_khan" if m_en.group(1).lower() == "very urgent" else "khan")
    for text in texts:
        if not text:
            continue
        ft = fold_lines(text)
        for rx in (_URG_LINE, _URG_FIELD):
            found.extend(_level(m.group(1)) for m in rx.finditer(ft))
    return _max_level(found)


def fold_lines(text: str) -> str:
    """fold() line by line (fold collapses newlines, markings need them)."""
    return "\n".join(fold(line) for line in text.splitlines())


_CONF_ORDER = {"mat": 1, "toi_mat": 2, "tuyet_mat": 3}
_CONF_ALT = r"tuyet mat|toi mat|mat"
_CONF_LINE = re.compile(rf"^[\s\-–*•\[\](]*({_CONF_ALT})[\s\-–*\]).!]*$", re.M)
_CONF_FIELD = re.compile(rf"\bdo mat\s*:\s*({_CONF_ALT})\b")
_CONF_BRACKET = re.compile(rf"[\[(]\s*({_CONF_ALT})\s*[\])]")
_CONF_START = re.compile(rf"^\W*({_CONF_ALT})\s*[:\-–!]")


def detect_confidentiality(subject: str, texts: Sequence[str]) -> str | None:
    """Confidentiality marking (mật / tối mật / tuyệt mật) or None.

    Only markings: a stamp line ("MẬT"), "Độ mật: ...", "[MẬT]" or "MẬT:" in the subject.
    "bí mật", "mật khẩu", "mật độ" in prose are not markings.
    """
    found: list[str] = []
    fs = fold(strip_prefixes(subject))
    for rx in (_CONF_BRACKET, _CONF_START):
        found.extend(m.group(1).replace(" ", "_") for m in rx.finditer(fs))
    for text in texts:
        if not text:
            continue
        ft = fold_lines(text)
        for rx in (_CONF_LINE, _CONF_FIELD):
            found.extend(m.group(1).replace(" ", "_") for m in rx.finditer(ft))
    if not found:
        return None
    return max(found, key=lambda c: _CONF_ORDER[c])


# --- dates ---------------------------------------------------------------------------------
_DATE_WORDS = re.compile(r"ngay\s+(\d{1,2})\s+thang\s+(\d{1,2})\s+nam\s+((?:19|20)\d\d)", re.I)
_DATE_NUM = re.compile(r"ngay\s+(\d{1,2})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*((?:19|20)\d\d)\b")
_EN_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ]
    )
}
_DATE_EN = re.compile(r"dated\s+(\d{1,2})\s+([a-z]+)\s+((?:19|20)\d\d)")
_PLACE_DATE = re.compile(r",\s*ngay\s+(\d{1,2})\s+thang\s+(\d{1,2})\s+nam\s+((?:19|20)\d\d)")


def _mkdate(d: str, m: str, y: str) -> dt.date | None:
    try:
        return dt.date(int(y), int(m), int(d))
    except ValueError:
        return None


def parse_doc_date(text: str) -> dt.date | None:
    """First date written "ngày 12 tháng 3 năm 2026", "ngày 05/3/2026" or "dated 10 March 2026"."""
    f = fold(text)
    for rx in (_DATE_WORDS, _DATE_NUM):
        m = rx.search(f)
        if m:
            return _mkdate(*m.groups())
    m = _DATE_EN.search(f)
    if m and m.group(2) in _EN_MONTHS:
        return _mkdate(m.group(1), str(_EN_MONTHS[m.group(2)]), m.group(3))
    return None


# --- header block: issuer, summary ---------------------------------------------------------
_SKIP_LINES = ("cong hoa xa hoi", "doc lap - tu do", "doc lap – tu do")


def _is_caps(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return len(letters) >= 2 and all(c.isupper() for c in letters)


def _issuer_above(lines: list[str], idx: int) -> str | None:
    """Upper-case lines just above the "Số:" line name the issuing body."""
    block: list[str] = []
    j = idx - 1
    while j >= 0 and len(block) < 3:
        # a header table read row by row: the issuer is the left cell ("SỞ Y TẾ\tCỘNG HÒA …")
        line = lines[j].split("\t", 1)[0].strip()
        if not line:
            if block:
                break
            j -= 1
            continue
        if any(fold(line).startswith(s) for s in _SKIP_LINES):
            j -= 1
            continue
        if not _is_caps(line) or len(line) > 80:
            break
        if type_from_title(line) or re.fullmatch(
            r"[\W]*(?:hoa toc|thuong khan|khan|mat|toi mat|tuyet mat)[\W]*", fold(line)
        ):
            if block:
                break
            j -= 1
            continue
        block.insert(0, line)
        j -= 1
    if not block:
        return None
    if len(block) >= 2 and fold(block[-1]).startswith(("so ", "thanh tra", "cuc ", "chi cuc")):
        return block[-1]
    return " ".join(block)


def _summary_after(lines: list[str], idx: int) -> str | None:
    """Trích yếu: the "V/v ..." line, or the line(s) under the type title (e.g. "GIẤY MỜI")."""
    for j in range(idx + 1, min(len(lines), idx + 12)):
        line = lines[j].strip()
        f = fold(line)
        if f.startswith("v/v"):
            parts = [line[3:].strip()]
            for k in range(j + 1, min(len(lines), j + 3)):
                nxt = lines[k].strip()
                fn = fold(nxt)
                if (
                    not nxt
                    or _is_caps(nxt)
                    or re.search(r"\bngay\s+\d", fn)
                    or fn.startswith("kinh gui")
                ):
                    break
                parts.append(nxt)
            return " ".join(parts) or None
        if _is_caps(line) and type_from_title(line):
            parts = []
            for k in range(j + 1, min(len(lines), j + 4)):
                nxt = lines[k].strip()
                fn = fold(nxt)
                if not nxt or _is_caps(nxt) or fn.startswith(("kinh gui", "can cu", "thuc hien")):
                    break
                parts.append(nxt)
                if len(" ".join(parts)) > 200:
                    break
            return " ".join(parts) or None
    return None


_TITLE_TYPES = {fold(name): code for code, name in (
    ("GM", "Giấy mời"), ("BC", "Báo cáo"), ("QĐ", "Quyết định"), ("TB", "Thông báo"),
    ("TTr", "Tờ trình"), ("KH", "Kế hoạch"), ("BB", "Biên bản"), ("NQ", "Nghị quyết"),
    ("CT", "Chỉ thị"), ("HD", "Hướng dẫn"), ("CTr", "Chương trình"), ("TC", "Thông cáo"),
    ("TC", "Thông cáo báo chí"), ("PA", "Phương án"), ("ĐA", "Đề án"), ("CĐ", "Công điện"),
    ("PG", "Phiếu gửi"), ("PC", "Phiếu chuyển"), ("QC", "Quy chế"), ("QyĐ", "Quy định"),
    ("BC", "Báo cáo nhanh"), ("GGT", "Giấy giới thiệu"), ("HĐ", "Hợp đồng"),
)}  # fmt: skip


def type_from_title(line: str) -> str | None:
    """Type code from a document title line ("GIẤY MỜI" -> "GM")."""
    return _TITLE_TYPES.get(fold(line).strip(" .:"))


# --- symbol choice --------------------------------------------------------------------------
def _quoted_mask(text: str) -> list[tuple[int, int]]:
    spans = []
    pos = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(">"):
            spans.append((pos, pos + len(line)))
        pos += len(line)
    return spans


def _in_spans(i: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= i < b for a, b in spans)


class _Evidence:
    def __init__(self) -> None:
        self.score: dict[str, float] = {}
        self.first: dict[str, int] = {}
        self.cited: list[str] = []
        self.where: dict[str, tuple[str, int, int]] = {}  # symbol -> (text, start, end) best
        self.order = 0

    def add(self, symbol: str, weight: float, text: str = "", start: int = 0, end: int = 0):
        self.order += 1
        if symbol not in self.first:
            self.first[symbol] = self.order
        if weight > 0:
            if text and (symbol not in self.where or weight > self.score.get(symbol, 0)):
                self.where[symbol] = (text, start, end)
            self.score[symbol] = self.score.get(symbol, 0.0) + weight

    def cite(self, symbol: str) -> None:
        if symbol not in self.cited:
            self.cited.append(symbol)

    def best(self) -> str | None:
        if not self.score:
            return None
        sym = max(self.score, key=lambda s: (self.score[s], -self.first[s]))
        return sym if self.score[sym] >= _MIN_SCORE else None


def _scan(ev: _Evidence, source: str, text: str, weak: bool = False) -> None:
    """``weak`` (the body of list mail): only a "Số:" header line counts."""
    weights = _WEIGHTS[source]
    if weak:
        weights = {"header": weights["header"]}
    quoted = _quoted_mask(text) if source == "body" else []
    header_seen = False
    for m in find_mentions(text):
        role = m.role
        if role == "header" and source == "attachment":
            if header_seen or m.start > _HEADER_ZONE:
                role = "neutral"
            header_seen = True
        if role == "cited":
            ev.cite(m.symbol)
        w = weights.get(role, 0.0)
        if quoted and _in_spans(m.start, quoted):
            w *= 0.5
        ev.add(m.symbol, w, text, m.start, m.end)


def _date_near(text: str, end: int) -> dt.date | None:
    """A date written right after the symbol ("... số 41/BC-UBND ngày 13/4/2026") or on the
    next lines of a header block ("Quảng Ngãi, ngày 13 tháng 4 năm 2026")."""
    after = text[end : end + 400]
    f = fold(after[:60])
    m = re.match(r"\W*ngay\s+(\d{1,2})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*((?:19|20)\d\d)", f)
    if m:
        return _mkdate(*m.groups())
    m = re.match(r"\W*ngay\s+(\d{1,2})\s+thang\s+(\d{1,2})\s+nam\s+((?:19|20)\d\d)", f)
    if m:
        return _mkdate(*m.groups())
    m = re.match(r"\W*dated\s+(\d{1,2})\s+([a-z]+)\s+((?:19|20)\d\d)", f)
    if m and m.group(2) in _EN_MONTHS:
        return _mkdate(m.group(1), str(_EN_MONTHS[m.group(2)]), m.group(3))
    m = _PLACE_DATE.search(fold_lines(after))
    if m:
        return _mkdate(*m.groups())
    return None


SENDER_KINDS = ("person", "list", "robot")


def build_facts(
    subject: str,
    body: str,
    attachments: Sequence[Attachment],
    *,
    sender: str = "person",
) -> DocumentFacts:
    """DocumentFacts from subject, body, attachment names and attachment text.

    ``sender`` says who wrote the mail text (see :func:`mailgw.mime.parse.sender_kind`):
    "person"; "list" (newsletters, mailing lists: a number named in their text is news about a
    document, not the number of one they carry; only a "Số:" header line in the body counts);
    "robot" (auto-replies, delivery reports, notices of a document system: their subject and
    text only *mention* documents, often several; only attached files can carry one).
    """
    is_reply, is_forward, bare_subject = reply_forward(subject)
    files = [a for a in attachments if not a.is_signature]
    ev = _Evidence()
    if sender == "robot":
        for text in (bare_subject, body):
            for m in find_mentions(text):
                ev.cite(m.symbol)
    else:
        _scan(ev, "subject", bare_subject)
        _scan(ev, "body", body, weak=sender == "list")
    for att in files:
        sym = symbol_from_filename(att.filename)
        if sym:
            ev.add(sym, _WEIGHTS["filename"]["own"])
    for att in files:
        if att.text:
            _scan(ev, "attachment", att.text)
    symbol = ev.best()

    facts = DocumentFacts()
    facts.is_reply, facts.is_forward = is_reply, is_forward
    facts.cited_symbols = [s for s in ev.cited if s != symbol]
    texts = [body, *(a.text for a in files)]
    facts.urgency = detect_urgency(subject, texts)
    facts.confidentiality = detect_confidentiality(subject, texts)

    header_lines: tuple[list[str], int] | None = None
    if symbol:
        facts.symbol = symbol
        parsed = parse_symbol(symbol)
        if parsed is not None:
            facts.doc_type = parsed.type_code
            facts.doc_type_name = type_name(parsed.type_code) if parsed.type_code else CONG_VAN
        where = ev.where.get(symbol)
        if where:
            text, start, end = where
            facts.doc_date = _date_near(text, end)
            lines = text.splitlines()
            line_idx = text.count("\n", 0, start)
            if re.match(r"\s*(?:s[ốo]|no\.?)\s*:", lines[line_idx], re.I):
                header_lines = (lines, line_idx)
        # prefer the document's own header block (in an attachment or the body) for the rest
        if header_lines is None:
            for text in [body, *(a.text for a in files)]:
                for m in find_mentions(text or ""):
                    if m.symbol == symbol and m.role == "header":
                        lines = text.splitlines()
                        header_lines = (lines, text.count("\n", 0, m.start))
                        if facts.doc_date is None:
                            facts.doc_date = _date_near(text, m.end)
                        break
                if header_lines:
                    break
    if header_lines is not None:
        lines, idx = header_lines
        facts.issuer = _issuer_above(lines, idx)
        facts.summary = _summary_after(lines, idx)
    if facts.doc_type_name is None:
        for text in texts:
            for line in (text or "").splitlines()[:60]:
                if _is_caps(line.strip()):
                    code = type_from_title(line)
                    if code:
                        facts.doc_type = code
                        facts.doc_type_name = type_name(code)
                        break
            if facts.doc_type_name:
                break
    if facts.summary is None and symbol:
        facts.summary = bare_subject or None
    return facts
