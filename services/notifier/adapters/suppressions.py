"""The suppression list: addresses that get no marketing email (PostgreSQL).

The list keeps the SHA-256 of each normalised address, never the address itself, so that
an unsubscribe still holds after the customer's data is erased (migration 0009).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db.tables import suppressions


def normalise(address: str) -> str:
    return address.strip().lower()


def address_hash(address: str) -> str:
    """What the list keeps of an address: the hex SHA-256 of its normalised form (the same
    as migration 0009's SQL, ``sha256(lower(btrim(address)))``)."""
    return hashlib.sha256(normalise(address).encode()).hexdigest()


class Suppressions:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self, address: str, *, customer_id: str | None, reason: str, notification_id: str | None
    ) -> bool:
        """Suppress ``address``; True if it was not suppressed before. Idempotent."""
        stmt = (
            insert(suppressions)
            .values(
                address_hash=address_hash(address),
                customer_id=customer_id,
                reason=reason,
                notification_id=notification_id,
            )
            .on_conflict_do_nothing(index_elements=["address_hash"])
            .returning(suppressions.c.address_hash)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def reason(self, address: str) -> str | None:
        """Why ``address`` is suppressed, or None if it may get marketing email."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                sa.select(suppressions.c.reason).where(
                    suppressions.c.address_hash == address_hash(address)
                )
            )
        return None if value is None else str(value)
