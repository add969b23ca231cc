"""Administration: the audit log (read-only, filterable) and API tokens (create, list, revoke).

Tokens are stored as their SHA-256 only (mailgw/accounts.py): ``POST /tokens`` shows a new
token once, in its answer, and never again. Creating and revoking tokens are audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from mailgw import accounts
from mailgw.api import audit
from mailgw.api.auth import Caller, require, token_cache
from mailgw.api.common import (
    AUTH_ERRORS,
    MAX_INT,
    NO_NUL,
    NOT_FOUND,
    as_utc,
    readers_of,
    sessions_of,
)
from mailgw.db.models import ApiToken, AuditEvent, utcnow

router = APIRouter(tags=["administration"])


class AuditEventOut(BaseModel):
    id: int
    at: dt.datetime
    token_id: int | None
    token_name: str | None
    role: str | None
    action: str
    resource: str | None
    query: str | None
    client_addr: str | None
    status: int | None


class AuditPage(BaseModel):
    total: int
    offset: int
    limit: int
    events: list[AuditEventOut]


Filter = Annotated[str | None, Query(max_length=255, pattern=NO_NUL)]


@router.get("/audit", response_model=AuditPage, responses={**AUTH_ERRORS})
def audit_log(
    request: Request,
    action: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="e.g. document.download")
    ] = None,
    token_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    token_name: Filter = None,
    resource: Annotated[
        str | None,
        Query(
            max_length=255,
            pattern=NO_NUL,
            description="exact, or a prefix ending in * (e.g. document:*)",
        ),
    ] = None,
    since: Annotated[dt.datetime | None, Query(description="from this time (inclusive)")] = None,
    until: Annotated[dt.datetime | None, Query(description="before this time")] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    caller: Caller = Depends(require("admin")),
) -> AuditPage:
    """Who read what, when, from where: newest first, filtered by action, token (id or
    name), resource and time."""
    e = AuditEvent
    where = []
    if action:
        where.append(e.action == action)
    if token_id is not None:
        where.append(e.token_id == token_id)
    if token_name:
        where.append(e.token_name == token_name)
    if resource:
        if resource.endswith("*"):
            where.append(e.resource.startswith(resource[:-1], autoescape=True))
        else:
            where.append(e.resource == resource)
    start, end = as_utc(since, "since"), as_utc(until, "until")
    if start is not None:
        where.append(e.at >= start)
    if end is not None:
        where.append(e.at < end)
    with readers_of(request)() as session:
        total = session.scalar(select(func.count()).select_from(e).where(*where)) or 0
        rows = session.scalars(
            select(e).where(*where).order_by(e.at.desc(), e.id.desc()).offset(offset).limit(limit)
        ).all()
        events = [AuditEventOut.model_validate(r, from_attributes=True) for r in rows]
    return AuditPage(total=total, offset=offset, limit=limit, events=events)


class TokenIn(BaseModel):
    role: Literal["admin", "auditor", "service"]
    name: str = Field("", max_length=255, pattern=NO_NUL)
    expires_at: dt.datetime | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    active: bool


class NewTokenOut(TokenOut):
    token: str  # shown this once: only its SHA-256 is stored


def _token_out(row: ApiToken) -> TokenOut:
    now = utcnow()
    active = row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
    return TokenOut(
        id=row.id, name=row.name, role=row.role, created_at=row.created_at,
        expires_at=row.expires_at, revoked_at=row.revoked_at, active=active,
    )  # fmt: skip


@router.post("/tokens", response_model=NewTokenOut, status_code=201, responses={**AUTH_ERRORS})
def create_token(
    body: TokenIn, request: Request, caller: Caller = Depends(require("admin"))
) -> NewTokenOut:
    """Create a token with a role (and an optional expiry). The token itself is in this
    answer only; store it now."""
    expires_at = as_utc(body.expires_at, "expires_at")
    with sessions_of(request)() as session, session.begin():
        token = accounts.create_token(session, body.role, body.name, expires_at=expires_at)
        session.flush()
        row = session.scalar(
            select(ApiToken).where(ApiToken.token_hash == accounts.token_digest(token))
        )
        assert row is not None
        out = NewTokenOut(**_token_out(row).model_dump(), token=token)
    audit.record(request, caller, "token.create", resource=f"token:{out.id}",
                 query=f"role={out.role}&name={out.name}")  # fmt: skip
    return out


@router.get("/tokens", response_model=list[TokenOut], responses={**AUTH_ERRORS})
def list_tokens(
    request: Request,
    include_revoked: bool = False,
    caller: Caller = Depends(require("admin")),
) -> list[TokenOut]:
    """The tokens (never the tokens themselves: only their names, roles and dates)."""
    with readers_of(request)() as session:
        query = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        return [_token_out(r) for r in session.scalars(query)]


@router.delete(
    "/tokens/{token_id}", response_model=TokenOut, responses={**AUTH_ERRORS, **NOT_FOUND}
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_INT)],
    request: Request,
    caller: Caller = Depends(require("admin")),
) -> TokenOut:
    """Revoke a token at once (the row is kept, for the audit log's sake). Revoking a revoked
    token changes nothing."""
    with sessions_of(request)() as session, session.begin():
        row = session.get(ApiToken, token_id)
        if row is None:
            raise HTTPException(404, f"no token {token_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        session.flush()
        out = _token_out(row)
    token_cache(request).clear()  # the revoked token stops working now, not in a few seconds
    audit.record(request, caller, "token.revoke", resource=f"token:{token_id}")
    return out
