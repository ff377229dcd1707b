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

from bot.queue.admission import SpeedClass
from bot.queue.api import NotAllowed
from bot.queue.runner import JobRunner, work_path
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.services import open_queue
from engine.jobs import JobSpec, JobStatus
from storage.records import JobRecord, Owner
from tests.support.events import EventRecorder
from tests.support.gate import StepGate
from tests.support.renderer import PNG_1X1, FakeRenderer
from tests.support.waiting import eventually

SPEC = JobSpec(
    text_prompts="a fox", width=64, height=64, iterations=10, num_cuts=4, vqgan_model="tiny", clip_model="tiny"
)
ALICE, BOB = Owner(user_id=1, guild_id=10, channel_id=100), Owner(user_id=2, guild_id=10, channel_id=100)


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[JobQueue]:
    data = tmp_path / "data"
    async with open_queue(data / "jobs.sqlite3", data, QueueConfig(max_queued_per_member=None)) as q:
        yield q


RunnerFactory = Callable[..., Awaitable[tuple[JobRunner, dict[str, FakeRenderer]]]]


@pytest.fixture
async def start_runner(queue: JobQueue) -> AsyncIterator[RunnerFactory]:
    runners: list[JobRunner] = []

    async def start(
        step_s: float = 0.002, devices: tuple[str, ...] = ("cpu",), gate: StepGate | None = None, **kw: object
    ) -> tuple[JobRunner, dict[str, FakeRenderer]]:
        built: dict[str, FakeRenderer] = {}

        def make(device: str) -> FakeRenderer:
            built[device] = FakeRenderer(device, step_s=step_s, gate=gate)
            return built[device]

        config = RunnerConfig(lease_s=3.0, poll_s=0.05, **kw)  # type: ignore[arg-type]
        runner = JobRunner(queue, make, devices, queue.data_dir, config)
        await runner.start()
        runners.append(runner)
        return runner, built

    yield start
    for runner in runners:
        await runner.drain(grace_s=2.0)


async def test_jobs_run_on_the_device_thread_in_fair_order_and_report_on_the_loop(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    a = [(await queue.submit(ALICE, SPEC)).job.id for _ in range(2)]
    b = (await queue.submit(BOB, SPEC)).job.id
    _, renderers = await start_runner()
    await eventually(lambda: len(events.finished) == 3, 60.0, "3 jobs to finish")
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
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=1)
    _, renderers = await start_runner(preview_interval_s=0.5, gate=gate)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=60))).job
    await gate.held()  # step 1 had its preview
    await asyncio.sleep(0.6)  # the next is due now: the runner's clock has moved past the interval
    gate.release()
    await eventually(lambda: job.id in events.finished, 60.0, "the job to finish")
    with_preview = [u for u in events.progress if u.preview is not None]
    assert len(events.progress) == 60
    assert with_preview[0].step == 1
    assert with_preview[1].step == 2  # the first iteration after the interval
    elapsed = events.progress_times[-1] - events.progress_times[0]
    assert len(with_preview) <= elapsed / 0.5 + 2  # one per 0.5 s, never one per iteration
    assert renderers["cpu"].previews == len(with_preview)
    assert events.progress[-1].eta_done_s == 0.0


async def test_cancelling_a_running_job_stops_it_and_keeps_the_partial(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=5)
    await start_runner(gate=gate)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await gate.held()
    with pytest.raises(NotAllowed, match="only the member who asked"):
        await queue.cancel(job.id, by_user=BOB.user_id)
    await queue.cancel(job.id, by_user=ALICE.user_id)
    await eventually(lambda: job.id in events.finished, 60.0, "the job to finish")
    done = events.finished[job.id]
    assert done.state == JobStatus.CANCELLED
    assert done.partial
    assert done.step == 5  # it stopped where it was, between two iterations
    (path,) = done.result_paths
    assert read(path) == PNG_1X1
    assert [j.id for j in await queue.undelivered()] == [job.id]  # the partial is delivered


