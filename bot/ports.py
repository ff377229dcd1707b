"""The render queue's interface, as the Discord layer sees it. No discord, no torch.

`bot.queue.JobQueue` implements `RenderQueue`; the Discord publisher implements `JobEvents`.
Errors raised here carry messages that are safe to show to the member who caused them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from engine.jobs import Artifact, JobSpec, ProgressCallback
from storage.records import JobRecord, Owner


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
    ) -> QueueEntry:
        """Validate, copy input files into the data directory, persist; raise `QueueRefused` with the reason."""
        ...

    async def cancel(self, job_id: int, *, by_user: int, moderator: bool = False) -> JobRecord:
        """Remove a queued job at once or stop a running one (keeping its partial result)."""
        ...

    async def get(self, job_id: int) -> JobRecord: ...

    async def snapshot(self) -> list[QueueEntry]:
        """Running and queued jobs, in the order they will run, with positions and ETAs."""
        ...

    async def recent(self, user_id: int, limit: int = 10) -> list[JobRecord]: ...

    def subscribe(self, events: JobEvents) -> None: ...

    async def set_status_message(self, job_id: int, message_id: int | None) -> None: ...

    async def mark_delivered(self, job_id: int, message_id: int) -> None: ...

    async def undelivered(self) -> list[JobRecord]:
        """Finished jobs whose result has not been posted yet (delivered again after a restart)."""
        ...
