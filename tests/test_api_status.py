"""The API skeleton on a running gateway: /health without auth, /status with tokens and roles."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3

import httpx
import pytest
from sqlalchemy import update

from mailgw import accounts, stats
from mailgw.api.auth import TokenCache
from mailgw.config import Config
from mailgw.db.models import ApiToken, Message, utcnow
from tests.test_gateway_relay import CORPUS_LIKE, send, wait_state


def api(gw) -> httpx.AsyncClient:
    host, port = gw.listening["api"]
    return httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10)


def token(gw, role: str, **kwargs) -> str:
    with gw.sessions() as session, session.begin():
        return accounts.create_token(session, role, f"test-{role}", **kwargs)


async def test_health_needs_no_token(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with api(gw) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok" and body["checks"]["disk"]["status"] == "ok"


async def test_health_reports_low_disk(config: Config, make_gateway) -> None:
    config.storage.min_free_mb = 10**9
    gw = await make_gateway(config)
    async with api(gw) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["disk"]["status"] == "low"


async def test_status_requires_a_valid_token(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with api(gw) as client:
        assert (await client.get("/status")).status_code == 401
        bad = await client.get("/status", headers={"Authorization": "Bearer mgw_nope"})
        assert bad.status_code == 401
        for role in ("service", "auditor", "admin"):
            ok = await client.get("/status", headers={"Authorization": f"Bearer {token(gw, role)}"})
            assert ok.status_code == 200, role


async def test_revoked_and_expired_tokens_are_refused(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    expired = token(gw, "service", expires_at=utcnow() - dt.timedelta(seconds=1))
    revoked = token(gw, "service")
    with gw.sessions() as session, session.begin():
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == accounts.token_digest(revoked))
            .values(revoked_at=utcnow())
        )
    async with api(gw) as client:
        for t in (expired, revoked):
            response = await client.get("/status", headers={"Authorization": f"Bearer {t}"})
            assert response.status_code == 401


async def test_status_counts_and_figures(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)  # no relay host: messages end up held
    for i in range(3):
        data = CORPUS_LIKE.replace(b"relay-1@", f"status-{i}@".encode())
        _, reply = await send(gw, data, ["lanhdao@example.gov.vn"])
        await wait_state(gw, reply.rsplit(" ", 1)[-1], ("held",))
    headers = {"Authorization": f"Bearer {token(gw, 'service')}"}
    async with api(gw) as client:
        body = (await client.get("/status", headers=headers)).json()
    assert body["counts"]["held"] == 3 and body["counts"]["relayed"] == 0
    assert set(body["counts"]) >= {"spooled", "processing", "queued", "deferred", "held",
                                   "relayed", "bounced"}  # fmt: skip
    assert body["throughput"]["1m"]["accepted_per_minute"] == 3
    assert body["throughput"]["5m"]["accepted_per_minute"] == 0.6
    assert body["oldest_queued_age_seconds"] is None
    assert body["uptime_seconds"] >= 0 and body["version"]
    assert body["last_errors"] == []


async def test_status_shows_oldest_queued_and_errors(config: Config, make_gateway) -> None:
    from tests.conftest import free_port

    config.relay.host, config.relay.port = "127.0.0.1", free_port()  # nothing listens there
    config.relay.starttls = "none"
    gw = await make_gateway(config)
    _, reply = await send(gw, CORPUS_LIKE, ["lanhdao@example.gov.vn"])
    await wait_state(gw, reply.rsplit(" ", 1)[-1], ("deferred",))
    await asyncio.sleep(0.2)
    headers = {"Authorization": f"Bearer {token(gw, 'auditor')}"}
    async with api(gw) as client:
        body = (await client.get("/status", headers=headers)).json()
    assert body["counts"]["deferred"] + body["counts"]["sending"] == 1
    assert body["oldest_queued_age_seconds"] is not None
    assert body["last_errors"] and body["last_errors"][0]["queue_id"] == reply.rsplit(" ", 1)[-1]


async def test_a_token_revoked_elsewhere_stops_working_after_the_cache_time(
    config: Config, make_gateway, monkeypatch
) -> None:
    """Verified tokens are remembered briefly; a revocation by another process (the CLI)
    applies once that time is over, and expiry is checked on every request."""
    gw = await make_gateway(config)
    revoked = token(gw, "service")
    expiry = utcnow() + dt.timedelta(seconds=5)
    soon = token(gw, "service", expires_at=expiry)
    cache = TokenCache(seconds=2.0)  # room for a loaded machine between the first two checks
    gw.api_server.config.app.state.token_cache = cache

    async def status(t: str) -> int:
        async with api(gw) as client:
            response = await client.get("/status", headers={"Authorization": f"Bearer {t}"})
            return response.status_code

    assert await status(revoked) == 200 and await status(soon) == 200
    with gw.sessions() as session, session.begin():
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == accounts.token_digest(revoked))
            .values(revoked_at=utcnow())
        )
    assert await status(revoked) == 200  # remembered
    await asyncio.sleep(2.1)
    assert await status(revoked) == 401
    cache.seconds = 60.0
    assert await status(soon) == 200  # remembered for a minute now, but it expires first
    await asyncio.sleep((expiry - utcnow()).total_seconds() + 0.1)
    assert await status(soon) == 401


async def test_a_message_in_a_delivery_attempt_counts_as_queued(config: Config, make_gateway):
    gw = await make_gateway(config)
    received = utcnow() - dt.timedelta(minutes=3)
    with gw.sessions() as session, session.begin():
        session.add(Message(queue_id="SENDING0001", spool_path="x", sha256="0" * 64,
                            received_at=received, state="sending"))  # fmt: skip
    with gw.sessions() as session:
        age = stats.oldest_queued_age(session, utcnow())
    assert age is not None and 170 < age < 300


async def test_reads_answer_while_a_writer_holds_the_sqlite_lock(
    config: Config, make_gateway
) -> None:
    """/health and /status only read: they must not queue behind the gateway's writers (on
    SQLite a reader that asked for the write lock would wait up to 30 s, then fail)."""
    url = config.storage.database_url
    if not url.startswith("sqlite"):
        pytest.skip("SQLite's database-wide write lock")
    gw = await make_gateway(config)
    service = token(gw, "service")
    writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # as a long intake or registry transaction would
    try:
        async with api(gw) as client:  # 10 s timeout
            health = await client.get("/health")
            status = await client.get("/status", headers={"Authorization": f"Bearer {service}"})
    finally:
        writer.rollback()
        writer.close()
    assert health.status_code == 200 and health.json()["checks"]["database"] == "ok"
    assert status.status_code == 200


def test_a_token_read_before_a_revocation_is_not_remembered() -> None:
    """A request reads the token row, a revocation commits and clears the cache, then the
    request would remember the token it read: it must not, or the revoked token would work
    for the cache time."""
    from mailgw.api.auth import Caller

    cache = TokenCache()
    caller = Caller(token_id=1, name="t", role="auditor")
    read_at = cache.generation  # the request starts its database read
    cache.clear()  # DELETE /tokens/1 commits meanwhile
    cache.put("digest", caller, None, read_at)
    assert cache.get("digest") is None
    cache.put("digest", caller, None, cache.generation)  # a read after the revocation
    assert cache.get("digest") == caller
