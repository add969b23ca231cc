"""Typed values that describe a parsed message.

This is the contract between the reader (``mailgw.mime``), the rules engine (``mailgw.rules``),
the register and the API. Everything here is plain data: no I/O, no parsing logic.
All text fields are NFC-normalised ``str``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Urgency (độ khẩn), machine names as used in labels and the --json output of `mailgw classify`.
URGENCY_LEVELS = ("thuong", "khan", "thuong_khan", "hoa_toc")
# Confidentiality (độ mật); None means not classified.
CONFIDENTIALITY_LEVELS = ("mat", "toi_mat", "tuyet_mat")
# The Directive-15 categories plus "other".
CATEGORIES = (
    "meeting_invitation",
    "meeting_materials",
    "report",
    "announcement",
    "working_document",
    "other",
)


@dataclass(frozen=True)
class Address:
    """One mailbox: display name (decoded, NFC) and addr-spec (``local@domain``)."""

    name: str
    addr: str

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2].lower()


@dataclass
class Attachment:
    """A MIME leaf part that is a file (attached, or inline but not the message body)."""

    filename: str | None
    content_type: str  # lower case, e.g. "application/pdf"
    size: int  # decoded payload size in bytes
    sha256: str  # hex digest of the decoded payload
    inline: bool = False  # Content-Disposition inline (e.g. an embedded image)
    payload: bytes = field(default=b"", repr=False)
    text: str = field(default="", repr=False)  # extracted text, NFC; "" if none
    extract_error: str | None = None  # why text extraction failed (broken, encrypted, too big)
    # Added by the reader (additive): a detached signature (smime.p7s, .sig, .asc) is a part of
    # the signing, not a document file; a message/rfc822 part is a forwarded message.
    is_signature: bool = False
    is_message: bool = False

    @property
    def is_file(self) -> bool:
        """An attachment file as people count them: not inline, not a detached signature."""
        return not self.inline and not self.is_signature


@dataclass
class CalendarEvent:
    """The first VEVENT of a text/calendar part."""

    method: str | None = None  # REQUEST, CANCEL, ...
    summary: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    location: str | None = None
    organizer: str | None = None


@dataclass
class DocumentFacts:
    """What the message says about the official document it carries (DOMAIN.md)."""

    symbol: str | None = None  # normalised own number/symbol, e.g. "45/GM-UBND"
    doc_type: str | None = None  # type code, e.g. "GM", "BC", "QĐ"; None for a công văn
    doc_type_name: str | None = None  # e.g. "Giấy mời"; "Công văn" for a công văn
    doc_date: dt.date | None = None  # "ngày 12 tháng 3 năm 2026"
    issuer: str | None = None  # issuing agency where stated
    summary: str | None = None  # trích yếu, where recognisable
    urgency: str = "thuong"  # one of URGENCY_LEVELS
    confidentiality: str | None = None  # one of CONFIDENTIALITY_LEVELS or None
    cited_symbols: list[str] = field(default_factory=list)  # numbers cited ("Căn cứ", ...)
    is_reply: bool = False  # "Re:", "TL:", "Trả lời:"
    is_forward: bool = False  # "Fwd:", "FW:", "Chuyển tiếp:"


@dataclass
class ParsedMessage:
    """A message read from raw bytes. Never raises on bad input: problems go to ``defects``."""

    message_id: str | None
    subject: str
    from_: list[Address]
    to: list[Address]
    cc: list[Address]
    reply_to: list[Address]
    date: dt.datetime | None
    headers: list[tuple[str, str]]  # every header, name as written, value decoded to text
    body_text: str  # the text body (from text/plain, or HTML converted to text)
    attachments: list[Attachment]
    calendar: CalendarEvent | None
    facts: DocumentFacts
    size: int  # raw size in bytes
    defects: list[str] = field(default_factory=list)

    @property
    def attachment_files(self) -> list[Attachment]:
        """The attachments people count as files (see :attr:`Attachment.is_file`)."""
        return [a for a in self.attachments if a.is_file]

    def header(self, name: str) -> str | None:
        """The first header with this name (case-insensitive), decoded, or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]
