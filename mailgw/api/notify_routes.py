"""Notifications on request: a service renders one of the gateway's templates and sends it.

``POST /notifications`` renders the template with the caller's variables (and ``gateway``),
composes the message and spools it like the pipeline's notifications (null sender, queued for
the relay queue, or held without a relay host). The answer, 202 with the queue id, is sent only
once the message is durable, as SMTP's 250 is: accepted mail is never lost. Every call is
audited (``notification.send``), refused ones too; nothing is spooled for a refused one.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS, ErrorOut
from mailgw.db.models import HELD
from mailgw.notify.outgoing import Notifier
from mailgw.notify.render import NotificationError
from mailgw.spool import Incoming, SpoolError

router = APIRouter(tags=["notifications"])

MAX_RECIPIENTS = 100  # as [smtp] max_recipients' default
MAX_REQUEST_BYTES = 64 * 1024
TEMPLATE_NAME = r"^[A-Za-z0-9_-]{1,64}$"
# An unquoted ASCII dot-atom local part and a domain of letter-digit-hyphen labels, as the SMTP
# listener's fast path takes them: what every downstream server accepts in RCPT TO.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


def _address(value: str) -> str:
    local = value.rpartition("@")[0]
    if not _ADDRESS.fullmatch(value) or len(local) > 64:
        raise ValueError(f"not an e-mail address: {value!r}")
    return value


Address = Annotated[
    str, Field(max_length=254, json_schema_extra={"format": "email"}), AfterValidator(_address)
]


class NotificationIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "template": "alert",
                    "to": ["truc-ban@example.gov.vn"],
                    "variables": {
                        "message": {
                            "subject": "Công văn hỏa tốc số 12/UBND-VP",
                            "from": "Văn thư <vanthu@example.gov.vn>",
                            "mail_from": "vanthu@example.gov.vn",
                            "category": "announcement",
                            "tags": ["hoa-toc"],
                            "hold_reason": "",
                            "queue_id": "19A2B3C4D5E0F1A2B",
                        }
                    },
                }
            ]
        },
    )

    template: Annotated[
        str, Field(pattern=TEMPLATE_NAME, description="see GET /notifications/templates")
    ]
    to: Annotated[
        list[Address],
        Field(min_length=1, max_length=MAX_RECIPIENTS, description="the recipients (To:)"),
    ]
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="what the template sees besides `gateway` (agency, hostname), which the "
        "gateway fills in",
    )

    @field_validator("variables")
    @classmethod
    def _no_gateway(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "gateway" in value:
            raise ValueError("`gateway` is filled in by the gateway, not by the caller")
        return value

    def recipients(self) -> list[str]:
        """``to`` without repeats (compared without case), in order."""
        unique: dict[str, str] = {}
        for address in self.to:
            unique.setdefault(address.lower(), address)
        return list(unique.values())


class NotificationOut(BaseModel):
    queue_id: str  # as in the SMTP reply "250 … queued as ID": GET /messages/{queue_id}
    state: Literal["queued", "held"]  # held: no relay host is configured
    hold_reason: str | None
    template: str
    to: list[str]


class TemplateOut(BaseModel):
    name: str
    variables: list[str] | None  # the top-level names it uses (None: it does not parse)
    problem: str | None  # why it does not parse


class TemplatesOut(BaseModel):
    templates: list[TemplateOut]


class ValidationErrorOut(BaseModel):
    detail: list[dict[str, Any]]  # pydantic's errors: loc, msg, type


UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "No spool in this process, or it failed: retry"}
}


def notifier_of(request: Request) -> Notifier:
    notifier = getattr(request.app.state, "notifier", None)
    if notifier is None:
        raise HTTPException(503, "notifications cannot be sent from this process (no spool)")
    return notifier


def _list_templates(notifier: Notifier) -> TemplatesOut:
    out = []
    for name in notifier.templates.names():
        try:
            out.append(TemplateOut(name=name, variables=notifier.templates.variables(name),
                                   problem=None))  # fmt: skip
        except NotificationError as exc:
            out.append(TemplateOut(name=name, variables=None, problem=str(exc)))
    return TemplatesOut(templates=out)


@router.get(
    "/notifications/templates",
    response_model=TemplatesOut,
    responses={**AUTH_ERRORS, **UNAVAILABLE},
)
async def list_templates(
    request: Request, caller: Caller = Depends(require("service", "auditor"))
) -> TemplatesOut:
    """The templates POST /notifications can send, with the top-level variables each uses."""
    return await run_in_threadpool(_list_templates, notifier_of(request))


SEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": NotificationIn.model_json_schema()}},
    }
}


async def _read_body(request: Request) -> bytes:
    """The body, or 413 as soon as it is larger than MAX_REQUEST_BYTES."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
        raise HTTPException(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise HTTPException(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/notifications",
    status_code=202,
    response_model=NotificationOut,
    openapi_extra=SEND_BODY,
    responses={
        400: {"model": ErrorOut, "description": "Unknown template, or it does not render"},
        **AUTH_ERRORS,
        413: {"model": ErrorOut, "description": "The request is larger than 64 KiB"},
        422: {"model": ValidationErrorOut, "description": "Not a valid request (each error)"},
        **UNAVAILABLE,
    },
)
async def send_notification(
    request: Request, caller: Caller = Depends(require("service"))
) -> NotificationOut:
    """Render a notification template with the given variables and send it to the recipients:
    202 once the message is durable in the spool (then relayed, with retries; held when no
    relay host is configured)."""
    body: NotificationIn | None = None
    try:
        notifier = notifier_of(request)
        body = _parse(await _read_body(request))
        msg = await run_in_threadpool(_build, notifier, body)
        await _spool(notifier, msg)
    except (HTTPException, RequestValidationError) as exc:
        status = exc.status_code if isinstance(exc, HTTPException) else 422
        await run_in_threadpool(_audit, request, caller, None, body, status)
        raise
    await run_in_threadpool(_audit, request, caller, msg.queue_id, body, 202)
    return NotificationOut(
        queue_id=msg.queue_id,
        state="held" if msg.initial_state == HELD else "queued",
        hold_reason=msg.hold_reason,
        template=body.template,
        to=msg.rcpt_to,
    )


def _parse(raw: bytes) -> NotificationIn:
    """The body as a NotificationIn, or FastAPI's 422 with pydantic's errors (as FastAPI
    words them: located under "body", without the exception objects of ``ctx``)."""
    try:
        return NotificationIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**{k: v for k, v in e.items() if k != "ctx"}, "loc": ("body", *e["loc"])}
                  for e in exc.errors(include_url=False)]  # fmt: skip
        raise RequestValidationError(errors) from None


