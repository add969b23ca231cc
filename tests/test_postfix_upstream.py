"""A real Postfix (Debian package) as the agency's existing MTA, with mailgw as its content filter.

One private Postfix instance per module (tests/postfix_instance.py) listens on 127.0.0.1 and
hands every message to ``mailgw:[127.0.0.1]:<port>``; each test runs ``mailgw serve`` on that
port (own database) relaying to a DownstreamSMTP that stands in for the mailbox server.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw.db.engine import make_engine
from mailgw.db.models import Message
from tests.conftest import free_port, need, need_binary
from tests.gateway_process import GatewayProcess, write_config
from tests.postfix_instance import PostfixInstance
from tests.smtp_server import DownstreamSMTP, ReceivedMessage

SENDER = "vanthu@example.gov.vn"


def letter(token: str, body: str = "Kính gửi: Lãnh đạo.\r\n") -> bytes:
    return (
        f"From: =?utf-8?Q?V=C4=83n_th=C6=B0?= <{SENDER}>\r\n"
        f"To: lanhdao@example.gov.vn\r\n"
        f"Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di?= {token}\r\n"
        f"Date: Mon, 02 Mar 2026 08:00:00 +0700\r\n"
        f"Message-ID: <{token}@example.gov.vn>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" + body
    ).encode()


BODY = (
    "Kính gửi: Lãnh đạo Sở.\r\n"
    ".Dòng bắt đầu bằng dấu chấm\r\n"
    "..hai dấu chấm\r\n"
    "\r\n" + "Nội dung công văn số 15/CT-TTg, dòng dài. " * 2 + "\r\n"
) * 40


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixInstance]:
    need_binary("postfix")
    need_binary("postqueue")
    need(os.geteuid() == 0, "root (Postfix's master runs as root)")
    instance = PostfixInstance(port=free_port(), filter_port=free_port())
    try:
        instance.start()
        yield instance
    finally:
        stragglers = instance.stop()
        left = instance.pids()
        instance.remove()
    assert not stragglers, f"Postfix processes had to be killed: {stragglers}"
    assert not left, f"Postfix processes left running: {left}"


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


@pytest.fixture
def mailgw(
    tmp_path: Path, database_url: str, downstream: DownstreamSMTP, postfix: PostfixInstance
) -> Iterator[Callable[..., GatewayProcess]]:
    """``mailgw(**smtp_overrides)``: a not yet started `mailgw serve` on Postfix's filter port."""
    procs: list[GatewayProcess] = []

    def make(**smtp: object) -> GatewayProcess:
        config = tmp_path / f"mailgw{len(procs)}.toml"
        write_config(
            config, tmp_path / "data", database_url,
            smtp={"listen": f"127.0.0.1:{postfix.filter_port}", **smtp},
            relay={"host": downstream.host, "port": downstream.port, "starttls": "none"},
        )  # fmt: skip
        proc = GatewayProcess(config, postfix.filter_port, tmp_path / "mailgw.log")
        procs.append(proc)
        return proc

    yield make
    for proc in procs:  # SIGTERM is tested in test_crash_recovery.py; here: no waiting
        proc.stop()


def mailgw_rows(database_url: str, count: int, state: str, timeout: float = 15.0) -> dict:
    """mailgw's message rows, once there are ``count`` and all are in ``state``."""
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                rows = {r.queue_id: r for r in conn.execute(select(Message.__table__)).fetchall()}
            if len(rows) >= count and all(r.state == state for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"mailgw rows: {[(r.queue_id, r.state) for r in rows.values()]}"
                )
            time.sleep(0.05)
    finally:
        engine.dispose()


def by_message_id(messages: list[ReceivedMessage]) -> dict[str, ReceivedMessage]:
    out = {}
    for m in messages:
        parsed = email.message_from_bytes(m.data, policy=email.policy.compat32)
        out[parsed["Message-ID"]] = m
    return out


def header_block(data: bytes) -> list[bytes]:
    """The header fields (unfolded lines grouped) of a message, in order."""
    head = data.split(b"\r\n\r\n", 1)[0]
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields


