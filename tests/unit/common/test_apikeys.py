"""API keys without a database: format, parsing, hashing, the in-memory cache and the fake."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from common.apikeys import (
    ApiKey,
    Authenticator,
    FakeAuthenticator,
    KeyCache,
    KeyStoreError,
    Scope,
    UnknownScope,
    generate,
    hash_secret,
    parse,
    parse_scopes,
    verify,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SECRET_WITH_UNDERSCORES = "ab_cd_" + "x" * 30 + "_yz_0-9"  # 43 URL-safe base64 characters


class FakeKeySource:
    """Stands in for KeyRepository: a dict of id to (hash, key), or an error to raise."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[bytes, ApiKey]] = {}
        self.error: Exception | None = None
        self.hang = False
        self.calls = 0

    def add(self, name: str, *scopes: Scope) -> tuple[str, ApiKey]:
        full, new = generate(name, scopes)
        key = ApiKey(id=new.id, name=new.name, scopes=new.scopes, created_at=T0)
        self.rows[new.id] = (new.secret_hash, key)
        return full, key

    def revoke(self, key_id: str) -> None:
        del self.rows[key_id]

    async def active_hashes(self) -> dict[str, tuple[bytes, ApiKey]]:
        self.calls += 1
        while self.hang:
            await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return dict(self.rows)


def test_generated_key_has_the_documented_shape_and_round_trips() -> None:
    full, new = generate("backend", [Scope.EVENTS_WRITE])
    assert re.fullmatch(r"tnr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", full)
    parsed = parse(full)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == new.id
    assert full == f"tnr_{key_id}_{secret}"
    assert verify(secret, new.secret_hash)
    assert len(new.secret_hash) == 32 and secret.encode() not in new.secret_hash
    assert (new.name, new.scopes) == ("backend", frozenset({Scope.EVENTS_WRITE}))


def test_keys_are_random() -> None:
    keys = [generate("k", ["events:write"]) for _ in range(200)]
    assert len({full for full, _ in keys}) == len({new.id for _, new in keys}) == 200


def test_new_key_repr_hides_the_hash() -> None:
    _, new = generate("k", [Scope.OPERATOR_READ])
    assert "secret_hash" not in repr(new) and new.secret_hash.hex() not in repr(new)


def test_a_secret_containing_underscores_parses_on_the_first_two_only() -> None:
    assert len(SECRET_WITH_UNDERSCORES) == 43
    presented = f"tnr_0123456789ab_{SECRET_WITH_UNDERSCORES}"
    assert parse(presented) == ("0123456789ab", SECRET_WITH_UNDERSCORES)
    assert verify(SECRET_WITH_UNDERSCORES, hash_secret(SECRET_WITH_UNDERSCORES))


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "tenure-dev-key",
        "tnr_",
        "tnr_0123456789ab",
        "tnr_0123456789ab_",
        f"xyz_0123456789ab_{'a' * 43}",
        f"TNR_0123456789ab_{'a' * 43}",
        f"tnr_0123456789AB_{'a' * 43}",  # ids are lowercase
        f"tnr_0123456789a_{'a' * 43}",  # id too short
        f"tnr_0123456789abc_{'a' * 43}",  # id too long
        f"tnr_0123456789ab_{'a' * 42}",  # secret shorter than 32 bytes
        f"tnr_0123456789ab_{'a' * 42}=",  # padding is not part of the alphabet
        f"tnr_0123456789ab_{'a' * 42}+",  # standard base64, not URL-safe
        f"tnr_0123456789ab_{'a' * 5000}",
        f" tnr_0123456789ab_{'a' * 43}",
    ],
)
def test_malformed_keys_do_not_parse(presented: str) -> None:
    assert parse(presented) is None


def test_a_tampered_secret_fails() -> None:
    full, new = generate("k", [Scope.EVENTS_WRITE])
    parsed = parse(full)
    assert parsed is not None
    _, secret = parsed
    first, last = ("B" if c == "A" else "A" for c in (secret[0], secret[-1]))
    for tampered in (first + secret[1:], secret[:-1] + last, secret + "x", secret[:-1], ""):
        assert not verify(tampered, new.secret_hash)


def test_scopes_are_validated_and_named_when_unknown() -> None:
    assert parse_scopes(["operator:read", "operator:admin", "operator:read"]) == {
        Scope.OPERATOR_READ,
        Scope.OPERATOR_ADMIN,
    }
    with pytest.raises(UnknownScope, match="'events:read'") as raised:
        generate("k", ["events:write", "events:read"])
    assert raised.value.scope == "events:read"
    with pytest.raises(ValueError, match="at least one scope"):
        generate("k", [])
    with pytest.raises(ValueError, match="name"):
        generate("   ", [Scope.EVENTS_WRITE])
    assert {s.value for s in Scope} == {"events:write", "operator:read", "operator:admin"}


