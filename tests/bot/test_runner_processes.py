"""Real worker processes on one database: SIGKILL mid-job, two workers at once, SIGTERM drain.

Each worker is `tests/support/queue_worker.py` (JobQueue + JobRunner, the fake renderer or the tiny
engine) and reports its events as JSON lines, which these tests read back. A test that needs a job
to be mid-render holds it there with a `FileGate` the workers share.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import texts
from bot.queue.service import JobQueue, QueueConfig
from bot.services import open_queue
from engine.jobs import JobSpec, JobStatus
from storage.records import JobRecord, Owner
from tests.support import speed
from tests.support.gate import FileGate
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


class Worker:
    """One `queue_worker` process."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp
        self.events = tmp / "events.jsonl"
        self.output = (tmp / f"worker-{time.monotonic_ns()}.log").open("w")
        env = speed.child_env()
        command = [
            sys.executable,
            "-m",
            "tests.support.queue_worker",
            str(tmp / "jobs.db"),
            str(tmp / "data"),
            str(self.events),
        ]
        self.process = subprocess.Popen(
            [*command, *args], cwd=ROOT, env=env, stdout=self.output, stderr=subprocess.STDOUT
        )

    def wait(self, limit_s: float = 60.0) -> int:
        try:
            return self.process.wait(limit_s)
        finally:
            self.output.close()

    def log(self) -> str:
        return Path(self.output.name).read_text()


def read_events(path: Path) -> list[Event]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(path: Path, condition: Callable[[list[Event]], bool], limit_s: float = 60.0) -> list[Event]:
    return eventually_sync(lambda: condition(events := read_events(path)) and events, limit_s, f"events in {path}")  # type: ignore[no-any-return]


def jobs_in(db: Path, data: Path) -> list[JobRecord]:
    async def read() -> list[JobRecord]:
        async with open_queue(db, data) as queue:
            return [await queue.get(i) for i in range(1, 1000) if await _exists(queue, i)]

    return asyncio.run(read())


async def _exists(queue: JobQueue, job_id: int) -> bool:
    try:
        await queue.store.get(job_id)
    except LookupError:
        return False
    return True


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:  # never leave a process behind
        if worker.process.poll() is None:
            worker.process.kill()
            worker.wait()


