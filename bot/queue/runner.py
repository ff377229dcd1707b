"""`JobRunner`: claims jobs (fair share, lease + heartbeat) and renders each on its device's own thread.

Threading (docs/architecture.md, "Processes and threads"): one single-thread executor per device; the
renderer is built on that thread at start and every render for the device runs there. The render
thread talks to the event loop only through `loop.call_soon_threadsafe`; the loop talks to it only
through a `threading.Event` (cancel) and plain flags. Every write a runner makes is fenced on its
lease, so a runner that lost its lease changes nothing. No torch here: the renderer comes from a factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bot.queue.api import ProgressUpdate, Renderer, RunnerQueue
from bot.queue.backoff import Backoff
from bot.queue.device_health import EXIT_DEVICE_FAILED, EXIT_STUCK_THREAD, DeviceHealth
from bot.queue.disk import is_disk_full
from bot.queue.job_files import remove, work_path
from bot.queue.run_writes import record_speed, write_checkpoints
from bot.queue.runs import Run, RunnerConfig, output_path, write_until_done
from bot.queue.watchdog import Stalled, watch_render
from engine.errors import Cancelled, EngineError, ModelLoadError, StaleCheckpoint
from engine.jobs import Artifact, JobStatus, Progress
from storage.records import Claim

log = logging.getLogger(__name__)

T = TypeVar("T")
RendererFactory = Callable[[str], Renderer]  # device -> its renderer, called on the device's thread


class JobRunner:
    """Runs queued jobs on `devices` (e.g. ("cuda:0", "cuda:1") or ("cpu",)); one thread per device.

    Results go under `data_dir/outputs/`. Implements `bot.queue.api.LocalRunner` for `queue`.
    """

    def __init__(
        self,
        queue: RunnerQueue,
        make_renderer: RendererFactory,
        devices: Sequence[str],
        data_dir: Path,
        config: RunnerConfig | None = None,
    ) -> None:
        if not devices:
            raise ValueError("at least one device")
        config = config or RunnerConfig()
        self.queue = queue
        self.devices = tuple(devices)
        self.data_dir = Path(data_dir)
        self._reclaim_own = config.worker_id is not None
        self.worker_id = config.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_s = config.lease_s
        self.preview_interval_s = config.preview_interval_s
        self.checkpoint_every_steps = config.checkpoint_every_steps
        self.checkpoint_every_s = config.checkpoint_every_s
        self.poll_s = config.poll_s if config.poll_s is not None else config.lease_s / 3
        self._make_renderer = make_renderer
        self._pools = {d: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"render-{d}") for d in self.devices}
        self._renderers: dict[str, Renderer] = {}
        self._wake = {d: asyncio.Event() for d in self.devices}
        self._runs: dict[int, Run] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.stall_s = config.stall_s
        self.stall_grace_s = config.stall_grace_s
        self.finish_retry_s = config.finish_retry_s
        self.health = DeviceHealth(self.devices, config.device_failure_limit)
        self._fresh_threads = 0
        self._stopping = False
        self.stopped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build each device's renderer on its own thread, then start claiming jobs."""
        loop = asyncio.get_running_loop()
        if self._reclaim_own:
            taken = await self.queue.reclaim_leases(f"{self.worker_id}/")
            if taken:
                log.info("taking back %d job(s) this worker was running before a restart", taken)
        built = await asyncio.gather(
            *(loop.run_in_executor(self._pools[d], self._make_renderer, d) for d in self.devices)
        )
        self._renderers = dict(zip(self.devices, built, strict=True))
        self.queue.attach(self)
        self._tasks = [loop.create_task(self._device_loop(d), name=f"runner-{d}") for d in self.devices]
        for task in self._tasks:
            task.add_done_callback(self._loop_ended)
        log.info("runner %s started on %s", self.worker_id, ", ".join(self.devices))

    async def drain(self, grace_s: float = 10.0) -> None:
        """Stop claiming; checkpoint each running job at its next iteration and give it back to the queue."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        self.queue.detach(self)
        for run in self._runs.values():
            run.draining = True
        for event in self._wake.values():
            event.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            if pending:  # no iteration came in time: stop without a fresh checkpoint (the last one stays)
                log.warning(
                    "drain: %d device(s) did not reach an iteration in %.0f s; stopping them", len(pending), grace_s
                )
                for run in self._runs.values():
                    run.cancel.set()
                await asyncio.wait(pending, timeout=grace_s)
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self.stopped.set()
        log.info("runner %s stopped", self.worker_id)

    def device_health(self) -> dict[str, bool]:
        """Per device: True while its loop runs and takes jobs (False before the runner started, once the loop
        ended or died, and once the device was disabled for failing again and again or for a stuck thread)."""
        alive = {task.get_name().removeprefix("runner-"): not task.done() for task in self._tasks}
        return {d: alive.get(d, False) and self.health.usable(d) for d in self.devices}

    @property
    def exit_status(self) -> int | None:
        """The status the process should exit with for its supervisor (device health), or None."""
        return self.health.exit_status

    @property
    def exit_requested(self) -> asyncio.Event:
        """Set once `exit_status` is set and no job runs here any more."""
        return self.health.exit_requested

    def _disable(self, device: str, why: str, status: int) -> None:
        """Take no more jobs on any device; `exit_requested` is set once the jobs running here have ended."""
        self.health.disable(device, why, status)
        for event in self._wake.values():
            event.set()
        self.health.exit_if_idle(len(self._runs))

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._stopping:
            log.error("%s died; that device takes no more jobs", task.get_name(), exc_info=task.exception())

    # -- LocalRunner: what the queue calls ------------------------------------------------------

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    def cancel_running(self, job_id: int) -> bool:
        run = self._runs.get(job_id)
        if run is None:
            return False
        run.cancel.set()
        return True

    # -- the device loop ------------------------------------------------------------------------

    async def _device_loop(self, device: str) -> None:
        owner = f"{self.worker_id}/{device}"
        wake = self._wake[device]
        backoff = Backoff(f"claiming a job on {device}", log, every_s=self.poll_s)
        while not self._stopping and self.health.exit_status is None:
            wake.clear()
            try:
                claim = await self.queue.claim(owner, lease_s=self.lease_s, device=device)
                wait = backoff.succeeded()
            except Exception as e:  # the database is away: a claim not committed leaves the job queued
                claim, wait = None, backoff.failed(e)
            if claim is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                continue
            run = await self._run(device, claim)
            if run.internal_error is not None:
                if self.health.failed(device, run.internal_error):
                    self._disable(device, run.internal_error, EXIT_DEVICE_FAILED)
            elif not (run.stalled or run.draining or run.lost):
                self.health.worked(device)
            if run.stalled and self.health.usable(device):
                await self._fresh_thread(device)
        self.health.exit_if_idle(len(self._runs))

    async def _fresh_thread(self, device: str) -> None:
        """After a stall: the device's renderer is built again on a new thread (the old one may be unusable)."""
        old = self._pools[device]
        self._fresh_threads += 1
        name = f"render-{device}-fresh{self._fresh_threads}"
        self._pools[device] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        old.shutdown(wait=False, cancel_futures=True)
        self._renderers.pop(device, None)
        try:
            self._renderers[device] = await asyncio.get_running_loop().run_in_executor(
                self._pools[device], self._make_renderer, device
            )
        except Exception as e:
            log.exception("device %s: rebuilding its renderer after a stall failed; it takes no more jobs", device)
            self._disable(device, f"rebuilding its renderer failed: {e!r}", EXIT_DEVICE_FAILED)
            return
        log.info("device %s: a fresh render thread and renderer after the stall", device)

    def _begin(self, device: str, claim: Claim) -> Run:
        job = claim.job
        resumed_at = (job.checkpoint_step or 0) if claim.checkpoint is not None else 0
        run = Run(
            claim=claim,
            device=device,
            output=output_path(self.data_dir, claim),
            cancel=threading.Event(),
            started=time.monotonic(),
            first_step=resumed_at,
            step=resumed_at,
            checkpoint_step=resumed_at,
            checkpoint_at=time.monotonic(),
        )
        if job.cancel_requested:
            run.cancel.set()
        if self._stopping:
            run.draining = True
        self._runs[job.id] = run
        log.info(
            "job %s started on %s (attempt %d%s)",
            job.id,
            device,
            claim.attempt,
            f", from step {resumed_at}" if resumed_at else "",
        )
        return run

    async def _run(self, device: str, claim: Claim) -> Run:
        job = claim.job
        run = self._begin(device, claim)
        self.queue.publish_started(job)
        beat = asyncio.get_running_loop().create_task(self._heartbeat(run))
        try:
            artifact, error = await self._render(run)
            await self._settle(run, artifact, error)  # the lease is renewed until the end is recorded
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: recording its end failed", job.id)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self._runs.pop(job.id, None)
            self.queue.forget_live(job.id)
        return run

    async def _render(self, run: Run) -> tuple[Artifact | None, str | None]:
        """Render on the device's thread: (the artifact, None), or (None, the error the member sees)."""
        job, device = run.claim.job, run.device
        loop = asyncio.get_running_loop()
        render = functools.partial(self._render_on_device, run, functools.partial(self._on_progress, loop, run))
        try:
            await asyncio.to_thread(run.output.parent.mkdir, parents=True, exist_ok=True)
            run.alive_at = time.monotonic()
            future = loop.run_in_executor(self._pools[device], render)
            if self.stall_s is None:
                return await future, None
            return await watch_render(
                future,
                last_sign_of_life=lambda: (run.alive_at, run.iterated),
                cancel=run.cancel,
                stall_s=self.stall_s,
                grace_s=self.stall_grace_s,
                on_stall=functools.partial(self._on_stall, run),
            ), None
        except asyncio.CancelledError:  # cancelling this task does not stop the thread: the event does
            run.cancel.set()
            raise
        except Stalled as e:
            if not e.stopped:
                self._stuck(run)
            return None, None
        except Cancelled:  # stopped before it had anything to show (reading its source video)
            log.info("job %s: cancelled before a result", job.id)
            return None, None
        except EngineError as e:
            if isinstance(e, ModelLoadError):  # the operator's problem, not the member's
                log.exception("job %s: model load failed on %s", job.id, device)
                run.internal_error = f"{type(e).__name__}: {e}"
                return None, "internal error"
            log.info("job %s refused by the engine: %s", job.id, e)  # InvalidJob, OutOfMemory: say what to change
            return None, str(e)
        except Exception as e:
            if is_disk_full(e):  # not the job's fault: back to the queue with its checkpoint, as at a shutdown
                log.error("job %s: the disk is full; back in the queue until there is room (%s)", job.id, e)
                run.draining = True
                self.queue.disk_full()
                return None, None
            log.exception("job %s failed on %s", job.id, device)
            run.internal_error = f"{type(e).__name__}: {e}"
            return None, "internal error"

    def _on_stall(self, run: Run, quiet_s: float) -> None:
        run.stalled = True
        what = f"job {run.claim.job.id}: no iteration on {run.device} for {quiet_s:.1f} s (at step {run.step})"
        log.error("%s; abandoning the render, the job goes back to the queue and counts as an attempt", what)

    def _stuck(self, run: Run) -> None:
        """The abandoned render's thread did not stop: checkpoint the other jobs and exit for the supervisor."""
        what = f"device {run.device}: the render thread of job {run.claim.job.id} did not stop"
        log.error(
            "%s within %.0f s of being cancelled; the other jobs are checkpointed and the process exits "
            "with status %d for its supervisor to restart it",
            what,
            self.stall_grace_s,
            EXIT_STUCK_THREAD,
        )
        for other in self._runs.values():
            other.draining = True
        self._disable(run.device, what, EXIT_STUCK_THREAD)

    def _render_on_device(self, run: Run, on_progress: Callable[[Progress], None]) -> Artifact:
        """On the device thread: render the claim, from its checkpoint when it has one and its frames are intact."""
        job, checkpoint = run.claim.job, run.claim.checkpoint
        renderer = self._renderers[run.device]
        work = work_path(self.data_dir, job.id)
        try:
            return renderer.render(
                job.spec, run.output, on_progress=on_progress, cancel=run.cancel, resume=checkpoint, work_dir=work
            )
        except StaleCheckpoint:
            if checkpoint is None:
                raise
            log.warning("job %s: the checkpoint's frames are gone; rendering it again from the start", job.id)
            run.first_step = run.step = run.checkpoint_step = 0
            return renderer.render(job.spec, run.output, on_progress=on_progress, cancel=run.cancel, work_dir=work)

    async def _settle(self, run: Run, artifact: Artifact | None, error: str | None) -> None:
        claim, job = run.claim, run.claim.job
        if run.writer is not None:
            await run.writer
        gpu_seconds = time.monotonic() - run.started
        if run.lost:
            log.warning("job %s: lease lost to another runner; discarding this attempt", job.id)
            await asyncio.to_thread(remove, run.output.parent)
            return
        if run.stalled:
            await self._give_back(run, gpu_seconds, interrupted=True)
            return
        if run.draining and (artifact is None or artifact.partial) and error is None:
            await self._give_back(run, gpu_seconds)
            return
        if artifact is not None:
            record_speed(self.queue, run, artifact.steps_done)
        fields: dict[str, Any]
        if error is not None:
            state, fields = JobStatus.FAILED, {"step": run.step, "frame": run.frame, "error": error}
        elif artifact is None:  # cancelled before it had a result
            state, fields = JobStatus.CANCELLED, {"step": run.step, "frame": run.frame}
        else:
            state = JobStatus.CANCELLED if artifact.partial and run.cancel.is_set() else JobStatus.DONE
            fields = {"step": artifact.steps_done, "frame": artifact.frames_done, "result_paths": artifact.paths}
            fields |= {"partial": artifact.partial, "seed": artifact.seed}
        record = await self._until_recorded(
            run, lambda: self.queue.finish(claim, state, gpu_seconds=gpu_seconds, **fields)
        )
        if record is None:
            log.warning("job %s: lease lost before it could be recorded; discarding this attempt", job.id)
            return
        log.info("job %s %s after %.1f s on %s", job.id, record.state, gpu_seconds, run.device)

    async def _until_recorded(self, run: Run, write: Callable[[], Awaitable[T]]) -> T:
        def failed(e: Exception, wait: float) -> None:
            if self._stopping:  # a shutdown does not wait for the database; the lease runs out
                raise e
            if is_disk_full(e):
                self.queue.disk_full()
            log.error("job %s: recording its end failed (%r); trying again in %.1f s", run.claim.job.id, e, wait)

        return await write_until_done(write, waits=self.finish_retry_s, on_failure=failed)

    async def _give_back(self, run: Run, gpu_seconds: float, *, interrupted: bool = False) -> None:
        """Stopped for a shutdown (or abandoned as stalled): store the drain checkpoint, if any, and put the job
        back in the queue; a stall counts as an interruption, a shutdown does not."""
        claim = run.claim
        if run.drain_checkpoint is not None:
            data, step, frame = run.drain_checkpoint
            await self._until_recorded(run, lambda: self.queue.save_checkpoint(claim, data, step=step, frame=frame))
        released = await self._until_recorded(
            run,
            lambda: self.queue.release(
                claim, gpu_seconds=gpu_seconds, step=run.step, frame=run.frame, interrupted=interrupted
            ),
        )
        await asyncio.to_thread(remove, run.output.parent)
        log.info(
            "job %s: back in the queue at step %d (%s)%s",
            claim.job.id,
            run.step,
            "stalled" if interrupted else "shutdown",
            "" if released else ", lease lost",
        )

    async def _heartbeat(self, run: Run) -> None:
        every_s = self.lease_s / 3  # its pace is kept while it fails: the lease has slack for two misses
        backoff = Backoff(f"job {run.claim.job.id}: heartbeat", log, every_s=every_s, longest_s=every_s)
        while True:
            await asyncio.sleep(every_s)
            try:
                state = await self.queue.renew_lease(
                    run.claim, lease_s=self.lease_s, step=run.step, frame=run.frame, heartbeat_at=run.last_iteration_at
                )
                backoff.succeeded()
            except Exception as e:  # a busy or restarting database: try again at the next beat
                backoff.failed(e)
                continue
            if state is None:
                run.lost = True
                run.cancel.set()
                return
            if state.cancel_requested:
                run.cancel.set()

    # -- the render thread's side ---------------------------------------------------------------

    def _on_progress(self, loop: asyncio.AbstractEventLoop, run: Run, p: Progress) -> None:
        """Called on the device thread after each iteration. Never blocks on the loop."""
        now = time.monotonic()
        step = p.step or p.iteration
        run.step, run.frame, run.last_iteration_at = step, p.frame, time.time()
        run.alive_at, run.iterated = now, True
        preview = None
        if now >= run.preview_due:  # decode a preview only when one is due
            run.preview_due = now + self.preview_interval_s
            preview = p.preview() or None
        if run.draining and run.drain_checkpoint is None:
            run.drain_checkpoint = (p.checkpoint(), step, p.frame)
            run.cancel.set()
        elif step < p.steps and (
            step - run.checkpoint_step >= self.checkpoint_every_steps
            or now - run.checkpoint_at >= self.checkpoint_every_s
        ):
            run.checkpoint_step, run.checkpoint_at = step, now
            checkpoint = (p.checkpoint(), step, p.frame)
            self._to_loop(loop, run, self._save_checkpoint, run, checkpoint)
        done_steps = step - run.first_step
        eta = (now - run.started) / done_steps * max(0, p.steps - step) if done_steps > 0 and p.steps else None
        update = ProgressUpdate(
            job_id=run.claim.job.id,
            step=step,
            steps=p.steps,
            iteration=p.iteration,
            total=p.total,
            frame=p.frame,
            frames=p.frames,
            loss=p.loss,
            preview=preview,
            eta_done_s=eta,
        )
        self._to_loop(loop, run, self.queue.publish_progress, update)

    @staticmethod
    def _to_loop(loop: asyncio.AbstractEventLoop, run: Run, callback: Callable[..., object], *args: object) -> None:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening, stop rendering
            run.cancel.set()

    def _save_checkpoint(self, run: Run, checkpoint: tuple[bytes, int, int]) -> None:
        """On the loop: keep only the newest checkpoint waiting; one writer task per job."""
        run.pending_checkpoint = checkpoint
        if run.writer is None or run.writer.done():
            writes = write_checkpoints(self.queue, run, waits=self.finish_retry_s, give_up=lambda: self._stopping)
            run.writer = asyncio.get_running_loop().create_task(writes)
