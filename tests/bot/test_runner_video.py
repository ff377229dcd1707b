"""The runner driving real animation jobs (the `tiny` preset on CPU): a drained job resumes at its frame."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.services import open_queue
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import Owner
from tests.support import postgres
from tests.support.events import EventRecorder
from tests.support.gate import GatedRenderer, StepGate
from tests.support.waiting import eventually

torch = pytest.importorskip("torch")
from engine.media import probe as media  # noqa: E402 - after torch is known to be there
from engine.renderer import Renderer  # noqa: E402

ANIMATION = JobSpec(
    kind=JobKind.ANIMATION, text_prompts="a forest ^ a city", change_prompts_on_frame=(2,), width=64, height=64,
    num_cuts=4, vqgan_model="tiny", clip_model="tiny", seed=3, iterations=2, frames=5, zoom=1.1, fps=5.0,
    smoother=True,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(device: str) -> Renderer:
    return Renderer(device)


async def test_a_drained_animation_resumes_without_rendering_its_frames_again(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path) as queue:
        events = EventRecorder()
        queue.subscribe(events)
        gate = StepGate(hold_at=5)  # the first iteration of frame 3 (two iterations a frame)
        no_checkpoints = RunnerConfig(checkpoint_every_steps=1000, checkpoint_every_s=1000)
        first = JobRunner(queue, lambda d: GatedRenderer(build(d), gate), ["cpu"], tmp_path, no_checkpoints)
        await first.start()
        job = (await queue.submit(Owner(user_id=1), ANIMATION)).job
        await gate.held(within=120)
        draining = asyncio.create_task(first.drain(grace_s=60))
        await asyncio.sleep(0)  # drain() marks the running job before it first waits
        gate.release()  # the next iteration checkpoints and stops
        await draining
        stopped_at = max(u.step for u in events.progress)
        assert stopped_at == 6  # in frame 3, past its first iteration
        assert not events.finished

        events.progress.clear()
        second = JobRunner(queue, build, ["cpu"], tmp_path)
        await second.start()
        done = await eventually(lambda: events.finished.get(job.id), 120.0, "the resumed animation")
        await second.drain()
        assert done.state == JobStatus.DONE, done.error
        assert (done.step, done.frame) == (10, 5)
        resumed_steps = [u.step for u in events.progress]
        assert resumed_steps == list(range(resumed_steps[0], 11))
        assert resumed_steps[0] == stopped_at + 1  # nothing done before the drain is rendered again
        info = await asyncio.to_thread(media.probe_video, done.result_paths[0])
        assert (info.frames, info.fps) == (5, 5.0)
        assert dataclasses.replace(done.spec, seed=3) == ANIMATION


@pytest.fixture
def shared_database(postgres_url: str) -> str:
    postgres.run_sync(postgres.empty(postgres_url))
    return postgres_url


async def test_an_animation_drained_on_one_host_resumes_on_another_without_rendering_its_frames_again(
    tmp_path: Path, shared_database: str
) -> None:
    """Two workers that share only PostgreSQL: the finished frames travel with the checkpoint."""
    first_dir, second_dir = tmp_path / "host-a", tmp_path / "host-b"
    events = EventRecorder()
    gate = StepGate(hold_at=5)
    no_checkpoints = RunnerConfig(checkpoint_every_steps=1000, checkpoint_every_s=1000)
    async with open_queue(shared_database, first_dir) as host_a:
        host_a.subscribe(events)
        first = JobRunner(host_a, lambda d: GatedRenderer(build(d), gate), ["cpu"], first_dir, no_checkpoints)
        await first.start()
        job = (await host_a.submit(Owner(user_id=1), ANIMATION)).job
        await gate.held(within=120)
        draining = asyncio.create_task(first.drain(grace_s=60))
        await asyncio.sleep(0)  # drain() marks the running job before it first waits
        gate.release()
        await draining
    stopped_at = max(u.step for u in events.progress)
    assert stopped_at == 6
    await asyncio.to_thread(shutil.rmtree, first_dir)  # nothing of host A's disk is left to share

    events = EventRecorder()
    async with open_queue(shared_database, second_dir) as host_b:
        host_b.subscribe(events)
        second = JobRunner(host_b, build, ["cpu"], second_dir)
        await second.start()
        done = await eventually(lambda: events.finished.get(job.id), 120.0, "the animation resumed on host B")
        await second.drain()
        assert done.state == JobStatus.DONE, done.error
        resumed_steps = [u.step for u in events.progress]
        assert resumed_steps[0] == stopped_at + 1  # its finished frames came from the database
        result = await host_b.result_file(done)
        assert result is not None
        info = await asyncio.to_thread(media.probe_video, result)
        assert info.frames == 5
        assert await host_b.store.files.list_files(job.id, "work") == []  # the frames' rows go with the job
