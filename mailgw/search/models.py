"""Search index tables. The schema only changes through Alembic (migrations/versions/0005).

``search_index`` holds one row per indexed thing (``kind`` "message" or "document", ``ref_id``
the row id in ``messages`` or ``register_entries``), with the filter fields denormalised into
plain indexed columns. Multi-valued exact keys (tags, attachment SHA-256) live in
``search_terms``. The full text lives outside the models, made by the migration per dialect:
SQLite: the FTS5 table ``search_fts`` (rowid = search_index.id) and its shadow tables;
PostgreSQL: the column ``search_index.tsv`` (tsvector) with the GIN index ``ix_search_index_tsv``,
and the BRIN index ``ix_search_index_id_brin`` on ``id`` (migration 0007).
``include_object``/``include_name`` keep Alembic's comparison away from those.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailgw.db.models import Base, UTCDateTime

MESSAGE = "message"
DOCUMENT = "document"
KINDS = (MESSAGE, DOCUMENT)

FTS_TABLE = "search_fts"
FTS_COLUMNS = ("subject", "body", "sender", "recipients", "filename", "issuer")
TSV_COLUMN = "tsv"
TSV_INDEX = "ix_search_index_tsv"
ID_BRIN_INDEX = "ix_search_index_id_brin"
POSTGRESQL_ONLY_INDEXES = (TSV_INDEX, ID_BRIN_INDEX)

_BigId = BigInteger().with_variant(Integer, "sqlite")


class SearchEntry(Base):
    """One searchable message or register entry."""

    __tablename__ = "search_index"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    ref_id: Mapped[int] = mapped_column(_BigId)
    message_row_id: Mapped[int] = mapped_column(_BigId)
    arrival: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    year: Mapped[int] = mapped_column(Integer)  # register year, or local year of arrival
    category: Mapped[str | None] = mapped_column(String(32))
    register: Mapped[str | None] = mapped_column(String(64))
    number: Mapped[int | None] = mapped_column(Integer)
    symbol: Mapped[str | None] = mapped_column(String(255))  # folded, no spaces: 45/gm-ubnd
    doc_type: Mapped[str | None] = mapped_column(String(32))  # folded code: gm, qd, bc
    urgency: Mapped[str | None] = mapped_column(String(16))
    signed: Mapped[str] = mapped_column(String(8), default="no")  # yes, no, invalid
    # Original text (with diacritics) for showing results and cutting snippets.
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)  # messages only; documents use their entry

    __table_args__ = (
        UniqueConstraint("kind", "ref_id", name="uq_search_index_ref"),
        Index("ix_search_index_arrival", "kind", "arrival", "id"),
        Index("ix_search_index_category", "kind", "category", "arrival"),
        # arrival last: the index also gives the date order, so SQLite uses it (with or
        # without statistics) instead of walking ix_search_index_arrival for the order
        Index("ix_search_index_symbol", "kind", "symbol", "arrival"),
        Index("ix_search_index_number", "kind", "register", "year", "number", "arrival"),
        Index("ix_search_index_message", "message_row_id"),
    )


class SearchTerm(Base):
    """An exact multi-valued key of an indexed row: field "tag" or "sha256"."""

    __tablename__ = "search_terms"

    field: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    entry_id: Mapped[int] = mapped_column(_BigId, primary_key=True)

    __table_args__ = (Index("ix_search_terms_entry", "entry_id"),)


def is_full_text_name(name: str | None) -> bool:
    """The FTS5 table, its shadow tables, the tsvector column and its index."""
    if not name:
        return False
    return (
        name == FTS_TABLE
        or name.startswith(FTS_TABLE + "_")
        or name in (TSV_COLUMN, *POSTGRESQL_ONLY_INDEXES)
    )


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic hook: what the migrations make per dialect outside the models is not compared."""
    if type_ == "table":
        return not is_full_text_name(name)
    if type_ == "column" and parent_names.get("table_name") == "search_index":
        return name != TSV_COLUMN
    if type_ == "index":
        return name not in POSTGRESQL_ONLY_INDEXES
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    if type_ == "table":
        return not is_full_text_name(name)
    if type_ == "column" and getattr(getattr(obj, "table", None), "name", None) == "search_index":
        return name != TSV_COLUMN
    if type_ == "index":
        return name not in POSTGRESQL_ONLY_INDEXES
    return True
