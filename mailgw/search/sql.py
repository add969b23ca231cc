"""Query terms → SQL, per dialect: SQLite FTS5 MATCH or PostgreSQL tsquery, plus plain SQL
conditions on the indexed columns of ``search_index`` for the field filters.

Sorting is keyset-paginated: by (arrival, id) for ``date`` and by (score, id) for
``relevance`` (SQLite: mailgw.search.rank, subject weighted 4×; PostgreSQL: ts_rank, subject
lexemes have weight A). The cursor carries the last row's key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, Integer, String, TextClause, bindparam, text
from sqlalchemy.orm import Session

from mailgw.db.models import UTCDateTime
from mailgw.search import rank
from mailgw.search.index import PREFIX, day_start
from mailgw.search.models import FTS_TABLE
from mailgw.search.query import Query, Term

COLUMN_OF = {  # exact filters → search_index column
    "category": "category",
    "symbol": "symbol",
    "type": "doc_type",
    "register": "register",
    "urgency": "urgency",
    "signed": "signed",
    "number": "number",
    "year": "year",
}
FTS_COLUMNS_OF = {  # text filters → FTS5 columns
    None: "{subject body}",
    "subject": "{subject}",
    "from": "{sender}",
    "to": "{recipients}",
    "filename": "{filename}",
    "issuer": "{issuer}",
}
TSV_PREFIX_OF = {"from": PREFIX["sender"], "to": PREFIX["recipients"],
                 "filename": PREFIX["filename"], "issuer": PREFIX["issuer"]}  # fmt: skip
RANKED = 2000  # relevance ranks at most this many matches: the most recently indexed ones
WINDOW_MARGIN = 1.3  # PostgreSQL: aim the id window at this many times RANKED matches
WALK_ROWS = 8_000  # PostgreSQL: the newest rows tested one by one before using the GIN index
WALK_WINDOW = 40_000  # PostgreSQL: a window of at most this many rows is tested row by row too
MANY_MATCHES = 5000  # SQLite, date order: from this many matches on, walk the arrival index


@dataclass
class Plan:
    kind: str
    query: Query
    sort: str  # relevance | date
    order: str  # desc | asc
    limit: int
    after: tuple[Any, int] | None = None  # cursor: (score or arrival, id) of the last row
    drive: str = "fts"  # SQLite, date order with words: "fts" (few matches) or "index" (many)
    # or "walk": the newest matches in rowid order (execute() bounds the date order with it)
    rowid_range: tuple[int, int] | None = None  # SQLite: FTS rowids looked at
    min_arrival: str | None = None  # SQLite: rows older than this cannot be on the page
    params: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, type_: Any = None) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        if type_ is not None:
            self.types[name] = type_
        return f":{name}"


# --- full text


def fts5_term(term: Term) -> str:
    phrase = " ".join(term.tokens)  # tokens are letters and digits only: safe inside quotes
    return f'{FTS_COLUMNS_OF[term.field]} : "{phrase}"'


def fts5_match(positive: list[Term], negative: list[Term]) -> str | None:
    if not positive:
        return None
    expr = " AND ".join(f"({fts5_term(t)})" for t in positive)
    for t in negative:
        expr = f"({expr}) NOT ({fts5_term(t)})"
    return expr


def tsquery_term(term: Term) -> str:
    if term.field == "subject":
        lexemes = [f"'{tok}':A" for tok in term.tokens]
    else:
        prefix = TSV_PREFIX_OF.get(term.field or "", "")
        lexemes = [f"'{prefix}{tok}'" for tok in term.tokens]
    return "(" + " <-> ".join(lexemes) + ")"


def tsquery(positive: list[Term], negative: list[Term]) -> str:
    parts = [tsquery_term(t) for t in positive] + ["!" + tsquery_term(t) for t in negative]
    return " & ".join(parts)


# --- filters


def _text_terms(q: Query) -> tuple[list[Term], list[Term]]:
    text_terms = [t for t in q.terms if t.field is None or t.field in FTS_COLUMNS_OF]
    return [t for t in text_terms if not t.negated], [t for t in text_terms if t.negated]


def filter_condition(plan: Plan, term: Term) -> str:
    f = term.field
    if f in ("tag", "sha256"):
        p = plan.bind(term.key)
        cond = f"si.id IN (SELECT entry_id FROM search_terms WHERE field = '{f}' AND value = {p})"
        return f"NOT ({cond})" if term.negated else cond
    if f in ("after", "before"):
        assert isinstance(term.key, dt.date)
        p = plan.bind(day_start(term.key), UTCDateTime())
        after = (f == "after") != term.negated
        return f"si.arrival >= {p}" if after else f"si.arrival < {p}"
    column = COLUMN_OF[f or ""]
    p = plan.bind(term.key, Integer() if f in ("number", "year") else String())
    if term.negated:
        return f"(si.{column} IS NULL OR si.{column} <> {p})"
    return f"si.{column} = {p}"


def build(plan: Plan, dialect: str) -> str:
    """The SELECT for one page (limit + 1 rows): id, kind, ref_id, arrival, score; parameters
    (``:p0``…) in ``plan.params``."""
    plan.params.clear()
    plan.types.clear()
    q = plan.query
    positive, negative = _text_terms(q)
    text_terms = positive + negative
    conds = [f"si.kind = {plan.bind(plan.kind)}"]
    conds += [filter_condition(plan, t) for t in q.terms if t not in text_terms]
    relevance = plan.sort == "relevance" and bool(positive)
    source = "search_index si"
    score = "0.0"
    sha = next((t for t in q.terms if t.field == "sha256" and not t.negated), None)
    if dialect == "sqlite" and sha is not None and not positive:
        # a file's hash names a handful of rows: they drive (SQLite would rather walk the
        # arrival index for the order and test every row)
        source = (
            "(SELECT entry_id AS id FROM search_terms WHERE field = 'sha256' AND value = "
            f"{plan.bind(sha.key)}) h CROSS JOIN search_index si ON si.id = h.id"
        )
    id_column = "si.id"
    if dialect == "sqlite":
        match = fts5_match(positive, negative)
        if plan.min_arrival is not None:
            conds.append(f"si.arrival >= {plan.bind(plan.min_arrival)}")
        if match is not None and (relevance or plan.drive in ("fts", "walk")):
            # CROSS JOIN: SQLite keeps this order (the matches drive). Without statistics it
            # would otherwise look the MATCH up once per row of search_index.
            newest = " ORDER BY rowid DESC" if relevance or plan.drive == "walk" else ""
            within = ""
            if plan.rowid_range is not None:
                lo, hi = plan.rowid_range
                within = f" AND rowid BETWEEN {plan.bind(lo)} AND {plan.bind(hi)}"
            source = (
                f"(SELECT rowid AS id FROM {FTS_TABLE} "
                f"WHERE {FTS_TABLE} MATCH {plan.bind(match)}{within}{newest}) m "
                "CROSS JOIN search_index si ON si.id = m.id"
            )
            id_column = "m.id"  # the FTS5 scan gives that order: no sort
        elif match is not None:
            # many matches, newest first: walk the arrival index, keep rows in the match list
            source = "search_index si INDEXED BY ix_search_index_arrival"
            conds.append(
                f"si.id IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH "
                f"{plan.bind(match)})"
            )
        elif negative:
            neg = " OR ".join(f"({fts5_term(t)})" for t in negative)
            conds.append(
                f"si.id NOT IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH "
                f"{plan.bind(neg)})"
            )
    elif text_terms:
        if plan.rowid_range is not None:
            lo, hi = plan.rowid_range
            conds.append(f"si.id BETWEEN {plan.bind(lo, Integer())} AND {plan.bind(hi, Integer())}")
        tsq = f"CAST({plan.bind(tsquery(positive, negative))} AS tsquery)"
        # "walk": test each row of the id range newest first; IS TRUE keeps the GIN index out
        conds.append(f"(si.tsv @@ {tsq}) IS TRUE" if plan.drive == "walk" else f"si.tsv @@ {tsq}")
        if relevance:
            score = f"ts_rank(si.tsv, {tsq})::float8"
    key = "score" if relevance else "arrival"
    columns = f"{id_column} AS id, si.kind AS kind, si.ref_id AS ref_id, si.arrival AS arrival"
    inner = f"SELECT {columns}, {score} AS score FROM {source} WHERE {' AND '.join(conds)}"
    # Relevance ranks the RANKED most recently indexed matches (all of them when there are
    # fewer): ranking costs per match, and a common word matches a large part of the archive.
    if relevance and dialect == "sqlite":
        # the candidates with their folded text, scored by mailgw.search.rank; m.id: the FTS5
        # scan gives that order, no sort
        return (
            f"SELECT {columns}, f.subject AS folded_subject, f.body AS folded_body "
            f"FROM {source} CROSS JOIN {FTS_TABLE} f ON f.rowid = m.id "
            f"WHERE {' AND '.join(conds)} ORDER BY m.id DESC LIMIT {RANKED}"
        )
    if relevance:
        # the newest matches, scored as they are read (narrow rows sort in memory; each match
        # is read once, not again through the primary key to be scored); in a "window" the
        # matches are sorted, the primary key is never walked
        order_id = "si.id + 0" if plan.drive == "window" else "si.id"
        inner = (
            f"SELECT *, count(*) OVER () AS ranked FROM ({inner} "
            f"ORDER BY {order_id} DESC LIMIT {RANKED}) top"
        )
    op = "<" if plan.order == "desc" else ">"
    direction = "DESC" if plan.order == "desc" else "ASC"
    outer = [] if plan.after is None else [_keyset(plan, key, op)]
    sql = f"SELECT * FROM ({inner}) r"
    if outer:
        sql += f" WHERE {' AND '.join(outer)}"
    if plan.drive == "walk" and dialect == "sqlite" and not relevance:
        return sql + f" ORDER BY r.id DESC LIMIT {int(plan.limit) + 1}"
    sql += f" ORDER BY r.{key} {direction}, r.id {direction} LIMIT {int(plan.limit) + 1}"
    return sql


def statement(plan: Plan, sql: str) -> TextClause:
    """``sql`` as an SQLAlchemy statement with typed parameters."""
    clause = text(sql)
    binds = [bindparam(name, type_=type_) for name, type_ in plan.types.items()]
    return clause.bindparams(*binds) if binds else clause


def sqlite_params(plan: Plan) -> dict[str, Any]:
    """Parameters for the sqlite3 driver itself: datetimes as SQLAlchemy stores them."""
    return {
        name: value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(value, dt.datetime)
        else value
        for name, value in plan.params.items()
    }


def execute(session: Session, plan: Plan) -> list[Any]:
    """Run the page query in ``session``'s transaction. On SQLite the statements go straight
    to the driver's cursor (no SQLAlchemy compilation per search); give it a session of
    make_read_sessionmaker, so that a search holds no lock while it runs."""
    if session.get_bind().dialect.name != "sqlite":
        if plan.sort == "relevance" and _text_terms(plan.query)[0]:
            return _postgresql_relevance(session, plan)
        return _page(session, plan)
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    cur = raw.cursor()
    try:
        plan.drive = "fts"
        match = fts5_match(*_text_terms(plan.query))
        if match is not None and plan.sort == "relevance":
            found = _sqlite_date_bounds(cur, plan)
            if found is not None:
                if found[0] is None:
                    return []
                plan.rowid_range = (found[0], found[1])
            return _ranked_page(cur, plan)
        if match is not None and plan.sort == "date":
            # Few matches: fetch them and sort. Many: walk the arrival index instead.
            cur.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} "
                f"MATCH :m LIMIT {MANY_MATCHES})",
                {"m": match},
            )
            if cur.fetchone()[0] >= MANY_MATCHES:
                plan.drive = "index"
                if plan.order == "desc":
                    rows = _newest_first(cur, plan)
                    if rows is not None:
                        return rows
        return _fetch(cur, build(plan, "sqlite"), sqlite_params(plan))
    finally:
        cur.close()


class Row(dict):
    """A result row with attribute access (id, kind, ref_id, arrival, score)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _ranked_page(cur: Any, plan: Plan) -> list[Row]:
    """SQLite: score the candidates (mailgw.search.rank), order them by (score, id) and cut
    the page after the cursor."""
    phrases = [t.tokens for t in _text_terms(plan.query)[0] if t.field in (None, "subject")]
    scorer = rank.Scorer(phrases)
    cur.execute(build(plan, "sqlite"), sqlite_params(plan))
    # id, kind, ref_id, arrival, folded subject, folded body
    scored = [(scorer(r[4] or "", r[5] or ""), r[0], r) for r in cur.fetchall()]
    desc = plan.order == "desc"
    scored.sort(key=lambda s: (s[0], s[1]), reverse=desc)
    if plan.after is not None:
        after = (float(plan.after[0]), plan.after[1])
        if desc:
            scored = [s for s in scored if (s[0], s[1]) < after]
        else:
            scored = [s for s in scored if (s[0], s[1]) > after]
    return [Row(id=r[0], kind=r[1], ref_id=r[2], arrival=r[3], score=score)
            for score, _, r in scored[: plan.limit + 1]]  # fmt: skip


