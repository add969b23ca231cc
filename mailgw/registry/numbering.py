"""Incoming numbers (số đến): 1, 2, 3, … per register and year, in the inserting transaction.

Every insert into a register first locks the register's chain head row (``SELECT … FOR UPDATE``
on PostgreSQL; SQLite already serialises writers with ``BEGIN IMMEDIATE``), so numbers and the
hash chain of one register advance one transaction at a time, across threads and gateway nodes.
The number is taken with ``UPDATE … RETURNING`` on the (register, year) counter row in the same
transaction as the entry's insert: a rollback or a crash gives the number back, so there is
never a gap and never a duplicate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailgw.registry.models import GENESIS_HASH, RegisterChain, RegisterCounter

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"


def year_of(arrival: dt.datetime, timezone: str = DEFAULT_TIMEZONE) -> int:
    """The register year of an arrival time: its calendar year in the agency's time zone."""
    if arrival.tzinfo is None:
        raise ValueError("arrival time must be timezone-aware")
    return arrival.astimezone(ZoneInfo(timezone)).year


def insert_missing(session: Session, table: type, rows: dict | list[dict]) -> None:
    """INSERT … ON CONFLICT DO NOTHING of one row or several: rows already there are kept."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    session.execute(stmt, rows)


@dataclass(frozen=True)
class ChainHead:
    register: str
    last_seq: int
    last_hash: str


def lock_register(session: Session, register: str) -> ChainHead:
    """Lock the register for the rest of the transaction; return its chain head."""
    query = (
        select(RegisterChain.last_seq, RegisterChain.last_hash)
        .where(RegisterChain.register == register)
        .with_for_update()
    )
    row = session.execute(query).one_or_none()
    if row is None:  # the register's first entry: make its head row (another node may race)
        values = {"register": register, "last_seq": 0, "last_hash": GENESIS_HASH}
        insert_missing(session, RegisterChain, values)
        row = session.execute(query).one()
    return ChainHead(register, row.last_seq, row.last_hash)


def advance_chain(session: Session, register: str, seq: int, entry_hash: str) -> None:
    """Move the (locked) chain head to the entry just inserted."""
    session.execute(
        update(RegisterChain)
        .where(RegisterChain.register == register)
        .values(last_seq=seq, last_hash=entry_hash)
    )


def next_number(session: Session, register: str, year: int) -> int:
    """The next số đến of (register, year). Call with the register locked (lock_register)."""
    bump = (
        update(RegisterCounter)
        .where(RegisterCounter.register == register, RegisterCounter.year == year)
        .values(last_number=RegisterCounter.last_number + 1)
        .returning(RegisterCounter.last_number)
    )
    number = session.execute(bump).scalar_one_or_none()
    if number is None:  # first entry of the year
        values = {"register": register, "year": year, "last_number": 0}
        insert_missing(session, RegisterCounter, values)
        number = session.execute(bump).scalar_one()
    return number
