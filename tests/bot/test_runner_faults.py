"""The runner when renders go wrong for months: a device that keeps failing, a render that stops iterating,
a thread that will not stop, and a job's end that cannot be written. In-process, with fake renderers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.queue.api import Renderer
from bot.queue.device_health import EXIT_DEVICE_FAILED, EXIT_STUCK_THREAD
from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig, attempts_text
from bot.services import open_queue
from engine.jobs import Artifact, JobSpec, JobStatus
from storage.records import JobRecord, Owner
from tests.support.events import EventRecorder
from tests.support.gate import StepGate
from tests.support.renderer import FakeRenderer
from tests.support.waiting import eventually

SPEC = JobSpec(
    text_prompts="a fox", width=64, height=64, iterations=10, num_cuts=4, vqgan_model="tiny", clip_model="tiny"
)
LONG = dataclasses.replace(SPEC, iterations=2000)
MEMBERS = [Owner(user_id=n, guild_id=10, channel_id=100) for n in range(1, 6)]


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[JobQueue]:
    data = tmp_path / "data"
    async with open_queue(data / "jobs.sqlite3", data, QueueConfig(max_queued_per_member=None)) as q:
        yield q


@pytest.fixture
async def runners() -> AsyncIterator[list[JobRunner]]:
    started: list[JobRunner] = []
    yield started
    for runner in started:
        await runner.drain(grace_s=2.0)


async def start(
    queue: JobQueue,
    runners: list[JobRunner],
    make: Callable[[str], Renderer],
    devices: tuple[str, ...] = ("cpu",),
    **options: object,
) -> JobRunner:
    config = RunnerConfig(**{"lease_s": 3.0, "poll_s": 0.05, **options})  # type: ignore[arg-type]
    runner = JobRunner(queue, make, devices, queue.data_dir, config)
    await runner.start()
    runners.append(runner)
    return runner


class StickyErrorRenderer(FakeRenderer):
    """A device whose every render fails the way a GPU in a sticky CUDA error state does."""

    def render(self, spec: JobSpec, output: Path, **kw: object) -> Artifact:  # type: ignore[override]
        self.rendered_on.append(threading.current_thread().name)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class StuckRenderer(FakeRenderer):
    """A render stuck in a call that never looks at the cancel flag (a hung driver call)."""

    def __init__(self, device: str, unstick: threading.Event, started: threading.Event) -> None:
        super().__init__(device)
        self.unstick, self.started = unstick, started

    def render(self, spec: JobSpec, output: Path, **kw: object) -> Artifact:  # type: ignore[override]
        self.started.set()
        self.unstick.wait(120)
        raise RuntimeError("unstuck by the test")


def slow_renderer(device: str) -> FakeRenderer:
    """At least 5 ms an iteration whatever the suite's speed switch: a LONG job lasts 10 s or more."""
    renderer = FakeRenderer(device)
    renderer.step_s = 0.005
    return renderer


async def state_of(queue: JobQueue, job_id: int) -> JobRecord:
    return await queue.store.get(job_id)


