"""Search latency: p50/p95 of four queries through the API and directly in the database.

    .venv/bin/python bench/gen_documents.py --db URL -n 1000000     # first: fill a database
    .venv/bin/python bench/search_bench.py --db URL [--runs 50]

For each query the script times (1) the API: ``GET /documents?q=…`` over HTTP on loopback, one
kept-alive connection, served by uvicorn in a process of its own, set up as ``mailgw serve``
sets it up (same app, same uvicorn options, same event loop): HTTP parsing, token check, SQL,
details, snippets, the audit row's insert and commit, JSON; and (2) direct: the SQL the API
runs for that search (the page query, then the details of the page's rows) executed on a
pooled connection in this process, nothing else. The page query alone is shown too. Queries
vary per run (different words, symbols, months) so no two runs hit the same cached answer,
and API and direct run the same list, interleaved (which goes first alternates).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from mailgw import accounts, aio
from mailgw.api.audit import INSERT as AUDIT_INSERT
from mailgw.db.engine import (
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
    statement_by_statement,
)
from mailgw.search import service
from mailgw.search.models import DOCUMENT
from mailgw.search.sql import execute

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_documents import TOPICS

WORDS = sorted({w for t in TOPICS for w in t.split()} - {"và"})


def serve_api(url: str, ports: multiprocessing.Queue) -> None:
    """The API as the gateway serves it (mailgw.app.api_server), on a free port."""
    from mailgw.api.app import create_app
    from mailgw.app import api_server

    async def serve() -> None:
        app = create_app(make_sessionmaker(make_engine(url)), Path(tempfile.gettempdir()))
        server = api_server(app, "127.0.0.1", 0)
        task = aio.asyncio.ensure_future(server.serve())
        while not server.started:
            await aio.asyncio.sleep(0.02)
        ports.put(server.servers[0].sockets[0].getsockname()[1])
        await task

    aio.run(serve())


def queries(session, rnd: random.Random, runs: int) -> dict[str, list[str]]:
    n = session.execute(text("SELECT max(id) FROM register_entries")).scalar() or 1
    ids = [rnd.randrange(1, n + 1) for _ in range(runs)]
    symbols = [
        session.execute(text("SELECT doc_symbol FROM register_entries WHERE id = :i"), {"i": i})
        .scalar() for i in ids
    ]  # fmt: skip
    months = [(2024 + rnd.randrange(2), rnd.randrange(1, 13)) for _ in range(runs)]
    cats = ["report", "meeting_invitation", "announcement", "working_document", "other"]

    def month_range(y: int, m: int) -> str:
        end = dt.date(y + (m == 12), m % 12 + 1, 1)
        return f"after:{y}-{m:02d}-01 before:{end.isoformat()}"

    def two_words() -> str:
        return " ".join(rnd.sample(WORDS, 2))

    words = [two_words() for _ in range(runs)]
    ranged = [f"{two_words()} {month_range(*m)}" for m in months]
    return {
        ("two words", "relevance"): words,
        ("two words", "date"): words,
        ("two words + date range", "relevance"): ranged,
        ("two words + date range", "date"): ranged,
        ("symbol lookup", "date"): [f"symbol:{s}" for s in symbols],
        ("category + month", "date"): [
            f"category:{rnd.choice(cats)} {month_range(*m)}" for m in months
        ],
    }


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def run(url: str, runs: int, seed: int) -> None:
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session, session.begin():
        token = accounts.create_token(session, "auditor", "search-bench")
    readers = make_read_sessionmaker(engine, autocommit=True)  # as the API's searches
    with readers() as session:
        n = session.execute(text("SELECT count(*) FROM search_index")).scalar()
        plan = queries(session, random.Random(seed), runs)
    spawn = multiprocessing.get_context("spawn")
    ports = spawn.Queue()
    server = spawn.Process(target=serve_api, args=(url, ports))
    server.start()
    try:
        port = ports.get(timeout=60)
        print(f"\n{engine.dialect.name}: {n:,} indexed documents, {runs} queries of each kind, "
              "API over HTTP (uvicorn, in a process of its own)", flush=True)  # fmt: skip
        client = http.client.HTTPConnection("127.0.0.1", port)
        rows = measure(readers, client, token, plan)
        audit = audit_commits(engine, runs)
        health = health_checks(client, runs)
    finally:
        server.terminate()
        server.join()
        engine.dispose()
    print(f"{'query (sort)':<36} {'API p50':>8} {'API p95':>8} {'DB p50':>8} {'DB p95':>8} "
          f"{'p50 x':>6} {'p95 x':>6} {'page p50':>8}  rows  example")  # fmt: skip
    for name, example, api, direct, page, hits in rows:
        a50, a95, d50, d95 = pct(api, 50), pct(api, 95), pct(direct, 50), pct(direct, 95)
        print(f"{name:<36} {a50:>7.1f}ms {a95:>7.1f}ms {d50:>7.1f}ms {d95:>7.1f}ms "
              f"{a50 / d50:>6.2f} {a95 / d95:>6.2f} {pct(page, 50):>7.1f}ms "
              f"{hits:>5.1f}  {example}")  # fmt: skip
    print(f"{'the audit row alone (insert, commit)':<36} {pct(audit, 50):>7.1f}ms "
          f"{pct(audit, 95):>7.1f}ms  (every API read above waits for one)")  # fmt: skip
    print(f"{'GET /health over HTTP (no token)':<36} {pct(health, 50):>7.1f}ms "
          f"{pct(health, 95):>7.1f}ms  (HTTP, routing, one SELECT 1: a floor)")  # fmt: skip


def health_checks(client: http.client.HTTPConnection, runs: int) -> list[float]:
    """The cheapest answer the API gives through the same server: no token, no audit row."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        client.request("GET", "/health")
        response = client.getresponse()
        response.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status == 200
    return times


