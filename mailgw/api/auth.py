"""Bearer-token authentication and role checks for the API.

A token found valid is remembered for ``TOKEN_CACHE_SECONDS`` (by its SHA-256, never in clear),
so a burst of requests costs one database lookup. Revoking through the API forgets every
remembered token at once; a revocation made with the CLI (another process) takes effect within
that time. Expiry is checked on every request.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from mailgw.accounts import find_token, token_digest
from mailgw.api.common import quick_readers_of
from mailgw.db.models import utcnow

_bearer = HTTPBearer(auto_error=False)
TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Caller:
    token_id: int
    name: str
    role: str


@dataclass(frozen=True)
class _Known:
    caller: Caller
    expires_at: dt.datetime | None
    until: float  # time.monotonic() after which the database is asked again


class TokenCache:
    """Recently verified tokens, by digest."""

    def __init__(self, seconds: float = TOKEN_CACHE_SECONDS, size: int = TOKEN_CACHE_SIZE):
        self.seconds = seconds
        self.size = size
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()
        self.generation = 0  # how many times it was cleared

    def get(self, digest: str) -> Caller | None:
        known = self._known.get(digest)
        if known is None or known.until < time.monotonic():
            return None
        if known.expires_at is not None and known.expires_at <= utcnow():
            return None
        return known.caller

    def put(
        self, digest: str, caller: Caller, expires_at: dt.datetime | None, generation: int
    ) -> None:
        """Remember a token read from the database when the cache was at ``generation``: not
        if it was cleared since (a revocation committed while the token was being read)."""
        with self._lock:
            if generation != self.generation:
                return
            if len(self._known) >= self.size:
                self._known.clear()
            self._known[digest] = _Known(caller, expires_at, time.monotonic() + self.seconds)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self.generation += 1


def token_cache(request: Request) -> TokenCache:
    return request.app.state.token_cache


def _look_up(request: Request, token: str) -> Caller:
    cache = token_cache(request)
    generation = cache.generation  # before the read: a revocation after it clears the cache
    with quick_readers_of(request)() as session:
        row = find_token(session, token)
        if row is None:
            raise HTTPException(
                401, "invalid, expired or revoked token", {"WWW-Authenticate": "Bearer"}
            )
        caller = Caller(token_id=row.id, name=row.name, role=row.role)
        cache.put(token_digest(token), caller, row.expires_at, generation)
        return caller


async def current_caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    known = token_cache(request).get(token_digest(credentials.credentials))
    if known is not None:
        return known
    return await run_in_threadpool(_look_up, request, credentials.credentials)


def require(*roles: str) -> Callable[..., Caller]:
    """A dependency that admits callers with one of ``roles`` (admin is always admitted)."""

    async def check(caller: Caller = Depends(current_caller)) -> Caller:
        if caller.role != "admin" and caller.role not in roles:
            raise HTTPException(403, f"this needs the role {' or '.join(roles)}")
        return caller

    return check
