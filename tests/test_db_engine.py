"""The SQLite engine: writers serialise with BEGIN IMMEDIATE, readers never wait for them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from mailgw.db.engine import make_engine, make_read_sessionmaker, make_sessionmaker


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


def test_a_reader_keeps_its_snapshot_across_statements(engine) -> None:
    with make_read_sessionmaker(engine)() as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1
        with make_sessionmaker(engine)() as writer, writer.begin():
            writer.execute(text("INSERT INTO t VALUES (2)"))
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1
