"""Reading the archive: registered documents and messages. Every read is audited, also the
ones that find nothing (the status says so).

* ``GET /documents/{id}`` — a register entry (``register_entries.id``) with its signature
  result, the message it came in, its other arrivals and its corrections.
* ``GET /documents/{id}/content`` — the document's original bytes from the blob store.
* ``GET /messages/{ref}`` and ``GET /messages/{ref}/raw`` — ``ref`` is the queue id (as in the
  SMTP reply, the logs and the X-Mailgw-Queue-Id header) or the numeric message id: a value of
  1 to 16 decimal digits is the numeric id, anything else a queue id (queue ids are 17
  characters long).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import (
    AUTH_ERRORS,
    MAX_BIGINT,
    NOT_FOUND,
    REGISTER_FIELD,
    ErrorOut,
    blob_store,
    content_disposition,
    data_dir_of,
    media_type,
    quick_readers_of,
)
from mailgw.db.models import Message
from mailgw.registry.blobs import BlobError, sha256_hex
from mailgw.registry.models import BODY_PART, RegisterArrival, RegisterEntry

router = APIRouter(tags=["archive"])

EntryId = Annotated[int, Path(ge=1, le=MAX_BIGINT, description="register entry id")]
MessageRef = Annotated[
    str,
    Path(
        pattern=r"^[0-9A-Za-z]{1,32}$",
        description="queue id, or the numeric message id (1-16 digits)",
    ),
]
INTEGRITY_ERROR: dict[int | str, dict[str, Any]] = {
    500: {"model": ErrorOut, "description": "The archived bytes no longer match their digest"}
}
PURGED: dict[int | str, dict[str, Any]] = {
    410: {
        "model": ErrorOut,
        "description": "The raw message was removed after its retention period "
        "(storage.retention_days); its registered documents are kept",
    }
}


class MessageSummary(BaseModel):
    id: int
    queue_id: str
    state: str
    origin: str
    received_at: dt.datetime
    mail_from: str
    rcpt_to: list[str]
    message_id: str | None
    subject: str | None
    header_from: str | None
    category: str | None
    tags: list[str] | None
    size: int
    sha256: str


class EntryOut(BaseModel):
    """One register line (Decree 30/2020 appendix IV columns) and its system fields."""

    id: int
    register: str = REGISTER_FIELD
    year: int
    number: int
    revision: int
    corrects_id: int | None
    seq: int
    prev_hash: str
    entry_hash: str
    arrival: dt.datetime
    issuer: str | None
    doc_symbol: str | None
    doc_date: dt.date | None
    doc_type: str | None
    doc_type_name: str | None
    summary: str | None
    unit: str | None
    urgency: str
    confidentiality: str | None
    notes: str
    message_row_id: int
    part_index: int
    message_id: str | None
    filename: str | None
    content_type: str
    size: int
    sha256: str
    raw_sha256: str
    signature: dict[str, Any] | None
    created_at: dt.datetime


class ArrivalOut(BaseModel):
    message_row_id: int
    queue_id: str | None
    part_index: int
    message_id: str | None
    arrival: dt.datetime
    raw_sha256: str


class DocumentOut(BaseModel):
    entry: EntryOut
    signature: dict[str, Any] | None  # the OpenPGP result of the message (and its files)
    message: MessageSummary | None
    other_arrivals: list[ArrivalOut]
    revisions: list[EntryOut]  # every revision of this number, oldest first
    content_url: str


class RegisteredRef(BaseModel):
    id: int
    register: str = REGISTER_FIELD
    year: int
    number: int
    revision: int
    part_index: int
    filename: str | None


class MessageOut(MessageSummary):
    client_addr: str | None
    client_helo: str | None
    auth_user: str | None
    listener: str | None
    attachments: list[dict[str, Any]] | None
    decision: dict[str, Any] | None
    rules_version: str | None
    signature: dict[str, Any] | None
    processed_at: dt.datetime | None
    relay_attempts: int
    next_attempt_at: dt.datetime | None
    expires_at: dt.datetime | None
    rcpt_status: dict[str, Any] | None
    relayed_at: dt.datetime | None
    hold_reason: str | None
    last_error: str | None
    last_error_at: dt.datetime | None
    dsn_sent: bool
    raw_purged_at: dt.datetime | None  # the raw bytes were removed then (retention)
    trace_headers: str
    added_headers: str
    registered: list[RegisteredRef]
    raw_url: str


def _entry(e: RegisterEntry) -> EntryOut:
    return EntryOut.model_validate(e, from_attributes=True)


def _summary(m: Message) -> MessageSummary:
    return MessageSummary.model_validate(m, from_attributes=True)


def _find_message(session: Session, ref: str) -> Message | None:
    if ref.isdigit() and len(ref) <= 16:
        return session.get(Message, int(ref))
    return session.scalar(select(Message).where(Message.queue_id == ref))


@router.get(
    "/documents/{entry_id}",
    response_model=DocumentOut,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def get_document(
    entry_id: EntryId, request: Request, caller: Caller = Depends(require("auditor"))
) -> DocumentOut:
    """A registered document: its register entry, the signature result, the message it came
    in, its other arrivals (the same file received again) and its corrections. Audited."""
    resource = f"document:{entry_id}"
    # (audit.record opens its own transaction: never inside another one, SQLite would wait)
    out = _document(request, entry_id)
    if out is None:
        audit.record(request, caller, "document.view", resource=resource, status=404)
        raise HTTPException(404, f"no document {entry_id}")
    audit.record(request, caller, "document.view", resource=resource)
    return out


def _document(request: Request, entry_id: int) -> DocumentOut | None:
    with quick_readers_of(request)() as session:
        entry = session.get(RegisterEntry, entry_id)
        if entry is None:
            return None
        message = session.get(Message, entry.message_row_id)
        revisions = session.scalars(
            select(RegisterEntry)
            .where(
                RegisterEntry.register == entry.register,
                RegisterEntry.year == entry.year,
                RegisterEntry.number == entry.number,
            )
            .order_by(RegisterEntry.revision)
        ).all()
        # Arrivals are recorded against revision 0 of a number.
        original = revisions[0].id if revisions[0].revision == 0 else entry.id
        arrivals = session.execute(
            select(RegisterArrival, Message.queue_id)
            .join(Message, Message.id == RegisterArrival.message_row_id, isouter=True)
            .where(RegisterArrival.entry_id == original)
            .order_by(RegisterArrival.arrival, RegisterArrival.id)
        ).all()
        out = DocumentOut(
            entry=_entry(entry),
            signature=entry.signature,
            message=_summary(message) if message else None,
            other_arrivals=[
                ArrivalOut(
                    message_row_id=a.message_row_id,
                    queue_id=qid,
                    part_index=a.part_index,
                    message_id=a.message_id,
                    arrival=a.arrival,
                    raw_sha256=a.raw_sha256,
                )
                for a, qid in arrivals
            ],
            revisions=[_entry(r) for r in revisions],
            content_url=f"/documents/{entry.id}/content",
        )
    return out


def download_name(entry: RegisterEntry) -> str:
    if entry.filename:
        return entry.filename
    suffix = ".eml" if entry.part_index == BODY_PART else ".bin"
    return f"{entry.register}-{entry.year}-{entry.number}{suffix}"


@router.get(
    "/documents/{entry_id}/content",
    response_class=Response,
    responses={
        200: {
            "description": "The document's original bytes, with its content type and file name",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **AUTH_ERRORS,
        **NOT_FOUND,
        **INTEGRITY_ERROR,
    },
)
def get_document_content(
    entry_id: EntryId, request: Request, caller: Caller = Depends(require("auditor"))
) -> Response:
    """Download the document exactly as archived (checked against its SHA-256). The file
    name is sent as RFC 5987 ``filename*`` so Vietnamese names arrive intact. Audited."""
    resource = f"document:{entry_id}"
    with quick_readers_of(request)() as session:
        entry = session.get(RegisterEntry, entry_id)
        if entry is not None:
            session.expunge(entry)
    if entry is None:
        audit.record(request, caller, "document.download", resource=resource, status=404)
        raise HTTPException(404, f"no document {entry_id}")
    try:
        data = blob_store(request).get(entry.sha256)
    except BlobError:
        audit.record(request, caller, "document.download", resource=resource, status=404)
        raise HTTPException(404, f"the file of document {entry_id} is missing") from None
    if sha256_hex(data) != entry.sha256:
        audit.record(request, caller, "document.download", resource=resource, status=500)
        raise HTTPException(500, f"the archived file of document {entry_id} was altered")
    audit.record(request, caller, "document.download", resource=resource)
    return Response(
        content=data,
        headers={
            # a header, not Response(media_type=): Starlette would add "; charset=utf-8" to text/*,
            # a charset the register never recorded (the bytes are as received)
            "Content-Type": media_type(entry.content_type),
            "Content-Disposition": content_disposition(download_name(entry)),
            "X-Content-SHA256": entry.sha256,
        },
    )


@router.get("/messages/{ref}", response_model=MessageOut, responses={**AUTH_ERRORS, **NOT_FOUND})
def get_message(
    ref: MessageRef, request: Request, caller: Caller = Depends(require("auditor"))
) -> MessageOut:
    """One message: envelope, state, rules decision, signature facts, relay status and the
    register entries made from it. Audited."""
    out = _message(request, ref)
    if out is None:
        audit.record(request, caller, "message.view", resource=f"message:{ref}", status=404)
        raise HTTPException(404, f"no message {ref}")
    audit.record(request, caller, "message.view", resource=f"message:{out.queue_id}")
    return out


def _message(request: Request, ref: str) -> MessageOut | None:
    with quick_readers_of(request)() as session:
        message = _find_message(session, ref)
        if message is None:
            return None
        entries = session.scalars(
            select(RegisterEntry)
            .where(RegisterEntry.message_row_id == message.id)
            .order_by(RegisterEntry.register, RegisterEntry.seq)
        ).all()
        data = {c.key: getattr(message, c.key) for c in Message.__table__.columns}
        data["trace_headers"] = (message.trace_headers or b"").decode("utf-8", "replace")
        data["added_headers"] = (message.added_headers or b"").decode("utf-8", "replace")
        data["registered"] = [RegisteredRef.model_validate(e, from_attributes=True)
                              for e in entries]  # fmt: skip
        data["raw_url"] = f"/messages/{message.queue_id}/raw"
        return MessageOut.model_validate(data)


def purged_detail(message: Message) -> str:
    assert message.raw_purged_at is not None
    kept = (message.raw_purged_at - message.received_at).days
    return (
        f"the raw message {message.queue_id} was purged on {message.raw_purged_at:%Y-%m-%d} "
        f"after {kept} days of retention"
    )


@router.get(
    "/messages/{ref}/raw",
    response_class=Response,
    responses={
        200: {
            "description": "The message as received (.eml), before the gateway's trace headers",
            "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
        },
        **AUTH_ERRORS,
        **NOT_FOUND,
        **PURGED,
        **INTEGRITY_ERROR,
    },
)
def get_message_raw(
    ref: MessageRef, request: Request, caller: Caller = Depends(require("auditor"))
) -> Response:
    """The original .eml exactly as received (the spool file; the archive's copy when the
    spool file is gone), checked against its SHA-256; 410 once retention removed it. Audited."""
    with quick_readers_of(request)() as session:
        message = _find_message(session, ref)
        if message is not None:
            session.expunge(message)
    if message is None:
        audit.record(request, caller, "message.raw", resource=f"message:{ref}", status=404)
        raise HTTPException(404, f"no message {ref}")
    resource = f"message:{message.queue_id}"
    if message.raw_purged_at is not None:
        audit.record(request, caller, "message.raw", resource=resource, status=410)
        raise HTTPException(410, purged_detail(message))
    try:
        data = (data_dir_of(request) / message.spool_path).read_bytes()
    except OSError:
        try:
            data = blob_store(request).get(message.sha256)
        except BlobError:
            audit.record(request, caller, "message.raw", resource=resource, status=404)
            raise HTTPException(404, f"the raw bytes of {message.queue_id} are gone") from None
    if sha256_hex(data) != message.sha256:
        audit.record(request, caller, "message.raw", resource=resource, status=500)
        raise HTTPException(500, f"the stored bytes of {message.queue_id} were altered")
    audit.record(request, caller, "message.raw", resource=resource)
    return Response(
        content=data,
        media_type="message/rfc822",
        headers={
            "Content-Disposition": content_disposition(f"{message.queue_id}.eml"),
            "X-Content-SHA256": message.sha256,
        },
    )
