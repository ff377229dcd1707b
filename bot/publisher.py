"""The channel side of a job: its status message (paced progress edits) and its result message.

Everything goes through channel messages and the bot token, never the interaction token, so a render
that takes an hour still reports. Edits are paced per job and per channel, latest frame wins, and a
rate limit drops a frame, never the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import subprocess
import time
from pathlib import Path

import aiohttp
import discord

from bot import media, render, views
from bot.ports import ProgressUpdate, RenderQueue
from engine.errors import InvalidJob
from engine.jobs import JobStatus
from storage.records import JobRecord

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # a guild without boosts
HEADROOM = 0.95  # the multipart body carries the content and components too
UNKNOWN_MESSAGE, TOO_MANY_OLD_EDITS, UNKNOWN_CHANNEL, ENTITY_TOO_LARGE = 10008, 30046, 10003, 40005
MISSING_ACCESS, MISSING_PERMISSIONS, ARCHIVED_THREAD = 50001, 50013, 50083
UNDELIVERABLE = render.UNDELIVERABLE  # /job says so
RETRY_DELAYS = (3.0, 10.0, 20.0, 30.0)  # about a minute of retries while the bot runs, then the next start
_NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class _NotPosted(Exception):
    """Posting failed; the row stays undelivered and the next start posts it."""


class _TryAgain(_NotPosted):
    """Posting failed for a reason that may pass soon (Discord 5xx, a rate limit, the network): retry now."""


class _ArchivedThread(Exception):
    """The job's channel is an archived thread (50083)."""


@dataclasses.dataclass(slots=True)
class _Slot:
    """The latest unsent state of one job's status message (latest wins; nothing queues)."""

    channel_id: int
    update: ProgressUpdate | None = None
    preview: bytes | None = None
    dirty: bool = True
    due: float = 0.0  # monotonic time of the next allowed edit


