"""mailgw.smtp.relay against a real aiosmtpd downstream server (tests/smtp_server.py)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from mailgw.smtp.relay import (
    DeliveryResult,
    RecipientResult,
    RelayTarget,
    deliver,
    next_retry_delay,
    parse_enhanced_status,
)
from tests.smtp_server import DownstreamSMTP, TLSFiles, make_self_signed_cert

MSG = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby mailgw.test; Mon, 1 Jan 2024 00:00:00 +0700\r\n"
    b"From: =?utf-8?b?VHLhuqduIFbEg24gQQ==?= <a@sender.test>\r\n"
    b"To: b@dest.test, c@dest.test\r\n"
    b"Subject: test\r\n"
    b"Message-ID: <1@sender.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Xin ch\xc3\xa0o \xe2\x80\x94 8-bit body.\r\n"
    b".leading dot must survive\r\n"
    b"..two dots too\r\n"
    b".\r\n"
    b"   trailing spaces   \r\n"
    b"\r\n"
    b"\r\n"
)

USERS = {"relay": "s3cret"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> TLSFiles:
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def downstream():
    with DownstreamSMTP() as srv:
        yield srv


def target(srv: DownstreamSMTP, **kw) -> RelayTarget:
    kw.setdefault("timeout", 5)
    kw.setdefault("helo_name", "mailgw.test")
    return RelayTarget(host=srv.host, port=srv.port, **kw)


async def test_bytes_arrive_identical(downstream):
    res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(downstream))
    assert res.all_sent, res
    assert res.recipients["b@dest.test"].status == "sent"
    assert res.recipients["b@dest.test"].code == 250
    assert res.data_response and "queued as" in res.data_response
    assert not res.line_endings_normalized
    (m,) = downstream.messages
    assert m.data == MSG
    assert m.mail_from == "a@sender.test"
    assert m.rcpts == ["b@dest.test"]
    assert "BODY=8BITMIME" in m.mail_options
    assert m.helo == "mailgw.test"
    assert not m.tls  # opportunistic, server offers no STARTTLS


async def test_seven_bit_message_has_no_body_param(downstream):
    data = b"Subject: x\r\n\r\nplain\r\n"
    res = await deliver(data, "a@sender.test", ["b@dest.test"], target(downstream))
    assert res.all_sent
    (m,) = downstream.messages
    assert m.data == data
    assert not any(o.startswith("BODY") for o in m.mail_options)
    assert any(o.startswith("SIZE=") for o in m.mail_options)


async def test_message_without_final_crlf_gets_only_the_protocol_crlf(downstream):
    data = b"Subject: x\r\n\r\nno final line break"
    res = await deliver(data, "a@sender.test", ["b@dest.test"], target(downstream))
    assert res.all_sent
    assert downstream.messages[0].data == data + b"\r\n"
    assert not res.line_endings_normalized and res.notes


async def test_bare_lf_is_reported_when_normalised(downstream):
    data = b"Subject: x\r\n\r\nbare\nlf\r\n"
    res = await deliver(data, "a@sender.test", ["b@dest.test"], target(downstream))
    assert res.all_sent
    assert res.line_endings_normalized
    assert downstream.messages[0].data == b"Subject: x\r\n\r\nbare\r\nlf\r\n"


async def test_mixed_recipient_results(downstream):
    downstream.reject_rcpt("nouser@dest.test", 550, "5.1.1 <nouser@dest.test>: user unknown")
    downstream.reject_rcpt("full@dest.test", 452, "4.2.2 mailbox full")
    rcpts = ["b@dest.test", "nouser@dest.test", "full@dest.test", "c@dest.test"]
    res = await deliver(MSG, "a@sender.test", rcpts, target(downstream))
    assert list(res.recipients) == rcpts
    assert res.sent == ["b@dest.test", "c@dest.test"]
    assert res.perm_failed == ["nouser@dest.test"]
    assert res.temp_failed == ["full@dest.test"]
    assert not res.all_sent
    perm = res.recipients["nouser@dest.test"]
    assert (perm.status, perm.code, perm.enhanced_status) == ("perm", 550, "5.1.1")
    assert "user unknown" in perm.message
    assert perm.remote_mta == downstream.host
    temp = res.recipients["full@dest.test"]
    assert (temp.status, temp.code, temp.enhanced_status) == ("temp", 452, "4.2.2")
    (m,) = downstream.messages  # one transaction for the accepted ones
    assert m.rcpts == ["b@dest.test", "c@dest.test"]
    assert m.data == MSG


async def test_all_recipients_rejected_sends_no_data(downstream):
    downstream.reject_rcpt("x@dest.test", 550, "5.1.1 no")
    downstream.reject_rcpt("y@dest.test", 450, "4.7.1 greylisted")
    res = await deliver(MSG, "a@sender.test", ["x@dest.test", "y@dest.test"], target(downstream))
    assert res.perm_failed == ["x@dest.test"] and res.temp_failed == ["y@dest.test"]
    assert downstream.messages == []


@pytest.mark.parametrize(("code", "status"), [(451, "temp"), (554, "perm")])
async def test_data_failure_applies_to_all_accepted(downstream, code, status):
    downstream.reject_rcpt("nouser@dest.test", 550, "5.1.1 unknown")
    downstream.fail_data(code, f"{code // 100}.6.0 content refused")
    rcpts = ["b@dest.test", "c@dest.test", "nouser@dest.test"]
    res = await deliver(MSG, "a@sender.test", rcpts, target(downstream))
    for r in ("b@dest.test", "c@dest.test"):
        assert res.recipients[r].status == status
        assert res.recipients[r].code == code
        assert res.recipients[r].enhanced_status == f"{code // 100}.6.0"
    assert res.recipients["nouser@dest.test"].status == "perm"
    assert downstream.messages == []


@pytest.mark.parametrize(("code", "status"), [(451, "temp"), (553, "perm")])
async def test_mail_from_refused(downstream, code, status):
    downstream.reject_mail_from(code, "sender refused")
    res = await deliver(MSG, "a@sender.test", ["b@dest.test", "c@dest.test"], target(downstream))
    assert res.temp_failed if status == "temp" else res.perm_failed
    assert {r.status for r in res.recipients.values()} == {status}
    assert {r.code for r in res.recipients.values()} == {code}


async def test_server_down_is_temp_and_recovers(downstream):
    t = target(downstream)
    downstream.down()
    res = await deliver(MSG, "a@sender.test", ["b@dest.test", "c@dest.test"], t)
    assert res.temp_failed == ["b@dest.test", "c@dest.test"]
    r = res.recipients["b@dest.test"]
    assert r.code is None and r.remote_mta is None
    assert str(downstream.port) in r.message
    downstream.up()
    res = await deliver(MSG, "a@sender.test", ["b@dest.test"], t)
    assert res.all_sent
    assert downstream.messages[0].data == MSG


async def test_timeout_is_temp(downstream):
    downstream.delay_data(3)
    res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(downstream, timeout=0.5))
    assert res.temp_failed == ["b@dest.test"]
    assert res.recipients["b@dest.test"].code is None


async def test_null_sender(downstream):
    for sender in ("", "<>"):
        res = await deliver(MSG, sender, ["b@dest.test"], target(downstream))
        assert res.all_sent
    assert [m.mail_from for m in downstream.messages] == ["", ""]


async def test_duplicate_recipients_sent_once(downstream):
    res = await deliver(MSG, "a@sender.test", ["b@dest.test", "b@dest.test"], target(downstream))
    assert list(res.recipients) == ["b@dest.test"]
    assert downstream.messages[0].rcpts == ["b@dest.test"]


async def test_smtputf8_recipient(downstream):
    rcpt = "nguyễn.văn.a@cơquan.việtnam"
    res = await deliver(MSG, "a@sender.test", [rcpt, "b@dest.test"], target(downstream))
    assert res.all_sent, res
    (m,) = downstream.messages
    assert m.smtputf8
    assert m.rcpts == [rcpt, "b@dest.test"]
    assert m.data == MSG


async def test_smtputf8_ascii_only_does_not_use_it(downstream):
    await deliver(MSG, "a@sender.test", ["b@dest.test"], target(downstream))
    assert not downstream.messages[0].smtputf8


async def test_smtputf8_not_offered_is_perm_for_affected_only():
    with DownstreamSMTP(smtputf8=False) as srv:
        rcpt = "người.nhận@cơquan.việtnam"
        res = await deliver(MSG, "a@sender.test", [rcpt, "b@dest.test"], target(srv))
        assert res.perm_failed == [rcpt]
        assert res.recipients[rcpt].enhanced_status == "5.6.7"
        assert res.sent == ["b@dest.test"]
        assert srv.messages[0].rcpts == ["b@dest.test"]
        # non-ASCII sender: nobody can be reached
        res = await deliver(MSG, "người.gửi@cơquan.việtnam", ["b@dest.test"], target(srv))
        assert res.perm_failed == ["b@dest.test"]
        assert len(srv.messages) == 1


async def test_starttls_opportunistic_uses_tls_when_offered(tls_files):
    with DownstreamSMTP(tls=tls_files) as srv:
        res = await deliver(
            MSG,
            "a@sender.test",
            ["b@dest.test"],
            target(srv, ca_file=str(tls_files.cert)),  # verify against the test CA
        )
        assert res.all_sent, res
        assert res.tls
        assert srv.messages[0].tls
        assert srv.messages[0].data == MSG


async def test_starttls_opportunistic_without_offer_is_plain(downstream):
    res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(downstream))
    assert res.all_sent and not res.tls


async def test_starttls_required_not_offered_is_temp(downstream):
    res = await deliver(
        MSG, "a@sender.test", ["b@dest.test"], target(downstream, starttls="required")
    )
    assert res.temp_failed == ["b@dest.test"]
    assert "STARTTLS" in res.recipients["b@dest.test"].message
    assert downstream.messages == []


async def test_starttls_required_offered(tls_files):
    with DownstreamSMTP(tls=tls_files, require_starttls=True) as srv:
        t = target(srv, starttls="required", ca_file=str(tls_files.cert))
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], t)
        assert res.all_sent and res.tls
        assert srv.messages[0].tls


async def test_starttls_bad_certificate_is_temp(tls_files):
    with DownstreamSMTP(tls=tls_files) as srv:
        # verify_tls on, but the self-signed cert is not trusted → TLS failure → temp
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv))
        assert res.temp_failed == ["b@dest.test"]
        assert srv.messages == []
        # same with verification off: delivered over TLS
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv, verify_tls=False))
        assert res.all_sent and res.tls


async def test_starttls_none_never_upgrades(tls_files):
    with DownstreamSMTP(tls=tls_files) as srv:
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv, starttls="none"))
        assert res.all_sent and not res.tls
        assert not srv.messages[0].tls


async def test_implicit_tls(tls_files):
    with DownstreamSMTP(tls=tls_files, implicit_tls=True) as srv:
        t = target(srv, implicit_tls=True, ca_file=str(tls_files.cert))
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], t)
        assert res.all_sent and res.tls
        assert srv.messages[0].tls and srv.messages[0].data == MSG


async def test_auth_after_starttls(tls_files):
    with DownstreamSMTP(tls=tls_files, users=USERS, require_auth=True) as srv:
        t = target(srv, ca_file=str(tls_files.cert), username="relay", password="s3cret")
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], t)
        assert res.all_sent, res
        assert srv.messages[0].auth_user == "relay"
        # wrong password → temp (configuration problem, not the recipient's)
        bad = target(srv, ca_file=str(tls_files.cert), username="relay", password="nope")
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], bad)
        assert res.temp_failed == ["b@dest.test"]
        assert res.recipients["b@dest.test"].code == 535
        assert res.recipients["b@dest.test"].enhanced_status == "5.7.8"
        assert res.recipients["b@dest.test"].message.startswith("AUTH failed: 535")
        # no credentials on a server that requires AUTH: 530 at MAIL is our configuration
        # problem, not the recipient's → temp (retried; a DSN only on expiry)
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv, verify_tls=False))
        assert res.recipients["b@dest.test"].code == 530
        assert res.recipients["b@dest.test"].status == "temp"
        assert len(srv.messages) == 1


async def test_auth_plaintext_server():
    with DownstreamSMTP(users=USERS, require_auth=True) as srv:
        t = target(srv, username="relay", password="s3cret")
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], t)
        assert res.all_sent, res
        assert srv.messages[0].auth_user == "relay" and not srv.messages[0].tls


async def test_in_loop_mode_server():
    async with DownstreamSMTP() as srv:
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv))
        assert res.all_sent
        msgs = await srv.async_wait_for_messages(1, timeout=2)
        assert msgs[0].data == MSG
        await srv.adown()
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv))
        assert res.temp_failed == ["b@dest.test"]
        await srv.aup()
        res = await deliver(MSG, "a@sender.test", ["b@dest.test"], target(srv))
        assert res.all_sent


def test_thread_mode_from_sync_code():
    import asyncio

    with DownstreamSMTP() as srv:
        port = srv.port
        res = asyncio.run(deliver(MSG, "", ["b@dest.test"], target(srv)))
        assert res.all_sent
        assert srv.wait_for_messages(1, timeout=2)[0].mail_from == ""
        srv.down()
        srv.up()
        assert srv.port == port
        asyncio.run(deliver(MSG, "", ["b@dest.test"], target(srv)))
        assert len(srv.wait_for_messages(2, timeout=2)) == 2


async def test_caller_errors():
    t = RelayTarget(host="127.0.0.1", port=9)
    with pytest.raises(ValueError):
        await deliver(MSG, "a@sender.test", [], t)
    with pytest.raises(ValueError):
        await deliver(MSG, "a@sender.test", ["x@y\r\nRCPT TO:<evil@z>"], t)
    with pytest.raises(ValueError):
        await deliver(MSG, "a b@sender.test", ["x@y"], t)
    with pytest.raises(ValueError):
        RelayTarget(host="h", starttls="maybe")  # type: ignore[arg-type]


def test_result_helpers():
    r = DeliveryResult(
        recipients={
            "a": RecipientResult("sent", 250, "ok"),
            "b": RecipientResult("temp", 451, "4.3.0 try later"),
            "c": RecipientResult("perm", 550, "5.1.1 unknown"),
        }
    )
    assert (r.sent, r.temp_failed, r.perm_failed, r.all_sent) == (["a"], ["b"], ["c"], False)
    assert DeliveryResult(recipients={"a": RecipientResult("sent", 250, "")}).all_sent
    assert not DeliveryResult(recipients={}).all_sent
    assert r.recipients["c"].diagnostic == "550 5.1.1 unknown"
    assert parse_enhanced_status("5.1.1 <x>: unknown") == "5.1.1"
    assert parse_enhanced_status("4.7.1") == "4.7.1"
    assert parse_enhanced_status("Requested action not taken") is None
    assert parse_enhanced_status("2.0.0 Ok: queued") == "2.0.0"
    assert parse_enhanced_status("550 5.1.1 x") is None  # the text, not the whole reply line


def test_backoff_bounds():
    rng = random.Random(1234)
    for attempt in range(1, 40):
        base = min(3600.0, 60.0 * 2 ** (attempt - 1))
        for _ in range(50):
            d = next_retry_delay(attempt, 60.0, 3600.0, rng=rng)
            assert 0.75 * base <= d <= base <= 3600.0
    # grows, then saturates at the maximum
    assert next_retry_delay(1, 60, 3600, rng=random.Random(0)) <= 60
    assert next_retry_delay(3, 60, 3600, rng=random.Random(0)) > 60 * 2 * 0.75
    assert 2700 <= next_retry_delay(10_000, 60, 3600) <= 3600  # no overflow
    assert next_retry_delay(0, 10, 100) <= 10  # attempt 0 treated as the first
    # jitter actually varies
    assert len({next_retry_delay(5, 60, 3600) for _ in range(20)}) > 1
    with pytest.raises(ValueError):
        next_retry_delay(1, -1, 10)


async def test_unreadable_ca_file_is_temp(downstream, tmp_path):
    t = target(downstream, ca_file=str(tmp_path / "missing.pem"))
    res = await deliver(MSG, "a@sender.test", ["b@dest.test"], t)
    assert res.temp_failed == ["b@dest.test"]
    assert "TLS setup failed" in res.recipients["b@dest.test"].message


def test_server_usable_from_a_subprocess(downstream):
    """Thread mode serves other processes too (e.g. a gateway started with subprocess)."""
    code = (
        "import asyncio, sys\n"
        "from mailgw.smtp.relay import RelayTarget, deliver\n"
        "r = asyncio.run(deliver(sys.stdin.buffer.read(), 'a@sender.test', ['b@dest.test'],\n"
        f"    RelayTarget('127.0.0.1', {downstream.port}, timeout=5)))\n"
        "sys.exit(0 if r.all_sent else 1)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], input=MSG, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert downstream.wait_for_messages(1, timeout=5)[0].data == MSG
