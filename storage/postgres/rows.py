"""Rows of the `jobs` table as records: the SQLite store's mapping, over PostgreSQL's columns of the same names.

Only the plan's columns differ (PostgreSQL's GREATEST and jsonb instead of SQLite's MAX and json_extract).
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from storage.records import JobRecord, PlanRow
from storage.sqlite.rows import RECORD_COLUMNS, job_record, plan_row

__all__ = ["PLAN_COLUMNS", "RECORD_COLUMNS", "plan_rows", "records"]

# what `plan_row` reads, in its order; `s` is the spec as jsonb (see `PLAN_FROM`)
PLAN_COLUMNS = (
    "id, user_id, guild_id, priority, state, steps, CASE WHEN state = 'running' "
    "THEN GREATEST(step, COALESCE(checkpoint_step, 0)) ELSE checkpoint_step END, "
    "s ->> 'vqgan_model', s ->> 'clip_model', (s ->> 'width')::int, (s ->> 'height')::int, "
    "(s ->> 'num_cuts')::int, device"
)
PLAN_FROM = "jobs CROSS JOIN LATERAL (SELECT spec::jsonb AS s) AS parsed"  # the spec parsed once per row


def records(rows: Iterable[asyncpg.Record]) -> list[JobRecord]:
    """Rows of `RECORD_COLUMNS` as records."""
    return [job_record(None, tuple(row)) for row in rows]


def plan_rows(rows: Iterable[asyncpg.Record]) -> list[PlanRow]:
    """Rows of `PLAN_COLUMNS` as plan rows."""
    return [plan_row(None, tuple(row)) for row in rows]
