"""The job store's contract, run on SQLite and on PostgreSQL: caps, claims with leases and fencing, checkpoints,
delivery, retention, speeds and usage. SQLite's own failure modes are in test_sqlite_store.py."""

from __future__ import annotations

import asyncio

import pytest

from engine.jobs import JobSpec, JobStatus
from storage.records import Owner, QueueState, SubmitLimits
from storage.store import JobStore, LimitReached, NoSuchJob
from tests.support.stores import Stores, drain, oldest

SPEC = JobSpec(text_prompts="a lighthouse", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


async def test_a_created_job_reads_back_queued_with_its_spec(store: JobStore) -> None:
    job = await store.create(Owner(user_id=1, guild_id=2, channel_id=3), SPEC, now=100.0, limits=NO_LIMITS)
    again = await store.get(job.id)
    assert again == job
    assert again.spec == SPEC
    assert again.state == JobStatus.QUEUED
    assert again.steps == 10
    with pytest.raises(NoSuchJob):
        await store.get(job.id + 1)


async def test_member_cap_refuses_and_names_the_count(store: JobStore) -> None:
    limits = SubmitLimits(max_queued_per_member=2, max_queued_per_guild=None)
    for _ in range(2):
        await store.create(Owner(user_id=1), SPEC, now=1.0, limits=limits)
    with pytest.raises(LimitReached, match=r"already have 2 jobs waiting \(the limit is 2\)"):
        await store.create(Owner(user_id=1), SPEC, now=1.0, limits=limits)
    await store.create(Owner(user_id=2), SPEC, now=1.0, limits=limits)  # another member is not affected
    assert len(await store.active()) == 3


async def test_guild_cap_refuses(store: JobStore) -> None:
    limits = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=1)
    await store.create(Owner(user_id=1, guild_id=9), SPEC, now=1.0, limits=limits)
    with pytest.raises(LimitReached, match="this server already has 1 jobs waiting"):
        await store.create(Owner(user_id=2, guild_id=9), SPEC, now=1.0, limits=limits)


async def test_a_failing_prepare_inserts_nothing(store: JobStore) -> None:
    async def broken(job_id: int) -> JobSpec:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS, prepare=broken)
    assert await store.active() == []


async def test_claim_leases_and_fences_every_write(store: JobStore) -> None:
    job = await store.create(Owner(user_id=1), SPEC, now=0.0, limits=NO_LIMITS)
    first = await store.claim_next("a/cpu", lease_s=10, now=1.0, choose=oldest)
    assert first is not None
    assert first.job.id == job.id
    assert first.attempt == 1
    assert await store.claim_next("b/cpu", lease_s=10, now=2.0, choose=oldest) is None  # lease still live
    assert await store.save_checkpoint(first, b"state-5", step=5, frame=1, now=3.0)
    # the lease runs out (a crash): another runner takes over from the checkpoint
    second = await store.claim_next("b/cpu", lease_s=10, now=20.0, choose=oldest)
    assert second is not None
    assert second.attempt == 2
    assert second.checkpoint == b"state-5"
    assert second.job.checkpoint_step == 5
    # the first runner wakes up: each of its writes is refused
    assert await store.renew_lease(first, lease_s=10, now=21.0, step=6, frame=1, heartbeat_at=21.0) is None
    assert not await store.save_checkpoint(first, b"stale", step=6, frame=1, now=21.0)
    assert await store.finish(first, JobStatus.DONE, now=22.0, gpu_seconds=1, step=10, frame=1) is None
    assert not await store.release(first, now=22.0, gpu_seconds=1, step=6, frame=1)
    done = await store.finish(
        second, JobStatus.DONE, now=30.0, gpu_seconds=4.0, step=10, frame=1, result_paths=["/out.png"], seed=3
    )
    assert done is not None
    assert done.state == JobStatus.DONE
    assert done.result_paths == ("/out.png",)
    assert done.seed == 3
    assert done.lease_owner is None


async def test_two_connections_claiming_at_once_never_share_a_job(stores: Stores) -> None:
    pair = [await stores.open() for _ in range(2)]
    for _ in range(20):
        await pair[0].create(Owner(user_id=1), SPEC, now=0.0, limits=NO_LIMITS)
    a, b = await asyncio.gather(drain(pair[0], "a"), drain(pair[1], "b"))
    assert sorted(a + b) == list(range(1, 21))
    assert not set(a) & set(b)


async def test_release_requeues_with_checkpoint_and_heartbeat_reports_cancel(store: JobStore) -> None:
    await store.create(Owner(user_id=1), SPEC, now=0.0, limits=NO_LIMITS)
    claim = await store.claim_next("a", lease_s=10, now=1.0, choose=oldest)
    assert claim is not None
    beat = await store.renew_lease(claim, lease_s=10, now=2.0, step=3, frame=1, heartbeat_at=2.0)
    assert beat is not None
    assert not beat.cancel_requested
    assert await store.request_cancel(claim.job.id)
    beat = await store.renew_lease(claim, lease_s=10, now=3.0, step=4, frame=1, heartbeat_at=3.0)
    assert beat is not None
    assert beat.cancel_requested
    await store.save_checkpoint(claim, b"four", step=4, frame=1, now=3.0)
    assert await store.release(claim, now=4.0, gpu_seconds=3.0, step=4, frame=1)
    job = await store.get(claim.job.id)
    assert job.state == JobStatus.QUEUED
    assert job.gpu_seconds == 3.0
    again = await store.claim_next("b", lease_s=10, now=5.0, choose=oldest)
    assert again is not None
    assert again.checkpoint == b"four"


