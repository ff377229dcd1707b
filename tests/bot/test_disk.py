"""The data directory as an operator meets it: bounded by results, clean after crashes, and a full disk handled.

Leftovers of crashed submits and attempts go at start and never reach a new job; a full disk (a real
SQLITE_FULL from a capped database, an injected ENOSPC while copying or rendering) refuses new jobs
with one message, loses nothing accepted, and work resumes once space returns; results expire.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks import data_growth
from bot.queue.api import QueueRefused
from bot.queue.disk import DISK_FULL_TEXT
from bot.queue.job_files import STALE_S
from bot.queue.runner import JobRunner
from bot.queue.runs import RunnerConfig
from bot.queue.service import JobQueue, QueueConfig
from bot.services import open_queue
from engine.jobs import Artifact, JobSpec, JobStatus
from storage.records import Owner
from storage.sqlite.store import SqliteJobStore
from tests.support.bot_harness import ALICE, BOB, make_config, running_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.renderer import FakeRenderer
from tests.support.waiting import eventually

SPEC = JobSpec(
    text_prompts="a fox", width=64, height=64, iterations=6, num_cuts=4, vqgan_model="tiny", clip_model="tiny"
)
MEMBER = Owner(user_id=1, guild_id=10, channel_id=100)
DAY = 86400.0


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (10, 200, 30)).save(path)
    return path


def same_bytes(a: str | Path | None, b: Path) -> bool:
    return a is not None and Path(a).read_bytes() == b.read_bytes()


def aged(path: Path, seconds: float = STALE_S + 60) -> Path:
    """`path` made as old as a crash's leftover from before the last start."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[JobQueue]:
    data = tmp_path / "data"
    async with open_queue(data / "jobs.sqlite3", data, QueueConfig(max_queued_per_member=None)) as q:
        yield q


async def test_leftovers_of_crashed_submits_go_at_start_and_never_reach_a_new_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dead_staging = image(data / "inputs" / ".staging-0123" / "init_image.png")
    aged(dead_staging.parent)
    in_flight = image(data / "inputs" / ".staging-4567" / "init_image.png")  # another process's submit, right now
    for orphan in ("inputs/5/init_image.png", "work/7/frame_1.png", "outputs/9/a1/job-9.png"):
        aged(image(data / orphan).parents[0 if orphan.startswith(("inputs", "work")) else 1])
    async with open_queue(data / "jobs.sqlite3", data) as q:
        assert not dead_staging.parent.exists()
        assert in_flight.exists()  # too young to be a leftover: it may still become a job
        assert not any((data / top / n).exists() for top, n in (("inputs", "5"), ("work", "7"), ("outputs", "9")))
        # a submit rolled back a moment ago (a crash between its copy and its commit) left inputs/1 behind
        leftover = data / "inputs" / "1"
        leftover.mkdir()
        for name in ("init_image.png", "stale.png"):
            (leftover / name).write_bytes(b"not this job's")
        entry = await q.submit(MEMBER, dataclasses.replace(SPEC, init_image=str(image(tmp_path / "mine.png"))))
    assert entry.job.id == 1
    assert os.listdir(data / "inputs" / "1") == ["init_image.png"]
    assert same_bytes(entry.job.spec.init_image, tmp_path / "mine.png")


