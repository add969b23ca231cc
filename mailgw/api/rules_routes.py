"""The rules over the API: read the active version, replace it, try a message against it.

``PUT /rules`` validates the text first; a text with problems answers 400 with every problem's
line and column and changes nothing. A good text becomes a new version at once:

* gateway with a rules *file*: the file is replaced atomically (temporary file, fsync, rename)
  and reloaded, so the file, the file watcher and the database always agree;
* gateway on the built-in default rules: the text is activated directly
  (``RulesManager.activate_text``) with source ``api``, and is restored from the database
  when the gateway starts again.

Either way the manager's ``on_loaded`` hook stores the version (``rule_versions``).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import func, select

from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS, MAX_INT, NOT_FOUND, ErrorOut, readers_of
from mailgw.db.models import RuleVersion
from mailgw.rules.evaluate import evaluate
from mailgw.rules.loader import load_rules
from mailgw.rules.manager import RulesManager
from mailgw.rules.problems import Problem, RulesError
from mailgw.spool import fsync_dir

router = APIRouter(tags=["rules"])

MAX_RULES_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 50 << 20


class ProblemOut(BaseModel):
    source: str
    line: int
    col: int
    message: str


class RulesErrorDetail(BaseModel):
    message: str
    problems: list[ProblemOut]
    active_version: str


class RulesErrorOut(BaseModel):
    detail: RulesErrorDetail


class RulesOut(BaseModel):
    version: str  # sha256 of the text
    source: str  # the rules file, "default" or "api"
    file: str | None  # the rules file the gateway watches (None: no file)
    rules: list[str]  # rule names in order
    text: str
    loaded_at: dt.datetime | None  # when this text was first loaded
    activated_at: dt.datetime | None  # when it last became the active rules
    problems: list[ProblemOut]  # why the file on disk is not active (it has errors)


class VersionOut(BaseModel):
    id: int
    sha256: str
    source: str
    loaded_at: dt.datetime  # first loaded
    activated_at: dt.datetime  # last made active (a rollback activates an old text again)
    active: bool


class VersionTextOut(VersionOut):
    text: str


class VersionsPage(BaseModel):
    total: int
    offset: int
    limit: int
    versions: list[VersionOut]


class FactsOut(BaseModel):
    subject: str | None
    doc_symbol: str | None
    doc_type: str | None
    doc_date: dt.date | None
    urgency: str | None
    confidentiality: str | None
    attachments: int


class RulesTestOut(BaseModel):
    rules_version: str
    category: str | None
    tags: list[str]
    matched_rules: list[str]
    facts: FactsOut
    decision: dict[str, Any]  # actions, and the trace of every rule and condition
    explanation: str  # what `mailgw rules test` prints


def manager_of(request: Request) -> RulesManager:
    manager = getattr(request.app.state, "rules", None)
    if manager is None:
        raise HTTPException(503, "the rules are not available in this process")
    return manager


UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "No rules manager in this process"}
}


def _problems(problems: list[Problem]) -> list[ProblemOut]:
    return [ProblemOut(source=p.source, line=p.line, col=p.col, message=p.message)
            for p in problems]  # fmt: skip


def _rules_out(request: Request, manager: RulesManager) -> RulesOut:
    active = manager.active
    with readers_of(request)() as session:
        times = session.execute(
            select(RuleVersion.loaded_at, RuleVersion.activated_at).where(
                RuleVersion.sha256 == active.version
            )
        ).first()
    loaded_at, activated_at = times if times is not None else (None, None)
    return RulesOut(
        version=active.version,
        source=active.source,
        file=str(manager.path) if manager.path else None,
        rules=active.names,
        text=active.text,
        loaded_at=loaded_at,
        activated_at=activated_at,
        problems=_problems(manager.problems),
    )


@router.get("/rules", response_model=RulesOut, responses={**AUTH_ERRORS, **UNAVAILABLE})
def get_rules(request: Request, caller: Caller = Depends(require("auditor"))) -> RulesOut:
    """The active rules: version (sha256), source, rule names and the full text; and, when the
    rules file on disk has errors, what they are (the last good version stays active)."""
    return _rules_out(request, manager_of(request))


def write_atomically(path: FilePath, text: str) -> None:
    """Replace ``path`` with ``text``: temporary file beside it, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _put(manager: RulesManager, body: bytes) -> list[Problem]:
    """Decode, validate and activate. Returns the problems, [] when active."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return [Problem("<request>", 1, 1, f"the rules text is not UTF-8: {e.reason}")]
    if "\x00" in text:
        return [Problem("<request>", 1, 1, "the rules text contains a NUL character")]
    try:
        if manager.path is None:
            manager.activate_text(text, "api")
            return []
        load_rules(text, str(manager.path))  # validate before touching the file
    except RulesError as e:
        return e.problems
    write_atomically(manager.path, text)
    return manager.reload()


RULES_BODY = {
    "requestBody": {
        "required": True,
        "description": "The rules file's text (TOML, UTF-8)",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/toml": {"schema": {"type": "string"}},
        },
    }
}


@router.put(
    "/rules",
    response_model=RulesOut,
    openapi_extra=RULES_BODY,
    responses={
        400: {"model": RulesErrorOut, "description": "The text has problems (line and column)"},
        **AUTH_ERRORS,
        413: {"model": ErrorOut, "description": "The text is larger than 1 MiB"},
        **UNAVAILABLE,
    },
)
async def put_rules(request: Request, caller: Caller = Depends(require("admin"))) -> Any:
    """Replace the rules: validate, store as a new version and activate it for the next
    message. On problems: 400 with each problem's line and column; the active rules stay."""
    manager = manager_of(request)
    body = await request.body()
    if len(body) > MAX_RULES_BYTES:
        raise HTTPException(413, "the rules text is larger than 1 MiB")
    return await run_in_threadpool(_put_audited, request, caller, manager, body)