def _keyset(plan: Plan, key: str, op: str) -> str:
    assert plan.after is not None
    value, last_id = plan.after
    type_ = Float() if key == "score" else UTCDateTime()
    k = plan.bind(value, type_)
    i = plan.bind(last_id, Integer())
    return f"(r.{key} {op} {k} OR (r.{key} = {k} AND r.id {op} {i}))"


def _fetch(cur: Any, sql: str, params: dict[str, Any]) -> list[Row]:
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [Row(zip(names, values, strict=True)) for values in cur.fetchall()]


def _newest_first(cur: Any, plan: Plan) -> list[Row] | None:
    """SQLite, many matches, newest first, exactly, without listing every match.

    Walk the matches from the highest rowid down (FTS5 streams that order) until a page's
    worth passes the filters. Index ids grow with arrival almost always, so these are nearly
    the newest; whatever they are, no row older than the oldest of them can be on the page.
    Then only matches at least that new are fetched and sorted. ``None``: use the plan as is.
    """
    lo, hi = 0, 2**62
    found = _sqlite_date_bounds(cur, plan)
    if found is not None:  # rowids of the rows in the date range bound the walk
        if found[0] is None:
            return []
        lo, hi = found
    plan.drive, plan.rowid_range, plan.min_arrival = "walk", (lo, hi), None
    walked = _fetch(cur, build(plan, "sqlite"), sqlite_params(plan))
    if len(walked) <= plan.limit:  # every match: sort them
        return sorted(walked, key=lambda r: (r.arrival, r.id), reverse=True)
    oldest = min(r.arrival for r in walked)
    bounds = _date_bounds(plan, "sqlite", since=oldest)
    assert bounds is not None
    cur.execute(bounds[1], sqlite_params(bounds[0]))
    first = cur.fetchone()[0]
    plan.drive, plan.rowid_range, plan.min_arrival = "fts", (max(lo, first), hi), oldest
    return _fetch(cur, build(plan, "sqlite"), sqlite_params(plan))


