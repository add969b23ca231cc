"""``parse_message``: raw bytes in, :class:`ParsedMessage` out. Never raises.

The stdlib parser (policy compat32: lenient, no lazy header objects that can raise later)
builds the tree; everything else is ours: header decoding, address lists, the choice of body,
attachments, text extraction and the document facts. Work is bounded: raw size, nesting
depth, number of parts, header count and length are capped (``ParseLimits``); what goes over
is skipped and noted in ``defects``.
"""

from __future__ import annotations

import datetime as dt
import email
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email import policy
from email.message import Message

from .addresses import parse_address_list
from .calendar import parse_calendar
from .charset import decode_bytes
from .extract import DEFAULT_LIMITS, ExtractLimits, extract_text
from .facts import build_facts
from .headers import decode_header_value
from .html import html_to_text
from .model import Attachment, CalendarEvent, DocumentFacts, ParsedMessage
from .text import fold, nfc

__all__ = ["DEFAULT_PARSE_LIMITS", "ParseLimits", "parse_message", "sender_kind"]


@dataclass(frozen=True)
class ParseLimits:
    max_size: int = 64 * 1024 * 1024  # bytes parsed; the rest is ignored (noted)
    max_depth: int = 32  # multipart / message nesting
    max_parts: int = 1000  # MIME parts visited
    max_headers: int = 2000  # headers kept per message
    max_header_chars: int = 64 * 1024  # a header value longer than this is cut
    max_nested_messages: int = 20  # message/rfc822 parts read for text
    extract: ExtractLimits = field(default_factory=lambda: DEFAULT_LIMITS)


DEFAULT_PARSE_LIMITS = ParseLimits()

_SIGNATURE_TYPES = {
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pgp-signature",
}
_SIGNATURE_EXT = (".p7s", ".sig", ".asc")


def _decoded_headers(msg: Message, limits: ParseLimits, defects: list[str]):
    out: list[tuple[str, str]] = []
    raw_items = list(getattr(msg, "_headers", []))
    if len(raw_items) > limits.max_headers:
        defects.append(f"too many headers: {len(raw_items)}, kept {limits.max_headers}")
        raw_items = raw_items[: limits.max_headers]
    for name, value in raw_items:
        try:
            value = str(value)
            if len(value) > limits.max_header_chars:
                defects.append(f"header {str(name)[:40]} too long: cut")
                value = value[: limits.max_header_chars]
            out.append((nfc(str(name)), decode_header_value(value)))
        except Exception as exc:  # pragma: no cover - defensive
            defects.append(f"undecodable header {name!r}: {exc.__class__.__name__}")
    return out


def _raw_values(msg: Message, name: str) -> list[str]:
    """Header values as stored by the parser (raw 8-bit kept as surrogate escapes).

    ``Message.get`` would wrap 8-bit values in an ``email.header.Header`` and lose them.
    """
    lname = name.lower()
    try:
        items = msg.raw_items()
    except Exception:
        items = getattr(msg, "_headers", [])
    return [str(v) for k, v in items if str(k).lower() == lname]


def _raw_header(msg: Message, name: str, limits: ParseLimits) -> str | None:
    values = _raw_values(msg, name)
    if not values:
        return None
    return values[0][: limits.max_header_chars]


def _param(part: Message, name: str, header: str) -> str | None:
    """A MIME parameter decoded: RFC 2231 (with its charset), RFC 2047, raw 8-bit."""
    try:
        value = part.get_param(name, header=header)
    except Exception:
        return None
    if value is None:
        return None
    if isinstance(value, tuple):
        charset, _lang, text = value
        try:
            data = str(text).encode("latin-1", errors="surrogateescape")
        except UnicodeEncodeError:
            data = str(text).encode("utf-8", errors="surrogateescape")
        return decode_bytes(data, charset or "utf-8") or None
    text = email.utils.unquote(str(value))
    return decode_header_value(text).strip() or None


def _filename(part: Message) -> str | None:
    name = _param(part, "filename", "content-disposition") or _param(part, "name", "content-type")
    if name:
        name = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or None
    return name


