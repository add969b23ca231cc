"""Header decoding: RFC 2047 encoded words, including the malformed forms seen in real mail.

Handled beyond the RFC: encoded words glued to each other or to text without spaces, encoded
words inside quoted strings, charset labels that are wrong or unknown (the bytes are decoded
by :func:`mailgw.mime.charset.decode_bytes`, which trusts valid UTF-8 over the label), bad
base64 padding, and raw 8-bit bytes in headers (UTF-8, windows-1258 or TCVN3).
Adjacent encoded words of the same charset are joined *as bytes* before decoding, so a
multi-byte character split across two words survives.
"""

from __future__ import annotations

import base64
import binascii
import re

from .charset import decode_bytes
from .text import nfc

__all__ = ["decode_header_value", "raw_header_bytes"]

_EW = re.compile(r"=\?([^?\s]+?)\?([QqBb])\?([^?]*?)\?=")
_FOLD = re.compile(r"\r?\n[ \t]")


def raw_header_bytes(value: str) -> bytes:
    """The original bytes of a header value read with surrogateescape (email.parser)."""
    return value.encode("utf-8", errors="surrogateescape")


def _q_decode(text: str) -> bytes:
    out = bytearray()
    i = 0
    raw = text.encode("latin-1", errors="replace")
    while i < len(raw):
        c = raw[i]
        if c == 0x5F:  # "_"
            out.append(0x20)
        elif c == 0x3D and i + 3 <= len(raw):
            pair = raw[i + 1 : i + 3]
            try:
                out.append(int(pair, 16))
                i += 3
                continue
            except ValueError:
                out.append(c)
        else:
            out.append(c)
        i += 1
    return bytes(out)


def _b_decode(text: str) -> bytes:
    data = re.sub(r"[^A-Za-z0-9+/]", "", text)
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
    data += "=" * (-len(data) % 4)
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return b""


def _decode_plain(text: str) -> str:
    """A run of text outside encoded words: may carry raw 8-bit bytes (surrogateescaped)."""
    if all(ord(c) < 0x80 for c in text):
        return text
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return decode_bytes(raw_header_bytes(text), None)
    if all(ord(c) < 0x100 for c in text):
        # Already-decoded latin-1 str from some caller: maybe UTF-8 or TCVN3 underneath.
        return decode_bytes(text.encode("latin-1"), None)
    return text


def decode_header_value(value: str | None) -> str:
    """Decode a raw header value (as read by the email parser) to NFC text.

    Unfolds continuation lines. Never raises.
    """
    if not value:
        return ""
    try:
        value = str(value)
    except Exception:
        return ""
    value = _FOLD.sub(" ", value).replace("\r", "").replace("\n", " ")
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []  # consecutive encoded words: (charset, bytes)

    def flush() -> None:
        if not pending:
            return
        # merge runs of the same charset as bytes
        runs: list[tuple[str, bytearray]] = []
        for cs, data in pending:
            if runs and runs[-1][0] == cs:
                runs[-1][1].extend(data)
            else:
                runs.append((cs, bytearray(data)))
        for cs, data in runs:
            out.append(decode_bytes(bytes(data), cs))
        pending.clear()

    pos = 0
    for m in _EW.finditer(value):
        between = value[pos : m.start()]
        if between and not (pending and between.strip() == ""):
            flush()
            out.append(_decode_plain(between))
        charset = m.group(1).split("*", 1)[0]
        enc = m.group(2).upper()
        payload = m.group(3)
        data = _b_decode(payload) if enc == "B" else _q_decode(payload)
        pending.append((charset.lower(), data))
        pos = m.end()
    flush()
    tail = value[pos:]
    if tail:
        out.append(_decode_plain(tail))
    return nfc("".join(out))