def _postgresql_relevance(session: Session, plan: Plan) -> list[Any]:
    """PostgreSQL, relevance: rank the RANKED newest matches without reading every match.

    First the newest WALK_ROWS rows of the id range (the query's dates, else the whole index)
    are tested one by one, newest first: a common word finds its RANKED matches there. Else
    the share of matches seen there sizes a window of newest ids expected to hold RANKED ×
    WINDOW_MARGIN matches: up to WALK_WINDOW rows it is tested row by row as well (its words
    are common, and reading their long GIN lists costs more), beyond that only matches inside
    it are read (the GIN matches combined with the BRIN index on id). A window that still
    holds too few grows until it covers the range.
    The answer is always that of ranking the RANKED newest matches of the whole range. (The
    planner's estimates cannot size the window: for several words it multiplies their
    frequencies, far too few for words that go together, as the syllables of a Vietnamese
    compound word do.)
    """
    bounds = _date_bounds(plan, "postgresql")
    if bounds is not None:
        bound_plan, sql = bounds
        lo, hi = session.execute(statement(bound_plan, sql), bound_plan.params).one()
    else:
        lo, hi = session.execute(text("SELECT min(id), max(id) FROM search_index")).one()
    if lo is None:
        return []
    span = hi - lo + 1
    walked = min(span, WALK_ROWS)
    plan.rowid_range, plan.drive = (hi - walked + 1, hi), "walk"
    rows = _page(session, plan)
    ranked = rows[0].ranked if rows else 0  # none (or a cursor past them): the whole range
    if ranked >= RANKED or walked == span:
        return rows
    window = int(walked * RANKED * WINDOW_MARGIN / ranked) + 1 if ranked else span
    while True:
        window = min(window, span)
        plan.rowid_range = (hi - window + 1, hi)
        # a window this small means common words, whose GIN lists cost more than testing rows
        plan.drive = "walk" if window <= WALK_WINDOW else "window" if window < span else "fts"
        rows = _page(session, plan)
        if window == span or (rows and rows[0].ranked >= RANKED):
            return rows
        window *= 4


