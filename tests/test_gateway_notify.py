"""Notifications asked for by the rules: rendered, spooled with the message, relayed."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw.config import Config
from mailgw.db.models import Message
from tests.smtp_server import DownstreamSMTP
from tests.test_gateway_relay import relay_to, send, wait_state

RULES = """
include = ["default"]

[[rule]]
name = "bien-nhan"
when = { field = "category", in = ["meeting_invitation", "report"] }
then = { notify = { template = "receipt" } }

[[rule]]
name = "bao-van-phong"
when = { field = "category", equals = "meeting_invitation" }
then = { notify = { template = "meeting-notice", to = ["vanphong@example.gov.vn"] } }
"""

INVITATION = (
    "From: =?utf-8?Q?V=C4=83n_th=C6=B0?= <vanthu@ubnd.example.gov.vn>\r\n"
    "To: lanhdao@example.gov.vn\r\n"
    "Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di_h=E1=BB=8Dp_s=E1=BB=91_45/GM-UBND?=\r\n"
    "Message-ID: <gm45@ubnd.example.gov.vn>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Kính mời các đồng chí dự họp giao ban.\r\n"
    "--b\r\nContent-Type: application/pdf\r\n"
    'Content-Disposition: attachment; filename="45-GM-UBND.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--b--\r\n"
).encode()


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


async def test_receipt_and_meeting_notice(
    config: Config, make_gateway, downstream: DownstreamSMTP, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    config.rules.file = rules
    config.notify.agency = "Sở Thông tin và Truyền thông"
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, INVITATION, ["lanhdao@example.gov.vn"],
                          mail_from="vanthu@ubnd.example.gov.vn")  # fmt: skip
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], ("relayed",))
    assert row.category == "meeting_invitation"

    got = await downstream.async_wait_for_messages(3)
    by_rcpt = {m.rcpts[0]: m for m in got}
    receipt = email.message_from_bytes(
        by_rcpt["vanthu@ubnd.example.gov.vn"].data, policy=email.policy.default
    )
    assert by_rcpt["vanthu@ubnd.example.gov.vn"].mail_from == ""
    assert receipt["Auto-Submitted"] == "auto-generated"
    assert receipt["In-Reply-To"] == "<gm45@ubnd.example.gov.vn>"
    body = receipt.get_content()
    assert "Sở Thông tin và Truyền thông xác nhận đã nhận" in body
    assert "Số đến 1/" in body and "45/GM-UBND" in body
    notice = email.message_from_bytes(by_rcpt["vanphong@example.gov.vn"].data,
                                      policy=email.policy.default)  # fmt: skip
    assert notice["Subject"].startswith("[Giấy mời họp]")

    with gw.sessions() as session:
        local = list(session.scalars(select(Message).where(Message.origin == "local")))
    assert len(local) == 2 and all(m.mail_from == "" for m in local)


async def test_missing_template_is_recorded_not_fatal(
    config: Config, make_gateway, downstream: DownstreamSMTP, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "x"\nthen = { notify = { template = "khong-co" } }\n')
    config.rules.file = rules
    gw = await make_gateway(relay_to(config, downstream))
    _, reply = await send(gw, INVITATION, ["lanhdao@example.gov.vn"])
    row = await wait_state(gw, reply.rsplit(" ", 1)[-1], ("relayed",))
    assert "no notification template 'khong-co'" in row.decision["notify_errors"][0]
    assert len(await downstream.async_wait_for_messages(1)) == 1
