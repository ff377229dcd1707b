"""The runner driving the real engine (the `tiny` preset on CPU): the loop stays responsive while it renders."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from bot.admission import AdmissionLimits
from bot.loop_lag import LoopLag
from bot.ports import ProgressUpdate
from bot.queue import JobQueue, QueueConfig
from bot.runner import JobRunner
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import JobRecord, Owner
from tests.support.waiting import eventually

torch = pytest.importorskip("torch")
from engine.renderer import Renderer  # noqa: E402 - after torch is known to be there

TINY = JobSpec(
    text_prompts="a red apple", width=64, height=64, num_cuts=4, vqgan_model="tiny", clip_model="tiny", seed=3
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Finished:
    def __init__(self) -> None:
        self.jobs: dict[int, JobRecord] = {}
        self.previews = 0
        self.updates = 0
        self.done = asyncio.Event()

    def on_progress(self, update: ProgressUpdate) -> None:
        self.updates += 1
        self.previews += update.preview is not None

    async def on_started(self, job: JobRecord) -> None:
        pass

    async def on_finished(self, job: JobRecord) -> None:
        self.jobs[job.id] = job
        self.done.set()


def build(device: str) -> Renderer:
    renderer = Renderer(device)
    renderer.models(TINY)  # models resident before the first job, built on the device thread
    return renderer


async def test_loop_lag_stays_low_while_a_tiny_job_renders_on_cpu(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path, QueueConfig(admission=AdmissionLimits(max_iterations=100_000)))
    runner = JobRunner(queue, build, ["cpu"], tmp_path, preview_interval_s=0.5, checkpoint_every_steps=10)
    events = Finished()
    queue.subscribe(events)
    try:
        await runner.start()
        # long by construction: it renders, with previews and checkpoints, until the test has measured enough
        job = (await queue.submit(Owner(user_id=1), dataclasses.replace(TINY, iterations=100_000))).job
        async with LoopLag(interval_s=0.005) as lag:
            await eventually(lambda: events.updates >= 12 and len(lag.samples) > 100, 120.0, "12 iterations")
            rendered = events.updates
        await queue.cancel(job.id, by_user=1)
        async with asyncio.timeout(120):
            await events.done.wait()
        done = events.jobs[job.id]
        assert done.state == JobStatus.CANCELLED, done.error
        assert done.step >= rendered
        assert (await asyncio.to_thread(Path(done.result_paths[0]).read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"
        assert events.updates == done.step
        assert events.previews >= 1
        assert lag.percentile(99) < 0.050, f"p50 {lag.percentile(50):.4f} s, p99 {lag.percentile(99):.4f} s"
    finally:
        await runner.drain()
        await queue.aclose()


async def test_an_upscale_job_of_a_finished_still_runs_on_the_real_engine(tmp_path: Path) -> None:
    queue = await JobQueue.open(tmp_path, QueueConfig())
    runner = JobRunner(queue, build, ["cpu"], tmp_path)
    events = Finished()
    queue.subscribe(events)
    try:
        await runner.start()
        still = (await queue.submit(Owner(user_id=1), dataclasses.replace(TINY, iterations=2))).job
        async with asyncio.timeout(60):
            while still.id not in events.jobs:
                events.done.clear()
                await events.done.wait()
        source = events.jobs[still.id].result_paths[0]
        # what the Upscale button submits under ENGINE_MODEL=tiny (bot.cogs.generate.derive)
        spec = JobSpec(kind=JobKind.UPSCALE, init_image=source, width=64, height=64, iterations=1, upscale_model="tiny")
        job = (await queue.submit(Owner(user_id=2), spec)).job
        async with asyncio.timeout(60):
            while job.id not in events.jobs:
                events.done.clear()
                await events.done.wait()
        done = events.jobs[job.id]
        assert done.state == JobStatus.DONE, done.error
        with Image.open(done.result_paths[0]) as img:
            assert img.size == (128, 128)
            assert img.text["upscale_model"] == "tiny"
            assert img.text["text_prompts"] == "a red apple"
    finally:
        await runner.drain()
        await queue.aclose()
