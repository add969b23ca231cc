"""Registering a message's documents: which files, which registers, which fields; corrections.

What becomes an entry: every attachment *file* (``Attachment.is_file``: not inline images, not
detached signatures). A message the rules asked to register that carries no file is registered
as one document itself: its content (and blob) is the raw message, ``part_index`` is BODY_PART.

Idempotence: (register, message row, part index) is unique, so processing a message again (a
retry, a crash) finds its entries instead of making new ones. The same content (SHA-256) arriving
again in another message within the same register and year gets no new number: the arrival is
recorded against the existing entry (``register_arrivals``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from mailgw.db.models import utcnow
from mailgw.mime.model import ParsedMessage
from mailgw.registry.blobs import BlobStore, sha256_hex
from mailgw.registry.chain import compute_hash
from mailgw.registry.models import BODY_PART, RegisterArrival, RegisterEntry
from mailgw.registry.numbering import (
    DEFAULT_TIMEZONE,
    advance_chain,
    lock_register,
    next_number,
    year_of,
)

log = logging.getLogger(__name__)

# Register fields a correction may change; the document itself never changes.
CORRECTABLE = (
    "issuer", "doc_symbol", "doc_date", "doc_type", "doc_type_name", "summary", "unit",
    "urgency", "confidentiality", "notes",
)  # fmt: skip


class RegisterSpec(Protocol):
    """A configured register (``mailgw.config.RegisterConfig``)."""

    name: str
    categories: tuple[str, ...]
    classified: bool


@dataclass(frozen=True)
class Document:
    part_index: int
    filename: str | None
    content_type: str
    size: int
    sha256: str
    text: str
    payload: bytes = dataclasses.field(repr=False, default=b"")


@dataclass(frozen=True)
class Fields:
    """The register columns of an entry (those the clerk reads)."""

    issuer: str | None = None
    doc_symbol: str | None = None
    doc_date: dt.date | None = None
    doc_type: str | None = None
    doc_type_name: str | None = None
    summary: str | None = None
    unit: str | None = None
    urgency: str = "thuong"
    confidentiality: str | None = None
    notes: str = ""


@dataclass(frozen=True)
class Registered:
    register: str
    year: int
    number: int
    entry_id: int
    part_index: int
    new: bool  # a number was given now (False: found from an earlier run)
    repeat: bool = False  # the same content was registered before: arrival recorded
    symbol: str | None = None  # the document's number/symbol, for notifications
    filename: str | None = None

    def __str__(self) -> str:
        return f"{self.register} {self.year}/{self.number}"


# --- what to register, and where


def documents_of(
    parsed: ParsedMessage, raw: bytes, raw_sha256: str | None = None
) -> list[Document]:
    docs = [
        Document(i, a.filename, a.content_type, a.size, a.sha256, a.text, a.payload)
        for i, a in enumerate(parsed.attachments)
        if a.is_file
    ]
    if docs:
        return docs
    return [
        Document(BODY_PART, None, "message/rfc822", len(raw), raw_sha256 or sha256_hex(raw),
                 parsed.body_text, raw)
    ]  # fmt: skip


def unit_of(rcpt_to: Iterable[str], units: Mapping[str, str]) -> str | None:
    """Receiving units from the recipients: exact address, then ``@domain``; else the address."""
    found: list[str] = []
    for rcpt in rcpt_to:
        addr = rcpt.strip().lower()
        unit = units.get(addr) or units.get("@" + addr.rpartition("@")[2]) or addr
        if unit and unit not in found:
            found.append(unit)
    return "; ".join(found) or None


def fields_of(parsed: ParsedMessage, rcpt_to: Iterable[str], units: Mapping[str, str]) -> Fields:
    facts = parsed.facts
    sender = parsed.from_[0] if parsed.from_ else None
    issuer = facts.issuer or (sender.name or sender.addr if sender else None)
    return Fields(
        issuer=issuer,
        doc_symbol=facts.symbol,
        doc_date=facts.doc_date,
        doc_type=facts.doc_type,
        doc_type_name=facts.doc_type_name,
        summary=facts.summary or parsed.subject or None,
        unit=unit_of(rcpt_to, units),
        urgency=facts.urgency or "thuong",
        confidentiality=facts.confidentiality,
    )


def target_registers(
    requested: Iterable[str],
    category: str | None,
    confidentiality: str | None,
    specs: Iterable[RegisterSpec],
) -> list[str]:
    """The registers a message goes in: those the rules asked for, plus those fed by its
    category. A classified document goes only to classified registers (the first one
    configured when the rules named only ordinary ones)."""
    specs = list(specs)
    names = list(dict.fromkeys(requested))
    fed = [s.name for s in specs if category and category in s.categories]
    names += [n for n in fed if n not in names]
    if not confidentiality:
        return names
    classified = [s.name for s in specs if s.classified]
    kept = [n for n in names if n in classified]
    if names and not kept:
        if not classified:
            log.error("a classified document cannot be registered: no classified register")
            return []
        kept = classified[:1]
    return kept


# --- registering


class _Known:
    """Entries of this register that matter for one message: its own (a run before this one)
    and those with the same content this year (repeated arrivals). One query, under the lock."""

    def __init__(self, session: Session, register: str, year: int, message_row_id: int,
                 documents: list[Document]):  # fmt: skip
        e = RegisterEntry
        rows = session.execute(
            select(
                e.id,
                e.year,
                e.number,
                e.seq,
                e.message_row_id,
                e.part_index,
                e.sha256,
                e.doc_symbol,
                e.filename,
            )
            .where(
                e.register == register,
                e.revision == 0,
                or_(
                    e.message_row_id == message_row_id,
                    and_(e.year == year, e.sha256.in_({d.sha256 for d in documents})),
                ),
            )
            .order_by(e.seq)
        ).all()
        self.session, self.year, self.message_row_id = session, year, message_row_id
        self.own = {r.part_index: r for r in rows if r.message_row_id == message_row_id}
        self.same: dict[str, Any] = {}
        for r in rows:
            if r.year == year:
                self.same.setdefault(r.sha256, r)

    def lookup(self, doc: Document) -> tuple[Any, str]:
        """(row, "done") registered before; (row, "repeat-done") its arrival recorded before;
        (row, "repeat") same content registered from another message; (None, "new")."""
        if doc.part_index in self.own:
            return self.own[doc.part_index], "done"
        row = self.same.get(doc.sha256)
        if row is None:
            return None, "new"
        arrived = self.session.scalar(
            select(RegisterArrival.id).where(
                RegisterArrival.entry_id == row.id,
                RegisterArrival.message_row_id == self.message_row_id,
                RegisterArrival.part_index == doc.part_index,
            )
        )
        return row, "repeat-done" if arrived is not None else "repeat"

    def add(self, entry: RegisterEntry) -> None:
        self.same.setdefault(entry.sha256, entry)


def register_documents(
    session: Session,
    register: str,
    *,
    arrival: dt.datetime,
    message_row_id: int,
    message_id: str | None,
    raw_sha256: str,
    documents: list[Document],
    fields: Fields,
    signature: dict[str, Any] | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> list[Registered]:
    """Register ``documents`` of one message in ``register``, inside the caller's transaction."""
    year = year_of(arrival, timezone)
    head = lock_register(session, register)
    seq, prev_hash = head.last_seq, head.last_hash
    results: list[Registered] = []
    files = [d for d in documents if d.part_index != BODY_PART]
    known = _Known(session, register, year, message_row_id, documents)
    for doc in documents:
        entry, state = known.lookup(doc)
        if entry is not None:
            if state == "repeat":
                session.add(RegisterArrival(
                    entry_id=entry.id, message_row_id=message_row_id, part_index=doc.part_index,
                    message_id=message_id, arrival=arrival, raw_sha256=raw_sha256,
                ))  # fmt: skip
            results.append(Registered(register, entry.year, entry.number, entry.id,
                                      doc.part_index, new=state == "repeat",
                                      repeat=state != "done", symbol=entry.doc_symbol,
                                      filename=entry.filename))  # fmt: skip
            continue
        notes = fields.notes
        if len(files) > 1:
            position = f"tệp {files.index(doc) + 1}/{len(files)} của cùng thư"
            notes = f"{notes}; {position}" if notes else position
        seq += 1
        entry = RegisterEntry(
            register=register, year=year, number=next_number(session, register, year),
            revision=0, corrects_id=None, seq=seq, prev_hash=prev_hash, arrival=arrival,
            **{**dataclasses.asdict(fields), "notes": notes},
            message_row_id=message_row_id, part_index=doc.part_index, message_id=message_id,
            filename=doc.filename, content_type=doc.content_type, size=doc.size,
            sha256=doc.sha256, raw_sha256=raw_sha256, text=doc.text, signature=signature,
            created_at=utcnow(),
        )  # fmt: skip
        entry.entry_hash = prev_hash = compute_hash(entry, prev_hash)
        session.add(entry)
        session.flush()
        known.add(entry)
        results.append(Registered(register, year, entry.number, entry.id, doc.part_index, True,
                                  symbol=entry.doc_symbol, filename=entry.filename))  # fmt: skip
    if seq != head.last_seq:
        advance_chain(session, register, seq, prev_hash)
    return results


