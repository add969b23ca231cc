"""What the route modules share: the app's state, documented error answers, limits on
parameters (so a bad id or filter is a 4xx, never a database error), and file answers."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from mailgw.registry.blobs import BlobStore, FileBlobStore

MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters
REGISTER_NAME = r"^[A-Za-z0-9._-]{1,64}$"  # as config.py allows

# Answers have a field "register" (the register's name), which is also the name of a method
# pydantic's BaseModel inherits from ABCMeta: say it is a required field, and that it is meant.
warnings.filterwarnings("ignore", r'Field name "register" in ".*" shadows', UserWarning)
REGISTER_FIELD: Any = Field(..., description="register name")


class ErrorOut(BaseModel):
    detail: Any


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No token, or an invalid, expired or revoked one"},
    403: {"model": ErrorOut, "description": "The token's role may not do this"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such object"}
}


def sessions_of(request: Request) -> sessionmaker[Session]:
    """Sessions for writing (and reading what is then written)."""
    return request.app.state.sessions


def readers_of(request: Request) -> sessionmaker[Session]:
    """Sessions that only read: on SQLite they never wait for the gateway's writers."""
    return request.app.state.read_sessions


def quick_readers_of(request: Request) -> sessionmaker[Session]:
    """readers_of() for a read of a few statements that streams nothing (a search, a token, a
    document): on PostgreSQL without the round trips of a transaction (mailgw.db.engine)."""
    return request.app.state.quick_read_sessions


def data_dir_of(request: Request) -> Path:
    return request.app.state.data_dir


def blob_store(request: Request) -> BlobStore:
    store = getattr(request.app.state, "blob_store", None)
    if store is None:
        store = request.app.state.blob_store = FileBlobStore.in_data_dir(data_dir_of(request))
    return store


def as_utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """Naive datetimes are taken as UTC; values that cannot be UTC are a 422."""
    if value is None:
        return None
    try:
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise HTTPException(422, f"{name}: not a representable UTC time") from None


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}\Z")


def media_type(value: str | None) -> str:
    """``value`` if it is a plain type/subtype, else application/octet-stream: a part's
    Content-Type is archived as written (folded lines, 8-bit or control characters included),
    which may not be a legal HTTP header value."""
    return value if value and _MEDIA_TYPE.match(value) else "application/octet-stream"


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``attachment; filename="ascii"; filename*=UTF-8''percent-encoded`` (RFC 6266, RFC 5987):
    browsers use filename*, so Vietnamese names survive; old clients get an ASCII fallback."""
    clean = "".join(c for c in filename if c >= " " and c != "\x7f") or "file"
    fallback = clean.encode("ascii", "replace").decode().replace("?", "_")
    fallback = fallback.replace("\\", "_").replace('"', "_")
    encoded = quote(clean, safe="!#$&+-.^_`|~")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
