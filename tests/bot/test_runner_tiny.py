"""The runner driving the real engine (the `tiny` preset on CPU): the loop stays responsive while it renders."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.loop_lag import LoopLag
from bot.queue.admission import AdmissionLimits
from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import QueueConfig
from bot.services import open_queue
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import Owner
from tests.support.events import EventRecorder
from tests.support.waiting import eventually

torch = pytest.importorskip("torch")
from engine.renderer import Renderer  # noqa: E402 - after torch is known to be there

TINY = JobSpec(
    text_prompts="a red apple", width=64, height=64, num_cuts=4, vqgan_model="tiny", clip_model="tiny", seed=3
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(device: str) -> Renderer:
    renderer = Renderer(device)
    renderer.models(TINY)  # models resident before the first job, built on the device thread
    return renderer


async def test_loop_lag_stays_low_while_a_tiny_job_renders_on_cpu(tmp_path: Path) -> None:
    config = QueueConfig(admission=AdmissionLimits(max_iterations=100_000))
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path, config) as queue:
        options = RunnerConfig(preview_interval_s=0.5, checkpoint_every_steps=10)
        runner = JobRunner(queue, build, ["cpu"], tmp_path, options)
        events = EventRecorder()
        queue.subscribe(events)
        try:
            await runner.start()
            # long by construction: it renders, with previews and checkpoints, until the test has measured enough
            job = (await queue.submit(Owner(user_id=1), dataclasses.replace(TINY, iterations=100_000))).job
            async with LoopLag(interval_s=0.005) as lag:
                await eventually(lambda: len(events.progress) >= 12 and len(lag.samples) > 100, 120.0, "12 iterations")
                rendered = len(events.progress)
            await queue.cancel(job.id, by_user=1)
            done = await eventually(lambda: events.finished.get(job.id), 120.0, "the cancelled job")
            assert done.state == JobStatus.CANCELLED, done.error
            assert done.step >= rendered
            assert (await asyncio.to_thread(Path(done.result_paths[0]).read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"
            assert len(events.progress) == done.step
            assert events.previews >= 1
            assert lag.percentile(99) < 0.050, f"p50 {lag.percentile(50):.4f} s, p99 {lag.percentile(99):.4f} s"
        finally:
            await runner.drain()


async def test_an_upscale_job_of_a_finished_still_runs_on_the_real_engine(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path) as queue:
        runner = JobRunner(queue, build, ["cpu"], tmp_path)
        events = EventRecorder()
        queue.subscribe(events)
        try:
            await runner.start()
            still = (await queue.submit(Owner(user_id=1), dataclasses.replace(TINY, iterations=2))).job
            source = (await eventually(lambda: events.finished.get(still.id), 60.0, "the still")).result_paths[0]
            # what the Upscale button submits under ENGINE_MODEL=tiny (bot.cogs.generate.derive)
            spec = JobSpec(
                kind=JobKind.UPSCALE, init_image=source, width=64, height=64, iterations=1, upscale_model="tiny"
            )
            job = (await queue.submit(Owner(user_id=2), spec)).job
            done = await eventually(lambda: events.finished.get(job.id), 60.0, "the upscale")
            assert done.state == JobStatus.DONE, done.error
            with Image.open(done.result_paths[0]) as img:
                assert img.size == (128, 128)
                assert img.text["upscale_model"] == "tiny"
                assert img.text["text_prompts"] == "a red apple"
        finally:
            await runner.drain()
