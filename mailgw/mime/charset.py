"""Decoding bytes of a body part or header to text, with fallbacks for mislabelled charsets.

Order of trust:
1. pure ASCII is ASCII;
2. bytes that are valid UTF-8 (and contain non-ASCII) are UTF-8 whatever the label says when
   the label is UTF-8, a Western single-byte charset, windows-1258 or missing: valid UTF-8 is
   very unlikely to be an accident in those charsets;
3. the declared charset, when Python knows it and it decodes cleanly;
4. a single-byte guess: windows-1258 when it yields Vietnamese letters, else cp1252.
After a single-byte decoding, TCVN3 text ("Qu¶ng Ng·i") is recovered with the mapping table.
The result is always NFC (windows-1258 decodes to base letters plus combining marks).
"""

from __future__ import annotations

import codecs

from .text import decode_tcvn3, is_vietnamese_letter, looks_like_tcvn3, nfc

__all__ = ["decode_bytes", "normalise_charset"]

_ALIASES = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "x-user-defined": "",
    "default": "",
    "ascii": "ascii",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "cp1258": "cp1258",
    "windows-1258": "cp1258",
    "x-cp1258": "cp1258",
    "vietnamese": "cp1258",
    "tcvn": "tcvn3",
    "tcvn3": "tcvn3",
    "tcvn-5712": "tcvn3",
    "tcvn5712-1": "tcvn3",
    "x-viet-tcvn": "tcvn3",
}
# Labels after which valid UTF-8 bytes are taken as UTF-8 regardless.
_UTF8_OVERRIDABLE = {
    "", "ascii", "utf-8", "cp1258", "latin-1", "iso8859-1", "iso8859-15", "cp1252", "tcvn3",
}  # fmt: skip


def normalise_charset(label: str | None) -> str:
    """A Python codec name for a MIME charset label; "" when unknown or missing."""
    if not label:
        return ""
    raw = label.strip().strip("\"'").lower()
    if "*" in raw:  # RFC 2231 language suffix: utf-8*vi
        raw = raw.split("*", 1)[0]
    if raw in _ALIASES:
        return _ALIASES[raw]
    try:
        name = codecs.lookup(raw).name
    except (LookupError, ValueError):
        return ""
    return _ALIASES.get(name, name)


def _viet_score(text: str) -> int:
    return sum(1 for ch in text if is_vietnamese_letter(ch))


def _single_byte(data: bytes, prefer_1258: bool) -> str:
    """Decode unlabelled/mislabelled 8-bit data: TCVN3, windows-1258 or cp1252."""
    as_latin1 = data.decode("latin-1")
    if looks_like_tcvn3(as_latin1):
        return decode_tcvn3(as_latin1)
    t1258 = nfc(data.decode("cp1258", errors="replace"))
    t1252 = data.decode("cp1252", errors="replace")
    score = _viet_score(t1258)
    non_ascii = sum(1 for b in data if b > 0x7F)
    if prefer_1258 and score:
        return t1258
    if score >= 3 and score >= 0.3 * non_ascii:
        return t1258
    return nfc(t1252)


def decode_bytes(data: bytes, declared: str | None = None) -> str:
    """Decode ``data`` labelled ``declared`` (a MIME charset label, may be wrong) to NFC text."""
    if not data:
        return ""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        pass
    cs = normalise_charset(declared)
    if cs in _UTF8_OVERRIDABLE:
        try:
            return nfc(data.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    if cs == "tcvn3":
        return decode_tcvn3(data.decode("latin-1"))
    if cs in ("", "ascii", "utf-8"):
        return _single_byte(data, prefer_1258=True)
    if cs in ("cp1258", "latin-1", "iso8859-1", "iso8859-15", "cp1252"):
        as_latin1 = data.decode("latin-1")
        if looks_like_tcvn3(as_latin1):
            return decode_tcvn3(as_latin1)
        if cs == "cp1258":
            return nfc(data.decode("cp1258", errors="replace"))
        return _single_byte(data, prefer_1258=False)
    try:
        return nfc(data.decode(cs))
    except (UnicodeDecodeError, LookupError):
        pass
    try:
        return nfc(data.decode(cs, errors="replace"))
    except LookupError:
        return _single_byte(data, prefer_1258=True)
