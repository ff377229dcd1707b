"""The store's server side: settings per server, one job per interaction, counts and usage per server.

On both backends (the `store` and `stores` fixtures), except the SQLite file's own schema checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.jobs import JobSpec, JobStatus, spec_to_json
from storage.records import Owner, QueueState, SubmitLimits
from storage.sqlite.db import open_database
from storage.sqlite.migrations import schema_version
from storage.sqlite.store import SqliteJobStore
from storage.store import AlreadySubmitted, JobStore
from tests.support.stores import Stores

SPEC = JobSpec(text_prompts="a harbour", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


async def test_settings_are_kept_per_server_and_survive_a_reopen(stores: Stores) -> None:
    store = await stores.open()
    await store.set_guild_setting(10, "max_size", "128", now=1.0, by_user=7)
    await store.set_guild_setting(10, "max_size", "96", now=2.0, by_user=8)  # replaced, not added
    await store.set_guild_setting(20, "blocked_words", "gore", now=3.0, by_user=9)
    assert await store.reset_guild_setting(20, "blocked_words")
    assert not await store.reset_guild_setting(20, "blocked_words")  # nothing left to reset
    await store.close()
    again = await stores.open()
    assert await again.guild_settings() == {10: {"max_size": "96"}}


async def test_a_second_create_for_one_interaction_makes_no_job(store: JobStore) -> None:
    owner = Owner(user_id=1, guild_id=10, channel_id=100)
    first = await store.create(owner, SPEC, now=1.0, limits=NO_LIMITS, interaction_id=555)
    with pytest.raises(AlreadySubmitted) as again:
        await store.create(owner, SPEC, now=2.0, limits=SubmitLimits(max_queued_per_member=1), interaction_id=555)
    assert again.value.job == first  # the job it made, not a cap refusal
    other = await store.create(owner, SPEC, now=3.0, limits=NO_LIMITS, interaction_id=556)
    untracked = await store.create(owner, SPEC, now=4.0, limits=NO_LIMITS)  # no interaction (a test, a script)
    assert [j.id for j in await store.active()] == [first.id, other.id, untracked.id]


async def test_the_unique_key_holds_for_every_sqlite_connection(tmp_path: Path) -> None:
    store = await SqliteJobStore.open(tmp_path / "jobs.sqlite3")
    try:
        await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS, interaction_id=42)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as other, pytest.raises(sqlite3.IntegrityError):
        other.execute(
            "INSERT INTO jobs (kind, user_id, spec, state, created_at, interaction_id) VALUES ('image', 2, ?, 'queued', 0, 42)",
            (spec_to_json(SPEC),),
        )


async def test_counts_recent_and_usage_per_server(store: JobStore) -> None:
    a, b = Owner(user_id=1, guild_id=10), Owner(user_id=1, guild_id=20)  # one member in two servers
    for owner in (a, a, b):
        await store.create(owner, SPEC, now=1.0, limits=NO_LIMITS)
    counts = await store.queued_counts(1, 20)
    assert (counts.member, counts.guild) == (3, 1)
    assert [j.owner.guild_id for j in await store.recent(1, guild_id=20)] == [20]

    def first(state: QueueState) -> int | None:
        return state.queued[0].id

    claim = await store.claim_next("w", lease_s=60, now=10.0, choose=first)
    assert claim is not None
    await store.finish(claim, JobStatus.DONE, now=20.0, gpu_seconds=30.0, step=10, frame=1)
    running = await store.claim_next("w", lease_s=60, now=21.0, choose=lambda s: s.queued[-1].id)
    assert running is not None
    assert await store.guild_usage(now=25.0) == {10: 30.0, 20: 4.0}  # done time, and the running job's so far
    assert await store.usage(now=25.0) == {1: 34.0}

    seen: list[QueueState] = []

    def look(state: QueueState) -> int | None:
        seen.append(state)
        return None

    await store.claim_next("w2", lease_s=60, now=25.0, choose=look)
    assert seen[0].running_per_guild == {20: 1}
    assert seen[0].guild_usage == {10: 30.0, 20: 4.0}


async def test_schema_4_adds_settings_and_the_interaction_key_keeping_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    async with open_database(path, migrate_to=3) as conn:
        await conn.execute(
            "INSERT INTO jobs (kind, user_id, guild_id, spec, state, created_at, steps) VALUES ('image', 1, 10, ?, 'queued', 1.0, 10)",
            (spec_to_json(SPEC),),
        )
    async with open_database(path, migrate_to=4) as conn:
        assert await schema_version(conn) == 4
    store = await SqliteJobStore.open(path)
    try:
        assert (await store.get(1)).owner.guild_id == 10
        assert await store.guild_settings() == {}
        await store.create(Owner(user_id=2), SPEC, now=2.0, limits=NO_LIMITS, interaction_id=9)
    finally:
        await store.close()
