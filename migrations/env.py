"""Alembic environment: docket passes an open connection in ``config.attributes``.

The migrations are history: they import nothing of the live ledger code (``ledger.store.models``
may change after a revision is written). No ``target_metadata``: docket never autogenerates at
run time; tests/test_migrations.py compares the migrated schema with the models instead."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config
target_metadata = None


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("docket migrations run online only (docket db upgrade)")
run_migrations_online()
