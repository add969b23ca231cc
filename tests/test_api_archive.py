"""The auditors' API on a running gateway: roles, documents, messages, registers, verify, stats,
metrics, audit log and tokens, offline docs, HTTPS."""

from __future__ import annotations

import datetime as dt
import email.policy
import re
import ssl
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from mailgw import accounts
from mailgw.config import Config
from mailgw.db.models import AuditEvent, Message
from mailgw.registry.models import RegisterEntry
from tests.test_gateway_relay import send, wait_state

RULES = '[[rule]]\nname = "all"\nthen = { register = "default", category = "report" }\n'
FILENAME = "Tờ trình số 12 về kế hoạch.bin"
PAYLOAD = b"\x00\x01 binary document \xff\xfe" * 40


def api(gw, scheme: str = "http", **kwargs) -> httpx.AsyncClient:
    host, port = gw.listening["api"]
    return httpx.AsyncClient(base_url=f"{scheme}://{host}:{port}", timeout=15, **kwargs)


def token(gw, role: str) -> str:
    with gw.sessions() as session, session.begin():
        return accounts.create_token(session, role, f"test-{role}")


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def message(n: int, payload: bytes | None = PAYLOAD, filename: str = FILENAME) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Văn thư <vanthu@example.gov.vn>"
    msg["To"] = "lanhdao@example.gov.vn"
    msg["Subject"] = f"Công văn số {n}/UBND-VP"
    msg["Message-ID"] = f"<api-{n}@example.gov.vn>"
    msg.set_content("Kính gửi: Lãnh đạo.\n")
    if payload is not None:
        msg.add_attachment(
            payload, maintype="application", subtype="octet-stream", filename=filename
        )
    return msg.as_bytes()


def rules_file(config: Config, tmp_path: Path, body: str = RULES) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(body, encoding="utf-8")
    config.rules.file = path
    config.rules.poll_seconds = 0.1
    config.registry.units = {"lanhdao@example.gov.vn": "Văn phòng UBND"}
    return path


async def deliver(gw, data: bytes) -> Message:
    _, reply = await send(gw, data, ["lanhdao@example.gov.vn"])
    return await wait_state(gw, reply.rsplit(" ", 1)[-1], ("held",))


@pytest.fixture
async def archive(config: Config, tmp_path: Path, make_gateway):
    """A gateway with three messages: two documents (the third repeats the first's file)."""
    rules_file(config, tmp_path)
    gw = await make_gateway(config)
    sent = [message(1), message(2, payload=b"another file " * 10, filename="b.bin"), message(3)]
    first, second, third = [await deliver(gw, data) for data in sent]
    with gw.sessions() as session:
        entries = list(session.scalars(select(RegisterEntry).order_by(RegisterEntry.seq)))
    assert [e.message_row_id for e in entries] == [first.id, second.id]
    gw.test_data = {"messages": [first, second, third], "entries": entries, "sent": sent}
    return gw


def audit_rows(gw, action: str | None = None) -> list[AuditEvent]:
    with gw.sessions() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            query = query.where(AuditEvent.action == action)
        return list(session.scalars(query))


async def test_every_endpoint_needs_a_token_and_the_right_role(archive) -> None:
    gw = archive
    entry = gw.test_data["entries"][0]
    qid = gw.test_data["messages"][0].queue_id
    year = entry.year
    # (method, path, roles admitted besides admin)
    matrix = [
        ("GET", f"/documents/{entry.id}", {"auditor"}),
        ("GET", f"/documents/{entry.id}/content", {"auditor"}),
        ("GET", f"/messages/{qid}", {"auditor"}),
        ("GET", f"/messages/{qid}/raw", {"auditor"}),
        ("GET", "/registers", {"auditor"}),
        ("GET", f"/registers/default/{year}", {"auditor"}),
        ("GET", "/registers/default/verify", {"auditor"}),
        ("GET", "/stats", {"auditor"}),
        ("GET", "/rules", {"auditor"}),
        ("GET", "/rules/versions", {"auditor"}),
        ("PUT", "/rules", set()),
        ("POST", "/rules/test", set()),
        ("GET", "/audit", set()),
        ("GET", "/tokens", set()),
        ("POST", "/tokens", set()),
        ("DELETE", "/tokens/999999", set()),
        ("GET", "/metrics", {"service", "auditor"}),
        ("GET", "/status", {"service", "auditor"}),
    ]
    tokens = {role: token(gw, role) for role in ("admin", "auditor", "service")}
    async with api(gw) as client:
        for method, path, roles in matrix:
            anonymous = await client.request(method, path)
            assert anonymous.status_code == 401, (method, path)
            wrong = await client.request(method, path, headers=bearer("mgw_wrong"))
            assert wrong.status_code == 401, (method, path)
            for role, t in tokens.items():
                kwargs: dict = {}
                if path == "/rules" and method == "PUT":
                    kwargs["content"] = RULES.encode()
                elif path == "/rules/test":
                    kwargs["content"] = message(9)
                elif path == "/tokens" and method == "POST":
                    kwargs["json"] = {"role": "service", "name": "matrix"}
                response = await client.request(method, path, headers=bearer(t), **kwargs)
                allowed = role == "admin" or role in roles
                if allowed:
                    assert response.status_code in (200, 201, 404), (method, path, role)
                else:
                    assert response.status_code == 403, (method, path, role)