def _put_audited(request: Request, caller: Caller, manager: RulesManager, body: bytes) -> RulesOut:
    """PUT /rules past reading the body: activate, audit, answer (in one worker thread)."""
    active = manager.version
    problems = _put(manager, body)
    if problems:
        audit.record(request, caller, "rules.update", resource="rules", status=400)
        detail = RulesErrorDetail(
            message=f"{len(problems)} problem(s): the active rules ({active[:12]}) stay",
            problems=_problems(problems),
            active_version=active,
        )
        raise HTTPException(400, detail.model_dump())
    out = _rules_out(request, manager)
    audit.record(request, caller, "rules.update", resource=f"rules:{out.version}")
    return out


@router.get("/rules/versions", response_model=VersionsPage, responses={**AUTH_ERRORS})
def rule_versions(
    request: Request,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    caller: Caller = Depends(require("auditor")),
) -> VersionsPage:
    """Every rules text that was ever active, the one most recently made active first."""
    with readers_of(request)() as session:
        total = session.scalar(select(func.count()).select_from(RuleVersion)) or 0
        rows = session.scalars(
            select(RuleVersion)
            .order_by(RuleVersion.activated_at.desc(), RuleVersion.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        versions = [VersionOut.model_validate(r, from_attributes=True) for r in rows]
    return VersionsPage(total=total, offset=offset, limit=limit, versions=versions)


@router.get(
    "/rules/versions/{version_id}",
    response_model=VersionTextOut,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def rule_version(
    version_id: Annotated[int, Path(ge=1, le=MAX_INT)],
    request: Request,
    caller: Caller = Depends(require("auditor")),
) -> VersionTextOut:
    """One stored version with its text."""
    with readers_of(request)() as session:
        row = session.get(RuleVersion, version_id)
        if row is None:
            raise HTTPException(404, f"no rules version {version_id}")
        return VersionTextOut.model_validate(row, from_attributes=True)


TEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "The message (.eml): the raw bytes, or a multipart form with a `file`",
        "content": {
            "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _explain(manager: RulesManager, raw: bytes) -> RulesTestOut:
    from mailgw.rules.commands import context_for_message

    rules = manager.active
    ctx = context_for_message(raw)
    decision = evaluate(rules, ctx)
    parsed, facts = ctx.parsed, ctx.parsed.facts
    return RulesTestOut(
        rules_version=rules.version,
        category=decision.category,
        tags=list(decision.tags),
        matched_rules=list(decision.matched_rules),
        facts=FactsOut(
            subject=parsed.subject,
            doc_symbol=facts.symbol,
            doc_type=facts.doc_type,
            doc_date=facts.doc_date,
            urgency=facts.urgency,
            confidentiality=facts.confidentiality,
            attachments=sum(1 for a in parsed.attachments if getattr(a, "is_file", not a.inline)),
        ),
        decision=decision.to_dict(),
        explanation=decision.explain(),
    )


@router.post(
    "/rules/test",
    response_model=RulesTestOut,
    openapi_extra=TEST_BODY,
    responses={
        400: {"model": ErrorOut, "description": "No message in the request"},
        **AUTH_ERRORS,
        413: {"model": ErrorOut, "description": "The message is larger than 50 MiB"},
        **UNAVAILABLE,
    },
)
async def test_rules(request: Request, caller: Caller = Depends(require("admin"))) -> Any:
    """Run the active rules on an uploaded message (nothing is stored or sent) and explain the
    decision rule by rule, as `mailgw rules test` does. The envelope is taken from the
    message's From/To/Cc headers."""
    manager = manager_of(request)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_MESSAGE_BYTES + 65536:
        raise HTTPException(413, "the message is larger than 50 MiB")
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception as exc:
            raise HTTPException(400, f"cannot read the form: {exc}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "the form needs a `file` field with the message")
        raw = await upload.read()
    else:
        raw = await request.body()
    if not raw:
        raise HTTPException(400, "no message in the request")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise HTTPException(413, "the message is larger than 50 MiB")
    out = await run_in_threadpool(_explain, manager, raw)
    await run_in_threadpool(audit.record, request, caller, "rules.test", resource="rules")
    return out
