"""`WorkerBeat`: a worker's row is written at start and at every beat; `alive` counts the recent beats."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.queue.worker_beat import ALIVE_LEASES, KNOWN_S, WorkerBeat, alive, known
from storage.records import WorkerRecord
from storage.sqlite.store import SqliteJobStore
from tests.support.waiting import eventually


def row(worker_id: str, beat: float) -> WorkerRecord:
    return WorkerRecord(worker_id=worker_id, host="h", devices=("cpu",), started_at=0.0, heartbeat_at=beat)


def test_alive_means_a_beat_within_three_leases() -> None:
    rows = [row("fresh", 95.0), row("edge", 100.0 - ALIVE_LEASES * 10), row("gone", 60.0)]
    assert [w.worker_id for w in alive(rows, now=100.0, lease_s=10.0)] == ["fresh", "edge"]


def test_a_worker_silent_for_a_day_is_no_longer_counted_as_down() -> None:
    now = 10 * KNOWN_S
    rows = [row("up", now - 5), row("down an hour", now - 3600), row("retired", now - KNOWN_S - 1)]
    assert [w.worker_id for w in known(rows, now=now)] == ["up", "down an hour"]


async def test_the_row_is_written_at_start_and_refreshed_until_stopped(tmp_path: Path) -> None:
    store = await SqliteJobStore.open(tmp_path / "jobs.sqlite3")
    clock = iter(float(t) for t in range(100, 10_000))
    beat = WorkerBeat(store, "w1", ("cuda:0", "cuda:1"), lease_s=0.06, clock=lambda: next(clock))
    try:
        await beat.start()
        (first,) = await store.workers()
        assert (first.worker_id, first.devices, first.started_at) == ("w1", ("cuda:0", "cuda:1"), 100.0)
        assert first.host == beat.host
        later = await eventually(lambda: _beat_after(store, first.heartbeat_at), 10.0, "a later heartbeat")
        assert later.started_at == 100.0
        await beat.stop()
        stopped = (await store.workers())[0].heartbeat_at
        await asyncio.sleep(0.1)  # five beats' worth: none comes after stop()
        assert (await store.workers())[0].heartbeat_at == stopped
    finally:
        await beat.stop()
        await store.close()


async def _beat_after(store: SqliteJobStore, at: float) -> WorkerRecord | None:
    (now,) = await store.workers()
    return now if now.heartbeat_at > at else None
