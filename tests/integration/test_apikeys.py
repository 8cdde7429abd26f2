"""API keys on the real PostgreSQL: the ``tenure keys`` CLI, the table and the KeyCache."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from common.apikeys import KeyCache, KeyRepository, Scope
from common.db import create_engine
from devstack.stack import Stack
from tenure_cli import command as cli

TENURE = Path(sys.executable).parent / "tenure"
KEY_LINE = re.compile(r"^key:\s+(tnr_\S+)$", re.MULTILINE)
ID_LINE = re.compile(r"^id:\s+([0-9a-f]{12})$", re.MULTILINE)


@pytest.fixture(scope="module")
def database_url(stack: Stack) -> str:
    return stack.new_database("it_apikeys")


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def tenure(
    capsys: pytest.CaptureFixture[str], *argv: str, database_url: str
) -> tuple[int, str, str]:
    """``tenure keys ...`` in-process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    status = await asyncio.to_thread(cli.main, ["keys", *argv, "--database-url", database_url])
    out, err = capsys.readouterr()
    return status, out, err


def created(out: str) -> tuple[str, str]:
    key, key_id = KEY_LINE.search(out), ID_LINE.search(out)
    assert key and key_id, out
    return key_id.group(1), key.group(1)


async def test_create_authenticate_revoke_through_the_cli(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: AsyncEngine
) -> None:
    argv = ["create", "--name", "billing backend", "--scope", "events:write"]
    status, out, err = await tenure(capsys, *argv, database_url=database_url)
    assert status == 0, err
    key_id, full = created(out)
    assert full.startswith(f"tnr_{key_id}_")
    assert "only this once" in err

    cache = KeyCache(KeyRepository(engine))
    await cache.refresh()
    key = cache.authenticate(full)
    assert key is not None
    assert (key.id, key.name, key.scopes) == (key_id, "billing backend", {Scope.EVENTS_WRITE})
    assert key.created_at is not None and key.revoked_at is None

    secret = full.split("_", 2)[2]
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM api_keys"))).all()
        as_text = (await conn.execute(sa.text("SELECT api_keys::text FROM api_keys"))).scalars()
        dumped = "\n".join(as_text)
    assert rows
    for row in rows:
        for value in row:
            if isinstance(value, bytes):
                assert secret.encode() not in value and full.encode() not in value
            else:
                assert secret not in str(value)
    assert secret not in dumped and full not in dumped

    status, out, err = await tenure(capsys, "revoke", key_id, database_url=database_url)
    assert status == 0, err
    assert key_id in out
    assert cache.authenticate(full) == key  # until the cache is refreshed
    await cache.refresh()
    assert cache.authenticate(full) is None

    status, out, err = await tenure(capsys, "list", database_url=database_url)
    assert status == 0, err
    [line] = [line for line in out.splitlines() if line.startswith(key_id)]
    assert "billing backend" in line and "events:write" in line
    created_at, revoked_at = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", line)
    assert created_at <= revoked_at
    assert secret not in out + err and "tnr_" not in out

    # Revoking again is harmless and keeps the first revocation time.
    status, _, err = await tenure(capsys, "revoke", key_id, database_url=database_url)
    assert status == 0, err
    [again] = [k for k in await KeyRepository(engine).list_keys() if k.id == key_id]
    assert again.revoked_at is not None
    assert again.revoked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") == revoked_at


async def test_the_installed_entry_point_and_python_m_work(
    database_url: str, engine: AsyncEngine
) -> None:
    env = {**os.environ, "TENURE_DATABASE_URL": database_url}
    made = await asyncio.to_thread(
        subprocess.run,
        [
            str(TENURE),
            *shlex.split("keys create --name ops --scope operator:read --scope operator:admin"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key_id, full = created(made.stdout)
    cache = KeyCache(KeyRepository(engine))
    await cache.refresh()
    key = cache.authenticate(full)
    assert key is not None and key.scopes == {Scope.OPERATOR_READ, Scope.OPERATOR_ADMIN}

    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tenure_cli", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and full.split("_", 2)[2] not in listed.stdout


async def test_a_bad_scope_is_named_and_nothing_is_stored(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: AsyncEngine
) -> None:
    before = len(await KeyRepository(engine).list_keys())
    argv = shlex.split("create --name x --scope events:write --scope events:read")
    status, out, err = await tenure(capsys, *argv, database_url=database_url)
    assert status != 0
    assert out == ""
    assert err.count("\n") == 1 and "'events:read'" in err and "Traceback" not in err
    assert len(await KeyRepository(engine).list_keys()) == before


async def test_an_unknown_key_id_is_named(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    status, _, err = await tenure(capsys, "revoke", "0123456789ab", database_url=database_url)
    assert status != 0
    assert err.count("\n") == 1 and "'0123456789ab'" in err and "Traceback" not in err


async def test_an_unreachable_or_missing_database_is_one_line(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the probe is closed
    refused = f"postgresql://postgres:hunter2@127.0.0.1:{closed_port}/it_apikeys"
    missing = make_url(database_url).set(database="it_apikeys_missing")
    for bad, problem in (
        (refused, "database unreachable: ConnectionRefusedError"),
        (missing.render_as_string(hide_password=False), '"it_apikeys_missing" does not exist'),
    ):
        status, out, err = await tenure(capsys, "list", database_url=bad)
        assert status != 0 and out == ""
        assert err.count("\n") == 1 and err.startswith("tenure: error:"), err
        assert problem in err, err
        assert "Traceback" not in err and "hunter2" not in err
