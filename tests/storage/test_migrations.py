"""The schema is versioned with PRAGMA user_version and migrated forward at start, keeping rows."""

from __future__ import annotations

import json
from pathlib import Path

from engine.jobs import JobSpec, JobStatus, spec_to_json
from storage.sqlite.db import open_database
from storage.sqlite.migrations import LATEST, schema_version
from storage.sqlite.store import SqliteJobStore


async def test_a_new_database_is_created_at_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    async with open_database(tmp_path / "jobs.sqlite3") as conn:
        assert await schema_version(conn) == LATEST
        async with conn.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        assert row[0] == "wal"


async def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with open_database(path) as conn:
        await conn.execute("INSERT INTO speeds VALUES ('k', 1.5, 1, 0)")
    async with open_database(path) as conn:
        assert await schema_version(conn) == LATEST
        async with conn.execute("SELECT seconds_per_step FROM speeds") as cursor:
            assert [tuple(r) for r in await cursor.fetchall()] == [(1.5,)]


async def test_rows_written_by_the_first_schema_survive_the_migrations(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    spec = JobSpec(text_prompts="an old job", width=128, height=96, iterations=40)
    async with open_database(path, migrate_to=1) as conn:
        assert await schema_version(conn) == 1
        await conn.execute(
            "INSERT INTO jobs (kind, user_id, guild_id, channel_id, spec, state, created_at, steps, gpu_seconds, "
            "result_paths, result_message_id) VALUES ('image', 7, 70, 700, ?, 'done', 1000.0, 40, 12.5, ?, NULL)",
            (spec_to_json(spec), json.dumps(["/data/outputs/1/job-1.png"])),
        )
        await conn.execute(
            "INSERT INTO jobs (kind, user_id, spec, state, created_at, steps) VALUES ('image', 8, ?, 'queued', 1001.0, 40)",
            (spec_to_json(spec),),
        )
    store = await SqliteJobStore.open(path)
    try:
        done = await store.get(1)
        assert done.spec == spec
        assert done.state == JobStatus.DONE
        assert done.owner.guild_id == 70
        assert done.gpu_seconds == 12.5
        assert done.result_paths == ("/data/outputs/1/job-1.png",)
        assert done.attempt == 0
        assert done.checkpoint_step is None
        assert [j.id for j in await store.undelivered()] == [1]
        assert [j.id for j in await store.active()] == [2]
        assert await store.speeds() == {}
    finally:
        await store.close()
