"""What is stored for one message or register entry, and writing it (idempotently).

Text is folded (``mailgw.mime.text.fold``: no diacritics, đ→d, case-folded) and cut into tokens
here, in Python, for both databases, so SQLite and PostgreSQL see exactly the same words:
SQLite gets the tokens joined by spaces in the FTS5 table, PostgreSQL a tsvector literal with the
same tokens and positions (no stemming, no stop words: the 'simple' behaviour). Field text
(sender, recipients, file names, issuer) is indexed as lexemes with a field prefix
(``from_vanthu``) in the tsvector and as its own column in FTS5; subject lexemes carry weight A.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session

from mailgw.mime.symbols import normalize_symbol
from mailgw.mime.text import fold
from mailgw.search.models import FTS_COLUMNS, FTS_TABLE, SearchEntry, SearchTerm

TOKEN = re.compile(r"[^\W_]+")
MAX_TOKENS = 16000  # per column: PostgreSQL keeps positions up to 16383 only
MAX_STORED_BODY = 65536  # characters of original text kept for snippets (messages)
TIMEZONE = "Asia/Ho_Chi_Minh"  # arrival dates (after:, before:, year of a message)

# tsvector lexeme prefixes of the field columns (tokens never contain "_")
PREFIX = {"sender": "from_", "recipients": "to_", "filename": "file_", "issuer": "issuer_"}


def tokens(s: str | None, limit: int = MAX_TOKENS) -> list[str]:
    if not s:
        return []
    out = TOKEN.findall(fold(s))
    return out[:limit]


def symbol_key(s: str | None) -> str | None:
    """45/GM-UBND, "45 / GM - UBND", 45/gm-ubnd → 45/gm-ubnd; 7/QĐ-UBND → 07/qd-ubnd (the
    canonical spelling of ``mailgw.mime.symbols`` first, when the text parses as a symbol)."""
    if not s:
        return None
    key = "".join(fold(normalize_symbol(s) or s).split())
    return key[:255] or None


def type_key(s: str | None) -> str | None:
    """QĐ → qd: a document type code, folded."""
    return "".join(fold(s).split())[:32] or None if s else None


def local_date(arrival: dt.datetime) -> dt.date:
    return arrival.astimezone(ZoneInfo(TIMEZONE)).date()


def day_start(day: dt.date) -> dt.datetime:
    """The UTC instant at which ``day`` begins in the agency's time zone."""
    return dt.datetime.combine(day, dt.time(), ZoneInfo(TIMEZONE)).astimezone(dt.UTC)


def signed_state(signature: dict | None) -> str:
    if not signature:
        return "no"
    return "yes" if signature.get("valid") else "invalid"


@dataclass
class Record:
    """Everything indexed for one message or register entry (original text, not folded)."""

    kind: str
    ref_id: int
    message_row_id: int
    arrival: dt.datetime
    year: int
    subject: str = ""
    body: str = ""  # body and attachment text (messages), summary and text (documents)
    sender: Sequence[str] = ()
    recipients: Sequence[str] = ()
    filenames: Sequence[str] = ()
    issuer: str | None = None
    category: str | None = None
    register: str | None = None
    number: int | None = None
    symbol: str | None = None
    doc_type: str | None = None
    urgency: str | None = None
    signed: str = "no"
    tags: Sequence[str] = ()
    sha256: Sequence[str] = ()
    stored_body: str | None = None  # original text kept for snippets
    columns: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def tokenize(self) -> dict[str, list[str]]:
        if not self.columns:
            self.columns = {
                "subject": tokens(self.subject),
                "body": tokens(self.body),
                "sender": tokens(" ; ".join(self.sender)),
                "recipients": tokens(" ; ".join(self.recipients)),
                "filename": tokens(" ; ".join(f for f in self.filenames if f)),
                "issuer": tokens(self.issuer),
            }
        return self.columns

    def row(self) -> dict:
        return {
            "kind": self.kind,
            "ref_id": self.ref_id,
            "message_row_id": self.message_row_id,
            "arrival": self.arrival,
            "year": self.year,
            "category": (self.category or None) and self.category.lower()[:32],
            "register": self.register,
            "number": self.number,
            "symbol": symbol_key(self.symbol),
            "doc_type": type_key(self.doc_type),
            "urgency": self.urgency,
            "signed": self.signed,
            "subject": self.subject or None,
            "body": self.stored_body,
        }

    def fts_values(self) -> dict[str, str]:
        return {name: " ".join(toks) for name, toks in self.tokenize().items()}

    def tsvector(self) -> str:
        return tsvector_literal(self.tokenize())

    def terms(self) -> list[tuple[str, str]]:
        out = {("tag", fold(t)[:255]) for t in self.tags if t and fold(t)}
        out |= {("sha256", h.lower()) for h in self.sha256 if h}
        return sorted(out)


def tsvector_literal(columns: dict[str, list[str]]) -> str:
    """A tsvector in its text form: subject lexemes weight A, body positions after a gap (no
    phrase crosses from the subject into the body), field lexemes with their prefix."""
    positions: dict[str, list[str]] = {}
    subject = columns.get("subject", [])
    for i, tok in enumerate(subject, 1):
        positions.setdefault(tok, []).append(f"{i}A")
    start = len(subject) + 2
    for i, tok in enumerate(columns.get("body", []), start):
        positions.setdefault(tok, []).append(str(min(i, 16383)))
    for name, prefix in PREFIX.items():
        for i, tok in enumerate(columns.get(name, []), 1):
            positions.setdefault(prefix + tok, []).append(str(i))
    # PostgreSQL keeps at most 256 positions per lexeme
    return " ".join(f"'{lex}':{','.join(pos[:256])}" for lex, pos in positions.items())


def write(session: Session, records: Iterable[Record]) -> list[int]:
    """Insert or update (unique kind + ref_id); re-indexing replaces, never duplicates."""
    dialect = session.get_bind().dialect.name
    ids = []
    for rec in records:
        row = rec.row()
        existing = session.scalar(
            select(SearchEntry.id).where(
                SearchEntry.kind == rec.kind, SearchEntry.ref_id == rec.ref_id
            )
        )
        if existing is None:
            entry_id = session.execute(insert(SearchEntry).values(**row)).inserted_primary_key[0]
        else:
            entry_id = existing
            session.execute(update(SearchEntry).where(SearchEntry.id == entry_id).values(**row))
            session.execute(delete(SearchTerm).where(SearchTerm.entry_id == entry_id))
        terms = rec.terms()
        if terms:
            session.execute(
                insert(SearchTerm),
                [{"field": f, "value": v, "entry_id": entry_id} for f, v in terms],
            )
        if dialect == "sqlite":
            if existing is not None:
                session.execute(
                    text(f"DELETE FROM {FTS_TABLE} WHERE rowid = :id"), {"id": entry_id}
                )
            session.execute(text(FTS_INSERT), {"id": entry_id, **rec.fts_values()})
        else:
            session.execute(
                text("UPDATE search_index SET tsv = CAST(:tsv AS tsvector) WHERE id = :id"),
                {"id": entry_id, "tsv": rec.tsvector()},
            )
        ids.append(entry_id)
    return ids


FTS_INSERT = (
    f"INSERT INTO {FTS_TABLE} (rowid, {', '.join(FTS_COLUMNS)}) "
    f"VALUES (:id, {', '.join(':' + c for c in FTS_COLUMNS)})"
)