def mailgw_ids(postfix: PostfixInstance, pf_ids: list[str], timeout: float = 20.0) -> dict:
    """{Postfix queue id: mailgw queue id}, from the `status=sent` lines Postfix logs for its
    deliveries to mailgw (mailgw's 250 reply names its queue id)."""
    rx = re.compile(
        rf"postfix/smtp\[\d+\]: (\w+): to=<[^>]+>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
        rf"{postfix.filter_port},.* status=sent \(250 2\.0\.0 OK: queued as (\w+)\)$",
        re.M,
    )
    deadline = time.monotonic() + timeout
    while True:
        found = {m.group(1): m.group(2) for m in rx.finditer(postfix.log())}
        if all(pf_id in found for pf_id in pf_ids):
            return {pf_id: found[pf_id] for pf_id in pf_ids}
        if time.monotonic() > deadline:
            raise AssertionError(f"no status=sent for {pf_ids}:\n{postfix.log()[-4000:]}")
        time.sleep(0.1)


def test_postfix_hands_every_message_to_mailgw(
    postfix: PostfixInstance, mailgw, downstream: DownstreamSMTP, database_url: str
) -> None:
    gw = mailgw().start()
    single = letter("pf-single", BODY)
    multi = letter("pf-multi").replace(
        b"To: lanhdao@example.gov.vn\r\n", b"To: lanhdao@example.gov.vn, pho@example.gov.vn\r\n"
    )
    pf_single = postfix.send(SENDER, ["lanhdao@example.gov.vn"], single)
    pf_multi = postfix.send(SENDER, ["lanhdao@example.gov.vn", "pho@example.gov.vn"], multi)
    # Postfix's own sendmail(1): LF line ends on input, through postdrop and pickup
    local = letter("pf-sendmail", "Gửi bằng sendmail.\r\n.\r\nvẫn tiếp tục\r\n")
    postfix.sendmail(SENDER, ["vanphong@example.gov.vn"], local.replace(b"\r\n", b"\n"))

    got = by_message_id(downstream.wait_for_messages(3, timeout=20))
    assert set(got) == {"<pf-single@example.gov.vn>", "<pf-multi@example.gov.vn>",
                        "<pf-sendmail@example.gov.vn>"}  # fmt: skip
    postfix.wait_queue_empty()
    ids = mailgw_ids(postfix, [pf_single, pf_multi])

    for mid, original, pf_id in (
        ("<pf-single@example.gov.vn>", single, pf_single),
        ("<pf-multi@example.gov.vn>", multi, pf_multi),
    ):
        m = got[mid]
        # below mailgw's and Postfix's trace headers, the client's bytes arrive unchanged
        assert m.data.endswith(original), m.data[:800]
        added = header_block(m.data[: len(m.data) - len(original)] + b"\r\n")
        names = [f.split(b":", 1)[0].lower() for f in added if f]
        assert names[0] == b"received" and b"by mailgw.test" in added[0]
        assert names.count(b"x-mailgw-queue-id") == 1
        # Postfix's Received comes after mailgw's (it was added first)
        postfix_received = [f for f in added if b"by postfix.test" in f]
        assert len(postfix_received) == 1
        assert added.index(postfix_received[0]) > 0
        # the queue id Postfix logged from mailgw's 250 reply is the one in the header
        assert f"X-Mailgw-Queue-Id: {ids[pf_id]}\r\n".encode() in m.data
        assert m.mail_from == SENDER
    assert got["<pf-single@example.gov.vn>"].rcpts == ["lanhdao@example.gov.vn"]
    assert sorted(got["<pf-multi@example.gov.vn>"].rcpts) == [
        "lanhdao@example.gov.vn",
        "pho@example.gov.vn",
    ]

    m = got["<pf-sendmail@example.gov.vn>"]
    assert m.rcpts == ["vanphong@example.gov.vn"] and m.mail_from == SENDER
    assert m.data.count(b"X-Mailgw-Queue-Id: ") == 1
    body = m.data.split(b"\r\n\r\n", 1)[1]
    assert body == "Gửi bằng sendmail.\r\n.\r\nvẫn tiếp tục\r\n".encode()

    # mailgw recorded each message as coming from Postfix on its relay listener
    rows = mailgw_rows(database_url, 3, "relayed")
    assert len(rows) == 3
    for row in rows.values():
        assert row.listener == "relay"
        assert row.client_addr == "127.0.0.1"
        assert row.client_helo == "postfix.test"
    assert set(ids.values()) < set(rows)
    assert gw.proc is not None and gw.proc.poll() is None


