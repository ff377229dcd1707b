"""The job as the store keeps it. No torch, no discord: the bot and the runner share these values."""

from __future__ import annotations

import dataclasses

from engine.jobs import JobKind, JobSpec, JobStatus

UNDELIVERABLE = 0  # the result_message_id of a result that cannot be posted (its channel is gone, or no access)


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
    # added by the queue (all optional, so older callers build records unchanged)
    device: str | None = None  # where it runs or ran
    lease_owner: str | None = None  # the runner holding it while `running`
    lease_until: float | None = None
    heartbeat_at: float | None = None  # the runner's last iteration, so a hung device thread shows
    cancel_requested: bool = False  # set while a running job is being stopped
    checkpoint_step: int | None = None  # the step the stored checkpoint reached (None: no checkpoint)
    checkpoint_frame: int | None = None
    interruptions: int = 0  # renders cut short by a process that died or a lease that lapsed (not clean stops)
    results_expired_at: float | None = None  # when retention deleted the result files
    worker_id: str | None = None  # the worker (process) that rendered it last: its lease owner's part before "/"

    @property
    def finished(self) -> bool:
        return self.state in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def delivered(self) -> bool:
        return self.result_message_id is not None


def job_steps(spec: JobSpec) -> tuple[int, int]:
    """(iterations over the whole job, frames) for a spec: what progress and ETAs count in."""
    if spec.kind == JobKind.UPSCALE:
        return 1, 1
    frames = max(1, spec.frames) if spec.kind in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER) else 1
    first = spec.iterations if spec.iterations_first_frame is None else spec.iterations_first_frame
    return first + spec.iterations * (frames - 1), frames


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A job a runner has leased: write back only with this `lease_owner` and `attempt` (fencing)."""

    job: JobRecord
    lease_owner: str
    attempt: int
    checkpoint: bytes | None = None  # resume from this when set


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A queued job as the scheduler sees it when choosing (no spec: choosing must be cheap)."""

    id: int
    user_id: int
    guild_id: int | None
    priority: bool
    created_at: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueueState:
    """What a scheduling choice needs, read inside the claim transaction."""

    # the oldest queued job of each (server, member) lane, in id order: all a fair-share choice looks at
    # (a member's later jobs in a server wait behind that one), and a deep queue costs a few rows per member
    queued: tuple[Candidate, ...]
    running_per_member: dict[int, int]  # user id -> jobs running under a live lease
    usage: dict[int, float]  # user id -> GPU seconds in the window, running time included
    guild_usage: dict[int | None, float] = dataclasses.field(default_factory=dict)  # server -> GPU seconds, likewise
    running_per_guild: dict[int | None, int] = dataclasses.field(default_factory=dict)  # server -> jobs running


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    """A queued or running job as positions and ETAs need it: who, how much work, at what speed class."""

    id: int
    user_id: int
    guild_id: int | None
    priority: bool
    running: bool
    steps: int
    steps_done: int  # a running job's progress, or where a queued job's checkpoint resumes
    vqgan_model: str
    clip_model: str
    width: int
    height: int
    num_cuts: int
    device: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeaseState:
    """The answer to a heartbeat: the lease is held; whether someone asked to cancel the job."""

    cancel_requested: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SubmitLimits:
    """Caps checked inside the insert transaction; None disables one."""

    max_queued_per_member: int | None = 10
    max_queued_per_guild: int | None = 100


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueuedCounts:
    """How many jobs wait for a member and for their server: the caps' cheap check before attachments are fetched."""

    member: int
    guild: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredFile:
    """One of a job's files kept in the database (`storage.store.JobFileStore`): its name and size in bytes."""

    name: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProgressRecord:
    """A running job's latest progress as its worker published it, for front-ends in other processes.

    `preview_version` grows with each new preview; `preview` is read separately, only when it changed.
    """

    job_id: int
    step: int
    steps: int
    iteration: int
    total: int
    frame: int
    frames: int
    loss: float
    eta_done_s: float | None = None
    preview_version: int = 0
    preview: bytes | None = None
    updated_at: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRecord:
    """One render worker's row: where it runs, on which devices, since when, and its last heartbeat."""

    worker_id: str
    host: str
    devices: tuple[str, ...]
    started_at: float
    heartbeat_at: float


def worker_of(lease_owner: str) -> str:
    """The worker id part of a lease owner "<worker id>/<device>"."""
    return lease_owner.rsplit("/", 1)[0] if "/" in lease_owner else lease_owner
