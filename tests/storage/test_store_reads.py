"""The store's reads and small writes on both backends: plan rows, counts, look-ups by id, cancels, lease expiry;
and one scenario run on SQLite and PostgreSQL side by side, whose every answer must be the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs import JobSpec, JobStatus
from storage.postgres.store import PostgresJobStore
from storage.records import Owner, SubmitLimits
from storage.sqlite.store import SqliteJobStore
from storage.store import JobStore
from tests.support import postgres
from tests.support.stores import oldest

SPEC = JobSpec(text_prompts="a mill", width=64, height=48, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


async def test_plan_rows_carry_progress_and_the_speed_class(store: JobStore) -> None:
    for user in (1, 2, 3):
        await store.create(Owner(user_id=user, guild_id=10), SPEC, now=1.0, limits=NO_LIMITS, priority=user == 3)
    claim = await store.claim_next("w/cpu", lease_s=60, now=2.0, choose=oldest, device="cpu")
    assert claim is not None
    await store.save_checkpoint(claim, b"x", step=4, frame=1, now=3.0)
    await store.renew_lease(claim, lease_s=60, now=4.0, step=6, frame=1, heartbeat_at=4.0)
    rows = await store.plan_rows()
    assert [(r.id, r.running, r.steps_done, r.priority, r.device) for r in rows] == [
        (1, True, 6, False, "cpu"),
        (2, False, 0, False, None),
        (3, False, 0, True, None),
    ]
    assert (rows[0].vqgan_model, rows[0].clip_model, rows[0].width, rows[0].height) == ("tiny", "tiny", 64, 48)
    assert rows[0].steps == 10
    assert rows[0].num_cuts == SPEC.num_cuts


async def test_counts_many_recent_and_cancel(store: JobStore) -> None:
    for guild in (10, 10, 20, None):
        await store.create(Owner(user_id=1, guild_id=guild), SPEC, now=1.0, limits=NO_LIMITS)
    assert [j.id for j in await store.many([3, 99, 1])] == [3, 1]
    assert await store.many([]) == []
    assert [j.id for j in await store.recent(1, limit=2)] == [4, 3]
    assert [j.id for j in await store.recent(1, guild_id=10)] == [2, 1]
    cancelled = await store.cancel_queued(2, now=5.0)
    assert cancelled is not None
    assert cancelled.state == JobStatus.CANCELLED
    assert cancelled.finished_at == 5.0
    assert await store.cancel_queued(2, now=6.0) is None  # not queued any more
    assert not await store.request_cancel(1)  # only a running job can be asked to stop
    assert await store.state_counts() == {
        ("queued", 10): 1,
        ("cancelled", 10): 1,
        ("queued", 20): 1,
        ("queued", None): 1,
    }
    counts = await store.queued_counts(1, 10)
    assert (counts.member, counts.guild) == (3, 1)


async def test_expire_leases_frees_only_this_workers_jobs(store: JobStore) -> None:
    for user in (1, 2):
        await store.create(Owner(user_id=user), SPEC, now=1.0, limits=NO_LIMITS)
    mine = await store.claim_next("host-a/1/cpu", lease_s=600, now=2.0, choose=oldest)
    theirs = await store.claim_next("host-b/1/cpu", lease_s=600, now=2.0, choose=oldest)
    assert mine is not None
    assert theirs is not None
    assert await store.expire_leases("host-a/") == 1
    again = await store.claim_next("host-a/2/cpu", lease_s=600, now=3.0, choose=oldest)  # its next life resumes it
    assert again is not None
    assert again.job.id == mine.job.id
    assert again.job.interruptions == 1


async def _scenario(store: JobStore) -> list[Any]:
    """A little of everything; every answer, for comparing backends."""
    seen: list[Any] = []
    limits = SubmitLimits(max_queued_per_member=5, max_queued_per_guild=5)
    for n in range(6):
        owner = Owner(user_id=n % 2, guild_id=10 + n % 3, channel_id=100 + n)
        seen.append(await store.create(owner, SPEC, now=1.0 + n, limits=limits, upload_limit=8 << 20, interaction_id=n))
    for n in range(3):
        claim = await store.claim_next(f"w{n}", lease_s=30, now=10.0 + n, choose=oldest, device="cpu")
        assert claim is not None
        seen += [claim, await store.save_checkpoint(claim, bytes([n]) * 3, step=n + 2, frame=1, now=11.0 + n)]
        seen.append(await store.renew_lease(claim, lease_s=30, now=12.0 + n, step=n + 3, frame=1, heartbeat_at=None))
        if n == 0:
            paths = ["/a.png", "/b.png"]
            done = await store.finish(
                claim, JobStatus.DONE, now=20.0, gpu_seconds=8.5, step=10, frame=1, result_paths=paths, seed=2**62
            )
            seen.append(done)
        elif n == 1:
            seen.append(await store.release(claim, now=21.0, gpu_seconds=1.25, step=3, frame=1, interrupted=True))
    seen.append(await store.claim_next("late", lease_s=30, now=100.0, choose=oldest))  # takes over the lapsed lease
    seen += [await store.plan_rows(), await store.state_counts(), await store.usage(now=101.0)]
    seen += [await store.guild_usage(now=101.0), await store.undelivered(), await store.active()]
    seen += [await store.results_to_expire(finished_before=50.0), await store.record_speed("k", 0.7, now=1.0)]
    seen += [await store.record_speed("k", 0.3, now=2.0), await store.speeds()]
    return seen


async def test_sqlite_and_postgres_answer_a_scenario_alike(postgres_url: str, tmp_path: Path) -> None:
    await postgres.empty(postgres_url)
    sqlite = await SqliteJobStore.open(tmp_path / "jobs.sqlite3")
    pg = await PostgresJobStore.open(postgres_url)
    try:
        expected, got = await _scenario(sqlite), await _scenario(pg)
    finally:
        await sqlite.close()
        await pg.close()
    assert len(got) == len(expected)
    for n, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert a == b, f"answer {n} differs"
