"""What a runner is configured with (`RunnerConfig`) and what it knows of one job on one device (`Run`).

`Run` is shared by the event loop and the device's render thread: plain attributes, each set by one side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from engine.jobs import JobKind
from storage.records import Claim

T = TypeVar("T")


def output_path(data_dir: Path, claim: Claim) -> Path:
    """Where an attempt writes its result: data_dir/outputs/<job id>/a<attempt>/job-<id>.<png|mp4>."""
    spec = claim.job.spec
    video = spec.kind in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER) or (
        spec.kind == JobKind.UPSCALE and spec.video is not None
    )
    name = f"job-{claim.job.id}.{'mp4' if video else 'png'}"
    return Path(data_dir) / "outputs" / str(claim.job.id) / f"a{claim.attempt}" / name


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunnerConfig:
    """How a runner claims, reports and checkpoints.

    An explicit `worker_id` is stable across restarts, so the leases it held before are taken back at
    once instead of after they expire; None makes up a fresh one per process.
    """

    worker_id: str | None = None
    lease_s: float = 30.0
    preview_interval_s: float = 4.0  # a preview is decoded at most this often per job
    checkpoint_every_steps: int = 50
    checkpoint_every_s: float = 60.0
    poll_s: float | None = None  # an idle device looks for work this often; None: a third of the lease
    device_failure_limit: int | None = 3  # internal errors in a row before a device takes no more jobs
    stall_s: float | None = 600.0  # a render with no iteration for this long is abandoned (None: never)
    stall_grace_s: float = 30.0  # how long an abandoned render's thread has to stop before the process exits
    finish_retry_s: tuple[float, float] = (1.0, 60.0)  # first and longest wait between tries to record an end


@dataclasses.dataclass(slots=True)
class Run:
    """One job on one device: what the render thread and the loop share (plain attributes, set by one side)."""

    claim: Claim
    device: str
    output: Path
    cancel: threading.Event
    started: float  # monotonic
    first_step: int  # where this attempt began (a resumed job starts past 0)
    step: int = 0
    frame: int = 1
    last_iteration_at: float | None = None  # wall clock, for the heartbeat: a hung device thread shows
    alive_at: float = 0.0  # monotonic: the start, then each iteration (the stall watchdog reads it)
    iterated: bool = False
    preview_due: float = 0.0
    checkpoint_step: int = 0
    checkpoint_at: float = 0.0
    draining: bool = False  # set by the loop: checkpoint at the next iteration and stop
    drain_checkpoint: tuple[bytes, int, int] | None = None  # set by the render thread
    pending_checkpoint: tuple[bytes, int, int] | None = None
    writer: asyncio.Task[None] | None = None
    lost: bool = False  # the lease went to someone else: discard everything
    stalled: bool = False  # the watchdog gave up on it: back to the queue, counted as an interruption
    internal_error: str | None = None  # what failed, when it was not the job's fault (device health counts it)


async def write_until_done(
    write: Callable[[], Awaitable[T]], *, waits: tuple[float, float], on_failure: Callable[[Exception, float], None]
) -> T:
    """`write()`'s result, trying again after a growing wait (`waits`: the first and the longest) while it fails.

    A job's end is written this way: its result is on disk and its lease is kept, so a full disk or a locked
    database delays the record and never makes the job render again. `on_failure(error, wait)` may raise to stop.
    """
    wait, longest = waits
    while True:
        try:
            return await write()
        except Exception as e:
            on_failure(e, wait)
        await asyncio.sleep(wait)
        wait = min(wait * 2, longest)
