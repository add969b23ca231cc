"""Generate N registered documents with Vietnamese text straight into a database, for the search
benchmark: messages, register entries and their search index (FTS5 or tsvector), in bulk.

    .venv/bin/python bench/gen_documents.py --db sqlite:////tmp/s/search.db -n 1000000
    .venv/bin/python bench/gen_documents.py --db postgresql://postgres@127.0.0.1/scratch -n 1000000

The database is migrated and the generated tables are emptied first. Text goes through the same
``mailgw.search.index.Record`` as the pipeline (folding, tokens, tsvector), so the index is what
the gateway would build. Arrivals are spread over 2024-01-01 .. 2025-12-31. Deterministic (--seed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from mailgw.db.engine import make_engine
from mailgw.db.migrate import upgrade
from mailgw.search.index import FTS_INSERT, Record
from mailgw.search.models import DOCUMENT

START = dt.datetime(2024, 1, 1, 1, 0, tzinfo=dt.UTC)
SPAN_SECONDS = 2 * 365 * 86400

TYPES = [  # code, name, category
    ("GM", "Giấy mời", "meeting_invitation"), ("BC", "Báo cáo", "report"),
    ("QĐ", "Quyết định", "working_document"), ("TB", "Thông báo", "announcement"),
    ("KH", "Kế hoạch", "working_document"), ("TTr", "Tờ trình", "working_document"),
    ("", "Công văn", "other"), ("CT", "Chỉ thị", "announcement"),
]  # fmt: skip
ISSUERS = [
    ("UBND", "Ủy ban nhân dân tỉnh Quảng Ngãi"), ("STC", "Sở Tài chính"),
    ("SKHĐT", "Sở Kế hoạch và Đầu tư"), ("STTTT", "Sở Thông tin và Truyền thông"),
    ("SGDĐT", "Sở Giáo dục và Đào tạo"), ("SYT", "Sở Y tế"), ("SNN", "Sở Nông nghiệp"),
    ("SXD", "Sở Xây dựng"), ("STNMT", "Sở Tài nguyên và Môi trường"), ("CAT", "Công an tỉnh"),
    ("VP", "Văn phòng UBND tỉnh"), ("SNV", "Sở Nội vụ"), ("STP", "Sở Tư pháp"),
]  # fmt: skip
TOPICS = [
    "chuyển đổi số", "cải cách hành chính", "đầu tư công", "phòng chống thiên tai",
    "xây dựng nông thôn mới", "giải ngân vốn", "an toàn thông tin", "dịch vụ công trực tuyến",
    "quy hoạch sử dụng đất", "phòng chống dịch bệnh", "bảo hiểm xã hội", "giảm nghèo bền vững",
    "tuyển sinh đầu cấp", "an toàn giao thông", "bảo vệ môi trường", "thu ngân sách",
    "phát triển du lịch", "kinh tế tập thể", "chương trình mục tiêu quốc gia",
    "đề án vị trí việc làm",
    "thi đua khen thưởng", "phòng cháy chữa cháy", "cấp giấy chứng nhận", "hạ tầng giao thông",
    "nước sạch nông thôn", "khám chữa bệnh", "đào tạo cán bộ", "tiếp công dân",
    "giải quyết khiếu nại", "công tác dân tộc", "lâm nghiệp bền vững", "thủy lợi nội đồng",
]  # fmt: skip
VERBS = ["triển khai", "thực hiện", "tăng cường", "đẩy mạnh", "tổng kết", "sơ kết", "kiểm tra",
         "hướng dẫn", "báo cáo kết quả", "đề xuất", "phê duyệt", "góp ý dự thảo"]  # fmt: skip
FILLER = [
    "Kính gửi các sở ban ngành huyện thị xã thành phố",
    "Căn cứ Luật Tổ chức chính quyền địa phương ngày 19 tháng 6 năm 2015",
    "Theo đề nghị của Giám đốc Sở",
    "Ủy ban nhân dân tỉnh yêu cầu các cơ quan đơn vị khẩn trương tổ chức thực hiện nghiêm túc "
    "có hiệu quả các nội dung sau đây",
    "Trong quá trình thực hiện nếu có khó khăn vướng mắc kịp thời báo cáo để xem xét giải quyết",
    "Giao Văn phòng theo dõi đôn đốc kiểm tra việc thực hiện",
    "Thời gian dự kiến vào lúc tám giờ sáng tại hội trường",
    "Thành phần tham dự gồm lãnh đạo và chuyên viên phụ trách",
    "Đề nghị các đơn vị gửi báo cáo đúng thời hạn quy định",
    "Nơi nhận như trên lưu văn thư.",
]
URGENCY = ["thuong"] * 8 + ["khan", "thuong_khan"]
TAGS = ["khẩn", "hạn xử lý", "dự thảo", "lãnh đạo xem", "phối hợp"]

MESSAGE_COLUMNS = (
    "id", "queue_id", "origin", "received_at", "mail_from", "rcpt_to", "size", "spool_path",
    "sha256", "trace_headers", "added_headers", "state", "process_attempts", "subject",
    "header_from", "category", "relay_attempts", "dsn_sent",
)  # fmt: skip
ENTRY_COLUMNS = (
    "id", "register", "year", "number", "revision", "seq", "prev_hash", "entry_hash", "arrival",
    "issuer", "doc_symbol", "doc_type", "doc_type_name", "summary", "urgency", "notes",
    "message_row_id", "part_index", "filename", "content_type", "size", "sha256", "raw_sha256",
    "text", "created_at",
)  # fmt: skip
INDEX_COLUMNS = (
    "id", "kind", "ref_id", "message_row_id", "arrival", "year", "category", "register",
    "number", "symbol", "doc_type", "urgency", "signed", "subject", "body",
)  # fmt: skip


def document(i: int, rnd: random.Random, numbers: dict[int, int]) -> tuple[dict, dict, Record]:
    arrival = START + dt.timedelta(seconds=i * SPAN_SECONDS // N_TOTAL + rnd.randrange(60))
    year = arrival.year
    numbers[year] = numbers.get(year, 0) + 1
    code, tname, category = rnd.choice(TYPES)
    icode, issuer = rnd.choice(ISSUERS)
    topic, topic2 = rnd.sample(TOPICS, 2)
    verb = rnd.choice(VERBS)
    num = rnd.randrange(1, 2000)
    symbol = f"{num:02d}/{code + '-' if code else ''}{icode}-{i % 9973}"
    subject = f"{tname} về việc {verb} {topic} năm {year}"
    summary = f"V/v {verb} {topic} và {topic2}"
    sentences = rnd.sample(FILLER, 5)
    body = (
        f"Số: {symbol}. {summary}. {'. '.join(sentences[:3])}. "
        f"Về {topic2}: {rnd.choice(VERBS)} {topic} trên địa bàn. {'. '.join(sentences[3:])}."
    )
    sha = hashlib.sha256(f"doc{i}".encode()).hexdigest()
    tags = [rnd.choice(TAGS)] if rnd.random() < 0.3 else []
    ts = arrival.strftime("%Y-%m-%d %H:%M:%S.%f")
    msg = {
        "id": i + 1, "queue_id": f"B{i:011d}", "origin": "smtp", "received_at": arrival,
        "mail_from": f"vanthu@{icode.lower()}.quangngai.gov.vn", "rcpt_to": "[]", "size": 0,
        "spool_path": f"bench/{i}", "sha256": sha, "trace_headers": b"", "added_headers": b"",
        "state": "relayed", "process_attempts": 1, "subject": subject,
        "header_from": f"vanthu@{icode.lower()}.quangngai.gov.vn", "category": category,
        "relay_attempts": 1, "dsn_sent": False,
    }  # fmt: skip
    entry = {
        "id": i + 1, "register": "default", "year": year, "number": numbers[year],
        "revision": 0, "seq": i + 1, "prev_hash": "0" * 64, "entry_hash": sha, "arrival": arrival,
        "issuer": issuer, "doc_symbol": symbol, "doc_type": code or None, "doc_type_name": tname,
        "summary": summary, "urgency": rnd.choice(URGENCY), "notes": "", "message_row_id": i + 1,
        "part_index": 0, "filename": f"{symbol.replace('/', '_')}.pdf",
        "content_type": "application/pdf", "size": 20000, "sha256": sha, "raw_sha256": sha,
        "text": body, "created_at": arrival,
    }  # fmt: skip
    rec = Record(
        kind=DOCUMENT, ref_id=i + 1, message_row_id=i + 1, arrival=arrival, year=year,
        subject=subject, body=f"{summary}\n{body}", sender=[f"Văn thư {issuer} {msg['mail_from']}"],
        recipients=["lanhdao@quangngai.gov.vn"], filenames=[entry["filename"]], issuer=issuer,
        category=category, register="default", number=numbers[year], symbol=symbol,
        doc_type=code or None, urgency=entry["urgency"], tags=tags, sha256=[sha],
    )  # fmt: skip
    del ts
    return msg, entry, rec


N_TOTAL = 1


def sqlite_value(v: object) -> object:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return v


def generate(url: str, n: int, batch: int, seed: int) -> None:
    global N_TOTAL
    N_TOTAL = n
    engine = make_engine(url)
    upgrade(engine)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        for table in ("search_terms", "search_index", "register_arrivals", "register_entries",
                      "register_counters", "register_chains", "audit_log", "messages"):  # fmt: skip
            conn.execute(text(f"DELETE FROM {table}"))
        if sqlite:
            conn.execute(text("DELETE FROM search_fts"))
    rnd = random.Random(seed)
    numbers: dict[int, int] = {}
    t0 = time.monotonic()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if sqlite:
            cur.execute("PRAGMA synchronous=OFF")
        else:
            cur.execute("DROP INDEX IF EXISTS ix_search_index_tsv")
            cur.execute("SET maintenance_work_mem = '512MB'")
        for start in range(0, n, batch):
            rows = [document(i, rnd, numbers) for i in range(start, min(n, start + batch))]
            if sqlite:
                cur.execute("BEGIN")
                _sqlite_batch(cur, rows)
            else:
                _pg_batch(cur, rows)
            raw.commit()
            done = start + len(rows)
            if done % (batch * 10) == 0 or done == n:
                rate = done / (time.monotonic() - t0)
                print(f"  {done:>9,} documents  {rate:,.0f}/s", flush=True)
        if sqlite:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO search_fts(search_fts) VALUES ('optimize')")
            cur.execute("ANALYZE")
        else:
            t1 = time.monotonic()
            cur.execute("CREATE INDEX ix_search_index_tsv ON search_index USING gin (tsv)")
            print(f"  GIN index built in {time.monotonic() - t1:.0f} s", flush=True)
        raw.commit()
        if not sqlite:
            raw.driver_connection.autocommit = True  # VACUUM cannot run in a transaction
            cur = raw.cursor()
            cur.execute("VACUUM ANALYZE search_index")
            cur.execute("VACUUM ANALYZE search_terms")
            cur.execute("ANALYZE register_entries")
    finally:
        raw.close()
    print(f"generated {n:,} documents in {time.monotonic() - t0:.0f} s", flush=True)


def _sqlite_batch(cur, rows) -> None:
    cur.executemany(
        f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES "
        f"({', '.join('?' for _ in MESSAGE_COLUMNS)})",
        [[sqlite_value(m[c]) for c in MESSAGE_COLUMNS] for m, _, _ in rows],
    )
    cur.executemany(
        f"INSERT INTO register_entries ({', '.join(ENTRY_COLUMNS)}) VALUES "
        f"({', '.join('?' for _ in ENTRY_COLUMNS)})",
        [[sqlite_value(e[c]) for c in ENTRY_COLUMNS] for _, e, _ in rows],
    )
    index_rows = []
    for _, e, rec in rows:
        r = rec.row()
        r["id"] = e["id"]
        index_rows.append([sqlite_value(r[c]) for c in INDEX_COLUMNS])
    cur.executemany(
        f"INSERT INTO search_index ({', '.join(INDEX_COLUMNS)}) VALUES "
        f"({', '.join('?' for _ in INDEX_COLUMNS)})",
        index_rows,
    )
    cur.executemany(
        "INSERT INTO search_terms (field, value, entry_id) VALUES (?, ?, ?)",
        [(f, v, e["id"]) for _, e, rec in rows for f, v in rec.terms()],
    )
    fts_sql = FTS_INSERT.replace(":id", "?")
    for col in ("subject", "body", "sender", "recipients", "filename", "issuer"):
        fts_sql = fts_sql.replace(f":{col}", "?")
    cur.executemany(
        fts_sql,
        [(e["id"], *rec.fts_values().values()) for _, e, rec in rows],
    )


def _copy(cur, table: str, columns: tuple[str, ...], rows: list[list[object]]) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _pg_batch(cur, rows) -> None:
    _copy(cur, "messages", MESSAGE_COLUMNS, [[m[c] for c in MESSAGE_COLUMNS] for m, _, _ in rows])
    _copy(cur, "register_entries", ENTRY_COLUMNS,
          [[e[c] for c in ENTRY_COLUMNS] for _, e, _ in rows])  # fmt: skip
    index_rows = []
    for _, e, rec in rows:
        r = rec.row()
        r["id"] = e["id"]
        index_rows.append([r[c] for c in INDEX_COLUMNS] + [rec.tsvector()])
    _copy(cur, "search_index", (*INDEX_COLUMNS, "tsv"), index_rows)
    _copy(cur, "search_terms", ("field", "value", "entry_id"),
          [[f, v, e["id"]] for _, e, rec in rows for f, v in rec.terms()])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="sqlite:///PATH or postgresql://...")
    parser.add_argument("-n", type=int, default=1_000_000, help="documents (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    generate(args.db, args.n, args.batch, args.seed)


if __name__ == "__main__":
    main()
