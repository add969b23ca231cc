"""POST /notifications on a running gateway: roles, a real send relayed downstream, held
without a relay host, refusals that spool nothing, the audit log; GET /notifications/templates."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mailgw.api.app import create_app
from mailgw.config import Config
from mailgw.db.models import AuditEvent, Message
from mailgw.pipeline import NO_RELAY_HOST
from tests.smtp_server import DownstreamSMTP
from tests.test_api_archive import api, bearer, token
from tests.test_gateway_relay import relay_to, wait_state

AGENCY = "Sở Thông tin và Truyền thông"
MEETING = {
    "message": {
        "queue_id": "19A2B3C4D5E0F1A2B",
        "subject": "Giấy mời họp giao ban tháng 4",
        "from": "Văn thư UBND <vanthu@ubnd.example.gov.vn>",
        "mail_from": "vanthu@ubnd.example.gov.vn",
        "symbol": "45/GM-UBND",
        "calendar": {"start": "08:00 15/04/2026", "end": "11:00 15/04/2026",
                     "location": "Phòng họp số 2, trụ sở UBND tỉnh", "summary": None},
        "urgency": "khan",
    }
}  # fmt: skip
SEND = {"template": "meeting-notice", "to": ["vanphong@example.gov.vn"], "variables": MEETING}


@pytest.fixture
def downstream() -> Iterator[DownstreamSMTP]:
    with DownstreamSMTP() as srv:
        yield srv


def spooled(gw) -> int:
    with gw.sessions() as session:
        return session.scalar(select(func.count()).select_from(Message)) or 0


def audit_rows(gw) -> list[AuditEvent]:
    with gw.sessions() as session:
        query = select(AuditEvent).where(AuditEvent.action == "notification.send")
        return list(session.scalars(query.order_by(AuditEvent.id)))


async def test_roles(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    tokens = {role: token(gw, role) for role in ("admin", "auditor", "service")}
    async with api(gw) as client:
        for path in ("/notifications", "/notifications/templates"):
            method = "POST" if path == "/notifications" else "GET"
            assert (await client.request(method, path, json=SEND)).status_code == 401
            wrong = await client.request(method, path, json=SEND, headers=bearer("mgw_wrong"))
            assert wrong.status_code == 401
        posted = {
            role: (await client.post("/notifications", json=SEND, headers=bearer(t))).status_code
            for role, t in tokens.items()
        }
        listed = {
            role: await client.get("/notifications/templates", headers=bearer(t))
            for role, t in tokens.items()
        }
    assert posted == {"admin": 202, "auditor": 403, "service": 202}
    assert all(r.status_code == 200 for r in listed.values())
    names = {t["name"]: t for t in listed["service"].json()["templates"]}
    assert {"alert", "meeting-notice", "receipt"} <= set(names)
    assert names["receipt"]["variables"] == ["documents", "message"]
    assert spooled(gw) == 2  # the auditor's was refused before anything was spooled


async def test_a_notification_is_relayed_downstream(
    config: Config, make_gateway, downstream: DownstreamSMTP
) -> None:
    config.notify.agency = AGENCY
    config.notify.from_address = "thongbao@example.gov.vn"
    gw = await make_gateway(relay_to(config, downstream))
    body = {**SEND, "to": ["vanphong@example.gov.vn", "lanhdao@example.gov.vn",
                           "VanPhong@example.gov.vn"]}  # fmt: skip
    async with api(gw) as client:
        response = await client.post("/notifications", json=body,
                                     headers=bearer(token(gw, "service")))  # fmt: skip
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["state"] == "queued" and answer["hold_reason"] is None
    assert answer["to"] == ["vanphong@example.gov.vn", "lanhdao@example.gov.vn"]  # no repeats
    row = await wait_state(gw, answer["queue_id"], ("relayed",))
    assert row.origin == "local" and row.mail_from == ""

    (got,) = await downstream.async_wait_for_messages(1)
    assert got.mail_from == "" and got.rcpts == answer["to"]
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg["Subject"] == "[Giấy mời họp] Giấy mời họp giao ban tháng 4"
    assert msg["From"] == "thongbao@example.gov.vn"
    assert msg["To"] == "vanphong@example.gov.vn, lanhdao@example.gov.vn"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_charset() == "utf-8"
    text = msg.get_content()
    assert "Văn phòng nhận được giấy mời họp" in text
    assert "Số, ký hiệu: 45/GM-UBND" in text
    assert "Thời gian: 08:00 15/04/2026 – 11:00 15/04/2026" in text
    assert "Địa điểm: Phòng họp số 2, trụ sở UBND tỉnh" in text
    assert "Độ khẩn: khan" in text


async def test_held_without_a_relay_host(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with api(gw) as client:
        response = await client.post("/notifications", json=SEND,
                                     headers=bearer(token(gw, "service")))  # fmt: skip
    assert response.status_code == 202
    answer = response.json()
    assert answer["state"] == "held" and answer["hold_reason"] == NO_RELAY_HOST
    with gw.sessions() as session:
        row = session.scalar(select(Message).where(Message.queue_id == answer["queue_id"]))
    assert row is not None and row.state == "held" and row.hold_reason == NO_RELAY_HOST
    raw = (config.storage.data_dir / row.spool_path).read_bytes()  # durable before the 202
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"].startswith(
        "[Giấy mời họp]"
    )


def _refusals() -> list[tuple[dict | bytes, int, str]]:
    without_calendar = {"message": {k: v for k, v in MEETING["message"].items()
                                    if k != "calendar"}}  # fmt: skip
    return [
        ({**SEND, "template": "khong-co"}, 400, "no notification template 'khong-co'"),
        ({**SEND, "template": "../receipt"}, 422, "String should match pattern"),
        ({**SEND, "variables": {}}, 400, "'message' is undefined"),
        ({**SEND, "variables": without_calendar}, 400, "calendar"),
        ({**SEND, "variables": {**MEETING, "gateway": {}}}, 422, "`gateway` is filled in"),
        ({**SEND, "to": ["vanphong"]}, 422, "not an e-mail address: 'vanphong'"),
        ({**SEND, "to": ["a@b.vn>\r\nRCPT TO:<x@y.vn"]}, 422, "not an e-mail address"),
        ({**SEND, "to": []}, 422, "at least 1 item"),
        ({**SEND, "to": [f"u{i}@example.gov.vn" for i in range(101)]}, 422, "at most 100"),
        ({**SEND, "extra": 1}, 422, "Extra inputs are not permitted"),
        (b"{not json", 422, "Invalid JSON"),
        (json.dumps({**SEND, "variables": {"x": "a" * 70_000}}).encode(), 413, "larger than"),
    ]


async def test_refusals_spool_nothing_and_are_audited(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    service = token(gw, "service")
    statuses = []
    async with api(gw) as client:
        for body, status, detail in _refusals():
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            response = await client.post("/notifications", headers=bearer(service), **kwargs)
            assert response.status_code == status, (body, response.text)
            assert detail in response.text, response.text
            statuses.append(status)
    assert spooled(gw) == 0
    assert not list(config.storage.data_dir.glob("spool/*/*.eml"))
    rows = audit_rows(gw)
    assert [r.status for r in rows] == statuses
    assert all(r.resource is None and r.token_name == "test-service" for r in rows)
    unknown = json.loads(rows[0].query)
    assert unknown == {"template": "khong-co", "to": ["vanphong@example.gov.vn"],
                       "variables": ["message"]}  # fmt: skip
    assert rows[-2].query is None  # not even JSON: nothing to keep


async def test_a_sent_notification_is_audited(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with api(gw) as client:
        response = await client.post("/notifications", json=SEND,
                                     headers=bearer(token(gw, "admin")))  # fmt: skip
    queue_id = response.json()["queue_id"]
    (row,) = audit_rows(gw)
    assert (row.role, row.status, row.resource) == ("admin", 202, f"message:{queue_id}")
    assert json.loads(row.query) == {"template": "meeting-notice",
                                     "to": ["vanphong@example.gov.vn"],
                                     "variables": ["message"]}  # fmt: skip
    assert "Phòng họp" not in row.query  # the variables' values are not kept


async def test_the_configured_template_folder(config: Config, make_gateway, tmp_path: Path) -> None:
    folder = tmp_path / "notify"
    folder.mkdir()
    (folder / "nhac-viec.txt.j2").write_text(
        "{% block subject %}Nhắc việc: {{ viec.ten }}{% endblock %}\n"
        "{% block body %}{{ gateway.agency }} nhắc: {{ viec.ten }} trước {{ han }}."
        "{% endblock %}\n",
        encoding="utf-8",
    )
    (folder / "hong.txt.j2").write_text("{% block subject %}{{ x {% endblock %}")
    config.notify.templates_dir = folder
    config.notify.agency = AGENCY
    gw = await make_gateway(config)
    headers = bearer(token(gw, "service"))
    body = {"template": "nhac-viec", "to": ["vanphong@example.gov.vn"],
            "variables": {"viec": {"ten": "Báo cáo quý I"}, "han": "30/04/2026"}}  # fmt: skip
    async with api(gw) as client:
        listed = (await client.get("/notifications/templates", headers=headers)).json()
        response = await client.post("/notifications", json=body, headers=headers)
        broken = await client.post("/notifications", headers=headers,
                                   json={**body, "template": "hong"})  # fmt: skip
    names = {t["name"]: t for t in listed["templates"]}
    assert names["nhac-viec"] == {"name": "nhac-viec", "variables": ["han", "viec"],
                                  "problem": None}  # fmt: skip
    assert names["hong"]["variables"] is None and "hong" in names["hong"]["problem"]
    assert "receipt" in names  # the packaged ones too
    assert broken.status_code == 400 and "template 'hong'" in broken.json()["detail"]
    assert response.status_code == 202
    queue_id = response.json()["queue_id"]
    with gw.sessions() as session:
        row = session.scalar(select(Message).where(Message.queue_id == queue_id))
    raw = (config.storage.data_dir / row.spool_path).read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Nhắc việc: Báo cáo quý I"
    assert msg.get_content().rstrip() == f"{AGENCY} nhắc: Báo cáo quý I trước 30/04/2026."
    assert msg["From"] == "mailgw@mailgw.test"


async def test_an_app_without_a_spool_answers_503(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    app = create_app(gw.sessions, config.storage.data_dir)  # as the search benchmark builds it
    transport = httpx.ASGITransport(app=app)
    headers = bearer(token(gw, "service"))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        sent = await client.post("/notifications", json=SEND, headers=headers)
        listed = await client.get("/notifications/templates", headers=headers)
    assert sent.status_code == 503 and "no spool" in sent.json()["detail"]
    assert listed.status_code == 503
    assert spooled(gw) == 0
    assert [r.status for r in audit_rows(gw)] == [503]