async def test_document_view_and_download_are_audited(archive) -> None:
    gw = archive
    first, _, third = gw.test_data["messages"]
    entry = gw.test_data["entries"][0]
    t = token(gw, "auditor")
    async with api(gw) as client:
        doc = (await client.get(f"/documents/{entry.id}", headers=bearer(t))).json()
        content = await client.get(f"/documents/{entry.id}/content", headers=bearer(t))
        missing = await client.get("/documents/999999", headers=bearer(t))
    assert doc["entry"]["number"] == entry.number and doc["entry"]["filename"] == FILENAME
    assert doc["entry"]["unit"] == "Văn phòng UBND"
    assert doc["message"]["queue_id"] == first.queue_id
    assert doc["message"]["subject"] == "Công văn số 1/UBND-VP"
    assert [a["queue_id"] for a in doc["other_arrivals"]] == [third.queue_id]
    assert [r["revision"] for r in doc["revisions"]] == [0]
    assert doc["signature"] is None and doc["content_url"] == f"/documents/{entry.id}/content"
    assert content.status_code == 200
    assert content.content == PAYLOAD  # the archived bytes, exactly
    assert content.headers["content-type"] == "application/octet-stream"
    disposition = content.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert f"filename*=UTF-8''{quote(FILENAME)}" in disposition
    assert disposition.encode("latin-1")  # the header itself stays ASCII
    assert missing.status_code == 404

    rows = audit_rows(gw)
    views = [(r.action, r.resource, r.status) for r in rows]
    assert views == [
        ("document.view", f"document:{entry.id}", 200),
        ("document.download", f"document:{entry.id}", 200),
        ("document.view", "document:999999", 404),
    ]
    assert all(r.token_name == "test-auditor" and r.role == "auditor" for r in rows)
    assert all(r.client_addr == "127.0.0.1" for r in rows)
    assert all(r.at <= dt.datetime.now(dt.UTC) for r in rows)


async def test_a_text_document_is_served_without_an_invented_charset(archive) -> None:
    """The register keeps the bare content type (text/plain): the download must not claim a
    charset the gateway never read, such as the UTF-8 Starlette adds to text/* answers."""
    gw = archive
    legacy = "Báo cáo quý I".encode("cp1252")  # not UTF-8
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"] = "vanthu@example.gov.vn", "lanhdao@example.gov.vn"
    msg["Subject"], msg["Message-ID"] = "Báo cáo", "<api-text@example.gov.vn>"
    msg.set_content("Kính gửi.\n")
    msg.add_attachment(legacy, maintype="text", subtype="plain", filename="bao-cao.txt")
    sent = await deliver(gw, msg.as_bytes())
    with gw.sessions() as session:
        entry = session.scalar(select(RegisterEntry).where(RegisterEntry.message_row_id == sent.id))
    assert entry is not None and entry.content_type == "text/plain"
    async with api(gw) as client:
        content = await client.get(f"/documents/{entry.id}/content",
                                   headers=bearer(token(gw, "auditor")))  # fmt: skip
    assert content.status_code == 200 and content.content == legacy
    assert content.headers["content-type"] == "text/plain"