def fitted_info(result: Path) -> dict[str, object] | None:
    """What was posted in place of `result` when it had to be re-encoded, or None."""
    marker = result.with_name(result.name + ".posted.json")
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class DiscordPublisher:
    """Implements `JobEvents`: status messages with paced previews, and results posted in the channel."""

    def __init__(
        self,
        client: discord.Client,
        queue: RenderQueue,
        *,
        preview_seconds: float = 4.0,
        channel_seconds: float = 1.0,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._client, self._queue = client, queue
        self._retry_delays = retry_delays
        self._preview_s, self._channel_s = preview_seconds, channel_seconds
        self._jobs: dict[int, JobRecord] = {}
        self._status_ids: dict[int, int] = {}
        self._positions: dict[int, int] = {}  # the queue position each queued job's status message shows
        self._slots: dict[int, _Slot] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._pacers: dict[int, asyncio.Task[None]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._channel_locks: dict[int, asyncio.Lock] = {}
        self._channel_due: dict[int, float] = {}  # monotonic time of each channel's next allowed paced edit
        self._delivering: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.edits = 0  # status edits sent (for logs and tests)

    # ---- JobEvents -------------------------------------------------------------------------------

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

    async def on_started(self, job: JobRecord) -> None:
        log.info("job %s started (member %s, guild %s)", job.id, job.owner.user_id, job.owner.guild_id)
        self._remember(job)
        if job.owner.channel_id is not None:
            slot = self._slots.setdefault(job.id, _Slot(channel_id=job.owner.channel_id))
            slot.dirty, slot.due = True, 0.0
            self._kick(job.owner.channel_id)

    async def on_finished(self, job: JobRecord) -> None:
        took = (job.finished_at or time.time()) - (job.started_at or job.created_at)
        log.info(
            "job %s %s after %.1f s (member %s, partial %s)", job.id, job.state, took, job.owner.user_id, job.partial
        )
        self._slots.pop(job.id, None)
        self._remember(job)
        await self._final_status(job)
        await self.deliver(job)

    # ---- status messages --------------------------------------------------------------------------

    async def post_status(self, job: JobRecord, *, position: int | None, eta_done_s: float | None) -> None:
        """Post the job's public status message with its Cancel button and store its id."""
        self._remember(job)
        if job.owner.channel_id is None:
            return
        text = render.status_text(job, position=position, eta_done_s=eta_done_s, now=time.time())
        try:
            message = await self._channel(job).send(text, view=views.status_view(job.id))
        except discord.HTTPException as e:
            log.warning("job %s: status message not posted (HTTP %s, code %s)", job.id, e.status, e.code)
            return
        self._status_ids[job.id] = message.id
        if position is not None:
            self._positions[job.id] = position
        await self._queue.set_status_message(job.id, message.id)
        # A short job can finish before its status message exists; show the final state at once.
        with contextlib.suppress(LookupError):
            latest = await self._queue.get(job.id)
            if latest.finished:
                await self._edit_status(latest, render.status_text(latest, now=time.time()), final=True)

    def _remember(self, job: JobRecord) -> None:
        self._jobs[job.id] = job
        if job.status_message_id:
            self._status_ids.setdefault(job.id, job.status_message_id)

    async def _adopt(self, job_id: int) -> None:
        with contextlib.suppress(LookupError):
            job = await self._queue.get(job_id)
            if not job.finished:
                self._remember(job)
                await self.on_started(job)

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
        text = render.status_text(running, step=step, steps=steps, frame=frame, eta_done_s=eta_done, now=time.time())
        files = [discord.File(io.BytesIO(preview), filename="preview.webp")] if preview else None
        await self._edit_status(job, text, files=files, slot=slot)

    async def _final_status(self, job: JobRecord) -> None:
        await self._edit_status(job, render.status_text(job, now=time.time()), final=True)

    async def _edit_status(
        self,
        job: JobRecord,
        text: str,
        *,
        files: list[discord.File] | None = None,
        slot: _Slot | None = None,
        final: bool = False,
    ) -> None:
        message_id = self._status_ids.get(job.id)
        if message_id is None:
            return
        lock = self._locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            if slot is not None and job.id not in self._slots:
                return  # finished meanwhile; the final edit wins
            kwargs: dict[str, object] = {"content": text, "view": None if final else views.status_view(job.id)}
            if files:
                kwargs["attachments"] = files
            try:
                await self._channel(job).get_partial_message(message_id).edit(**kwargs)  # type: ignore[arg-type]
                self.edits += 1
            except discord.RateLimited as e:
                self._back_off(job.id, slot, e.retry_after)
            except discord.HTTPException as e:
                await self._edit_failed(job, e, slot, final)

    def _back_off(self, job_id: int, slot: _Slot | None, retry_after: float | None) -> None:
        # A rate limit drops this frame (the next one replaces it), never the job.
        log.info("job %s: status edit rate-limited; frame dropped", job_id)
        if slot is not None:
            slot.due = time.monotonic() + max(self._preview_s, retry_after or 0.0)

    async def _edit_failed(self, job: JobRecord, e: discord.HTTPException, slot: _Slot | None, final: bool) -> None:
        if e.status == 429 and e.code != TOO_MANY_OLD_EDITS:
            retry = e.response.headers.get("Retry-After") if e.response is not None else None
            self._back_off(job.id, slot, float(retry) if retry else None)
        elif e.code in (UNKNOWN_MESSAGE, TOO_MANY_OLD_EDITS):
            # Deleted (10008) or edited too often while old (30046): a fresh status message if still running.
            log.info("job %s: status message gone (code %s)", job.id, e.code)
            self._status_ids.pop(job.id, None)
            if not final:
                await self.post_status(job, position=None, eta_done_s=None)
            else:
                await self._queue.set_status_message(job.id, None)
        elif e.code in (UNKNOWN_CHANNEL, MISSING_ACCESS, MISSING_PERMISSIONS):
            # Repeating a 403/404 every few seconds counts towards Discord's invalid-request ban: stop editing.
            log.warning("job %s: status message no longer editable (code %s); edits stopped", job.id, e.code)
            self._status_ids.pop(job.id, None)
            await self._queue.set_status_message(job.id, None)
        else:
            log.warning("job %s: status edit failed (HTTP %s, code %s)", job.id, e.status, e.code)

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
                self._remember(job)
                if self._positions.get(job.id) == entry.position:
                    continue
                self._positions[job.id] = entry.position
                text = render.status_text(job, position=entry.position, eta_done_s=entry.eta_done_s, now=time.time())
                await self._channel_turn(job.owner.channel_id)
                await self._edit_status(job, text)

    # ---- results ----------------------------------------------------------------------------------

    async def deliver(self, job: JobRecord) -> None:
        """Post a finished job's result (or failure) as a new channel message mentioning the member.

        Discord trouble (5xx, network errors, rate limits) is retried in the background with backoff
        (`retry_delays`); if it still fails the row stays "done, undelivered" and the next start posts it.
        """
        if job.result_message_id is not None or job.id in self._delivering or job.owner.channel_id is None:
            return
        self._delivering.add(job.id)
        settled = False
        try:
            settled = await self._try_deliver(job)
        finally:
            if settled or not self._retry_delays:
                self._delivering.discard(job.id)
        if not settled and self._retry_delays:
            self._spawn(self._retry_delivery(job))

    async def _try_deliver(self, job: JobRecord) -> bool:
        """One attempt: True when settled (posted, undeliverable, or left for the next start), False to retry soon."""
        try:
            message_id = await self._post_result(job)
        except _TryAgain as e:
            log.warning("job %s: result not posted (%s)", job.id, e)
            return False
        except _NotPosted as e:
            log.warning("job %s: result not posted (%s); posted again at the next start", job.id, e)
            return True
        await self._queue.mark_delivered(job.id, message_id)
        self._forget(job.id)
        return True

    async def _retry_delivery(self, job: JobRecord) -> None:
        try:
            for attempt, delay in enumerate(self._retry_delays, start=2):
                await asyncio.sleep(delay)
                with contextlib.suppress(LookupError):
                    job = await self._queue.get(job.id)
                if job.result_message_id is not None:  # delivered meanwhile (never post twice)
                    return
                log.info("job %s: posting the result, attempt %d", job.id, attempt)
                if await self._try_deliver(job):
                    return
            log.warning("job %s: result still not posted; it stays undelivered and is posted at the next start", job.id)
        finally:
            self._delivering.discard(job.id)

    async def _post_result(self, job: JobRecord) -> int:
        """The posted message's id, or UNDELIVERABLE; raises _TryAgain on Discord trouble."""
        channel_id = job.owner.channel_id
        assert channel_id is not None
        try:
            return await self._post_result_in(job, self._channel(job), note=None)
        except _ArchivedThread:
            parent = await self._parent_of(channel_id)
            if parent is None:
                log.error(
                    "job %s: thread %s is archived and has no parent to post in; result kept on disk",
                    job.id,
                    channel_id,
                )
                return UNDELIVERABLE
        log.info(
            "job %s: thread %s is archived; posting the result in its parent channel %s", job.id, channel_id, parent
        )
        note = f"(Posted here because the thread <#{channel_id}> is archived.)"
        channel = self._client.get_partial_messageable(parent, guild_id=job.owner.guild_id)
        try:
            return await self._post_result_in(job, channel, note=note)
        except _ArchivedThread:
            return UNDELIVERABLE

    async def _post_result_in(self, job: JobRecord, channel: discord.PartialMessageable, *, note: str | None) -> int:
        mention = discord.AllowedMentions(users=[discord.Object(job.owner.user_id)])
        nonce = f"r{job.id}"  # Discord drops a repeat after a crash between posting and marking

        def text(body: str) -> str:
            return render.truncate(f"{body}\n{note}", render.CONTENT_LIMIT) if note else body

        if job.state is JobStatus.FAILED or not job.result_paths:
            if job.state is JobStatus.CANCELLED:
                return self._status_ids.get(job.id) or UNDELIVERABLE  # nothing to post; the status message says it
            return await self._send(
                job, channel, content=text(render.failure_text(job)), allowed_mentions=mention, nonce=nonce
            )
        path = Path(job.result_paths[0])
        if not await asyncio.to_thread(path.exists):
            log.error("job %s: result file %s is missing", job.id, path)
            missing = dataclasses.replace(job, error="the result file is missing")
            return await self._send(
                job, channel, content=text(render.failure_text(missing)), allowed_mentions=mention, nonce=nonce
            )
        limit = int(self._upload_limit(job) * HEADROOM)
        for _attempt in range(3):  # as it is, then at most twice smaller after a 413
            try:
                upload, full_size, size = await asyncio.to_thread(self._fit, path, limit)
            except (InvalidJob, OSError, subprocess.SubprocessError) as e:
                log.error("job %s: could not fit the result under %s bytes: %s", job.id, limit, e)
                break
            fitted = upload != path
            file = discord.File(
                upload,
                filename=f"job-{job.id}{upload.suffix}",
                description=render.truncate(job.spec.text_prompts, 1000),
            )
            kwargs: dict[str, object] = {
                "content": text(render.result_text(job, fitted_from=full_size if fitted else None)),
                "file": file,
                "allowed_mentions": mention,
                "nonce": nonce,
            }
            view = views.result_view(job)
            if view is not None:
                kwargs["view"] = view
            try:
                message = await channel.send(**kwargs)  # type: ignore[arg-type]
            except discord.HTTPException as e:
                if e.status == 413 or e.code == ENTITY_TOO_LARGE:
                    log.warning("job %s: upload of %s bytes refused (413); shrinking", job.id, size)
                    limit = min(limit, size) // 2  # Discord's real limit is below what we were told
                    continue
                return self._send_failed(job, e)
            except _NETWORK_ERRORS as e:
                raise _TryAgain(f"network error: {e!r}") from e
            finally:
                file.close()
            log.info("job %s: result posted (%s bytes%s)", job.id, size, ", re-encoded" if fitted else "")
            return message.id
        body = render.result_text(job) + "\nThe file is too large to upload here; it is kept on the bot's disk."
        return await self._send(job, channel, content=text(body), allowed_mentions=mention, nonce=nonce)

    async def _send(self, job: JobRecord, channel: discord.PartialMessageable, **kwargs: object) -> int:
        try:
            message = await channel.send(**kwargs)  # type: ignore[arg-type]
        except discord.HTTPException as e:
            return self._send_failed(job, e)
        except _NETWORK_ERRORS as e:
            raise _TryAgain(f"network error: {e!r}") from e
        return message.id

    def _send_failed(self, job: JobRecord, e: discord.HTTPException) -> int:
        """UNDELIVERABLE for a channel the bot cannot use; otherwise raise _TryAgain or _ArchivedThread."""
        if e.code == ARCHIVED_THREAD:
            raise _ArchivedThread
        if e.code in (UNKNOWN_CHANNEL, MISSING_ACCESS, MISSING_PERMISSIONS):
            log.error(
                "job %s: cannot post in channel %s (code %s); undeliverable, result kept on disk",
                job.id,
                job.owner.channel_id,
                e.code,
            )
            return UNDELIVERABLE
        if isinstance(e, discord.RateLimited | discord.DiscordServerError) or e.status == 429 or e.status >= 500:
            raise _TryAgain(f"HTTP {e.status}")
        # Another 4xx is our bug (logged): retrying now would fail the same way; the next start tries again.
        log.error("job %s: result refused by Discord (HTTP %s, code %s): %s", job.id, e.status, e.code, e.text)
        raise _NotPosted(f"HTTP {e.status}, code {e.code}")

    async def _parent_of(self, channel_id: int) -> int | None:
        """The parent channel of a thread, or None (not a thread, or not visible)."""
        channel = self._client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self._client.fetch_channel(channel_id)
            except (discord.HTTPException, discord.InvalidData, *_NETWORK_ERRORS) as e:
                log.warning("channel %s could not be looked up: %r", channel_id, e)
                return None
        return channel.parent_id if isinstance(channel, discord.Thread) else None

    def _upload_limit(self, job: JobRecord) -> int:
        limit = job.upload_limit
        guild = self._client.get_guild(job.owner.guild_id) if job.owner.guild_id else None
        if guild is not None:
            limit = min(limit, guild.filesize_limit) if limit else guild.filesize_limit
        return limit or DEFAULT_UPLOAD_LIMIT

    @staticmethod
    def _fit(full: Path, limit: int) -> tuple[Path, int, int]:
        """(file to upload, full size, upload size); a re-encoded file leaves a marker for /job."""
        upload = media.fit(full, limit)
        full_size, size = full.stat().st_size, upload.stat().st_size
        if upload != full:
            marker = full.with_name(full.name + ".posted.json")
            marker.write_text(json.dumps({"posted": str(upload), "full_size": full_size, "posted_size": size}))
        return upload, full_size, size

    # ---- restart ----------------------------------------------------------------------------------

    async def recover(self) -> None:
        """After a start: reattach queued/running jobs to their status messages; post undelivered results."""
        for entry in await self._queue.snapshot():
            job = entry.job
            self._remember(job)
            if job.status_message_id is None:
                await self.post_status(job, position=entry.position, eta_done_s=entry.eta_done_s)
            elif job.state is JobStatus.RUNNING and job.owner.channel_id is not None:
                self._slots.setdefault(job.id, _Slot(channel_id=job.owner.channel_id))
                self._kick(job.owner.channel_id)
        pending = await self._queue.undelivered()
        log.info("recovery: %d undelivered result(s)", len(pending))
        for job in pending:
            self._remember(job)
            await self.deliver(job)

    # ---- helpers ----------------------------------------------------------------------------------

    def _channel(self, job: JobRecord) -> discord.PartialMessageable:
        assert job.owner.channel_id is not None
        return self._client.get_partial_messageable(job.owner.channel_id, guild_id=job.owner.guild_id)

    def _forget(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self._status_ids.pop(job_id, None)
        self._positions.pop(job_id, None)
        self._locks.pop(job_id, None)

    def _spawn(self, coro: object) -> None:
        task = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self, limit_s: float | None = None) -> None:
        """Wait until the result retries (and job adoptions) under way have ended; the pacers go on."""
        while self._tasks:
            done, _ = await asyncio.wait(set(self._tasks), timeout=limit_s)
            if not done:
                return

    async def close(self) -> None:
        """Stop the pacers."""
        for task in [*self._pacers.values(), *self._tasks]:
            task.cancel()
        for task in [*self._pacers.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
