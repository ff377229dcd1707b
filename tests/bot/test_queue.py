"""The queue as the bot sees it: fair order, caps and admission, cancel rights, inputs, ETAs, events."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.queue.admission import AdmissionLimits
from bot.queue.api import JobNotFound, NotAllowed, QueueRefused
from bot.queue.inputs import escape_path
from bot.queue.service import JobQueue, QueueConfig
from bot.services import open_queue
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import Owner, QueueState, SubmitLimits
from tests.support.events import EventRecorder

SPEC = JobSpec(
    text_prompts="a fox", width=64, height=64, iterations=10, num_cuts=4, vqgan_model="tiny", clip_model="tiny"
)
ALICE, BOB, CAROL = Owner(user_id=1, guild_id=10), Owner(user_id=2, guild_id=10), Owner(user_id=3, guild_id=20)


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[JobQueue]:
    config = QueueConfig(max_queued_per_member=5, max_queued_per_guild=8)
    async with open_queue(tmp_path / "data" / "jobs.sqlite3", tmp_path / "data", config) as q:
        yield q


async def use_gpu(queue: JobQueue, owner: Owner, seconds: float) -> None:
    """Give `owner` some finished GPU time in the window, through the store as a runner would."""
    job = await queue.store.create(owner, SPEC, now=queue.clock(), limits=SubmitLimits(max_queued_per_member=None))

    def this(state: QueueState) -> int | None:
        return job.id

    claim = await queue.store.claim_next("test", lease_s=60, now=queue.clock(), choose=this)
    assert claim is not None
    await queue.store.finish(claim, JobStatus.DONE, now=queue.clock(), gpu_seconds=seconds, step=10, frame=1)


async def test_the_member_with_less_gpu_time_goes_first(queue: JobQueue) -> None:
    await use_gpu(queue, ALICE, 600.0)
    await use_gpu(queue, BOB, 60.0)
    a1 = await queue.submit(ALICE, SPEC)
    a2 = await queue.submit(ALICE, SPEC)
    b1 = await queue.submit(BOB, SPEC)
    c1 = await queue.submit(CAROL, SPEC)
    order = [(e.job.owner.user_id, e.job.id) for e in await queue.snapshot()]
    # Carol has used nothing, Bob a little; Alice waits although she came first; FIFO within Alice
    assert order == [(3, c1.job.id), (2, b1.job.id), (1, a1.job.id), (1, a2.job.id)]
    assert [e.position for e in await queue.snapshot()] == [1, 2, 3, 4]


async def test_a_member_who_gets_a_job_falls_behind_the_others(queue: JobQueue) -> None:
    a = [(await queue.submit(ALICE, SPEC)).job.id for _ in range(3)]
    b = [(await queue.submit(BOB, SPEC)).job.id for _ in range(2)]
    order = [e.job.id for e in await queue.snapshot()]
    assert order == [a[0], b[0], a[1], b[1], a[2]]  # interleaved, not first come first served


async def test_the_priority_role_divides_usage_by_its_weight(queue: JobQueue) -> None:
    await use_gpu(queue, ALICE, 300.0)  # 300 / 4 = 75 with priority
    await use_gpu(queue, BOB, 100.0)
    a = await queue.submit(ALICE, SPEC, priority=True)
    b = await queue.submit(BOB, SPEC)
    assert [e.job.id for e in await queue.snapshot()] == [a.job.id, b.job.id]


async def test_caps_refuse_with_the_reason(queue: JobQueue) -> None:
    for _ in range(5):
        await queue.submit(ALICE, SPEC)
    with pytest.raises(QueueRefused, match=r"already have 5 jobs waiting \(the limit is 5\)"):
        await queue.submit(ALICE, SPEC)
    for _ in range(3):
        await queue.submit(BOB, SPEC)
    with pytest.raises(QueueRefused, match=r"this server already has 8 jobs waiting"):
        await queue.submit(Owner(user_id=4, guild_id=10), SPEC)
    await queue.submit(CAROL, SPEC)  # another server is not affected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"width": 4000}, "too large: keep each side at most 1024"),
        ({"iterations": 0}, "iterations must be between 1 and"),
        ({"num_cuts": 500}, "cuts must be between 1 and 128"),
        ({"text_prompts": "a fox:notanumber"}, "weight"),
        ({"kind": JobKind.STYLE_TRANSFER}, "needs a source video"),
    ],
)
async def test_admission_refuses_what_cannot_run(queue: JobQueue, change: dict[str, object], reason: str) -> None:
    with pytest.raises(QueueRefused, match=reason):
        await queue.submit(ALICE, dataclasses.replace(SPEC, **change))  # type: ignore[arg-type]
    assert await queue.snapshot() == []


async def test_admission_refuses_what_does_not_fit_the_gpu_or_the_time_limit(tmp_path: Path) -> None:
    limits = AdmissionLimits(memory_gb=10.0, max_job_seconds=3600.0)
    async with open_queue(
        tmp_path / "jobs.sqlite3", tmp_path, QueueConfig(devices=("cuda:0",), admission=limits)
    ) as queue:
        big = JobSpec(text_prompts="a fox", width=700, height=700, num_cuts=32)
        with pytest.raises(
            QueueRefused, match=r"needs about 16\.0 GB but the device has 10\.0 GB: the largest that fits is 512×512"
        ):
            await queue.submit(ALICE, big)
        long = JobSpec(kind=JobKind.ANIMATION, text_prompts="a fox", width=512, height=512, iterations=200, frames=30)
        with pytest.raises(QueueRefused, match="the limit is 60 min: use fewer iterations or frames"):
            await queue.submit(ALICE, long)
        ok = await queue.submit(ALICE, JobSpec(text_prompts="a fox", width=512, height=512, num_cuts=32))
        assert ok.position == 1


async def test_cancel_by_owner_removes_a_queued_job_at_once(queue: JobQueue) -> None:
    events = EventRecorder()
    queue.subscribe(events)
    first = await queue.submit(ALICE, SPEC)
    second = await queue.submit(ALICE, SPEC)
    cancelled = await queue.cancel(first.job.id, by_user=ALICE.user_id)
    assert cancelled.state == JobStatus.CANCELLED
    assert [(e.job.id, e.position) for e in await queue.snapshot()] == [(second.job.id, 1)]
    await queue.flush_events()
    assert list(events.finished) == [first.job.id]
    with pytest.raises(QueueRefused, match="already finished"):
        await queue.cancel(first.job.id, by_user=ALICE.user_id)


async def test_only_the_owner_or_a_moderator_may_cancel(queue: JobQueue) -> None:
    job = (await queue.submit(ALICE, SPEC)).job
    with pytest.raises(NotAllowed, match="only the member who asked"):
        await queue.cancel(job.id, by_user=BOB.user_id)
    assert (await queue.get(job.id)).state == JobStatus.QUEUED
    assert (await queue.cancel(job.id, by_user=BOB.user_id, moderator=True)).state == JobStatus.CANCELLED
    with pytest.raises(JobNotFound):
        await queue.cancel(999, by_user=ALICE.user_id)


async def test_input_files_are_copied_into_the_data_directory(queue: JobQueue, tmp_path: Path) -> None:
    upload = tmp_path / "download.png"
    upload.write_bytes(b"\x89PNG fake bytes")
    entry = await queue.submit(ALICE, SPEC, inputs={"init_image": upload})
    upload.unlink()  # the attachment URL expires; the job must not care
    stored = Path(entry.job.spec.init_image or "")
    assert stored.parent == queue.data_dir / "inputs" / str(entry.job.id)
    assert await asyncio.to_thread(stored.read_bytes) == b"\x89PNG fake bytes"
    assert (await queue.get(entry.job.id)).spec.init_image == str(stored)
    prompt_image = tmp_path / "prompt:1.png"  # a colon, escaped in the prompt text
    prompt_image.write_bytes(b"prompt image")
    spec = dataclasses.replace(SPEC, image_prompts=escape_path(prompt_image) + ":0.5")
    entry = await queue.submit(ALICE, spec, inputs={"image_prompts": prompt_image})
    prompt_image.unlink()
    copy = queue.data_dir / "inputs" / str(entry.job.id) / "image_prompts.png"
    assert entry.job.spec.image_prompts == escape_path(copy) + ":0.5"
    assert await asyncio.to_thread(copy.read_bytes) == b"prompt image"
    with pytest.raises(QueueRefused, match="init image file is missing"):
        await queue.submit(ALICE, dataclasses.replace(SPEC, init_image=str(tmp_path / "gone.png")))


async def test_etas_come_from_measured_speed_and_survive_a_restart(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path) as queue:
        await queue.record_speed(SPEC, "cpu", 2.0)  # 10 iterations: 20 s per job
        await queue.submit(ALICE, SPEC)
        await queue.submit(BOB, SPEC)
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path) as queue:
        third = await queue.submit(Owner(user_id=4, guild_id=ALICE.guild_id), SPEC)  # the same server: behind both
        assert (third.position, third.eta_start_s, third.eta_done_s) == (3, 40.0, 60.0)


async def test_etas_have_a_default_guess_before_anything_is_measured(queue: JobQueue) -> None:
    entry = await queue.submit(ALICE, SPEC)
    assert entry.eta_start_s == 0.0
    assert entry.eta_done_s is not None
    assert 0.0 < entry.eta_done_s < 10.0  # tiny at 64²: a fraction of a second per step


async def test_recent_lists_a_members_jobs_newest_first(queue: JobQueue) -> None:
    ids = [(await queue.submit(ALICE, SPEC)).job.id for _ in range(3)]
    await queue.submit(BOB, SPEC)
    assert [j.id for j in await queue.recent(ALICE.user_id, limit=2)] == ids[::-1][:2]
