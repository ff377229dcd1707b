"""The job store's interface (`JobStore`) and errors; `storage.sqlite.store.SqliteJobStore` and
`storage.postgres.store.PostgresJobStore` implement it.

The queue and the runner see only `JobStore`, and `storage.factory.open_store` picks the implementation
from a URL (docs/architecture.md, "The PostgreSQL store").
Every state change is one committed transaction; every runner write is fenced on
`lease_owner` and `attempt`, so a runner that lost its lease changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from engine.jobs import JobSpec, JobStatus
from storage.records import (
    Claim,
    JobRecord,
    LeaseState,
    Owner,
    PlanRow,
    ProgressRecord,
    QueuedCounts,
    QueueState,
    StoredFile,
    SubmitLimits,
    WorkerRecord,
)

Chooser = Callable[[QueueState], int | None]  # picks a queued job id, or None to leave them all waiting
PrepareSpec = Callable[[int], Awaitable[JobSpec]]  # given the new id, the spec to store (inputs copied)


class StoreError(Exception):
    """Base of the store's own errors."""


class NoSuchJob(StoreError, LookupError):
    """No job has that id."""


class LimitReached(StoreError):
    """A submit cap is full; the message names the cap and the count."""


class DiskFull(StoreError):
    """A write failed because the disk (or the database's quota) is full; nothing was written."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (restarting, a dropped connection, the network): nothing is known
    to have been written; the same call may succeed a moment later, once the connection is made again."""


class AlreadySubmitted(StoreError):
    """A job was already made for this interaction: `job` is it (one job per interaction, whatever its ack did)."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(f"job #{job.id} was already made for this interaction")
        self.job = job


class GuildSettingsStore(Protocol):
    """Per-server settings as text, by guild id and setting name; a setting not stored is the host's default."""

    async def guild_settings(self) -> dict[int, dict[str, str]]: ...

    async def set_guild_setting(
        self, guild_id: int, name: str, value: str, *, now: float, by_user: int | None
    ) -> None: ...

    async def reset_guild_setting(self, guild_id: int, name: str) -> bool: ...


class JobFileStore(Protocol):
    """A job's files (its inputs, its results) kept in the database, for hosts that share nothing else.

    A separate object (`JobStore.files`) rather than more methods on the store: it is a different kind
    of data (bytes, streamed) with its own switch, `shares_files`. Files are keyed by (job id, role,
    name): role "input" or "result", name a plain file name. Each is stored as rows of at most 1 MiB
    (`storage.file_chunks.CHUNK_BYTES`), read from and written to local files one chunk at a time, so
    a video never sits whole in memory or in one message. A put is one transaction: it replaces a file
    of the same key, and one that fails leaves the old version (or nothing). A full database raises
    `DiskFull`, as does a full local disk while fetching.

    `shares_files` says whether the queue must send files through here: True for PostgreSQL (its
    workers may run on other hosts), False for SQLite (one host, one data directory: files stay on disk).
    """

    @property
    def shares_files(self) -> bool: ...

    async def put_file(self, job_id: int, role: str, name: str, source: Path) -> int:
        """Store local file `source` as the job's file (role, name), replacing one stored before; its size."""
        ...

    async def fetch_file(self, job_id: int, role: str, name: str, target: Path) -> bool:
        """Write the stored file to `target` (complete, or not at all); False when no such file is stored."""
        ...

    async def list_files(self, job_id: int, role: str) -> list[StoredFile]:
        """The job's stored files of `role`, by name."""
        ...

    async def delete_files(self, job_id: int, role: str) -> int:
        """Delete the job's stored files of `role`; how many there were."""
        ...


class ProgressBoard(Protocol):
    """Running jobs' progress shared between processes (a worker writes, front-ends read) and cancel requests read
    by workers, both polled: a row exists only while its job runs (the database deletes it when the job leaves
    'running'), so a poll reads as many rows as jobs are rendering."""

    async def put(self, record: ProgressRecord, *, now: float) -> None:
        """Publish a running job's progress (with its preview when `record.preview` is set); a job that is no
        longer running is left alone."""
        ...

    async def running(self) -> list[ProgressRecord]:
        """Every running job's latest progress, without the preview bytes."""
        ...

    async def preview(self, job_id: int) -> bytes | None: ...

    async def cancel_requested(self, job_ids: Sequence[int]) -> set[int]:
        """Which of `job_ids` a member asked to cancel."""
        ...


class JobStore(GuildSettingsStore, Protocol):
    """Persistence for jobs, measured speeds and per-server settings. Times are Unix seconds passed in by the caller."""

    @property
    def files(self) -> JobFileStore:
        """The jobs' files in the database (used only where `files.shares_files`)."""
        ...

    @property
    def progress(self) -> ProgressBoard:
        """Running jobs' progress and cancel requests, shared between processes."""
        ...

    async def close(self) -> None: ...

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
    ) -> JobRecord: ...

    async def get(self, job_id: int) -> JobRecord: ...

    async def queued_counts(self, user_id: int, guild_id: int | None) -> QueuedCounts: ...

    async def state_counts(self) -> dict[tuple[str, int | None], int]:
        """How many jobs each (state, guild id) has, over the whole table: one cheap query, for the metrics."""
        ...

    async def active(self) -> list[JobRecord]: ...

    async def many(self, job_ids: Sequence[int]) -> list[JobRecord]: ...

    async def plan_rows(self) -> list[PlanRow]: ...

    async def recent(self, user_id: int, limit: int = 10, *, guild_id: int | None = None) -> list[JobRecord]: ...

    async def usage(self, *, now: float) -> dict[int, float]: ...

    async def guild_usage(self, *, now: float) -> dict[int | None, float]: ...

    async def claim_next(
        self, lease_owner: str, *, lease_s: float, now: float, choose: Chooser, device: str | None = None
    ) -> Claim | None: ...

    async def renew_lease(
        self, claim: Claim, *, lease_s: float, now: float, step: int, frame: int, heartbeat_at: float | None
    ) -> LeaseState | None: ...

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int, now: float) -> bool: ...

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
    ) -> JobRecord | None: ...

    async def release(
        self, claim: Claim, *, now: float, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool: ...

    async def cancel_queued(self, job_id: int, *, now: float) -> JobRecord | None: ...

    async def request_cancel(self, job_id: int) -> bool: ...

    async def expire_leases(self, owner_prefix: str) -> int: ...

    async def set_status_message(self, job_id: int, message_id: int | None) -> None: ...

    async def mark_delivered(self, job_id: int, message_id: int) -> None: ...

    async def undelivered(self) -> list[JobRecord]: ...

    async def results_to_expire(self, *, finished_before: float, limit: int = 100) -> list[JobRecord]: ...

    async def mark_results_expired(self, job_id: int, *, now: float) -> None: ...

    async def speeds(self) -> dict[str, float]: ...

    async def record_speed(self, key: str, seconds_per_step: float, *, now: float, alpha: float = 0.3) -> float: ...

    async def upsert_worker(self, worker: WorkerRecord) -> None:
        """Insert or refresh a render worker's row (host, devices, start, heartbeat): at its start and every beat."""
        ...

    async def workers(self) -> list[WorkerRecord]:
        """Every worker that ever beat, by id; alive or not is the caller's comparison of `heartbeat_at`."""
        ...
