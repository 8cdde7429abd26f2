"""The schema's own rules, read from the SQLAlchemy metadata (no database)."""

from __future__ import annotations

from common.db.tables import metadata


def test_every_table_holding_customer_rows_is_indexed_by_customer() -> None:
    """A customer's export and erasure read and change its rows in every such table: each
    needs a primary key or a whole (not partial) index that starts with the customer id,
    or the statement reads the whole table."""
    unindexed = []
    for table in metadata.sorted_tables:
        if "customer_id" not in table.c:
            continue
        leading = [list(table.primary_key.columns)] + [
            list(index.columns)
            for index in table.indexes
            if index.dialect_options["postgresql"].get("where") is None
        ]
        if not any(columns and columns[0].name == "customer_id" for columns in leading):
            unindexed.append(table.name)
    assert unindexed == []