def register_message(
    sessions: sessionmaker[Session],
    store: BlobStore,
    registers: list[str],
    *,
    message_row_id: int,
    arrival: dt.datetime,
    raw: bytes,
    parsed: ParsedMessage,
    fields: Fields,
    signature: dict[str, Any] | None = None,
    timezone: str = DEFAULT_TIMEZONE,
) -> list[Registered]:
    """Store the blobs (raw message and files), then register in each register (one
    transaction per register, so two registers never wait for each other)."""
    if not registers:
        return []
    raw_sha256 = store.put(raw)
    documents = documents_of(parsed, raw, raw_sha256)
    for doc in documents:
        if doc.part_index != BODY_PART and store.put(doc.payload) != doc.sha256:
            raise ValueError(f"attachment {doc.part_index}: payload does not match its SHA-256")
    results: list[Registered] = []
    for register in registers:
        with sessions() as session, session.begin():
            results += register_documents(
                session, register, arrival=arrival, message_row_id=message_row_id,
                message_id=parsed.message_id, raw_sha256=raw_sha256, documents=documents,
                fields=fields, signature=signature, timezone=timezone,
            )  # fmt: skip
    return results


# --- corrections


class CorrectionError(Exception):
    pass


def latest_revision(session: Session, register: str, year: int, number: int) -> RegisterEntry:
    entry = session.scalar(
        select(RegisterEntry)
        .where(
            RegisterEntry.register == register,
            RegisterEntry.year == year,
            RegisterEntry.number == number,
        )
        .order_by(RegisterEntry.revision.desc())
        .limit(1)
    )
    if entry is None:
        raise CorrectionError(f"no entry {register} {year}/{number}")
    return entry


