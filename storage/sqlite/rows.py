"""Rows of the `jobs` table as records. The functions here are row factories: they run on aiosqlite's thread."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

import aiosqlite

from engine.jobs import JobKind, JobSpec, JobStatus, spec_from_json
from storage.records import JobRecord, Owner, PlanRow

T = TypeVar("T")

# what `job_record` reads, in its order
RECORD_COLUMNS = (
    "id, kind, user_id, guild_id, channel_id, spec, state, priority, created_at, started_at, finished_at, "
    "step, steps, frame, frames, gpu_seconds, result_paths, partial, error, status_message_id, result_message_id, "
    "upload_limit, seed, device, lease_owner, lease_until, heartbeat_at, cancel_requested, checkpoint_step, "
    "checkpoint_frame, attempt, interruptions, results_expired_at, worker_id"
)

# what `plan_row` reads, in its order: no spec decoding, so planning a thousand jobs stays cheap
PLAN_COLUMNS = (
    "id, user_id, guild_id, priority, state, steps, CASE WHEN state = 'running' "
    "THEN MAX(step, COALESCE(checkpoint_step, 0)) ELSE checkpoint_step END, "
    "json_extract(spec, '$.vqgan_model'), json_extract(spec, '$.clip_model'), json_extract(spec, '$.width'), "
    "json_extract(spec, '$.height'), json_extract(spec, '$.num_cuts'), device"
)

_SPEC_CACHE: dict[str, JobSpec] = {}  # spec JSON -> spec; a spec never changes once stored
_SPEC_CACHE_MAX = 20_000


def _spec(text: str) -> JobSpec:
    spec = _SPEC_CACHE.get(text)
    if spec is None:
        if len(_SPEC_CACHE) >= _SPEC_CACHE_MAX:
            _SPEC_CACHE.clear()
        spec = _SPEC_CACHE[text] = spec_from_json(text)
    return spec


def job_record(_cursor: object, row: tuple[Any, ...]) -> JobRecord:
    """A row of `RECORD_COLUMNS` as a record."""
    (
        job_id, kind, user_id, guild_id, channel_id, spec, state, priority, created_at, started_at, finished_at,
        step, steps, frame, frames, gpu_seconds, result_paths, partial, error, status_message_id, result_message_id,
        upload_limit, seed, device, lease_owner, lease_until, heartbeat_at, cancel_requested, checkpoint_step,
        checkpoint_frame, attempt, interruptions, results_expired_at, worker_id,
    ) = row  # fmt: skip
    return JobRecord(
        id=job_id,
        kind=JobKind(kind),
        owner=Owner(user_id=user_id, guild_id=guild_id, channel_id=channel_id),
        spec=_spec(spec),
        state=JobStatus(state),
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        step=step,
        steps=steps,
        frame=frame,
        frames=frames,
        gpu_seconds=gpu_seconds,
        result_paths=tuple(json.loads(result_paths)) if result_paths != "[]" else (),
        partial=bool(partial),
        error=error,
        status_message_id=status_message_id,
        result_message_id=result_message_id,
        upload_limit=upload_limit,
        priority=bool(priority),
        attempt=attempt,
        seed=seed,
        device=device,
        lease_owner=lease_owner,
        lease_until=lease_until,
        heartbeat_at=heartbeat_at,
        cancel_requested=bool(cancel_requested),
        checkpoint_step=checkpoint_step,
        checkpoint_frame=checkpoint_frame,
        interruptions=interruptions,
        results_expired_at=results_expired_at,
        worker_id=worker_id,
    )


def plan_row(_cursor: object, row: tuple[Any, ...]) -> PlanRow:
    """A row of `PLAN_COLUMNS` as a plan row."""
    job_id, user_id, guild_id, priority, state, steps, done, vqgan, clip, width, height, cuts, device = row
    return PlanRow(
        id=job_id,
        user_id=user_id,
        guild_id=guild_id,
        priority=bool(priority),
        running=state == "running",
        steps=steps,
        steps_done=done or 0,
        vqgan_model=vqgan,
        clip_model=clip,
        width=width,
        height=height,
        num_cuts=cuts,
        device=device,
    )


async def fetch_all(cursor: aiosqlite.Cursor, factory: Callable[[object, tuple[Any, ...]], T]) -> list[T]:
    """Every row of `cursor`, built by `factory` on aiosqlite's thread so a big read does not stall the loop.

    aiosqlite annotates a row factory as a class and rows as `sqlite3.Row`; the casts say what ours are.
    """
    cursor.row_factory = cast(type, factory)
    return cast(list[T], list(await cursor.fetchall()))
