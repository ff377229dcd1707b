"""Opening the SQLite database: WAL, a busy timeout, explicit transactions, migrations at start."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiosqlite

from storage.sqlite.migrations import LATEST, migrate
from storage.store import DiskFull

BUSY_TIMEOUT_MS = 10_000


async def connect(path: Path | str, *, migrate_to: int | None = LATEST) -> aiosqlite.Connection:
    """Open `path` in autocommit mode (transactions are explicit), set the PRAGMAs, run migrations.

    `migrate_to=None` skips migrations (tests build older schemas with it). The caller closes it.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across process crashes in WAL mode; only a power cut can lose the last commit
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        conn.row_factory = aiosqlite.Row
        if migrate_to is not None:
            await migrate(conn, migrate_to)
    except BaseException:
        await conn.close()
        raise
    return conn


@contextlib.asynccontextmanager
async def open_database(path: Path | str, *, migrate_to: int | None = LATEST) -> AsyncIterator[aiosqlite.Connection]:
    """`connect` as an async context manager that always closes the connection."""
    conn = await connect(path, migrate_to=migrate_to)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def immediate(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """One `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error.

    IMMEDIATE takes the write lock at the start, so a read-then-write (a claim, a limit check) cannot be
    overtaken by another process between its read and its write.

    The connection never stays inside a transaction, whatever happens: a statement runs to its end on
    aiosqlite's thread even when the task awaiting it is cancelled (a heartbeat stopped while it waits
    for another process's write lock), so BEGIN, COMMIT and ROLLBACK are awaited to completion, and a
    COMMIT that fails (a full disk, an I/O error) is rolled back. Otherwise every later BEGIN would fail
    with "cannot start a transaction within a transaction" and the other processes would wait on a
    write lock that is never released.

    A full disk (SQLITE_FULL, at any statement or at COMMIT) raises `DiskFull` once rolled back, so the
    bot can tell it from a bug and refuse new work until space returns.
    """
    try:
        await _to_completion(conn, conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            await _rollback(conn)
            raise
        try:
            await _to_completion(conn, conn.execute("COMMIT"))
        except BaseException:
            await _rollback(conn)
            raise
    except sqlite3.Error as e:
        if _disk_full(e):
            raise DiskFull(f"the database could not be written: {e}") from e
        raise


def _disk_full(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


async def _to_completion(conn: aiosqlite.Connection, statement: Awaitable[object]) -> None:
    """Await `statement`; if this task is cancelled meanwhile, let it finish, undo what it began, and re-raise."""
    running = asyncio.ensure_future(statement)
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        await _rollback(conn)
        raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    if not conn.in_transaction:
        return
    rollback = asyncio.ensure_future(conn.execute("ROLLBACK"))
    try:
        await asyncio.shield(rollback)
    except asyncio.CancelledError:
        await rollback
        raise
