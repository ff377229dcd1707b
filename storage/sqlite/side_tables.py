"""The tables beside `jobs`: `workers` (one row per render worker, its devices and its last heartbeat: who is
alive) and `speeds` (measured seconds per step).

Plain functions over a connection; `SqliteJobStore` calls them under its lock and transactions.
"""

from __future__ import annotations

import aiosqlite

from storage.records import WorkerRecord


async def upsert(conn: aiosqlite.Connection, worker: WorkerRecord) -> None:
    """Insert the worker's row or bring it up to date (a restarted worker keeps its id, with a new start)."""
    await conn.execute(
        "INSERT INTO workers (worker_id, host, devices, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, devices = excluded.devices, "
        "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        (worker.worker_id, worker.host, ",".join(worker.devices), worker.started_at, worker.heartbeat_at),
    )


async def read_all(conn: aiosqlite.Connection) -> list[WorkerRecord]:
    """Every worker that ever beat, by id."""
    async with conn.execute(
        "SELECT worker_id, host, devices, started_at, heartbeat_at FROM workers ORDER BY worker_id"
    ) as cursor:
        rows = await cursor.fetchall()
    return [
        WorkerRecord(
            worker_id=str(r[0]),
            host=str(r[1]),
            devices=tuple(d for d in str(r[2]).split(",") if d),
            started_at=float(r[3]),
            heartbeat_at=float(r[4]),
        )
        for r in rows
    ]


async def record_speed(
    conn: aiosqlite.Connection, key: str, seconds_per_step: float, *, now: float, alpha: float
) -> float:
    """Fold one measurement into the moving average for `key` (inside the caller's transaction); the new average."""
    async with conn.execute("SELECT seconds_per_step FROM speeds WHERE key = ?", (key,)) as cursor:
        row = await cursor.fetchone()
    value = seconds_per_step if row is None else (1 - alpha) * float(row[0]) + alpha * seconds_per_step
    await conn.execute(
        "INSERT INTO speeds (key, seconds_per_step, samples, updated_at) VALUES (?, ?, 1, ?) "
        "ON CONFLICT(key) DO UPDATE SET seconds_per_step = excluded.seconds_per_step, "
        "samples = samples + 1, updated_at = excluded.updated_at",
        (key, value, now),
    )
    return value
