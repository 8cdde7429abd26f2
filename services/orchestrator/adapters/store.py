"""The journey store on PostgreSQL: :class:`ports.Stores` and :class:`ports.JourneyStore`
over one SQLAlchemy engine, each part in the module of its aggregate.

Statements go through ``common.db``'s engine, which translates a lost database into
:class:`common.outage.DatabaseUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.adapters import timer_store
from orchestrator.adapters.attribution import SqlAttributions
from orchestrator.adapters.customers import SqlCustomers
from orchestrator.adapters.journeys import SqlJourneys
from orchestrator.adapters.mrr import SqlMrrLedger
from orchestrator.adapters.pauses import SqlPauses
from orchestrator.adapters.step_store import SqlSteps
from orchestrator.adapters.triggers import SqlTriggers
from orchestrator.service_layer.ports import Claimed, Lease


class SqlJourneyStore:
    """One transaction's store, on ``conn`` (the caller's transaction)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.customers = SqlCustomers(conn)
        self.journeys = SqlJourneys(conn)
        self.steps = SqlSteps(conn)
        self.triggers = SqlTriggers(conn)
        self.pauses = SqlPauses(conn)
        self.attributions = SqlAttributions(conn)
        self.mrr = SqlMrrLedger(conn)


class SqlStores:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[SqlJourneyStore]:
        async with self.engine.begin() as conn:
            yield SqlJourneyStore(conn)

    async def claim(self, lease: Lease, now: datetime, limit: int) -> list[Claimed]:
        async with self.engine.connect() as conn:
            # One statement, atomic on its own: no BEGIN and COMMIT round trips around it.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await timer_store.claim(conn, lease, now, limit)
