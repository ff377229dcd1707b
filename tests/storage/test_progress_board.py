"""The progress board on both backends: what a worker publishes a front-end in another process reads, and only
while the job runs; cancel requests as a worker polls them."""

from __future__ import annotations

from engine.jobs import JobSpec, JobStatus
from storage.records import Owner, ProgressRecord, SubmitLimits
from storage.store import JobStore
from tests.support.stores import Stores, oldest

SPEC = JobSpec(text_prompts="a lighthouse", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


def at(job_id: int, step: int, preview: bytes | None = None) -> ProgressRecord:
    return ProgressRecord(
        job_id=job_id,
        step=step,
        steps=10,
        iteration=step,
        total=10,
        frame=1,
        frames=1,
        loss=0.5,
        eta_done_s=3.0,
        preview=preview,
    )


async def test_a_worker_s_progress_reaches_another_process_until_the_job_ends(stores: Stores) -> None:
    worker, front = await stores.open(), await stores.open()
    job = await worker.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
    await worker.progress.put(at(job.id, 1), now=2.0)  # not running yet: nothing to show
    assert await front.progress.running() == []
    claim = await worker.claim_next("w/cpu", lease_s=30, now=3.0, choose=oldest)
    assert claim is not None
    await worker.progress.put(at(job.id, 2, preview=b"webp-2"), now=4.0)
    await worker.progress.put(at(job.id, 3), now=5.0)  # no new preview: the last one stays
    (seen,) = await front.progress.running()
    assert (seen.job_id, seen.step, seen.eta_done_s, seen.preview_version, seen.preview) == (job.id, 3, 3.0, 1, None)
    assert await front.progress.preview(job.id) == b"webp-2"
    await worker.progress.put(at(job.id, 4, preview=b"webp-4"), now=6.0)
    (seen,) = await front.progress.running()
    assert seen.preview_version == 2
    assert await front.progress.preview(job.id) == b"webp-4"
    await worker.finish(claim, JobStatus.DONE, now=7.0, gpu_seconds=4.0, step=10, frame=1)
    assert await front.progress.running() == []  # the row went with the job's end
    await worker.progress.put(at(job.id, 5), now=8.0)  # a late write from the worker's relay
    assert await front.progress.running() == []


async def test_a_job_given_back_leaves_the_board(store: JobStore) -> None:
    job = await store.create(Owner(user_id=1), SPEC, now=1.0, limits=NO_LIMITS)
    claim = await store.claim_next("w/cpu", lease_s=30, now=2.0, choose=oldest)
    assert claim is not None
    await store.progress.put(at(job.id, 2), now=3.0)
    assert await store.release(claim, now=4.0, gpu_seconds=1.0, step=2, frame=1)
    assert await store.progress.running() == []


async def test_cancel_requests_are_read_for_the_jobs_asked_about(stores: Stores) -> None:
    worker, front = await stores.open(), await stores.open()
    jobs = [await worker.create(Owner(user_id=n), SPEC, now=1.0, limits=NO_LIMITS) for n in (1, 2, 3)]
    for _ in jobs:
        assert await worker.claim_next("w/cpu", lease_s=30, now=2.0, choose=oldest) is not None
    assert await front.request_cancel(jobs[1].id)
    assert await worker.progress.cancel_requested([j.id for j in jobs]) == {jobs[1].id}
    assert await worker.progress.cancel_requested([jobs[0].id]) == set()
    assert await worker.progress.cancel_requested([]) == set()
