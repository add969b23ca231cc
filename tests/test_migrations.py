"""The Alembic migrations are the only way the schema changes: they must match the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import mailgw.registry.models  # noqa: F401 - every table in the metadata
from mailgw.db.engine import make_engine
from mailgw.db.migrate import alembic_config, is_up_to_date, upgrade
from mailgw.db.models import Base
from mailgw.search.models import include_name, include_object


def test_migrations_match_models_and_downgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        assert is_up_to_date(engine)
        with engine.connect() as conn:
            assert (
                compare_metadata(
                    MigrationContext.configure(
                        conn, opts={"include_name": include_name, "include_object": include_object}
                    ),
                    Base.metadata,
                )
                == []
            )
        command.downgrade(alembic_config(engine), "base")
        upgrade(engine)
        assert is_up_to_date(engine)
    finally:
        engine.dispose()
