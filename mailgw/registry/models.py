"""Register and archive tables. The schema only changes through Alembic (migrations/versions:
0003, and 0006 for purged blobs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailgw.db.models import Base, UTCDateTime, utcnow

GENESIS_HASH = "0" * 64
BODY_PART = -1  # part_index of an entry that registers the message itself (no file attached)

_BigId = BigInteger().with_variant(Integer, "sqlite")


class RegisterChain(Base):
    """One row per register: the head of its hash chain. Locked (FOR UPDATE) by every insert."""

    __tablename__ = "register_chains"

    register: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)


class RegisterCounter(Base):
    """The last incoming number (số đến) given in a register and year."""

    __tablename__ = "register_counters"

    register: Mapped[str] = mapped_column(String(64), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class RegisterEntry(Base):
    """One line of the register. Append-only: a correction is a new row (revision > 0) that
    keeps the number of the entry it corrects and links to it with ``corrects_id``."""

    __tablename__ = "register_entries"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    register: Mapped[str] = mapped_column(String(64))
    year: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    corrects_id: Mapped[int | None] = mapped_column(_BigId, ForeignKey("register_entries.id"))
    seq: Mapped[int] = mapped_column(Integer)  # position in the register's hash chain
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))

    # The register's columns (Decree 30/2020, appendix IV) and system fields (appendix VI).
    arrival: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    issuer: Mapped[str | None] = mapped_column(Text)
    doc_symbol: Mapped[str | None] = mapped_column(String(255))
    doc_date: Mapped[dt.date | None] = mapped_column(Date)
    doc_type: Mapped[str | None] = mapped_column(String(32))
    doc_type_name: Mapped[str | None] = mapped_column(String(255))
    summary: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(String(16), default="thuong")
    confidentiality: Mapped[str | None] = mapped_column(String(16))
    notes: Mapped[str] = mapped_column(Text, default="")

    # The document itself and where it came from.
    message_row_id: Mapped[int] = mapped_column(_BigId, ForeignKey("messages.id"))
    part_index: Mapped[int] = mapped_column(Integer)  # attachment index, or BODY_PART
    message_id: Mapped[str | None] = mapped_column(String(998))  # the Message-ID header
    filename: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # blob of the document
    raw_sha256: Mapped[str] = mapped_column(String(64))  # blob of the whole raw message
    text: Mapped[str] = mapped_column(Text, default="")
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        UniqueConstraint("register", "year", "number", "revision", name="uq_register_number"),
        UniqueConstraint("register", "seq", name="uq_register_seq"),
        # Idempotence: one message part is registered once per register (and per revision).
        UniqueConstraint(
            "register", "message_row_id", "part_index", "revision", name="uq_register_part"
        ),
        Index("ix_register_entries_sha", "register", "year", "sha256"),
        Index("ix_register_entries_arrival", "register", "arrival"),
        # Retention asks whether a blob is still some document, or the raw message of another.
        Index("ix_register_entries_doc_sha", "sha256"),
        Index("ix_register_entries_raw_sha", "raw_sha256"),
    )


class RegisterArrival(Base):
    """The same document arriving again (another message, same register and year)."""

    __tablename__ = "register_arrivals"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(_BigId, ForeignKey("register_entries.id"))
    message_row_id: Mapped[int] = mapped_column(_BigId, ForeignKey("messages.id"))
    part_index: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(998))
    arrival: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    raw_sha256: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("entry_id", "message_row_id", "part_index", name="uq_register_arrival"),
        Index("ix_register_arrivals_raw_sha", "raw_sha256"),
    )


class PurgedBlob(Base):
    """A raw-message blob removed on purpose (retention), so that verification knows its absence
    is deliberate. Append-only; one row per digest, from its first removal."""

    __tablename__ = "purged_blobs"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    purged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(String(255))
    retention_days: Mapped[int | None] = mapped_column(Integer)
