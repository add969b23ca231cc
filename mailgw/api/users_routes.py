"""Staff accounts for SMTP submission (AUTH PLAIN/LOGIN) — what ``mailgw user`` does, over
HTTP, for administrators. Passwords are stored as scrypt hashes (mailgw/accounts.py) and are
never shown or logged; creating and changing accounts is audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from mailgw import accounts
from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS, NO_NUL, NOT_FOUND, ErrorOut, readers_of, sessions_of
from mailgw.db.models import User

router = APIRouter(tags=["users"])

USERNAME = r"^[^\s\x00]{1,255}$"  # as SMTP AUTH sends it: no spaces (accounts.add_user)
Username = Annotated[str, Path(pattern=USERNAME, description="the SMTP AUTH user name")]
Password = Annotated[str, Field(min_length=1, max_length=1024, pattern=NO_NUL)]
INVALID: dict[int | str, dict] = {
    400: {"model": ErrorOut, "description": "The account cannot be made so"},
}


class UserOut(BaseModel):
    username: str
    disabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class UserIn(BaseModel):
    username: str = Field(pattern=USERNAME)
    password: Password


class UserChange(BaseModel):
    password: Password | None = None  # a new password
    disabled: bool | None = None  # true: AUTH refuses the account until it is enabled again


def _out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


@router.get("/users", response_model=list[UserOut], responses={**AUTH_ERRORS})
def list_users(request: Request, caller: Caller = Depends(require("admin"))) -> list[UserOut]:
    """The accounts, by name (never their passwords)."""
    with readers_of(request)() as session:
        return [_out(u) for u in session.scalars(select(User).order_by(User.username))]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=201,
    responses={**AUTH_ERRORS, **INVALID, 409: {"model": ErrorOut, "description": "It exists"}},
)
def create_user(
    body: UserIn, request: Request, caller: Caller = Depends(require("admin"))
) -> UserOut:
    """Create an account (enabled). Audited."""
    problem = None
    with sessions_of(request)() as session, session.begin():
        try:
            user = accounts.add_user(session, body.username, body.password)
            session.flush()
            out = _out(user)
        except accounts.UserExists as exc:
            problem = HTTPException(409, str(exc))
        except accounts.AccountError as exc:
            problem = HTTPException(400, str(exc))
    audit.record_outcome(request, caller, "user.create", problem, ok=201,
                         resource=f"user:{body.username}")  # fmt: skip
    return out


@router.patch(
    "/users/{username}", response_model=UserOut, responses={**AUTH_ERRORS, **NOT_FOUND, **INVALID}
)
def change_user(
    username: Username,
    body: UserChange,
    request: Request,
    caller: Caller = Depends(require("admin")),
) -> UserOut:
    """Set a new password, disable or enable an account. Audited (which of these changed,
    never the password)."""
    problem = None
    with sessions_of(request)() as session, session.begin():
        try:
            if body.password is not None:
                accounts.set_password(session, username, body.password)
            if body.disabled is not None:
                accounts.set_disabled(session, username, body.disabled)
            user = accounts.find_user(session, username)
            if user is None:
                raise accounts.NoSuchUser(f"no user {username!r}")
            session.flush()
            out = _out(user)
        except accounts.NoSuchUser as exc:
            problem = HTTPException(404, str(exc))
        except accounts.AccountError as exc:
            problem = HTTPException(400, str(exc))
    if problem is None:
        request.app.state.forget_logins()  # an old password or a disabled account: refused now
    changes = [] if body.password is None else ["password=changed"]
    changes += [] if body.disabled is None else [f"disabled={str(body.disabled).lower()}"]
    query = "&".join(changes)
    audit.record_outcome(request, caller, "user.update", problem, resource=f"user:{username}",
                         query=query)  # fmt: skip
    return out
