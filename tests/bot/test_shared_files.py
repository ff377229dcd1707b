"""Hosts that share only PostgreSQL: a worker (queue and runner on data directory A) and a front-end (a queue on
data directory B) on one database. A job's inputs and result travel through the database's `job_files`;
the single-host SQLite bot keeps its files on disk and writes no rows there."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.queue.inputs import escape_path
from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.services import open_queue
from engine.jobs import Artifact, JobSpec, JobStatus
from storage.records import JobRecord, Owner
from storage.store import PrepareSpec
from tests.support import postgres
from tests.support.bot_harness import ALICE as BOT_ALICE, make_config, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.renderer import FakeRenderer
from tests.support.waiting import eventually

SPEC = JobSpec(
    text_prompts="a fox", width=64, height=64, iterations=10, num_cuts=4, vqgan_model="tiny", clip_model="tiny"
)
ALICE = Owner(user_id=1, guild_id=10, channel_id=100)
DAY = 24 * 3600.0
CONFIG = QueueConfig(max_queued_per_member=None, keep_results_s=30 * DAY)


class ReadingRenderer(FakeRenderer):
    """A fake that reads its inputs as the engine would, and keeps what it read and wrote."""

    def __init__(self, device: str) -> None:
        super().__init__(device, noise=True)  # noise: a result of some kilobytes, not a 1x1 PNG
        self.read: dict[str, tuple[str, bytes]] = {}
        self.wrote: bytes = b""

    def render(self, spec: JobSpec, output: Path, **kw: object) -> Artifact:  # type: ignore[override]
        assert spec.init_image is not None
        self.read["init_image"] = (spec.init_image, Path(spec.init_image).read_bytes())
        prompt = spec.image_prompts.rsplit(":", 1)[0].replace("\\:", ":")
        self.read["image_prompts"] = (prompt, Path(prompt).read_bytes())
        artifact = super().render(spec, output, **kw)  # type: ignore[arg-type]
        self.wrote = output.read_bytes()
        return artifact


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        name = postgres.run_sync(postgres.migrated_database())
    except Exception as e:  # no server to test on
        postgres.unavailable(f"{type(e).__name__}: {e}")
    try:
        yield postgres.database_url(name)
    finally:
        postgres.run_sync(postgres.drop_database(name))


@pytest.fixture
async def url(postgres_url: str) -> str:
    await postgres.empty(postgres_url)
    return postgres_url


@pytest.fixture
async def front(url: str, tmp_path: Path) -> AsyncIterator[JobQueue]:
    async with open_queue(url, tmp_path / "b", CONFIG) as queue:
        yield queue


async def _inputs(tmp_path: Path) -> tuple[JobSpec, dict[str, Path]]:
    upload, prompt = tmp_path / "upload.png", tmp_path / "prompt:1.png"
    upload.write_bytes(b"\x89PNG the init image")
    prompt.write_bytes(b"\x89PNG the image prompt")
    spec = dataclasses.replace(SPEC, image_prompts=escape_path(prompt) + ":0.5")
    return spec, {"init_image": upload, "image_prompts": prompt}


async def test_a_job_submitted_on_one_host_renders_on_another_and_its_result_comes_back(
    url: str, front: JobQueue, tmp_path: Path
) -> None:
    spec, inputs = await _inputs(tmp_path)
    entry = await front.submit(ALICE, spec, inputs=inputs)
    job_id = entry.job.id
    assert [f.name for f in await front.store.files.list_files(job_id, "input")] == [
        "image_prompts.png",
        "init_image.png",
    ]
    a = tmp_path / "a"
    renderers: dict[str, ReadingRenderer] = {}

    def make(device: str) -> ReadingRenderer:
        renderers[device] = ReadingRenderer(device)
        return renderers[device]

    async with open_queue(url, a, CONFIG) as worker:
        runner = JobRunner(worker, make, ("cpu",), a, RunnerConfig(lease_s=3.0, poll_s=0.05))
        await runner.start()
        try:
            done = await eventually(lambda: _finished(front, job_id), 60.0, "the job to be rendered on the other host")
        finally:
            await runner.drain(grace_s=2.0)
    assert done.state is JobStatus.DONE
    read = renderers["cpu"].read
    assert read["init_image"] == (str(a / "inputs" / str(job_id) / "init_image.png"), b"\x89PNG the init image")
    assert read["image_prompts"] == (str(a / "inputs" / str(job_id) / "image_prompts.png"), b"\x89PNG the image prompt")
    assert done.spec.init_image is not None
    assert Path(done.spec.init_image).is_relative_to(tmp_path / "b")
    assert await front.store.files.list_files(job_id, "input") == []  # gone when the job ended
    assert not (a / "inputs" / str(job_id)).exists()

    await asyncio.to_thread(shutil.rmtree, a)  # the worker's host is gone: only the database has the result
    assert not await asyncio.to_thread(Path(done.result_paths[0]).exists)
    local = await front.result_file(done)
    assert local == tmp_path / "b" / "outputs" / str(job_id) / "a1" / f"job-{job_id}.png"
    assert await asyncio.to_thread(local.read_bytes) == renderers["cpu"].wrote
    assert len(renderers["cpu"].wrote) > 1000
    assert await front.result_file(done) == local  # fetched once, then read from this host's disk

    await front.housekeep(now=time.time() + DAY)  # the front-end's sweep: the staged inputs go, the result stays
    assert not (tmp_path / "b" / "inputs" / str(job_id)).exists()
    assert local.exists()
    await front.housekeep(now=time.time() + 31 * DAY)  # past retention: the copy and the stored result go
    assert await front.store.files.list_files(job_id, "result") == []
    assert not local.exists()
    assert (await front.get(job_id)).results_expired_at is not None


async def test_a_claimed_job_whose_inputs_are_gone_goes_back_to_the_queue_counted(
    url: str, front: JobQueue, tmp_path: Path
) -> None:
    spec, inputs = await _inputs(tmp_path)
    job_id = (await front.submit(ALICE, spec, inputs=inputs)).job.id
    await front.store.files.delete_files(job_id, "input")  # as if lost; the front-end's copy is on its own disk
    await front.store.files.put_file(job_id, "input", "init_image.png", inputs["init_image"])
    async with open_queue(url, tmp_path / "a", CONFIG) as worker:
        claim = await worker.claim("w/cpu", lease_s=30.0, device="cpu")
        assert claim is not None  # init_image is stored: fetched, its path is on this host
        assert claim.job.spec.init_image == str(tmp_path / "a" / "inputs" / str(job_id) / "init_image.png")
        await worker.release(claim, gpu_seconds=0.0, step=0, frame=0)
        await front.store.files.delete_files(job_id, "input")
        await asyncio.to_thread(shutil.rmtree, tmp_path / "a" / "inputs")
        await front.store.files.put_file(job_id, "input", "init_image.png", inputs["init_image"])

        async def gone(*args: object, **kw: object) -> bool:
            return False

        worker.store.files.fetch_file = gone  # type: ignore[method-assign]
        with pytest.raises(Exception, match="no longer stored"):
            await worker.claim("w/cpu", lease_s=30.0, device="cpu")
    job = await front.get(job_id)
    assert job.state is JobStatus.QUEUED
    assert job.interruptions == 1


async def test_the_single_host_sqlite_bot_keeps_its_files_on_disk(tmp_path: Path) -> None:
    spec, inputs = await _inputs(tmp_path)
    data = tmp_path / "data"
    async with open_queue(data / "jobs.sqlite3", data, CONFIG) as queue:
        assert not queue.store.files.shares_files
        job = (await queue.submit(ALICE, spec, inputs=inputs)).job
        runner = JobRunner(queue, ReadingRenderer, ("cpu",), data, RunnerConfig(lease_s=3.0, poll_s=0.05))
        await runner.start()
        try:
            done = await eventually(lambda: _finished(queue, job.id), 60.0, "the job to finish")
        finally:
            await runner.drain(grace_s=2.0)
        assert await queue.result_file(done) == Path(done.result_paths[0])
    with sqlite3.connect(data / "jobs.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM job_files").fetchone() == (0,)


async def _finished(queue: JobQueue, job_id: int) -> JobRecord | None:
    job = await queue.get(job_id)
    return job if job.finished else None


async def test_the_bot_posts_a_result_rendered_on_a_host_whose_data_directory_is_gone(
    url: str, fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)  # the bot's data directory: tmp_path/data
    async with running_bot(fake, config, run_jobs=False, store_url=url) as h:
        await fake.slash("imagine", user_id=BOT_ALICE, prompt="a harbour", iterations=5)
        job = await eventually(lambda: _any_job(h.queue), 30.0, "the job to be queued")
        a = tmp_path / "worker"
        renderers: dict[str, ReadingResult] = {}

        def make(device: str) -> ReadingResult:
            renderers[device] = ReadingResult(device)
            return renderers[device]

        async with open_queue(url, a, CONFIG) as worker:
            runner = JobRunner(worker, make, ("cpu",), a, RunnerConfig(lease_s=3.0, poll_s=0.05))
            await runner.start()
            try:
                await eventually(lambda: _finished(h.queue, job.id), 60.0, "the job to be rendered elsewhere")
            finally:
                await runner.drain(grace_s=2.0)
    await asyncio.to_thread(shutil.rmtree, a)
    async with running_bot(fake, config, run_jobs=False, store_url=url):  # delivers what is undelivered
        await eventually(lambda: fake.results(job.id), 30.0, "the result to be posted")
    posted = [
        data
        for r in fake.requests
        if r.method == "POST" and r.files
        for name, data in r.files
        if name.startswith(f"job-{job.id}.")
    ]
    assert posted == [renderers["cpu"].wrote]


class ReadingResult(FakeRenderer):
    """A fake whose result is noise (kilobytes, under the upload limit), kept to compare with what is posted."""

    def __init__(self, device: str) -> None:
        super().__init__(device, noise=True)
        self.wrote = b""

    def render(self, spec: JobSpec, output: Path, **kw: object) -> Artifact:  # type: ignore[override]
        artifact = super().render(spec, output, **kw)  # type: ignore[arg-type]
        self.wrote = output.read_bytes()
        return artifact


async def _any_job(queue: JobQueue) -> JobRecord | None:
    jobs = await queue.store.active()
    return jobs[0] if jobs else None


async def test_a_submit_whose_transaction_fails_after_storing_its_inputs_leaves_no_rows(
    front: JobQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, inputs = await _inputs(tmp_path)
    real_create = front.store.create
    prepared: list[int] = []

    async def failing_commit(*args: Any, prepare: PrepareSpec | None = None, **kw: Any) -> JobRecord:
        async def prepare_then_fail(job_id: int) -> JobSpec:
            assert prepare is not None
            await prepare(job_id)
            prepared.append(job_id)
            raise OSError(errno.EIO, "the COMMIT failed")

        return await real_create(*args, prepare=prepare_then_fail, **kw)

    monkeypatch.setattr(front.store, "create", failing_commit)
    with pytest.raises(OSError, match="COMMIT failed"):
        await front.submit(ALICE, spec, inputs=inputs)
    assert len(prepared) == 1
    assert await front.store.files.list_files(prepared[0], "input") == []
    assert not await asyncio.to_thread((tmp_path / "b" / "inputs" / str(prepared[0])).exists)
