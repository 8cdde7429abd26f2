"""API keys: the one key system of Tenure, for the ingest API and the operator API.

A key reads ``tnr_<id>_<secret>``: ``id`` is 12 random lowercase hex characters, public
and used for lookup; ``secret`` is 32 random bytes in URL-safe base64 without padding
(43 characters, which may themselves contain ``_``). PostgreSQL (table ``api_keys``)
holds only the SHA-256 of the secret; the full key is shown once, when it is created
(``tenure keys create``), and can never be recovered.

Requests are authenticated in memory by a :class:`KeyCache`, which reloads the active
keys from the database periodically: no query on the hot path, and a revocation takes
effect at the next refresh. A key shaped like a stored one whose id is not loaded yet
(one just created) triggers a reload, at most one per ``miss_reload_s``, so it works on
its first request. Nothing here logs a key, a secret or a hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.db.tables import api_keys
from common.outage import DatabaseUnavailable

log = logging.getLogger(__name__)

PREFIX = "tnr"
ID_HEX_CHARS = 12
SECRET_BYTES = 32
# Longer than any key or configured static key; a bigger header is refused before hashing.
MAX_PRESENTED_CHARS = 1024
# The longest a revocation may go unnoticed: refresh intervals must stay below it.
MAX_REFRESH_S = 60.0
# After a failed refresh, retry sooner than the normal interval (revocations wait on it).
RETRY_S = 5.0
# The default least time between two reloads that unknown keys trigger.
MISS_RELOAD_S = 1.0

_ID = re.compile(rf"[0-9a-f]{{{ID_HEX_CHARS}}}")
# URL-safe base64 without padding; at least SECRET_BYTES bytes' worth of characters.
_SECRET = re.compile(r"[A-Za-z0-9_-]{43,256}")


class Scope(StrEnum):
    """What a key may do. Scopes do not imply one another: grant each one needed."""

    EVENTS_WRITE = "events:write"
    OPERATOR_READ = "operator:read"
    OPERATOR_ADMIN = "operator:admin"


class ApiKeyError(Exception):
    """Base class of the errors of this module."""


class UnknownScope(ApiKeyError, ValueError):
    def __init__(self, scope: str) -> None:
        known = ", ".join(s.value for s in Scope)
        super().__init__(f"unknown scope {scope!r} (known scopes: {known})")
        self.scope = scope


class KeyStoreError(ApiKeyError):
    """The key table could not be read or written (database unreachable, not migrated...)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as the rest of the system sees it: never its secret nor its hash.

    ``created_at`` is ``None`` only for static keys configured in settings.
    """

    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def static(cls, key_id: str, scopes: Iterable[Scope], *, name: str = "") -> ApiKey:
        """A key configured in settings rather than made with ``tenure keys create``."""
        return cls(id=key_id, name=name or key_id, scopes=frozenset(scopes))

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class NewKey:
    """The row to store for a freshly generated key."""

    id: str
    name: str
    scopes: frozenset[Scope]
    secret_hash: bytes = field(repr=False)


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """The scopes named by ``values``. Raises :class:`UnknownScope` naming the first bad one."""
    scopes = set()
    for value in values:
        try:
            scopes.add(Scope(value))
        except ValueError:
            raise UnknownScope(value) from None
    return frozenset(scopes)


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret.

    A fast hash is the right one here: the secret is 256 random bits, so guessing it from
    the hash is infeasible however fast each guess is. Slow password hashes (bcrypt,
    argon2) exist for low-entropy, human-chosen passwords, and would cost tens of
    milliseconds of CPU on every request.
    """
    # surrogatepass: any str encodes, and distinct strings stay distinct.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def generate(name: str, scopes: Iterable[Scope | str]) -> tuple[str, NewKey]:
    """A new random key: the full key string (to show once) and the row to store.

    Raises :class:`UnknownScope` for a scope that does not exist and ``ValueError`` for
    an empty name or no scope at all.
    """
    name = name.strip()
    if not name:
        raise ValueError("an API key needs a name")
    chosen = parse_scopes(scopes)
    if not chosen:
        raise ValueError("an API key needs at least one scope")
    key_id = secrets.token_hex(ID_HEX_CHARS // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    full = f"{PREFIX}_{key_id}_{secret}"
    return full, NewKey(id=key_id, name=name, scopes=chosen, secret_hash=hash_secret(secret))


def parse(presented: str) -> tuple[str, str] | None:
    """Split a presented key into ``(id, secret)``; ``None`` if it is not shaped like a key.

    Only the first two underscores separate: the secret may contain ``_`` itself.
    """
    if len(presented) > MAX_PRESENTED_CHARS:
        return None
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    _, key_id, secret = parts
    if not _ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


def verify(secret: str, stored_hash: bytes) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


class Authenticator(Protocol):
    """Tells which key, if any, a request presented."""

    def authenticate(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or ``None``. Never blocks, never raises."""
        ...

    async def recheck(self, presented: str) -> ApiKey | None:
        """For a key :meth:`authenticate` did not know: the active key ``presented`` is
        once the keys were reloaded, if it could be one created since they were loaded.
        May wait for that reload (bounded); never raises."""
        ...


class FakeAuthenticator:
    """An :class:`Authenticator` over a dict of full key string to key; for unit tests."""

    def __init__(self, keys: Mapping[str, ApiKey] | None = None) -> None:
        self.keys = dict(keys or {})

    def authenticate(self, presented: str) -> ApiKey | None:
        key = self.keys.get(presented)
        return None if key is None or key.revoked_at is not None else key

    async def recheck(self, presented: str) -> ApiKey | None:
        return self.authenticate(presented)  # ``keys`` is read on every call: no reload


_PUBLIC = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.scopes,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


def _to_key(row: Any) -> ApiKey:
    scopes = set()
    for value in row.scopes:
        try:
            scopes.add(Scope(value))
        except ValueError:
            # A scope this version does not know (written by a newer one): grant nothing
            # for it, but keep the key's other scopes working.
            log.warning("api key %s has an unknown scope %r; ignored", row.id, value)
    return ApiKey(
        id=row.id,
        name=row.name,
        scopes=frozenset(scopes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _describe(exc: SQLAlchemyError | OSError | DatabaseUnavailable) -> str:
    """One line about a database failure, without the statement or its parameters."""
    if isinstance(exc, DatabaseUnavailable):
        cause = exc.__cause__
        if isinstance(cause, SQLAlchemyError | OSError):
            return _describe(cause)
        return f"database unreachable: {exc}"
    if isinstance(exc, OSError):  # connection refused, no such socket, timed out
        return f"database unreachable: {type(exc).__name__}: {exc}".splitlines()[0]
    # DBAPIError's own text includes the statement's parameters: use the driver's message.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, OSError):
        return _describe(cause)
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if "api_keys" in reason and "does not exist" in reason:
        reason += " (run the migrations: table api_keys comes with revision 0002)"
    return f"database error: {reason}"


class KeySource(Protocol):
    """What a :class:`KeyCache` loads the active keys from (a :class:`KeyRepository`)."""

    async def active_hashes(self) -> dict[str, tuple[bytes, ApiKey]]:
        """Every key not revoked: id to (secret hash, key). Raises :class:`KeyStoreError`."""
        ...


class KeyRepository:
    """The ``api_keys`` table, over an engine from :func:`common.db.create_engine`.

    Every method runs in its own transaction and raises :class:`KeyStoreError` when the
    database cannot be reached or is not migrated; the message never holds a secret.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        where = self._engine.url.render_as_string(hide_password=True)
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError, DatabaseUnavailable) as exc:
            raise KeyStoreError(f"{_describe(exc)} (at {where})") from exc

    async def create(self, key: NewKey) -> ApiKey:
        """Store a new key. Not idempotent: the same id twice raises :class:`KeyStoreError`."""
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    sa.insert(api_keys)
                    .values(
                        id=key.id,
                        name=key.name,
                        scopes=sorted(key.scopes),
                        secret_hash=key.secret_hash,
                    )
                    .returning(*_PUBLIC)
                )
            ).one()
        return _to_key(row)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; ``False`` if there is no such key.

        Idempotent: revoking a revoked key keeps its first revocation time.
        """
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    sa.update(api_keys)
                    .where(api_keys.c.id == key_id)
                    .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, sa.func.now()))
                    .returning(api_keys.c.id)
                )
            ).first()
        return row is not None

    async def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        async with self._transaction() as conn:
            rows = await conn.execute(
                sa.select(*_PUBLIC).order_by(api_keys.c.created_at, api_keys.c.id)
            )
            return [_to_key(row) for row in rows]

    async def active_hashes(self) -> dict[str, tuple[bytes, ApiKey]]:
        async with self._transaction() as conn:
            rows = await conn.execute(
                sa.select(*_PUBLIC, api_keys.c.secret_hash).where(api_keys.c.revoked_at.is_(None))
            )
            return {row.id: (bytes(row.secret_hash), _to_key(row)) for row in rows}


class KeyCache:
    """The active keys in memory: an :class:`Authenticator` that never touches the database.

    ``static`` maps full key strings to keys accepted besides the stored ones (a
    development key from settings, see :meth:`ApiKey.static`); they need not have the
    ``tnr_`` shape. Until the first successful :meth:`refresh`, only static keys
    authenticate.

    :meth:`recheck` reloads for a key whose id is not loaded, at most once every
    ``miss_reload_s`` seconds whatever the number of such keys presented (a flood of
    made-up keys costs one query a ``miss_reload_s``), and waits for a reload that began
    after it was called, so a key created just before its first request works.
    """

    def __init__(
        self,
        repository: KeySource | None = None,
        *,
        static: Mapping[str, ApiKey] | None = None,
        miss_reload_s: float = MISS_RELOAD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Public so that an app can build the cache first and attach the repository when it
        # starts (and its engine exists); without one, only static keys authenticate.
        self.repository = repository
        # Compared as digests, so that every comparison is between equal-length values.
        self._static = [(hash_secret(full), key) for full, key in (static or {}).items()]
        self._active: dict[str, tuple[bytes, ApiKey]] = {}
        self._loaded = False
        self._miss_reload_s = miss_reload_s
        self._clock = clock
        self._began_at = -float("inf")  # when the latest load began
        self._ended_began_at = -float("inf")  # when the latest load that ended began
        self._reload: asyncio.Future[None] | None = None  # the one reload misses wait for

    @property
    def loaded(self) -> bool:
        """Whether the stored keys have been loaded at least once."""
        return self._loaded

    async def refresh(self) -> int:
        """Reload the active keys; how many there are. On error the current set is kept.

        Raises :class:`KeyStoreError`, and ``RuntimeError`` when there is no repository.
        """
        if self.repository is None:
            raise RuntimeError("KeyCache.refresh() needs a repository")
        began = self._began_at = self._clock()
        try:
            active = await self.repository.active_hashes()
        finally:
            self._ended_began_at = max(self._ended_began_at, began)
        if active.keys() != self._active.keys():
            log.info("api keys loaded: %d active", len(active))
        self._active = active  # one reference swap: readers see the old or the new set
        self._loaded = True
        return len(active)

    def authenticate(self, presented: str) -> ApiKey | None:
        if len(presented) > MAX_PRESENTED_CHARS:
            return None
        digest = hash_secret(presented)
        found: ApiKey | None = None
        for static_digest, key in self._static:
            # No early exit: the time taken does not depend on which static key matched.
            if hmac.compare_digest(digest, static_digest):
                found = key
        if found is not None:
            return found
        parsed = parse(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        # The id is public (it is printed by `tenure keys list`), so looking it up in a
        # dict may take variable time; only the secret is compared in constant time.
        entry = self._active.get(key_id)
        if entry is None:
            return None
        stored_hash, key = entry
        return key if verify(secret, stored_hash) else None

    async def recheck(self, presented: str) -> ApiKey | None:
        """:meth:`authenticate`, after a reload when ``presented`` is shaped like a stored
        key whose id is not loaded: waits for a load that began after this call, at most
        ``miss_reload_s`` plus :data:`RETRY_S`. A failed reload answers ``None``."""
        key = self.authenticate(presented)
        parsed = parse(presented) if key is None and self.repository is not None else None
        if parsed is None or parsed[0] in self._active:
            return key  # a static key, not a key's shape, or a known id: nothing to reload
        called_at = self._clock()
        try:
            async with asyncio.timeout(self._miss_reload_s + RETRY_S):
                while self._ended_began_at < called_at:
                    if self._reload is None or self._reload.done():
                        self._reload = asyncio.ensure_future(self._reload_when_allowed())
                    await asyncio.shield(self._reload)
        except TimeoutError:
            return None
        return self.authenticate(presented)

    async def _reload_when_allowed(self) -> None:
        """Reload once ``miss_reload_s`` has passed since the latest load began; a failure
        is logged here, once for every waiting caller."""
        wait = self._began_at + self._miss_reload_s - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            async with asyncio.timeout(RETRY_S):
                await self.refresh()
        except Exception as exc:
            log.warning(
                "api key reload for an unknown key failed, keeping the %d keys loaded: %s",
                len(self._active),
                str(exc) or type(exc).__name__,
            )

    async def run(self, stop: asyncio.Event, every_s: float = 30.0) -> None:
        """Refresh now, then every ``every_s`` seconds until ``stop`` is set.

        A failed refresh, or one taking longer than ``every_s``, is logged and retried
        after at most :data:`RETRY_S` seconds; the last good set stays in use meanwhile.
        Raises ``ValueError`` unless ``0 < every_s < MAX_REFRESH_S``, so a revocation is
        seen within a minute.
        """
        if not 0 < every_s < MAX_REFRESH_S:
            raise ValueError(f"every_s must be in (0, {MAX_REFRESH_S:g}) seconds, not {every_s}")
        while not stop.is_set():
            delay = every_s
            try:
                async with asyncio.timeout(every_s):
                    await self.refresh()
            except Exception as exc:
                delay = min(every_s, RETRY_S)
                log.warning(
                    "api key refresh failed, keeping the %d keys loaded before: %s",
                    len(self._active),
                    exc if str(exc) else type(exc).__name__,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
