"""Registering throughput: documents per second through ``register_message`` (blob writes with
fsync, number allocation under the register lock, hash chain, insert, commit), parsing excluded.

    .venv/bin/python bench/register_bench.py [--docs 2000] [--threads 1,8] [--db URL ...]

Without --db it runs on a fresh SQLite file; pass postgresql://USER@HOST/DB (a scratch
database that the script migrates and fills) to measure PostgreSQL. Each message carries one
attachment of 20 KB (application/octet-stream, so no text extraction), all different.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text

from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.migrate import upgrade
from mailgw.db.models import Message, utcnow
from mailgw.mime.parse import parse_message
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.register import fields_of, register_message


def message(i: int) -> bytes:
    payload = (f"tệp văn bản {i} ".encode() * 1200)[:20_000]
    b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (
        f"From: vp@example.gov.vn\r\nTo: lanhdao@example.gov.vn\r\nSubject: Báo cáo {i}\r\n"
        f"Message-ID: <bench-{i}@example.gov.vn>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Số: {i}/BC-UBND\r\nKính gửi UBND tỉnh.\r\n--b\r\n"
        "Content-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="bc-{i}.dat"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--b--\r\n"
    ).encode()


def run(url: str, docs: int, threads: int, data_dir: Path) -> float:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with engine.begin() as conn:  # a clean register for each run
        for table in ("register_arrivals", "register_entries", "register_counters",
                      "register_chains", "messages"):  # fmt: skip
            conn.execute(text(f"DELETE FROM {table}"))
    raws = [message(i) for i in range(docs)]
    parsed = [parse_message(r) for r in raws]
    now = utcnow()
    rows = [
        {"queue_id": f"B{i:010d}", "spool_path": f"x/{i}", "received_at": now,
         "sha256": hashlib.sha256(r).hexdigest(), "mail_from": "vp@example.gov.vn",
         "rcpt_to": ["lanhdao@example.gov.vn"], "origin": "smtp", "size": len(r),
         "trace_headers": b"", "added_headers": b"", "state": "processing",
         "process_attempts": 1, "relay_attempts": 0, "dsn_sent": False}
        for i, r in enumerate(raws)
    ]  # fmt: skip
    with sessions() as session, session.begin():
        ids = list(session.execute(insert(Message).returning(Message.id), rows).scalars())
    store = FileBlobStore.in_data_dir(data_dir)
    lock = threading.Lock()
    numbers: list[int] = []

    def one(k: int) -> None:
        got = register_message(
            sessions, store, ["default"], message_row_id=ids[k], arrival=now, raw=raws[k],
            parsed=parsed[k], fields=fields_of(parsed[k], ["lanhdao@example.gov.vn"], {}),
        )  # fmt: skip
        with lock:
            numbers.extend(r.number for r in got)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(docs)))
    elapsed = time.perf_counter() - start
    engine.dispose()
    assert sorted(numbers) == list(range(1, docs + 1)), "gap or duplicate"
    return docs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--db", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="register-bench-") as tmp:
        urls = args.db or [f"sqlite:///{tmp}/bench.db"]
        for url in urls:
            for threads in (int(t) for t in args.threads.split(",")):
                rate = run(url, args.docs, threads, Path(tmp) / f"data-{threads}")
                name = url.split("://")[0]
                print(f"{name:10} threads={threads:2} docs={args.docs}: {rate:7.1f} documents/s",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
