"""Live progress and cancels across processes that share only the database: a front-end queue with no runner
and a worker queue with one, each with its own data directory, on one SQLite file or one PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.services import open_queue
from engine.jobs import JobSpec, JobStatus
from storage.records import Owner
from tests.support import postgres
from tests.support.events import EventRecorder
from tests.support.gate import StepGate
from tests.support.renderer import FakeRenderer
from tests.support.waiting import eventually

SPEC = JobSpec(text_prompts="a fox", width=64, height=64, iterations=40, vqgan_model="tiny", clip_model="tiny")
ALICE = Owner(user_id=1, guild_id=10, channel_id=100)
RELAYED = QueueConfig(max_queued_per_member=None, relay_progress_s=0.2)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "jobs.sqlite3"
    url: str = request.getfixturevalue("postgres_url")  # outside the test's loop: the session fixture runs its own
    postgres.run_sync(postgres.empty(url))
    return url


@pytest.fixture
async def front(database: str | Path, tmp_path: Path) -> AsyncIterator[JobQueue]:
    async with open_queue(database, tmp_path / "front", RELAYED) as queue:
        yield queue


@pytest.fixture
async def worker(database: str | Path, tmp_path: Path) -> AsyncIterator[JobQueue]:
    async with open_queue(database, tmp_path / "worker", RELAYED) as queue:
        yield queue


async def test_a_worker_s_progress_and_previews_reach_the_front_end_and_its_cancel_reaches_the_worker(
    front: JobQueue, worker: JobQueue, tmp_path: Path
) -> None:
    seen = EventRecorder()
    front.subscribe(seen)
    gate = StepGate(hold_at=5)
    # a lease of ten minutes: the heartbeat (a third of it) cannot be what brings the cancel
    config = RunnerConfig(lease_s=600.0, poll_s=0.05, preview_interval_s=0.0)
    runner = JobRunner(worker, lambda d: FakeRenderer(d, gate=gate), ("cpu",), tmp_path / "worker", config)
    await runner.start()
    try:
        job = (await front.submit(ALICE, SPEC)).job
        await gate.held()
        await eventually(lambda: any(u.job_id == job.id and u.step == 5 for u in seen.progress), 60.0, "step 5")
        assert any(u.preview for u in seen.progress)  # the previews travel too
        assert (await front.get(job.id)).step == 5  # /job on the front-end shows the worker's step
        await front.cancel(job.id, by_user=ALICE.user_id)
        done = await eventually(lambda: _finished(front, job.id), 60.0, "the cancel to reach the worker")
        assert done.state == JobStatus.CANCELLED
        assert done.partial
        assert await front.store.progress.running() == []  # nothing left on the board once the job ended
    finally:
        gate.release()
        await runner.drain(grace_s=2.0)


async def _finished(queue: JobQueue, job_id: int) -> object:
    job = await queue.store.get(job_id)
    return job if job.finished else None