def test_scopes_do_not_imply_each_other() -> None:
    admin = ApiKey(id="a", name="a", scopes=frozenset({Scope.OPERATOR_ADMIN}))
    assert admin.allows(Scope.OPERATOR_ADMIN)
    assert not admin.allows(Scope.OPERATOR_READ)
    assert not admin.allows(Scope.EVENTS_WRITE)


async def test_cache_authenticates_only_after_a_refresh_and_without_the_source() -> None:
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache = KeyCache(source)
    assert not cache.loaded
    assert cache.authenticate(full) is None
    assert await cache.refresh() == 1
    assert cache.loaded
    calls = source.calls
    assert cache.authenticate(full) == key
    assert cache.authenticate(full) == key
    assert source.calls == calls  # the hot path never reads the source


async def test_cache_rejects_a_wrong_id_a_tampered_secret_and_garbage() -> None:
    source = FakeKeySource()
    full_a, _ = source.add("a", Scope.EVENTS_WRITE)
    full_b, _ = source.add("b", Scope.EVENTS_WRITE)
    cache = KeyCache(source)
    await cache.refresh()
    _, id_a, secret_a = full_a.split("_", 2)
    _, id_b, _ = full_b.split("_", 2)
    assert cache.authenticate(f"tnr_{id_b}_{secret_a}") is None  # a's secret under b's id
    assert cache.authenticate(f"tnr_{'f' * 12}_{secret_a}") is None  # an unknown id
    tampered = secret_a[:-1] + ("B" if secret_a[-1] == "A" else "A")
    assert cache.authenticate(f"tnr_{id_a}_{tampered}") is None
    for garbage in ("", "tnr_", "Bearer " + full_a, full_a + "\n", "é" * 10, "\udcff"):
        assert cache.authenticate(garbage) is None


async def test_a_revoked_key_stops_working_at_the_next_refresh() -> None:
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache = KeyCache(source)
    await cache.refresh()
    source.revoke(key.id)
    assert cache.authenticate(full) == key  # until the refresh interval is over
    await cache.refresh()
    assert cache.authenticate(full) is None


async def test_a_failed_refresh_keeps_the_last_good_set() -> None:
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache = KeyCache(source)
    await cache.refresh()
    source.error = KeyStoreError("database unreachable")
    with pytest.raises(KeyStoreError):
        await cache.refresh()
    assert cache.authenticate(full) == key


async def test_static_keys_authenticate_beside_the_stored_ones() -> None:
    source = FakeKeySource()
    stored, stored_key = source.add("backend", Scope.EVENTS_WRITE)
    dev = ApiKey.static("default", [Scope.EVENTS_WRITE])
    assert (dev.id, dev.name, dev.scopes, dev.created_at) == (
        "default",
        "default",
        {Scope.EVENTS_WRITE},
        None,
    )
    cache = KeyCache(source, static={"tenure-dev-key": dev})
    assert cache.authenticate("tenure-dev-key") == dev  # before any refresh, too
    assert cache.authenticate("tenure-dev-kez") is None
    assert cache.authenticate("tenure-dev-key ") is None
    await cache.refresh()
    assert cache.authenticate(stored) == stored_key
    assert cache.authenticate("tenure-dev-key") == dev


async def test_a_repository_can_be_attached_after_the_cache_is_built() -> None:
    dev = ApiKey.static("default", [Scope.EVENTS_WRITE])
    cache = KeyCache(static={"tenure-dev-key": dev})
    assert cache.authenticate("tenure-dev-key") == dev
    with pytest.raises(RuntimeError, match="repository"):
        await cache.refresh()
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache.repository = source
    await cache.refresh()
    assert cache.authenticate(full) == key


async def test_run_refreshes_periodically_retries_after_errors_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache = KeyCache(source)
    stop = asyncio.Event()
    task = asyncio.create_task(cache.run(stop, every_s=0.01))

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.005)

    await until(lambda: cache.authenticate(full) == key)
    with caplog.at_level(logging.WARNING, logger="common.apikeys"):
        source.error = KeyStoreError("database unreachable at somewhere")
        failed_at = source.calls
        await until(lambda: source.calls >= failed_at + 2)  # retried
        assert cache.authenticate(full) == key  # the last good set is kept
    assert "api key refresh failed" in caplog.text
    assert full not in caplog.text and full.split("_", 2)[2] not in caplog.text
    source.error = None
    source.revoke(key.id)
    await until(lambda: cache.authenticate(full) is None)
    stop.set()
    async with asyncio.timeout(5):
        await task


