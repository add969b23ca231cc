"""Shared fixtures: a fresh database per test (SQLite, or PostgreSQL when
MAILGW_TEST_DATABASE_URL is set), gateway configurations, and the require-services switch."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailgw.aio import loop_factory
from mailgw.app import Gateway
from mailgw.config import Config, Listen
from mailgw.db.engine import make_engine
from mailgw.db.migrate import upgrade

REQUIRE_SERVICES = os.environ.get("MAILGW_REQUIRE_SERVICES") == "1"
# The event loop of in-process tests, as [runtime] event_loop: "auto" (the gateway's default:
# uvloop when installed), "uvloop" or "asyncio". CI runs one pass on each.
TEST_EVENT_LOOP = os.environ.get("MAILGW_TEST_EVENT_LOOP", "auto")
PG_URL = os.environ.get("MAILGW_TEST_DATABASE_URL", "")
REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "dev"


def pytest_asyncio_loop_factories(config, item) -> dict:
    return {TEST_EVENT_LOOP: loop_factory(TEST_EVENT_LOOP)}


def need(available: bool, what: str) -> None:
    """Skip when ``what`` is missing, or fail when MAILGW_REQUIRE_SERVICES=1 (as in CI)."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {what}")
    pytest.skip(f"{what} not available")


def need_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    need(path is not None, name)
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_url_for(name: str) -> str:
    url = make_url(PG_URL if "://" in PG_URL else f"postgresql://{PG_URL}")
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh database for one test (SQLite: migrated by the gateway at start)."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'mailgw.db'}"
        return
    name = f"mailgw_t_{uuid.uuid4().hex[:12]}"
    admin_url = _pg_url_for(make_url(PG_URL).database or "postgres").replace(
        "postgresql://", "postgresql+psycopg://", 1
    )
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        need(False, f"PostgreSQL at {PG_URL} ({exc})")
    url = _pg_url_for(name)
    engine = make_engine(url)
    upgrade(engine)  # the gateway never migrates PostgreSQL by itself
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Config:
    """A gateway configuration on loopback with ephemeral ports and no relay host."""
    cfg = Config(source="<test>")
    cfg.storage.data_dir = tmp_path / "data"
    cfg.storage.database_url = database_url
    cfg.smtp.listen = Listen("127.0.0.1", 0)
    cfg.smtp.hostname = "mailgw.test"
    cfg.smtp.domains = ["example.gov.vn"]
    cfg.api.listen = Listen("127.0.0.1", 0)
    cfg.pipeline.processes = 0  # in-process pipeline: fast to start; subprocess tests use 1
    cfg.pipeline.poll_seconds = 0.05
    cfg.pipeline.lease_seconds = 5
    cfg.relay.retry_initial_seconds = 0.2
    cfg.relay.retry_max_seconds = 0.5
    cfg.relay.timeout = 5
    return cfg


@pytest.fixture
async def make_gateway() -> AsyncIterator:
    """Start gateways in the test's loop; all are shut down at the end."""
    started: list[Gateway] = []

    async def start(cfg: Config) -> Gateway:
        gw = Gateway(cfg)
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if not gw.stopping.is_set():
            await gw.shutdown()
