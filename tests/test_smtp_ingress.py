"""SMTP ingress against a running gateway: policy, durability, smuggling, AUTH, limits."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw import accounts
from mailgw.config import Config, Listen
from mailgw.db.models import Message
from tests.smtp_client import RawSMTP, b64, send_message
from tests.smtp_server import make_self_signed_cert

MSG = (
    b"From: a@example.gov.vn\r\nTo: b@example.gov.vn\r\nSubject: test\r\n"
    b"Message-ID: <t1@example.gov.vn>\r\n\r\nHello.\r\n..leading dot\r\n"
)


def rows(gw) -> list[Message]:
    with gw.sessions() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


async def run(fn, *args, **kwargs):
    return await asyncio.to_thread(fn, *args, **kwargs)


@contextlib.asynccontextmanager
async def connected(host: str, port: int) -> AsyncIterator[RawSMTP]:
    """A raw SMTP client connected to host:port (its calls block: run them with run())."""
    client = await run(RawSMTP, host, port)
    try:
        yield client
    finally:
        client.close()


async def test_accepts_durably_and_reports_queue_id(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    host, port = gw.listening["relay"]
    code, reply = await run(send_message, host, port, "a@example.gov.vn", ["b@example.gov.vn"], MSG)
    assert code == 250
    queue_id = reply.rsplit(" ", 1)[-1]
    [row] = rows(gw)
    assert row.queue_id == queue_id
    assert row.rcpt_to == ["b@example.gov.vn"]
    # The spool file holds exactly the bytes the client meant (smtplib dot-stuffed the line
    # "..leading dot" to "...leading dot"; the gateway undid that), nothing else.
    stored = (config.storage.data_dir / row.spool_path).read_bytes()
    assert stored == MSG
    assert row.trace_headers.startswith(b"Received: from client.test ([127.0.0.1])")
    assert queue_id.encode() in row.trace_headers


async def test_open_relay_refused_for_untrusted_clients(config: Config, make_gateway) -> None:
    config.smtp.trusted_networks = []
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        assert (await run(client.cmd, "EHLO client.test"))[0] == 250
        assert (await run(client.cmd, "MAIL FROM:<x@outside.example>"))[0] == 250
        code, text = await run(client.cmd, "RCPT TO:<victim@elsewhere.example>")
        assert code == 550 and "5.7.1" in text
        code, _ = await run(client.cmd, "RCPT TO:<staff@sub.example.gov.vn>")
        assert code == 250


async def test_oversize_refused(config: Config, make_gateway) -> None:
    config.smtp.max_message_size = 4096
    gw = await make_gateway(config)
    host, port = gw.listening["relay"]
    async with connected(host, port) as client:
        ehlo = (await run(client.cmd, "EHLO client.test"))[1]
        assert "SIZE 4096" in ehlo
        code, _ = await run(client.cmd, "MAIL FROM:<a@example.gov.vn> SIZE=100000")
        assert code == 552
    big = MSG + b"x" * 8000 + b"\r\n"
    with pytest.raises(smtplib.SMTPDataError) as info:
        await run(send_message, host, port, "a@example.gov.vn", ["b@example.gov.vn"], big)
    assert info.value.smtp_code == 552
    assert rows(gw) == []


SMUGGLING = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
}


@pytest.mark.parametrize("ending", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_smuggling_variants_refused(config: Config, make_gateway, ending: bytes) -> None:
    gw = await make_gateway(config)
    smuggled = (
        b"MAIL FROM:<admin@example.gov.vn>\r\nRCPT TO:<b@example.gov.vn>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nevil\r\n"
    )
    async with connected(*gw.listening["relay"]) as client:
        await run(client.cmd, "EHLO client.test")
        await run(client.cmd, "MAIL FROM:<a@example.gov.vn>")
        await run(client.cmd, "RCPT TO:<b@example.gov.vn>")
        assert (await run(client.cmd, "DATA"))[0] == 354
        await run(client.send, b"Subject: first\r\n\r\nbody" + ending + smuggled + b"\r\n.\r\n")
        code, text = await run(client.reply)
        assert code == 550 and "bare" in text
        # The session stays in sync: the smuggled commands were never executed.
        assert (await run(client.cmd, "NOOP"))[0] == 250
    assert rows(gw) == []


async def test_bare_lf_in_headers_refused(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    data = b"Subject: x\nX-Evil: y\r\n\r\nbody\r\n"
    with pytest.raises(smtplib.SMTPDataError) as info:
        await run(
            send_message, *gw.listening["relay"], "a@example.gov.vn", ["b@example.gov.vn"], data
        )
    assert info.value.smtp_code == 550
    assert rows(gw) == []


async def test_too_many_recipients(config: Config, make_gateway) -> None:
    config.smtp.max_recipients = 2
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        await run(client.cmd, "EHLO client.test")
        await run(client.cmd, "MAIL FROM:<a@example.gov.vn>")
        assert (await run(client.cmd, "RCPT TO:<b1@example.gov.vn>"))[0] == 250
        assert (await run(client.cmd, "RCPT TO:<b2@example.gov.vn>"))[0] == 250
        assert (await run(client.cmd, "RCPT TO:<b3@example.gov.vn>"))[0] == 452


async def test_smtputf8_accepted(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        assert "SMTPUTF8" in (await run(client.cmd, "EHLO client.test"))[1]
        assert (await run(client.cmd, "MAIL FROM:<vănthư@example.gov.vn> SMTPUTF8"))[0] == 250
        assert (await run(client.cmd, "RCPT TO:<lãnhđạo@example.gov.vn>"))[0] == 250
        assert (await run(client.cmd, "DATA"))[0] == 354
        await run(client.send, "Subject: Giấy mời\r\n\r\nKính gửi.\r\n.\r\n".encode())
        assert (await run(client.reply))[0] == 250
    [row] = rows(gw)
    assert row.mail_from == "vănthư@example.gov.vn"


async def test_connection_limit_per_client(config: Config, make_gateway) -> None:
    config.smtp.max_connections_per_client = 2
    gw = await make_gateway(config)
    first = await run(RawSMTP, *gw.listening["relay"])
    second = await run(RawSMTP, *gw.listening["relay"])
    third = await run(RawSMTP, *gw.listening["relay"])
    try:
        assert first.greeting[0] == 220 and second.greeting[0] == 220
        assert third.greeting[0] == 421
    finally:
        for c in (first, second, third):
            c.close()


async def test_rate_limit_answers_451(config: Config, make_gateway) -> None:
    config.smtp.max_messages_per_minute_per_client = 2
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        await run(client.cmd, "EHLO client.test")
        codes = []
        for _ in range(3):
            codes.append((await run(client.cmd, "MAIL FROM:<a@example.gov.vn>"))[0])
            await run(client.cmd, "RSET")
        assert codes == [250, 250, 451]


async def test_disk_space_check_answers_451_and_keeps_nothing(config: Config, make_gateway) -> None:
    config.storage.min_free_mb = 10**9  # more than any disk has: behaves as a full disk
    gw = await make_gateway(config)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await run(
            send_message, *gw.listening["relay"], "a@example.gov.vn", ["b@example.gov.vn"], MSG
        )
    assert info.value.smtp_code == 451 and b"4.3.0" in info.value.smtp_error
    assert rows(gw) == []
    assert not list((config.storage.data_dir / "spool").rglob("*.eml"))


@pytest.fixture
def submission_config(config: Config, tmp_path: Path) -> Config:
    tls = make_self_signed_cert(tmp_path / "tls", "mailgw.test")
    config.smtp.tls_cert = Path(tls.cert)
    config.smtp.tls_key = Path(tls.key)
    config.smtp.submission_listen = Listen("127.0.0.1", 0)
    config.smtp.trusted_networks = []
    return config


async def test_submission_requires_starttls_before_auth(
    submission_config: Config, make_gateway
) -> None:
    gw = await make_gateway(submission_config)
    async with connected(*gw.listening["submission"]) as client:
        ehlo = (await run(client.cmd, "EHLO client.test"))[1]
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        code, _ = await run(client.cmd, "AUTH PLAIN " + b64("\0clerk\0secret"))
        assert code == 530
        assert (await run(client.cmd, "MAIL FROM:<a@example.gov.vn>"))[0] == 530


async def test_submission_auth(submission_config: Config, make_gateway) -> None:
    gw = await make_gateway(submission_config)
    with gw.sessions() as session, session.begin():
        accounts.add_user(session, "clerk", "Dung-Mat-Khau-9")
    host, port = gw.listening["submission"]
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await run(
            send_message, host, port, "clerk@example.gov.vn", ["x@outside.example"], MSG,
            starttls=True, login=("clerk", "wrong"),
        )  # fmt: skip
    code, _ = await run(
        send_message, host, port, "clerk@example.gov.vn", ["x@outside.example"], MSG,
        starttls=True, login=("clerk", "Dung-Mat-Khau-9"),
    )  # fmt: skip
    assert code == 250
    [row] = rows(gw)
    assert row.auth_user == "clerk" and row.listener == "submission"
    assert b"with ESMTPSA" in row.trace_headers
    # Without AUTH an untrusted client may not send through submission at all.
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await run(send_message, host, port, "a@example.gov.vn", ["b@example.gov.vn"], MSG,
                  starttls=True)  # fmt: skip
    assert info.value.smtp_code == 530


async def test_disabled_user_cannot_log_in(submission_config: Config, make_gateway) -> None:
    gw = await make_gateway(submission_config)
    with gw.sessions() as session, session.begin():
        accounts.add_user(session, "old", "pw")
        accounts.set_disabled(session, "old", True)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await run(
            send_message, *gw.listening["submission"], "old@example.gov.vn", ["b@example.gov.vn"],
            MSG, starttls=True, login=("old", "pw"),
        )  # fmt: skip


async def test_large_message_checked_off_the_loop(config: Config, make_gateway) -> None:
    """Over 256 KiB the line-ending check runs in a thread: same answers, same bytes."""
    gw = await make_gateway(config)
    host, port = gw.listening["relay"]
    line = ".Một dòng văn bản dài với dấu chấm ở đầu dòng ".encode() * 20 + b"\r\n"
    big = MSG + line * 1500  # about 1.5 MB, every line dot-stuffed on the wire
    code, _ = await run(send_message, host, port, "a@example.gov.vn", ["b@example.gov.vn"], big)
    assert code == 250
    [row] = rows(gw)
    assert (config.storage.data_dir / row.spool_path).read_bytes() == big
    with pytest.raises(smtplib.SMTPDataError) as info:
        await run(send_message, host, port, "a@example.gov.vn", ["b@example.gov.vn"],
                  big + b"bare\nlf\r\n")  # fmt: skip
    assert info.value.smtp_code == 550
    assert len(rows(gw)) == 1


async def test_implicit_tls_listener(submission_config: Config, make_gateway) -> None:
    import ssl

    submission_config.smtp.smtps_listen = Listen("127.0.0.1", 0)
    gw = await make_gateway(submission_config)
    with gw.sessions() as session, session.begin():
        accounts.add_user(session, "clerk", "pw-465")
    host, port = gw.listening["smtps"]

    def send_over_tls() -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL(host, port, context=ctx, timeout=30) as client:
            client.ehlo("client.test")
            client.login("clerk", "pw-465")
            client.mail("clerk@example.gov.vn")
            client.rcpt("x@outside.example")
            return client.data(MSG)

    code, _ = await run(send_over_tls)
    assert code == 250
    [row] = rows(gw)
    assert row.listener == "smtps" and row.auth_user == "clerk"
    assert b"with ESMTPSA" in row.trace_headers
    # Plain text on the implicit-TLS port gets no SMTP greeting.
    client = None
    with pytest.raises((ConnectionError, OSError)):
        client = await run(RawSMTP, host, port, 3)
    if client:
        client.close()


PROSE = "Kính gửi các cơ quan, đơn vị trực thuộc tỉnh.\r\n".encode()
DATA_ENDS = {  # bytes after DATA's CRLF (terminator included) -> the message as stored
    "empty": (b".\r\n", b""),
    "one-line": (b"x\r\n.\r\n", b"x\r\n"),
    "one-empty-line": (b"\r\n.\r\n", b"\r\n"),
    "dot-stuffed": (b"..x\r\n.\r\n", b".x\r\n"),
    "short-dot-lines": (b"a.\r\n.\r\n", b"a.\r\n"),
    "prose": (b"Subject: van ban\r\n\r\n" + PROSE * 2500 + b".\r\n",
              b"Subject: van ban\r\n\r\n" + PROSE * 2500),
}  # fmt: skip


@pytest.mark.parametrize("wire, stored", DATA_ENDS.values(), ids=DATA_ENDS.keys())
async def test_data_ends_at_the_first_crlf_dot_crlf(
    config: Config, make_gateway, wire: bytes, stored: bytes
) -> None:
    """Lines ending in a full stop, a message of one line, an empty one: each ends exactly at
    its terminator, and a command sent right behind it is answered in turn."""
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        await run(client.cmd, "EHLO client.test")
        await run(client.cmd, "MAIL FROM:<a@example.gov.vn>")
        await run(client.cmd, "RCPT TO:<b@example.gov.vn>")
        assert (await run(client.cmd, "DATA"))[0] == 354
        await run(client.send, wire + b"NOOP\r\n")
        code, text = await run(client.reply)
        assert code == 250, text
        assert (await run(client.reply))[0] == 250  # the NOOP
    [row] = rows(gw)
    assert (config.storage.data_dir / row.spool_path).read_bytes() == stored


async def test_idle_timeout_counts_from_the_last_command(config: Config, make_gateway) -> None:
    config.smtp.timeout = 1  # seconds (the config file's minimum is 5; tests go lower)
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        loop = asyncio.get_running_loop()
        for _ in range(3):  # commands 0.6 s apart keep a 1 s idle timeout from firing
            await asyncio.sleep(0.6)
            assert (await run(client.cmd, "NOOP"))[0] == 250
        last = loop.time()
        with pytest.raises(ConnectionError):
            await run(client.reply)  # nothing more is sent: the gateway hangs up
        idle = loop.time() - last
        assert 0.9 <= idle < 5


async def test_pipelined_commands_are_answered_in_order(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with connected(*gw.listening["relay"]) as client:
        code, ehlo = await run(client.cmd, "EHLO client.test")
        assert code == 250 and "250-PIPELINING" in ehlo.splitlines()
        # RFC 2920: MAIL, RCPT, RCPT and DATA in one write; the replies come back in order.
        await run(
            client.send,
            b"MAIL FROM:<a@example.gov.vn>\r\nRCPT TO:<b@example.gov.vn>\r\n"
            b"RCPT TO:<c@elsewhere.example>\r\nDATA\r\n",
        )
        replies = [await run(client.reply) for _ in range(4)]
        assert [code for code, _ in replies] == [250, 250, 250, 354]
        # The message, its end and the next commands in one write as well.
        await run(client.send, MSG.replace(b"\r\n.", b"\r\n..") + b".\r\nRSET\r\nQUIT\r\n")
        code, text = await run(client.reply)
        assert code == 250 and "queued as" in text
        assert [(await run(client.reply))[0] for _ in range(2)] == [250, 221]
    [row] = rows(gw)
    assert row.rcpt_to == ["b@example.gov.vn", "c@elsewhere.example"]
    assert row.client_helo == "client.test"
    assert (config.storage.data_dir / row.spool_path).read_bytes() == MSG