async def test_run_gives_up_on_a_refresh_that_hangs(caplog: pytest.LogCaptureFixture) -> None:
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache = KeyCache(source)
    await cache.refresh()
    source.hang = True
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="common.apikeys"):
        task = asyncio.create_task(cache.run(stop, every_s=0.05))
        async with asyncio.timeout(5):
            while "TimeoutError" not in caplog.text:
                await asyncio.sleep(0.01)
    assert cache.authenticate(full) == key
    source.revoke(key.id)
    source.hang = False
    async with asyncio.timeout(5):
        while cache.authenticate(full) is not None:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(5):
        await task


@pytest.mark.parametrize("every_s", [0, -1, 60, 600])
async def test_run_refuses_an_interval_that_would_delay_revocations(every_s: float) -> None:
    with pytest.raises(ValueError, match="every_s"):
        await KeyCache(FakeKeySource()).run(asyncio.Event(), every_s=every_s)


def test_fake_authenticator_is_an_authenticator() -> None:
    live = ApiKey(id="k1", name="k1", scopes=frozenset({Scope.OPERATOR_READ}), created_at=T0)
    revoked = ApiKey(id="k2", name="k2", scopes=frozenset({Scope.OPERATOR_READ}), revoked_at=T0)
    fake: Authenticator = FakeAuthenticator({"key-1": live, "key-2": revoked})
    assert fake.authenticate("key-1") == live
    assert fake.authenticate("key-2") is None
    assert fake.authenticate("key-3") is None
    cache: Authenticator = KeyCache(FakeKeySource())
    assert cache.authenticate("key-1") is None


async def test_recheck_reloads_for_a_key_created_since_the_last_load() -> None:
    source = FakeKeySource()
    cache = KeyCache(source, miss_reload_s=0.05)
    await cache.refresh()
    full, key = source.add("new", Scope.EVENTS_WRITE)  # created after the load
    assert cache.authenticate(full) is None
    assert await cache.recheck(full) == key
    assert cache.authenticate(full) == key  # and from memory from then on


async def test_recheck_reloads_at_most_once_a_period_whatever_the_unknown_keys() -> None:
    source = FakeKeySource()
    cache = KeyCache(source, miss_reload_s=0.2)
    await cache.refresh()
    loads = source.calls
    unknown = [generate("never-stored", [Scope.EVENTS_WRITE])[0] for _ in range(50)]
    assert await asyncio.gather(*(cache.recheck(k) for k in unknown)) == [None] * 50
    assert source.calls == loads + 1  # fifty at once share one reload
    started = asyncio.get_running_loop().time()
    for k in unknown[:10]:  # one after the other: each waits for a reload begun after it
        assert await cache.recheck(k) is None
    elapsed = asyncio.get_running_loop().time() - started
    assert source.calls == loads + 11
    assert elapsed >= 10 * 0.2 * 0.9  # ... and those reloads are spaced


async def test_recheck_does_not_reload_for_what_cannot_be_a_new_key() -> None:
    source = FakeKeySource()
    full, key = source.add("backend", Scope.EVENTS_WRITE)
    cache = KeyCache(source, static={"dev-key": ApiKey.static("dev", [Scope.EVENTS_WRITE])})
    await cache.refresh()
    loads = source.calls
    _, key_id, secret = full.split("_", 2)
    tampered = secret[:-1] + ("B" if secret[-1] == "A" else "A")
    assert await cache.recheck(f"tnr_{key_id}_{tampered}") is None  # a known id
    assert await cache.recheck("not-a-key") is None
    assert await cache.recheck("dev-key") is not None
    assert await cache.recheck(full) == key
    assert source.calls == loads
    assert await KeyCache(static={}).recheck(full) is None  # no repository: nothing to load


async def test_recheck_after_a_failed_reload_refuses_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = FakeKeySource()
    cache = KeyCache(source, miss_reload_s=0.05)
    await cache.refresh()
    full, _ = source.add("new", Scope.EVENTS_WRITE)
    source.error = KeyStoreError("database unreachable")
    with caplog.at_level(logging.WARNING, logger="common.apikeys"):
        assert await asyncio.gather(*(cache.recheck(full) for _ in range(5))) == [None] * 5
    assert caplog.text.count("reload for an unknown key failed") == 1
    assert full not in caplog.text


async def test_fake_authenticator_recheck_reads_its_keys_again() -> None:
    fake = FakeAuthenticator()
    live = ApiKey(id="k1", name="k1", scopes=frozenset({Scope.OPERATOR_READ}), created_at=T0)
    assert await fake.recheck("key-1") is None
    fake.keys["key-1"] = live
    assert await fake.recheck("key-1") == live
