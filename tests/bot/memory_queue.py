"""An in-memory `RenderQueue` with a fake renderer, for fast in-process bot tests (no torch, no SQLite).

It follows `bot.queue.JobQueue`'s observable behaviour (caps, cancel rights, events) closely enough to
exercise the Discord side; the end-to-end tests run the real queue and engine in a subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from bot.ports import JobEvents, JobNotFound, NotAllowed, ProgressUpdate, QueueEntry, QueueRefused
from engine.jobs import JobSpec, JobStatus
from storage.records import JobRecord, Owner


class MemoryQueue:
    """Jobs in a dict; one worker task 'renders' each job in `steps` ticks of `tick` seconds."""

    def __init__(
        self,
        out_dir: Path,
        *,
        steps: int = 6,
        tick: float = 0.05,
        max_queued_per_member: int = 3,
        result_size: tuple[int, int] | None = None,
    ) -> None:
        self.out_dir, self.steps, self.tick = out_dir, steps, tick
        self.max_queued = max_queued_per_member
        self.result_size = result_size
        self.jobs: dict[int, JobRecord] = {}
        self.submitted: list[tuple[Owner, JobSpec, int | None, dict[str, bytes]]] = []  # inputs read at submit
        self._events: list[JobEvents] = []
        self._wake = asyncio.Event()
        self._cancel: set[int] = set()
        self._worker: asyncio.Task[None] | None = None
        self.paused = False

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def submit(
        self,
        owner: Owner,
        spec: JobSpec,
        *,
        upload_limit: int | None = None,
        priority: bool = False,
        inputs: Mapping[str, Path] | None = None,
    ) -> QueueEntry:
        mine = [j for j in self.jobs.values() if j.owner.user_id == owner.user_id and not j.finished]
        if len(mine) >= self.max_queued:
            raise QueueRefused(f"you already have {len(mine)} jobs queued; the limit is {self.max_queued}")
        job_id = len(self.jobs) + 1
        copies = {name: await asyncio.to_thread(Path(path).read_bytes) for name, path in (inputs or {}).items()}
        self.submitted.append((owner, spec, upload_limit, copies))
        self.jobs[job_id] = JobRecord(
            id=job_id,
            kind=spec.kind,
            owner=owner,
            spec=spec,
            state=JobStatus.QUEUED,
            created_at=time.time(),
            steps=self.steps,
            upload_limit=upload_limit,
        )
        self._wake.set()
        return next(e for e in await self.snapshot() if e.job.id == job_id)

    async def cancel(self, job_id: int, *, by_user: int, moderator: bool = False) -> JobRecord:
        job = await self.get(job_id)
        if job.owner.user_id != by_user and not moderator:
            raise NotAllowed(f"only the member who asked for job #{job_id}, or a moderator, can cancel it")
        if job.finished:
            raise QueueRefused(f"job #{job_id} has already finished ({job.state})")
        if job.state is JobStatus.QUEUED:
            job = self._set(job_id, state=JobStatus.CANCELLED, finished_at=time.time())
            for e in self._events:
                asyncio.create_task(e.on_finished(job))  # noqa: RUF006
            return job
        self._cancel.add(job_id)
        return job

    async def get(self, job_id: int) -> JobRecord:
        if job_id not in self.jobs:
            raise JobNotFound(f"there is no job #{job_id}")
        return self.jobs[job_id]

    async def snapshot(self) -> list[QueueEntry]:
        active = sorted(
            (j for j in self.jobs.values() if not j.finished), key=lambda j: (j.state != JobStatus.RUNNING, j.id)
        )
        offset = 0 if any(j.state is JobStatus.RUNNING for j in active) else 1
        return [
            QueueEntry(job=j, position=i + offset, eta_start_s=i * 1.0, eta_done_s=(i + 1) * 1.0)
            for i, j in enumerate(active)
        ]

    async def recent(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        return sorted((j for j in self.jobs.values() if j.owner.user_id == user_id), key=lambda j: -j.id)[:limit]

    def subscribe(self, events: JobEvents) -> None:
        self._events.append(events)

    async def set_status_message(self, job_id: int, message_id: int | None) -> None:
        self._set(job_id, status_message_id=message_id)

    async def mark_delivered(self, job_id: int, message_id: int) -> None:
        self._set(job_id, result_message_id=message_id)

    async def undelivered(self) -> list[JobRecord]:
        return [j for j in self.jobs.values() if j.finished and j.result_message_id is None]

    def _set(self, job_id: int, **changes: object) -> JobRecord:
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], **changes)  # type: ignore[arg-type]
        return self.jobs[job_id]

    async def _work(self) -> None:
        while True:
            queued = [j for j in self.jobs.values() if j.state is JobStatus.QUEUED]
            if not queued or self.paused:
                self._wake.clear()
                await asyncio.wait([asyncio.create_task(self._wake.wait())], timeout=0.05)
                continue
            await self._run(min(queued, key=lambda j: j.id))

    async def _run(self, job: JobRecord) -> None:
        job = self._set(job.id, state=JobStatus.RUNNING, started_at=time.time(), seed=job.spec.seed or 7)
        for e in self._events:
            await e.on_started(job)
        size = self.result_size or (job.spec.width, job.spec.height)
        step = 0
        for step in range(1, self.steps + 1):
            if job.id in self._cancel:
                break
            await asyncio.sleep(self.tick)
            preview = io.BytesIO()
            Image.new("RGB", (32, 32), (step * 30 % 255, 80, 160)).save(preview, "WEBP")
            update = ProgressUpdate(
                job_id=job.id,
                step=step,
                steps=self.steps,
                iteration=step,
                total=self.steps,
                frame=1,
                frames=1,
                loss=1.0 / step,
                preview=preview.getvalue(),
                eta_done_s=1.0,
            )
            self._set(job.id, step=step)
            for e in self._events:
                e.on_progress(update)
        partial = job.id in self._cancel
        path = self.out_dir / f"{job.id}.png"
        noise = Image.effect_noise(size, 80).convert("RGB")
        await asyncio.to_thread(noise.save, path)
        state = JobStatus.CANCELLED if partial else JobStatus.DONE
        job = self._set(
            job.id, state=state, finished_at=time.time(), result_paths=(str(path),), partial=partial, step=step
        )
        for e in self._events:
            await e.on_finished(job)
