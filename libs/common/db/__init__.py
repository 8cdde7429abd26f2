"""PostgreSQL: the async engine, the schema (:mod:`common.db.tables`) and its migrations.

The tables are declared once, in :mod:`common.db.tables`; the Alembic migrations in
``common/migrations`` create them, and a test keeps the two equal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Dialect, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from common.outage import DatabaseUnavailable, describe, unavailable

MIGRATIONS = Path(__file__).parent.parent / "migrations"


def async_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the asyncpg driver (``postgresql://`` is accepted)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine; nothing connects until first use.

    Its connections raise :class:`common.outage.DatabaseUnavailable` when PostgreSQL
    cannot be reached or drops them (a connection refused or lost, a server shutting
    down), whatever the driver raised; other errors are SQLAlchemy's as usual.
    """
    engine = create_async_engine(async_url(url), pool_size=pool_size, pool_pre_ping=True)
    event.listen(engine.sync_engine, "do_connect", _connect)
    event.listen(engine.sync_engine, "handle_error", _classify)
    return engine


def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect as SQLAlchemy would; a refused connection becomes DatabaseUnavailable.

    (SQLAlchemy wraps only the driver's own errors, and a missing socket or a refused
    TCP connection reaches the caller as a bare ``OSError``.)
    """
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as exc:
        if isinstance(exc, OSError) or unavailable(exc):
            raise DatabaseUnavailable(f"cannot connect: {describe(exc)}") from exc
        raise


def _classify(context: ExceptionContext) -> BaseException | None:
    """A statement that failed because the connection is gone: DatabaseUnavailable.

    Returned, not raised: SQLAlchemy still invalidates the connection (and the pool).
    Not during the pool's pre-ping, which must see the driver's error to reconnect.
    """
    if context.is_pre_ping:
        return None
    if context.is_disconnect or unavailable(context.original_exception):
        return DatabaseUnavailable(describe(context.original_exception))
    return None


async def database_ready(engine: AsyncEngine, timeout_s: float = 2.0) -> str | None:
    """None if PostgreSQL answers ``SELECT 1`` within ``timeout_s``, else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
    except TimeoutError:
        return f"database unavailable: no answer in {timeout_s:g} s"
    except Exception as exc:
        if unavailable(exc):
            return f"database unavailable: {describe(exc)}"
        raise
    return None


def session_maker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Blocking; idempotent."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)
