"""Strict address-list parsing.

``email.utils.getaddresses`` misreads crafted input (``"a@b.com" <c@d.com>`` can yield
a@b.com; ``a@b.com,@evil`` yields garbage). We use the RFC 5322 parser behind
``email.policy.default`` (``email._header_value_parser.get_address_list``) on a value whose
display names were decoded by :mod:`mailgw.mime.headers` first and re-quoted, so that the
decoding of mislabelled or raw 8-bit names is ours and can never change the structure.
Mailboxes without a local part or domain are dropped and reported.
"""

from __future__ import annotations

import re
from email import _header_value_parser as hvp

from .headers import decode_header_value
from .model import Address
from .text import nfc

__all__ = ["parse_address_list"]

_EW_RUN = re.compile(r"=\?[^?\s]+\?[QqBb]\?[^?]*\?=(?:\s*=\?[^?\s]+\?[QqBb]\?[^?]*\?=)*")
_DOMAIN_OK = re.compile(r"^(?:\[[^\]\s]+\]|[^\s@<>()\[\]\\,;:\"]+)$")
_LOCAL_OK = re.compile(r"^(?:\"(?:[^\"\\]|\\.)*\"|[^\s@<>()\[\]\\,;:\"]+)$")
MAX_ADDRESSES = 1000


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _predecode(value: str) -> str:
    """Decode encoded words and raw 8-bit text into quoted strings, keeping structure."""
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            j = i + 1
            buf: list[str] = []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    buf.append(value[j + 1])
                    j += 2
                    continue
                buf.append(value[j])
                j += 1
            out.append(_quote(decode_header_value("".join(buf))))
            i = j + 1
            continue
        if c == "(":  # comment: copy through, balanced, so its content is never parsed
            depth = 0
            j = i
            while j < n:
                if value[j] == "\\":
                    j += 2
                    continue
                if value[j] == "(":
                    depth += 1
                elif value[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(value[i : j + 1])
            i = j + 1
            continue
        m = _EW_RUN.match(value, i)
        if m:
            out.append(_quote(decode_header_value(m.group(0))))
            i = m.end()
            continue
        if ord(c) > 0x7F:
            j = i
            while (j < n and ord(value[j]) > 0x7F) or (
                j < n and value[j] == " " and j + 1 < n and ord(value[j + 1]) > 0x7F
            ):
                j += 1
            # extend to the whole word run so a raw 8-bit name decodes in one go
            out.append(decode_header_value(value[i:j]))
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _clean_name(name: str | None) -> str:
    if not name:
        return ""
    return nfc(" ".join(name.split()))


def parse_address_list(value: str | None, defects: list[str] | None = None) -> list[Address]:
    """Parse an address header value (raw, as read by the email parser). Never raises."""
    if defects is None:
        defects = []
    if not value:
        return []
    raw = re.sub(r"\r?\n[ \t]*", " ", str(value))
    try:
        prepared = _predecode(raw)
    except Exception as exc:  # pragma: no cover - defensive
        defects.append(f"address decoding failed: {exc!r}")
        prepared = raw
    try:
        tokens, rest = hvp.get_address_list(prepared)
    except Exception as exc:
        defects.append(f"unparsable address list: {exc.__class__.__name__}")
        return []
    result: list[Address] = []
    if rest:
        defects.append("trailing garbage in address list")
    for mb in tokens.all_mailboxes:
        if len(result) >= MAX_ADDRESSES:
            defects.append("too many addresses")
            break
        if isinstance(mb, hvp.InvalidMailbox) or mb.token_type == "invalid-mailbox":
            defects.append(f"invalid mailbox: {str(mb).strip()[:80]!r}")
            continue
        try:
            local = mb.local_part
            domain = mb.domain
            name = mb.display_name
        except Exception:
            defects.append("invalid mailbox")
            continue
        if not local or not domain:
            defects.append(f"mailbox without local part or domain: {str(mb).strip()[:80]!r}")
            continue
        domain = domain.strip()
        local = local.strip()
        if not _DOMAIN_OK.match(domain):
            defects.append(f"invalid domain: {domain[:80]!r}")
            continue
        local_txt = local if _LOCAL_OK.match(local) else _quote(local)
        result.append(Address(name=_clean_name(name), addr=nfc(f"{local_txt}@{domain}")))
    return result