@pytest.mark.parametrize(
    ("renderer", "jobs", "iterations", "every", "kill_at"),
    [("fake", 4, 40, 5, 17), ("tiny", 2, 12, 3, 7)],  # tiny: the real engine on CPU, its real checkpoints
)
def test_a_worker_killed_mid_job_resumes_it_from_its_checkpoint_and_finishes_each_job_once(
    tmp_path: Path, workers: list[Worker], renderer: str, jobs: int, iterations: int, every: int, kill_at: int
) -> None:
    gate = FileGate(tmp_path / "gate")
    gate.hold_at(kill_at)
    common = ("--renderer", renderer, "--iterations", str(iterations), "--checkpoint-steps", str(every))
    first = Worker(tmp_path, "--submit", str(jobs), "--gate", str(gate.directory), *common)
    workers.append(first)
    assert eventually_sync(gate.waiting, 120, "the first job to reach the gate") == [kill_at]
    interrupted = next(e["job"] for e in reversed(read_events(first.events)) if e["ev"] == "progress")
    saved = (kill_at // every) * every  # the last checkpoint before the gate
    eventually_sync(lambda: checkpoint_of(tmp_path, interrupted) == saved, 60, f"the checkpoint of step {saved}")
    first.process.send_signal(signal.SIGKILL)  # mid-render: the job waits between two iterations
    assert first.wait() == -signal.SIGKILL
    accepted = {e["job"] for e in read_events(first.events) if e["ev"] == "accepted"}
    assert accepted == set(range(1, jobs + 1))

    gate.release()
    second = Worker(tmp_path, *common)
    workers.append(second)
    assert second.wait(180) == 0, second.log()
    events = read_events(tmp_path / "events.jsonl")
    finished = collections.Counter(e["job"] for e in events if e["ev"] == "finished")
    assert finished == dict.fromkeys(accepted, 1)  # every accepted job, exactly once
    resumed_steps = [
        e["step"]
        for e in events
        if e["ev"] == "progress" and e["job"] == interrupted and e["pid"] == second.process.pid
    ]
    assert min(resumed_steps) == saved + 1  # it went on from its checkpoint, not from step 1
    assert max(resumed_steps) == iterations
    records = jobs_in(tmp_path / "jobs.db", tmp_path / "data")
    assert [(j.id, j.state, j.step) for j in records] == [(i, JobStatus.DONE, iterations) for i in sorted(accepted)]
    assert next(j for j in records if j.id == interrupted).attempt == 2
    for job in records:
        assert Path(job.result_paths[0]).read_bytes()[:4] == b"\x89PNG"


def checkpoint_of(tmp_path: Path, job_id: int) -> int | None:
    (job,) = [j for j in jobs_in(tmp_path / "jobs.db", tmp_path / "data") if j.id == job_id]
    return job.checkpoint_step


def test_two_workers_on_one_database_never_run_a_job_twice(tmp_path: Path, workers: list[Worker]) -> None:
    async def submit() -> None:
        config = QueueConfig(max_queued_per_member=None)
        async with open_queue(tmp_path / "jobs.db", tmp_path / "data", config) as queue:
            spec = JobSpec(text_prompts="a fox", width=64, height=64, num_cuts=4, iterations=15, vqgan_model="tiny")
            for n in range(10):
                await queue.submit(Owner(user_id=n % 4), spec)

    asyncio.run(submit())
    gate = FileGate(tmp_path / "gate")
    gate.hold_at(1)  # each worker's first job waits until both have one
    pair = [Worker(tmp_path, "--iterations", "15", "--gate", str(gate.directory)) for _ in range(2)]
    workers.extend(pair)
    eventually_sync(lambda: len(gate.waiting()) == 2, 120, "both workers to hold a job")
    gate.release()
    assert [w.wait() for w in pair] == [0, 0], [w.log() for w in pair]
    events = read_events(tmp_path / "events.jsonl")
    assert collections.Counter(e["job"] for e in events if e["ev"] == "finished") == dict.fromkeys(range(1, 11), 1)
    for job in range(1, 11):
        progress = [(e["pid"], e["step"]) for e in events if e["ev"] == "progress" and e["job"] == job]
        assert len({pid for pid, _ in progress}) == 1  # one process ran it
        assert sorted(step for _, step in progress) == list(range(1, 16))  # and no step twice
    assert {e["pid"] for e in events if e["ev"] == "finished"} == {w.process.pid for w in pair}  # both worked


def test_sigterm_checkpoints_the_running_job_and_exits_within_seconds(tmp_path: Path, workers: list[Worker]) -> None:
    gate = FileGate(tmp_path / "gate")
    gate.hold_at(10)
    first = Worker(
        tmp_path, "--submit", "1", "--iterations", "150", "--checkpoint-steps", "1000", "--gate", str(gate.directory)
    )
    workers.append(first)
    eventually_sync(gate.waiting, 120, "the job to reach step 10")
    began = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    wait_for(first.events, lambda ev: any(e["ev"] == "draining" for e in ev))
    gate.release()  # its next iteration is checkpointed, and the job given back
    assert first.wait(10) == 0, first.log()
    assert time.monotonic() - began < 5.0
    (job,) = jobs_in(tmp_path / "jobs.db", tmp_path / "data")
    assert job.state == JobStatus.QUEUED  # given back, not cancelled
    assert job.checkpoint_step == 11
    assert not any(e["ev"] == "finished" for e in read_events(first.events))

    second = Worker(tmp_path, "--iterations", "150")
    workers.append(second)
    assert second.wait() == 0, second.log()
    steps = [
        e["step"]
        for e in read_events(tmp_path / "events.jsonl")
        if e["ev"] == "progress" and e["pid"] == second.process.pid
    ]
    assert steps[0] == 12
    (done,) = jobs_in(tmp_path / "jobs.db", tmp_path / "data")
    assert (done.state, done.step) == (JobStatus.DONE, 150)


def test_a_job_that_kills_its_process_fails_after_three_attempts_and_the_queue_moves_on(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """As under a supervisor that restarts the bot each time the host's OOM killer takes it."""
    first = Worker(tmp_path, "--poison", "--worker-id", "w")
    workers.append(first)
    assert first.wait() == 70, first.log()
    for _ in range(2):
        again = Worker(tmp_path, "--worker-id", "w")
        workers.append(again)
        assert again.wait() == 70, again.log()  # it takes the job back at once, and dies on it again
    last = Worker(tmp_path, "--submit", "1", "--worker-id", "w")
    workers.append(last)
    assert last.wait() == 0, last.log()
    poison, other = jobs_in(tmp_path / "jobs.db", tmp_path / "data")
    assert poison.state == JobStatus.FAILED
    assert poison.error == "failed after 3 attempts; the bot restarted while rendering it each time"
    assert poison.interruptions == 3
    assert other.state == JobStatus.DONE
    assert "failed: failed after 3 attempts" in texts.failure_text(poison)  # what the channel reads
    assert "failed after 3 attempts" in texts.job_text(poison, entry=None, now=time.time())  # and /job


def test_two_processes_on_one_data_directory_get_their_own_worker_ids_and_keep_their_jobs(
    tmp_path: Path, workers: list[Worker]
) -> None:
    gate = FileGate(tmp_path / "gate")
    gate.hold_at(3)
    first = Worker(tmp_path, "--submit", "2", "--iterations", "15", "--slot", "--gate", str(gate.directory))
    workers.append(first)
    eventually_sync(lambda: len(gate.waiting()) == 1, 120, "the first process to hold a job")
    second = Worker(tmp_path, "--iterations", "15", "--slot", "--gate", str(gate.directory))
    workers.append(second)
    eventually_sync(lambda: len(gate.waiting()) == 2, 120, "the second process to hold the other job")
    ready = {e["pid"]: e["worker"] for e in read_events(tmp_path / "events.jsonl") if e["ev"] == "ready"}
    assert ready[first.process.pid] != ready[second.process.pid]
    first.process.send_signal(signal.SIGKILL)  # its job stays running under its lease
    assert first.wait() == -signal.SIGKILL
    restarted = Worker(tmp_path, "--iterations", "15", "--slot", "--gate", str(gate.directory))
    workers.append(restarted)
    wait_for(
        tmp_path / "events.jsonl", lambda ev: any(e["ev"] == "ready" and e["pid"] == restarted.process.pid for e in ev)
    )
    gate.release()
    assert [second.wait(120), restarted.wait(120)] == [0, 0], [second.log(), restarted.log()]
    events = read_events(tmp_path / "events.jsonl")
    ready = {e["pid"]: e["worker"] for e in events if e["ev"] == "ready"}
    assert ready[restarted.process.pid] == ready[first.process.pid]  # the same slot, so it took its job back
    (held,) = {e["job"] for e in events if e["ev"] == "progress" and e["pid"] == first.process.pid}
    (other,) = {1, 2} - {held}
    ran = {job: {e["pid"] for e in events if e["ev"] == "progress" and e["job"] == job} for job in (1, 2)}
    assert ran == {held: {first.process.pid, restarted.process.pid}, other: {second.process.pid}}
    finished = collections.Counter(e["job"] for e in events if e["ev"] == "finished")
    assert finished == {1: 1, 2: 1}