def audit_commits(engine, runs: int) -> list[float]:
    """The API's audit write on its own (mailgw.api.audit: one row, its own transaction)."""
    values = {"token_name": "search-bench", "role": "auditor", "action": "bench.audit",
              "query": "x", "client_addr": "127.0.0.1", "status": 200}  # fmt: skip
    times = []
    auditor = statement_by_statement(engine)  # as the API's (mailgw.api.app)
    for _ in range(runs):
        t0 = time.perf_counter()
        with auditor.begin() as conn:
            conn.execute(AUDIT_INSERT, values)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def measure(readers, client: http.client.HTTPConnection, token: str, plan) -> list:
    """Each query directly (the API's SQL) and through the API, which of the two goes first
    alternating (the first may read pages from disk that the second finds cached); ms."""
    headers = {"Authorization": f"Bearer {token}"}

    def api_get(q: str, sort: str) -> float:
        t0 = time.perf_counter()
        client.request("GET", "/documents?" + urlencode({"q": q, "sort": sort}), headers=headers)
        response = client.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        assert response.status == 200, body
        return elapsed

    def direct_sql(q: str, sort: str) -> tuple[float, float, int]:
        p = service.plan_for(service.Request(kind=DOCUMENT, q=q, sort=sort))
        with readers() as session:  # as the API does: a read session, page, details
            session.connection()  # the pool checkout and BEGIN are not timed
            t0 = time.perf_counter()
            page = execute(session, p)[: p.limit]
            t1 = time.perf_counter()
            if page:
                service.detail_rows(session, DOCUMENT, [r.id for r in page])
            t2 = time.perf_counter()
        return (t2 - t0) * 1000, (t1 - t0) * 1000, len(page)

    rows = []
    for (name, sort), qs in plan.items():
        api, direct, page_only, hits = [], [], [], []
        for q in qs[:3]:  # warm up
            api_get(q, sort)
        for i, q in enumerate(qs):
            if i % 2:
                api.append(api_get(q, sort))
            both, page, n = direct_sql(q, sort)
            if not i % 2:
                api.append(api_get(q, sort))
            direct.append(both)
            page_only.append(page)
            hits.append(n)
        rows.append((f"{name} ({sort})", qs[0], api, direct, page_only, statistics.mean(hits)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", required=True)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    for url in args.db:
        run(url, args.runs, args.seed)


if __name__ == "__main__":
    main()
