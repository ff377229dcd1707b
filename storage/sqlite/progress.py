"""`SqliteProgressBoard`: the `ProgressBoard` on the SQLite store's connection (and under its lock)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiosqlite

from storage.records import ProgressRecord
from storage.sqlite.db import immediate

_COLUMNS = "job_id, step, steps, iteration, total, frame, frames, loss, eta_done_s, preview_version, updated_at"


class SqliteProgressBoard:
    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self._conn, self._lock = conn, lock

    async def put(self, record: ProgressRecord, *, now: float) -> None:
        r = record
        async with self._lock, immediate(self._conn):
            await self._conn.execute(
                "INSERT INTO job_progress (job_id, step, steps, iteration, total, frame, frames, loss, eta_done_s, "
                "preview_version, preview, updated_at) "
                "SELECT :id, :step, :steps, :iteration, :total, :frame, :frames, :loss, :eta, :has, :preview, :now "
                "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = :id AND state = 'running') "
                "ON CONFLICT (job_id) DO UPDATE SET step = excluded.step, steps = excluded.steps, "
                "iteration = excluded.iteration, total = excluded.total, frame = excluded.frame, "
                "frames = excluded.frames, loss = excluded.loss, eta_done_s = excluded.eta_done_s, "
                "updated_at = excluded.updated_at, "
                "preview_version = job_progress.preview_version + (excluded.preview IS NOT NULL), "
                "preview = COALESCE(excluded.preview, job_progress.preview)",
                {
                    "id": r.job_id,
                    "step": r.step,
                    "steps": r.steps,
                    "iteration": r.iteration,
                    "total": r.total,
                    "frame": r.frame,
                    "frames": r.frames,
                    "loss": r.loss,
                    "eta": r.eta_done_s,
                    "has": int(r.preview is not None),
                    "preview": r.preview,
                    "now": now,
                },
            )

    async def running(self) -> list[ProgressRecord]:
        async with self._conn.execute(f"SELECT {_COLUMNS} FROM job_progress ORDER BY job_id") as cursor:
            rows = await cursor.fetchall()
        return [_record(tuple(row)) for row in rows]

    async def preview(self, job_id: int) -> bytes | None:
        async with self._conn.execute("SELECT preview FROM job_progress WHERE job_id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return bytes(row[0]) if row is not None and row[0] is not None else None

    async def cancel_requested(self, job_ids: Sequence[int]) -> set[int]:
        if not job_ids:
            return set()
        marks = ", ".join("?" * len(job_ids))
        sql = f"SELECT id FROM jobs WHERE cancel_requested != 0 AND id IN ({marks})"
        async with self._conn.execute(sql, tuple(job_ids)) as cursor:
            return {int(row[0]) for row in await cursor.fetchall()}


def _record(row: tuple[object, ...]) -> ProgressRecord:
    job_id, step, steps, iteration, total, frame, frames, loss, eta, version, updated = row
    return ProgressRecord(
        job_id=int(job_id),  # type: ignore[call-overload]
        step=int(step),  # type: ignore[call-overload]
        steps=int(steps),  # type: ignore[call-overload]
        iteration=int(iteration),  # type: ignore[call-overload]
        total=int(total),  # type: ignore[call-overload]
        frame=int(frame),  # type: ignore[call-overload]
        frames=int(frames),  # type: ignore[call-overload]
        loss=float(loss),  # type: ignore[arg-type]
        eta_done_s=None if eta is None else float(eta),  # type: ignore[arg-type]
        preview_version=int(version),  # type: ignore[call-overload]
        updated_at=float(updated),  # type: ignore[arg-type]
    )
