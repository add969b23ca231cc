"""Writing the audit log: every search, document view, download and raw-message read."""

from __future__ import annotations

from fastapi import HTTPException, Request
from sqlalchemy import insert

from mailgw.api.auth import Caller
from mailgw.db.models import AuditEvent


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _text(value: str | None, limit: int = 4000) -> str | None:
    """As given, but with NUL written as \\x00 (PostgreSQL text cannot hold NUL, and the log
    must keep even a hostile query) and cut to ``limit`` characters."""
    return value if value is None else value.replace("\x00", "\\x00")[:limit]


INSERT = insert(AuditEvent.__table__)


def record(
    request: Request,
    caller: Caller,
    action: str,
    *,
    resource: str | None = None,
    query: str | None = None,
    status: int = 200,
) -> None:
    """Append one event, committed before the answer is sent (its own transaction: the read
    is logged even if the answer fails). A plain Core INSERT on a pooled connection (no ORM
    session, no RETURNING), on PostgreSQL a single autocommitted statement: it runs on every
    read."""
    values = {
        "token_id": caller.token_id,
        "token_name": caller.name,
        "role": caller.role,
        "action": action,
        "resource": _text(resource, 255),
        "query": _text(query),
        "client_addr": client_address(request),
        "status": status,
    }
    with request.app.state.audit_engine.begin() as conn:
        conn.execute(INSERT, values)


def record_outcome(
    request: Request,
    caller: Caller,
    action: str,
    problem: HTTPException | None,
    *,
    ok: int = 200,
    resource: str | None = None,
    query: str | None = None,
) -> None:
    """Append the event of an act or read that may have been refused: with the refusal's
    status, which is then raised; with ``ok`` when there is none."""
    status = problem.status_code if problem is not None else ok
    record(request, caller, action, resource=resource, query=query, status=status)
    if problem is not None:
        raise problem
