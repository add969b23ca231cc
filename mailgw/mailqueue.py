"""The relay queue as administrators see it: what waits, and sending again or removing mail.

Plain functions over a session, shared by the CLI (``mailgw queue``) and the API (``/queue``).
Deleting takes a message out of the queue only: the archive (and the register) keep it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from mailgw.db.models import DEFERRED, DELETED, HELD, QUEUED, SENDING, Message, utcnow

WAITING = (HELD, DEFERRED, QUEUED, SENDING)  # listed as the queue
EDITABLE = (HELD, DEFERRED, QUEUED)  # may be sent again or deleted (SENDING is leased)


def normal_id(queue_id: str) -> str:
    return queue_id.upper()


def waiting(state: str | None = None) -> Select[tuple[Message]]:
    """Messages in the queue (or in one of its states), oldest first."""
    states = [state] if state else list(WAITING)
    return select(Message).where(Message.state.in_(states)).order_by(Message.id)


def counts(session: Session) -> dict[str, int]:
    """How many messages wait in each queue state (every state named, 0 included)."""
    rows = session.execute(
        select(Message.state, func.count())
        .where(Message.state.in_(WAITING))
        .group_by(Message.state)
    )
    found = dict(rows.all())
    return {state: found.get(state, 0) for state in WAITING}


def find(session: Session, queue_id: str) -> Message | None:
    return session.scalar(select(Message).where(Message.queue_id == normal_id(queue_id)))


def purged(session: Session, queue_ids: list[str]) -> list[str]:
    """Why each of these messages cannot be sent again: its raw bytes are gone (retention)."""
    rows = session.execute(
        select(Message.queue_id, Message.raw_purged_at).where(
            Message.queue_id.in_([normal_id(q) for q in queue_ids]),
            Message.raw_purged_at.is_not(None),
        )
    )
    return [f"{qid}: its raw message was purged on {at:%Y-%m-%d} (retention)" for qid, at in rows]


def retry(session: Session, queue_ids: list[str] | None, lifetime: dt.timedelta) -> int:
    """Queue held, deferred or queued messages for delivery now, with a fresh lifetime;
    ``None``: all of them. Messages whose raw bytes were purged are left alone (check
    ``purged`` first to say why). Returns how many were queued."""
    query = update(Message).where(Message.state.in_(EDITABLE), Message.raw_purged_at.is_(None))
    if queue_ids is not None:
        query = query.where(Message.queue_id.in_([normal_id(q) for q in queue_ids]))
    now = utcnow()
    values = {"state": QUEUED, "next_attempt_at": now, "hold_reason": None,
              "expires_at": now + lifetime}  # fmt: skip
    return session.execute(query.values(**values)).rowcount


def delete(session: Session, queue_ids: list[str]) -> int:
    """Take messages out of the queue (they stay in the archive). Returns how many."""
    query = (
        update(Message)
        .where(Message.queue_id.in_([normal_id(q) for q in queue_ids]))
        .where(Message.state.in_(EDITABLE))
        .values(state=DELETED, hold_reason="deleted by an administrator")
    )
    return session.execute(query).rowcount
