"""`PostgresProgressBoard`: the `ProgressBoard` on the PostgreSQL store's pool."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from storage.postgres.db import connection
from storage.records import ProgressRecord

_COLUMNS = "job_id, step, steps, iteration, total, frame, frames, loss, eta_done_s, preview_version, updated_at"


class PostgresProgressBoard:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put(self, record: ProgressRecord, *, now: float) -> None:
        r = record
        async with connection(self._pool) as conn:  # one statement: its own transaction
            await conn.execute(
                "INSERT INTO job_progress (job_id, step, steps, iteration, total, frame, frames, loss, eta_done_s, "
                "preview_version, preview, updated_at) "
                "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 "
                "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state = 'running') "
                "ON CONFLICT (job_id) DO UPDATE SET step = excluded.step, steps = excluded.steps, "
                "iteration = excluded.iteration, total = excluded.total, frame = excluded.frame, "
                "frames = excluded.frames, loss = excluded.loss, eta_done_s = excluded.eta_done_s, "
                "updated_at = excluded.updated_at, "
                "preview_version = job_progress.preview_version + excluded.preview_version, "
                "preview = COALESCE(excluded.preview, job_progress.preview)",
                r.job_id,
                r.step,
                r.steps,
                r.iteration,
                r.total,
                r.frame,
                r.frames,
                r.loss,
                r.eta_done_s,
                int(r.preview is not None),
                r.preview,
                now,
            )

    async def running(self) -> list[ProgressRecord]:
        async with connection(self._pool) as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM job_progress ORDER BY job_id")
        return [ProgressRecord(**dict(row)) for row in rows]

    async def preview(self, job_id: int) -> bytes | None:
        async with connection(self._pool) as conn:
            data = await conn.fetchval("SELECT preview FROM job_progress WHERE job_id = $1", job_id)
        return bytes(data) if data is not None else None

    async def cancel_requested(self, job_ids: Sequence[int]) -> set[int]:
        if not job_ids:
            return set()
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT id FROM jobs WHERE cancel_requested AND id = ANY($1::bigint[])", list(job_ids)
            )
        return {int(row["id"]) for row in rows}
