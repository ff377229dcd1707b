"""The store's contract for several render workers, on SQLite and on PostgreSQL: each worker's heartbeat row,
and the worker named on the jobs it claims (what /job and /queue say)."""

from __future__ import annotations

from engine.jobs import JobSpec, JobStatus
from storage.records import Owner, SubmitLimits, WorkerRecord, worker_of
from storage.store import JobStore
from tests.support.stores import Stores, oldest

SPEC = JobSpec(text_prompts="a lighthouse", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
NO_LIMITS = SubmitLimits(max_queued_per_member=None, max_queued_per_guild=None)


def worker(worker_id: str, *, started: float, beat: float, devices: tuple[str, ...] = ("cpu",)) -> WorkerRecord:
    return WorkerRecord(worker_id=worker_id, host="host-a", devices=devices, started_at=started, heartbeat_at=beat)


async def test_no_workers_until_one_beats(store: JobStore) -> None:
    assert await store.workers() == []


async def test_a_worker_row_is_inserted_then_refreshed_in_place(store: JobStore) -> None:
    await store.upsert_worker(worker("w1", started=10.0, beat=10.0, devices=("cuda:0", "cuda:1")))
    await store.upsert_worker(worker("w2", started=11.0, beat=11.0))
    await store.upsert_worker(worker("w1", started=10.0, beat=25.5, devices=("cuda:0", "cuda:1")))
    rows = await store.workers()
    assert [w.worker_id for w in rows] == ["w1", "w2"]
    assert rows[0] == worker("w1", started=10.0, beat=25.5, devices=("cuda:0", "cuda:1"))
    # a restart under the same id: a new start time, the same single row
    await store.upsert_worker(worker("w1", started=100.0, beat=100.0, devices=("cuda:0", "cuda:1")))
    rows = await store.workers()
    assert len(rows) == 2
    assert rows[0].started_at == 100.0


async def test_workers_are_seen_by_every_connection(stores: Stores) -> None:
    one, two = await stores.open(), await stores.open()
    await one.upsert_worker(worker("front", started=1.0, beat=1.0))
    assert [w.worker_id for w in await two.workers()] == ["front"]


async def test_a_claim_records_the_worker_part_of_its_lease_owner(store: JobStore) -> None:
    job = await store.create(Owner(user_id=1), SPEC, now=0.0, limits=NO_LIMITS)
    assert (await store.get(job.id)).worker_id is None
    first = await store.claim_next("gpu-host-1/cuda:0", lease_s=10, now=1.0, choose=oldest, device="cuda:0")
    assert first is not None
    assert first.job.worker_id == "gpu-host-1"
    assert first.job.device == "cuda:0"
    # the lease lapses: the worker that takes over is the one named from then on, also once it is done
    second = await store.claim_next("gpu-host-2/cpu", lease_s=10, now=20.0, choose=oldest, device="cpu")
    assert second is not None
    assert second.job.worker_id == "gpu-host-2"
    done = await store.finish(second, JobStatus.DONE, now=30.0, gpu_seconds=1.0, step=10, frame=1)
    assert done is not None
    assert done.worker_id == "gpu-host-2"
    assert (await store.get(job.id)).worker_id == "gpu-host-2"


def test_the_worker_id_is_the_lease_owner_before_its_device() -> None:
    assert worker_of("host-1-abc/cuda:0") == "host-1-abc"
    assert worker_of("a/b/cpu") == "a/b"
    assert worker_of("plain") == "plain"