def _disposition(part: Message) -> str | None:
    try:
        value = part.get("content-disposition")
    except Exception:
        return None
    if not value:
        return None
    return str(value).split(";", 1)[0].strip().lower() or None


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _payload_bytes(part: Message, defects: list[str]) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        defects.append(f"undecodable part payload: {exc.__class__.__name__}")
        return b""
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode("utf-8", errors="surrogateescape")
    return bytes(data)


def _part_text(part: Message, ctype: str, defects: list[str]) -> str:
    data = _payload_bytes(part, defects)
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = decode_bytes(data, charset)
    if ctype == "text/html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Walker:
    """Walks a message tree once, collecting body text, attachments and the calendar."""

    def __init__(self, limits: ParseLimits, defects: list[str], extract: bool) -> None:
        self.limits = limits
        self.defects = defects
        self.extract = extract
        self.body_parts: list[str] = []
        self.attachments: list[Attachment] = []
        self.calendar: CalendarEvent | None = None
        self.parts_seen = 0
        self.nested_messages = 0
        self._limit_noted = False

    # -- tree ------------------------------------------------------------------------------
    def walk(self, part: Message, depth: int, in_related: bool = False) -> None:
        self.parts_seen += 1
        if self.parts_seen > self.limits.max_parts:
            if not self._limit_noted:
                self.defects.append(f"too many MIME parts: stopped at {self.limits.max_parts}")
                self._limit_noted = True
            return
        if depth > self.limits.max_depth:
            if not self._limit_noted:
                self.defects.append(f"MIME nesting deeper than {self.limits.max_depth}: cut")
                self._limit_noted = True
            return
        ctype = _content_type(part)
        if part.is_multipart() and ctype != "message/rfc822":
            self._multipart(part, ctype, depth)
        else:
            self._leaf(part, ctype, depth, in_related)

    def _children(self, part: Message) -> list[Message]:
        try:
            payload = part.get_payload()
        except Exception:
            return []
        if not isinstance(payload, list):
            return []
        return [p for p in payload if isinstance(p, Message)]

    def _multipart(self, part: Message, ctype: str, depth: int) -> None:
        children = self._children(part)
        if not children:
            self.defects.append(f"{ctype} without parts (missing boundary?)")
            # the stdlib keeps the body as text: read it as plain text
            try:
                payload = part.get_payload()
            except Exception:
                payload = None
            if isinstance(payload, str) and payload.strip() and not self.body_parts:
                self.body_parts.append(payload)
            return
        if ctype == "multipart/alternative":
            self._alternative(children, depth)
            return
        if ctype == "multipart/related":
            self.walk(children[0], depth + 1)
            for child in children[1:]:
                self.walk(child, depth + 1, in_related=True)
            return
        for child in children:
            self.walk(child, depth + 1)

    def _alternative(self, children: list[Message], depth: int) -> None:
        """Choose one body among alternatives: plain text, else HTML, else the richest."""
        chosen: Message | None = None
        for want in ("text/plain", "text/html"):
            for child in children:
                if _content_type(child) == want and not _filename(child):
                    chosen = child
                    break
            if chosen is not None:
                break
        for child in children:
            ctype = _content_type(child)
            if child is chosen:
                self.walk(child, depth + 1)
            elif child.is_multipart() and chosen is None:
                self.walk(child, depth + 1)
                chosen = child
            elif ctype == "text/calendar" or _filename(child) or ctype.startswith("multipart/"):
                if ctype.startswith("multipart/"):
                    self._multipart_attachments_only(child, depth + 1)
                else:
                    self.walk(child, depth + 1)
            # other alternatives (the HTML twin of the plain text) are skipped

    def _multipart_attachments_only(self, part: Message, depth: int) -> None:
        """An unchosen alternative that is multipart: keep its files, not its text."""
        saved = list(self.body_parts)
        self.walk(part, depth)
        self.body_parts = saved

    def _leaf(self, part: Message, ctype: str, depth: int, in_related: bool) -> None:
        disposition = _disposition(part)
        filename = _filename(part)
        if ctype == "text/calendar":
            data = _payload_bytes(part, self.defects)
            if self.calendar is None:
                self.calendar = parse_calendar(data, self.defects)
            if disposition != "attachment" and not filename:
                return
        elif (
            ctype in ("text/plain", "text/html")
            and disposition != "attachment"
            and not filename
            and not in_related
        ):
            text = _part_text(part, ctype, self.defects)
            if text.strip():
                self.body_parts.append(text)
            return
        self._attachment(part, ctype, disposition, filename, depth, in_related)

    # -- attachments -------------------------------------------------------------------------
    def _attachment(
        self,
        part: Message,
        ctype: str,
        disposition: str | None,
        filename: str | None,
        depth: int,
        in_related: bool,
    ) -> None:
        is_message = ctype == "message/rfc822"
        if is_message:
            payload, text, inner_name = self._message_part(part, depth)
            filename = filename or inner_name
        else:
            payload = _payload_bytes(part, self.defects)
            text = ""
        inline = disposition == "inline" or (disposition is None and in_related)
        if disposition is None and not in_related and not filename and not is_message:
            # a nameless non-text leaf (e.g. an image with only a Content-ID) is inline
            try:
                inline = bool(part.get("content-id"))
            except Exception:
                inline = False
        if (
            inline
            and disposition == "inline"
            and not in_related
            and filename
            and not ctype.startswith("image/")
        ):
            # Apple Mail and mobile clients mark every attached file "inline": a named PDF or
            # DOCX outside multipart/related is not part of the body, it is an attached file
            inline = False
        is_signature = ctype in _SIGNATURE_TYPES or bool(
            filename and filename.lower().endswith(_SIGNATURE_EXT) and "signature" in ctype
        )
        lname = (filename or "").lower()
        if lname.endswith((".p7s", ".sig")):
            # detached signatures travel as application/octet-stream too (x.pdf.sig)
            is_signature = True
        elif lname.endswith(".asc") and payload.lstrip().startswith(b"-----BEGIN PGP SIGNATURE"):
            is_signature = True
        att = Attachment(
            filename=filename,
            content_type=ctype,
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            inline=inline,
            payload=payload,
            text=text,
            is_signature=is_signature,
            is_message=is_message,
        )
        if self.extract and not is_message and not is_signature:
            try:
                charset = part.get_content_charset()
            except Exception:
                charset = None
            att.text, att.extract_error = extract_text(
                payload, ctype, filename, charset=charset, limits=self.limits.extract
            )
        self.attachments.append(att)

    def _message_part(self, part: Message, depth: int) -> tuple[bytes, str, str | None]:
        """A forwarded message: its bytes, its text (body + attachment text), a name."""
        try:
            payload = part.get_payload()
        except Exception:
            payload = None
        inner: Message | None = None
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            inner = payload[0]
        if inner is None:
            data = _payload_bytes(part, self.defects)
            return data, "", None
        try:
            data = inner.as_bytes(policy=policy.compat32)
        except Exception:
            data = b""
        if self.nested_messages >= self.limits.max_nested_messages:
            return data, "", None
        self.nested_messages += 1
        sub = _Walker(self.limits, self.defects, self.extract)
        sub.parts_seen = self.parts_seen
        sub.walk(inner, depth + 1)
        self.parts_seen = sub.parts_seen
        subject = decode_header_value(_raw_header(inner, "subject", self.limits))
        texts = []
        if subject:
            texts.append(subject)
        texts.append("\n\n".join(sub.body_parts))
        texts.extend(a.text for a in sub.attachments if a.text)
        name = (subject[:120] + ".eml") if subject else None
        return data, nfc("\n\n".join(t for t in texts if t)), name


