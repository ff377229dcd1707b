"""SQLite's own failure modes: a write cancelled while another process holds the lock, a failed COMMIT, a full
database file. The store's contract (both backends) is in test_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from engine.jobs import JobSpec
from storage.records import Owner, SubmitLimits
from storage.sqlite.store import SqliteJobStore
from storage.store import DiskFull

SPEC = JobSpec(text_prompts="a lighthouse", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    """SQLite only: these tests reach into its connection (overrides the two-backend fixture)."""
    s = await SqliteJobStore.open(tmp_path / "jobs.sqlite3")
    yield s
    await s.close()


@pytest.mark.parametrize("cancel_after_s", [0.0, 0.3])
async def test_a_write_cancelled_while_it_waits_for_another_process_leaves_the_store_working(
    store: SqliteJobStore, tmp_path: Path, cancel_after_s: float
) -> None:
    job = await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
    other = await aiosqlite.connect(tmp_path / "jobs.sqlite3", isolation_level=None)
    try:
        await other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        write = asyncio.create_task(store.set_status_message(job.id, 42))
        await asyncio.sleep(cancel_after_s)  # before or while it waits for the lock: either must be safe
        write.cancel()
        await other.execute("COMMIT")  # the other process finishes its transaction, as it will
        with pytest.raises(asyncio.CancelledError):
            await write
        # the other process can write again (nothing holds the lock), and so can this store
        await other.execute("BEGIN IMMEDIATE")
        await other.execute("COMMIT")
    finally:
        await other.close()
    await store.set_status_message(job.id, 43)
    assert (await store.get(job.id)).status_message_id == 43


async def test_a_failed_commit_is_rolled_back_and_the_next_write_works(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
    conn = store._conn  # the one connection: make its next COMMIT fail as a full disk would
    execute = conn.execute
    failures = [sqlite3.OperationalError("database or disk is full")]

    def failing(sql: str, *args: object) -> object:
        if sql == "COMMIT" and failures:
            raise failures.pop()
        return execute(sql, *args)

    monkeypatch.setattr(conn, "execute", failing)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await store.set_status_message(job.id, 42)
    assert (await store.get(job.id)).status_message_id is None  # rolled back
    await store.set_status_message(job.id, 43)
    assert (await store.get(job.id)).status_message_id == 43


async def test_a_full_database_raises_disk_full_rolls_back_and_works_again_with_room(store: SqliteJobStore) -> None:
    conn = store._conn
    (pages,) = await (await conn.execute("PRAGMA page_count")).fetchone()  # type: ignore[misc]
    await conn.execute(f"PRAGMA max_page_count = {pages}")  # a real SQLITE_FULL: no page may be added
    made, full = [], None
    for _ in range(200):  # the last page's free room takes a few jobs
        try:
            made.append(await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS))
        except DiskFull as e:
            full = e
            break
    assert full is not None
    assert [j.id for j in await store.active()] == [j.id for j in made]  # the failed insert left nothing
    await conn.execute("PRAGMA max_page_count = 1073741823")
    assert (await store.create(Owner(user_id=1), SPEC, now=2.0, limits=NO_LIMITS)).id == len(made) + 1