@pytest.mark.parametrize(
    "content_type",
    [b"application/pdf\r\n extra", b"application/x-\xe2\x82\xac", b"application/x\x01y"],
    ids=["folded", "8bit", "control"],
)
async def test_a_document_with_a_malformed_content_type_downloads(archive, content_type) -> None:
    """The parser keeps a part's Content-Type as written (a folded line, 8-bit bytes, control
    characters): sent back as a header it is not a legal HTTP header value, and the download
    failed (500). It is then sent as application/octet-stream; the entry keeps the original."""
    gw = archive
    raw = (b"From: vanthu@example.gov.vn\r\nTo: lanhdao@example.gov.vn\r\nSubject: ct\r\n"
           b"Message-ID: <api-ct@example.gov.vn>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: " + content_type +
           b"\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\nthe file\r\n"
           b"--b--\r\n")  # fmt: skip
    sent = await deliver(gw, raw)
    with gw.sessions() as session:
        entry = session.scalar(select(RegisterEntry).where(RegisterEntry.message_row_id == sent.id))
    assert entry is not None and entry.filename == "a.bin"
    async with api(gw) as client:
        content = await client.get(f"/documents/{entry.id}/content",
                                   headers=bearer(token(gw, "auditor")))  # fmt: skip
    assert content.status_code == 200, content.text
    assert content.content == b"the file"
    assert content.headers["content-type"] == "application/octet-stream"