def correct_entry(
    session: Session,
    register: str,
    year: int,
    number: int,
    changes: Mapping[str, Any],
    reason: str,
) -> RegisterEntry:
    """Append a correction of (register, year, number): a new entry with the next revision,
    the same number and document, the changed fields, linked to the entry it corrects."""
    unknown = set(changes) - set(CORRECTABLE)
    if unknown:
        raise CorrectionError(f"cannot correct {', '.join(sorted(unknown))}")
    if not reason.strip():
        raise CorrectionError("a correction needs a reason")
    head = lock_register(session, register)
    old = latest_revision(session, register, year, number)
    values = {c.key: getattr(old, c.key) for c in RegisterEntry.__table__.columns}
    for key in ("id", "entry_hash", "created_at"):
        values.pop(key)
    values.update(changes)
    note = f"Đính chính lần {old.revision + 1}: {reason.strip()}"
    values["notes"] = f"{changes['notes']}; {note}" if changes.get("notes") else note
    values.update(revision=old.revision + 1, corrects_id=old.id, seq=head.last_seq + 1,
                  prev_hash=head.last_hash, created_at=utcnow())  # fmt: skip
    entry = RegisterEntry(**values)
    entry.entry_hash = compute_hash(entry, head.last_hash)
    session.add(entry)
    session.flush()
    advance_chain(session, register, entry.seq, entry.entry_hash)
    return entry
