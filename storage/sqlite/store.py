"""`SqliteJobStore`: the `JobStore` on one SQLite file (WAL), through aiosqlite.

Every state change is one `BEGIN IMMEDIATE` transaction; runner writes are fenced on
`lease_owner` and `attempt`. Rows become records on aiosqlite's thread (`storage.sqlite.rows`), so a
thousand-job read does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from engine.jobs import JobSpec, JobStatus, spec_to_json
from storage.records import (
    Candidate,
    Claim,
    JobRecord,
    LeaseState,
    Owner,
    PlanRow,
    QueuedCounts,
    QueueState,
    SubmitLimits,
    WorkerRecord,
    job_steps,
    worker_of,
)
from storage.sqlite import guild_settings, side_tables
from storage.sqlite.db import connect, immediate
from storage.sqlite.files import SqliteJobFiles
from storage.sqlite.progress import SqliteProgressBoard
from storage.sqlite.rows import PLAN_COLUMNS, RECORD_COLUMNS, fetch_all, job_record, plan_row
from storage.store import AlreadySubmitted, Chooser, LimitReached, NoSuchJob, PrepareSpec

log = logging.getLogger(__name__)

_FINISHED = (JobStatus.DONE.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class SqliteJobStore:
    """`JobStore` on one SQLite file (WAL), opened with `await SqliteJobStore.open(path)`. One connection, one lock:
    aiosqlite runs statements on one thread; the lock keeps one transaction from interleaving with another's."""

    def __init__(self, conn: aiosqlite.Connection, *, usage_window_s: float = 24 * 3600.0) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.files = SqliteJobFiles(conn, self._lock)  # the contract's; the single-host bot keeps files on disk
        self.progress = SqliteProgressBoard(conn, self._lock)
        self.usage_window_s = usage_window_s  # how far back fair share counts GPU time

    @classmethod
    async def open(cls, path: Path | str, *, usage_window_s: float = 24 * 3600.0) -> SqliteJobStore:
        """Open (creating and migrating as needed) the database at `path`."""
        return cls(await connect(path), usage_window_s=usage_window_s)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> aiosqlite.Row | None:
        async with self._conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[aiosqlite.Row]:
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _records(self, where: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[JobRecord]:
        """Records matching `where` (SQL after WHERE), built on aiosqlite's thread so the loop stays free."""
        async with self._conn.execute(f"SELECT {RECORD_COLUMNS} FROM jobs WHERE {where}", params) as cursor:
            return await fetch_all(cursor, job_record)

    async def _get(self, job_id: int) -> JobRecord:
        rows = await self._records("id = ?", (job_id,))
        if not rows:
            raise NoSuchJob(f"no job #{job_id}")
        return rows[0]

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
        """Insert a queued job after checking the caps, all in one transaction.

        `prepare(job_id)` runs inside the transaction (to move input files under the new id) and
        returns the spec to store; if it raises, nothing is inserted. When this raises after `prepare`
        ran (a failed COMMIT), the id was not taken: the caller undoes what `prepare` did. A job already made for
        `interaction_id` raises `AlreadySubmitted` with it (the column is unique: one job per interaction).
        """
        spec_json = spec_to_json(spec)  # validates that the spec serialises before anything is written
        steps, frames = job_steps(spec)
        async with self._lock, immediate(self._conn):
            if interaction_id is not None:
                made = await self._records("interaction_id = ?", (interaction_id,))
                if made:
                    raise AlreadySubmitted(made[0])
            await self._check_caps(owner, limits)
            cursor = await self._conn.execute(
                "INSERT INTO jobs (kind, user_id, guild_id, channel_id, spec, state, priority, created_at, steps, "
                "frames, upload_limit, interaction_id) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (
                    spec.kind.value,
                    owner.user_id,
                    owner.guild_id,
                    owner.channel_id,
                    spec_json,
                    int(priority),
                    now,
                    steps,
                    frames,
                    upload_limit,
                    interaction_id,
                ),
            )
            job_id = cursor.lastrowid
            await cursor.close()
            assert job_id is not None
            if prepare is not None:
                final = await prepare(job_id)
                await self._conn.execute("UPDATE jobs SET spec = ? WHERE id = ?", (spec_to_json(final), job_id))
            return await self._get(job_id)

    async def _check_caps(self, owner: Owner, limits: SubmitLimits) -> None:
        """Raise `LimitReached` when the member's or the server's queued jobs are at their cap (inside the insert)."""
        counts = await self._queued_counts(owner.user_id, owner.guild_id)
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

    async def _queued_counts(self, user_id: int, guild_id: int | None) -> QueuedCounts:
        member = await self._one("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND state = 'queued'", (user_id,))
        guild = await self._one("SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND state = 'queued'", (guild_id,))
        return QueuedCounts(member=member[0] if member else 0, guild=guild[0] if guild else 0)

    async def queued_counts(self, user_id: int, guild_id: int | None) -> QueuedCounts:
        """How many jobs wait for the member (anywhere) and for the server."""
        async with self._lock:
            return await self._queued_counts(user_id, guild_id)

    async def state_counts(self) -> dict[tuple[str, int | None], int]:
        """Jobs per (state, guild id); the (guild_id, state, id) index covers it, so the table is not read."""
        async with self._lock:
            rows = await self._all("SELECT state, guild_id, COUNT(*) FROM jobs GROUP BY guild_id, state")
        return {(str(r[0]), None if r[1] is None else int(r[1])): int(r[2]) for r in rows}

    async def get(self, job_id: int) -> JobRecord:
        async with self._lock:
            return await self._get(job_id)

    async def active(self) -> list[JobRecord]:
        """Running and queued jobs, oldest first."""
        async with self._lock:
            return await self._records("state IN ('queued', 'running') ORDER BY id")

    async def many(self, job_ids: Sequence[int]) -> list[JobRecord]:
        """The records with these ids, in the order given (missing ids are left out)."""
        found: dict[int, JobRecord] = {}
        async with self._lock:
            for start in range(0, len(job_ids), 500):  # SQLite's bound-parameter limit
                chunk = list(job_ids[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                found.update((r.id, r) for r in await self._records(f"id IN ({marks})", chunk))
        return [found[i] for i in job_ids if i in found]

    async def plan_rows(self) -> list[PlanRow]:  # every server's: positions count the other servers' jobs
        """Running and queued jobs with just what scheduling and ETAs need (no spec decoding)."""
        async with (
            self._lock,
            self._conn.execute(
                f"SELECT {PLAN_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id"
            ) as cursor,
        ):
            return await fetch_all(cursor, plan_row)

    async def recent(self, user_id: int, limit: int = 10, *, guild_id: int | None = None) -> list[JobRecord]:
        """A member's jobs, newest first; only those of server `guild_id` when it is given."""
        async with self._lock:
            if guild_id is None:
                return await self._records("user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit))
            return await self._records(
                "user_id = ? AND guild_id = ? ORDER BY id DESC LIMIT ?", (user_id, guild_id, limit)
            )

    async def usage(self, *, now: float) -> dict[int, float]:
        """GPU seconds per member in the usage window, a running job's elapsed time included."""
        async with self._lock:
            return await self._member_usage(now - self.usage_window_s, now)

    async def guild_usage(self, *, now: float) -> dict[int | None, float]:
        """GPU seconds per server in the usage window, a running job's elapsed time included."""
        async with self._lock:
            return await self._guild_usage(now - self.usage_window_s, now)

    async def _member_usage(self, since: float, now: float) -> dict[int, float]:
        return {int(who): seconds for who, seconds in await self._usage("user_id", since, now)}

    async def _guild_usage(self, since: float, now: float) -> dict[int | None, float]:
        return {
            (int(who) if who is not None else None): seconds
            for who, seconds in await self._usage("guild_id", since, now)
        }

    async def _usage(self, column: str, since: float, now: float) -> list[tuple[Any, float]]:
        # `column` is one of two names written here, never input
        rows = await self._all(
            f"SELECT {column}, SUM(gpu_seconds + CASE WHEN state = 'running' AND run_started_at IS NOT NULL "
            "THEN MAX(0, :now - run_started_at) ELSE 0 END) FROM jobs "
            "WHERE finished_at >= :since OR state = 'running' OR (state = 'queued' AND gpu_seconds > 0) "
            f"GROUP BY {column}",
            {"now": now, "since": since},
        )
        return [(r[0], float(r[1])) for r in rows]

    async def cancel_queued(self, job_id: int, *, now: float) -> JobRecord | None:
        """Cancel a job that is still queued; None if it is not queued (any more)."""
        async with self._lock, immediate(self._conn):
            cursor = await self._conn.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, checkpoint = NULL "
                "WHERE id = ? AND state = 'queued'",
                (now, job_id),
            )
            changed = cursor.rowcount
            await cursor.close()
            return await self._get(job_id) if changed else None

    async def request_cancel(self, job_id: int) -> bool:
        """Ask whichever runner holds a running job to stop it (seen at its next heartbeat)."""
        async with self._lock, immediate(self._conn):
            cursor = await self._conn.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,)
            )
            changed = cursor.rowcount
            await cursor.close()
            return bool(changed)

    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        await self._update_one("UPDATE jobs SET status_message_id = ? WHERE id = ?", (message_id, job_id))

    async def mark_delivered(self, job_id: int, message_id: int) -> None:
        await self._update_one("UPDATE jobs SET result_message_id = ? WHERE id = ?", (message_id, job_id))

    async def _update_one(self, sql: str, params: Sequence[Any]) -> None:
        async with self._lock, immediate(self._conn):
            cursor = await self._conn.execute(sql, params)
            changed = cursor.rowcount
            await cursor.close()
            if not changed:
                raise NoSuchJob(f"no job #{params[-1]}")

    async def undelivered(self) -> list[JobRecord]:
        """Finished jobs with a result (or an error) whose message has not been posted, oldest first."""
        async with self._lock:
            return await self._records(
                "state IN ('done', 'failed', 'cancelled') AND result_message_id IS NULL "
                "AND (result_paths != '[]' OR error IS NOT NULL) AND results_expired_at IS NULL ORDER BY id"
            )

    async def results_to_expire(self, *, finished_before: float, limit: int = 100) -> list[JobRecord]:
        """Finished jobs with result files that ended before `finished_before` and were not expired yet, oldest first."""
        async with self._lock:
            return await self._records(
                "state IN ('done', 'failed', 'cancelled') AND finished_at < ? AND result_paths != '[]' "
                "AND results_expired_at IS NULL ORDER BY finished_at LIMIT ?",
                (finished_before, limit),
            )

    async def mark_results_expired(self, job_id: int, *, now: float) -> None:
        """Record that retention deleted the job's result files (/job says so)."""
        await self._update_one("UPDATE jobs SET results_expired_at = ? WHERE id = ?", (now, job_id))

    # -- the runner's side ----------------------------------------------------------------------

    async def claim_next(
        self, lease_owner: str, *, lease_s: float, now: float, choose: Chooser, device: str | None = None
    ) -> Claim | None:
        """Lease the next job: an interrupted one (expired lease) first, else `choose`'s pick.

        Taking over an expired lease counts one interruption: the process that held it died or hung.
        """
        async with self._lock, immediate(self._conn):
            row = await self._one(
                "SELECT id FROM jobs WHERE state = 'running' AND lease_until < ? ORDER BY id LIMIT 1", (now,)
            )
            if row is not None:
                job_id = int(row[0])
                log.info("job %s: lease expired, resuming it", job_id)
            else:
                state = await self._queue_state(now)
                picked = choose(state) if state.queued else None
                if picked is None:
                    return None
                job_id = picked
            cursor = await self._conn.execute(
                "UPDATE jobs SET lease_owner = :me, lease_until = :until, attempt = attempt + 1, "
                "interruptions = interruptions + (state = 'running'), state = 'running', "
                "heartbeat_at = :now, run_started_at = :now, started_at = COALESCE(started_at, :now), "
                "device = :device WHERE id = :id AND (state = 'queued' OR (state = 'running' AND lease_until < :now))",
                {"me": lease_owner, "until": now + lease_s, "now": now, "device": device, "id": job_id},
            )
            changed = cursor.rowcount
            await cursor.close()
            if not changed:  # cannot happen under the write lock; kept as the protocol's check
                return None
            await self._conn.execute("UPDATE jobs SET worker_id = ? WHERE id = ?", (worker_of(lease_owner), job_id))
            job = await self._get(job_id)
            blob = await self._one("SELECT checkpoint FROM jobs WHERE id = ?", (job_id,))
            checkpoint = bytes(blob[0]) if blob is not None and blob[0] is not None else None
            return Claim(job=job, lease_owner=lease_owner, attempt=job.attempt, checkpoint=checkpoint)

    async def _queue_state(self, now: float) -> QueueState:
        rows = await self._all(
            "SELECT id, user_id, guild_id, priority, created_at FROM jobs WHERE id IN "
            "(SELECT MIN(id) FROM jobs WHERE state = 'queued' GROUP BY guild_id, user_id) ORDER BY id"
        )
        queued = tuple(
            Candidate(id=r[0], user_id=r[1], guild_id=r[2], priority=bool(r[3]), created_at=r[4]) for r in rows
        )
        running = await self._all(
            "SELECT user_id, guild_id FROM jobs WHERE state = 'running' AND lease_until >= ?", (now,)
        )
        per_member: dict[int, int] = {}
        per_guild: dict[int | None, int] = {}
        for user_id, guild_id in running:
            per_member[int(user_id)] = per_member.get(int(user_id), 0) + 1
            per_guild[guild_id] = per_guild.get(guild_id, 0) + 1
        since = now - self.usage_window_s
        return QueueState(
            queued=queued,
            running_per_member=per_member,
            usage=await self._member_usage(since, now),
            guild_usage=await self._guild_usage(since, now),
            running_per_guild=per_guild,
        )

    async def _fenced(self, sql: str, params: dict[str, Any], claim: Claim) -> int:
        params = {**params, "id": claim.job.id, "me": claim.lease_owner, "attempt": claim.attempt}
        cursor = await self._conn.execute(
            sql + " WHERE id = :id AND state = 'running' AND lease_owner = :me AND attempt = :attempt", params
        )
        changed = cursor.rowcount
        await cursor.close()
        return changed

    async def renew_lease(
        self, claim: Claim, *, lease_s: float, now: float, step: int, frame: int, heartbeat_at: float | None
    ) -> LeaseState | None:
        """Extend the lease and record progress; None when the lease was lost (stop, discard the output)."""
        async with self._lock, immediate(self._conn):
            changed = await self._fenced(
                "UPDATE jobs SET lease_until = :until, step = :step, frame = :frame, "
                "heartbeat_at = COALESCE(:beat, heartbeat_at)",
                {"until": now + lease_s, "step": step, "frame": frame, "beat": heartbeat_at},
                claim,
            )
            if not changed:
                return None
            row = await self._one("SELECT cancel_requested FROM jobs WHERE id = ?", (claim.job.id,))
            return LeaseState(cancel_requested=bool(row and row[0]))

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int, now: float) -> bool:
        """Store the job's resumable state and the step/frame it reached; False when the lease was lost."""
        async with self._lock, immediate(self._conn):
            return bool(
                await self._fenced(
                    "UPDATE jobs SET checkpoint = :data, checkpoint_step = :step, checkpoint_frame = :frame, "
                    "checkpoint_at = :now, step = MAX(step, :step), frame = :frame",
                    {"data": data, "step": step, "frame": frame, "now": now},
                    claim,
                )
            )

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
        async with self._lock, immediate(self._conn):
            changed = await self._fenced(
                "UPDATE jobs SET state = :state, finished_at = :now, gpu_seconds = gpu_seconds + :gpu, "
                "step = :step, frame = :frame, result_paths = :paths, partial = :partial, error = :error, "
                "seed = COALESCE(:seed, seed), lease_owner = NULL, lease_until = NULL, run_started_at = NULL, "
                "checkpoint = NULL",
                {
                    "state": state.value,
                    "now": now,
                    "gpu": gpu_seconds,
                    "step": step,
                    "frame": frame,
                    "paths": json.dumps(list(result_paths)),
                    "partial": int(partial),
                    "error": error,
                    "seed": seed,
                },
                claim,
            )
            return await self._get(claim.job.id) if changed else None

    async def release(
        self, claim: Claim, *, now: float, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool:
        """Give a running job back to the queue, keeping its checkpoint and its place.

        A clean stop (shutdown, full disk) is not `interrupted`; an abandoned render (a stall) is, and counts.
        """
        async with self._lock, immediate(self._conn):
            return bool(
                await self._fenced(
                    "UPDATE jobs SET state = 'queued', gpu_seconds = gpu_seconds + :gpu, step = :step, frame = :frame, "
                    "interruptions = interruptions + :interrupted, "
                    "lease_owner = NULL, lease_until = NULL, run_started_at = NULL",
                    {"gpu": gpu_seconds, "step": step, "frame": frame, "interrupted": int(interrupted)},
                    claim,
                )
            )

    async def expire_leases(self, owner_prefix: str) -> int:
        """Make the leases held under `owner_prefix` (this worker's earlier life) reclaimable now."""
        async with self._lock, immediate(self._conn):
            cursor = await self._conn.execute(
                "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND substr(lease_owner, 1, ?) = ?",
                (len(owner_prefix), owner_prefix),
            )
            changed = cursor.rowcount
            await cursor.close()
            return changed

    # -- per-server settings --------------------------------------------------------------------

    async def guild_settings(self) -> dict[int, dict[str, str]]:
        """Every server's changed settings (guild id -> name -> value); read once at start."""
        async with self._lock:
            return await guild_settings.read_all(self._conn)

    async def set_guild_setting(self, guild_id: int, name: str, value: str, *, now: float, by_user: int | None) -> None:
        async with self._lock, immediate(self._conn):
            await guild_settings.write(self._conn, guild_id, name, value, now=now, by_user=by_user)

    async def reset_guild_setting(self, guild_id: int, name: str) -> bool:
        """Back to the host's default; False when the server had not changed it."""
        async with self._lock, immediate(self._conn):
            return await guild_settings.delete(self._conn, guild_id, name)

    # -- measured speed, render workers ---------------------------------------------------------

    async def speeds(self) -> dict[str, float]:
        async with self._lock:
            return {r[0]: float(r[1]) for r in await self._all("SELECT key, seconds_per_step FROM speeds")}

    async def record_speed(self, key: str, seconds_per_step: float, *, now: float, alpha: float = 0.3) -> float:
        """Fold one measurement into the moving average for `key`; return the new average."""
        async with self._lock, immediate(self._conn):
            return await side_tables.record_speed(self._conn, key, seconds_per_step, now=now, alpha=alpha)

    async def upsert_worker(self, worker: WorkerRecord) -> None:
        async with self._lock, immediate(self._conn):
            await side_tables.upsert(self._conn, worker)

    async def workers(self) -> list[WorkerRecord]:
        async with self._lock:
            return await side_tables.read_all(self._conn)
