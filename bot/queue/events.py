"""`EventHub`: the queue's subscribers and what it tells them, with the live progress of running jobs.

Progress comes from runners in this process and, through `bot.queue.progress_relay`, from workers in
others; `local` holds the jobs rendering here, whose progress is the relay's to publish elsewhere.
Subscribers' coroutines run as tasks of their own, so a slow one never holds the runner or the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from bot.queue.api import JobEvents, ProgressUpdate
from storage.records import JobRecord

log = logging.getLogger(__name__)


class EventHub:
    def __init__(self) -> None:
        self.subscribers: list[JobEvents] = []
        self.live: dict[int, ProgressUpdate] = {}  # running jobs' latest progress, from anywhere
        self.local: set[int] = set()  # jobs rendering in this process
        self._tasks: set[asyncio.Task[None]] = set()

    def started(self, job: JobRecord) -> None:
        self.local.add(job.id)
        for events in self.subscribers:
            self._spawn(events.on_started(job), job.id)

    def progress(self, update: ProgressUpdate) -> None:
        self.live[update.job_id] = update
        for events in self.subscribers:
            try:
                events.on_progress(update)
            except Exception:
                log.exception("job %s: a progress subscriber failed", update.job_id)

    def finished(self, job: JobRecord) -> None:
        self.forget(job.id)
        for events in self.subscribers:
            self._spawn(events.on_finished(job), job.id)

    def forget(self, job_id: int) -> None:
        self.live.pop(job_id, None)
        self.local.discard(job_id)

    async def flush(self, limit_s: float | None = None) -> None:
        """Wait until the subscribers' `on_started`/`on_finished` calls made so far have returned."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=limit_s)

    def _spawn(self, coro: Coroutine[Any, Any, None], job_id: int) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("job %s: an event subscriber failed", job_id)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
