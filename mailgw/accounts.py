"""Staff accounts for SMTP AUTH and API tokens: hashing and the database operations on them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailgw.db.models import ApiToken, User, utcnow

ROLES = ("admin", "auditor", "service")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AccountError(Exception):
    pass


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    encoded = f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    return f"scrypt${params}${encoded}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def add_user(session: Session, username: str, password: str) -> User:
    username = username.strip()
    if not username or any(c.isspace() for c in username):
        raise AccountError("a user name must be non-empty and have no spaces")
    if not password:
        raise AccountError("the password must not be empty")
    if session.scalar(select(User).where(User.username == username)):
        raise AccountError(f"user {username!r} exists already")
    user = User(username=username, password_hash=hash_password(password))
    session.add(user)
    return user


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AccountError(f"no user {username!r}")
    return user


def set_password(session: Session, username: str, password: str) -> None:
    if not password:
        raise AccountError("the password must not be empty")
    user = _user(session, username)
    user.password_hash = hash_password(password)
    user.updated_at = utcnow()


def set_disabled(session: Session, username: str, disabled: bool) -> None:
    user = _user(session, username)
    user.disabled = disabled
    user.updated_at = utcnow()


def check_credentials(session: Session, username: str, password: str) -> bool:
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user.disabled:
        # Spend the same time as a real check so user names cannot be probed by timing.
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, user.password_hash)


_DUMMY_HASH = hash_password(secrets.token_hex(8))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, role: str, name: str = "", expires_at: dt.datetime | None = None
) -> str:
    """Create a token and return it; only its digest is stored, so it is shown once."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    token = "mgw_" + secrets.token_urlsafe(32)
    session.add(
        ApiToken(name=name, role=role, token_hash=token_digest(token), expires_at=expires_at)
    )
    return token


def find_token(session: Session, token: str, now: dt.datetime | None = None) -> ApiToken | None:
    """The live (not revoked, not expired) token row for ``token``, or None."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    now = now or utcnow()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return row
