"""``GET /stats``: messages and registered documents by category, receiving unit and month, and
the share of documents exchanged electronically (the figure Directive 15/CT-TTg asks agencies
to report). The definitions are in docs/api.md and in the answer itself."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS, readers_of
from mailgw.db.models import Message
from mailgw.registry.models import RegisterEntry
from mailgw.registry.register import unit_of

router = APIRouter(tags=["statistics"])

UNCLASSIFIED = "(unclassified)"
NO_UNIT = "(no unit)"
SHARE_DEFINITION = (
    "documents received electronically through the gateway / all documents in the registers, "
    "counting each register number once (corrections and repeated arrivals are not new "
    "documents). The registers hold only documents that arrived through the gateway: paper "
    "documents are not registered here, so the share is 1.0 whenever there are documents "
    "(null when there are none); an agency that keeps a paper register adds its count as "
    "documents_paper before reporting."
)


class MessageStats(BaseModel):
    total: int  # received over SMTP or IMAP (the gateway's own DSNs are not counted)
    by_category: dict[str, int]
    by_unit: dict[str, int]  # receiving unit of the recipients (a message to two counts for each)
    by_month: dict[str, int]  # "YYYY-MM" in the register time zone
    by_state: dict[str, int]


class DocumentStats(BaseModel):
    total: int  # register numbers given (revision 0 entries)
    by_category: dict[str, int]  # the category of the message that brought the document
    by_unit: dict[str, int]  # receiving unit (an entry for two units counts for each)
    by_month: dict[str, int]
    by_register: dict[str, int]
    signed_valid: int  # documents whose message carried a valid OpenPGP signature


class ElectronicShare(BaseModel):
    documents_electronic: int
    documents_paper: int
    documents_total: int
    share: float | None
    definition: str


class StatsOut(BaseModel):
    year: int | None
    timezone: str
    messages: MessageStats
    documents: DocumentStats
    electronic_exchange: ElectronicShare


def _month(value: dt.datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m")


@router.get("/stats", response_model=StatsOut, responses={**AUTH_ERRORS})
def stats(
    request: Request,
    year: Annotated[
        int | None, Query(ge=1970, le=9998, description="one calendar year (default: all)")
    ] = None,
    caller: Caller = Depends(require("auditor")),
) -> StatsOut:
    """Counts of messages and registered documents by category, receiving unit and month, and
    the share of documents exchanged electronically (definition in the answer)."""
    tz_name = request.app.state.timezone  # create_app sets it (the registry's)
    zone = ZoneInfo(tz_name)
    m_where = [Message.origin != "local"]
    d_where = [RegisterEntry.revision == 0]
    if year is not None:
        start = dt.datetime(year, 1, 1, tzinfo=zone).astimezone(dt.UTC)
        end = dt.datetime(year + 1, 1, 1, tzinfo=zone).astimezone(dt.UTC)
        m_where += [Message.received_at >= start, Message.received_at < end]
        d_where += [RegisterEntry.arrival >= start, RegisterEntry.arrival < end]
    with readers_of(request)() as session:
        m_cat = session.execute(
            select(Message.category, func.count()).where(*m_where).group_by(Message.category)
        ).all()
        m_state = session.execute(
            select(Message.state, func.count()).where(*m_where).group_by(Message.state)
        ).all()
        m_month: Counter[str] = Counter()
        m_unit: Counter[str] = Counter()
        units = request.app.state.units  # [registry.units], as the register applies it
        for received_at, rcpt_to in session.execute(
            select(Message.received_at, Message.rcpt_to)
            .where(*m_where)
            .execution_options(yield_per=5000)
        ):
            m_month[_month(received_at, zone)] += 1
            m_unit.update(_units(unit_of(rcpt_to or [], units)) or [NO_UNIT])
        docs = session.execute(
            select(RegisterEntry.register, RegisterEntry.arrival, RegisterEntry.unit,
                   RegisterEntry.signature, Message.category)
            .join(Message, Message.id == RegisterEntry.message_row_id, isouter=True)
            .where(*d_where)
            .execution_options(yield_per=5000)
        ).all()  # fmt: skip
    by_category: Counter[str] = Counter()
    by_unit: Counter[str] = Counter()
    by_month: Counter[str] = Counter()
    by_register: Counter[str] = Counter()
    signed = 0
    for register, arrival, unit, signature, category in docs:
        by_register[register] += 1
        by_month[_month(arrival, zone)] += 1
        by_category[category or UNCLASSIFIED] += 1
        by_unit.update(_units(unit) or [NO_UNIT])
        if isinstance(signature, dict) and signature.get("valid") is True:
            signed += 1
    total_docs = len(docs)
    return StatsOut(
        year=year,
        timezone=tz_name,
        messages=MessageStats(
            total=sum(n for _, n in m_cat),
            by_category={(c or UNCLASSIFIED): n for c, n in sorted(m_cat, key=_key)},
            by_unit=dict(sorted(m_unit.items())),
            by_month=dict(sorted(m_month.items())),
            by_state=dict(sorted(m_state)),
        ),
        documents=DocumentStats(
            total=total_docs,
            by_category=dict(sorted(by_category.items())),
            by_unit=dict(sorted(by_unit.items())),
            by_month=dict(sorted(by_month.items())),
            by_register=dict(sorted(by_register.items())),
            signed_valid=signed,
        ),
        electronic_exchange=ElectronicShare(
            documents_electronic=total_docs,
            documents_paper=0,
            documents_total=total_docs,
            share=1.0 if total_docs else None,
            definition=SHARE_DEFINITION,
        ),
    )


def _units(unit: str | None) -> list[str]:
    """The units of a register entry's "unit" column ("A; B"), each once."""
    return list(dict.fromkeys(x.strip() for x in (unit or "").split(";") if x.strip()))


def _key(row: tuple[str | None, int]) -> str:
    return row[0] or ""
