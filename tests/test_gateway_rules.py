"""The rules inside the running gateway: decisions stored and relayed, actions, reloads."""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw.app import Gateway, RulesFileError
from mailgw.config import Config
from mailgw.db.models import BOUNCED, HELD, RELAYED, RuleVersion
from tests.conftest import CORPUS
from tests.smtp_server import DownstreamSMTP
from tests.test_gateway_relay import relay_to, send, wait_state

CUSTOM = """
include = ["default"]

[[rule]]
name = "giu-thu-exe"
when = { any_attachment = [{ field = "name", glob = "*.exe" }] }
then = { bounce = "không nhận tệp .exe" }

[[rule]]
name = "giu-mat"
when = { field = "subject", contains = "tài liệu mật nội bộ" }
then = { hold = "chờ văn thư duyệt", tags = ["cho-duyet"] }

[[rule]]
name = "sao-van-thu"
when = { field = "subject", contains = "giấy mời" }
then = { add_recipients = ["vanthu@example.gov.vn"], add_header = { X-Van-Thu = "đã sao" } }
"""

INVITE = (
    "From: =?utf-8?B?VsSDbiBwaMOybmc=?= <vp@example.gov.vn>\r\n"
    "To: lanhdao@example.gov.vn\r\n"
    "Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di_h=E1=BB=8Dp_giao_ban?=\r\n"
    "Message-ID: <gm-45@example.gov.vn>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\n"
    "Số: 45/GM-UBND\r\nKính mời các đồng chí dự họp giao ban tháng 4.\r\n"
).encode()


def with_subject(subject: str, extra: str = "") -> bytes:
    return (
        f"From: a@example.gov.vn\r\nTo: b@example.gov.vn\r\nSubject: {subject}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n{extra}\r\nNội dung.\r\n"
    ).encode()


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(CUSTOM, encoding="utf-8")
    return path


def qid(reply: str) -> str:
    return reply.rsplit(" ", 1)[-1]


async def test_default_rules_classify_corpus_mail_in_flight(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    need_corpus()
    labels = {r["file"]: r for r in csv.DictReader((CORPUS / "labels.csv").open())}
    gw = await make_gateway(relay_to(config, downstream))
    picked = ["007-hoa-toc-giay-moi-hop-bao-so-5.eml", "012-bao-cao-cntt-thang-02.eml",
              "025-trua-nay-an-gi.eml"]  # fmt: skip
    for name in picked:
        raw = (CORPUS / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        _, reply = await send(gw, raw, ["lanhdao@example.gov.vn"])
        row = await wait_state(gw, qid(reply), (RELAYED,))
        assert row.category == labels[name]["category"], name
        with gw.sessions() as session:
            active = session.scalar(select(RuleVersion).where(RuleVersion.active))
        assert active is not None and row.rules_version == active.sha256
        assert row.decision["category"] == row.category
        assert bool(row.decision["matched_rules"]) == (row.category != "other")
    got = await downstream.async_wait_for_messages(len(picked))
    categories = sorted(
        email.message_from_bytes(m.data, policy=email.policy.default)["X-Mailgw-Category"]
        for m in got
    )
    assert categories == sorted(labels[n]["category"] for n in picked)


def need_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus is not beside the repository")


async def test_rule_actions_hold_bounce_and_copy(
    config: Config, make_gateway, downstream: DownstreamSMTP, rules_file: Path
) -> None:
    config.rules.file = rules_file
    gw = await make_gateway(relay_to(config, downstream))

    _, reply = await send(gw, INVITE, ["lanhdao@example.gov.vn"])
    row = await wait_state(gw, qid(reply), (RELAYED,))
    assert row.category == "meeting_invitation"
    assert row.rcpt_to == ["lanhdao@example.gov.vn", "vanthu@example.gov.vn"]
    [got] = await downstream.async_wait_for_messages(1)
    assert sorted(got.rcpts) == ["lanhdao@example.gov.vn", "vanthu@example.gov.vn"]
    assert "X-Van-Thu: đã sao\r\n".encode() in got.data
    downstream.clear()

    _, reply = await send(gw, with_subject("Gửi tài liệu mật nội bộ"), ["b@example.gov.vn"])
    row = await wait_state(gw, qid(reply), (HELD,))
    assert "giu-mat" in row.hold_reason and "chờ văn thư duyệt" in row.hold_reason
    assert "cho-duyet" in row.tags

    exe = (
        "From: a@example.gov.vn\r\nTo: b@example.gov.vn\r\nSubject: phần mềm\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nxem tệp\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="setup.exe"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
    ).encode()
    _, reply = await send(gw, exe, ["b@example.gov.vn"], mail_from="a@example.gov.vn")
    row = await wait_state(gw, qid(reply), (BOUNCED,))
    assert row.rcpt_status["b@example.gov.vn"]["status"] == "perm"
    [dsn] = await downstream.async_wait_for_messages(1)
    assert dsn.mail_from == "" and dsn.rcpts == ["a@example.gov.vn"]
    report = email.message_from_bytes(dsn.data, policy=email.policy.default)
    texts = [p.get_content() for p in report.walk() if p.get_content_type() == "text/plain"]
    assert any("không nhận tệp .exe" in t for t in texts), texts


async def test_rules_reload_on_change_keeps_last_good(
    config: Config, make_gateway, rules_file: Path
) -> None:
    config.rules.file = rules_file
    config.rules.poll_seconds = 0.1
    gw = await make_gateway(config)
    first = gw.rules.version
    rules_file.write_text(CUSTOM + '\n[[rule]]\nname = "moi"\nthen = { tags = ["moi"] }\n',
                          encoding="utf-8")  # fmt: skip
    await wait_for(lambda: gw.rules.version != first)
    second = gw.rules.version
    _, reply = await send(gw, with_subject("bất kỳ"), ["b@example.gov.vn"])
    row = await wait_state(gw, qid(reply), (HELD,))
    assert "moi" in row.tags and row.rules_version == second

    # A broken file is refused; the last good rules stay active.
    rules_file.write_text(CUSTOM + '\n[[rule]]\nname = "hong"\nthen = { category = "x" }\n')
    await wait_for(lambda: bool(gw.rules.problems))
    assert gw.rules.version == second
    assert any(p.line for p in gw.rules.problems)

    # SIGHUP (request_reload) picks up a fixed file at once.
    rules_file.write_text(CUSTOM, encoding="utf-8")
    gw.rules.request_reload()
    await wait_for(lambda: gw.rules.version == first)
    with gw.sessions() as session:
        versions = {v.sha256: v.active for v in session.scalars(select(RuleVersion))}
    assert versions[first] is True and versions[second] is False


async def test_bad_rules_file_refuses_to_start(config: Config, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nthen = { category = "khong-co" }\n')
    config.rules.file = bad
    gw = Gateway(config)
    with pytest.raises(RulesFileError) as info:
        await gw.start()
    assert any(":3:" in p for p in info.value.problems)
    if gw.engine is not None:
        gw.engine.dispose()


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
