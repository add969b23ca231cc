"""Search API (GET /documents, GET /messages) over messages run through the real stages
(parse ▶ register ▶ index) without SMTP; on SQLite or PostgreSQL (MAILGW_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailgw import accounts
from mailgw.api.app import create_app
from mailgw.config import RegistryConfig
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.migrate import upgrade
from mailgw.db.models import AuditEvent, Message
from mailgw.mime.parse import parse_message
from mailgw.pipeline import Job
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.stage import register_stage
from mailgw.search import service, sql
from mailgw.search.models import SearchEntry
from mailgw.search.stage import index_stage

T0 = dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)  # 09:00 in Hà Nội


def eml(
    subject: str,
    body: str,
    *,
    sender: str = "Văn thư <vanthu@tinh.gov.vn>",
    to: str = "lanhdao@example.gov.vn",
    files: tuple[tuple[str, str], ...] = (),
) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@tinh.gov.vn>"
    msg.set_content(body)
    for name, content in files:
        msg.add_attachment(content.encode(), maintype="text", subtype="plain", filename=name)
    return msg.as_bytes()


class Archive:
    """A migrated database and the stages that fill it."""

    def __init__(self, url: str, tmp: Path):
        self.engine = make_engine(url)
        if url.startswith("sqlite"):
            upgrade(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.register = register_stage(
            self.sessions, FileBlobStore(tmp / "blobs"), RegistryConfig()
        )
        self.index = index_stage(self.sessions)
        self.app = create_app(self.sessions, tmp)

    def add(self, raw: bytes, *, at: dt.datetime = T0, category: str | None = "report",
            tags: tuple[str, ...] = (), registers: tuple[str, ...] = ("default",),
            signature: dict | None = None) -> int:  # fmt: skip
        with self.sessions() as session, session.begin():
            row = Message(queue_id=uuid.uuid4().hex[:16], spool_path="x", sha256="0" * 64,
                          received_at=at, rcpt_to=["lanhdao@example.gov.vn"], state="held",
                          mail_from="vanthu@tinh.gov.vn")  # fmt: skip
            session.add(row)
            session.flush()
            row_id = row.id
        parsed = parse_message(raw)
        with self.sessions() as session, session.begin():
            m = session.get(Message, row_id)
            m.subject, m.category, m.tags = parsed.subject, category, list(tags)
        job = Job(id=row_id, queue_id="q", mail_from="vanthu@tinh.gov.vn",
                  rcpt_to=["lanhdao@example.gov.vn"], client_addr=None, auth_user=None,
                  listener=None, received_at=at, raw=raw, parsed=parsed, category=category,
                  tags=list(tags), registers=list(registers), signature=signature)  # fmt: skip
        self.register(job)
        self.index(job)
        return row_id

    def token(self, role: str = "auditor") -> dict[str, str]:
        with self.sessions() as session, session.begin():
            return {"Authorization": f"Bearer {accounts.create_token(session, role, 't-' + role)}"}

    def raw_get(self, path: str, params: dict, headers: dict) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.get(path, params=params, headers=headers)

        return asyncio.run(go())

    def get(self, path: str, q: str, role: str = "auditor", **params) -> httpx.Response:
        return self.raw_get(path, {"q": q, **params}, self.token(role))

    def find(self, path: str, q: str, **params) -> list[dict]:
        response = self.get(path, q, **params)
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def subjects(self, path: str, q: str, **params) -> list[str]:
        return [r["subject"] for r in self.find(path, q, **params)]


@pytest.fixture
def archive(database_url: str, tmp_path: Path):
    a = Archive(database_url, tmp_path)
    yield a
    a.engine.dispose()


@pytest.fixture
def corpus(archive: Archive) -> Archive:
    a = archive
    a.add(eml("Giấy mời họp giao ban", "Kính mời Lãnh đạo dự họp giao ban tuần.",
              files=(("giay-moi.txt", "Số: 45/GM-UBND. Giấy mời họp về Đề án chuyển đổi số"),)),
          category="meeting_invitation", tags=("khẩn",), at=T0)  # fmt: skip
    a.add(eml("Báo cáo tình hình kinh tế", "Báo cáo quý I về đầu tư công.",
              sender="Sở Tài chính <stc@tinh.gov.vn>",
              files=(("bao-cao-q1.txt", "Số: 12/BC-STC. Báo cáo tình hình thực hiện"),)),
          category="report", at=T0 + dt.timedelta(days=20))  # fmt: skip
    a.add(eml("ĐỀ ÁN xây dựng nông thôn mới", "Dự thảo Đề án xin ý kiến góp ý.",
              files=(("de-an.txt", "Số: 7/QĐ-UBND. Quyết định phê duyệt Đề án nông thôn mới"),)),
          category="working_document", tags=("dự thảo",), at=T0 + dt.timedelta(days=40),
          signature={"valid": True})  # fmt: skip
    return a


def test_diacritic_insensitive_words(corpus: Archive) -> None:
    assert corpus.subjects("/documents", "giay moi") == ["Giấy mời họp giao ban"]
    assert corpus.subjects("/messages", "GIẤY MỜI") == ["Giấy mời họp giao ban"]
    assert sorted(corpus.subjects("/messages", "de an")) == [
        "Giấy mời họp giao ban", "ĐỀ ÁN xây dựng nông thôn mới"]  # fmt: skip
    assert corpus.subjects("/messages", "Đ") == []
    assert corpus.subjects("/messages", "đầu tư") == ["Báo cáo tình hình kinh tế"]


def test_phrases_and_negation(corpus: Archive) -> None:
    assert corpus.subjects("/messages", '"nong thon moi"') == ["ĐỀ ÁN xây dựng nông thôn mới"]
    assert corpus.subjects("/messages", '"moi nong thon"') == []
    assert corpus.subjects("/messages", "de an -giay") == ["ĐỀ ÁN xây dựng nông thôn mới"]
    assert corpus.subjects("/messages", 'de an -"giao ban"') == ["ĐỀ ÁN xây dựng nông thôn mới"]
    assert corpus.subjects("/documents", "de an -category:working_document") == [
        "Giấy mời họp giao ban"]  # fmt: skip
    assert corpus.subjects("/messages", "bao cao -from:stc") == []


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('from:"van thu"', ["ĐỀ ÁN xây dựng nông thôn mới", "Giấy mời họp giao ban"]),
        ("from:stc@tinh.gov.vn", ["Báo cáo tình hình kinh tế"]),
        ('from:"so tai chinh"', ["Báo cáo tình hình kinh tế"]),
        ("to:lanhdao@example.gov.vn category:report", ["Báo cáo tình hình kinh tế"]),
        ("subject:giao", ["Giấy mời họp giao ban"]),
        ("subject:de", ["ĐỀ ÁN xây dựng nông thôn mới"]),
        ("category:meeting_invitation", ["Giấy mời họp giao ban"]),
        ("tag:khan", ["Giấy mời họp giao ban"]),
        ('tag:"dự thảo"', ["ĐỀ ÁN xây dựng nông thôn mới"]),
        ("symbol:45/GM-UBND", ["Giấy mời họp giao ban"]),
        ("symbol:7/qđ-ubnd", ["ĐỀ ÁN xây dựng nông thôn mới"]),
        ("symbol:07/QĐ-UBND", ["ĐỀ ÁN xây dựng nông thôn mới"]),
        ("type:QĐ", ["ĐỀ ÁN xây dựng nông thôn mới"]),
        ("type:bc", ["Báo cáo tình hình kinh tế"]),
        ("register:default year:2026 number:2", ["Báo cáo tình hình kinh tế"]),
        ("signed:yes", ["ĐỀ ÁN xây dựng nông thôn mới"]),
        ("signed:no category:report", ["Báo cáo tình hình kinh tế"]),
        ("filename:bao-cao-q1.txt", ["Báo cáo tình hình kinh tế"]),
        ("urgency:thuong category:report", ["Báo cáo tình hình kinh tế"]),
        ("after:2026-03-30", ["Báo cáo tình hình kinh tế", "ĐỀ ÁN xây dựng nông thôn mới"][::-1]),
        ("before:2026-03-30 after:2026-03-10", ["Giấy mời họp giao ban"]),
        ("after:2026-03-11 before:2026-04-19", ["Báo cáo tình hình kinh tế"]),
        ("year:2025", []),
    ],
)
def test_filters(corpus: Archive, q: str, expected: list[str]) -> None:
    assert corpus.subjects("/documents", q, sort="date") == expected


def test_sha256_and_issuer(corpus: Archive) -> None:
    [doc] = corpus.find("/documents", "symbol:12/BC-STC")
    assert corpus.subjects("/documents", f"sha256:{doc['sha256']}") == [doc["subject"]]
    assert corpus.subjects("/messages", f"sha256:{doc['sha256'].upper()}") == [doc["subject"]]
    if doc["issuer"]:
        word = doc["issuer"].split()[-1]
        assert doc["subject"] in corpus.subjects("/documents", f"issuer:{word}")


def test_snippets_mark_the_original_text(corpus: Archive) -> None:
    [hit] = corpus.find("/documents", "de an chuyen doi")
    assert "<mark>Đề</mark> <mark>án</mark> <mark>chuyển</mark> <mark>đổi</mark>" in hit["snippet"]
    [msg] = corpus.find("/messages", "giay moi")
    assert msg["subject_highlighted"] == "<mark>Giấy</mark> <mark>mời</mark> họp giao ban"


def test_relevance_and_date_sort(archive: Archive) -> None:
    a = archive
    a.add(eml("Thông báo chung", "Nội dung có nhắc kế hoạch một lần."), at=T0)
    a.add(eml("Kế hoạch năm 2026", "Kế hoạch, kế hoạch và kế hoạch."), at=T0 - dt.timedelta(days=1))
    assert a.subjects("/messages", "ke hoach", sort="relevance") == [
        "Kế hoạch năm 2026", "Thông báo chung"]  # fmt: skip
    assert a.subjects("/messages", "ke hoach") == ["Thông báo chung", "Kế hoạch năm 2026"]
    assert a.subjects("/messages", "ke hoach", sort="date") == [
        "Thông báo chung", "Kế hoạch năm 2026"]  # fmt: skip
    assert a.subjects("/messages", "ke hoach", sort="date", order="asc") == [
        "Kế hoạch năm 2026", "Thông báo chung"]  # fmt: skip


@pytest.mark.parametrize("sort", ["date", "relevance", "date-many"])
def test_cursor_pages_without_gaps_or_duplicates(archive: Archive, sort: str, monkeypatch) -> None:
    if sort == "date-many":  # SQLite walks the arrival index when there are many matches
        monkeypatch.setattr("mailgw.search.sql.MANY_MATCHES", 2)
        sort = "date"
    for i in range(23):
        # several rows share an arrival time and a score: ties broken by id
        words = " ".join(["công văn"] * (1 + i % 3))
        archive.add(eml(f"Công văn số {i}", words), at=T0 + dt.timedelta(hours=i // 4),
                    registers=())  # fmt: skip
    seen, cursor = [], None
    while True:
        params = {"sort": sort, "limit": 5, **({"cursor": cursor} if cursor else {})}
        body = archive.get("/messages", "cong van", **params).json()
        seen += [r["id"] for r in body["results"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 23 and len(set(seen)) == 23
    other = archive.get("/messages", "van", cursor=body_cursor(archive, sort))
    assert other.status_code == 400 and other.json()["param"] == "cursor"


@pytest.mark.parametrize(
    ("sort", "key", "last_id"),
    [
        ("date", "2026-03-10T02:00:00+00:00", 2**63),  # beyond BIGINT
        ("date", "2026-03-10T02:00:00+00:00", -(2**70)),
        ("date", "2026-03-10T02:00:00+00:00", 0),
        ("date", "9999-12-31T23:59:59-12:00", 1),  # not a UTC time
        ("date", "0001-01-01T00:00:00+14:00", 1),
        ("relevance", 1.5, 2**64),
        ("relevance", 10**400, 1),  # no float
        ("relevance", float("nan"), 1),
        ("relevance", float("inf"), 1),
    ],
)
def test_forged_cursors_answer_400(corpus: Archive, sort: str, key, last_id: int) -> None:
    """The cursor is only base64 JSON: one made by hand with the right fingerprint must still
    be checked, never reach the database as an out-of-range value (a 500)."""
    fp = service._fingerprint("document", "de an", sort, "desc")
    cursor = service.encode_cursor(fp, key, last_id)
    response = corpus.get("/documents", "de an", sort=sort, cursor=cursor)
    assert response.status_code == 400, response.text
    assert response.json()["param"] == "cursor"


def body_cursor(archive: Archive, sort: str) -> str:
    return archive.get("/messages", "cong van", sort=sort, limit=1).json()["next_cursor"]


@pytest.mark.parametrize(
    ("q", "position", "words"),
    [
        ('giấy "mời', 5, "unbalanced quote"),
        ("foo:bar", 0, "unknown field"),
        ("after:2026-02-30", 6, "not a real date"),
        ("before:yesterday", 7, "YYYY-MM-DD"),
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("a\x01b", 1, "control"),
        ("x" * 1001, 1000, "at most 1000"),
        (" ".join(["a"] * 40), 64, "too many terms"),
        ("-giay", 0, "not negated"),
        ("urgency:gap", 8, "urgency"),
        ("sha256:abc", 7, "64 hexadecimal"),
        ("after:0001-01-01", 6, "plausible date"),  # its start in UTC is before year 1
        ("giay before:1899-12-31", 12, "plausible date"),
    ],
)
def test_malformed_queries_answer_400(archive: Archive, q: str, position: int, words: str) -> None:
    response = archive.get("/documents", q)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["position"] == position and words in body["message"], body


def test_sql_is_just_words(corpus: Archive) -> None:
    for q in ["'; DROP TABLE search_index; --", 'x" OR 1=1 --', "NEAR(a b) AND * OR -"]:
        response = corpus.get("/documents", q)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert response.json()["results"] == []
    assert corpus.subjects("/documents", "giay moi")


def test_bad_parameters_answer_400(corpus: Archive) -> None:
    for params in ({"sort": "size"}, {"order": "up"}, {"limit": "0"}, {"limit": "x"},
                   {"limit": "101"}, {"cursor": "!!"}):  # fmt: skip
        response = corpus.get("/documents", "giay", **params)
        assert response.status_code == 400 and response.json()["param"] in params
    response = corpus.get("/messages", "register:default")
    assert response.status_code == 400 and "documents" in response.json()["message"]


def test_roles_and_audit(corpus: Archive) -> None:
    assert corpus.raw_get("/documents", {"q": "x"}, {}).status_code == 401
    bad = corpus.raw_get("/documents", {"q": "x"}, {"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert corpus.raw_get("/messages", {"q": "x"}, corpus.token("service")).status_code == 403
    assert corpus.get("/documents", "giay", role="admin").status_code == 200
    assert corpus.get("/messages", 'giay "moi', role="auditor").status_code == 400
    with corpus.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.query, e.status, e.role) for e in events] == [
        ("search.documents", "giay", 200, "admin"),
        ("search.messages", 'giay "moi', 400, "auditor"),
    ]


def test_reindexing_updates_and_never_duplicates(archive: Archive) -> None:
    row_id = archive.add(eml("Giấy mời", "Nội dung"))
    job_raw = eml("Tóm tắt giấy mời", "Nội dung")
    parsed = parse_message(job_raw)
    job = Job(id=row_id, queue_id="q", mail_from="a@b", rcpt_to=[], client_addr=None,
              auth_user=None, listener=None, received_at=T0, raw=job_raw, parsed=parsed,
              category="report", tags=["mới"])  # fmt: skip
    archive.index(job)
    archive.index(job)
    with archive.sessions() as session:
        rows = session.scalars(select(SearchEntry).where(SearchEntry.kind == "message")).all()
    assert len(rows) == 1
    assert archive.subjects("/messages", "tom tat tag:moi")
    assert archive.subjects("/documents", "giay moi")  # the entry is indexed once too
    assert len(archive.find("/documents", "category:report")) == 1


def test_relevance_ranks_the_most_recently_indexed_matches(archive: Archive, monkeypatch) -> None:
    monkeypatch.setattr("mailgw.search.sql.RANKED", 3)
    for i, body in enumerate(["kế hoạch", "kế hoạch kế hoạch kế hoạch", "kế hoạch", "kế hoạch"]):
        archive.add(eml(f"Số {i}", body), at=T0 + dt.timedelta(hours=i), registers=())
    # the first message (indexed first) is not ranked; the second ranks highest
    assert archive.subjects("/messages", "ke hoach", sort="relevance") == ["Số 1", "Số 3", "Số 2"]
    assert archive.subjects("/messages", "ke hoach") == ["Số 3", "Số 2", "Số 1", "Số 0"]


def test_plans_for_many_matches_give_the_same_pages(archive: Archive, monkeypatch) -> None:
    """SQLite switches plans when a word matches many rows; the answers must not change."""
    for i in range(12):
        at = T0 + dt.timedelta(days=(i * 7) % 40, hours=i)  # arrival order != index order
        archive.add(eml(f"Văn bản {i}", "công văn " * (1 + i % 3)), at=at, registers=())
    queries = ["cong van", "cong van after:2026-03-15", "cong van before:2026-04-01 -\"van ban 3\"",
               "van after:2026-03-12 before:2026-04-10"]  # fmt: skip

    def pages(q: str, sort: str) -> list[int]:
        seen, cursor = [], None
        while True:
            extra = {"cursor": cursor} if cursor else {}
            body = archive.get("/messages", q, sort=sort, limit=4, **extra).json()
            seen += [r["id"] for r in body["results"]]
            if not (cursor := body["next_cursor"]):
                return seen

    expected = {(q, s): pages(q, s) for q in queries for s in ("date", "relevance")}
    monkeypatch.setattr("mailgw.search.sql.MANY_MATCHES", 1)
    assert {(q, s): pages(q, s) for q in queries for s in ("date", "relevance")} == expected
    assert all(expected.values())


def test_nul_in_a_query_is_refused_and_still_audited(archive: Archive) -> None:
    """PostgreSQL text cannot hold NUL: the audit log keeps it escaped instead of failing."""
    response = archive.get("/documents", "giay\x00moi")
    assert response.status_code == 400
    with archive.sessions() as session:
        [event] = session.scalars(select(AuditEvent)).all()
    assert (event.action, event.status, event.query) == ("search.documents", 400, "giay\\x00moi")


def test_relevance_windows_rank_the_same_newest_matches(
    archive: Archive, database_url: str, monkeypatch
) -> None:
    """PostgreSQL first tests the newest rows, then reads matches in a growing window of the
    newest ids: whatever path it takes, the RANKED newest matches are ranked, page by page."""
    monkeypatch.setattr("mailgw.search.sql.RANKED", 5)
    for i in range(40):
        body = "công văn " * (1 + i % 3) if i % 2 or i > 16 else "thông báo"
        rare = " hiếm" if i in (1, 3, 4) else ""
        bunched = " đặc biệt" if i in (5, 15, 37, 38, 39) else ""  # dense among the newest only
        archive.add(eml(f"Văn bản {i}", body + rare + bunched),
                    at=T0 + dt.timedelta(hours=i), registers=())  # fmt: skip
    queries = ["cong van", "hiem", "cong van hiem", "thong bao", "cong van -hiem", "dac biet",
               "cong van after:2026-03-10 before:2026-03-11", "nothing matches"]  # fmt: skip

    def pages(q: str) -> list[int]:
        seen, cursor = [], None
        while True:
            extra = {"cursor": cursor} if cursor else {}
            body = archive.get("/messages", q, sort="relevance", limit=2, **extra).json()
            seen += [r["id"] for r in body["results"]]
            if not (cursor := body["next_cursor"]):
                return seen

    expected = {q: pages(q) for q in queries}  # few rows: the walk covers them all
    assert len(expected["cong van"]) == 5 and len(expected["hiem"]) == 3
    assert len(expected["dac biet"]) == 5
    drives: list[str] = []
    real_page = sql._page

    def spy(session, plan):
        drives.append(plan.drive)
        return real_page(session, plan)

    monkeypatch.setattr("mailgw.search.sql._page", spy)
    for walk_rows, walk_window in ((1, 0), (3, 0), (5, 0), (3, 12)):
        monkeypatch.setattr("mailgw.search.sql.WALK_ROWS", walk_rows)
        monkeypatch.setattr("mailgw.search.sql.WALK_WINDOW", walk_window)
        assert {q: pages(q) for q in queries} == expected
    if database_url.startswith("postgresql"):
        assert {"walk", "window", "fts"} <= set(drives)


def test_a_search_answer_is_utf8_json_and_never_a_non_finite_number() -> None:
    """The search routes render with pydantic's serializer: what the standard library gives for
    the same page, and null where a score could not be a JSON number."""
    import json

    from mailgw.api.search_routes import SearchAnswer

    page = {"query": "giấy mời", "results": [{"snippet": "<mark>Giấy</mark> \"mời\"", "score": 1.5,
            "id": 2**53, "tags": []}], "next_cursor": None}  # fmt: skip
    body = SearchAnswer(page).body
    assert body.decode("utf-8") == json.dumps(page, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(SearchAnswer({"score": float("nan"), "s": float("inf")}).body) == {
        "score": None, "s": None,
    }  # fmt: skip
