"""Shared helpers for the register tests (imported by tests/test_registry_*.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.migrate import upgrade
from mailgw.db.models import Message
from mailgw.registry.register import Document, Fields

ARRIVAL = dt.datetime(2026, 3, 12, 1, 15, tzinfo=dt.UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_messages(sessions: sessionmaker[Session], count: int, start: int = 0) -> list[int]:
    """Insert ``count`` bare message rows; return their ids."""
    rows = [
        {
            "queue_id": f"T{start + i:010d}",
            "spool_path": f"spool/t/{start + i}.eml",
            "sha256": hashlib.sha256(str(start + i).encode()).hexdigest(),
            "received_at": ARRIVAL,
            "mail_from": "vanthu@example.gov.vn",
            "rcpt_to": ["lanhdao@example.gov.vn"],
            "origin": "smtp",
            "size": 10,
            "trace_headers": b"",
            "added_headers": b"",
            "state": "processing",
            "process_attempts": 1,
            "relay_attempts": 0,
            "dsn_sent": False,
        }
        for i in range(count)
    ]
    with sessions() as session, session.begin():
        result = session.execute(insert(Message).returning(Message.id), rows)
        return sorted(result.scalars())


def doc(content: bytes, index: int = 0, name: str = "cv.pdf") -> Document:
    return Document(
        index, name, "application/pdf", len(content), hashlib.sha256(content).hexdigest(),
        f"text of {name}", content,
    )  # fmt: skip


FIELDS = Fields(
    issuer="UBND tỉnh Quảng Ngãi",
    doc_symbol="45/GM-UBND",
    doc_date=dt.date(2026, 3, 10),
    doc_type="GM",
    doc_type_name="Giấy mời",
    summary="Họp giao ban tháng 3",
    unit="Văn phòng",
    urgency="khan",
)