async def test_a_cancel_from_another_process_arrives_with_the_heartbeat(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=3)
    await start_runner(gate=gate)  # lease 3 s: a heartbeat every second
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await gate.held()
    assert await queue.store.request_cancel(job.id)  # what `cancel` does in a process that does not run the job
    await eventually(lambda: job.id in events.finished, 5.0, "the job to stop")
    assert events.finished[job.id].state == JobStatus.CANCELLED
    assert events.finished[job.id].partial


async def test_engine_refusals_reach_the_member_and_crashes_do_not_leak(
    queue: JobQueue, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    await start_runner()
    bad = (await queue.submit(ALICE, _with(SPEC, text_prompts="fail invalid"))).job
    crash = (await queue.submit(BOB, _with(SPEC, text_prompts="fail crash"))).job
    ok = (await queue.submit(BOB, SPEC)).job
    with caplog.at_level(logging.ERROR, logger="bot.queue.runner"):
        await eventually(lambda: len(events.finished) == 3, 60.0, "3 jobs to finish")
    assert events.finished[bad.id].state == JobStatus.FAILED
    assert events.finished[bad.id].error == "text prompt: the fox is not allowed"
    assert events.finished[crash.id].state == JobStatus.FAILED
    assert events.finished[crash.id].error == "internal error"
    assert any("illegal memory access" in (r.exc_text or "") for r in caplog.records)
    assert events.finished[ok.id].state == JobStatus.DONE  # the runner carried on


async def test_checkpoints_are_stored_while_a_job_runs(queue: JobQueue, start_runner: RunnerFactory) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=30)
    await start_runner(gate=gate, checkpoint_every_steps=7)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await gate.held()
    # the writes are asynchronous: the one for step 28 lands while the job waits at step 30
    stored = await eventually(lambda: _checkpointed(queue, job.id, 28), 30.0, "the checkpoint of step 28")
    assert stored.checkpoint_step == 28  # every 7 steps: 7, 14, 21, 28
    await queue.cancel(job.id, by_user=ALICE.user_id)
    await eventually(lambda: job.id in events.finished, 60.0, "the job to finish")


async def _checkpointed(queue: JobQueue, job_id: int, step: int) -> JobRecord | None:
    stored = await queue.get(job_id)
    return stored if (stored.checkpoint_step or 0) >= step else None


async def test_drain_gives_the_job_back_and_the_next_runner_resumes_it(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=20)
    first, _ = await start_runner(gate=gate, checkpoint_every_steps=1000)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=300))).job
    await gate.held()
    loop = asyncio.get_running_loop()
    began = loop.time()
    draining = asyncio.create_task(first.drain())
    await asyncio.sleep(0)  # drain() marks the running job before it first waits
    gate.release()  # the next iteration checkpoints and stops
    await draining
    assert loop.time() - began < 2.0
    stored = await queue.get(job.id)
    assert stored.state == JobStatus.QUEUED  # not cancelled: it goes on after the restart
    assert stored.checkpoint_step == 21
    assert job.id not in events.finished
    _, renderers = await start_runner()
    await eventually(lambda: job.id in events.finished, 60.0, "the job to finish")
    assert renderers["cpu"].resumed_from == [21]
    done = events.finished[job.id]
    assert done.state == JobStatus.DONE
    assert done.attempt == 2
    assert done.step == 300


