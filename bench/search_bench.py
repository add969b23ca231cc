"""Search latency: p50/p95 of four queries through the API and directly in the database.

    .venv/bin/python bench/gen_documents.py --db URL -n 1000000     # first: fill a database
    .venv/bin/python bench/search_bench.py --db URL [--runs 50]

For each query the script times (1) the API: ``GET /documents?q=…`` through the FastAPI app
in-process (httpx ASGI transport: token check, audit-log insert and commit, SQL, details,
snippets, JSON) and (2) direct: the same page query (the SQL that mailgw.search.sql builds for
it) executed on the same engine, nothing else. Queries vary per run (different words, symbols,
months) so no two runs hit the same cached answer, and API and direct run the same list.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from sqlalchemy import text

from mailgw import accounts
from mailgw.api.app import create_app
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.search import service
from mailgw.search.sql import execute

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_documents import TOPICS

WORDS = sorted({w for t in TOPICS for w in t.split()} - {"và"})


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


async def run(url: str, runs: int, seed: int) -> None:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    app = create_app(sessions, Path(tempfile.gettempdir()))
    with sessions() as session, session.begin():
        token = accounts.create_token(session, "auditor", "search-bench")
    with sessions() as session:
        n = session.execute(text("SELECT count(*) FROM search_index")).scalar()
        plan = queries(session, random.Random(seed), runs)
    dialect = engine.dialect.name
    print(f"\n{dialect}: {n:,} indexed documents, {runs} queries of each kind", flush=True)
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    rows = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for (name, sort), qs in plan.items():
            api, direct, hits = [], [], []
            params = {"sort": sort}
            for q in qs[:3]:  # warm up
                await client.get("/documents", params={"q": q, **params}, headers=headers)
            for q in qs:
                # direct: the page query only, on a pooled connection
                p = service.plan_for(service.Request(kind="document", q=q, sort=sort))
                with sessions() as session:
                    t0 = time.perf_counter()
                    result = execute(engine, session, p)
                    direct.append((time.perf_counter() - t0) * 1000)
                hits.append(len(result))
                t0 = time.perf_counter()
                response = await client.get(
                    "/documents", params={"q": q, **params}, headers=headers
                )
                api.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
            rows.append((f"{name} ({sort})", qs[0], api, direct, statistics.mean(hits)))
    print(f"{'query (sort)':<36} {'API p50':>8} {'API p95':>8} {'DB p50':>8} {'DB p95':>8} "
          f"{'p50 x':>6} {'p95 x':>6}  rows/page  example")  # fmt: skip
    for name, example, api, direct, hits in rows:
        a50, a95, d50, d95 = pct(api, 50), pct(api, 95), pct(direct, 50), pct(direct, 95)
        print(f"{name:<36} {a50:>7.1f}ms {a95:>7.1f}ms {d50:>7.1f}ms {d95:>7.1f}ms "
              f"{a50 / d50:>6.2f} {a95 / d95:>6.2f}  {hits:>9.1f}  {example}")  # fmt: skip
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", required=True)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    for url in args.db:
        asyncio.run(run(url, args.runs, args.seed))


if __name__ == "__main__":
    main()
