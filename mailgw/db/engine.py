"""Database engine and sessions. SQLite (WAL) by default, PostgreSQL at scale."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "mailgw_read_only"  # execution option: a transaction that only reads


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, full fsync on commit and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions, so BEGIN IMMEDIATE works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at the start: no deadlock between two upgraders.
            # A reader (see make_read_sessionmaker) takes a snapshot and no lock at all.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN DEFERRED")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # psycopg prepares a statement run five times; PostgreSQL may then plan it once for any
    # parameters. A search's plan depends on its words (how many rows match), so every
    # execution gets a plan of its own.
    connect_args = {"options": "-c plan_cache_mode=force_custom_plan"}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = create_engine(url, pool_size=10, max_overflow=20, connect_args=connect_args, **kwargs)
    event.listen(engine, "checkout", _discard_if_closed_by_server)
    return engine


def _discard_if_closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """What pool_pre_ping does, without its round trip to the server (a third of a short
    read's). An idle PostgreSQL connection has nothing to read (mailgw never LISTENs): if its
    socket is readable, the server has closed it or is closing it (a restart, a terminated
    backend, an idle timeout), and the pool connects anew (DisconnectionError)."""
    try:
        fd = dbapi_conn.fileno()
    except Exception as exc:  # closed on our side: no descriptor
        raise DisconnectionError(f"pooled connection unusable: {exc}") from exc
    poller = select.poll()  # not select(): descriptors above 1023 are common in the gateway
    poller.register(fd, select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed the pooled connection")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def statement_by_statement(engine: Engine) -> Engine:
    """``engine`` for work that needs no transaction around its statements: each statement
    is its own (an audit row's INSERT, a reader's SELECTs). On PostgreSQL that is autocommit,
    which spares two round trips (BEGIN, then COMMIT or ROLLBACK) of 3 to 5 a short read
    makes; what a reader sees is unchanged, since under READ COMMITTED (PostgreSQL's default)
    every statement of a transaction takes a snapshot of its own anyway. SQLite: as is (its
    transactions cost no round trip, and a reader's keeps one snapshot)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def make_read_sessionmaker(engine: Engine, *, autocommit: bool = False) -> sessionmaker[Session]:
    """Sessions for reading only (the API's searches and views). On SQLite their transaction
    is a deferred one: a snapshot that never waits for, nor holds up, the gateway's writers
    (a long search would otherwise keep mail intake from committing). Writing through one
    is a mistake: it may fail with "database is locked" instead of waiting its turn.
    ``autocommit``: on PostgreSQL no transaction around the statements (statement_by_statement),
    for the short reads every request makes; not for streamed results (``yield_per``: a
    server-side cursor lives in a transaction)."""
    if autocommit:
        engine = statement_by_statement(engine)
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
