"""One schema: the migrated database is exactly what ``common.db.tables`` declares.

Two comparisons, both against a database migrated to head on the real PostgreSQL:

- Alembic's autogenerate comparison (``alembic.autogenerate.compare_metadata``, with
  ``compare_type`` and ``compare_server_default``): tables, columns, types, nullability,
  server defaults, primary and foreign keys, unique constraints and index columns. What
  it lists is what ``alembic revision --autogenerate`` would write into a migration.
- What Alembic does not compare: the predicates of partial indexes, check constraints,
  identity columns and the exact text of each default. For these the migrated database's
  catalog is compared with that of an empty database the metadata was created in
  (``metadata.create_all``): both are rendered by PostgreSQL itself (``pg_indexes``,
  ``pg_get_constraintdef``, ``pg_get_expr``), so spelling and casts cannot differ,
  only meaning. Column order is not compared (a column a migration adds comes last).

A third test makes a copy of the metadata drift and checks that both comparisons say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from common.db import alembic_config, create_engine
from common.db.tables import metadata
from devstack.stack import Stack

Catalog = dict[str, dict[tuple[str, str], Any]]

_COLUMNS = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'r'
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'alembic_version'
"""
_CONSTRAINTS = """
    SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    JOIN pg_class c ON c.oid = k.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
    WHERE c.relname <> 'alembic_version'
"""
_INDEXES = """
    SELECT tablename, indexname, indexdef FROM pg_indexes
    WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""


def catalog(conn: Connection) -> Catalog:
    """Every column, constraint and index of the public schema, as PostgreSQL renders it."""
    return {
        kind: {(row[0], row[1]): tuple(row[2:]) for row in conn.execute(sa.text(query))}
        for kind, query in (
            ("column", _COLUMNS),
            ("constraint", _CONSTRAINTS),
            ("index", _INDEXES),
        )
    }


def catalog_differences(migrated: Catalog, declared: Catalog) -> list[str]:
    found = []
    for kind in migrated:
        for key in sorted(migrated[kind].keys() | declared[kind].keys()):
            have, want = migrated[kind].get(key), declared[kind].get(key)
            if have != want:
                found.append(f"{kind} {'.'.join(key)}: migrated {have}, declared {want}")
    return found


def alembic_differences(conn: Connection, target: sa.MetaData) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, target))


async def run(url: str, fn: Callable[[Connection], Any]) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def migrated_url(stack: Stack) -> str:
    return stack.new_database("it_schema_migrated")


async def declared(stack: Stack, name: str, target: sa.MetaData) -> str:
    """An empty database with ``target`` created in it (no migrations); its URL."""
    url = await asyncio.to_thread(stack.new_database, name, migrated=False)
    await run(url, target.create_all)
    return url


async def test_the_migrated_database_is_what_the_metadata_declares(migrated_url: str) -> None:
    differences = await run(migrated_url, lambda conn: alembic_differences(conn, metadata))
    assert differences == [], "\n".join(map(str, differences))


async def test_indexes_constraints_and_defaults_match_to_the_letter(
    stack: Stack, migrated_url: str
) -> None:
    declared_url = await declared(stack, "it_schema_declared", metadata)
    migrated, wanted = await run(migrated_url, catalog), await run(declared_url, catalog)
    assert {table for table, _ in wanted["column"]} == set(metadata.tables)
    differences = catalog_differences(migrated, wanted)
    assert differences == [], "\n".join(differences)


async def test_both_comparisons_see_a_drift(stack: Stack, migrated_url: str) -> None:
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    timers = drifted.tables["timers"]
    timers.c.due_at.nullable = False  # a nullability Alembic sees
    (waiting,) = (i for i in timers.indexes if i.name == "timers_waiting")
    waiting.dialect_options["postgresql"]["where"] = sa.text("status = 'pending'")  # a predicate

    differences = await run(migrated_url, lambda conn: alembic_differences(conn, drifted))
    assert [d[0][0] for d in differences if isinstance(d, list)] == ["modify_nullable"], differences

    drifted_url = await declared(stack, "it_schema_drifted", drifted)
    migrated, wanted = await run(migrated_url, catalog), await run(drifted_url, catalog)
    assert sorted(d.split(":")[0] for d in catalog_differences(migrated, wanted)) == [
        "column timers.due_at",
        "index timers.timers_waiting",
    ]


async def test_the_recent_migrations_go_down_and_up_again(stack: Stack) -> None:
    """The downgrades of the migrations since 0013 run (0015 drops its indexes
    concurrently, outside a transaction), and upgrading again gives the declared schema."""
    url = await asyncio.to_thread(stack.new_database, "it_schema_down_up")
    config = alembic_config(url)
    await asyncio.to_thread(command.downgrade, config, "0013")
    indexes = await run(url, lambda conn: catalog(conn)["index"])
    assert ("deliveries", "deliveries_customer") not in indexes
    await asyncio.to_thread(command.upgrade, config, "head")
    differences = await run(url, lambda conn: alembic_differences(conn, metadata))
    assert differences == [], "\n".join(map(str, differences))
