"""`JobQueue`: the `RenderQueue` the bot talks to. Admission, caps, inputs, cancel, positions, events.

The database is the queue (style.md §B4): this class keeps no job list of its own, only the live
progress of jobs running in this process and the subscribers to tell. `bot.runner.JobRunner`
claims and runs jobs and reports back through the `publish_*` methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

from bot.admission import AdmissionLimits, SpeedBook, SpeedClass, admit, speed_key
from bot.ports import JobEvents, JobNotFound, NotAllowed, ProgressUpdate, QueueEntry, QueueRefused
from bot.scheduler import FairShare, Planned, Work, plan
from engine.jobs import JobSpec, JobStatus
from engine.prompts import count_tokens
from storage.jobs import JobStore, LimitReached, NoSuchJob
from storage.records import JobRecord, Owner, PlanRow, SubmitLimits
from storage.sqlite_jobs import SqliteJobStore

log = logging.getLogger(__name__)

PATH_FIELDS = ("init_image", "video")  # spec fields that are a local file path
INPUT_FIELDS = (*PATH_FIELDS, "image_prompts")  # `inputs` keys; an image prompt names its file in the prompt text


def escape_path(path: Path | str) -> str:
    """A path as it appears in a prompt (colons escaped for the prompt syntax)."""
    return str(path).replace(":", "\\:")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """The queue's knobs. Devices are the runner's (`ENGINE_DEVICE`); ETAs divide work among them."""

    devices: tuple[str, ...] = ("cpu",)
    usage_window_s: float = 24 * 3600.0
    priority_weight: float = 4.0
    max_running_per_member: int | None = 1
    max_queued_per_member: int | None = 10
    max_queued_per_guild: int | None = 100
    admission: AdmissionLimits = dataclasses.field(default_factory=AdmissionLimits)


class LocalRunner(Protocol):
    """What the queue needs from a runner in this process."""

    def wake(self) -> None: ...

    def cancel_running(self, job_id: int) -> bool: ...


class JobQueue:
    """Submit, cancel and inspect jobs; fan events out to subscribers. Implements `bot.ports.RenderQueue`."""

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
            priority_weight=self.config.priority_weight, max_running_per_member=self.config.max_running_per_member
        )
        self.clock = clock
        self.speeds = SpeedBook()
        self._speeds_loaded = False
        self._subscribers: list[JobEvents] = []
        self._runners: list[LocalRunner] = []
        self._live: dict[int, ProgressUpdate] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, data_dir: Path, config: QueueConfig | None = None, *, db_path: Path | None = None) -> JobQueue:
        """Open the store (default `data_dir/jobs.sqlite3`, migrated at start) and load measured speeds."""
        config = config or QueueConfig()
        store = await SqliteJobStore.open(
            db_path or Path(data_dir) / "jobs.sqlite3", usage_window_s=config.usage_window_s
        )
        queue = cls(store, data_dir, config)
        await queue._load_speeds()
        return queue

    async def aclose(self) -> None:
        """Let pending event handlers finish (briefly), then close the store."""
        await self.flush_events(limit_s=5.0)
        await self.store.close()

    async def flush_events(self, limit_s: float | None = None) -> None:
        """Wait until the subscribers' `on_started`/`on_finished` calls made so far have returned."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=limit_s)

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _load_speeds(self) -> None:
        if not self._speeds_loaded:
            self.speeds = SpeedBook(await self.store.speeds())
            # the first prompt check loads CLIP's BPE vocabulary (~0.5 s): do it off the loop, once
            await asyncio.to_thread(count_tokens, "warm up")
            self._speeds_loaded = True

    # -- RenderQueue ----------------------------------------------------------------------------

    async def submit(
        self,
        owner: Owner,
        spec: JobSpec,
        *,
        upload_limit: int | None = None,
        priority: bool = False,
        inputs: Mapping[str, Path] | None = None,
    ) -> QueueEntry:
        """Validate, copy input files into the data directory, persist; raise `QueueRefused` with the reason.

        `inputs` maps a spec field (`init_image`, `video`) to a local file; a spec path not listed
        there is copied too, so a job never depends on a file outside the data directory.
        """
        await self._load_speeds()
        admit(spec, self.config.admission, self.speeds.seconds_per_step(SpeedClass.of(spec), self.config.devices))
        files = self._input_files(spec, inputs or {})
        staging, names = await asyncio.to_thread(self._stage, files) if files else (None, {})
        prepare = None
        if staging is not None:

            async def prepare(job_id: int) -> JobSpec:
                final = self.data_dir / "inputs" / str(job_id)
                await asyncio.to_thread(os.replace, staging, final)
                changes: dict[str, str] = {n: str(final / names[n]) for n in PATH_FIELDS if n in names}
                if "image_prompts" in names:
                    old, new = escape_path(files["image_prompts"]), escape_path(final / names["image_prompts"])
                    changes["image_prompts"] = spec.image_prompts.replace(old, new)
                return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]

        limits = SubmitLimits(
            max_queued_per_member=self.config.max_queued_per_member,
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
                prepare=prepare,
            )
        except LimitReached as e:
            raise QueueRefused(str(e)) from e
        finally:
            if staging is not None and staging.exists():  # refused: nothing was moved into place
                await asyncio.to_thread(shutil.rmtree, staging, True)
        log.info("job %s queued for user %s (%s %dx%d)", job.id, owner.user_id, spec.kind, spec.width, spec.height)
        for runner in self._runners:
            runner.wake()
        for planned in await self._plan():
            if planned.id == job.id:
                return QueueEntry(
                    job=job, position=planned.position, eta_start_s=planned.eta_start_s, eta_done_s=planned.eta_done_s
                )
        # a runner already finished it (a tiny job on an idle queue)
        return QueueEntry(job=await self.get(job.id), position=0, eta_start_s=0.0, eta_done_s=0.0)

    def _input_files(self, spec: JobSpec, inputs: Mapping[str, Path]) -> dict[str, Path]:
        unknown = sorted(set(inputs) - set(INPUT_FIELDS))
        if unknown:
            raise QueueRefused(f"unknown input(s): {', '.join(unknown)}")
        files: dict[str, Path] = {}
        for name in INPUT_FIELDS:
            given = inputs.get(name) or (getattr(spec, name) if name in PATH_FIELDS else None)
            if given is None:
                continue
            path = Path(given)
            if not path.is_file():
                raise QueueRefused(f"the {name.replace('_', ' ').rstrip('s')} file is missing; attach it again")
            if name == "image_prompts" and escape_path(path) not in spec.image_prompts:
                raise QueueRefused("the image prompt does not name the attached image")
            files[name] = path
        return files

    def _stage(self, files: dict[str, Path]) -> tuple[Path, dict[str, str]]:
        """Copy the inputs into a staging folder; return it and each input's file name there."""
        staging = self.data_dir / "inputs" / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        names: dict[str, str] = {}
        for name, path in files.items():
            names[name] = f"{name}{path.suffix.lower()}"  # one name per field: two inputs never collide
            shutil.copyfile(path, staging / names[name])
        return staging, names

    async def cancel(self, job_id: int, *, by_user: int, moderator: bool = False) -> JobRecord:
        """Remove a queued job at once or stop a running one (it keeps its partial result)."""
        job = await self.get(job_id)
        if job.owner.user_id != by_user and not moderator:
            raise NotAllowed(f"only the member who asked for job #{job_id}, or a moderator, can cancel it")
        if job.finished:
            raise QueueRefused(f"job #{job_id} has already finished ({job.state})")
        if job.state == JobStatus.QUEUED:
            cancelled = await self.store.cancel_queued(job_id, now=self.clock())
            if cancelled is not None:
                log.info("job %s cancelled while queued by user %s", job_id, by_user)
                self.publish_finished(cancelled)
                return cancelled
        # running (or claimed a moment ago): ask its runner, here at once or elsewhere at its next heartbeat
        await self.store.request_cancel(job_id)
        for runner in self._runners:
            runner.cancel_running(job_id)
        log.info("job %s: cancel requested by user %s", job_id, by_user)
        return await self.get(job_id)

    async def get(self, job_id: int) -> JobRecord:
        try:
            job = await self.store.get(job_id)
        except NoSuchJob as e:
            raise JobNotFound(f"there is no job #{job_id}") from e
        return self._with_live(job)

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
        await self._load_speeds()
        rows = await self.store.plan_rows()
        usage = await self.store.usage(now=self.clock())
        live = {job_id: (u.step, u.eta_done_s) for job_id, u in self._live.items()}
        # a thousand queued jobs take milliseconds of pure Python: keep that off the event loop
        return await asyncio.to_thread(self._simulate, rows, usage, live)

    def _simulate(
        self, rows: list[PlanRow], usage: dict[int, float], live: dict[int, tuple[int, float | None]]
    ) -> list[Planned]:
        devices = self.config.devices
        running: list[Work] = []
        queued: list[Work] = []
        for row in rows:
            if row.running:
                step, eta = live.get(row.id, (row.steps_done, None))
                if eta is None:
                    rate = self.speeds.seconds_per_step(SpeedClass.of(row), (row.device,) if row.device else devices)
                    eta = max(0, row.steps - step) * rate
                running.append(Work(row.id, row.user_id, row.priority, eta))
            else:
                rate = self.speeds.seconds_per_step(SpeedClass.of(row), devices)
                queued.append(Work(row.id, row.user_id, row.priority, max(0, row.steps - row.steps_done) * rate))
        return plan(self.policy, running, queued, usage, workers=len(devices))

    async def recent(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        return [self._with_live(j) for j in await self.store.recent(user_id, limit)]

    def subscribe(self, events: JobEvents) -> None:
        self._subscribers.append(events)

    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        try:
            await self.store.set_status_message(job_id, message_id)
        except NoSuchJob as e:
            raise JobNotFound(f"there is no job #{job_id}") from e

    async def mark_delivered(self, job_id: int, message_id: int) -> None:
        try:
            await self.store.mark_delivered(job_id, message_id)
        except NoSuchJob as e:
            raise JobNotFound(f"there is no job #{job_id}") from e

    async def undelivered(self) -> list[JobRecord]:
        """Finished jobs whose result has not been posted yet (delivered again after a restart)."""
        return await self.store.undelivered()

    # -- the runner's side ----------------------------------------------------------------------

    def attach(self, runner: LocalRunner) -> None:
        """Register a runner in this process: submits wake it, cancels reach it at once."""
        self._runners.append(runner)

    def detach(self, runner: LocalRunner) -> None:
        if runner in self._runners:
            self._runners.remove(runner)

    async def record_speed(self, spec: JobSpec, device: str, seconds_per_step: float) -> None:
        """Fold a measured speed into the persisted moving average used for ETAs."""
        key = speed_key(SpeedClass.of(spec), device)
        self.speeds.update(key, await self.store.record_speed(key, seconds_per_step, now=self.clock()))

    def publish_started(self, job: JobRecord) -> None:
        for events in self._subscribers:
            self._spawn(events.on_started(job), job.id)

    def publish_progress(self, update: ProgressUpdate) -> None:
        """Called on the loop by the runner; remembered for `get`/`snapshot`, passed on to subscribers."""
        self._live[update.job_id] = update
        for events in self._subscribers:
            try:
                events.on_progress(update)
            except Exception:
                log.exception("job %s: a progress subscriber failed", update.job_id)

    def publish_finished(self, job: JobRecord) -> None:
        self._live.pop(job.id, None)
        for events in self._subscribers:
            self._spawn(events.on_finished(job), job.id)

    def forget_live(self, job_id: int) -> None:
        self._live.pop(job_id, None)

    def _spawn(self, coro: Coroutine[Any, Any, None], job_id: int) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("job %s: an event subscriber failed", job_id)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