async def test_a_device_in_a_sticky_error_fails_three_jobs_then_stops_and_asks_for_a_restart(
    queue: JobQueue, runners: list[JobRunner], caplog: pytest.LogCaptureFixture
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    built: list[FakeRenderer] = []

    def make(device: str) -> Renderer:
        built.append(StickyErrorRenderer(device))
        return built[-1]

    jobs = [(await queue.submit(member, SPEC)).job for member in MEMBERS]
    with caplog.at_level(logging.ERROR, logger="bot.queue.runner"):
        runner = await start(queue, runners, make)
        await asyncio.wait_for(runner.exit_requested.wait(), 30)
    assert runner.exit_status == EXIT_DEVICE_FAILED
    assert runner.device_health() == {"cpu": False}  # /healthz says 503
    failed = [j.id for j in jobs if (await state_of(queue, j.id)).state == JobStatus.FAILED]
    assert len(failed) == 3
    assert all(events.finished[i].error == "internal error" for i in failed)
    await asyncio.sleep(0.5)  # ten claim polls: nothing more is taken
    waiting = [await state_of(queue, j.id) for j in jobs if j.id not in failed]
    assert [j.state for j in waiting] == [JobStatus.QUEUED, JobStatus.QUEUED]  # nothing failed for the device
    assert len(built[0].rendered_on) == 3
    (said,) = [r.getMessage() for r in caplog.records if "in a row" in r.getMessage()]
    assert "device cpu" in said
    assert "illegal memory access" in said
    assert "status 3" in said


async def test_a_job_that_renders_between_two_failures_resets_the_count(
    queue: JobQueue, runners: list[JobRunner]
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    crash = dataclasses.replace(SPEC, text_prompts="fail crash")
    for member, spec in zip(MEMBERS, (crash, crash, SPEC, crash, crash), strict=True):
        await queue.submit(member, spec)
    runner = await start(queue, runners, lambda device: FakeRenderer(device))
    await eventually(lambda: len(events.finished) == 5, 30.0, "all five jobs to end")
    assert sorted(j.state for j in events.finished.values()) == sorted([JobStatus.FAILED] * 4 + [JobStatus.DONE])
    assert runner.exit_status is None
    assert runner.device_health() == {"cpu": True}


async def test_a_render_that_stops_iterating_goes_back_to_the_queue_on_a_fresh_thread_and_fails_after_three(
    queue: JobQueue, runners: list[JobRunner], caplog: pytest.LogCaptureFixture
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    gate = StepGate(hold_at=2)  # every attempt stops at step 2 and stays there until cancelled
    built: list[FakeRenderer] = []

    def make(device: str) -> Renderer:
        built.append(FakeRenderer(device, gate=gate))
        return built[-1]

    job = (await queue.submit(MEMBERS[0], SPEC)).job
    with caplog.at_level(logging.ERROR, logger="bot.queue"):
        runner = await start(queue, runners, make, stall_s=0.4, stall_grace_s=5.0)
        await eventually(lambda: job.id in events.finished, 60.0, "the stalled job to be given up on")
    record = await state_of(queue, job.id)
    assert record.state == JobStatus.FAILED
    assert record.error == attempts_text(3) == "failed after 3 attempts; the bot restarted while rendering it each time"
    assert record.interruptions == 3
    assert sum("no iteration on cpu" in r.getMessage() for r in caplog.records) == 3
    # each stall got the device a fresh thread and renderer: the first, then one after each stall
    assert len(built) == 4
    assert len({r.built_on for r in built}) == 4
    gate.release()
    after = (await queue.submit(MEMBERS[1], SPEC)).job
    await eventually(lambda: after.id in events.finished, 30.0, "the next job")
    assert events.finished[after.id].state == JobStatus.DONE  # the device works on
    assert runner.device_health() == {"cpu": True}
    assert runner.exit_status is None


async def test_a_thread_that_ignores_cancel_makes_the_process_exit_after_the_other_jobs_are_checkpointed(
    queue: JobQueue, runners: list[JobRunner], caplog: pytest.LogCaptureFixture
) -> None:
    unstick, stuck_started = threading.Event(), threading.Event()

    def make(device: str) -> Renderer:
        return StuckRenderer(device, unstick, stuck_started) if device == "cpu:0" else slow_renderer(device)

    events = EventRecorder()
    queue.subscribe(events)
    try:
        stuck_job = (await queue.submit(MEMBERS[0], LONG)).job
        runner = await start(
            queue, runners, make, devices=("cpu:0", "cpu:1"), stall_s=0.4, stall_grace_s=0.5, checkpoint_every_s=3600
        )
        await asyncio.to_thread(stuck_started.wait, 30)  # cpu:0 has the first job
        other_job = (await queue.submit(MEMBERS[1], LONG)).job
        await eventually(
            lambda: any(u.job_id == other_job.id for u in events.progress), 30.0, "the other job rendering on cpu:1"
        )
        with caplog.at_level(logging.ERROR, logger="bot.queue.runner"):
            await asyncio.wait_for(runner.exit_requested.wait(), 30)
        assert runner.exit_status == EXIT_STUCK_THREAD
        assert runner.device_health()["cpu:0"] is False
        other = await state_of(queue, other_job.id)
        assert other.state == JobStatus.QUEUED
        assert other.interruptions == 0
        assert other.checkpoint_step is not None
        assert other.checkpoint_step > 0
        stuck = await state_of(queue, stuck_job.id)
        assert stuck.state == JobStatus.QUEUED
        assert stuck.interruptions == 1
        assert any("did not stop" in r.getMessage() and "status 4" in r.getMessage() for r in caplog.records)
    finally:
        unstick.set()


async def test_an_end_that_cannot_be_written_is_retried_and_the_job_is_never_rendered_again(
    queue: JobQueue, runners: list[JobRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    real_finish = queue.store.finish
    refusals = 0

    async def full_disk_for_a_while(*args: object, **kw: object) -> JobRecord | None:
        nonlocal refusals
        if refusals < 12:  # about 1.2 s of refusals: longer than the 0.6 s lease
            refusals += 1
            raise OSError(28, "No space left on device")
        return await real_finish(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(queue.store, "finish", full_disk_for_a_while)
    built: list[FakeRenderer] = []

    def make(device: str) -> Renderer:
        built.append(FakeRenderer(device))
        return built[-1]

    job = (await queue.submit(MEMBERS[0], SPEC)).job
    await start(queue, runners, make, lease_s=0.6, finish_retry_s=(0.1, 0.1))
    await eventually(lambda: job.id in events.finished, 30.0, "the job's end to be recorded")
    record = await state_of(queue, job.id)
    assert record.state == JobStatus.DONE
    assert record.attempt == 1
    assert record.interruptions == 0
    assert len(built[0].rendered_on) == 1
    assert refusals == 12