async def test_a_job_s_work_folder_outlives_a_drain_and_goes_when_the_job_ends(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=5)
    first, renderers = await start_runner(gate=gate, checkpoint_every_steps=1000)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=50))).job
    work = work_path(queue.data_dir, job.id)
    await gate.held()
    assert renderers["cpu"].work_dirs == [work]  # one folder per job, under the data directory
    draining = asyncio.create_task(first.drain())
    await asyncio.sleep(0)
    gate.release()
    await draining
    assert (work / "frames.txt").is_file()  # kept for the resume
    _, renderers = await start_runner()
    await eventually(lambda: job.id in events.finished, 60.0, "the jobs to end")
    assert renderers["cpu"].work_dirs == [work]  # the next attempt works in the same folder
    assert events.finished[job.id].state == JobStatus.DONE
    assert not work.exists()  # the job has ended: its intermediate files are gone
    failed = (await queue.submit(BOB, _with(SPEC, text_prompts="fail invalid"))).job
    cancelled = (await queue.submit(ALICE, _with(SPEC, text_prompts="fail cancelled"))).job
    await eventually(lambda: {failed.id, cancelled.id} <= set(events.finished), 60.0, "the jobs to end")
    assert not work_path(queue.data_dir, failed.id).exists()
    assert not work_path(queue.data_dir, cancelled.id).exists()


async def test_cancelled_before_a_result_is_cancelled_without_one(queue: JobQueue, start_runner: RunnerFactory) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    await start_runner()
    job = (await queue.submit(ALICE, _with(SPEC, text_prompts="fail cancelled"))).job
    await eventually(lambda: job.id in events.finished, 60.0, "the jobs to end")
    done = events.finished[job.id]
    assert (done.state, done.result_paths, done.error) == (JobStatus.CANCELLED, (), None)


async def test_a_checkpoint_whose_frames_are_gone_renders_the_job_again_from_the_start(
    queue: JobQueue, start_runner: RunnerFactory
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=20)
    first, _ = await start_runner(gate=gate, checkpoint_every_steps=1000)
    job = (await queue.submit(ALICE, _with(SPEC, text_prompts="stale frames", iterations=40))).job
    await gate.held()
    draining = asyncio.create_task(first.drain())
    await asyncio.sleep(0)
    gate.release()
    await draining
    assert (await queue.get(job.id)).checkpoint_step == 21
    _, renderers = await start_runner()
    await eventually(lambda: job.id in events.finished, 60.0, "the jobs to end")
    assert renderers["cpu"].resumed_from == [0]  # the checkpoint was refused: a fresh render, not a failure
    done = events.finished[job.id]
    assert (done.state, done.step) == (JobStatus.DONE, 40)


async def test_a_runner_that_loses_its_lease_discards_its_attempt(queue: JobQueue, start_runner: RunnerFactory) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=3)
    await start_runner(gate=gate)
    job = (await queue.submit(ALICE, _with(SPEC, iterations=1000))).job
    await gate.held()
    # another process decides the lease is dead and takes the job
    await queue.store.expire_leases("")
    thief = await queue.store.claim_next("thief/cpu", lease_s=60, now=time.time(), choose=lambda state: None)
    assert thief is not None
    assert thief.attempt == 2
    first_attempt_dir = queue.data_dir / "outputs" / str(job.id) / "a1"
    # the heartbeat notices within lease_s / 3 and cancels the render, which was waiting at the gate
    await eventually(lambda: not first_attempt_dir.exists(), 30.0, "the first attempt's folder to go")
    await queue.flush_events()
    assert job.id not in events.finished
    stored = await queue.get(job.id)
    assert (stored.state, stored.lease_owner) == (JobStatus.RUNNING, "thief/cpu")


class Counting(EventRecorder):
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
    events = EventRecorder()
    queue.subscribe(events)
    counting = Counting()
    queue.subscribe(counting)
    for _ in range(3):
        await queue.submit(ALICE, _with(SPEC, iterations=15))
    await queue.submit(BOB, _with(SPEC, iterations=15))
    gate = StepGate(hold_at=1)
    _, renderers = await start_runner(devices=("cpu:0", "cpu:1"), gate=gate)
    await gate.held(count=2)  # both devices have a job at once: one of each member's
    gate.release()
    await eventually(lambda: len(events.finished) == 4, 60.0, "4 jobs to finish")
    assert counting.most == {ALICE.user_id: 1, BOB.user_id: 1}  # the per-member running cap held
    assert all(r.rendered_on for r in renderers.values())  # both devices worked
    devices = {j.device for j in events.finished.values()}
    assert devices == {"cpu:0", "cpu:1"}