async def test_usage_counts_finished_jobs_in_the_window_and_running_time(stores: Stores) -> None:
    store = await stores.open(usage_window_s=100.0)
    for user in (1, 1, 2):
        await store.create(Owner(user_id=user), SPEC, now=0.0, limits=NO_LIMITS)
    old = await store.claim_next("a", lease_s=1000, now=0.0, choose=oldest)
    assert old is not None
    await store.finish(old, JobStatus.DONE, now=10.0, gpu_seconds=10.0, step=10, frame=1)
    recent = await store.claim_next("a", lease_s=1000, now=150.0, choose=oldest)
    assert recent is not None
    await store.finish(recent, JobStatus.DONE, now=170.0, gpu_seconds=20.0, step=10, frame=1)
    running = await store.claim_next("a", lease_s=1000, now=180.0, choose=oldest)
    assert running is not None
    assert await store.usage(now=200.0) == {1: 20.0, 2: 20.0}  # the first job fell out of the window


async def test_undelivered_until_marked(store: JobStore) -> None:
    await store.create(Owner(user_id=1), SPEC, now=0.0, limits=NO_LIMITS)
    claim = await store.claim_next("a", lease_s=10, now=1.0, choose=oldest)
    assert claim is not None
    await store.finish(claim, JobStatus.DONE, now=2.0, gpu_seconds=1.0, step=10, frame=1, result_paths=["/r.png"])
    assert [j.id for j in await store.undelivered()] == [claim.job.id]
    await store.set_status_message(claim.job.id, 555)
    await store.mark_delivered(claim.job.id, 777)
    assert await store.undelivered() == []
    job = await store.get(claim.job.id)
    assert (job.status_message_id, job.result_message_id) == (555, 777)
    with pytest.raises(NoSuchJob):
        await store.mark_delivered(99, 1)


async def test_speeds_are_a_moving_average(store: JobStore) -> None:
    assert await store.record_speed("k", 2.0, now=1.0) == 2.0
    assert await store.record_speed("k", 4.0, now=2.0, alpha=0.5) == 3.0
    assert await store.speeds() == {"k": 3.0}


async def test_results_past_retention_are_listed_once_and_never_offered_for_delivery_again(
    store: JobStore,
) -> None:
    for n, finished_at in enumerate((10.0, 20.0, 30.0)):
        await store.create(Owner(user_id=n), SPEC, now=1.0, limits=NO_LIMITS)
        claim = await store.claim_next("w/cpu", lease_s=10, now=finished_at, choose=oldest)
        assert claim is not None
        paths = [] if n == 1 else [f"/data/outputs/{claim.job.id}/a1/job.png"]  # job 2 failed without a result
        state = JobStatus.FAILED if n == 1 else JobStatus.DONE
        await store.finish(claim, state, now=finished_at, gpu_seconds=1, step=10, frame=1, result_paths=paths)
    assert [j.id for j in await store.results_to_expire(finished_before=35.0)] == [1, 3]
    assert [j.id for j in await store.results_to_expire(finished_before=25.0)] == [1]
    await store.mark_results_expired(1, now=40.0)
    assert (await store.get(1)).results_expired_at == 40.0
    assert [j.id for j in await store.results_to_expire(finished_before=35.0)] == [3]
    assert 1 not in [j.id for j in await store.undelivered()]  # its file is gone: nothing to post


async def test_only_renders_cut_short_count_as_interruptions(store: JobStore) -> None:
    """A lease taken over (its process died) and an abandoned render count; a clean give-back does not."""
    await store.create(Owner(user_id=1), SPEC, now=0.0, limits=NO_LIMITS)
    first = await store.claim_next("a/cpu", lease_s=10, now=1.0, choose=oldest)
    assert first is not None
    assert first.job.interruptions == 0
    assert await store.release(first, now=2.0, gpu_seconds=1.0, step=3, frame=1)  # a shutdown drain
    second = await store.claim_next("a/cpu", lease_s=10, now=3.0, choose=oldest)
    assert second is not None
    assert second.job.interruptions == 0
    third = await store.claim_next("b/cpu", lease_s=10, now=30.0, choose=oldest)  # a's process died
    assert third is not None
    assert third.job.interruptions == 1
    assert await store.release(third, now=31.0, gpu_seconds=1.0, step=4, frame=1, interrupted=True)  # a stall
    fourth = await store.claim_next("b/cpu", lease_s=10, now=32.0, choose=oldest)
    assert fourth is not None
    assert fourth.job.interruptions == 2
    assert fourth.attempt == 4
    assert (await store.get(fourth.job.id)).interruptions == 2


async def test_a_claim_offers_the_oldest_job_of_each_member_in_each_server(store: JobStore) -> None:
    """Fair share only ever picks a lane's oldest job, so a deep queue is read as one row per lane."""
    owners = [Owner(user_id=1, guild_id=10)] * 3 + [Owner(user_id=2, guild_id=10), Owner(user_id=1, guild_id=20)]
    ids = [(await store.create(owner, SPEC, now=1.0, limits=NO_LIMITS)).id for owner in owners]
    seen: list[list[int]] = []

    def look(state: QueueState) -> int | None:
        seen.append([c.id for c in state.queued])
        return state.queued[-1].id

    claim = await store.claim_next("w/cpu", lease_s=60, now=2.0, choose=look)
    assert seen == [[ids[0], ids[3], ids[4]]]
    assert claim is not None
    assert claim.job.id == ids[4]
