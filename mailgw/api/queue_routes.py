"""The relay queue for administrators: what waits (held, deferred, queued, sending), sending
mail again now, and taking it out of the queue — what ``mailgw queue`` does, over HTTP.

Every act and every listing is audited (a listing shows envelopes and subjects). Deleting
takes a message out of the queue only: the archive and the register keep it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from mailgw import mailqueue
from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS, NOT_FOUND, ErrorOut, readers_of, sessions_of
from mailgw.db.models import Message

router = APIRouter(tags=["queue"])

QueueId = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,32}$", description="the queue id")]
CONFLICT: dict[int | str, dict] = {
    409: {"model": ErrorOut, "description": "The message is not in a state that allows it"}
}


class QueuedOut(BaseModel):
    queue_id: str
    state: str
    origin: str
    received_at: dt.datetime
    mail_from: str
    rcpt_to: list[str]
    size: int
    subject: str | None
    category: str | None
    hold_reason: str | None
    relay_attempts: int
    next_attempt_at: dt.datetime | None
    expires_at: dt.datetime | None
    last_error: str | None


class QueuePage(BaseModel):
    counts: dict[str, int]  # messages in each queue state
    total: int  # in the state asked for (all queue states by default)
    offset: int
    limit: int
    messages: list[QueuedOut]


class RetriedOut(BaseModel):
    queued: int  # messages queued for delivery now


def _out(row: Message) -> QueuedOut:
    return QueuedOut.model_validate(row, from_attributes=True)


@router.get("/queue", response_model=QueuePage, responses={**AUTH_ERRORS})
def list_queue(
    request: Request,
    state: Annotated[Literal["held", "deferred", "queued", "sending"] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    caller: Caller = Depends(require("admin")),
) -> QueuePage:
    """Mail waiting for the relay, oldest first, with the count in each state. Audited."""
    query = mailqueue.waiting(state)
    with readers_of(request)() as session:
        counts = mailqueue.counts(session)
        rows = session.scalars(query.offset(offset).limit(limit)).all()
        messages = [_out(r) for r in rows]
    audit.record(request, caller, "queue.list", resource="queue",
                 query=f"state={state or ''}&offset={offset}&limit={limit}")  # fmt: skip
    total = counts[state] if state else sum(counts.values())
    return QueuePage(counts=counts, total=total, offset=offset, limit=limit, messages=messages)


def _change(
    request: Request,
    caller: Caller,
    queue_id: str,
    action: str,
    apply: Callable[[Session, Message], HTTPException | None],
) -> QueuedOut:
    """Retry or delete one message in the queue (``apply``: the act, or why not), audited
    whatever the outcome (404 and 409 included)."""
    problem = None
    with sessions_of(request)() as session, session.begin():
        row = mailqueue.find(session, queue_id)
        if row is None:
            problem = HTTPException(404, f"no message {queue_id}")
        elif row.state not in mailqueue.EDITABLE:
            problem = HTTPException(409, f"{row.queue_id} is {row.state}, not in the queue")
        else:
            problem = apply(session, row)
            session.refresh(row)
        out = _out(row) if row is not None else None
    audit.record_outcome(request, caller, action, problem,
                         resource=f"message:{mailqueue.normal_id(queue_id)}")  # fmt: skip
    assert out is not None
    return out


def _retry(lifetime: dt.timedelta) -> Callable[[Session, Message], HTTPException | None]:
    def apply(session: Session, row: Message) -> HTTPException | None:
        if reasons := mailqueue.purged(session, [row.queue_id]):
            return HTTPException(409, f"{reasons[0]}: it cannot be delivered again")
        mailqueue.retry(session, [row.queue_id], lifetime)
        return None

    return apply


def _delete(session: Session, row: Message) -> None:
    mailqueue.delete(session, [row.queue_id])


@router.post(
    "/queue/{queue_id}/retry",
    response_model=QueuedOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def retry_message(
    queue_id: QueueId, request: Request, caller: Caller = Depends(require("admin"))
) -> QueuedOut:
    """Deliver a held, deferred or queued message now, with a fresh lifetime
    (``relay.max_lifetime_hours``). 409 if it is not in the queue, or if retention removed
    its raw bytes. Audited."""
    lifetime = request.app.state.relay_lifetime
    return _change(request, caller, queue_id, "queue.retry", _retry(lifetime))


@router.delete(
    "/queue/{queue_id}",
    response_model=QueuedOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def delete_message(
    queue_id: QueueId, request: Request, caller: Caller = Depends(require("admin"))
) -> QueuedOut:
    """Take a held, deferred or queued message out of the queue: it is not delivered, and
    the archive keeps it (state ``deleted``). 409 if it is not in the queue. Audited."""
    return _change(request, caller, queue_id, "queue.delete", _delete)


@router.post("/queue/retry", response_model=RetriedOut, responses={**AUTH_ERRORS})
def retry_all(request: Request, caller: Caller = Depends(require("admin"))) -> RetriedOut:
    """Deliver every held, deferred and queued message now (``mailgw queue retry --all``);
    messages whose raw bytes retention removed stay as they are. Audited."""
    with sessions_of(request)() as session, session.begin():
        queued = mailqueue.retry(session, None, request.app.state.relay_lifetime)
    audit.record(request, caller, "queue.retry", resource="queue", query=f"queued={queued}")
    return RetriedOut(queued=queued)
