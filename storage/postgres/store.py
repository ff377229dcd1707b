"""`PostgresJobStore`: the `JobStore` on PostgreSQL, so several bot processes share one queue.

Behaves as `SqliteJobStore` does (the contract tests run on both). Every state change is one transaction
on a pooled connection; runner writes are fenced on `lease_owner` and `attempt`. Where SQLite's single
write lock serialised a read-then-write, advisory transaction locks do here: one global key for claims
(so fair share sees every process's jobs and no job is handed out twice), one per member and per server
for the submit caps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.jobs import JobSpec, JobStatus, spec_to_json
from storage.postgres import guild_settings, workers as worker_rows
from storage.postgres.db import CLAIM_LOCK, POOL_SIZE, changed, connection, create_pool, transaction
from storage.postgres.files import PostgresJobFiles
from storage.postgres.progress import PostgresProgressBoard
from storage.postgres.queue_reads import guild_usage, member_usage, queue_state
from storage.postgres.rows import PLAN_COLUMNS, PLAN_FROM, RECORD_COLUMNS, plan_rows, records
from storage.records import (
    Claim,
    JobRecord,
    LeaseState,
    Owner,
    PlanRow,
    QueuedCounts,
    SubmitLimits,
    WorkerRecord,
    job_steps,
    worker_of,
)
from storage.store import AlreadySubmitted, Chooser, LimitReached, NoSuchJob, PrepareSpec

log = logging.getLogger(__name__)

_FINISHED = (JobStatus.DONE.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)
_FENCE = "WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3"  # every runner write's guard


async def _records(conn: asyncpg.Connection, where: str, *args: Any) -> list[JobRecord]:
    return records(await conn.fetch(f"SELECT {RECORD_COLUMNS} FROM jobs WHERE {where}", *args))


async def _get(conn: asyncpg.Connection, job_id: int) -> JobRecord:
    rows = await _records(conn, "id = $1", job_id)
    if not rows:
        raise NoSuchJob(f"no job #{job_id}")
    return rows[0]


async def _queued_counts(conn: asyncpg.Connection, user_id: int, guild_id: int | None) -> QueuedCounts:
    member = await conn.fetchval("SELECT COUNT(*) FROM jobs WHERE user_id = $1 AND state = 'queued'", user_id)
    guild = await conn.fetchval("SELECT COUNT(*) FROM jobs WHERE guild_id = $1 AND state = 'queued'", guild_id)
    return QueuedCounts(member=int(member), guild=int(guild))


class PostgresJobStore:
    """`JobStore` on a PostgreSQL database. Open with `await PostgresJobStore.open(url)`; close it when done.

    No asyncio lock as in the SQLite store: each call takes its own pooled connection, and PostgreSQL
    keeps the transactions apart.
    """

    def __init__(self, pool: asyncpg.Pool, *, usage_window_s: float = 24 * 3600.0) -> None:
        self._pool = pool
        self.files = PostgresJobFiles(pool)  # a job's inputs and results, for workers on other hosts
        self.progress = PostgresProgressBoard(pool)
        self.usage_window_s = usage_window_s  # how far back fair share counts GPU time

    @classmethod
    async def open(
        cls, url: str, *, usage_window_s: float = 24 * 3600.0, pool_size: int = POOL_SIZE
    ) -> PostgresJobStore:
        """Connect to the database at `url` (postgresql://...) and migrate it as needed."""
        return cls(await create_pool(url, max_size=pool_size), usage_window_s=usage_window_s)

    async def close(self) -> None:
        await self._pool.close()

    # -- the bot's side -------------------------------------------------------------------------

    async def create(
        self,
        owner: Owner,
        spec: JobSpec,
        *,
        now: float,
        limits: SubmitLimits,
        upload_limit: int | None = None,
        priority: bool = False,
        prepare: PrepareSpec | None = None,
        interaction_id: int | None = None,
    ) -> JobRecord:
        """Insert a queued job after checking the caps, all in one transaction (as `SqliteJobStore.create`).

        Two processes racing on one interaction: the second insert waits on the unique key, fails once the
        first commits, and is answered `AlreadySubmitted` with the first's job.
        """
        spec_json = spec_to_json(spec)  # validates that the spec serialises before anything is written
        steps, frames = job_steps(spec)
        try:
            async with transaction(self._pool) as conn:
                if interaction_id is not None and (made := await _records(conn, "interaction_id = $1", interaction_id)):
                    raise AlreadySubmitted(made[0])
                await self._check_caps(conn, owner, limits)
                job_id = int(
                    await conn.fetchval(
                        "INSERT INTO jobs (kind, user_id, guild_id, channel_id, spec, state, priority, created_at, "
                        "steps, frames, upload_limit, interaction_id) "
                        "VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11) RETURNING id",
                        spec.kind.value,
                        owner.user_id,
                        owner.guild_id,
                        owner.channel_id,
                        spec_json,
                        priority,
                        now,
                        steps,
                        frames,
                        upload_limit,
                        interaction_id,
                    )
                )
                if prepare is not None:
                    final = await prepare(job_id)
                    await conn.execute("UPDATE jobs SET spec = $1 WHERE id = $2", spec_to_json(final), job_id)
                return await _get(conn, job_id)
        except asyncpg.UniqueViolationError as e:
            if interaction_id is None or e.constraint_name != "jobs_interaction":
                raise
            async with connection(self._pool) as conn:
                made = await _records(conn, "interaction_id = $1", interaction_id)
            if not made:
                raise
            raise AlreadySubmitted(made[0]) from None

    async def _check_caps(self, conn: asyncpg.Connection, owner: Owner, limits: SubmitLimits) -> None:
        """Raise `LimitReached` when the member's or the server's queued jobs are at their cap.

        The member's lock and then the server's (always in that order, so no deadlock) make a concurrent
        submit for either wait until this one commits, then count it.
        """
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"vqbot member {owner.user_id}")
        if owner.guild_id is not None:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"vqbot guild {owner.guild_id}")
        counts = await _queued_counts(conn, owner.user_id, owner.guild_id)
        if limits.max_queued_per_member is not None:
            count = counts.member
            if count >= limits.max_queued_per_member:
                raise LimitReached(
                    f"you already have {count} jobs waiting (the limit is {limits.max_queued_per_member}); "
                    "wait for one to start or cancel one"
                )
        if limits.max_queued_per_guild is not None and owner.guild_id is not None:
            count = counts.guild
            if count >= limits.max_queued_per_guild:
                raise LimitReached(
                    f"this server already has {count} jobs waiting (the limit is {limits.max_queued_per_guild}); "
                    "try again when the queue is shorter"
                )

    async def queued_counts(self, user_id: int, guild_id: int | None) -> QueuedCounts:
        """How many jobs wait for the member (anywhere) and for the server."""
        async with connection(self._pool) as conn:
            return await _queued_counts(conn, user_id, guild_id)

    async def state_counts(self) -> dict[tuple[str, int | None], int]:
        """Jobs per (state, guild id), from the (guild_id, state, id) index."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch("SELECT state, guild_id, COUNT(*) FROM jobs GROUP BY guild_id, state")
        return {(str(r[0]), None if r[1] is None else int(r[1])): int(r[2]) for r in rows}

    async def get(self, job_id: int) -> JobRecord:
        async with connection(self._pool) as conn:
            return await _get(conn, job_id)

    async def active(self) -> list[JobRecord]:
        """Running and queued jobs, oldest first."""
        async with connection(self._pool) as conn:
            return await _records(conn, "state IN ('queued', 'running') ORDER BY id")

    async def many(self, job_ids: Sequence[int]) -> list[JobRecord]:
        """The records with these ids, in the order given (missing ids are left out)."""
        async with connection(self._pool) as conn:
            found = {r.id: r for r in await _records(conn, "id = ANY($1::bigint[])", list(job_ids))}
        return [found[i] for i in job_ids if i in found]

    async def plan_rows(self) -> list[PlanRow]:  # every server's: positions count the other servers' jobs
        """Running and queued jobs with just what scheduling and ETAs need (no spec decoding in Python)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                f"SELECT {PLAN_COLUMNS} FROM {PLAN_FROM} WHERE state IN ('queued', 'running') ORDER BY id"
            )
        return plan_rows(rows)

    async def recent(self, user_id: int, limit: int = 10, *, guild_id: int | None = None) -> list[JobRecord]:
        """A member's jobs, newest first; only those of server `guild_id` when it is given."""
        async with connection(self._pool) as conn:
            if guild_id is None:
                return await _records(conn, "user_id = $1 ORDER BY id DESC LIMIT $2", user_id, limit)
            return await _records(
                conn, "user_id = $1 AND guild_id = $2 ORDER BY id DESC LIMIT $3", user_id, guild_id, limit
            )

    async def usage(self, *, now: float) -> dict[int, float]:
        """GPU seconds per member in the usage window, a running job's elapsed time included."""
        async with connection(self._pool) as conn:
            return await member_usage(conn, now - self.usage_window_s, now)

    async def guild_usage(self, *, now: float) -> dict[int | None, float]:
        """GPU seconds per server in the usage window, a running job's elapsed time included."""
        async with connection(self._pool) as conn:
            return await guild_usage(conn, now - self.usage_window_s, now)

    async def cancel_queued(self, job_id: int, *, now: float) -> JobRecord | None:
        """Cancel a job that is still queued; None if it is not queued (any more)."""
        async with transaction(self._pool) as conn:
            status = await conn.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = $1, checkpoint = NULL "
                "WHERE id = $2 AND state = 'queued'",
                now,
                job_id,
            )
            return await _get(conn, job_id) if changed(status) else None

    async def request_cancel(self, job_id: int) -> bool:
        """Ask whichever runner holds a running job to stop it (seen at its next heartbeat)."""
        async with transaction(self._pool) as conn:
            status = await conn.execute(
                "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND state = 'running'", job_id
            )
            return changed(status) > 0

    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        await self._update_one("UPDATE jobs SET status_message_id = $2 WHERE id = $1", job_id, message_id)

    async def mark_delivered(self, job_id: int, message_id: int) -> None:
        await self._update_one("UPDATE jobs SET result_message_id = $2 WHERE id = $1", job_id, message_id)

    async def _update_one(self, sql: str, job_id: int, *args: Any) -> None:
        async with transaction(self._pool) as conn:
            if not changed(await conn.execute(sql, job_id, *args)):
                raise NoSuchJob(f"no job #{job_id}")

    async def undelivered(self) -> list[JobRecord]:
        """Finished jobs with a result (or an error) whose message has not been posted, oldest first."""
        async with connection(self._pool) as conn:
            return await _records(
                conn,
                "state IN ('done', 'failed', 'cancelled') AND result_message_id IS NULL "
                "AND (result_paths != '[]' OR error IS NOT NULL) AND results_expired_at IS NULL ORDER BY id",
            )

    async def results_to_expire(self, *, finished_before: float, limit: int = 100) -> list[JobRecord]:
        """Finished jobs with result files that ended before `finished_before` and were not expired yet, oldest first."""
        async with connection(self._pool) as conn:
            return await _records(
                conn,
                "state IN ('done', 'failed', 'cancelled') AND finished_at < $1 AND result_paths != '[]' "
                "AND results_expired_at IS NULL ORDER BY finished_at LIMIT $2",
                finished_before,
                limit,
            )

    async def mark_results_expired(self, job_id: int, *, now: float) -> None:
        """Record that retention deleted the job's result files (/job says so)."""
        await self._update_one("UPDATE jobs SET results_expired_at = $2 WHERE id = $1", job_id, now)

    # -- the runner's side ----------------------------------------------------------------------

    async def claim_next(
        self, lease_owner: str, *, lease_s: float, now: float, choose: Chooser, device: str | None = None
    ) -> Claim | None:
        """Lease the next job: an interrupted one (expired lease) first, else `choose`'s pick; one transaction.

        The advisory lock makes claims from every process take turns, so the `QueueState` that `choose`
        sees is the whole queue as it is now and the picked row cannot be handed out twice. Taking over an
        expired lease counts one interruption: the process that held it died or hung.
        """
        async with transaction(self._pool) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            job_id = await conn.fetchval(
                "SELECT id FROM jobs WHERE state = 'running' AND lease_until < $1 ORDER BY id LIMIT 1", now
            )
            if job_id is not None:
                log.info("job %s: lease expired, resuming it", job_id)
            else:
                state = await queue_state(conn, now, self.usage_window_s)
                job_id = choose(state) if state.queued else None
                if job_id is None:
                    return None
            # the WHERE still checks the state: a cancel in another process may have won the row meanwhile
            row = await conn.fetchrow(
                "UPDATE jobs SET lease_owner = $1, lease_until = $2, attempt = attempt + 1, "
                "interruptions = interruptions + CASE WHEN state = 'running' THEN 1 ELSE 0 END, state = 'running', "
                "heartbeat_at = $3, run_started_at = $3, started_at = COALESCE(started_at, $3), device = $4, worker_id = $6 "
                "WHERE id = $5 AND (state = 'queued' OR (state = 'running' AND lease_until < $3)) RETURNING checkpoint",
                lease_owner,
                now + lease_s,
                now,
                device,
                job_id,
                worker_of(lease_owner),
            )
            if row is None:
                return None
            job = await _get(conn, job_id)
            checkpoint = bytes(row[0]) if row[0] is not None else None
            return Claim(job=job, lease_owner=lease_owner, attempt=job.attempt, checkpoint=checkpoint)

    async def _fenced(self, set_sql: str, claim: Claim, *args: Any, returning: str = "id") -> asyncpg.Record | None:
        """Run `UPDATE jobs SET <set_sql>` (its parameters from $4) only while `claim` holds the lease."""
        async with transaction(self._pool) as conn:
            return await conn.fetchrow(
                f"UPDATE jobs SET {set_sql} {_FENCE} RETURNING {returning}",
                claim.job.id,
                claim.lease_owner,
                claim.attempt,
                *args,
            )

    async def renew_lease(
        self, claim: Claim, *, lease_s: float, now: float, step: int, frame: int, heartbeat_at: float | None
    ) -> LeaseState | None:
        """Extend the lease and record progress; None when the lease was lost (stop, discard the output)."""
        row = await self._fenced(
            "lease_until = $4, step = $5, frame = $6, heartbeat_at = COALESCE($7::float8, heartbeat_at)",
            claim,
            now + lease_s,
            step,
            frame,
            heartbeat_at,
            returning="cancel_requested",
        )
        return None if row is None else LeaseState(cancel_requested=bool(row[0]))

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int, now: float) -> bool:
        """Store the job's resumable state and the step/frame it reached; False when the lease was lost."""
        row = await self._fenced(
            "checkpoint = $4, checkpoint_step = $5, checkpoint_frame = $6, checkpoint_at = $7, "
            "step = GREATEST(step, $5), frame = $6",
            claim,
            data,
            step,
            frame,
            now,
        )
        return row is not None

    async def finish(
        self,
        claim: Claim,
        state: JobStatus,
        *,
        now: float,
        gpu_seconds: float,
        step: int,
        frame: int,
        result_paths: Sequence[str] = (),
        partial: bool = False,
        error: str | None = None,
        seed: int | None = None,
    ) -> JobRecord | None:
        """End a running job (done, failed or cancelled); None when the lease was lost."""
        if state.value not in _FINISHED:
            raise ValueError(f"finish() takes a final state, not {state}")
        row = await self._fenced(
            "state = $4, finished_at = $5, gpu_seconds = gpu_seconds + $6, step = $7, frame = $8, "
            "result_paths = $9, partial = $10, error = $11, seed = COALESCE($12::bigint, seed), "
            "lease_owner = NULL, lease_until = NULL, run_started_at = NULL, checkpoint = NULL",
            claim,
            state.value,
            now,
            gpu_seconds,
            step,
            frame,
            json.dumps(list(result_paths)),
            partial,
            error,
            seed,
            returning=RECORD_COLUMNS,
        )
        return None if row is None else records([row])[0]

    async def release(
        self, claim: Claim, *, now: float, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool:
        """Give a running job back to the queue, keeping its checkpoint and its place.

        A clean stop (shutdown, full disk) is not `interrupted`; an abandoned render (a stall) is, and counts.
        """
        row = await self._fenced(
            "state = 'queued', gpu_seconds = gpu_seconds + $4, step = $5, frame = $6, "
            "interruptions = interruptions + $7, lease_owner = NULL, lease_until = NULL, run_started_at = NULL",
            claim,
            gpu_seconds,
            step,
            frame,
            int(interrupted),
        )
        return row is not None

    async def expire_leases(self, owner_prefix: str) -> int:
        """Make the leases held under `owner_prefix` (this worker's earlier life) reclaimable now."""
        async with transaction(self._pool) as conn:
            status = await conn.execute(
                "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND starts_with(lease_owner, $1)",
                owner_prefix,
            )
            return changed(status)

    # -- per-server settings --------------------------------------------------------------------

    async def guild_settings(self) -> dict[int, dict[str, str]]:
        """Every server's changed settings (guild id -> name -> value); read once at start."""
        async with connection(self._pool) as conn:
            return await guild_settings.read_all(conn)

    async def set_guild_setting(self, guild_id: int, name: str, value: str, *, now: float, by_user: int | None) -> None:
        async with transaction(self._pool) as conn:
            await guild_settings.write(conn, guild_id, name, value, now=now, by_user=by_user)

    async def reset_guild_setting(self, guild_id: int, name: str) -> bool:
        """Back to the host's default; False when the server had not changed it."""
        async with transaction(self._pool) as conn:
            return await guild_settings.delete(conn, guild_id, name)

    # -- measured speed -------------------------------------------------------------------------

    async def speeds(self) -> dict[str, float]:
        async with connection(self._pool) as conn:
            rows = await conn.fetch("SELECT key, seconds_per_step FROM speeds")
        return {r[0]: float(r[1]) for r in rows}

    async def record_speed(self, key: str, seconds_per_step: float, *, now: float, alpha: float = 0.3) -> float:
        """Fold one measurement into the moving average for `key`; return the new average.

        One upsert, so two processes measuring the same key at once both count (no read-then-write race).
        """
        async with transaction(self._pool) as conn:
            value = await conn.fetchval(
                "INSERT INTO speeds (key, seconds_per_step, samples, updated_at) VALUES ($1, $2, 1, $3) "
                "ON CONFLICT (key) DO UPDATE SET "
                "seconds_per_step = (1 - $4::float8) * speeds.seconds_per_step + $4::float8 * excluded.seconds_per_step, "
                "samples = speeds.samples + 1, updated_at = excluded.updated_at RETURNING seconds_per_step",
                key,
                float(seconds_per_step),
                now,
                alpha,
            )
            return float(value)

    # -- render workers -------------------------------------------------------------------------

    async def upsert_worker(self, worker: WorkerRecord) -> None:
        """Insert or refresh the worker's row: at its start and at every heartbeat."""
        async with transaction(self._pool) as conn:
            await worker_rows.upsert(conn, worker)

    async def workers(self) -> list[WorkerRecord]:
        """Every worker that ever beat, by id (alive or not: the caller compares `heartbeat_at`)."""
        async with connection(self._pool) as conn:
            return await worker_rows.read_all(conn)
