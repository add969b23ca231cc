"""The engines: on SQLite writers serialise with BEGIN IMMEDIATE and readers never wait for
them; on PostgreSQL readers and audit rows go statement by statement (autocommit)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from mailgw.db.engine import (
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
    statement_by_statement,
)


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'e.db'}")

    @event.listens_for(engine, "connect")
    def _short_wait(dbapi_conn, _record) -> None:  # after make_engine's 30 s busy timeout
        dbapi_conn.execute("PRAGMA busy_timeout=200")

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    yield engine
    engine.dispose()


def test_a_reader_reads_while_a_writer_holds_the_lock(engine) -> None:
    writers, readers = make_sessionmaker(engine), make_read_sessionmaker(engine)
    with writers() as writer:
        writer.execute(text("INSERT INTO t VALUES (2)"))  # BEGIN IMMEDIATE: lock held
        with readers() as reader:  # a snapshot from before the uncommitted row
            assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1
            assert reader.connection().get_execution_options()["mailgw_read_only"]
        with writers() as other, pytest.raises(OperationalError, match="locked"):
            other.execute(text("SELECT count(*) FROM t"))  # a writer's BEGIN waits, then fails
        writer.commit()
    with readers() as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 2


@pytest.mark.parametrize("autocommit", [False, True])  # autocommit is PostgreSQL's alone
def test_a_reader_keeps_its_snapshot_across_statements(engine, autocommit: bool) -> None:
    with make_read_sessionmaker(engine, autocommit=autocommit)() as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1
        with make_sessionmaker(engine)() as writer, writer.begin():
            writer.execute(text("INSERT INTO t VALUES (2)"))
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_sqlite_engines_keep_their_transactions(engine) -> None:
    assert statement_by_statement(engine) is engine


def test_postgresql_readers_and_single_statements_need_no_transaction(database_url) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (this run is on SQLite)")
    engine = make_engine(database_url)
    try:

        def now_moves_on(sessions) -> bool:  # autocommit: each statement its own transaction
            with sessions() as session:
                first = session.execute(text("SELECT now()")).scalar()
                session.execute(text("SELECT pg_sleep(0.02)"))
                return session.execute(text("SELECT now()")).scalar() > first

        assert now_moves_on(make_read_sessionmaker(engine, autocommit=True))
        assert not now_moves_on(make_read_sessionmaker(engine))  # streamed reads need one
        assert not now_moves_on(make_sessionmaker(engine))
        single = statement_by_statement(engine)
        with single.connect() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))  # committed without a commit()
            with engine.connect() as other:
                assert other.execute(text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        engine.dispose()


def test_a_connection_the_server_closed_is_replaced_at_checkout(database_url) -> None:
    """No request fails on a pooled connection that PostgreSQL has closed meanwhile (a
    restart, a terminated backend): the pool sees it at checkout and connects anew."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (this run is on SQLite)")
    engine, admin = make_engine(database_url), make_engine(database_url)
    try:
        with engine.connect() as conn:  # back in the pool, idle
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            for _ in range(200):  # bounded: the backend exits within milliseconds
                gone = f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {int(pid)}"
                if conn.execute(text(gone)).scalar():
                    break
                time.sleep(0.01)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()
        admin.dispose()
