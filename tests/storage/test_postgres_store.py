"""What only PostgreSQL has to show: several processes (separate pools) sharing one queue, migrations run once
when they start together, SQLSTATE 53100 reported as DiskFull, the factory's choice of backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from engine.jobs import JobSpec, spec_to_json
from storage.factory import open_store
from storage.postgres.db import CLAIM_LOCK
from storage.postgres.migrations import LATEST
from storage.postgres.store import PostgresJobStore
from storage.records import Owner, QueueState, SubmitLimits
from storage.sqlite.store import SqliteJobStore
from storage.store import AlreadySubmitted, DiskFull, LimitReached
from tests.support import postgres
from tests.support.stores import Stores, drain, oldest

SPEC = JobSpec(text_prompts="a harbour", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)

_FULL = """
CREATE OR REPLACE FUNCTION vqbot_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER vqbot_test_disk_full BEFORE INSERT OR UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION vqbot_test_disk_full();
"""


async def test_several_stores_claiming_in_parallel_never_share_a_job(pg_stores: Stores) -> None:
    stores = [await pg_stores.open() for _ in range(4)]
    for n in range(60):
        await stores[n % 4].create(Owner(user_id=n % 5, guild_id=n % 3), SPEC, now=0.0, limits=NO_LIMITS)
    claimed = await asyncio.gather(*(drain(store, f"worker-{i}") for i, store in enumerate(stores)))
    everything = [job_id for got in claimed for job_id in got]
    assert sorted(everything) == list(range(1, 61))  # each job exactly once
    assert all(claimed)  # and the work was spread: every worker got some


async def test_a_claim_sees_the_jobs_and_leases_of_every_process(pg_stores: Stores) -> None:
    a, b = await pg_stores.open(), await pg_stores.open()
    await a.create(Owner(user_id=1, guild_id=10), SPEC, now=0.0, limits=NO_LIMITS)
    await b.create(Owner(user_id=2, guild_id=20), SPEC, now=0.0, limits=NO_LIMITS)
    assert await a.claim_next("a", lease_s=60, now=1.0, choose=oldest) is not None
    seen: list[QueueState] = []

    def look(state: QueueState) -> int | None:
        seen.append(state)
        return None

    assert await b.claim_next("b", lease_s=60, now=2.0, choose=look) is None
    assert [c.id for c in seen[0].queued] == [2]
    assert seen[0].running_per_member == {1: 1}
    assert seen[0].running_per_guild == {10: 1}


async def test_caps_hold_when_processes_submit_at_once(pg_stores: Stores) -> None:
    stores = [await pg_stores.open() for _ in range(3)]
    limits = SubmitLimits(max_queued_per_member=3, max_queued_per_guild=None)
    results = await asyncio.gather(
        *(stores[n % 3].create(Owner(user_id=1), SPEC, now=1.0, limits=limits) for n in range(9)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, LimitReached) for r in results if isinstance(r, BaseException))


async def test_one_interaction_submitted_by_two_processes_at_once_makes_one_job(pg_stores: Stores) -> None:
    a, b = await pg_stores.open(), await pg_stores.open()
    owner = Owner(user_id=1, guild_id=10)
    results = await asyncio.gather(
        a.create(owner, SPEC, now=1.0, limits=NO_LIMITS, interaction_id=77),
        b.create(owner, SPEC, now=1.0, limits=NO_LIMITS, interaction_id=77),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AlreadySubmitted)]
    assert len(made) == 1
    assert len(refused) == 1
    assert refused[0].job == made[0]
    assert len(await a.active()) == 1


async def test_the_unique_key_holds_for_every_connection(pg_stores: Stores, postgres_url: str) -> None:
    store = await pg_stores.open()
    await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS, interaction_id=42)
    other = await asyncpg.connect(postgres_url)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await other.execute(
                "INSERT INTO jobs (kind, user_id, spec, state, created_at, interaction_id) "
                "VALUES ('image', 2, $1, 'queued', 0, 42)",
                spec_to_json(SPEC),
            )
    finally:
        await other.close()


async def test_disk_full_is_reported_as_disk_full_and_writes_work_again_with_room(
    pg_stores: Stores, postgres_url: str
) -> None:
    store = await pg_stores.open()
    job = await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(_FULL)  # the server answers every write to jobs with SQLSTATE 53100
        with pytest.raises(DiskFull, match="No space left"):
            await store.create(Owner(user_id=1), SPEC, now=2.0, limits=NO_LIMITS)
        with pytest.raises(DiskFull):
            await store.set_status_message(job.id, 5)
        assert [j.id for j in await store.active()] == [job.id]  # the failed insert left nothing
    finally:
        await admin.execute("DROP TRIGGER IF EXISTS vqbot_test_disk_full ON jobs")
        await admin.execute("DROP FUNCTION IF EXISTS vqbot_test_disk_full()")
        await admin.close()
    assert (await store.create(Owner(user_id=1), SPEC, now=3.0, limits=NO_LIMITS)).state.value == "queued"
    assert (await store.get(job.id)).status_message_id is None


async def test_processes_starting_together_on_a_new_database_migrate_it_once(postgres_url: str) -> None:
    name = await postgres.create_database()  # not the session's: this one has never been migrated
    url = postgres.database_url(name)
    stores: list[PostgresJobStore] = []
    try:
        stores = list(await asyncio.gather(*(PostgresJobStore.open(url) for _ in range(3))))
        conn = await asyncpg.connect(url)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        finally:
            await conn.close()
        assert versions == list(range(1, LATEST + 1))  # each version once
        job = await stores[0].create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
        claim = await stores[1].claim_next("b", lease_s=60, now=2.0, choose=oldest)
        assert claim is not None
        assert claim.job.id == job.id
        assert await stores[2].get(job.id) == claim.job
    finally:
        for store in stores:
            await store.close()
        await postgres.drop_database(name)


async def test_the_factory_picks_the_backend_from_the_url(postgres_url: str, tmp_path: Path) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = await open_store(url)
        try:
            assert isinstance(store, PostgresJobStore)
        finally:
            await store.close()
    for target in (tmp_path / "a.sqlite3", str(tmp_path / "b.sqlite3"), f"sqlite:///{tmp_path / 'c.sqlite3'}"):
        store = await open_store(target)
        try:
            assert isinstance(store, SqliteJobStore)
        finally:
            await store.close()
    with pytest.raises(ValueError, match="no job store for 'mysql'"):
        await open_store("mysql://localhost/jobs")


@pytest.mark.parametrize("cancel_after_s", [0.0, 0.3])
async def test_a_claim_cancelled_while_another_process_claims_leaves_the_store_working(
    pg_stores: Stores, postgres_url: str, cancel_after_s: float
) -> None:
    store = await pg_stores.open()
    job = await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
    other = await asyncpg.connect(postgres_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)  # another process is mid-claim
        claim = asyncio.create_task(store.claim_next("a", lease_s=60, now=2.0, choose=oldest))
        await asyncio.sleep(cancel_after_s)  # before or while it waits for the lock: either must be safe
        claim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claim
        await transaction.commit()
    finally:
        await other.close()
    assert (await store.get(job.id)).state.value == "queued"  # the cancelled claim took nothing
    again = await store.claim_next("a", lease_s=60, now=3.0, choose=oldest)
    assert again is not None
    assert again.attempt == 1
