"""Status messages: one public message per job, edited in place with its state, progress and preview.

Edits go through the bot token and channel messages, never the interaction token, so a render that
takes an hour still reports. They are paced (docs/discord.md, "Edit pacing"): at most one edit per job
every `preview_seconds`, and one per channel every `channel_seconds` across its jobs. Each job has a
slot that holds only its latest state (latest wins, nothing queues), and a rate limit drops a frame,
never the job: the job's next edit waits Discord's `retry_after`. A status message or a final edit that
meets a rate limit is sent again once the wait is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Coroutine
from typing import Any

import discord
from discord.utils import MISSING

from bot import texts, views
from bot.delivery.discord_codes import NO_ACCESS, TOO_MANY_OLD_EDITS, UNKNOWN_MESSAGE
from bot.delivery.rate_limits import RATE_LIMITS, retry_after, wait_for
from bot.queue.api import ProgressUpdate, QueueEntry, RenderQueue
from engine.jobs import JobStatus
from storage.records import JobRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class _Slot:
    """The latest unsent state of one job's status message (latest wins; nothing queues)."""

    channel_id: int
    update: ProgressUpdate | None = None
    preview: bytes | None = None
    dirty: bool = True
    due: float = 0.0  # monotonic time of the next allowed edit


class StatusMessages:
    """Posts each job's status message and keeps it current, paced per job and per channel."""

    def __init__(
        self,
        client: discord.Client,
        queue: RenderQueue,
        *,
        preview_seconds: float,
        channel_seconds: float,
        rate_limit_max_wait_s: float,
    ) -> None:
        self._client, self._queue = client, queue
        self._preview_s, self._channel_s, self._max_wait_s = preview_seconds, channel_seconds, rate_limit_max_wait_s
        self._jobs: dict[int, JobRecord] = {}
        self._status_ids: dict[int, int] = {}
        self._posting: set[int] = set()  # jobs whose status message is being posted
        self._positions: dict[int, int] = {}  # the queue position each queued job's status message shows
        self._slots: dict[int, _Slot] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._pacers: dict[int, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._channel_locks: dict[int, asyncio.Lock] = {}
        self._channel_due: dict[int, float] = {}  # monotonic time of each channel's next allowed paced edit
        self._tasks: set[asyncio.Task[None]] = set()
        self.edits = 0  # status edits sent (for logs and tests)

    # ---- what the queue's events change ------------------------------------------------------------

    def on_progress(self, update: ProgressUpdate) -> None:
        """Keep the latest progress (and preview) for the job; its channel's pacer sends it when due."""
        job = self._jobs.get(update.job_id)
        if job is None or job.owner.channel_id is None:
            self._spawn(self._adopt(update.job_id))
            return
        slot = self._slots.setdefault(update.job_id, _Slot(channel_id=job.owner.channel_id))
        slot.update, slot.dirty = update, True
        if update.preview:
            slot.preview = update.preview
        self._kick(slot.channel_id)

    def started(self, job: JobRecord) -> None:
        """The job is running: its next edit is due at once."""
        log.info("job %s started (member %s, guild %s)", job.id, job.owner.user_id, job.owner.guild_id)
        self.remember(job)
        if job.owner.channel_id is not None:
            slot = self._slots.setdefault(job.id, _Slot(channel_id=job.owner.channel_id))
            slot.dirty, slot.due = True, 0.0
            self._kick(job.owner.channel_id)

    async def finished(self, job: JobRecord) -> None:
        """The job ended: no more progress edits; the message shows the final state and loses its buttons."""
        self._slots.pop(job.id, None)
        self.remember(job)
        await self._final_edit(job)

    # ---- posting ---------------------------------------------------------------------------------

    async def post_status(self, job: JobRecord, *, position: int | None, eta_done_s: float | None) -> None:
        """Post the job's public status message with its Cancel button and store its id (once: the command that
        made the job and the recovery at a start can both ask for a job made just then)."""
        self.remember(job)
        if job.owner.channel_id is None or job.id in self._posting or job.id in self._status_ids:
            return
        text = texts.status_text(job, position=position, eta_done_s=eta_done_s, now=time.time())
        self._posting.add(job.id)
        try:
            message = await self._channel(job).send(text, view=views.status_view(job.id))
        except (discord.HTTPException, discord.RateLimited) as e:
            if (asked := retry_after(e)) is not None:
                RATE_LIMITS.hit("status")
                log.info("job %s: status message rate-limited; posted in %.0f s", job.id, self._wait(asked))
                self._spawn(self._post_later(job.id, asked))
            else:
                log.warning("job %s: status message not posted (%s)", job.id, e)
            return
        finally:
            self._posting.discard(job.id)
        self._status_ids[job.id] = message.id
        if position is not None:
            self._positions[job.id] = position
        await self._queue.set_status_message(job.id, message.id)
        # A short job can finish before its status message exists; show the final state at once.
        with contextlib.suppress(LookupError):
            latest = await self._queue.get(job.id)
            if latest.finished:
                await self._final_edit(latest, message.id)  # by id: a result posted meanwhile forgot the job
                if latest.result_message_id is not None:
                    self.forget(job.id)  # as the result's delivery did, before this message existed

    async def _post_later(self, job_id: int, asked: float) -> None:
        """Post a rate-limited status message once the wait is over (not once the job's result is out)."""
        await asyncio.sleep(self._wait(asked))
        with contextlib.suppress(LookupError):
            job = await self._queue.get(job_id)
            if job.result_message_id is None and job.status_message_id is None:
                RATE_LIMITS.retried("status")
                await self.post_status(job, position=None, eta_done_s=None)  # the refresh puts the position back

    async def _final_edit(self, job: JobRecord, message_id: int | None = None) -> None:
        """The finished job's last edit (no buttons); sent again after a rate limit, even once the result is out."""
        message_id = message_id or self._status_ids.get(job.id)
        asked = await self._edit_status(job, texts.status_text(job, now=time.time()), final=True, message_id=message_id)
        if asked is not None and message_id is not None:
            self._spawn(self._final_later(job, message_id, asked))

    async def _final_later(self, job: JobRecord, message_id: int, asked: float | None) -> None:
        while asked is not None:
            await asyncio.sleep(self._wait(asked))
            with contextlib.suppress(LookupError):
                job = await self._queue.get(job.id)
            RATE_LIMITS.retried("status")
            text = texts.status_text(job, now=time.time())
            asked = await self._edit_status(job, text, final=True, message_id=message_id)

    async def recover(self, entry: QueueEntry) -> None:
        """After a start: a queued or running job gets its status message back (a new one if it had none)."""
        job = entry.job
        self.remember(job)
        if job.status_message_id is None:
            await self.post_status(job, position=entry.position, eta_done_s=entry.eta_done_s)
        elif job.state is JobStatus.RUNNING and job.owner.channel_id is not None:
            self._slots.setdefault(job.id, _Slot(channel_id=job.owner.channel_id))
            self._kick(job.owner.channel_id)

    async def refresh_queued(self, every_s: float = 45.0) -> None:
        """Keep queued jobs' positions current, editing a status message only when its position moved."""
        while True:
            await asyncio.sleep(every_s)
            try:
                entries = await self._queue.snapshot()
            except Exception:
                log.exception("queue snapshot for position refresh failed")
                continue
            for entry in entries:
                job = entry.job
                if job.state is not JobStatus.QUEUED or job.id in self._slots or job.owner.channel_id is None:
                    continue
                self.remember(job)
                if self._positions.get(job.id) == entry.position:
                    continue
                self._positions[job.id] = entry.position
                text = texts.status_text(job, position=entry.position, eta_done_s=entry.eta_done_s, now=time.time())
                await self._channel_turn(job.owner.channel_id)
                if await self._edit_status(job, text) is not None:
                    self._positions.pop(job.id, None)  # rate-limited: the next refresh edits it again

    # ---- what the result delivery asks ------------------------------------------------------------

    def remember(self, job: JobRecord) -> None:
        self._jobs[job.id] = job
        if job.status_message_id:
            self._status_ids.setdefault(job.id, job.status_message_id)

    def message_id(self, job_id: int) -> int | None:
        """The job's status message, if it has one."""
        return self._status_ids.get(job_id)

    def forget(self, job_id: int) -> None:
        """The job's result is posted: nothing about it will be edited again."""
        self._jobs.pop(job_id, None)
        self._status_ids.pop(job_id, None)
        self._positions.pop(job_id, None)
        self._locks.pop(job_id, None)

    # ---- pacing ----------------------------------------------------------------------------------

    async def _adopt(self, job_id: int) -> None:
        with contextlib.suppress(LookupError):
            job = await self._queue.get(job_id)
            if not job.finished:
                self.started(job)

    def _kick(self, channel_id: int) -> None:
        self._wake.setdefault(channel_id, asyncio.Event()).set()
        task = self._pacers.get(channel_id)
        if task is None or task.done():
            self._pacers[channel_id] = asyncio.create_task(self._pace(channel_id), name=f"pacer-{channel_id}")

    async def _pace(self, channel_id: int) -> None:
        """One channel's edit loop: the job whose edit is due first, then a pause (about one edit per second)."""
        wake = self._wake[channel_id]
        while True:
            ready = [(s.due, jid) for jid, s in self._slots.items() if s.channel_id == channel_id and s.dirty]
            if not ready:
                wake.clear()
                await wake.wait()
                continue
            due, job_id = min(ready)
            delay = due - time.monotonic()
            if delay > 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                continue
            await self._channel_turn(channel_id)
            await self._edit_progress(job_id)  # the slot's latest state, whatever came in while waiting

    async def _channel_turn(self, channel_id: int) -> None:
        """Wait until the channel may take another edit: progress and position edits share ~1 per `channel_s`."""
        async with self._channel_locks.setdefault(channel_id, asyncio.Lock()):
            wait = self._channel_due.get(channel_id, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._channel_due[channel_id] = time.monotonic() + self._channel_s

    async def _edit_progress(self, job_id: int) -> None:
        slot, job = self._slots.get(job_id), self._jobs.get(job_id)
        if slot is None or job is None:
            return
        update, preview = slot.update, slot.preview
        slot.dirty, slot.preview, slot.due = False, None, time.monotonic() + self._preview_s
        if update is not None:
            step, steps, frame, eta_done = update.step, update.steps, update.frame, update.eta_done_s
        else:
            step, steps, frame, eta_done = job.step, job.steps, job.frame, None
        running = dataclasses.replace(job, state=JobStatus.RUNNING)
        text = texts.status_text(running, step=step, steps=steps, frame=frame, eta_done_s=eta_done, now=time.time())
        files = [discord.File(io.BytesIO(preview), filename="preview.webp")] if preview else None
        await self._edit_status(job, text, files=files, slot=slot)

    # ---- editing ---------------------------------------------------------------------------------

    async def _edit_status(
        self,
        job: JobRecord,
        text: str,
        *,
        files: list[discord.File] | None = None,
        slot: _Slot | None = None,
        final: bool = False,
        message_id: int | None = None,
    ) -> float | None:
        """Edit the job's status message; the wait Discord asked for when the edit was rate-limited, else None."""
        message_id = message_id or self._status_ids.get(job.id)
        if message_id is None:
            return None
        lock = self._locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            if slot is not None and job.id not in self._slots:
                return None  # finished meanwhile; the final edit wins
            message = self._channel(job).get_partial_message(message_id)
            try:
                await message.edit(
                    content=text,
                    view=None if final else views.status_view(job.id),
                    attachments=files if files else MISSING,
                )
                self.edits += 1
            except discord.RateLimited as e:
                self._back_off(job.id, slot, e.retry_after)
                return e.retry_after
            except discord.HTTPException as e:
                if (asked := retry_after(e)) is not None:  # a 429 discord.py did not wait out itself
                    self._back_off(job.id, slot, asked)
                    return asked
                await self._edit_failed(job, e, final)
        return None

    def _wait(self, asked: float) -> float:
        return wait_for(asked, floor_s=self._preview_s, cap_s=self._max_wait_s)

    def _back_off(self, job_id: int, slot: _Slot | None, asked: float) -> None:
        # A rate limit drops this frame (the next one replaces it), never the job.
        RATE_LIMITS.hit("status")
        log.info("job %s: status edit rate-limited for %.0f s; frame dropped", job_id, asked)
        if slot is not None:
            slot.due = time.monotonic() + self._wait(asked)

    async def _edit_failed(self, job: JobRecord, e: discord.HTTPException, final: bool) -> None:
        if e.code in (UNKNOWN_MESSAGE, TOO_MANY_OLD_EDITS):
            # Deleted, or edited too often while old: a fresh status message if still running.
            log.info("job %s: status message gone (code %s)", job.id, e.code)
            self._status_ids.pop(job.id, None)
            if not final:  # posted outside this edit's lock: the new message's own final edit takes that lock
                self._spawn(self.post_status(job, position=None, eta_done_s=None))
            else:
                await self._queue.set_status_message(job.id, None)
        elif e.code in NO_ACCESS:
            # Repeating a 403/404 every few seconds counts towards Discord's invalid-request ban: stop editing.
            log.warning("job %s: status message no longer editable (code %s); edits stopped", job.id, e.code)
            self._status_ids.pop(job.id, None)
            await self._queue.set_status_message(job.id, None)
        else:
            log.warning("job %s: status edit failed (HTTP %s, code %s)", job.id, e.status, e.code)

    # ---- helpers ---------------------------------------------------------------------------------

    def _channel(self, job: JobRecord) -> discord.PartialMessageable:
        assert job.owner.channel_id is not None
        return self._client.get_partial_messageable(job.owner.channel_id, guild_id=job.owner.guild_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self, limit_s: float | None = None) -> None:
        """Wait until the job adoptions under way have ended; the pacers go on."""
        while self._tasks:
            done, _ = await asyncio.wait(set(self._tasks), timeout=limit_s)
            if not done:
                return

    async def close(self) -> None:
        """Stop the pacers."""
        tasks = [*self._pacers.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