def _build(notifier: Notifier, body: NotificationIn) -> Incoming:
    """Render and compose (in a worker thread); 400 when the template is unknown or does not
    render, e.g. a variable it uses is missing (StrictUndefined names it)."""
    try:
        return notifier.build(body.template, body.recipients(), body.variables)
    except NotificationError as exc:
        raise HTTPException(400, str(exc)) from None


async def _spool(notifier: Notifier, msg: Incoming) -> None:
    """Durable, or 503 (the caller retries, as an SMTP client does after a 451). Awaited on
    the gateway's own loop, where uvicorn serves the API: the spool's committer lives there."""
    try:
        await notifier.spool.accept(msg)
    except SpoolError as exc:
        raise HTTPException(503, f"the notification could not be spooled, retry: {exc}") from None


def _audit(
    request: Request,
    caller: Caller,
    queue_id: str | None,
    body: NotificationIn | None,
    status: int,
) -> None:
    """One audit row per call; what it keeps of the request: template, recipients and the
    variables' names (not their values, which may be personal data)."""
    query = None
    if body is not None:
        query = json.dumps(
            {"template": body.template, "to": body.to, "variables": sorted(body.variables)},
            ensure_ascii=False,
        )
    resource = f"message:{queue_id}" if queue_id else None
    audit.record(request, caller, "notification.send", resource=resource, query=query,
                 status=status)  # fmt: skip
