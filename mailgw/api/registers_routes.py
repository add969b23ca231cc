"""The registers: which there are, their entries in order (paginated), and the chain check."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import (
    AUTH_ERRORS,
    NOT_FOUND,
    REGISTER_FIELD,
    REGISTER_NAME,
    blob_store,
    readers_of,
)
from mailgw.api.documents_routes import EntryOut
from mailgw.registry.audit import register_names, verify_register
from mailgw.registry.models import RegisterChain, RegisterCounter, RegisterEntry

router = APIRouter(tags=["registers"])

RegisterName = Annotated[str, Path(pattern=REGISTER_NAME, description="register name")]


class YearOut(BaseModel):
    year: int
    last_number: int  # the last incoming number given this year
    entries: int  # rows, corrections included


class RegisterOut(BaseModel):
    name: str
    entries: int
    chain_length: int
    years: list[YearOut]


class EntriesPage(BaseModel):
    register: str = REGISTER_FIELD
    year: int
    total: int
    offset: int
    limit: int
    entries: list[EntryOut]


class ProblemOut(BaseModel):
    kind: str  # changed, inserted, removed, numbering, blob
    seq: int | None
    message: str


class VerifyOut(BaseModel):
    register: str = REGISTER_FIELD
    ok: bool
    entries: int
    blobs_checked: bool
    purged_raw_blobs: int  # raw-message blobs removed by retention on purpose: no problem
    first_problem: ProblemOut | None
    problems: list[ProblemOut]


@router.get("/registers", response_model=list[RegisterOut], responses={**AUTH_ERRORS})
def list_registers(
    request: Request, caller: Caller = Depends(require("auditor"))
) -> list[RegisterOut]:
    """Every register that has entries, with its years and last numbers."""
    with readers_of(request)() as session:
        names = register_names(session)
        rows = session.execute(
            select(RegisterEntry.register, RegisterEntry.year, func.count())
            .group_by(RegisterEntry.register, RegisterEntry.year)
        ).all()  # fmt: skip
        counters = {(r, y): n for r, y, n in session.execute(
            select(RegisterCounter.register, RegisterCounter.year, RegisterCounter.last_number)
        )}  # fmt: skip
        heads = dict(session.execute(select(RegisterChain.register, RegisterChain.last_seq)).all())
    out = []
    for name in names:
        years = sorted({y for r, y, _ in rows if r == name} | {y for r, y in counters if r == name})
        counts = {y: n for r, y, n in rows if r == name}
        out.append(
            RegisterOut(
                name=name,
                entries=sum(counts.values()),
                chain_length=heads.get(name, 0),
                years=[
                    YearOut(
                        year=y, last_number=counters.get((name, y), 0), entries=counts.get(y, 0)
                    )
                    for y in years
                ],
            )
        )
    return out


# Declared before /registers/{name}/{year}: "verify" is not a year.
@router.get(
    "/registers/{name}/verify", response_model=VerifyOut, responses={**AUTH_ERRORS, **NOT_FOUND}
)
def verify(
    name: RegisterName,
    request: Request,
    blobs: Annotated[bool, Query(description="also re-hash the archived files")] = True,
    caller: Caller = Depends(require("auditor")),
) -> VerifyOut:
    """Walk the register's hash chain: every changed, inserted or removed entry, gaps in the
    numbering and (``blobs=true``) archived files that are missing or altered. A raw-message
    blob that retention removed (and recorded) is counted in ``purged_raw_blobs`` instead."""
    with readers_of(request)() as session:
        known = name in register_names(session)
        if known:
            report = verify_register(session, name, blob_store(request) if blobs else None)
    # a register that does not exist is audited too (status 404), as every read is
    audit.record_outcome(request, caller, "register.verify", _unknown(name, known),
                         resource=f"register:{name}",
                         query=f"blobs={str(blobs).lower()}")  # fmt: skip
    problems = [ProblemOut(kind=p.kind, seq=p.seq, message=p.message) for p in report.problems]
    return VerifyOut(
        register=name,
        ok=report.ok,
        entries=report.entries,
        blobs_checked=blobs,
        purged_raw_blobs=len(report.purged_raw),
        first_problem=problems[0] if problems else None,
        problems=problems,
    )


@router.get(
    "/registers/{name}/{year}", response_model=EntriesPage, responses={**AUTH_ERRORS, **NOT_FOUND}
)
def register_entries(
    name: RegisterName,
    year: Annotated[int, Path(ge=1, le=9999)],
    request: Request,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    caller: Caller = Depends(require("auditor")),
) -> EntriesPage:
    """The register's entries of one year in number order (each correction right after the
    entry it corrects), ``limit`` at a time from ``offset``. Audited."""
    where = (RegisterEntry.register == name, RegisterEntry.year == year)
    with readers_of(request)() as session:
        total = session.scalar(select(func.count()).select_from(RegisterEntry).where(*where)) or 0
        known = total > 0 or name in register_names(session)
        rows = session.scalars(
            select(RegisterEntry)
            .where(*where)
            .order_by(RegisterEntry.number, RegisterEntry.revision, RegisterEntry.id)
            .offset(offset)
            .limit(limit)
        ).all()
        entries = [EntryOut.model_validate(e, from_attributes=True) for e in rows]
    audit.record_outcome(request, caller, "register.read", _unknown(name, known),
                         resource=f"register:{name}/{year}",
                         query=f"offset={offset}&limit={limit}")  # fmt: skip
    return EntriesPage(
        register=name, year=year, total=total, offset=offset, limit=limit, entries=entries
    )


def _unknown(name: str, known: bool) -> HTTPException | None:
    return None if known else HTTPException(404, f"no register {name}")
