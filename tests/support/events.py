"""`EventRecorder`: a queue subscriber (`bot.queue.api.JobEvents`) that keeps what it is told, for tests to wait on."""

from __future__ import annotations

import threading
import time

from bot.queue.api import ProgressUpdate
from storage.records import JobRecord


class EventRecorder:
    """Records started ids, finished records and progress updates (with when and on which thread they came)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: dict[int, JobRecord] = {}
        self.progress: list[ProgressUpdate] = []
        self.progress_times: list[float] = []  # monotonic
        self.progress_threads: set[str] = set()

    @property
    def previews(self) -> int:
        """How many updates carried a preview."""
        return sum(u.preview is not None for u in self.progress)

    def on_progress(self, update: ProgressUpdate) -> None:
        self.progress_threads.add(threading.current_thread().name)
        self.progress.append(update)
        self.progress_times.append(time.monotonic())

    async def on_started(self, job: JobRecord) -> None:
        self.started.append(job.id)

    async def on_finished(self, job: JobRecord) -> None:
        self.finished[job.id] = job
