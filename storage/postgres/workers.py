"""The `workers` table: one row per render worker, its devices and its last heartbeat (who is alive).

Plain functions over an asyncpg connection; `PostgresJobStore` calls them.
"""

from __future__ import annotations

import asyncpg

from storage.records import WorkerRecord


async def upsert(conn: asyncpg.Connection, worker: WorkerRecord) -> None:
    """Insert the worker's row or bring it up to date (a restarted worker keeps its id, with a new start)."""
    await conn.execute(
        "INSERT INTO workers (worker_id, host, devices, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (worker_id) DO UPDATE SET host = excluded.host, devices = excluded.devices, "
        "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        worker.worker_id,
        worker.host,
        ",".join(worker.devices),
        worker.started_at,
        worker.heartbeat_at,
    )


async def read_all(conn: asyncpg.Connection) -> list[WorkerRecord]:
    """Every worker that ever beat, by id."""
    rows = await conn.fetch("SELECT worker_id, host, devices, started_at, heartbeat_at FROM workers ORDER BY worker_id")
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
