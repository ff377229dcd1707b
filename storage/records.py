"""The job as the store keeps it. No torch, no discord: the bot and the runner share these values."""

from __future__ import annotations

import dataclasses

from engine.jobs import JobKind, JobSpec, JobStatus


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """Who asked for a job and where its messages go."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """One job row. Times are Unix seconds. The checkpoint is not carried here (it can be large)."""

    id: int
    kind: JobKind
    owner: Owner
    spec: JobSpec
    state: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0  # iterations done over the whole job
    steps: int = 0  # iterations the whole job takes
    frame: int = 0
    frames: int = 1
    gpu_seconds: float = 0.0
    result_paths: tuple[str, ...] = ()
    partial: bool = False  # True when cancelled with a partial result
    error: str | None = None
    status_message_id: int | None = None
    result_message_id: int | None = None  # set once the result is posted
    upload_limit: int | None = None  # bytes; the smaller of the interaction's and the guild's limit
    priority: bool = False
    attempt: int = 0
    seed: int | None = None  # the seed actually used, once known

    @property
    def finished(self) -> bool:
        return self.state in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)
