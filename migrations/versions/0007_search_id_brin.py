"""search: a BRIN index on search_index.id (PostgreSQL only)

Relevance ranks the newest matches of a query. On PostgreSQL the newest id range is combined
with the GIN matches (BitmapAnd) so only matches in that range are read from the table; a BRIN
index gives that range as a bitmap of page ranges almost for free, where the primary key would
list every row of it. Ids grow with the physical order of this append-mostly table.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_search_index_id_brin ON search_index USING brin (id) "
            "WITH (pages_per_range = 16)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_search_index_id_brin")
