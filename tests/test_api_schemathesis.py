"""Property-based checks of the API against its own OpenAPI schema (schemathesis), on the ASGI app
with an admin token: no server error (5xx) and every answer matches the schema (status code,
content type, body). Bounded: at most 25 examples per operation, no deadline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from mailgw import accounts
from mailgw.api.app import create_app
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.migrate import is_up_to_date, upgrade
from mailgw.db.rule_versions import activate_version
from mailgw.notify.outgoing import Notifier, Outgoing
from mailgw.notify.render import NotificationTemplates
from mailgw.rules.manager import RulesManager
from mailgw.spool import Spool

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def api_app(database_url: str, tmp_path: Path):
    engine = make_engine(database_url)
    if not is_up_to_date(engine):
        upgrade(engine)
    sessions = make_sessionmaker(engine)

    def store(text: str, sha256: str, source: str) -> None:  # what the gateway does
        with sessions() as session, session.begin():
            activate_version(session, text, sha256, source)

    with sessions() as session, session.begin():
        admin = accounts.create_token(session, "admin", "schemathesis")
    (tmp_path / "data").mkdir()
    spool = Spool(tmp_path / "data", sessions)  # notifications are spooled (held: no relay)
    outgoing = Outgoing("mailgw@mailgw.test", "Cơ quan", "mailgw.test", False, dt.timedelta(1))
    app = create_app(
        sessions,
        tmp_path / "data",
        rules=RulesManager(None, on_loaded=store),
        notifier=Notifier(NotificationTemplates(), spool, outgoing),
    )
    app.state.test_token = admin
    yield app
    spool.close()
    engine.dispose()


def test_api_matches_its_schema(api_app) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    # Revoking tokens at random would revoke the token the run itself uses.
    schema = schema.exclude(method="DELETE", path="/tokens/{token_id}")
    headers = {"Authorization": f"Bearer {api_app.state.test_token}"}
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # every operation is tried; all failures are reported
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert operations >= 30  # every route of docs/api.md but DELETE /tokens
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
