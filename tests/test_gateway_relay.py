"""Mail through the whole gateway to a real downstream SMTP server: bytes, retries, DSNs."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from mailgw.config import Config
from mailgw.db.models import BOUNCED, HELD, RELAYED, Message
from tests.smtp_client import send_message
from tests.smtp_server import DownstreamSMTP

CORPUS_LIKE = (
    "From: =?utf-8?Q?V=C4=83n_th=C6=B0?= <vanthu@example.gov.vn>\r\n"
    "To: lanhdao@example.gov.vn\r\n"
    "Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di_h=E1=BB=8Dp?=\r\n"
    "Message-ID: <relay-1@example.gov.vn>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Kính gửi: Lãnh đạo.\r\n"
    ".Dòng bắt đầu bằng dấu chấm\r\n"
    "\r\n"
).encode()


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


def relay_to(config: Config, srv: DownstreamSMTP) -> Config:
    config.relay.host, config.relay.port = srv.host, srv.port
    config.relay.starttls = "none"
    return config


async def send(gw, data: bytes, rcpts: list[str], mail_from: str = "vanthu@example.gov.vn"):
    host, port = gw.listening["relay"]
    return await asyncio.to_thread(send_message, host, port, mail_from, rcpts, data)


async def wait_state(gw, queue_id: str, states: tuple[str, ...], timeout: float = 15.0) -> Message:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with gw.sessions() as session:
            row = session.scalar(select(Message).where(Message.queue_id == queue_id))
        if row is not None and row.state in states:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{queue_id} is {row.state if row else 'missing'}, not {states}")
        await asyncio.sleep(0.05)


def split_added(received: bytes, original: bytes) -> bytes:
    assert received.endswith(original), "the original bytes must arrive unchanged"
    return received[: len(received) - len(original)]


async def test_relayed_bytes_identical_below_added_headers(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, CORPUS_LIKE, ["lanhdao@example.gov.vn", "pho@example.gov.vn"])
    queue_id = reply.rsplit(" ", 1)[-1]
    row = await wait_state(gw, queue_id, (RELAYED,))
    [got] = await downstream.async_wait_for_messages(1)
    added = split_added(got.data, CORPUS_LIKE)
    assert added.startswith(b"Received: from client.test")
    assert f"X-Mailgw-Queue-Id: {queue_id}\r\n".encode() in added
    assert got.mail_from == "vanthu@example.gov.vn"
    assert sorted(got.rcpts) == ["lanhdao@example.gov.vn", "pho@example.gov.vn"]
    assert row.subject == "Giấy mời họp"
    assert row.message_id == "<relay-1@example.gov.vn>"
    assert set(row.rcpt_status) == {"lanhdao@example.gov.vn", "pho@example.gov.vn"}
    assert all(s["status"] == "sent" for s in row.rcpt_status.values())


async def test_no_relay_host_keeps_mail_held(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    _, reply = await send(gw, CORPUS_LIKE, ["lanhdao@example.gov.vn"])
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (HELD,))
    assert row.hold_reason == "no relay host configured"


async def test_downstream_down_then_up_delivers_everything(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    downstream.down()
    gw = await make_gateway(relay_to(config, downstream))
    ids = []
    for i in range(5):
        data = CORPUS_LIKE.replace(b"relay-1@", f"outage-{i}@".encode())
        ids.append((await send(gw, data, ["lanhdao@example.gov.vn"]))[1].rsplit(" ", 1)[-1])
    for qid in ids:
        row = await wait_state(gw, qid, ("deferred",))
        assert row.rcpt_status["lanhdao@example.gov.vn"]["status"] == "temp"
    downstream.up()
    for qid in ids:
        await wait_state(gw, qid, (RELAYED,))
    got = await downstream.async_wait_for_messages(5)
    assert sorted(m.data.count(b"X-Mailgw-Queue-Id") for m in got) == [1] * 5
    assert len({m.data for m in got}) == 5


async def test_permanent_failure_sends_dsn_to_sender(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    downstream.reject_rcpt("nobody@example.gov.vn", 550, "5.1.1 No such user here")
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, CORPUS_LIKE, ["lanhdao@example.gov.vn", "nobody@example.gov.vn"])
    queue_id = reply.rsplit(" ", 1)[-1]
    row = await wait_state(gw, queue_id, (BOUNCED,))
    assert row.rcpt_status["nobody@example.gov.vn"]["status"] == "perm"
    assert row.rcpt_status["lanhdao@example.gov.vn"]["status"] == "sent"
    assert row.dsn_sent
    got = await downstream.async_wait_for_messages(2)
    [dsn] = [m for m in got if m.mail_from == ""]
    assert dsn.rcpts == ["vanthu@example.gov.vn"]
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status_part = next(
        p for p in report.walk() if p.get_content_type() == "message/delivery-status"
    )
    text = status_part.as_bytes().decode()
    assert "nobody@example.gov.vn" in text and "5.1.1" in text
    assert "lanhdao@example.gov.vn" not in text


async def test_expired_mail_bounces(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    config.relay.max_lifetime_hours = 1 / 3600  # one second
    downstream.reject_rcpt("busy@example.gov.vn", 451, "4.2.1 Try later")
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, CORPUS_LIKE, ["busy@example.gov.vn"])
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (BOUNCED,))
    status = row.rcpt_status["busy@example.gov.vn"]
    assert status["status"] == "perm" and status.get("expired")
    got = await downstream.async_wait_for_messages(1)
    assert got[0].mail_from == "" and got[0].rcpts == ["vanthu@example.gov.vn"]


async def test_no_dsn_for_null_sender(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    downstream.reject_rcpt("nobody@example.gov.vn", 550, "5.1.1 No such user")
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, CORPUS_LIKE, ["nobody@example.gov.vn"], mail_from="")
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (BOUNCED,))
    assert not row.dsn_sent
    await asyncio.sleep(0.5)
    assert downstream.messages == []


async def test_nul_in_headers_and_body_is_processed_and_relayed_unchanged(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    """NUL is not text (PostgreSQL text cannot hold it): stored as U+FFFD, relayed as sent."""
    data = (
        b"From: a@example.gov.vn\r\nTo: b@example.gov.vn\r\n"
        b"Subject: =?utf-8?Q?B=C3=A1o_c=C3=A1o=00x?=\r\n\r\nN\x00i dung.\r\n"
    )
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, data, ["b@example.gov.vn"])
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], (RELAYED,))
    assert row.subject == "Báo cáo\ufffdx"
    [got] = await downstream.async_wait_for_messages(1)
    assert got.data.endswith(data)
