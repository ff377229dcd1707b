"""The runner driving real animation jobs (the `tiny` preset on CPU): a drained job resumes at its frame."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from bot.ports import ProgressUpdate
from bot.queue import JobQueue, QueueConfig
from bot.runner import JobRunner
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import JobRecord, Owner
from tests.support.gate import GatedRenderer, StepGate

torch = pytest.importorskip("torch")
from engine.media import probe as media  # noqa: E402 - after torch is known to be there
from engine.renderer import Renderer  # noqa: E402

ANIMATION = JobSpec(
    kind=JobKind.ANIMATION, text_prompts="a forest ^ a city", change_prompts_on_frame=(2,), width=64, height=64,
    num_cuts=4, vqgan_model="tiny", clip_model="tiny", seed=3, iterations=2, frames=5, zoom=1.1, fps=5.0,
    smoother=True,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Events:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []
        self.finished: dict[int, JobRecord] = {}
        self.done = asyncio.Event()

    def on_progress(self, update: ProgressUpdate) -> None:
        self.updates.append(update)

    async def on_started(self, job: JobRecord) -> None:
        pass

    async def on_finished(self, job: JobRecord) -> None:
        self.finished[job.id] = job
        self.done.set()


def build(device: str) -> Renderer:
    return Renderer(device)


async def test_a_drained_animation_resumes_without_rendering_its_frames_again(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path, QueueConfig())
    events = Events()
    queue.subscribe(events)
    try:
        gate = StepGate(hold_at=5)  # the first iteration of frame 3 (two iterations a frame)
        first = JobRunner(
            queue, lambda d: GatedRenderer(build(d), gate), ["cpu"], tmp_path,
            checkpoint_every_steps=1000, checkpoint_every_s=1000,
        )  # fmt: skip
        await first.start()
        job = (await queue.submit(Owner(user_id=1), ANIMATION)).job
        await gate.held(within=120)
        draining = asyncio.create_task(first.drain(grace_s=60))
        await asyncio.sleep(0)  # drain() marks the running job before it first waits
        gate.release()  # the next iteration checkpoints and stops
        await draining
        stopped_at = max(u.step for u in events.updates)
        assert stopped_at == 6  # in frame 3, past its first iteration
        assert not events.done.is_set()

        events.updates.clear()
        second = JobRunner(queue, build, ["cpu"], tmp_path)
        await second.start()
        async with asyncio.timeout(120):
            await events.done.wait()
        await second.drain()
        done = events.finished[job.id]
        assert done.state == JobStatus.DONE, done.error
        assert (done.step, done.frame) == (10, 5)
        resumed_steps = [u.step for u in events.updates]
        assert resumed_steps == list(range(resumed_steps[0], 11))
        assert resumed_steps[0] == stopped_at + 1  # nothing done before the drain is rendered again
        info = await asyncio.to_thread(media.probe_video, done.result_paths[0])
        assert (info.frames, info.fps) == (5, 5.0)
        assert dataclasses.replace(done.spec, seed=3) == ANIMATION
    finally:
        await queue.aclose()