def test_postfix_defers_while_mailgw_is_down_and_delivers_when_back(
    postfix: PostfixInstance, mailgw, downstream: DownstreamSMTP
) -> None:
    port = postfix.filter_port
    tokens = ["pf-down-1", "pf-down-2"]
    pf_ids = [postfix.send(SENDER, ["lanhdao@example.gov.vn"], letter(t, BODY)) for t in tokens]
    for pf_id in pf_ids:
        postfix.wait_log(
            rf"{pf_id}: to=<lanhdao@example.gov.vn>, relay=none, .*status=deferred "
            rf"\(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:{port}: Connection refused\)"
        )
    listing = postfix.queue_listing()
    assert all(pf_id in listing for pf_id in pf_ids), listing
    assert downstream.messages == []

    mailgw().start()
    postfix.flush()
    got = by_message_id(downstream.wait_for_messages(2, timeout=20))
    assert set(got) == {f"<{t}@example.gov.vn>" for t in tokens}
    ids = mailgw_ids(postfix, pf_ids)
    assert len(set(ids.values())) == 2
    postfix.wait_queue_empty()
    assert postfix.queue_empty()
    for t in tokens:
        m = got[f"<{t}@example.gov.vn>"]
        assert m.data.endswith(letter(t, BODY))
        assert m.data.count(b"X-Mailgw-Queue-Id: ") == 1
    time.sleep(1.0)  # nothing is delivered twice
    assert len(downstream.messages) == 2


def test_mailgw_temporary_refusal_is_retried_by_postfix(
    postfix: PostfixInstance, mailgw, downstream: DownstreamSMTP
) -> None:
    """mailgw up but answering 451 (data disk "full"): Postfix keeps the mail and retries."""
    full = mailgw()
    # an impossible free-space floor: every DATA gets 451 4.3.0
    config = full.config_path
    config.write_text(
        config.read_text().replace("[storage]", "[storage]\nmin_free_mb = 1000000000")
    )
    full.start()
    pf_id = postfix.send(SENDER, ["lanhdao@example.gov.vn"], letter("pf-451", BODY))
    postfix.wait_log(
        rf"{pf_id}: to=<lanhdao@example.gov.vn>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
        rf"{postfix.filter_port}, .*status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] "
        r"said: 451 4\.3\.0 Temporary failure storing the message"
    )
    assert pf_id in postfix.queue_listing()
    assert downstream.messages == []
    full.kill()

    mailgw().start()  # same database, normal configuration
    postfix.flush()
    [m] = downstream.wait_for_messages(1, timeout=20)
    assert m.data.endswith(letter("pf-451", BODY))
    postfix.wait_queue_empty()
    log = postfix.log()
    assert re.search(rf"{pf_id}: to=<lanhdao@example.gov.vn>, .*status=sent", log)


def test_message_too_big_for_mailgw_bounces_to_the_sender(
    postfix: PostfixInstance, mailgw, downstream: DownstreamSMTP
) -> None:
    """mailgw advertises SIZE; Postfix honours it and returns oversized mail to its sender
    (5.3.4), and that bounce itself passes through mailgw to the mailbox server."""
    mailgw(max_message_size=20000).start()
    big = letter("pf-big", "Tệp đính kèm quá lớn.\r\n" * 2000)
    pf_id = postfix.send(SENDER, ["lanhdao@example.gov.vn"], big)
    postfix.wait_log(
        rf"{pf_id}: to=<lanhdao@example.gov.vn>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
        rf"{postfix.filter_port}, .*dsn=5\.3\.4, status=bounced \(message size \d+ exceeds "
        r"size limit 20000 of server 127\.0\.0\.1"
    )
    [dsn] = downstream.wait_for_messages(1, timeout=20)
    assert dsn.mail_from == ""
    assert dsn.rcpts == [SENDER]
    assert dsn.data.count(b"X-Mailgw-Queue-Id: ") == 1
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    text = dsn.data.decode("utf-8", "replace")
    assert "lanhdao@example.gov.vn" in text and "5.3.4" in text
    assert "<pf-big@example.gov.vn>" in text  # the returned headers name the message
    postfix.wait_queue_empty()
    time.sleep(0.5)
    assert len(downstream.messages) == 1  # the big message itself never reached the mailbox