def _page(session: Session, plan: Plan) -> list[Any]:
    return list(session.execute(statement(plan, build(plan, "postgresql")), plan.params))


def _date_bounds(plan: Plan, dialect: str, since: str | None = None) -> tuple[Plan, str] | None:
    """The query for the lowest and highest id of the rows in the query's date range (and
    arriving at ``since`` or later)."""
    dates = [t for t in plan.query.terms if t.field in ("after", "before")]
    if not dates and since is None:
        return None
    bound = Plan(plan.kind, Query("", tuple(dates)), "date", "desc", 1)
    conds = [f"si.kind = {bound.bind(plan.kind)}"]
    conds += [filter_condition(bound, t) for t in dates]
    if since is not None:
        conds.append(f"si.arrival >= {bound.bind(since)}")
    # OFFSET 0 keeps the subquery: the rows come from the arrival index (a range scan), not
    # from walking the primary key to the first and last row that fall in the range
    sql = (
        "SELECT min(id), max(id) FROM (SELECT si.id AS id FROM search_index si "
        f"WHERE {' AND '.join(conds)} {'LIMIT -1 ' if dialect == 'sqlite' else ''}OFFSET 0) b"
    )
    return bound, sql


def _sqlite_date_bounds(cur: Any, plan: Plan) -> tuple[Any, Any] | None:
    bounds = _date_bounds(plan, "sqlite")
    if bounds is None:
        return None
    bound, sql = bounds
    cur.execute(sql, sqlite_params(bound))
    return cur.fetchone()
