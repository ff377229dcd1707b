"""The database loops' waits (`Backoff`) and the checkpoint writer's retries (`write_checkpoints`) while the
database is away: one log line per failure, growing waits, back to normal at the first success, and the newest
checkpoint written once the database is back (never lost, never an older one over a newer)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from bot.queue.backoff import Backoff
from bot.queue.run_writes import write_checkpoints
from bot.queue.runs import Run
from engine.jobs import JobKind, JobSpec, JobStatus
from storage.records import Claim, JobRecord, Owner
from storage.store import StoreUnavailable

log = logging.getLogger("tests.backoff")


def test_the_wait_doubles_while_failing_up_to_the_longest_and_resets_at_a_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = Backoff("polling", log, every_s=1.0, longest_s=5.0)
    with caplog.at_level(logging.INFO, logger="tests.backoff"):
        waits = [backoff.failed(StoreUnavailable("the database cannot be reached")) for _ in range(4)]
        assert waits == [2.0, 4.0, 5.0, 5.0]
        assert backoff.succeeded() == 1.0
        assert backoff.failed(RuntimeError("a bug")) == 2.0
    lines = [r for r in caplog.records if r.name == "tests.backoff"]
    assert [r.levelname for r in lines] == ["WARNING"] * 4 + ["INFO", "ERROR"]
    assert all(r.exc_info is None for r in lines[:4])  # the database away: one line, no traceback
    assert lines[-1].exc_info is not None  # anything else: its traceback
    assert "works again after 4 failure(s)" in lines[4].getMessage()


class FlakyQueue:
    """Refuses `fail` checkpoint writes (the database away), then keeps what it is given."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.saved: list[int] = []

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int) -> bool:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the database cannot be reached")
        self.saved.append(step)
        return True


def a_run(tmp_path: Path) -> Run:
    spec = JobSpec(text_prompts="a harbour", width=64, height=64, iterations=10, vqgan_model="tiny", clip_model="tiny")
    job = JobRecord(id=1, kind=JobKind.IMAGE, owner=Owner(user_id=1), spec=spec, state=JobStatus.RUNNING, created_at=0)
    claim = Claim(job=job, lease_owner="w1/cpu", attempt=1, checkpoint=None)
    return Run(
        claim=claim, device="cpu", output=tmp_path / "out.png", cancel=threading.Event(), started=0, first_step=0
    )


async def test_a_checkpoint_that_cannot_be_written_is_tried_again_and_a_newer_one_replaces_it(tmp_path: Path) -> None:
    queue, run = FlakyQueue(fail=2), a_run(tmp_path)
    run.pending_checkpoint = (b"ten", 10, 1)
    writer = asyncio.create_task(write_checkpoints(queue, run, waits=(0.01, 0.05), give_up=lambda: False))
    await asyncio.sleep(0)
    run.pending_checkpoint = (b"twenty", 20, 1)  # came while the first one failed: the first one is dropped
    await asyncio.wait_for(writer, 10.0)
    assert queue.saved == [20]
    assert not run.lost


async def test_a_shutdown_gives_up_on_a_checkpoint_the_database_cannot_take(tmp_path: Path) -> None:
    queue, run = FlakyQueue(fail=1), a_run(tmp_path)
    run.pending_checkpoint = (b"ten", 10, 1)
    await asyncio.wait_for(write_checkpoints(queue, run, waits=(0.01, 0.05), give_up=lambda: True), 10.0)
    assert queue.saved == []
