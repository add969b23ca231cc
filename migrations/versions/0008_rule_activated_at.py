"""rules: rule_versions.activated_at, when each version last became the active one

A rollback to an earlier text activates its stored version again: loaded_at (the first load)
stays, activated_at moves, so the history lists versions in the order they were in force.
Existing versions get their loaded_at.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import mailgw.db.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rule_versions") as batch:
        batch.add_column(
            sa.Column("activated_at", mailgw.db.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute("UPDATE rule_versions SET activated_at = loaded_at")
    with op.batch_alter_table("rule_versions") as batch:
        batch.alter_column(
            "activated_at",
            existing_type=mailgw.db.models.UTCDateTime(timezone=True),
            nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("rule_versions") as batch:
        batch.drop_column("activated_at")
