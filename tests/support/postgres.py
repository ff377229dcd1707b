"""A throwaway PostgreSQL database for the store tests: made fresh per session, emptied per test, dropped at the end.

The server is `VQBOT_TEST_POSTGRES` (an admin URL on its `postgres` database; default the local trust-auth
one). When it cannot be reached the PostgreSQL tests skip with the reason, unless `VQBOT_REQUIRE_POSTGRES=1`
(CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("VQBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = "jobs, speeds, guild_settings, workers, job_files, job_progress"

T = TypeVar("T")


def required() -> bool:
    return os.environ.get("VQBOT_REQUIRE_POSTGRES") == "1"


def unavailable(why: str) -> NoReturn:
    """Skip (or, where PostgreSQL is required, fail) the test that needs the server."""
    message = f"PostgreSQL unavailable at {ADMIN_URL}: {why}"
    if required():
        pytest.fail(message + " (VQBOT_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(message.splitlines()[0])


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a private loop, leaving the thread's event loop (pytest-asyncio's) alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def database_url(name: str) -> str:
    """ADMIN_URL pointed at database `name`."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path="/" + name))


async def create_database() -> str:
    """A new, uniquely named, empty database; its name."""
    import asyncpg

    name = f"vqbot_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrated_database() -> str:
    """A new database at the latest schema, so each test can empty its tables instead of migrating again."""
    import asyncpg

    from storage.postgres.migrations import migrate

    name = await create_database()
    conn = await asyncpg.connect(database_url(name), timeout=5)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return name


async def empty(url: str) -> None:
    """Delete every row and restart the ids at 1, as a new SQLite file would."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
    finally:
        await conn.close()


async def cut_off(url: str) -> int:
    """What a server restart does to the clients of database `url`, kept up until `reconnectable`: new
    connections are refused and every open one is dropped. The number of connections dropped."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        dropped = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
    return int(dropped)


async def reconnectable(url: str) -> None:
    """Undo `cut_off`: database `url` takes connections again."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await conn.close()


RESTART = os.environ.get("VQBOT_TEST_PG_RESTART")  # e.g. "pg_ctlcluster 15 main": the real restart, opt-in


@contextlib.asynccontextmanager
async def outage(url: str, how: str) -> AsyncIterator[None]:
    """Database `url` is away inside the block. "cut_off": only it (`cut_off`, then `reconnectable`), harmless to
    the other sessions on the server; "restart": the whole server is stopped and started again with
    `VQBOT_TEST_PG_RESTART`'s command (+ stop / start), which drops every session on it, so it is opt-in."""
    if how == "cut_off":
        assert await cut_off(url) > 0
        try:
            yield
        finally:
            await reconnectable(url)
        return
    assert RESTART, "VQBOT_TEST_PG_RESTART names the server's control command"
    await asyncio.to_thread(subprocess.run, [*shlex.split(RESTART), "stop"], check=True, timeout=60)
    try:
        yield
    finally:
        await asyncio.to_thread(subprocess.run, [*shlex.split(RESTART), "start"], check=True, timeout=60)
        await _reachable(url)


async def _reachable(url: str, within: float = 60.0) -> None:
    import asyncpg

    deadline = time.monotonic() + within
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        await conn.close()
        return
