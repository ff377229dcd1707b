"""ETAs with render workers elsewhere: a front-end divides the queue among the live workers' devices."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from bot.queue.service import QueueConfig
from bot.services import open_queue
from engine.jobs import JobSpec
from storage.records import Owner, WorkerRecord

SPEC = JobSpec(text_prompts="a fox", width=64, height=64, iterations=100, vqgan_model="tiny", clip_model="tiny")
FRONT_END = QueueConfig(devices=("cuda:0",), max_queued_per_member=None, relay_progress_s=1.0, lease_s=30.0)


def beat(worker_id: str, devices: tuple[str, ...], at: float) -> WorkerRecord:
    return WorkerRecord(worker_id=worker_id, host="gpu", devices=devices, started_at=at, heartbeat_at=at)


async def test_three_live_gpus_start_three_jobs_at_once_and_a_dead_worker_counts_for_nothing(tmp_path: Path) -> None:
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path / "front", FRONT_END) as queue:
        for n in range(4):
            await queue.submit(Owner(user_id=n + 1, guild_id=n + 1), SPEC)
        alone = [e.eta_start_s for e in await queue.snapshot()]
        assert alone[0] == 0.0
        assert alone[1] > 0.0  # one device: the second job waits for the first

    now = time.time()
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path / "front", FRONT_END) as queue:
        await queue.store.upsert_worker(beat("a", ("cuda:0", "cuda:1"), now))
        await queue.store.upsert_worker(beat("b", ("cuda:0",), now))
        await queue.store.upsert_worker(beat("gone", ("cuda:0", "cuda:1"), now - 3600))  # beat an hour ago
        fleet = [e.eta_start_s for e in await queue.snapshot()]
        assert fleet[:3] == [0.0, 0.0, 0.0]  # three live devices, three jobs at once
        assert fleet[3] > 0.0  # the fourth waits: the dead worker's devices do not count


async def test_on_one_host_the_runner_s_own_devices_count(tmp_path: Path) -> None:
    config = dataclasses.replace(FRONT_END, relay_progress_s=None)
    async with open_queue(tmp_path / "jobs.sqlite3", tmp_path / "data", config) as queue:
        await queue.store.upsert_worker(beat("elsewhere", ("cuda:0", "cuda:1"), time.time()))
        for n in range(2):
            await queue.submit(Owner(user_id=n + 1, guild_id=n + 1), SPEC)
        etas = [e.eta_start_s for e in await queue.snapshot()]
        assert etas[0] == 0.0
        assert etas[1] > 0.0
