"""The runner in-process with a fake renderer: device threads, events, previews, cancel, failures, drain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.admission import SpeedClass
from bot.ports import NotAllowed, ProgressUpdate
from bot.queue import JobQueue, QueueConfig
from bot.runner import JobRunner
from engine.jobs import JobSpec, JobStatus
from storage.records import JobRecord, Owner
from tests.bot.fake_renderer import PNG_1X1, FakeRenderer

SPEC = JobSpec(
    text_prompts="a fox", width=64, height=64, iterations=10, num_cuts=4, vqgan_model="tiny", clip_model="tiny"
)
ALICE, BOB = Owner(user_id=1, guild_id=10, channel_id=100), Owner(user_id=2, guild_id=10, channel_id=100)


class Recorder:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: dict[int, JobRecord] = {}
        self.progress: list[ProgressUpdate] = []
        self.progress_times: list[float] = []
        self.progress_threads: set[str] = set()
        self.changed = asyncio.Event()

    def on_progress(self, update: ProgressUpdate) -> None:
        self.progress_threads.add(threading.current_thread().name)
        self.progress.append(update)
        self.progress_times.append(time.monotonic())
        self.changed.set()

    async def on_started(self, job: JobRecord) -> None:
        self.started.append(job.id)
        self.changed.set()

    async def on_finished(self, job: JobRecord) -> None:
        self.finished[job.id] = job
        self.changed.set()

    async def until(self, condition: Callable[[], bool], limit_s: float = 10.0) -> None:
        async with asyncio.timeout(limit_s):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[JobQueue]:
    q = await JobQueue.open(tmp_path / "data", QueueConfig(max_queued_per_member=None))
    yield q
    await q.aclose()


RunnerFactory = Callable[..., Awaitable[tuple[JobRunner, dict[str, FakeRenderer]]]]


@pytest.fixture
async def start_runner(queue: JobQueue) -> AsyncIterator[RunnerFactory]:
    runners: list[JobRunner] = []

    async def start(
        step_s: float = 0.005, devices: tuple[str, ...] = ("cpu",), **kw: object
    ) -> tuple[JobRunner, dict[str, FakeRenderer]]:
        built: dict[str, FakeRenderer] = {}

        def make(device: str) -> FakeRenderer:
            built[device] = FakeRenderer(device, step_s=step_s)
            return built[device]

        runner = JobRunner(queue, make, devices, queue.data_dir, lease_s=3.0, poll_s=0.05, **kw)  # type: ignore[arg-type]
        await runner.start()
        runners.append(runner)
        return runner, built

    yield start
    for runner in runners:
        await runner.drain(grace_s=2.0)


async def test_jobs_run_on_the_device_thread_in_fair_order_and_report_on_the_loop(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = Recorder()
    queue.subscribe(events)
    a = [(await queue.submit(ALICE, SPEC)).job.id for _ in range(2)]
    b = (await queue.submit(BOB, SPEC)).job.id
    _, renderers = await start_runner()
    await events.until(lambda: len(events.finished) == 3)
    assert events.started == [a[0], b, a[1]]
    assert renderers["cpu"].built_on.startswith("render-cpu")
    assert set(renderers["cpu"].rendered_on) == {renderers["cpu"].built_on}
    assert events.progress_threads == {threading.main_thread().name}
    for job_id in [*a, b]:
        job = await queue.get(job_id)
        assert job.state == JobStatus.DONE
        assert job.step == 10
        assert job.gpu_seconds > 0
        (path,) = job.result_paths
        assert Path(path).is_relative_to(queue.data_dir / "outputs" / str(job_id))
        assert read(path) == PNG_1X1
    assert [j.id for j in await queue.undelivered()] == [*a, b]
    assert queue.speeds.measured(SpeedClass.of(SPEC), "cpu") is not None  # measured, and persisted by the store
    assert await queue.store.speeds()


async def test_previews_are_requested_only_when_due(queue: JobQueue, start_runner: RunnerFactory) -> None:
    events = Recorder()
    queue.subscribe(events)
    _, renderers = await start_runner(step_s=0.01, preview_interval_s=0.1)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=60))).job
    await events.until(lambda: job.id in events.finished)
    with_preview = [u for u in events.progress if u.preview is not None]
    assert len(events.progress) == 60
    elapsed = events.progress_times[-1] - events.progress_times[0]
    assert 2 <= len(with_preview) <= elapsed / 0.1 + 2  # one per 0.1 s, never one per iteration
    assert len(with_preview) < 30
    assert renderers["cpu"].previews == len(with_preview)
    assert events.progress[-1].eta_done_s == 0.0


async def test_cancelling_a_running_job_stops_it_and_keeps_the_partial(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = Recorder()
    queue.subscribe(events)
    _, renderers = await start_runner(step_s=0.01)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await events.until(lambda: len(events.progress) >= 5)
    with pytest.raises(NotAllowed, match="only the member who asked"):
        await queue.cancel(job.id, by_user=BOB.user_id)
    await queue.cancel(job.id, by_user=ALICE.user_id)
    reached = renderers["cpu"].reached  # the cancel flag is already set when `cancel` returns
    await events.until(lambda: job.id in events.finished)
    done = events.finished[job.id]
    assert done.state == JobStatus.CANCELLED
    assert done.partial
    assert done.step <= reached + 1  # it finished the iteration it was in, and no more
    (path,) = done.result_paths
    assert read(path) == PNG_1X1
    assert [j.id for j in await queue.undelivered()] == [job.id]  # the partial is delivered


async def test_a_cancel_from_another_process_arrives_with_the_heartbeat(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = Recorder()
    queue.subscribe(events)
    await start_runner(step_s=0.01)  # lease 3 s: a heartbeat every second
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await events.until(lambda: len(events.progress) >= 3)
    assert await queue.store.request_cancel(job.id)  # what `cancel` does in a process that does not run the job
    await events.until(lambda: job.id in events.finished, limit_s=5)
    assert events.finished[job.id].state == JobStatus.CANCELLED
    assert events.finished[job.id].partial


async def test_engine_refusals_reach_the_member_and_crashes_do_not_leak(
    queue: JobQueue, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events = Recorder()
    queue.subscribe(events)
    await start_runner()
    bad = (await queue.submit(ALICE, _with(SPEC, text_prompts="fail invalid"))).job
    crash = (await queue.submit(BOB, _with(SPEC, text_prompts="fail crash"))).job
    ok = (await queue.submit(BOB, SPEC)).job
    with caplog.at_level(logging.ERROR, logger="bot.runner"):
        await events.until(lambda: len(events.finished) == 3)
    assert events.finished[bad.id].state == JobStatus.FAILED
    assert events.finished[bad.id].error == "text prompt: the fox is not allowed"
    assert events.finished[crash.id].state == JobStatus.FAILED
    assert events.finished[crash.id].error == "internal error"
    assert any("illegal memory access" in (r.exc_text or "") for r in caplog.records)
    assert events.finished[ok.id].state == JobStatus.DONE  # the runner carried on


async def test_checkpoints_are_stored_while_a_job_runs(queue: JobQueue, start_runner: RunnerFactory) -> None:
    events = Recorder()
    queue.subscribe(events)
    await start_runner(step_s=0.01, checkpoint_every_steps=7)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await events.until(lambda: len(events.progress) >= 30)
    for _ in range(100):  # the writes are asynchronous: give the one for step 21 time to land
        stored = await queue.get(job.id)
        if (stored.checkpoint_step or 0) >= 21:
            break
        await asyncio.sleep(0.05)
    assert stored.checkpoint_step is not None
    assert stored.checkpoint_step % 7 == 0
    assert stored.checkpoint_step >= 21
    await queue.cancel(job.id, by_user=ALICE.user_id)
    await events.until(lambda: job.id in events.finished)


async def test_drain_gives_the_job_back_and_the_next_runner_resumes_it(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = Recorder()
    queue.subscribe(events)
    first, _ = await start_runner(step_s=0.01, checkpoint_every_steps=1000)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=300))).job
    await events.until(lambda: len(events.progress) >= 20)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await first.drain()
    assert loop.time() - began < 2.0
    stored = await queue.get(job.id)
    assert stored.state == JobStatus.QUEUED  # not cancelled: it goes on after the restart
    assert stored.checkpoint_step is not None
    assert stored.checkpoint_step >= 20
    assert job.id not in events.finished
    _, renderers = await start_runner(step_s=0.001)
    await events.until(lambda: job.id in events.finished)
    assert renderers["cpu"].resumed_from == [stored.checkpoint_step]
    done = events.finished[job.id]
    assert done.state == JobStatus.DONE
    assert done.attempt == 2
    assert done.step == 300


async def test_a_runner_that_loses_its_lease_discards_its_attempt(queue: JobQueue, start_runner: RunnerFactory) -> None:
    events = Recorder()
    queue.subscribe(events)
    await start_runner(step_s=0.01)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await events.until(lambda: len(events.progress) >= 3)
    # another process decides the lease is dead and takes the job
    await queue.store.expire_leases("")
    thief = await queue.store.claim_next("thief/cpu", lease_s=60, now=time.time(), choose=lambda state: None)
    assert thief is not None
    assert thief.attempt == 2
    first_attempt_dir = queue.data_dir / "outputs" / str(job.id) / "a1"
    for _ in range(100):  # the heartbeat notices within lease_s / 3
        if not first_attempt_dir.exists():
            break
        await asyncio.sleep(0.05)
    assert not first_attempt_dir.exists()
    await queue.flush_events()
    assert job.id not in events.finished
    stored = await queue.get(job.id)
    assert (stored.state, stored.lease_owner) == (JobStatus.RUNNING, "thief/cpu")


class Counting(Recorder):
    """Counts each member's jobs running at once, from the started/finished events."""

    def __init__(self) -> None:
        super().__init__()
        self.running: dict[int, int] = {}
        self.most: dict[int, int] = {}

    async def on_started(self, job: JobRecord) -> None:
        user = job.owner.user_id
        self.running[user] = self.running.get(user, 0) + 1
        self.most[user] = max(self.most.get(user, 0), self.running[user])

    async def on_finished(self, job: JobRecord) -> None:
        self.running[job.owner.user_id] -= 1


def read(path: str) -> bytes:
    return Path(path).read_bytes()


def _with(spec: JobSpec, **changes: object) -> JobSpec:
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


async def test_two_devices_run_two_members_at_once_but_never_one_member_twice(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = Recorder()
    queue.subscribe(events)
    counting = Counting()
    queue.subscribe(counting)
    for _ in range(3):
        await queue.submit(ALICE, _with(SPEC, iterations=15))
    await queue.submit(BOB, _with(SPEC, iterations=15))
    _, renderers = await start_runner(step_s=0.01, devices=("cpu:0", "cpu:1"))
    await events.until(lambda: len(events.finished) == 4)
    assert counting.most == {ALICE.user_id: 1, BOB.user_id: 1}  # the per-member running cap held
    assert all(r.rendered_on for r in renderers.values())  # both devices worked
    devices = {j.device for j in events.finished.values()}
    assert devices == {"cpu:0", "cpu:1"}
