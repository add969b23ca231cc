"""retention: messages.raw_purged_at, purged_blobs, lookup indexes for pruning

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import mailgw.db.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("raw_purged_at", mailgw.db.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.create_index("ix_messages_raw_purged", ["raw_purged_at", "id"], unique=False)
    with op.batch_alter_table("register_entries") as batch:
        batch.create_index("ix_register_entries_doc_sha", ["sha256"], unique=False)
        batch.create_index("ix_register_entries_raw_sha", ["raw_sha256"], unique=False)
    with op.batch_alter_table("register_arrivals") as batch:
        batch.create_index("ix_register_arrivals_raw_sha", ["raw_sha256"], unique=False)
    op.create_table(
        "purged_blobs",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("purged_at", mailgw.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )


def downgrade() -> None:
    op.drop_table("purged_blobs")
    with op.batch_alter_table("register_arrivals") as batch:
        batch.drop_index("ix_register_arrivals_raw_sha")
    with op.batch_alter_table("register_entries") as batch:
        batch.drop_index("ix_register_entries_raw_sha")
        batch.drop_index("ix_register_entries_doc_sha")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_raw_purged")
        batch.drop_column("raw_purged_at")
