"""The render queue's interfaces: as the Discord side sees it, as a runner sees it, and the renderer. No discord, no torch.

`bot.queue.service.JobQueue` implements `RenderQueue` and `RunnerQueue`; `bot.queue.runner.JobRunner`
implements `LocalRunner`; the Discord side's `bot.delivery.publisher.DiscordPublisher` implements
`JobEvents`. Errors raised here carry messages that are safe to show to the member who caused them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from engine.jobs import Artifact, JobSpec, JobStatus, ProgressCallback
from storage.records import Claim, JobRecord, LeaseState, Owner, QueuedCounts, WorkerRecord


class Renderer(Protocol):
    """The engine as the runner drives it (`engine.renderer.Renderer` satisfies this).

    `render` blocks; call it on the device's own thread. `output` is the final file (its suffix picks
    the format: .png/.jpg for stills, .mp4 for videos). `cancel` is checked between iterations and a
    cancelled job returns its partial result (`Artifact.partial`), or raises `engine.errors.Cancelled`
    when it had nothing to show yet. `resume` is what an earlier `Progress.checkpoint()` returned; its
    frames live in `work_dir`, the job's folder for intermediate files, which must outlive attempts and
    which the caller removes once the job has ended (`StaleCheckpoint` when they are gone). Raises
    `engine.errors.InvalidJob` for bad input.
    """

    def render(
        self,
        spec: JobSpec,
        output: Path,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        resume: bytes | None = None,
        work_dir: Path | None = None,
    ) -> Artifact: ...


class QueueError(Exception):
    """Base of the queue's refusals; `str(e)` is shown to the member."""


class QueueRefused(QueueError):
    """A job was not accepted (a limit, admission control, a bad input); the message says what to change."""


class JobNotFound(QueueError, LookupError):
    """No job has that id."""


class NotAllowed(QueueError, PermissionError):
    """The member may not do that to this job (for example cancel someone else's)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry:
    """A job in the order the scheduler will run it; position 0 means running now."""

    job: JobRecord
    position: int
    eta_start_s: float | None  # seconds from now until it starts (0 when running); None when unknown
    eta_done_s: float | None  # seconds from now until it finishes
    duplicate: bool = False  # a submit for an interaction that already made this job (nothing new was made)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProgressUpdate:
    """Progress of a running job, delivered on the event loop. `preview` is set only when one was due."""

    job_id: int
    step: int
    steps: int
    iteration: int
    total: int
    frame: int
    frames: int
    loss: float
    preview: bytes | None = None  # a small WebP image
    eta_done_s: float | None = None


class JobEvents(Protocol):
    """What the queue tells its subscribers. Called on the event loop; must not block."""

    def on_progress(self, update: ProgressUpdate) -> None: ...

    async def on_started(self, job: JobRecord) -> None: ...

    async def on_finished(self, job: JobRecord) -> None:
        """The job is done, failed or cancelled; `job.result_paths` holds what it produced."""
        ...


class RenderQueue(Protocol):
    """Submit, cancel and inspect jobs."""

    async def submit(
        self,
        owner: Owner,
        spec: JobSpec,
        *,
        upload_limit: int | None = None,
        priority: bool = False,
        inputs: Mapping[str, Path] | None = None,
        interaction_id: int | None = None,
        max_queued_per_member: int | None = None,
    ) -> QueueEntry:
        """Validate, copy input files into the data directory, persist; raise `QueueRefused` with the reason.

        One job per `interaction_id`: submitting it again answers the job it made (`QueueEntry.duplicate`).
        `max_queued_per_member` is the server's own cap, when it is below the host's.
        """
        ...

    async def cancel(
        self, job_id: int, *, by_user: int, moderator: bool = False, guild_id: int | None = None
    ) -> JobRecord:
        """Remove a queued job at once or stop a running one (keeping its partial result); with `guild_id`, only a
        job of that server (another server's is `JobNotFound`)."""
        ...

    async def get(self, job_id: int, *, guild_id: int | None = None) -> JobRecord:
        """With `guild_id`, another server's job is `JobNotFound`, exactly as an id that does not exist."""
        ...

    async def queued_counts(self, user_id: int, guild_id: int | None) -> QueuedCounts: ...

    async def snapshot(self) -> list[QueueEntry]:
        """Running and queued jobs, in the order they will run, with positions and ETAs."""
        ...

    async def recent(self, user_id: int, limit: int = 10, *, guild_id: int | None = None) -> list[JobRecord]: ...

    def subscribe(self, events: JobEvents) -> None: ...

    async def set_status_message(self, job_id: int, message_id: int | None) -> None: ...

    async def mark_delivered(self, job_id: int, message_id: int) -> None: ...

    async def undelivered(self) -> list[JobRecord]:
        """Finished jobs whose result has not been posted yet (delivered again after a restart)."""
        ...

    async def result_file(self, job: JobRecord) -> Path | None:
        """The job's first result as a file on this host, fetched from the database when another host rendered
        it; None when it has no result. The path may not exist (the file is missing, or expired)."""
        ...

    async def workers(self) -> list[WorkerRecord]:
        """Every render worker's heartbeat row, alive or not (/queue counts the live ones)."""
        ...


class LocalRunner(Protocol):
    """What the queue needs from a runner in its own process: a submit wakes it, a cancel reaches it at once."""

    def wake(self) -> None: ...

    def cancel_running(self, job_id: int) -> bool:
        """Stop the job if this runner is rendering it; False when it is not."""
        ...


class RunnerQueue(Protocol):
    """The queue as a runner sees it: claim a job under a lease, report on it, record its end.

    Every write about a claimed job is fenced on the claim's lease: a method that returns False or None
    found the lease lost to another runner, and the runner discards its attempt.
    """

    def attach(self, runner: LocalRunner) -> None: ...

    def detach(self, runner: LocalRunner) -> None: ...

    async def reclaim_leases(self, owner_prefix: str) -> int:
        """Make the leases held under `owner_prefix` (this worker before a restart) claimable now; how many."""
        ...

    async def claim(self, lease_owner: str, *, lease_s: float, device: str) -> Claim | None:
        """Lease the job that should run next on `device` (fair share), or None when none may run now."""
        ...

    async def renew_lease(
        self, claim: Claim, *, lease_s: float, step: int, frame: int, heartbeat_at: float | None
    ) -> LeaseState | None: ...

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int) -> bool: ...

    def disk_full(self) -> None:
        """A render found the disk full: nothing is claimed for a while, then claims resume by themselves."""
        ...

    async def release(
        self, claim: Claim, *, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool:
        """Give the job back to the queue, keeping its checkpoint and its place; `interrupted` (a stall) counts
        as an attempt, a clean stop (shutdown, full disk) does not."""
        ...

    async def finish(
        self,
        claim: Claim,
        state: JobStatus,
        *,
        gpu_seconds: float,
        step: int,
        frame: int,
        result_paths: Sequence[str] = (),
        partial: bool = False,
        error: str | None = None,
        seed: int | None = None,
    ) -> JobRecord | None:
        """Record the job's end and tell the subscribers (`JobEvents.on_finished`)."""
        ...

    async def record_speed(self, spec: JobSpec, device: str, seconds_per_step: float) -> None: ...

    def publish_started(self, job: JobRecord) -> None: ...

    def publish_progress(self, update: ProgressUpdate) -> None:
        """Called on the event loop."""
        ...

    def forget_live(self, job_id: int) -> None:
        """The job no longer runs here: drop its live progress."""
        ...
