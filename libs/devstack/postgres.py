"""An embedded PostgreSQL server from the `pgserver` package (no root, no system service)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.db import async_url

logging.getLogger("pgserver").setLevel(logging.WARNING)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL on a unix socket inside ``data_dir``; ``url`` is ready for asyncpg."""

    data_dir: Path
    database: str = "tenure"
    delete_on_stop: bool = False
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        import pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(
            self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop"
        )
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {self.database};")
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("PostgreSQL is not started")
        return async_url(self._server.get_uri(self.database))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