_AUTO_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto-?reply|autoreply|out of office|tra loi tu dong|vang mat"
    r"|undeliverable|delivery status notification|returned mail|khong gui duoc)\b",
    re.IGNORECASE,
)


def sender_kind(headers: list[tuple[str, str]], subject: str) -> str:
    """Who wrote the text of the mail: "robot", "list" or "person".

    robot: Auto-Submitted: auto-*, delivery and read reports (multipart/report),
    auto-replies (X-Autoreply, "Automatic reply:", "Trả lời tự động:"); list: newsletters and
    mailing lists (List-Id, List-Unsubscribe, Precedence: bulk/list/junk).
    """
    kind = "person"
    for name, value in headers:
        key = name.lower()
        v = value.strip().lower()
        if key == "auto-submitted" and v.startswith("auto-"):
            return "robot"
        if key in ("x-autoreply", "x-autorespond") and v not in ("", "no", "false"):
            return "robot"
        if key == "content-type" and v.startswith("multipart/report"):
            return "robot"
        if key in ("list-id", "list-unsubscribe") or (
            key == "precedence" and v in ("bulk", "list", "junk")
        ):
            kind = "list"
    if _AUTO_SUBJECT.match(fold(subject or "")):
        return "robot"
    return kind


def _date(value: str | None, defects: list[str]) -> dt.datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except Exception:
        defects.append("unparsable Date header")
        return None


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    value = " ".join(value.split())
    return value or None


