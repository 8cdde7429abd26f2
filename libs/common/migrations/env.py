"""Alembic environment: runs the migrations over the async engine.

``target_metadata`` is the schema's one declaration (:mod:`common.db.tables`): Alembic's
autogenerate (``command.revision(..., autogenerate=True)``) drafts a migration from the
difference between it and the database, and ``tests/integration/test_schema.py`` fails
while they differ.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from common.db.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


asyncio.run(_main())
