"""Opening the PostgreSQL database: a connection pool, migrations at start, transactions that report a full disk
and a database that cannot be reached (`StoreUnavailable`: the pool connects again at the next acquire)."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Iterator

import asyncpg

from storage.postgres.migrations import LATEST, migrate
from storage.store import DiskFull, StoreError, StoreUnavailable

DISK_FULL = "53100"  # SQLSTATE disk_full: a write (or a sort's temporary file) found no room
CLAIM_LOCK = 0x7671_636C_6169  # pg_advisory_xact_lock key: one claim at a time over every process
POOL_SIZE = 4  # connections per store: the bot's reads overlap a heartbeat or a claim, rarely more
# SQLSTATEs of a server going away: admin_shutdown (a restart, pg_terminate_backend), crash_shutdown and
# cannot_connect_now (starting or stopping); class 08 is asyncpg's PostgresConnectionError
GONE = frozenset({"57P01", "57P02", "57P03"})
UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.ECONNREFUSED})
NOT_ACCEPTING = "55000"  # object_not_in_prerequisite_state: "database ... is not currently accepting connections"


async def create_pool(url: str, *, migrate_to: int | None = LATEST, max_size: int = POOL_SIZE) -> asyncpg.Pool:
    """A pool on `url`, migrated to `migrate_to` (None skips migrations). The caller closes it."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
    try:
        if migrate_to is not None:
            async with pool.acquire() as conn:
                await migrate(conn, migrate_to)
    except BaseException:
        await pool.close()
        raise
    return pool


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for reads (each statement its own snapshot), with a full disk reported as `DiskFull`."""
    with disk_full_as_store_error():
        async with pool.acquire() as conn:
            with closed_as_unavailable(conn):
                yield conn


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """One transaction on a pooled connection: committed on success, rolled back on any error or cancel.

    A full disk (SQLSTATE 53100, at any statement or at COMMIT) raises `DiskFull` once rolled back, so
    the bot can tell it from a bug and refuse new work until space returns, as with SQLite.
    """
    with disk_full_as_store_error():
        async with pool.acquire() as conn:
            with closed_as_unavailable(conn):
                async with conn.transaction():
                    yield conn


@contextlib.contextmanager
def disk_full_as_store_error() -> Iterator[None]:
    """Turn PostgreSQL's disk-full error into the store's `DiskFull` and a server that went away (or cannot be
    reached) into `StoreUnavailable`; every other error passes unchanged."""
    try:
        yield
    except asyncpg.PostgresError as e:
        if getattr(e, "sqlstate", None) == DISK_FULL:
            raise DiskFull(f"the database could not be written: {e}") from e
        if is_connection_error(e):
            raise StoreUnavailable(f"the database cannot be reached: {e!r}") from e
        raise
    except (OSError, asyncpg.InterfaceError) as e:
        if is_connection_error(e):
            raise StoreUnavailable(f"the database cannot be reached: {e!r}") from e
        raise


@contextlib.contextmanager
def closed_as_unavailable(conn: asyncpg.Connection) -> Iterator[None]:
    """Any error that leaves `conn` closed is `StoreUnavailable`: a backend terminated while the connection sat in
    the pool can surface as asyncpg's InternalClientError at the next query instead of a connection error."""
    try:
        yield
    except Exception as e:
        if not isinstance(e, StoreError) and conn.is_closed():
            raise StoreUnavailable(f"the database cannot be reached: {e!r}") from e
        raise


def is_connection_error(error: BaseException) -> bool:
    """The connection to the server was refused, dropped or closed under a call (not a bad query, not a local
    file's error: a job file's read or write inside a transaction keeps its own OSError)."""
    if isinstance(error, asyncpg.PostgresConnectionError | ConnectionError | socket.gaierror):
        return True  # ConnectionDoesNotExistError is one; ConnectionError: refused, reset, aborted
    if isinstance(error, OSError):
        return error.errno in UNREACHABLE
    if isinstance(error, asyncpg.InterfaceError):  # "connection is closed" under a call
        return "connection" in str(error).lower() and "closed" in str(error).lower()
    sqlstate = getattr(error, "sqlstate", None) or ""
    return sqlstate in GONE or (sqlstate == NOT_ACCEPTING and "accepting connections" in str(error))


def changed(status: str) -> int:
    """The row count of an INSERT/UPDATE/DELETE command tag such as 'UPDATE 1'."""
    return int(status.rsplit(" ", 1)[-1])
