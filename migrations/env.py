"""Alembic environment: the engine comes from mailgw (see mailgw/db/migrate.py)."""

from alembic import context

from mailgw.db.models import Base
from mailgw.registry import models as _registry_models  # noqa: F401 - register tables
from mailgw.search import models as _search_models  # full-text tables are not compared

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: take the URL from alembic's -x url=...
    from mailgw.db.engine import make_engine

    engine = make_engine(context.get_x_argument(as_dictionary=True)["url"])

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_name=_search_models.include_name,
        include_object=_search_models.include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
