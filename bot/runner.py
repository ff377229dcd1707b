"""`JobRunner`: claims jobs (fair share, lease + heartbeat) and renders each on its device's own thread.

Threading (style.md §B4): one single-thread executor per device; the renderer is built on that
thread at start and every render for the device runs there. The render thread talks to the event
loop only through `loop.call_soon_threadsafe`; the loop talks to it only through a
`threading.Event` (cancel) and plain flags. Every write a runner makes is fenced on its lease, so
a runner that lost its lease changes nothing. No torch here: the renderer comes from a factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.ports import ProgressUpdate, Renderer
from bot.queue import JobQueue
from engine.errors import Cancelled, EngineError, ModelLoadError, StaleCheckpoint
from engine.jobs import Artifact, JobKind, JobStatus, Progress
from storage.records import Claim

log = logging.getLogger(__name__)


def output_path(data_dir: Path, claim: Claim) -> Path:
    """Where an attempt writes its result: data_dir/outputs/<job id>/a<attempt>/job-<id>.<png|mp4>."""
    spec = claim.job.spec
    video = spec.kind in (JobKind.ANIMATION, JobKind.STYLE_TRANSFER) or (
        spec.kind == JobKind.UPSCALE and spec.video is not None
    )
    name = f"job-{claim.job.id}.{'mp4' if video else 'png'}"
    return Path(data_dir) / "outputs" / str(claim.job.id) / f"a{claim.attempt}" / name


def work_path(data_dir: Path, job_id: int) -> Path:
    """A job's folder for the engine's intermediate files: data_dir/work/<job id>.

    It outlives the job's attempts (a resumed video's frames are there) and is removed when the job
    ends (done, failed or cancelled); a drained or crashed job keeps it for its next attempt.
    """
    return Path(data_dir) / "work" / str(job_id)


@dataclasses.dataclass(slots=True)
class _Run:
    """One job on one device: what the render thread and the loop share (plain attributes, set by one side)."""

    claim: Claim
    device: str
    cancel: threading.Event
    started: float  # monotonic
    first_step: int  # where this attempt began (a resumed job starts past 0)
    step: int = 0
    frame: int = 1
    last_iteration_at: float | None = None  # wall clock, for the heartbeat: a hung device thread shows
    preview_due: float = 0.0
    checkpoint_step: int = 0
    checkpoint_at: float = 0.0
    draining: bool = False  # set by the loop: checkpoint at the next iteration and stop
    drain_checkpoint: tuple[bytes, int, int] | None = None  # set by the render thread
    pending_checkpoint: tuple[bytes, int, int] | None = None
    writer: asyncio.Task[None] | None = None
    lost: bool = False  # the lease went to someone else: discard everything


class JobRunner:
    """Runs queued jobs on `devices` (e.g. ("cuda:0", "cuda:1") or ("cpu",)); one thread per device."""

    def __init__(
        self,
        queue: JobQueue,
        make_renderer: Callable[[str], Renderer],
        devices: Sequence[str],
        data_dir: Path | None = None,
        *,
        worker_id: str | None = None,
        lease_s: float = 30.0,
        preview_interval_s: float = 4.0,
        checkpoint_every_steps: int = 50,
        checkpoint_every_s: float = 60.0,
        poll_s: float | None = None,
    ) -> None:
        if not devices:
            raise ValueError("at least one device")
        self.queue = queue
        self.store = queue.store
        self.devices = tuple(devices)
        self.data_dir = Path(data_dir) if data_dir is not None else queue.data_dir  # results: data_dir/outputs/
        # an explicit worker id is stable across restarts: its old leases are taken back at once
        self._reclaim_own = worker_id is not None
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_s = lease_s
        self.preview_interval_s = preview_interval_s
        self.checkpoint_every_steps = checkpoint_every_steps
        self.checkpoint_every_s = checkpoint_every_s
        self.poll_s = poll_s if poll_s is not None else lease_s / 3
        self._make_renderer = make_renderer
        self._pools = {d: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"render-{d}") for d in self.devices}
        self._renderers: dict[str, Renderer] = {}
        self._wake = {d: asyncio.Event() for d in self.devices}
        self._runs: dict[int, _Run] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._signal_task: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build each device's renderer on its own thread, then start claiming jobs."""
        loop = asyncio.get_running_loop()
        if self._reclaim_own:
            taken = await self.store.expire_leases(f"{self.worker_id}/")
            if taken:
                log.info("taking back %d job(s) this worker was running before a restart", taken)
        built = await asyncio.gather(
            *(loop.run_in_executor(self._pools[d], self._make_renderer, d) for d in self.devices)
        )
        self._renderers = dict(zip(self.devices, built, strict=True))
        self.queue.attach(self)
        self._tasks = [loop.create_task(self._device_loop(d), name=f"runner-{d}") for d in self.devices]
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

    def install_signal_handlers(self, grace_s: float = 10.0) -> None:
        """Drain on SIGTERM and SIGINT (await `stopped` to know when it is done)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: self._on_signal(s, grace_s))

    def _on_signal(self, sig: signal.Signals, grace_s: float) -> None:
        log.info("%s: draining", sig.name)
        self._signal_task = asyncio.get_running_loop().create_task(self.drain(grace_s))

    # -- what the queue calls -------------------------------------------------------------------

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
        while not self._stopping:
            wake.clear()
            try:
                claim = await self.store.claim_next(
                    owner, lease_s=self.lease_s, now=time.time(), choose=self.queue.policy.choose, device=device
                )
            except Exception:
                log.exception("claiming a job on %s failed; retrying", device)
                claim = None
            if claim is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll_s)
                continue
            await self._run(device, claim)

    async def _run(self, device: str, claim: Claim) -> None:
        job = claim.job
        loop = asyncio.get_running_loop()
        resumed_at = (job.checkpoint_step or 0) if claim.checkpoint is not None else 0
        run = _Run(
            claim=claim,
            device=device,
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
        output = output_path(self.data_dir, claim)
        log.info(
            "job %s started on %s (attempt %d%s)",
            job.id,
            device,
            claim.attempt,
            f", from step {resumed_at}" if resumed_at else "",
        )
        self.queue.publish_started(job)
        beat = loop.create_task(self._heartbeat(run))
        render = functools.partial(self._render, device, run, output, functools.partial(self._on_progress, loop, run))
        artifact: Artifact | None = None
        error: str | None = None
        try:
            await asyncio.to_thread(output.parent.mkdir, parents=True, exist_ok=True)
            artifact = await loop.run_in_executor(self._pools[device], render)
        except asyncio.CancelledError:  # cancelling this task does not stop the thread: the event does
            run.cancel.set()
            raise
        except Cancelled:  # stopped before it had anything to show (reading its source video)
            log.info("job %s: cancelled before a result", job.id)
        except EngineError as e:
            if isinstance(e, ModelLoadError):  # the operator's problem, not the member's
                log.exception("job %s: model load failed on %s", job.id, device)
                error = "internal error"
            else:  # InvalidJob, OutOfMemory: their messages say what to change
                log.info("job %s refused by the engine: %s", job.id, e)
                error = str(e)
        except Exception:
            log.exception("job %s failed on %s", job.id, device)
            error = "internal error"
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self._runs.pop(job.id, None)
        try:
            await self._settle(run, artifact, error, output)
        except Exception:
            log.exception("job %s: recording its end failed", job.id)
        finally:
            self.queue.forget_live(job.id)

    def _render(self, device: str, run: _Run, output: Path, on_progress: Callable[[Progress], None]) -> Artifact:
        """On the device thread: render the claim, from its checkpoint when it has one and its frames are intact."""
        job, checkpoint = run.claim.job, run.claim.checkpoint
        renderer = self._renderers[device]
        work = work_path(self.data_dir, job.id)
        try:
            return renderer.render(
                job.spec, output, on_progress=on_progress, cancel=run.cancel, resume=checkpoint, work_dir=work
            )
        except StaleCheckpoint:
            if checkpoint is None:
                raise
            log.warning("job %s: the checkpoint's frames are gone; rendering it again from the start", job.id)
            run.first_step = run.step = run.checkpoint_step = 0
            return renderer.render(job.spec, output, on_progress=on_progress, cancel=run.cancel, work_dir=work)

    async def _settle(self, run: _Run, artifact: Artifact | None, error: str | None, output: Path) -> None:
        claim, job = run.claim, run.claim.job
        if run.writer is not None:
            await run.writer
        gpu_seconds = time.monotonic() - run.started
        now = time.time()
        if run.lost:
            log.warning("job %s: lease lost to another runner; discarding this attempt", job.id)
            await asyncio.to_thread(shutil.rmtree, output.parent, True)
            return
        stopped_for_drain = run.draining and (artifact is None or artifact.partial) and error is None
        if stopped_for_drain:
            if run.drain_checkpoint is not None:
                data, step, frame = run.drain_checkpoint
                await self.store.save_checkpoint(claim, data, step=step, frame=frame, now=now)
            released = await self.store.release(claim, now=now, gpu_seconds=gpu_seconds, step=run.step, frame=run.frame)
            await asyncio.to_thread(shutil.rmtree, output.parent, True)
            log.info(
                "job %s: back in the queue at step %d (shutdown)%s",
                job.id,
                run.step,
                "" if released else ", lease lost",
            )
            return
        if artifact is not None:
            self._record_speed(run, artifact)
        if error is not None:
            record = await self.store.finish(
                claim, JobStatus.FAILED, now=now, gpu_seconds=gpu_seconds, step=run.step, frame=run.frame, error=error
            )
        elif artifact is None:  # cancelled before it had a result
            record = await self.store.finish(
                claim, JobStatus.CANCELLED, now=now, gpu_seconds=gpu_seconds, step=run.step, frame=run.frame
            )
        else:
            state = JobStatus.CANCELLED if artifact.partial and run.cancel.is_set() else JobStatus.DONE
            record = await self.store.finish(
                claim,
                state,
                now=now,
                gpu_seconds=gpu_seconds,
                step=artifact.steps_done,
                frame=artifact.frames_done,
                result_paths=artifact.paths,
                partial=artifact.partial,
                seed=artifact.seed,
            )
        if record is None:
            log.warning("job %s: lease lost before it could be recorded; discarding this attempt", job.id)
            return
        # the job has ended for good: its intermediate files go (a drained or crashed job keeps them)
        await asyncio.to_thread(shutil.rmtree, work_path(self.data_dir, job.id), True)
        log.info("job %s %s after %.1f s on %s", job.id, record.state, gpu_seconds, run.device)
        self.queue.publish_finished(record)

    def _record_speed(self, run: _Run, artifact: Artifact) -> None:
        steps = artifact.steps_done - run.first_step
        if steps >= 3:  # fewer is mostly start-up time
            seconds = (time.monotonic() - run.started) / steps
            task = asyncio.get_running_loop().create_task(
                self.queue.record_speed(run.claim.job.spec, run.device, seconds)
            )
            task.add_done_callback(_log_failure)

    async def _heartbeat(self, run: _Run) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                state = await self.store.renew_lease(
                    run.claim,
                    lease_s=self.lease_s,
                    now=time.time(),
                    step=run.step,
                    frame=run.frame,
                    heartbeat_at=run.last_iteration_at,
                )
            except Exception:  # a busy database: try again at the next beat, the lease has slack
                log.exception("job %s: heartbeat failed", run.claim.job.id)
                continue
            if state is None:
                run.lost = True
                run.cancel.set()
                return
            if state.cancel_requested:
                run.cancel.set()

    # -- the render thread's side ---------------------------------------------------------------

    def _on_progress(self, loop: asyncio.AbstractEventLoop, run: _Run, p: Progress) -> None:
        """Called on the device thread after each iteration. Never blocks on the loop."""
        now = time.monotonic()
        step = p.step or p.iteration
        run.step, run.frame, run.last_iteration_at = step, p.frame, time.time()
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
    def _to_loop(loop: asyncio.AbstractEventLoop, run: _Run, callback: Callable[..., object], *args: object) -> None:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening, stop rendering
            run.cancel.set()

    def _save_checkpoint(self, run: _Run, checkpoint: tuple[bytes, int, int]) -> None:
        """On the loop: keep only the newest checkpoint waiting; one writer task per job."""
        run.pending_checkpoint = checkpoint
        if run.writer is None or run.writer.done():
            run.writer = asyncio.get_running_loop().create_task(self._write_checkpoints(run))

    async def _write_checkpoints(self, run: _Run) -> None:
        while run.pending_checkpoint is not None:
            data, step, frame = run.pending_checkpoint
            run.pending_checkpoint = None
            try:
                ok = await self.store.save_checkpoint(run.claim, data, step=step, frame=frame, now=time.time())
            except Exception:
                log.exception("job %s: saving a checkpoint failed", run.claim.job.id)
                continue
            if not ok:
                run.lost = True
                run.cancel.set()
                return
            log.debug("job %s: checkpoint at step %d", run.claim.job.id, step)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recording a speed failed", exc_info=task.exception())
