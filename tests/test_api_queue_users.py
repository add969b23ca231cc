"""The administrators' queue and SMTP-account routes (/queue, /users) on a running gateway:
roles, what each act does to the queue and to AUTH, and the audit rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib

import pytest
from sqlalchemy import update

from mailgw.config import Config
from mailgw.db.models import DEFERRED, DELETED, HELD, QUEUED, RELAYED, Message, utcnow
from tests.smtp_client import send_message
from tests.smtp_server import DownstreamSMTP
from tests.test_api_archive import audit_rows
from tests.test_api_status import api, token
from tests.test_gateway_relay import CORPUS_LIKE, downstream, relay_to, send, wait_state
from tests.test_smtp_ingress import submission_config

__all__ = ["downstream", "submission_config"]  # fixtures, used by name


def bearer(gw, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(gw, role)}"}


async def held_messages(gw, n: int) -> list[str]:
    ids = []
    for i in range(n):
        data = CORPUS_LIKE.replace(b"relay-1@", f"queue-{i}@".encode())
        ids.append((await send(gw, data, ["lanhdao@example.gov.vn"]))[1].rsplit(" ", 1)[-1])
    for qid in ids:
        await wait_state(gw, qid, (HELD,))
    return ids


async def test_queue_routes_are_for_admins_only(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    [qid] = await held_messages(gw, 1)
    calls = [("GET", "/queue"), ("POST", f"/queue/{qid}/retry"), ("DELETE", f"/queue/{qid}"),
             ("POST", "/queue/retry"), ("GET", "/users"), ("POST", "/users"),
             ("PATCH", "/users/someone")]  # fmt: skip
    async with api(gw) as client:
        for method, path in calls:
            assert (await client.request(method, path)).status_code == 401, path
            for role in ("auditor", "service"):
                refused = await client.request(method, path, headers=bearer(gw, role))
                assert refused.status_code == 403, (path, role)
    with gw.sessions() as session:
        assert session.get(Message, 1).state == HELD  # nothing was done


async def test_list_retry_and_delete_held_mail(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)  # no relay host: mail is held
    first, second, third = await held_messages(gw, 3)
    admin = bearer(gw, "admin")
    async with api(gw) as client:
        page = (await client.get("/queue", headers=admin)).json()
        assert page["counts"] == {"held": 3, "deferred": 0, "queued": 0, "sending": 0}
        assert [m["queue_id"] for m in page["messages"]] == [first, second, third]
        assert page["messages"][0]["subject"] == "Giấy mời họp"
        assert page["messages"][0]["hold_reason"] == "no relay host configured"
        assert (await client.get("/queue?state=deferred", headers=admin)).json()["total"] == 0
        one = (await client.get("/queue?limit=1&offset=2", headers=admin)).json()
        assert one["total"] == 3 and [m["queue_id"] for m in one["messages"]] == [third]

        retried = await client.post(f"/queue/{first.lower()}/retry", headers=admin)
        assert retried.status_code == 200
        body = retried.json()
        assert body["state"] == QUEUED and body["hold_reason"] is None
        expires = dt.datetime.fromisoformat(body["expires_at"])
        lifetime = dt.timedelta(hours=config.relay.max_lifetime_hours)
        assert abs(expires - (utcnow() + lifetime)) < dt.timedelta(minutes=1)

        deleted = await client.delete(f"/queue/{second}", headers=admin)
        assert deleted.status_code == 200 and deleted.json()["state"] == DELETED
        again = await client.delete(f"/queue/{second}", headers=admin)
        assert again.status_code == 409 and "deleted" in again.json()["detail"]
        # the archive keeps a deleted message
        view = await client.get(f"/messages/{second}", headers=bearer(gw, "auditor"))
        assert view.status_code == 200 and view.json()["state"] == DELETED

        unknown = await client.post("/queue/0000000000000000Z/retry", headers=admin)
        assert unknown.status_code == 404
        bad = await client.post("/queue/not-a-queue-id/retry", headers=admin)
        assert bad.status_code == 422

        all_of_them = await client.post("/queue/retry", headers=admin)
        assert all_of_them.json() == {"queued": 2}  # first (queued again) and third
    with gw.sessions() as session:
        states = {m.queue_id: m.state for m in session.query(Message)}
    assert states == {first: QUEUED, second: DELETED, third: QUEUED}
    audited = [(e.action, e.resource, e.status) for e in audit_rows(gw) if e.role == "admin"]
    assert audited == [
        ("queue.list", "queue", 200), ("queue.list", "queue", 200), ("queue.list", "queue", 200),
        ("queue.retry", f"message:{first}", 200), ("queue.delete", f"message:{second}", 200),
        ("queue.delete", f"message:{second}", 409),
        ("queue.retry", "message:0000000000000000Z", 404), ("queue.retry", "queue", 200),
    ]  # fmt: skip


async def test_a_purged_message_cannot_be_retried(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    [qid] = await held_messages(gw, 1)
    with gw.sessions() as session, session.begin():
        session.execute(
            update(Message).where(Message.queue_id == qid).values(raw_purged_at=utcnow())
        )
    async with api(gw) as client:
        refused = await client.post(f"/queue/{qid}/retry", headers=bearer(gw, "admin"))
    assert refused.status_code == 409 and "purged" in refused.json()["detail"]
    with gw.sessions() as session:
        assert session.query(Message).one().state == HELD


async def test_retry_delivers_deferred_mail_now(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    """Mail deferred while the mail server was down, with the next attempt an hour away: a
    retry sends it as soon as the server is back."""
    config.relay.retry_initial_seconds = config.relay.retry_max_seconds = 3600
    downstream.down()
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, CORPUS_LIKE, ["lanhdao@example.gov.vn"])
    qid = reply.rsplit(" ", 1)[-1]
    await wait_state(gw, qid, (DEFERRED,))
    downstream.up()
    await asyncio.sleep(1.5)  # the relay polls every second: nothing is due
    await wait_state(gw, qid, (DEFERRED,), timeout=0.1)
    async with api(gw) as client:
        response = await client.post(f"/queue/{qid}/retry", headers=bearer(gw, "admin"))
    assert response.status_code == 200
    await wait_state(gw, qid, (RELAYED,))
    [got] = await downstream.async_wait_for_messages(1)
    assert got.data.endswith(CORPUS_LIKE)


def smtp_auth_works(gw, username: str, password: str) -> bool:
    from mailgw.accounts import check_credentials

    with gw.sessions() as session:
        return check_credentials(session, username, password)


async def test_users_create_change_disable(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    admin = bearer(gw, "admin")
    async with api(gw) as client:
        created = await client.post(
            "/users", headers=admin, json={"username": "vanthu", "password": "mật khẩu 1"}
        )
        assert created.status_code == 201
        assert created.json()["username"] == "vanthu" and created.json()["disabled"] is False
        assert "password" not in created.text and "scrypt" not in created.text
        assert smtp_auth_works(gw, "vanthu", "mật khẩu 1")

        twice = await client.post("/users", headers=admin,
                                  json={"username": "vanthu", "password": "x"})  # fmt: skip
        assert twice.status_code == 409
        spaced = await client.post("/users", headers=admin,
                                   json={"username": "van thu", "password": "x"})  # fmt: skip
        assert spaced.status_code == 422
        empty = await client.post("/users", headers=admin,
                                  json={"username": "b", "password": ""})  # fmt: skip
        assert empty.status_code == 422

        changed = await client.patch("/users/vanthu", headers=admin, json={"password": "mới"})
        assert changed.status_code == 200
        assert smtp_auth_works(gw, "vanthu", "mới") and not smtp_auth_works(
            gw, "vanthu", "mật khẩu 1"
        )

        off = await client.patch("/users/vanthu", headers=admin, json={"disabled": True})
        assert off.json()["disabled"] is True and not smtp_auth_works(gw, "vanthu", "mới")
        on = await client.patch("/users/vanthu", headers=admin, json={"disabled": False})
        assert on.json()["disabled"] is False and smtp_auth_works(gw, "vanthu", "mới")

        missing = await client.patch("/users/nobody", headers=admin, json={"disabled": True})
        assert missing.status_code == 404
        listed = (await client.get("/users", headers=admin)).json()
        assert [u["username"] for u in listed] == ["vanthu"]
    audited = [(e.action, e.resource, e.query, e.status) for e in audit_rows(gw)
               if e.action.startswith("user.")]  # fmt: skip
    assert audited == [
        ("user.create", "user:vanthu", None, 201), ("user.create", "user:vanthu", None, 409),
        ("user.update", "user:vanthu", "password=changed", 200),
        ("user.update", "user:vanthu", "disabled=true", 200),
        ("user.update", "user:vanthu", "disabled=false", 200),
        ("user.update", "user:nobody", "disabled=true", 404),
    ]  # fmt: skip
    assert all("mới" not in (e.query or "") for e in audit_rows(gw))


async def test_an_account_made_over_the_api_logs_in_to_submission(
    submission_config: Config, make_gateway
) -> None:
    """The account works where it is meant to, SMTP AUTH on the submission listener, and
    stops working there once disabled."""
    gw = await make_gateway(submission_config)
    host, port = gw.listening["submission"]
    admin = bearer(gw, "admin")

    account = {"username": "chuyenvien", "password": "Bi-Mat-9"}

    def submit() -> int:
        login = (account["username"], account["password"])
        return send_message(host, port, "chuyenvien@example.gov.vn", ["x@outside.example"],
                            CORPUS_LIKE, starttls=True, login=login)[0]  # fmt: skip

    async with api(gw) as client:
        assert (await client.post("/users", headers=admin, json=account)).status_code == 201
        assert await asyncio.to_thread(submit) == 250
        await client.patch("/users/chuyenvien", headers=admin, json={"disabled": True})
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(submit)
