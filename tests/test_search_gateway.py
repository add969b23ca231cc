"""End to end: mail through the gateway (SMTP ▶ pipeline ▶ register ▶ index), then found by
GET /messages and GET /documents."""

from __future__ import annotations

from mailgw.config import Config
from tests.test_api_status import api, token
from tests.test_gateway_relay import send, wait_state

MAIL = (
    "From: =?utf-8?Q?V=C4=83n_th=C6=B0?= <vanthu@example.gov.vn>\r\n"
    "To: lanhdao@example.gov.vn\r\n"
    "Subject: =?utf-8?Q?Gi=E1=BA=A5y_m=E1=BB=9Di_h=E1=BB=8Dp_v=E1=BB=81?=\r\n"
    " =?utf-8?Q?_=C4=90=E1=BB=81_=C3=A1n?=\r\n"
    "Message-ID: <search-1@example.gov.vn>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n"
    "\r\n"
    "--b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Kính gửi: Lãnh đạo. Trân trọng kính mời dự họp.\r\n"
    "--b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    'Content-Disposition: attachment; filename="giay-moi.txt"\r\n'
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Số: 45/GM-UBND. Họp bàn về chuyển đổi số của tỉnh.\r\n"
    "--b--\r\n"
).encode()


async def test_mail_through_the_gateway_is_found(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    _, reply = await send(gw, MAIL, ["lanhdao@example.gov.vn"])
    queue_id = reply.rsplit(" ", 1)[-1]
    await wait_state(gw, queue_id, ("held",))
    headers = {"Authorization": f"Bearer {token(gw, 'auditor')}"}
    async with api(gw) as client:
        found = await client.get("/messages", params={"q": "giay moi de an"}, headers=headers)
        assert found.status_code == 200, found.text
        [hit] = found.json()["results"]
        assert hit["queue_id"] == queue_id
        assert hit["subject_highlighted"].startswith("<mark>Giấy</mark> <mark>mời</mark>")
        assert "kính <mark>mời</mark> dự họp" in hit["snippet"]
        docs = await client.get(
            "/documents", params={"q": '"chuyen doi so" filename:giay-moi'}, headers=headers
        )
        assert docs.status_code == 200, docs.text
        [doc] = docs.json()["results"]
        assert doc["filename"] == "giay-moi.txt" and doc["register"] == "default"
        assert "<mark>chuyển</mark> <mark>đổi</mark> <mark>số</mark>" in doc["snippet"]
        symbol = await client.get("/documents", params={"q": "symbol:45/gm-ubnd"}, headers=headers)
        assert [d["id"] for d in symbol.json()["results"]] == [doc["id"]]
        none = await client.get("/messages", params={"q": "giay -moi"}, headers=headers)
        assert none.json()["results"] == []
        bad = await client.get("/messages", params={"q": 'giay "moi'}, headers=headers)
        assert bad.status_code == 400 and bad.json()["position"] == 5
        assert (await client.get("/messages", params={"q": "giay"})).status_code == 401