async def test_the_audited_client_address_cannot_be_forged(archive) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default, and the API listens there
    (a local user, an SSH tunnel): the audit log must record the peer, not what it claims."""
    gw = archive
    entry = gw.test_data["entries"][0]
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    async with api(gw) as client:
        response = await client.get(f"/documents/{entry.id}",
                                    headers={**bearer(token(gw, "auditor")), **forged})  # fmt: skip
    assert response.status_code == 200
    assert [r.client_addr for r in audit_rows(gw)] == ["127.0.0.1"]


async def test_message_and_raw_message_are_audited(archive) -> None:
    gw = archive
    first = gw.test_data["messages"][0]
    t = token(gw, "auditor")
    spooled = (gw.config.storage.data_dir / first.spool_path).read_bytes()
    async with api(gw) as client:
        by_queue_id = (await client.get(f"/messages/{first.queue_id}", headers=bearer(t))).json()
        by_id = (await client.get(f"/messages/{first.id}", headers=bearer(t))).json()
        raw = await client.get(f"/messages/{first.queue_id}/raw", headers=bearer(t))
        raw_by_id = await client.get(f"/messages/{first.id}/raw", headers=bearer(t))
        missing = await client.get("/messages/NOPE/raw", headers=bearer(t))
    assert by_queue_id == by_id
    assert by_id["queue_id"] == first.queue_id and by_id["state"] == "held"
    assert by_id["category"] == "report" and by_id["rcpt_to"] == ["lanhdao@example.gov.vn"]
    assert [e["number"] for e in by_id["registered"]] == [gw.test_data["entries"][0].number]
    assert "X-Mailgw-Register: default" in by_id["added_headers"]
    assert raw.status_code == 200 and raw.headers["content-type"] == "message/rfc822"
    assert raw.content == spooled == raw_by_id.content
    assert f'filename="{first.queue_id}.eml"' in raw.headers["content-disposition"]
    assert raw.content == gw.test_data["sent"][0]  # byte for byte as sent
    assert missing.status_code == 404
    actions = [(r.action, r.resource, r.status) for r in audit_rows(gw)]
    resource = f"message:{first.queue_id}"
    assert actions == [
        ("message.view", resource, 200),
        ("message.view", resource, 200),
        ("message.raw", resource, 200),
        ("message.raw", resource, 200),
        ("message.raw", "message:NOPE", 404),
    ]


async def test_registers_pages_and_verify_finds_a_tampered_entry(archive) -> None:
    gw = archive
    entries = gw.test_data["entries"]
    year = entries[0].year
    for i in range(4, 7):
        await deliver(gw, message(i, payload=f"file {i}".encode() * 20, filename=f"{i}.bin"))
    t = token(gw, "auditor")
    async with api(gw) as client:
        registers = (await client.get("/registers", headers=bearer(t))).json()
        page1 = (await client.get(f"/registers/default/{year}?limit=3", headers=bearer(t))).json()
        page2 = (
            await client.get(f"/registers/default/{year}?limit=3&offset=3", headers=bearer(t))
        ).json()
        nothing = await client.get(f"/registers/nope/{year}", headers=bearer(t))
        no_verify = await client.get("/registers/nope/verify", headers=bearer(t))
        ok = (await client.get("/registers/default/verify", headers=bearer(t))).json()
        with gw.sessions() as session, session.begin():
            session.execute(
                text("UPDATE register_entries SET summary = 'sửa lén' WHERE id = :id"),
                {"id": entries[1].id},
            )
        bad = (await client.get("/registers/default/verify", headers=bearer(t))).json()
    assert registers == [
        {"name": "default", "entries": 5, "chain_length": 5,
         "years": [{"year": year, "last_number": 5, "entries": 5}]}
    ]  # fmt: skip
    assert page1["total"] == 5 and page2["total"] == 5
    assert [e["number"] for e in page1["entries"]] == [1, 2, 3]
    assert [e["number"] for e in page2["entries"]] == [4, 5]
    assert nothing.status_code == 404 and no_verify.status_code == 404
    assert ok["ok"] is True and ok["entries"] == 5 and ok["problems"] == []
    assert bad["ok"] is False
    assert bad["first_problem"]["kind"] == "changed"
    assert bad["first_problem"]["seq"] == entries[1].seq
    assert "was changed" in bad["first_problem"]["message"]
    # reads that find nothing are audited too (docs/api.md), with status 404
    assert [(r.action, r.resource, r.status) for r in audit_rows(gw)] == [
        ("register.read", f"register:default/{year}", 200),
        ("register.read", f"register:default/{year}", 200),
        ("register.read", f"register:nope/{year}", 404),
        ("register.verify", "register:nope", 404),
        ("register.verify", "register:default", 200),
        ("register.verify", "register:default", 200),
    ]


async def test_stats_on_known_data(archive) -> None:
    gw = archive
    t = token(gw, "auditor")
    month = gw.test_data["entries"][0].arrival.astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Ho_Chi_Minh")
    )
    key = month.strftime("%Y-%m")
    async with api(gw) as client:
        body = (await client.get("/stats", headers=bearer(t))).json()
        this_year = (await client.get(f"/stats?year={month.year}", headers=bearer(t))).json()
        other = (await client.get(f"/stats?year={month.year - 3}", headers=bearer(t))).json()
    assert body["messages"] == {
        "total": 3,
        "by_category": {"report": 3},
        "by_unit": {"Văn phòng UBND": 3},
        "by_month": {key: 3},
        "by_state": {"held": 3},
    }
    docs = body["documents"]
    assert docs["total"] == 2  # the third message repeats the first file: no new number
    assert docs["by_category"] == {"report": 2}
    assert docs["by_unit"] == {"Văn phòng UBND": 2}
    assert docs["by_month"] == {key: 2} and docs["by_register"] == {"default": 2}
    share = body["electronic_exchange"]
    assert share["documents_electronic"] == 2 and share["documents_total"] == 2
    assert share["share"] == 1.0 and "definition" in share
    assert this_year["documents"] == docs and this_year["year"] == month.year
    assert other["documents"]["total"] == 0 and other["electronic_exchange"]["share"] is None


async def test_metrics_text_parses(archive) -> None:
    gw = archive
    async with api(gw) as client:
        response = await client.get("/metrics", headers=bearer(token(gw, "service")))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    queue = {s.labels["state"]: s.value for s in families["mailgw_queue_messages"].samples}
    assert queue["held"] == 3 and queue["relayed"] == 0
    docs = families["mailgw_register_documents"].samples
    assert [(s.labels["register"], s.value) for s in docs] == [("default", 2)]
    accepted = families["mailgw_messages_accepted"].samples
    assert sum(s.value for s in accepted if s.name.endswith("_total")) >= 3
    stages = {
        s.labels["stage"]
        for s in families["mailgw_stage_seconds"].samples
        if s.name.endswith("_count") and s.value
    }
    assert {"parse", "rules", "register"} <= stages
    assert any(s.value >= 3 for s in families["mailgw_processing_seconds"].samples
               if s.name.endswith("_count"))  # fmt: skip
    for name in ("mailgw_messages_relayed", "mailgw_messages_deferred", "mailgw_messages_bounced"):
        assert name in families


async def test_tokens_over_the_api_and_the_audit_log(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    admin = bearer(token(gw, "admin"))
    async with api(gw) as client:
        created = await client.post("/tokens", headers=admin,
                                    json={"role": "auditor", "name": "kiểm toán"})  # fmt: skip
        assert created.status_code == 201
        new = created.json()
        assert new["token"].startswith("mgw_") and new["role"] == "auditor" and new["active"]
        listed = (await client.get("/tokens", headers=admin)).json()
        assert {"id": new["id"], "name": "kiểm toán"}.items() <= next(
            t for t in listed if t["id"] == new["id"]
        ).items()
        assert all("token" not in t and "token_hash" not in t for t in listed)
        with gw.sessions() as session:  # stored hashed only
            hashes = list(session.scalars(text("SELECT token_hash FROM api_tokens")))
        assert accounts.token_digest(new["token"]) in hashes and new["token"] not in hashes
        assert (await client.get("/stats", headers=bearer(new["token"]))).status_code == 200
        revoked = await client.delete(f"/tokens/{new['id']}", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["active"] is False
        assert (await client.get("/stats", headers=bearer(new["token"]))).status_code == 401
        assert (await client.delete("/tokens/999999", headers=admin)).status_code == 404
        listed = (await client.get("/tokens", headers=admin)).json()
        assert new["id"] not in [t["id"] for t in listed]
        everything = (await client.get("/tokens?include_revoked=true", headers=admin)).json()
        assert new["id"] in [t["id"] for t in everything]
        bad_role = await client.post("/tokens", headers=admin, json={"role": "root"})
        assert bad_role.status_code == 422

        all_events = (await client.get("/audit", headers=admin)).json()
        assert [e["action"] for e in all_events["events"]] == ["token.revoke", "token.create"]
        assert all_events["total"] == 2
        only = (await client.get("/audit?action=token.create", headers=admin)).json()
        assert [e["resource"] for e in only["events"]] == [f"token:{new['id']}"]
        prefix = (await client.get("/audit?resource=token:*", headers=admin)).json()
        assert prefix["total"] == 2
        by_name = (await client.get("/audit?token_name=test-admin&limit=1", headers=admin)).json()
        assert by_name["total"] == 2 and len(by_name["events"]) == 1
        page2 = (await client.get("/audit?limit=1&offset=1", headers=admin)).json()
        assert page2["events"][0]["action"] == "token.create"
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        later = (await client.get("/audit", params={"since": future}, headers=admin)).json()
        assert later["total"] == 0
        earlier = (await client.get("/audit", params={"until": future}, headers=admin)).json()
        assert earlier["total"] == 2


async def test_docs_are_served_offline(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    async with api(gw) as client:
        docs = await client.get("/docs")
        assert docs.status_code == 200
        html = docs.text
        assert not re.search(r"https?://", html), "the docs page must not load anything remote"
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for asset in assets:
            assert asset.startswith("/"), asset
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 100
        assert "url: '/openapi.json'" in html
        schema = (await client.get("/openapi.json")).json()
        assert "/documents/{entry_id}/content" in schema["paths"]
        assert (await client.get("/docs/assets/../app.py")).status_code == 404
        assert (await client.get("/docs/assets/nothing.js")).status_code == 404


async def test_api_serves_https_when_configured(config: Config, tmp_path: Path, make_gateway):
    from tests.smtp_server import make_self_signed_cert

    tls = make_self_signed_cert(tmp_path / "tls")
    config.api.tls_cert, config.api.tls_key = tls.cert, tls.key
    gw = await make_gateway(config)
    context = ssl.create_default_context(cafile=str(tls.cert))
    async with api(gw, "https", verify=context) as client:
        response = await client.get("/health")
        assert response.status_code == 200
        stats = await client.get("/stats", headers=bearer(token(gw, "auditor")))
        assert stats.status_code == 200
    async with api(gw, "http") as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get("/health")


async def test_stats_count_a_message_for_each_receiving_unit(
    config: Config, tmp_path: Path, make_gateway
) -> None:
    """A message to two units counts for each, as its document does; a recipient that
    [registry.units] does not name is its own unit (its address)."""
    rules_file(config, tmp_path)
    config.registry.units["@so.example.gov.vn"] = "Sở Nội vụ"
    gw = await make_gateway(config)
    rcpts = ["lanhdao@example.gov.vn", "a@so.example.gov.vn", "b@so.example.gov.vn",
             "chuyenvien@example.gov.vn"]  # fmt: skip
    _, reply = await send(gw, message(7), rcpts)
    await wait_state(gw, reply.rsplit(" ", 1)[-1], ("held",))
    async with api(gw) as client:
        body = (await client.get("/stats", headers=bearer(token(gw, "auditor")))).json()
    units = {"Văn phòng UBND": 1, "Sở Nội vụ": 1, "chuyenvien@example.gov.vn": 1}
    assert body["messages"]["by_unit"] == units
    assert body["documents"]["by_unit"] == units
