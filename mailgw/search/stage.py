"""The pipeline stage that indexes a message and its register entries (after registering)."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailgw.pipeline import Job, Stage
from mailgw.registry.models import RegisterEntry
from mailgw.search import index
from mailgw.search.models import DOCUMENT, MESSAGE

log = logging.getLogger(__name__)


def message_record(job: Job) -> index.Record:
    parsed = job.parsed
    assert parsed is not None, "the parse stage runs first"
    files = parsed.attachment_files
    body = "\n".join([parsed.body_text, *(a.text for a in files if a.text)])
    facts = parsed.facts
    return index.Record(
        kind=MESSAGE,
        ref_id=job.id,
        message_row_id=job.id,
        arrival=job.received_at,
        year=index.local_date(job.received_at).year,
        subject=parsed.subject,
        body=body,
        sender=[f"{a.name} {a.addr}" for a in parsed.from_] + [job.mail_from],
        recipients=[f"{a.name} {a.addr}" for a in parsed.to + parsed.cc] + list(job.rcpt_to),
        filenames=[a.filename or "" for a in files],
        issuer=facts.issuer,
        category=job.category,
        symbol=facts.symbol,
        doc_type=facts.doc_type,
        urgency=facts.urgency,
        signed=index.signed_state(job.signature),
        tags=job.tags,
        sha256=[a.sha256 for a in files],
        stored_body=body[: index.MAX_STORED_BODY],
    )


def entry_record(entry: RegisterEntry, message: index.Record) -> index.Record:
    """A register entry: its own register fields, the message's subject, people and tags."""
    return index.Record(
        kind=DOCUMENT,
        ref_id=entry.id,
        message_row_id=entry.message_row_id,
        arrival=entry.arrival,
        year=entry.year,
        subject=message.subject,
        body="\n".join(t for t in (entry.summary, entry.text) if t),
        sender=message.sender,
        recipients=message.recipients,
        filenames=[entry.filename or ""],
        issuer=entry.issuer,
        category=message.category,
        register=entry.register,
        number=entry.number,
        symbol=entry.doc_symbol,
        doc_type=entry.doc_type,
        urgency=entry.urgency,
        signed=index.signed_state(entry.signature),
        tags=message.tags,
        sha256=[entry.sha256],
    )


def latest_entries(session: Session, message_row_id: int) -> list[RegisterEntry]:
    """The register entries of a message, latest revision of each number only."""
    latest = (
        select(
            RegisterEntry.register,
            RegisterEntry.year,
            RegisterEntry.number,
            func.max(RegisterEntry.revision).label("revision"),
        )
        .where(RegisterEntry.message_row_id == message_row_id)
        .group_by(RegisterEntry.register, RegisterEntry.year, RegisterEntry.number)
        .subquery()
    )
    return list(
        session.scalars(
            select(RegisterEntry)
            .join(
                latest,
                (RegisterEntry.register == latest.c.register)
                & (RegisterEntry.year == latest.c.year)
                & (RegisterEntry.number == latest.c.number)
                & (RegisterEntry.revision == latest.c.revision),
            )
            .where(RegisterEntry.message_row_id == message_row_id)
            .order_by(RegisterEntry.id)
        )
    )


def index_message(session: Session, job: Job) -> list[int]:
    message = message_record(job)
    records = [message] + [entry_record(e, message) for e in latest_entries(session, job.id)]
    return index.write(session, records)


def index_stage(sessions: sessionmaker[Session]) -> Stage:
    """Index the message and the entries the registering stage made for it (idempotent)."""

    def run(job: Job) -> None:
        with sessions() as session, session.begin():
            ids = index_message(session, job)
        log.debug("%s: indexed %d row(s) for search", job.queue_id, len(ids))

    return run
