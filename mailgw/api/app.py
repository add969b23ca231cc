"""The HTTP API (FastAPI), served by uvicorn inside the gateway process."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from mailgw import __version__
from mailgw.api import (
    admin_routes,
    docs_routes,
    documents_routes,
    metrics_routes,
    notify_routes,
    queue_routes,
    registers_routes,
    rules_routes,
    search_routes,
    stats_routes,
    users_routes,
)
from mailgw.api.auth import Caller, TokenCache, require
from mailgw.api.common import AUTH_ERRORS
from mailgw.config import RelayConfig
from mailgw.db.engine import make_read_sessionmaker, statement_by_statement
from mailgw.notify.outgoing import Notifier
from mailgw.registry.numbering import DEFAULT_TIMEZONE
from mailgw.rules.manager import RulesManager
from mailgw.stats import status_report


def create_app(
    sessions: sessionmaker[Session],
    data_dir: Path,
    min_free_mb: int = 0,
    *,
    rules: RulesManager | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    relay_lifetime: dt.timedelta = dt.timedelta(hours=RelayConfig.max_lifetime_hours),
    forget_logins: Callable[[], None] = lambda: None,
    units: Mapping[str, str] | None = None,
    notifier: Notifier | None = None,
) -> FastAPI:
    """The API. ``rules``: the gateway's rules manager (the /rules routes answer 503 without
    it); ``timezone``: the registry's, for months and years in /stats; ``relay_lifetime``: how
    long mail sent again from the queue is tried (``relay.max_lifetime_hours``);
    ``forget_logins``: called when an SMTP account changes, so that the listeners' remembered
    logins (mailgw.smtp.server.CredentialCache) do not outlive a new password or a disable;
    ``units``: the receiving units by recipient (``[registry.units]``), for /stats;
    ``notifier``: the gateway's templates, spool and notification settings (/notifications
    answers 503 without it)."""
    # /docs is served from the package's own assets (docs_routes): nothing from a CDN.
    app = FastAPI(title="mailgw", version=__version__, docs_url=None, redoc_url=None)
    app.state.sessions = sessions
    engine = sessions.kw["bind"]
    app.state.read_sessions = readers = make_read_sessionmaker(engine)
    app.state.quick_read_sessions = make_read_sessionmaker(engine, autocommit=True)
    app.state.audit_engine = statement_by_statement(engine)
    app.state.data_dir = data_dir
    app.state.started = time.time()
    app.state.rules = rules
    app.state.timezone = timezone
    app.state.relay_lifetime = relay_lifetime
    app.state.forget_logins = forget_logins
    app.state.units = dict(units or {})
    app.state.notifier = notifier
    app.state.token_cache = TokenCache()
    # Routes are matched in order, each in turn (about 10 µs apiece): searches, the most
    # frequent reads, come first.
    for module in (search_routes, documents_routes, registers_routes, stats_routes,
                   rules_routes, notify_routes, admin_routes, queue_routes, users_routes,
                   metrics_routes,
                   docs_routes):  # fmt: skip
        app.include_router(module.router)

    @app.get(
        "/health",
        tags=["operations"],
        responses={503: {"description": "The database or the data disk is not ready"}},
    )
    def health() -> JSONResponse:
        """Liveness and readiness: the process, the database and the data disk. No auth."""
        checks: dict[str, Any] = {"process": "ok"}
        ok = True
        try:
            with readers() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
            ok = False
        try:
            usage = shutil.disk_usage(data_dir)
            free_mb = usage.free // (1024 * 1024)
            disk_ok = free_mb >= min_free_mb
            checks["disk"] = {"free_mb": free_mb, "status": "ok" if disk_ok else "low"}
            ok = ok and disk_ok
        except OSError as exc:
            checks["disk"] = f"error: {exc.strerror}"
            ok = False
        body = {"status": "ok" if ok else "error", "checks": checks, "version": __version__}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/status", tags=["operations"], responses={**AUTH_ERRORS})
    def status(caller: Caller = Depends(require("service", "auditor"))) -> dict[str, Any]:
        """Queue counts by state, oldest queued age, throughput, last errors, version, uptime."""
        with readers() as session:
            report = status_report(session)
        report["version"] = __version__
        report["uptime_seconds"] = round(time.time() - app.state.started, 1)
        return report

    return app
