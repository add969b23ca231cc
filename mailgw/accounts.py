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


class NoSuchUser(AccountError):
    pass


class UserExists(AccountError):
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
    """A new, enabled account. The password is hashed before the database is touched: on
    SQLite the hash (tens of milliseconds) must not hold the write lock mail intake waits for."""
    username = username.strip()
    if not username or any(c.isspace() for c in username):
        raise AccountError("a user name must be non-empty and have no spaces")
    if not password:
        raise AccountError("the password must not be empty")
    password_hash = hash_password(password)
    if find_user(session, username) is not None:
        raise UserExists(f"user {username!r} exists already")
    user = User(username=username, password_hash=password_hash)
    session.add(user)
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def _user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NoSuchUser(f"no user {username!r}")
    return user


def set_password(session: Session, username: str, password: str) -> None:
    """A new password (hashed first, as in add_user)."""
    if not password:
        raise AccountError("the password must not be empty")
    password_hash = hash_password(password)
    user = _user(session, username)
    user.password_hash = password_hash
    user.updated_at = utcnow()


def set_disabled(session: Session, username: str, disabled: bool) -> None:
    user = _user(session, username)
    user.disabled = disabled
    user.updated_at = utcnow()


def check_credentials(session: Session, username: str, password: str) -> bool:
    user = find_user(session, username)
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
