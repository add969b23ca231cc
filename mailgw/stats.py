"""Queue and throughput figures for `GET /status` and `mailgw queue`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailgw.db.models import DEFERRED, MESSAGE_STATES, QUEUED, SENDING, Message, utcnow

WINDOWS_MINUTES = (1, 5, 15)


def counts_by_state(session: Session) -> dict[str, int]:
    counts = dict.fromkeys(MESSAGE_STATES, 0)
    for state, n in session.execute(select(Message.state, func.count()).group_by(Message.state)):
        counts[state] = n
    return counts


def oldest_queued_age(session: Session, now: dt.datetime) -> float | None:
    """Age of the oldest message waiting for the relay, counting one in a delivery attempt."""
    oldest = session.scalar(
        select(func.min(Message.received_at)).where(Message.state.in_((QUEUED, SENDING, DEFERRED)))
    )
    if oldest is None:
        return None
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(0.0, (now - oldest).total_seconds())


def throughput(session: Session, now: dt.datetime) -> dict[str, dict[str, float]]:
    """Messages accepted and relayed per minute over the last 1, 5 and 15 minutes."""
    result: dict[str, dict[str, float]] = {}
    for minutes in WINDOWS_MINUTES:
        since = now - dt.timedelta(minutes=minutes)
        accepted = session.scalar(
            select(func.count()).select_from(Message).where(Message.received_at >= since)
        )
        relayed = session.scalar(
            select(func.count()).select_from(Message).where(Message.relayed_at >= since)
        )
        result[f"{minutes}m"] = {
            "accepted_per_minute": round((accepted or 0) / minutes, 2),
            "relayed_per_minute": round((relayed or 0) / minutes, 2),
        }
    return result


def last_errors(session: Session, limit: int = 10) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Message.queue_id, Message.state, Message.last_error, Message.last_error_at)
        .where(Message.last_error.is_not(None))
        .order_by(Message.last_error_at.desc())
        .limit(limit)
    )
    return [
        {"queue_id": q, "state": s, "error": e, "at": at.isoformat() if at else None}
        for q, s, e, at in rows
    ]


def status_report(session: Session) -> dict[str, Any]:
    now = utcnow()
    return {
        "counts": counts_by_state(session),
        "oldest_queued_age_seconds": oldest_queued_age(session, now),
        "throughput": throughput(session, now),
        "last_errors": last_errors(session),
    }
