"""SQLAlchemy models. The schema only changes through Alembic migrations (migrations/)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


# Message states, in the order a message normally moves through them.
SPOOLED = "spooled"  # durable, waiting for the pipeline
PROCESSING = "processing"  # leased by a pipeline worker
QUEUED = "queued"  # processed, waiting for the relay
SENDING = "sending"  # leased by a relay worker
DEFERRED = "deferred"  # relay failed temporarily; retried at next_attempt_at
HELD = "held"  # kept: no relay host configured, or held for review by a rule
RELAYED = "relayed"  # every recipient accepted downstream
BOUNCED = "bounced"  # permanent failure or expiry for at least one recipient; DSN sent
REJECTED = "rejected"  # refused by a rule (bounce action); DSN sent
DELETED = "deleted"  # removed from the queue by an administrator (the archive keeps it)
DONE_STATES = (RELAYED, BOUNCED, REJECTED, DELETED)
MESSAGE_STATES = (SPOOLED, PROCESSING, QUEUED, SENDING, DEFERRED, HELD, *DONE_STATES)


class Message(Base):
    """One message: accepted over SMTP/IMAP, or made by the gateway itself (DSN, notification).

    The raw bytes live in the spool file ``spool_path`` (relative to the data directory) and are
    never rewritten; ``trace_headers`` are prepended when relaying. With a retention period the
    spool file of a finished message is removed after it (``raw_purged_at``).
    """

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    queue_id: Mapped[str] = mapped_column(String(32), unique=True)
    origin: Mapped[str] = mapped_column(String(16), default="smtp")  # smtp, imap, local
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    mail_from: Mapped[str] = mapped_column(String(512), default="")
    rcpt_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    client_addr: Mapped[str | None] = mapped_column(String(64))
    client_helo: Mapped[str | None] = mapped_column(String(255))
    auth_user: Mapped[str | None] = mapped_column(String(255))
    listener: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer, default=0)
    spool_path: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    trace_headers: Mapped[bytes] = mapped_column(LargeBinary, default=b"")  # Received
    added_headers: Mapped[bytes] = mapped_column(LargeBinary, default=b"")  # X-Mailgw-*, rules

    state: Mapped[str] = mapped_column(String(16), default=SPOOLED)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    process_attempts: Mapped[int] = mapped_column(Integer, default=0)

    # Filled by the pipeline.
    message_id: Mapped[str | None] = mapped_column(String(998))
    subject: Mapped[str | None] = mapped_column(Text)
    header_from: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    category: Mapped[str | None] = mapped_column(String(32))
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rules_version: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # OpenPGP facts, if signed
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    # Relay.
    relay_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    rcpt_status: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    relayed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    hold_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    dsn_sent: Mapped[bool] = mapped_column(Boolean, default=False)

    # Retention (mailgw/retention.py): when the raw bytes were removed after the retention period.
    raw_purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_messages_state_next", "state", "next_attempt_at"),
        Index("ix_messages_received_at", "received_at"),
        Index("ix_messages_message_id", "message_id"),
        Index("ix_messages_raw_purged", "raw_purged_at", "id"),  # pruning walks the unpurged
    )


class User(Base):
    """A staff account for SMTP submission (AUTH PLAIN/LOGIN)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A bearer token for the API. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(16))  # admin, auditor, service
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RuleVersion(Base):
    """Every rules text that was loaded, so each decision can name the version that made it.
    One row per text: activating a text again (a rollback) moves its ``activated_at``."""

    __tablename__ = "rule_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(1024))  # file path, "default" or "api"
    text: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)  # first
    activated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)  # last
    active: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEvent(Base):
    """One read of the archive or one administrative act through the API. Append-only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    token_id: Mapped[int | None] = mapped_column(Integer)
    token_name: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))  # e.g. search.documents, document.download
    resource: Mapped[str | None] = mapped_column(String(255))  # e.g. document id, queue id
    query: Mapped[str | None] = mapped_column(Text)  # the search query or request parameters
    client_addr: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)  # HTTP status answered

    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_action", "action"))