async def test_a_submit_whose_commit_fails_leaves_no_files_and_the_next_job_gets_the_id_clean(
    queue: JobQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(queue.store, SqliteJobStore)
    conn = queue.store._conn
    execute = conn.execute
    failures = [sqlite3.OperationalError("disk I/O error")]

    def failing(sql: str, *args: object) -> Any:
        if sql == "COMMIT" and failures:
            raise failures.pop()
        return execute(sql, *args)

    monkeypatch.setattr(conn, "execute", failing)
    spec = dataclasses.replace(SPEC, init_image=str(image(tmp_path / "first.png")))
    with pytest.raises(sqlite3.OperationalError):
        await queue.submit(MEMBER, spec)
    assert files_under(queue.data_dir / "inputs") == set()  # neither staged nor moved under the rolled-back id
    second = await queue.submit(MEMBER, dataclasses.replace(SPEC, init_image=str(image(tmp_path / "second.png"))))
    assert second.job.id == 1
    assert files_under(queue.data_dir / "inputs") == {"1/init_image.png"}


async def test_a_full_database_refuses_new_jobs_with_the_message_and_keeps_the_queue(queue: JobQueue) -> None:
    accepted = [(await queue.submit(MEMBER, SPEC)).job.id]
    assert isinstance(queue.store, SqliteJobStore)
    conn = queue.store._conn
    (pages,) = await (await conn.execute("PRAGMA page_count")).fetchone()  # type: ignore[misc]
    await conn.execute(f"PRAGMA max_page_count = {pages}")  # a disk with no room left for the database
    refusal = None
    for _ in range(200):  # the last page's free room takes a few jobs
        try:
            accepted.append((await queue.submit(MEMBER, dataclasses.replace(SPEC, text_prompts="x" * 200))).job.id)
        except QueueRefused as e:
            refusal = str(e)
            break
    assert refusal == DISK_FULL_TEXT
    assert [j.id for j in await queue.store.active()] == accepted  # nothing accepted is lost, nothing half-made
    await conn.execute("PRAGMA max_page_count = 1073741823")  # space returns
    later = await queue.submit(MEMBER, SPEC)
    assert later.job.id == accepted[-1] + 1
    assert later.job.state == JobStatus.QUEUED


async def test_no_space_while_copying_inputs_refuses_the_job_and_leaves_nothing(
    queue: JobQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = shutil.copyfile

    def full(src: Any, dst: Any, **kw: Any) -> Any:
        copy(src, dst, **kw)  # a part was written, then the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bot.queue.inputs.shutil.copyfile", full)
    spec = dataclasses.replace(SPEC, init_image=str(image(tmp_path / "in.png")))
    with pytest.raises(QueueRefused) as refused:
        await queue.submit(MEMBER, spec)
    assert str(refused.value) == "the bot's disk is full; try again later"
    assert files_under(queue.data_dir / "inputs") == set()
    assert await queue.store.active() == []
    monkeypatch.setattr("bot.queue.inputs.shutil.copyfile", copy)
    assert (await queue.submit(MEMBER, spec)).job.id == 1


class Disk:
    """`shutil.disk_usage` for the data directory, with the free space a test sets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, free: int) -> None:
        self.free, self.calls = free, 0
        monkeypatch.setattr("bot.queue.disk.shutil.disk_usage", self)

    def __call__(self, path: Any) -> Any:
        self.calls += 1
        return shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - self.free, self.free)


async def start_runner(queue: JobQueue, renderer: Callable[[str], Any] = FakeRenderer) -> JobRunner:
    runner = JobRunner(queue, renderer, ["cpu"], queue.data_dir, RunnerConfig(lease_s=3.0, poll_s=0.05))
    await runner.start()
    return runner


async def test_low_free_disk_refuses_new_jobs_and_starts_none_until_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    config = QueueConfig(max_queued_per_member=None, min_free_disk_bytes=2048 * 2**20)
    async with open_queue(data / "jobs.sqlite3", data, config) as q:
        waiting = (await q.submit(MEMBER, SPEC)).job.id
        disk = Disk(monkeypatch, free=100 * 2**20)
        with pytest.raises(QueueRefused) as refused:
            await q.submit(MEMBER, SPEC)
        assert str(refused.value) == DISK_FULL_TEXT
        runner = await start_runner(q)
        try:
            await eventually(lambda: disk.calls >= 5, 30.0, "the runner to look for work a few times")
            assert (await q.get(waiting)).state == JobStatus.QUEUED  # not started into a full disk
            disk.free = 5 * 2**30
            await eventually(lambda: _done(q, waiting), 30.0, "the waiting job to run once there is room")
            assert (await q.submit(MEMBER, SPEC)).job.state in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)
        finally:
            await runner.drain(grace_s=2.0)


async def _done(q: JobQueue, job_id: int) -> bool:
    return (await q.get(job_id)).state == JobStatus.DONE


class FillingRenderer(FakeRenderer):
    """Writes its result into a disk that is full while `full` is set."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.full = threading.Event()
        self.full.set()

    def render(self, spec: JobSpec, output: Path, **kw: Any) -> Artifact:
        if self.full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device", str(output))
        return super().render(spec, output, **kw)


async def test_a_render_that_finds_the_disk_full_waits_in_the_queue_and_finishes_when_space_returns(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    built: list[FillingRenderer] = []

    def make(device: str) -> FillingRenderer:
        built.append(FillingRenderer(device))
        return built[-1]

    config = QueueConfig(max_queued_per_member=None, disk_full_pause_s=0.2)
    async with open_queue(data / "jobs.sqlite3", data, config) as q:
        job_id = (await q.submit(MEMBER, SPEC)).job.id
        runner = await start_runner(q, make)
        try:
            await eventually(lambda: _attempted(q, job_id), 30.0, "a render into the full disk")
            job = await q.get(job_id)
            assert (job.state, job.error) in ((JobStatus.QUEUED, None), (JobStatus.RUNNING, None))  # never failed
            built[0].full.clear()  # space returns
            await eventually(lambda: _done(q, job_id), 30.0, "the job to finish by itself")
        finally:
            await runner.drain(grace_s=2.0)
        assert (await q.get(job_id)).error is None


async def _attempted(q: JobQueue, job_id: int) -> bool:
    job = await q.get(job_id)
    return job.attempt >= 2 or (job.attempt == 1 and job.state == JobStatus.QUEUED)


async def test_a_finished_job_keeps_only_its_result_then_it_expires_and_job_says_so(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    options = {"keep_results_s": 30 * DAY}
    async with running_bot(fake, config, queue_options=options) as h:
        await fake.slash("imagine", user_id=ALICE, prompt="noise", width=160, height=160, size_limit=20_000)
        await eventually(lambda: fake.results(1), 20.0, "the re-encoded result")
        await eventually(lambda: _delivered(h.queue, 1), 10.0, "the job marked delivered")
        kept = {"1/a1/job-1.png", "1/a1/job-1.png.posted.json"}  # the fitted copy goes once it is posted
        await eventually(lambda: files_under(config.data_dir / "outputs") == kept, 10.0, "only the result kept")
        assert not (config.data_dir / "work" / "1").exists()
        await h.queue.housekeep(now=time.time() + 29 * DAY)
        assert (config.data_dir / "outputs" / "1" / "a1" / "job-1.png").exists()  # kept for 30 days
        await h.queue.housekeep(now=time.time() + 31 * DAY)
        shown = await fake.slash("job", user_id=BOB, id=1)
        reply = (await eventually(lambda: fake.replies(shown), 10.0, "/job's reply"))[0]
        job = await h.job(1)
    assert not (config.data_dir / "outputs" / "1").exists()
    assert job.results_expired_at is not None
    assert "The result file has expired" in reply
    assert "kept on disk" not in reply


async def _delivered(q: JobQueue, job_id: int) -> bool:
    return (await q.get(job_id)).result_message_id is not None


def test_after_stills_animations_style_transfers_and_a_crash_only_results_remain(tmp_path: Path) -> None:
    data = data_growth.grow(tmp_path, jobs=4, iterations=2)  # SIGKILL mid style transfer, restarted
    left = files_under(data) - {"jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"}
    assert left == {
        "outputs/1/a2/job-1.mp4",
        "outputs/2/a1/job-2.png",
        "outputs/3/a1/job-3.mp4",
        "outputs/4/a1/job-4.png",
    }
