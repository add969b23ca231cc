"""Incoming numbers: 1..N per register and year, gapless under concurrency, year rollover."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mailgw.registry.models import RegisterEntry
from mailgw.registry.numbering import year_of
from mailgw.registry.register import register_documents
from tests.test_registry_support import ARRIVAL, FIELDS, add_messages, doc, sessions

__all__ = ["sessions"]


def _register(sessions: sessionmaker[Session], message_row_id: int, content: bytes,
              register: str = "default", arrival: dt.datetime = ARRIVAL):  # fmt: skip
    with sessions() as session, session.begin():
        return register_documents(
            session, register, arrival=arrival, message_row_id=message_row_id,
            message_id=f"<{message_row_id}@t>", raw_sha256="0" * 64,
            documents=[doc(content)], fields=FIELDS,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("instant", "year"),
    [
        ("2026-12-31T16:59:59+00:00", 2026),
        ("2026-12-31T17:00:00+00:00", 2027),
        ("2026-12-31T23:59:59+07:00", 2026),
        ("2027-01-01T00:00:00+07:00", 2027),
        ("2026-01-01T00:30:00+07:00", 2026),  # 2025-12-31T17:30Z
    ],
)
def test_year_of_follows_the_agency_calendar(instant: str, year: int) -> None:
    assert year_of(dt.datetime.fromisoformat(instant)) == year


def test_year_of_refuses_naive_times() -> None:
    with pytest.raises(ValueError):
        year_of(dt.datetime(2026, 1, 1))


def test_numbers_restart_on_first_january(sessions) -> None:
    ids = add_messages(sessions, 5)
    late = dt.datetime(2026, 12, 31, 16, 59, 59, tzinfo=dt.UTC)
    new_year = dt.datetime(2026, 12, 31, 17, 0, 0, tzinfo=dt.UTC)
    got = [
        _register(sessions, ids[0], b"a", arrival=late)[0],
        _register(sessions, ids[1], b"b", arrival=late)[0],
        _register(sessions, ids[2], b"c", arrival=new_year)[0],
        _register(sessions, ids[3], b"d", arrival=late)[0],  # late worker, still 2026
        _register(sessions, ids[4], b"e", arrival=new_year)[0],
    ]
    assert [(r.year, r.number) for r in got] == [
        (2026, 1), (2026, 2), (2027, 1), (2026, 3), (2027, 2),
    ]  # fmt: skip


def test_registers_have_their_own_sequences(sessions) -> None:
    ids = add_messages(sessions, 4)
    a = _register(sessions, ids[0], b"a", "default")[0]
    b = _register(sessions, ids[1], b"b", "confidential")[0]
    c = _register(sessions, ids[2], b"c", "default")[0]
    d = _register(sessions, ids[3], b"d", "confidential")[0]
    assert [(r.register, r.number) for r in (a, b, c, d)] == [
        ("default", 1), ("confidential", 1), ("default", 2), ("confidential", 2),
    ]  # fmt: skip


def test_a_rolled_back_transaction_gives_its_number_back(sessions) -> None:
    ids = add_messages(sessions, 2)
    with sessions() as session:
        session.begin()
        register_documents(
            session, "default", arrival=ARRIVAL, message_row_id=ids[0], message_id=None,
            raw_sha256="0" * 64, documents=[doc(b"x")], fields=FIELDS,
        )  # fmt: skip
        session.rollback()
    assert _register(sessions, ids[1], b"y")[0].number == 1


def test_2000_documents_from_8_threads_get_exactly_1_to_2000(sessions) -> None:
    total = 2000
    ids = add_messages(sessions, total)
    start = threading.Barrier(8)

    def work(chunk: list[int]) -> list[int]:
        start.wait()
        return [_register(sessions, i, f"doc {i}".encode())[0].number for i in chunk]

    with ThreadPoolExecutor(8) as pool:
        numbers = [n for part in pool.map(work, [ids[k::8] for k in range(8)]) for n in part]
    assert sorted(numbers) == list(range(1, total + 1))
    with sessions() as session:
        stored = session.scalars(select(RegisterEntry.number).order_by(RegisterEntry.seq)).all()
        assert stored == list(range(1, total + 1))  # chain order is number order
        assert session.scalar(select(func.count()).select_from(RegisterEntry)) == total
