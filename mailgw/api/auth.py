"""Bearer-token authentication and role checks for the API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailgw.accounts import find_token

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    token_id: int
    name: str
    role: str


def current_caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    with request.app.state.sessions() as session:
        row = find_token(session, credentials.credentials)
        if row is None:
            raise HTTPException(
                401, "invalid, expired or revoked token", {"WWW-Authenticate": "Bearer"}
            )
        return Caller(token_id=row.id, name=row.name, role=row.role)


def require(*roles: str) -> Callable[..., Caller]:
    """A dependency that admits callers with one of ``roles`` (admin is always admitted)."""

    def check(caller: Caller = Depends(current_caller)) -> Caller:
        if caller.role != "admin" and caller.role not in roles:
            raise HTTPException(403, f"this needs the role {' or '.join(roles)}")
        return caller

    return check
