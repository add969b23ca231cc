"""search index: search_index, search_terms; SQLite FTS5 table or PostgreSQL tsvector + GIN

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mailgw.db.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "search_index",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ref_id", _BigId, nullable=False),
        sa.Column("message_row_id", _BigId, nullable=False),
        sa.Column("arrival", mailgw.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("register", sa.String(length=64), nullable=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("symbol", sa.String(length=255), nullable=True),
        sa.Column("doc_type", sa.String(length=32), nullable=True),
        sa.Column("urgency", sa.String(length=16), nullable=True),
        sa.Column("signed", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "ref_id", name="uq_search_index_ref"),
    )
    op.create_index("ix_search_index_arrival", "search_index", ["kind", "arrival", "id"])
    op.create_index("ix_search_index_category", "search_index", ["kind", "category", "arrival"])
    op.create_index("ix_search_index_symbol", "search_index", ["kind", "symbol", "arrival"])
    op.create_index(
        "ix_search_index_number",
        "search_index",
        ["kind", "register", "year", "number", "arrival"],
    )
    op.create_index("ix_search_index_message", "search_index", ["message_row_id"])
    op.create_table(
        "search_terms",
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("entry_id", _BigId, nullable=False),
        sa.PrimaryKeyConstraint("field", "value", "entry_id"),
    )
    op.create_index("ix_search_terms_entry", "search_terms", ["entry_id"])
    if op.get_bind().dialect.name == "sqlite":
        # Folded, pre-tokenised text (mailgw.search.index); rowid = search_index.id.
        op.execute(
            "CREATE VIRTUAL TABLE search_fts USING fts5("
            "subject, body, sender, recipients, filename, issuer, "
            "tokenize = 'unicode61 remove_diacritics 0')"
        )
    else:
        op.add_column("search_index", sa.Column("tsv", postgresql.TSVECTOR(), nullable=True))
        op.execute("CREATE INDEX ix_search_index_tsv ON search_index USING gin (tsv)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS search_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_search_index_tsv")
    op.drop_index("ix_search_terms_entry", table_name="search_terms")
    op.drop_table("search_terms")
    for name in ("message", "number", "symbol", "category", "arrival"):
        op.drop_index(f"ix_search_index_{name}", table_name="search_index")
    op.drop_table("search_index")
