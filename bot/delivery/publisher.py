"""`DiscordPublisher`: the queue's subscriber on the Discord side. Each event goes to the status messages,
a finished job to the result poster too; after a start it reattaches status messages and posts what was
left undelivered."""

from __future__ import annotations

import asyncio
import logging
import time

import discord

from bot.config import BotConfig
from bot.delivery.results import ResultPoster
from bot.delivery.status import StatusMessages
from bot.queue.api import ProgressUpdate, RenderQueue
from bot.queue.backoff import Backoff
from storage.records import JobRecord

log = logging.getLogger(__name__)


class DiscordPublisher:
    """Implements `bot.queue.api.JobEvents` with `status` (status messages) and `results` (result messages)."""

    def __init__(self, client: discord.Client, queue: RenderQueue, config: BotConfig) -> None:
        self._queue = queue
        self.status = StatusMessages(
            client,
            queue,
            preview_seconds=config.preview_seconds,
            channel_seconds=config.channel_seconds,
            rate_limit_max_wait_s=config.rate_limit_max_wait_seconds,
        )
        self.results = ResultPoster(
            client,
            queue,
            retry_delays=config.result_retry_delays,
            rate_limit_max_wait_s=config.rate_limit_max_wait_seconds,
            status_message_of=self.status.message_id,
            on_delivered=self.status.forget,
        )

    # ---- JobEvents -------------------------------------------------------------------------------

    def on_progress(self, update: ProgressUpdate) -> None:
        self.status.on_progress(update)

    async def on_started(self, job: JobRecord) -> None:
        self.status.started(job)

    async def on_finished(self, job: JobRecord) -> None:
        took = (job.finished_at or time.time()) - (job.started_at or job.created_at)
        log.info(
            "job %s %s after %.1f s (member %s, partial %s)", job.id, job.state, took, job.owner.user_id, job.partial
        )
        await self.status.finished(job)
        await self.results.deliver(job)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def recover(self) -> None:
        """After a start: reattach queued/running jobs to their status messages; post undelivered results.

        Each job is recovered on its own: one that fails (Discord, the database) does not stop the others.
        """
        for entry in await self._queue.snapshot():
            try:
                await self.status.recover(entry)
            except Exception:
                log.exception("recovery: job %s's status message could not be reattached", entry.job.id)
        pending = await self._queue.undelivered()
        log.info("recovery: %d undelivered result(s)", len(pending))
        for job in pending:
            self.status.remember(job)
            try:
                await self.results.deliver(job)
            except Exception:
                log.exception("recovery: job %s's result was not posted; it is posted at the next start", job.id)

    async def poll_results(self, every_s: float, *, local_worker: str | None = None) -> None:
        """Post, every `every_s`, the results that render workers in other processes finished (this process hears
        of its own runner's, `local_worker`, through the queue's events). A job is posted once: each goes through
        `on_finished` at most once here, and jobs this process already tried are left alone."""
        backoff = Backoff("polling for finished results", log, every_s=every_s)
        wait = every_s
        while True:
            await asyncio.sleep(wait)
            try:
                pending = await self._queue.undelivered()
                wait = backoff.succeeded()
            except Exception as e:  # the database is away: the pool connects again at the next poll
                wait = backoff.failed(e)
                continue
            for job in pending:
                if self.results.tried(job.id) or (local_worker is not None and job.worker_id == local_worker):
                    continue
                try:
                    await self.on_finished(job)
                except Exception:
                    log.exception("job %s's result was not posted; it is posted at the next start", job.id)

    async def settled(self, limit_s: float | None = None) -> None:
        """Wait until the result retries and job adoptions under way have ended; the pacers go on."""
        await self.results.settled(limit_s)
        await self.status.settled(limit_s)

    async def close(self) -> None:
        """Stop the pacers and the retries."""
        await self.status.close()
        await self.results.close()
