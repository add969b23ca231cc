"""Running a search: parse, build SQL, fetch one page, add details and snippets."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailgw.db.models import Message
from mailgw.registry.models import RegisterEntry
from mailgw.search import snippets
from mailgw.search.models import DOCUMENT, MESSAGE, SearchEntry
from mailgw.search.query import DOCUMENT_ONLY, Query, QueryError, parse
from mailgw.search.sql import Plan, execute

SORTS = ("relevance", "date")
ORDERS = ("desc", "asc")
MAX_LIMIT = 100
MAX_ID = 2**63 - 1  # search_index.id is a BIGINT


class SearchError(ValueError):
    """A bad request: ``param`` names the parameter, ``position`` the place in ``q``."""

    def __init__(self, message: str, param: str = "q", position: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.position = position

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": "bad_query" if self.param == "q" else "bad_request",
                               "param": self.param, "message": self.message}  # fmt: skip
        if self.position is not None:
            out["position"] = self.position
        return out


@dataclass(frozen=True)
class Request:
    kind: str
    q: str
    sort: str | None = None  # None: relevance when there are words, else date
    order: str = "desc"
    limit: int = 20
    cursor: str | None = None


def _fingerprint(kind: str, q: str, sort: str, order: str) -> str:
    return hashlib.sha256(f"{kind}\0{q}\0{sort}\0{order}".encode()).hexdigest()[:16]


def encode_cursor(fp: str, key: Any, last_id: int) -> str:
    if isinstance(key, dt.datetime):
        key = key.isoformat()
    raw = json.dumps({"f": fp, "k": key, "i": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fp: str, sort: str) -> tuple[Any, int]:
    bad = SearchError("the cursor is not valid for this search", "cursor")
    if len(cursor) > 400:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["f"] != fp:
            raise SearchError("the cursor belongs to another query, sort or order", "cursor")
        last_id = data["i"]
        if not isinstance(last_id, int) or isinstance(last_id, bool):
            raise bad
        if not 1 <= last_id <= MAX_ID:  # (the cursor is not signed: anything can be sent)
            raise bad
        if sort == "date":
            key: Any = dt.datetime.fromisoformat(data["k"])
            if key.tzinfo is None:
                raise bad
            key = key.astimezone(dt.UTC)  # OverflowError: no UTC time
        else:
            key = data["k"]
            if not isinstance(key, int | float) or isinstance(key, bool):
                raise bad
            key = float(key)  # OverflowError: beyond a float
            if not math.isfinite(key):
                raise bad
        return key, last_id
    except SearchError:
        raise
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise bad from None


def plan_for(req: Request) -> Plan:
    try:
        query = parse(req.q)
    except QueryError as exc:
        raise SearchError(exc.message, "q", exc.position) from None
    if req.kind == MESSAGE:
        for term in query.terms:
            if term.field in DOCUMENT_ONLY:
                raise SearchError(
                    f"'{term.field}:' applies to documents (GET /documents) only",
                    "q", term.position,
                )  # fmt: skip
    if req.sort is not None and req.sort not in SORTS:
        raise SearchError(f"sort is one of {', '.join(SORTS)}", "sort")
    if req.order not in ORDERS:
        raise SearchError(f"order is one of {', '.join(ORDERS)}", "order")
    if not 1 <= req.limit <= MAX_LIMIT:
        raise SearchError(f"limit is between 1 and {MAX_LIMIT}", "limit")
    has_words = any(t.field is None and not t.negated for t in query.terms)
    sort = req.sort or "date"  # newest first unless asked (ranking many matches costs)
    if sort == "relevance" and not has_words:
        sort = "date"  # nothing to rank by: newest first, as documented
    fp = _fingerprint(req.kind, req.q, sort, req.order)
    after = decode_cursor(req.cursor, fp, sort) if req.cursor else None
    return Plan(req.kind, query, sort, req.order, req.limit, after)


def search(session: Session, req: Request) -> dict[str, Any]:
    """One page of results: ``session`` should be a reader (mailgw.db.engine)."""
    plan = plan_for(req)
    rows = execute(session, plan)
    page, more = rows[: plan.limit], len(rows) > plan.limit
    fp = _fingerprint(req.kind, req.q, plan.sort, plan.order)
    next_cursor = None
    if more and page:
        last = page[-1]
        key = last.score if plan.sort == "relevance" else _aware(last.arrival)
        next_cursor = encode_cursor(fp, key, last.id)
    results = details(session, plan.kind, page, plan.query)
    return {
        "query": req.q,
        "sort": plan.sort,
        "order": plan.order,
        "limit": plan.limit,
        "results": results,
        "next_cursor": next_cursor,
    }


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):  # SQLite through a text() query
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _details_query(*columns: Any, ref: Any) -> Any:
    si = SearchEntry.__table__.c
    return (
        select(si.id.label("si_id"), *columns)
        .join_from(SearchEntry.__table__, ref, ref.c.id == si.ref_id)
        .where(si.id.in_(bindparam("ids", expanding=True)))
    )


# Built once, on the tables rather than the ORM classes (no ORM step): they run on every page.
_dt, _st, _mt = RegisterEntry.__table__, SearchEntry.__table__, Message.__table__
_d, _si, _m = _dt.c, _st.c, _mt.c
_DOCUMENT_DETAILS = _details_query(
    _si.subject, _si.category, _si.signed, _d.id, _d.register, _d.year, _d.number, _d.revision,
    _d.arrival, _d.doc_symbol, _d.doc_type, _d.doc_type_name, _d.issuer, _d.summary,
    _d.urgency, _d.filename, _d.content_type, _d.size, _d.sha256, _d.message_row_id, _d.text,
    ref=_dt,
)  # fmt: skip
_MESSAGE_DETAILS = _details_query(
    _si.signed, _si.body, _m.id, _m.queue_id, _m.received_at, _m.mail_from, _m.rcpt_to,
    _m.header_from, _m.subject, _m.category, _m.tags, _m.state, _m.message_id, _m.attachments,
    ref=_mt,
)  # fmt: skip


def detail_rows(session: Session, kind: str, ids: list[int]) -> dict[int, Any]:
    """What a page shows of each result, by search_index id: one query, plain rows."""
    statement = _DOCUMENT_DETAILS if kind == DOCUMENT else _MESSAGE_DETAILS
    return {row.si_id: row for row in session.connection().execute(statement, {"ids": ids})}


def details(session: Session, kind: str, page: list[Any], query: Query) -> list[dict[str, Any]]:
    """The result objects of a page, in the page's order, with highlighted snippets."""
    if not page:
        return []
    toks = query.highlight_tokens()
    by_id = detail_rows(session, kind, [r.id for r in page])
    out = []
    for r in page:
        row = by_id.get(r.id)
        if row is None:
            continue
        if kind == DOCUMENT:
            body = "\n".join(t for t in (row.summary, row.text) if t)
            out.append({
                "id": row.id, "register": row.register, "year": row.year, "number": row.number,
                "revision": row.revision, "arrival": _aware(row.arrival).isoformat(),
                "symbol": row.doc_symbol, "type": row.doc_type, "type_name": row.doc_type_name,
                "issuer": row.issuer, "summary": row.summary, "urgency": row.urgency,
                "filename": row.filename, "content_type": row.content_type, "size": row.size,
                "sha256": row.sha256, "message_row_id": row.message_row_id,
                "subject": row.subject, "category": row.category, "signed": row.signed,
                "score": _score(r), "subject_highlighted": snippets.highlight(row.subject, toks),
                "snippet": snippets.snippet(body, toks),
            })  # fmt: skip
        else:
            out.append({
                "id": row.id, "queue_id": row.queue_id,
                "arrival": _aware(row.received_at).isoformat(),
                "mail_from": row.mail_from, "rcpt_to": row.rcpt_to,
                "header_from": row.header_from, "subject": row.subject,
                "category": row.category, "tags": row.tags or [], "state": row.state,
                "message_id": row.message_id,
                "attachments": [a.get("filename") for a in (row.attachments or [])],
                "signed": row.signed, "score": _score(r),
                "subject_highlighted": snippets.highlight(row.subject, toks),
                "snippet": snippets.snippet(row.body, toks),
            })  # fmt: skip
    return out


def _score(row: Any) -> float | None:
    return round(float(row.score), 6) if row.score else None
