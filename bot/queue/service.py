"""`JobQueue`: the queue the bot and the runners talk to. Admission, caps, inputs, cancel, positions, events.

The database is the queue (docs/architecture.md, "Where state lives"): this class keeps no job list of
its own, only the live progress of jobs running in this process and the subscribers to tell. A
`bot.queue.runner.JobRunner` claims jobs through it under a lease and reports back through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bot.queue.admission import SpeedBook, SpeedClass, admit, speed_key
from bot.queue.api import (
    JobEvents,
    JobNotFound,
    LocalRunner,
    NotAllowed,
    ProgressUpdate,
    QueueEntry,
    QueueRefused,
)
from bot.queue.disk import DISK_FULL_TEXT, DiskSpace, is_disk_full
from bot.queue.events import EventHub
from bot.queue.fleet import Fleet
from bot.queue.inputs import StagedInputs, input_files
from bot.queue.job_files import JobFiles
from bot.queue.progress_relay import ProgressRelay
from bot.queue.queue_config import QueueConfig as QueueConfig, attempts_text as attempts_text
from bot.queue.scheduler import FairShare, Planned, Work, plan
from bot.queue.shared_files import SharedFiles
from engine.jobs import JobSpec, JobStatus
from engine.prompts import count_tokens
from storage.records import Claim, JobRecord, LeaseState, Owner, PlanRow, QueuedCounts, SubmitLimits, WorkerRecord
from storage.store import AlreadySubmitted, JobStore, LimitReached, NoSuchJob

log = logging.getLogger(__name__)

MAX_JOB_ID = 2**63 - 1  # SQLite's largest integer: a forged custom id beyond it names no job


class JobQueue:
    """Submit, cancel and inspect jobs; fan events out to subscribers; lease jobs to runners.

    Implements `bot.queue.api.RenderQueue` and `bot.queue.api.RunnerQueue`. It uses `store` and never
    closes it: whoever opened the store closes it (`bot.services`).
    """

    def __init__(
        self,
        store: JobStore,
        data_dir: Path,
        config: QueueConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.config = config or QueueConfig()
        self.policy = FairShare(
            priority_weight=self.config.priority_weight,
            max_running_per_member=self.config.max_running_per_member,
            max_running_per_guild=self.config.max_running_per_guild,
        )
        self.clock = clock
        self.speeds = SpeedBook()
        self._speeds_at: float | None = None
        shared = self.config.relay_progress_s is not None  # other processes render: their devices count
        self.fleet = Fleet(store, self.config.devices, shared=shared, lease_s=self.config.lease_s)
        self._hub = EventHub()
        self._runners: list[LocalRunner] = []
        self._live = self._hub.live  # running jobs' latest progress, from this process and (relayed) others
        self._relay = (
            None
            if self.config.relay_progress_s is None
            else ProgressRelay(
                store.progress, self._hub, every_s=self.config.relay_progress_s, cancel=self._cancel_here
            )
        )
        self._relaying: asyncio.Task[None] | None = None
        self.files = JobFiles(self.data_dir, store.files)
        self.shared = SharedFiles(store.files, self.data_dir)  # a job's files through the database, if it shares them
        self.disk = DiskSpace(
            self.data_dir, self.config.min_free_disk_bytes, full_pause_s=self.config.disk_full_pause_s
        )
        self._housekeeping: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, store: JobStore, data_dir: Path, config: QueueConfig | None = None) -> JobQueue:
        """A queue on `store` with the measured speeds loaded (so the first ETA is already right), what crashed
        attempts left on disk removed, and the hourly housekeeping (expired results, leftovers) started."""
        queue = cls(store, data_dir, config)
        await queue.load_speeds()
        await queue.start_housekeeping()
        queue.start_relay()
        return queue

    def start_relay(self) -> None:
        """With `relay_progress_s`, share progress and cancels with the other processes on the database."""
        if self._relay is not None and self._relaying is None:
            self._relaying = asyncio.get_running_loop().create_task(self._relay.run(), name="progress-relay")

    async def start_housekeeping(self) -> None:
        """Tidy the data directory now, then every `housekeeping_every_s` until `aclose`."""
        await self.housekeep()
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep_every())

    async def aclose(self) -> None:
        """Stop the housekeeping and the relay, let pending event handlers finish (briefly). The store stays open."""
        for task in (self._housekeeping, self._relaying):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush_events(limit_s=5.0)

    async def housekeep(self, *, now: float | None = None) -> None:
        """Delete the results past the retention period and what ended or crashed jobs left (at `now`)."""
        now = self.clock() if now is None else now
        if self.config.keep_results_s is not None:
            await self.files.expire(self.store, keep_s=self.config.keep_results_s, now=now)
        await self.files.sweep(self.store, now=now)

    async def _housekeep_every(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_every_s)
            try:
                await self.housekeep()
            except Exception as e:  # a busy or restarting database, or a full disk: the next round tries again
                log.error("housekeeping the data directory failed; trying again in an hour", exc_info=e)

    async def flush_events(self, limit_s: float | None = None) -> None:
        """Wait until the subscribers' `on_started`/`on_finished` calls made so far have returned."""
        await self._hub.flush(limit_s)

    async def load_speeds(self) -> None:
        """Read the measured speeds the ETAs use (once; `open`, a submit and a plan call it)."""
        if self.fleet.stale(self._speeds_at):  # once, or again now and then when workers elsewhere measure
            self._speeds_at = self.clock()
            self.speeds = SpeedBook(await self.store.speeds())
            # the first prompt check loads CLIP's BPE vocabulary (~0.5 s): do it off the loop, once
            await asyncio.to_thread(count_tokens, "warm up")

    # -- RenderQueue ----------------------------------------------------------------------------

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

        `inputs` maps a spec field (`init_image`, `video`) to a local file; a spec path not listed
        there is copied too, so a job never depends on a file outside the data directory. A second
        submit for one `interaction_id` makes no job: it answers the first one's entry, `duplicate` set.
        `max_queued_per_member` is a server's own cap, used when it is below the queue's.
        """
        await self.load_speeds()
        admit(spec, self.config.admission, self.speeds.seconds_per_step(SpeedClass.of(spec), self.config.devices))
        staged = await self._stage(input_files(spec, inputs or {}))

        async def prepare(job_id: int) -> JobSpec:
            assert staged is not None
            moved = await staged.move_to(self.data_dir / "inputs" / str(job_id), spec)
            await self.shared.put_inputs(job_id, staged)
            return moved

        limits = SubmitLimits(
            max_queued_per_member=_lower(self.config.max_queued_per_member, max_queued_per_member),
            max_queued_per_guild=self.config.max_queued_per_guild,
        )
        try:
            job = await self.store.create(
                owner,
                spec,
                now=self.clock(),
                limits=limits,
                upload_limit=upload_limit,
                priority=priority,
                prepare=prepare if staged is not None else None,
                interaction_id=interaction_id,
            )
        except BaseException as e:
            if staged is not None:  # cancelled mid-COMMIT, the job may be stored: its moved files stay
                await staged.discard(moved=not isinstance(e, asyncio.CancelledError))
            if isinstance(e, LimitReached):
                raise QueueRefused(str(e)) from e
            if isinstance(e, AlreadySubmitted):
                log.warning("job %s: interaction %s submitted again; no second job", e.job.id, interaction_id)
                return dataclasses.replace(await self._entry(e.job), duplicate=True)
            if is_disk_full(e):
                log.error("a submit found the disk full: %s", e)
                raise QueueRefused(DISK_FULL_TEXT) from e
            raise
        log.info("job %s queued for user %s (%s %dx%d)", job.id, owner.user_id, spec.kind, spec.width, spec.height)
        for runner in self._runners:
            runner.wake()
        return await self._entry(job)

    async def _stage(self, files: Mapping[str, Path]) -> StagedInputs | None:
        """Copy a job's inputs into a staging folder of their own; refuse the job when the disk is (nearly) full."""
        if not self.disk.has_room():
            raise QueueRefused(DISK_FULL_TEXT)
        try:
            return await asyncio.to_thread(StagedInputs.copy, self.data_dir, files) if files else None
        except OSError as e:
            if is_disk_full(e):
                log.error("a submit found the disk full while copying its inputs: %s", e)
                raise QueueRefused(DISK_FULL_TEXT) from e
            raise

    async def _entry(self, job: JobRecord) -> QueueEntry:
        for planned in await self._plan():
            if planned.id == job.id:
                return QueueEntry(
                    job=job, position=planned.position, eta_start_s=planned.eta_start_s, eta_done_s=planned.eta_done_s
                )
        # a runner already finished it (a tiny job on an idle queue)
        return QueueEntry(job=await self.get(job.id), position=0, eta_start_s=0.0, eta_done_s=0.0)

    async def cancel(
        self, job_id: int, *, by_user: int, moderator: bool = False, guild_id: int | None = None
    ) -> JobRecord:
        """Remove a queued job at once or stop a running one (it keeps its partial result).

        With `guild_id`, only a job of that server can be cancelled (`moderator` is the canceller's right there).
        """
        job = await self.get(job_id, guild_id=guild_id)
        if job.owner.user_id != by_user and not moderator:
            raise NotAllowed(f"only the member who asked for job #{job_id}, or a moderator, can cancel it")
        if job.finished:
            raise QueueRefused(f"job #{job_id} has already finished ({job.state})")
        if job.state == JobStatus.QUEUED:
            cancelled = await self.store.cancel_queued(job_id, now=self.clock())
            if cancelled is not None:
                log.info("job %s cancelled while queued by user %s", job_id, by_user)
                await self.files.ended(cancelled)
                self.publish_finished(cancelled)
                return cancelled
        # running (or claimed a moment ago): ask its runner, here at once or elsewhere at its next heartbeat
        await self.store.request_cancel(job_id)
        for runner in self._runners:
            runner.cancel_running(job_id)
        log.info("job %s: cancel requested by user %s", job_id, by_user)
        return await self.get(job_id)

    async def get(self, job_id: int, *, guild_id: int | None = None) -> JobRecord:
        """The job; with `guild_id`, only if it belongs to that server: another server's job is JobNotFound,
        exactly as an id that does not exist (nothing tells that it exists)."""
        try:
            if not 0 < job_id <= MAX_JOB_ID:
                raise NoSuchJob(f"no job #{job_id}")
            job = await self.store.get(job_id)
            if guild_id is not None and job.owner.guild_id != guild_id:
                raise NoSuchJob(f"no job #{job_id}")
        except NoSuchJob as e:
            raise JobNotFound(f"there is no job #{job_id}") from e
        return self._with_live(job)

    async def queued_counts(self, user_id: int, guild_id: int | None) -> QueuedCounts:
        """How many jobs wait for the member and for the server (the caps' cheap check; submit checks again)."""
        return await self.store.queued_counts(user_id, guild_id)

    def _with_live(self, job: JobRecord) -> JobRecord:
        live = self._live.get(job.id)
        if live is None or job.state != JobStatus.RUNNING:
            return job
        return dataclasses.replace(job, step=live.step, frame=live.frame)

    async def snapshot(self, limit: int | None = None) -> list[QueueEntry]:
        """Running and queued jobs, in the order they will run, with positions and ETAs (the first `limit`)."""
        planned = (await self._plan())[:limit]
        records = {j.id: j for j in await self.store.many([p.id for p in planned])}
        return [
            QueueEntry(
                job=self._with_live(records[p.id]),
                position=p.position,
                eta_start_s=p.eta_start_s,
                eta_done_s=p.eta_done_s,
            )
            for p in planned
            if p.id in records  # finished between the two reads
        ]

    async def _plan(self) -> list[Planned]:
        """The simulated schedule, from light rows (no spec decoding): cheap enough for every submit."""
        await self.load_speeds()
        rows = await self.store.plan_rows()
        usage = await self.store.usage(now=self.clock())
        guild_usage = await self.store.guild_usage(now=self.clock())
        live = {job_id: (u.step, u.eta_done_s) for job_id, u in self._live.items()}
        devices = await self.fleet.devices()
        # a thousand queued jobs take milliseconds of pure Python: keep that off the event loop
        return await asyncio.to_thread(self._simulate, rows, usage, guild_usage, live, devices)

    def _simulate(
        self,
        rows: list[PlanRow],
        usage: dict[int, float],
        guild_usage: dict[int | None, float],
        live: dict[int, tuple[int, float | None]],
        devices: tuple[str, ...],
    ) -> list[Planned]:
        running: list[Work] = []
        queued: list[Work] = []
        for row in rows:
            if row.running:
                step, eta = live.get(row.id, (row.steps_done, None))
                if eta is None:
                    rate = self.speeds.seconds_per_step(SpeedClass.of(row), (row.device,) if row.device else devices)
                    eta = max(0, row.steps - step) * rate
                running.append(Work(row.id, row.user_id, row.priority, eta, row.guild_id))
            else:
                rate = self.speeds.seconds_per_step(SpeedClass.of(row), devices)
                seconds = max(0, row.steps - row.steps_done) * rate
                queued.append(Work(row.id, row.user_id, row.priority, seconds, row.guild_id))
        return plan(self.policy, running, queued, usage, workers=len(devices), guild_usage=guild_usage)

    async def recent(self, user_id: int, limit: int = 10, *, guild_id: int | None = None) -> list[JobRecord]:
        """A member's jobs, newest first (of server `guild_id` only, when given)."""
        return [self._with_live(j) for j in await self.store.recent(user_id, limit, guild_id=guild_id)]

    def subscribe(self, events: JobEvents) -> None:
        self._hub.subscribers.append(events)

    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        try:
            await self.store.set_status_message(job_id, message_id)
        except NoSuchJob as e:
            raise JobNotFound(f"there is no job #{job_id}") from e

    async def mark_delivered(self, job_id: int, message_id: int) -> None:
        try:
            await self.store.mark_delivered(job_id, message_id)
            job = await self.store.get(job_id)
        except NoSuchJob as e:
            raise JobNotFound(f"there is no job #{job_id}") from e
        await self.files.delivered(job)  # its fitted copy was only for the upload

    async def undelivered(self) -> list[JobRecord]:
        """Finished jobs whose result has not been posted yet (delivered again after a restart)."""
        return await self.store.undelivered()

    async def result_file(self, job: JobRecord) -> Path | None:
        return await self.shared.result_file(job)

    async def workers(self) -> list[WorkerRecord]:
        return await self.store.workers()

    # -- RunnerQueue ----------------------------------------------------------------------------

    def attach(self, runner: LocalRunner) -> None:
        """Register a runner in this process: submits wake it, cancels reach it at once."""
        self._runners.append(runner)

    def detach(self, runner: LocalRunner) -> None:
        if runner in self._runners:
            self._runners.remove(runner)

    async def reclaim_leases(self, owner_prefix: str) -> int:
        return await self.store.expire_leases(owner_prefix)

    async def claim(self, lease_owner: str, *, lease_s: float, device: str) -> Claim | None:
        """The next job for `device`, or None; none while the disk is short (the runner asks again later)."""
        if not self.disk.may_claim():
            return None
        while True:
            claim = await self.store.claim_next(
                lease_owner, lease_s=lease_s, now=self.clock(), choose=self.policy.choose, device=device
            )
            if claim is None or not self._poisoned(claim):
                return claim if claim is None else await self.shared.claimed(claim, self)
            await self._fail_poisoned(claim)  # and look for the next one: the queue moves on

    def _poisoned(self, claim: Claim) -> bool:
        limit = self.config.max_attempts
        return limit is not None and claim.job.interruptions >= limit

    async def _fail_poisoned(self, claim: Claim) -> None:
        job, error = claim.job, attempts_text(claim.job.interruptions)
        log.error(
            "job %s: interrupted %d times (process died or render stalled); failing it", job.id, job.interruptions
        )
        await self.finish(claim, JobStatus.FAILED, gpu_seconds=0.0, step=job.step, frame=job.frame, error=error)

    async def renew_lease(
        self, claim: Claim, *, lease_s: float, step: int, frame: int, heartbeat_at: float | None
    ) -> LeaseState | None:
        return await self.store.renew_lease(
            claim, lease_s=lease_s, now=self.clock(), step=step, frame=frame, heartbeat_at=heartbeat_at
        )

    async def save_checkpoint(self, claim: Claim, data: bytes, *, step: int, frame: int) -> bool:
        try:
            await self.shared.put_frames(claim.job.id)  # first: a checkpoint never names a frame not stored
        except Exception:  # a resume elsewhere then renders the frames again; the checkpoint is still worth saving
            log.exception("job %s: storing its frames in the database failed", claim.job.id)
        return await self.store.save_checkpoint(claim, data, step=step, frame=frame, now=self.clock())

    def disk_full(self) -> None:
        self.disk.note_full()

    async def release(
        self, claim: Claim, *, gpu_seconds: float, step: int, frame: int, interrupted: bool = False
    ) -> bool:
        return await self.store.release(
            claim, now=self.clock(), gpu_seconds=gpu_seconds, step=step, frame=frame, interrupted=interrupted
        )

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
        await self.shared.put_results(claim.job.id, result_paths)  # stored before a front-end reads the record
        record = await self.store.finish(
            claim,
            state,
            now=self.clock(),
            gpu_seconds=gpu_seconds,
            step=step,
            frame=frame,
            result_paths=result_paths,
            partial=partial,
            error=error,
            seed=seed,
        )
        if record is not None:
            self.shared.forget_frames(record.id)
            await self.files.ended(record)  # before the result poster starts on it
            self.publish_finished(record)
        return record

    async def record_speed(self, spec: JobSpec, device: str, seconds_per_step: float) -> None:
        """Fold a measured speed into the persisted moving average used for ETAs."""
        key = speed_key(SpeedClass.of(spec), device)
        self.speeds.update(key, await self.store.record_speed(key, seconds_per_step, now=self.clock()))

    def publish_started(self, job: JobRecord) -> None:
        self._hub.started(job)

    def publish_progress(self, update: ProgressUpdate) -> None:
        """Called on the loop by the runner; remembered for `get`/`snapshot`, passed on to subscribers (and, with
        the relay, to the other processes)."""
        self._hub.progress(update)
        if self._relay is not None:
            self._relay.note(update)

    def publish_finished(self, job: JobRecord) -> None:
        self._hub.finished(job)

    def forget_live(self, job_id: int) -> None:
        self._hub.forget(job_id)

    def _cancel_here(self, job_id: int) -> None:
        for runner in self._runners:
            runner.cancel_running(job_id)


def _lower(cap: int | None, other: int | None) -> int | None:
    """The stricter of two caps (None: no cap)."""
    if cap is None or other is None:
        return other if cap is None else cap
    return min(cap, other)