def _empty(raw: bytes, defects: list[str]) -> ParsedMessage:
    return ParsedMessage(
        message_id=None,
        subject="",
        from_=[],
        to=[],
        cc=[],
        reply_to=[],
        date=None,
        headers=[],
        body_text="",
        attachments=[],
        calendar=None,
        facts=DocumentFacts(),
        size=len(raw),
        defects=defects,
    )


def parse_message(
    raw: bytes,
    *,
    extract_text: bool = True,
    limits: ParseLimits = DEFAULT_PARSE_LIMITS,
) -> ParsedMessage:
    """Read a message. Every input yields a ParsedMessage; problems are listed in ``defects``.

    ``extract_text=False`` skips attachment text extraction (fast path; the facts then come
    from subject, body and file names only). CPU-bound: call it off the event loop.
    """
    defects: list[str] = []
    if not isinstance(raw, bytes | bytearray | memoryview):
        defects.append(f"not bytes: {type(raw).__name__}")
        raw = str(raw).encode("utf-8", errors="surrogateescape")
    raw = bytes(raw)
    try:
        return _parse(raw, extract_text, limits, defects)
    except Exception as exc:  # last line of defence: bad input must never crash the caller
        defects.append(f"parser failure: {exc.__class__.__name__}: {str(exc)[:200]}")
        return _empty(raw, defects)


def _parse(raw: bytes, extract: bool, limits: ParseLimits, defects: list[str]) -> ParsedMessage:
    data = raw
    if len(data) > limits.max_size:
        defects.append(f"message larger than {limits.max_size} bytes: rest ignored")
        data = data[: limits.max_size]
    try:
        msg = email.message_from_bytes(data, policy=policy.compat32)
    except RecursionError:
        defects.append("MIME structure too deep for the parser: headers only")
        from email.parser import BytesHeaderParser

        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
    for d in getattr(msg, "defects", []) or []:
        defects.append(f"mime: {d.__class__.__name__}")

    headers = _decoded_headers(msg, limits, defects)
    subject = decode_header_value(_raw_header(msg, "subject", limits))
    addr_defects: list[str] = []

    def addrs(name: str):
        values = _raw_values(msg, name)
        out = []
        for v in values[:50]:
            out.extend(parse_address_list(str(v)[: limits.max_header_chars], addr_defects))
        return out

    from_ = addrs("from")
    to = addrs("to")
    cc = addrs("cc")
    reply_to = addrs("reply-to")
    defects.extend(f"address: {d}" for d in addr_defects[:50])

    walker = _Walker(limits, defects, extract)
    try:
        walker.walk(msg, 0)
    except RecursionError:
        defects.append("MIME structure too deep: cut")
    body_text = nfc("\n\n".join(p.strip("\n") for p in walker.body_parts)).strip()

    facts = build_facts(
        subject, body_text, walker.attachments, sender=sender_kind(headers, subject)
    )
    return ParsedMessage(
        message_id=_message_id(decode_header_value(_raw_header(msg, "message-id", limits))),
        subject=subject,
        from_=from_,
        to=to,
        cc=cc,
        reply_to=reply_to,
        date=_date(_raw_header(msg, "date", limits), defects),
        headers=headers,
        body_text=body_text,
        attachments=walker.attachments,
        calendar=walker.calendar,
        facts=facts,
        size=len(raw),
        defects=defects,
    )
