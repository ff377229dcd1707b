"""What a runner writes for a running job besides its end: its checkpoints and its measured speed.

Checkpoints are written by one task per job (`write_checkpoints`), the newest one only; a write that fails
(the database restarting, a dropped connection) is tried again after a growing wait, so an outage costs a
checkpoint's delay, never the job. A lease lost to another runner stops the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bot.queue.api import RunnerQueue
from bot.queue.runs import Run
from storage.records import Claim

log = logging.getLogger(__name__)

MIN_SPEED_STEPS = 3  # fewer steps measure mostly the start-up time


class CheckpointWriter(Protocol):
    """What `write_checkpoints` needs of the queue."""

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int) -> bool: ...


async def write_checkpoints(
    queue: CheckpointWriter, run: Run, *, waits: tuple[float, float], give_up: Callable[[], bool]
) -> None:
    """Write `run.pending_checkpoint` until none waits. A failed write is tried again after a growing wait
    (`waits`: the first and the longest) unless a newer checkpoint replaced it meanwhile, or `give_up()` (a
    shutdown: the lease runs out, the last stored checkpoint stays)."""
    wait, longest = waits
    while run.pending_checkpoint is not None:
        checkpoint = run.pending_checkpoint
        data, step, frame = checkpoint
        run.pending_checkpoint = None
        try:
            ok = await queue.save_checkpoint(run.claim, data, step=step, frame=frame)
        except Exception as e:
            if give_up():
                log.warning("job %s: saving a checkpoint failed during a shutdown (%r)", run.claim.job.id, e)
                return
            log.error(
                "job %s: saving the checkpoint at step %d failed (%r); trying again in %.1f s",
                run.claim.job.id,
                step,
                e,
                wait,
            )
            if run.pending_checkpoint is None:  # nothing newer came: this one is still the one to keep
                run.pending_checkpoint = checkpoint
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)
            continue
        wait = waits[0]
        if not ok:
            run.lost = True
            run.cancel.set()
            return
        log.debug("job %s: checkpoint at step %d", run.claim.job.id, step)


def record_speed(queue: RunnerQueue, run: Run, steps_done: int) -> None:
    """Fold the attempt's seconds per step into the ETAs' speeds, in the background (a failure is logged)."""
    steps = steps_done - run.first_step
    if steps >= MIN_SPEED_STEPS:
        seconds = (time.monotonic() - run.started) / steps
        task = asyncio.get_running_loop().create_task(queue.record_speed(run.claim.job.spec, run.device, seconds))
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recording a speed failed", exc_info=task.exception())
