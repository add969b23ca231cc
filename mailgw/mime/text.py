"""Vietnamese text helpers: NFC, diacritic-insensitive folding, TCVN3 (ABC) recovery.

TCVN3 ("ABC", TCVN 5712:1993 VN3) is the legacy 8-bit encoding used with the .VnTime fonts.
Python has no codec for it. Text written in it usually reaches us decoded as latin-1 or
cp1252 ("Qu¶ng Ng·i"), so the table below maps those *code points* back to Vietnamese.
Upper-case toned letters do not exist in VN3 proper (they were typed with the lower-case codes
in an upper-case font such as .VnTimeH); ``decode_tcvn3`` restores upper case for words whose
plain letters are all upper case. The few upper-case positions of VN1 that sit in 0xA0-0xFF and
the C1 range (as latin-1 control characters) are mapped too; they are unused by VN3 text.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "TCVN3_TO_UNICODE",
    "decode_tcvn3",
    "encode_tcvn3",
    "fold",
    "is_vietnamese_letter",
    "looks_like_tcvn3",
    "nfc",
    "nfd",
]


def nfc(s: str) -> str:
    """Unicode NFC (the canonical form of all text in mailgw). A NUL is never text, and
    PostgreSQL cannot store it: it becomes U+FFFD."""
    return unicodedata.normalize("NFC", s.replace("\x00", "\ufffd"))


def nfd(s: str) -> str:
    """Unicode NFD, with NUL as U+FFFD like ``nfc``."""
    return unicodedata.normalize("NFD", s.replace("\x00", "\ufffd"))


_WS = re.compile(r"\s+")
_D_MAP = str.maketrans({"đ": "d", "Đ": "D", "\u00d0": "D", "\u0189": "D"})


# Every combining mark (in the planes where they occur) is deleted, đ/Đ become d/D.
_FOLD_TABLE: dict[int, int | None] = {
    cp: None for cp in range(0x300, 0x20000) if unicodedata.combining(chr(cp))
}
_FOLD_TABLE.update(_D_MAP)


def fold(s: str) -> str:
    """Diacritic-insensitive key for matching and search.

    NFD, drop combining marks, map đ/Đ (and the look-alike Ð U+00D0) to d/D, casefold,
    collapse whitespace runs to one space and strip. "Giấy mời" -> "giay moi".
    One ``str.translate`` pass over the NFD text: this runs for every rule field and search.
    """
    if s.isascii():
        return _WS.sub(" ", s.casefold()).strip()
    s = nfd(s).translate(_FOLD_TABLE).casefold()
    if not s.isascii():
        # casefold can produce new combining marks (e.g. U+0130 -> i + U+0307)
        s = nfd(s).translate(_FOLD_TABLE)
    return _WS.sub(" ", s).strip()


# --- TCVN3 (ABC) -------------------------------------------------------------------------
# byte value -> Unicode character. Written from the TCVN 5712 VN3 layout.
_TCVN3_BYTES: dict[int, str] = {
    # base letters with breve / circumflex / horn / stroke
    0xA1: "Ă", 0xA2: "Â", 0xA3: "Ê", 0xA4: "Ô", 0xA5: "Ơ", 0xA6: "Ư", 0xA7: "Đ",
    0xA8: "ă", 0xA9: "â", 0xAA: "ê", 0xAB: "ô", 0xAC: "ơ", 0xAD: "ư", 0xAE: "đ",
    # a
    0xB5: "à", 0xB6: "ả", 0xB7: "ã", 0xB8: "á", 0xB9: "ạ",
    # ă
    0xBB: "ằ", 0xBC: "ẳ", 0xBD: "ẵ", 0xBE: "ắ", 0xC6: "ặ",
    # â
    0xC7: "ầ", 0xC8: "ẩ", 0xC9: "ẫ", 0xCA: "ấ", 0xCB: "ậ",
    # e
    0xCC: "è", 0xCE: "ẻ", 0xCF: "ẽ", 0xD0: "é", 0xD1: "ẹ",
    # ê
    0xD2: "ề", 0xD3: "ể", 0xD4: "ễ", 0xD5: "ế", 0xD6: "ệ",
    # i
    0xD7: "ì", 0xD8: "ỉ", 0xDC: "ĩ", 0xDD: "í", 0xDE: "ị",
    # o
    0xDF: "ò", 0xE1: "ỏ", 0xE2: "õ", 0xE3: "ó", 0xE4: "ọ",
    # ô
    0xE5: "ồ", 0xE6: "ổ", 0xE7: "ỗ", 0xE8: "ố", 0xE9: "ộ",
    # ơ
    0xEA: "ờ", 0xEB: "ở", 0xEC: "ỡ", 0xED: "ớ", 0xEE: "ợ",
    # u
    0xEF: "ù", 0xF1: "ủ", 0xF2: "ũ", 0xF3: "ú", 0xF4: "ụ",
    # ư
    0xF5: "ừ", 0xF6: "ử", 0xF7: "ữ", 0xF8: "ứ", 0xF9: "ự",
    # y
    0xFA: "ỳ", 0xFB: "ỷ", 0xFC: "ỹ", 0xFD: "ý", 0xFE: "ỵ",
    # VN1 upper-case letters placed in gaps of the VN3 layout
    0xAF: "Ằ", 0xBA: "Ẳ", 0xBF: "Ẵ", 0xC0: "Ắ", 0xC1: "Ầ", 0xC2: "Ẩ", 0xC3: "Ẫ", 0xC4: "Ấ",
    0xC5: "Ề", 0xCD: "Ể", 0xD9: "Ễ", 0xDA: "Ế", 0xDB: "Ồ", 0xE0: "Ổ", 0xF0: "Ỗ", 0xFF: "Ố",
    # VN1 C1 range (only reachable when the bytes were decoded as latin-1)
    0x80: "À", 0x81: "Ả", 0x82: "Ã", 0x83: "Á", 0x84: "Ạ", 0x85: "Ặ", 0x86: "Ậ", 0x87: "È",
    0x88: "Ẻ", 0x89: "Ẽ", 0x8A: "É", 0x8B: "Ẹ", 0x8C: "Ệ", 0x8D: "Ì", 0x8E: "Ỉ", 0x8F: "Ĩ",
    0x90: "Í", 0x91: "Ị", 0x92: "Ò", 0x93: "Ỏ", 0x94: "Õ", 0x95: "Ó", 0x96: "Ọ", 0x97: "Ộ",
    0x98: "Ờ", 0x99: "Ở", 0x9A: "Ỡ", 0x9B: "Ớ", 0x9C: "Ợ", 0x9D: "Ù", 0x9E: "Ủ", 0x9F: "Ũ",
}  # fmt: skip

# Keyed by the character the byte becomes under latin-1 (the same as cp1252 for 0xA0-0xFF).
TCVN3_TO_UNICODE: dict[str, str] = {chr(b): u for b, u in _TCVN3_BYTES.items()}
_UNICODE_TO_TCVN3: dict[str, str] = {
    u: chr(b) for b, u in _TCVN3_BYTES.items() if b >= 0xA0 and not (u.isupper() and b > 0xAE)
}
_TCVN3_TRANS = str.maketrans(TCVN3_TO_UNICODE)

# Characters that TCVN3 text produces but that ordinary Western or Vietnamese Unicode text
# practically never contains.
_TCVN3_STRONG = frozenset("¡¢£¤¥¦§¨©ª«¬\u00ad®µ¶·¸¹»¼½¾ÆÇËÎÏÐÑÖ×ØÜÞßäåæçëîïñö÷øûüþ")
# Letters only Vietnamese uses (outside latin-1).
_VIET_RANGE = re.compile(
    r"[\u0102\u0103\u0110\u0111\u0128\u0129\u0168\u0169\u01a0\u01a1\u01af\u01b0\u1ea0-\u1ef9]"
)


def is_vietnamese_letter(ch: str) -> bool:
    """True for letters only Vietnamese uses (ă, đ, ơ, ư, ạ, ...)."""
    return bool(_VIET_RANGE.fullmatch(ch))


_SYLLABLE = re.compile(
    r"(ngh|ng|gh|gi|kh|nh|ph|qu|th|tr|ch|[bcdghklmnpqrstvx])?[aeiouy]{1,3}(ch|ng|nh|[cmnpt])?"
)
_WORD = re.compile(r"[^\W\d_]+")


def _is_viet_syllable(word: str) -> bool:
    return bool(_SYLLABLE.fullmatch(fold(word)))


def looks_like_tcvn3(s: str) -> bool:
    """Heuristic: is ``s`` TCVN3 text that was decoded as latin-1/cp1252?

    Real Vietnamese Unicode (letters beyond latin-1) means no. Otherwise most non-ASCII
    characters must be ones TCVN3 produces and ordinary text does not ("¶", "·", "®", ...),
    and the words they occur in must decode to well-formed Vietnamese syllables (this keeps
    German "Größe" or French text out).
    """
    if _VIET_RANGE.search(s):
        return False
    non_ascii = [ch for ch in s if ord(ch) > 0x7F and not ch.isspace()]
    if not non_ascii:
        return False
    strong = sum(1 for ch in non_ascii if ch in _TCVN3_STRONG)
    mappable = sum(1 for ch in non_ascii if ch in TCVN3_TO_UNICODE)
    if mappable < 0.8 * len(non_ascii):
        return False
    if len(non_ascii) <= 3:
        if not (strong >= 1 and 2 * strong >= len(non_ascii)):
            return False
    elif not (strong >= 2 and strong >= 0.35 * len(non_ascii)):
        return False
    words = [w for w in _WORD.findall(s.translate(_TCVN3_TRANS)) if _VIET_RANGE.search(w)]
    if not words:
        return False
    good = sum(1 for w in words if _is_viet_syllable(w))
    return good >= 0.7 * len(words)


def _upper_if_caps(text: str, min_letters: int) -> str:
    letters = [c for c in text if c.isascii() and c.isalpha()]
    if len(letters) >= min_letters and all(c.isupper() for c in letters):
        return text.upper()
    return text


def decode_tcvn3(s: str) -> str:
    """Map TCVN3 code points (as latin-1/cp1252 characters) to Vietnamese, NFC.

    VN3 has no upper-case toned letters: writers used an upper-case font with lower-case
    codes. Lines (at least 3 plain letters) and words (at least 2) whose plain ASCII letters
    are all upper case are therefore upper-cased as a whole.
    """
    out = s.translate(_TCVN3_TRANS)
    out = "".join(_upper_if_caps(line, 3) for line in out.splitlines(keepends=True))
    out = _WORD.sub(lambda m: _upper_if_caps(m.group(0), 2), out)
    return nfc(out)


def encode_tcvn3(s: str) -> str:
    """Inverse of :func:`decode_tcvn3` for lower-case text and base upper-case letters.

    Upper-case toned letters are written with their lower-case code (as VN3 fonts did).
    Returned as latin-1 characters; ``.encode("latin-1")`` gives the TCVN3 bytes.
    Characters with no TCVN3 code are kept as they are.
    """
    out = []
    for ch in nfc(s):
        if ch in _UNICODE_TO_TCVN3:
            out.append(_UNICODE_TO_TCVN3[ch])
        elif ch.lower() in _UNICODE_TO_TCVN3 and ch.lower() != ch:
            out.append(_UNICODE_TO_TCVN3[ch.lower()])
        else:
            out.append(ch)
    return "".join(out)
