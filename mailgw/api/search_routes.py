"""GET /documents and GET /messages: search with the query language of docs/search.md.

Auditors and admins only; every search, answered or refused, is written to the audit log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mailgw.api import audit
from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS
from mailgw.search import service
from mailgw.search.models import DOCUMENT, MESSAGE

router = APIRouter(tags=["search"])


class SearchErrorOut(BaseModel):
    error: str  # bad_query (the q parameter) or bad_request (another parameter)
    param: str
    message: str
    position: int | None = None  # 0-based offset in q where the problem is


RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    400: {"model": SearchErrorOut, "description": "The query or a parameter is malformed"},
}
# Declared for the OpenAPI schema; the values are read and checked by the search service, so
# that every mistake gets the same 400 answer (never FastAPI's 422).
Q = Query(None, description="the query (docs/search.md)")
SORT = Query(None, description="relevance (default with words) or date")
ORDER = Query(None, description="desc (default) or asc")
LIMIT = Query(None, description="results per page, 1-100 (default 20)")
CURSOR = Query(None, description="next_cursor of the previous page")


def _run(request: Request, caller: Caller, kind: str, action: str) -> JSONResponse:
    params = request.query_params
    q = params.get("q")
    try:
        limit_text = params.get("limit", "20")
        if not limit_text.isascii() or not limit_text.isdigit() or len(limit_text) > 6:
            raise service.SearchError("limit is a whole number", "limit")
        req = service.Request(
            kind=kind,
            q=q if q is not None else "",
            sort=params.get("sort") or None,
            order=params.get("order") or "desc",
            limit=int(limit_text),
            cursor=params.get("cursor") or None,
        )
        with request.app.state.sessions() as session:
            body: dict[str, Any] = service.search(session, req)
        status = 200
    except service.SearchError as exc:
        body, status = exc.body(), 400
    audit.record(request, caller, action, query=q or "", status=status)
    return JSONResponse(body, status_code=status)


@router.get("/documents", responses=RESPONSES)
def search_documents(
    request: Request,
    caller: Caller = Depends(require("auditor")),
    q: str | None = Q,
    sort: str | None = SORT,
    order: str | None = ORDER,
    limit: str | None = LIMIT,
    cursor: str | None = CURSOR,
) -> JSONResponse:
    """Search register entries: ``q`` (docs/search.md), ``sort`` relevance|date, ``order``
    desc|asc, ``limit`` (1-100, default 20), ``cursor`` (``next_cursor`` of the last page)."""
    return _run(request, caller, DOCUMENT, "search.documents")


@router.get("/messages", responses=RESPONSES)
def search_messages(
    request: Request,
    caller: Caller = Depends(require("auditor")),
    q: str | None = Q,
    sort: str | None = SORT,
    order: str | None = ORDER,
    limit: str | None = LIMIT,
    cursor: str | None = CURSOR,
) -> JSONResponse:
    """Search messages; the same parameters and query language as /documents."""
    return _run(request, caller, MESSAGE, "search.messages")
