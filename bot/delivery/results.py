"""Results: a finished job's file (or its failure) posted as a new channel message that mentions the member.

Like status messages, results go through the bot token, never the interaction token. A result is
fitted under the job's upload limit (re-encoded when it is too large, smaller again after a 413),
retried in the background for about a minute when Discord or the network fails, and otherwise left
"done, undelivered" for the next start (docs/discord.md, "Errors"). A rate limit is no failure: the
post waits Discord's `retry_after` and tries again, for as long as the bot runs. A channel that is
gone or refuses the bot makes the result undeliverable (its file stays on disk); an archived
thread's result goes to the thread's parent channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import discord
from discord.utils import MISSING

from bot import texts, views
from bot.delivery.discord_codes import ARCHIVED_THREAD, ENTITY_TOO_LARGE, NO_ACCESS
from bot.delivery.fitting import fit_for_upload
from bot.delivery.rate_limits import RATE_LIMITS, retry_after, wait_for
from bot.queue.api import RenderQueue
from bot.queue.runs import write_until_done
from engine.errors import InvalidJob
from engine.jobs import JobStatus
from storage.records import UNDELIVERABLE, JobRecord
from storage.store import StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # a server without boosts (docs/discord.md, "Uploads")
HEADROOM = 0.95  # the multipart body carries the content and components too
_NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
MARK_RETRY_S = (1.0, 30.0)  # first and longest wait between tries to record a posted result


class _NotPosted(Exception):
    """Posting failed; the row stays undelivered and the next start posts it."""


class _TryAgain(_NotPosted):
    """Posting failed for a reason that may pass soon (Discord 5xx, a rate limit, the network): retry soon.

    `retry_after` is set for a rate limit: the wait Discord asked for; such a try does not count
    towards the retries' budget.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _DatabaseAway(_NotPosted):
    """The result's file could not be read from the database (restarting, a dropped connection): nothing posted."""


class _ArchivedThread(Exception):
    """The job's channel is an archived thread."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Post:
    """Where and how one result message goes: its channel, the member it mentions, the note it carries."""

    job: JobRecord
    channel: discord.PartialMessageable
    note: str | None

    def text(self, body: str) -> str:
        return texts.truncate(f"{body}\n{self.note}", texts.CONTENT_LIMIT) if self.note else body

    @property
    def mention(self) -> discord.AllowedMentions:
        return discord.AllowedMentions(users=[discord.Object(self.job.owner.user_id)])

    @property
    def nonce(self) -> str:
        """Discord drops a repeat after a crash between posting and marking (docs/discord.md, "Messages")."""
        return f"r{self.job.id}"


class ResultPoster:
    """Posts finished jobs' results, retrying Discord trouble; marks each posted (or undeliverable) in the queue.

    `status_message_of(job_id)` is the job's status message, which stands for a cancelled job's result;
    `on_delivered(job_id)` is told once a result is settled in the queue.
    """

    def __init__(
        self,
        client: discord.Client,
        queue: RenderQueue,
        *,
        retry_delays: tuple[float, ...],
        rate_limit_max_wait_s: float,
        status_message_of: Callable[[int], int | None],
        on_delivered: Callable[[int], None],
    ) -> None:
        self._client, self._queue = client, queue
        self._retry_delays, self._max_wait_s = retry_delays, rate_limit_max_wait_s
        self._status_message_of, self._on_delivered = status_message_of, on_delivered
        self._delivering: set[int] = set()
        self._tried: set[int] = set()  # every job `deliver` was called for: the results poll leaves these alone
        self._tasks: set[asyncio.Task[None]] = set()

    def tried(self, job_id: int) -> bool:
        """This process already posted the job's result, or tried to (a failure waits for the next start)."""
        return job_id in self._tried

    async def deliver(self, job: JobRecord) -> None:
        """Post a finished job's result (or failure) unless it was posted already or this process tried already.

        Discord trouble (5xx, network errors) is retried in the background with backoff (`retry_delays`);
        if it still fails the row stays "done, undelivered" and the next start posts it. A rate limit
        is waited out and retried without counting against those retries.
        """
        # once per job and process: a record read before another path posted it would post it twice
        if job.result_message_id is not None or job.id in self._tried or job.owner.channel_id is None:
            return
        self._delivering.add(job.id)
        self._tried.add(job.id)
        again: _TryAgain | None = None
        try:
            again = await self._try_deliver(job)
        finally:  # whatever happened, a job is only kept "being delivered" while a retry task owns it
            if again is None or not self._retry_delays:
                self._delivering.discard(job.id)
        if again is not None and self._retry_delays:
            self._spawn(self._retry_delivery(job, again))

    async def _try_deliver(self, job: JobRecord) -> _TryAgain | None:
        """One attempt: None when settled (posted, undeliverable, or left for the next start), else why to retry."""
        try:
            message_id = await self._post_result(job)
        except _TryAgain as e:
            if e.retry_after is not None:
                RATE_LIMITS.hit("result")
            log.warning("job %s: result not posted (%s)", job.id, e)
            return e
        except _DatabaseAway as e:  # nothing was posted: the results poll tries it again (the pool reconnects)
            log.warning("job %s: result not posted yet (%s); trying again at the next poll", job.id, e)
            self._tried.discard(job.id)
            return None
        except _NotPosted as e:
            log.warning("job %s: result not posted (%s); posted again at the next start", job.id, e)
            return None
        await self._mark_delivered(job, message_id)
        self._on_delivered(job.id)
        return None

    async def _mark_delivered(self, job: JobRecord, message_id: int) -> None:
        """Record the post; while the database is away, try again (growing waits): a post not recorded would be
        posted a second time at the next start."""

        def failed(e: Exception, wait: float) -> None:
            if not isinstance(e, StoreUnavailable):
                raise e
            log.warning("job %s: result posted but not recorded yet (%s); trying again in %.0f s", job.id, e, wait)

        await write_until_done(
            lambda: self._queue.mark_delivered(job.id, message_id), waits=MARK_RETRY_S, on_failure=failed
        )

    def _next_wait(self, again: _TryAgain, failures: int) -> float | None:
        """How long before the next try; None once the retries for failures other than rate limits are spent."""
        if again.retry_after is not None:
            return wait_for(again.retry_after, floor_s=self._retry_delays[0], cap_s=self._max_wait_s)
        return self._retry_delays[failures - 1] if failures <= len(self._retry_delays) else None

    async def _retry_delivery(self, job: JobRecord, again: _TryAgain) -> None:
        failures, attempt = (0 if again.retry_after is not None else 1), 1
        try:
            while (delay := self._next_wait(again, failures)) is not None:
                await asyncio.sleep(delay)
                with contextlib.suppress(LookupError):
                    job = await self._queue.get(job.id)
                if job.result_message_id is not None:  # delivered meanwhile (never post twice)
                    return
                attempt += 1
                if again.retry_after is not None:
                    RATE_LIMITS.retried("result")
                log.info("job %s: posting the result, attempt %d", job.id, attempt)
                outcome = await self._try_deliver(job)
                if outcome is None:
                    return
                again, failures = outcome, failures + (outcome.retry_after is None)
            log.warning("job %s: result still not posted; it stays undelivered and is posted at the next start", job.id)
        except Exception:
            log.exception(
                "job %s: result delivery failed; it stays undelivered and is posted at the next start", job.id
            )
        finally:
            self._delivering.discard(job.id)

    async def _post_result(self, job: JobRecord) -> int:
        """The posted message's id, or UNDELIVERABLE; raises _TryAgain on Discord trouble."""
        channel_id = job.owner.channel_id
        assert channel_id is not None
        channel = self._client.get_partial_messageable(channel_id, guild_id=job.owner.guild_id)
        try:
            return await self._post_in(_Post(job, channel, note=None))
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
            return await self._post_in(_Post(job, channel, note=note))
        except _ArchivedThread:
            return UNDELIVERABLE

    async def _post_in(self, post: _Post) -> int:
        job = post.job
        if job.state is JobStatus.FAILED or not job.result_paths:
            if job.state is JobStatus.CANCELLED:
                return self._status_message_of(job.id) or UNDELIVERABLE  # nothing to post; the status message says it
            return await self._send(post, texts.failure_text(job))
        try:
            path = await self._queue.result_file(job) or Path(job.result_paths[0])
        except StoreUnavailable as e:  # its file is in the database, which is away for a moment
            raise _DatabaseAway(str(e)) from e
        if not await asyncio.to_thread(path.exists):
            log.error("job %s: result file %s is missing", job.id, path)
            return await self._send(
                post, texts.failure_text(dataclasses.replace(job, error="the result file is missing"))
            )
        posted = await self._upload(post, path)
        if posted is not None:
            return posted
        return await self._send(
            post, texts.result_text(job) + "\nThe file is too large to upload here; it is kept on the bot's disk."
        )

    async def _upload(self, post: _Post, path: Path) -> int | None:
        """Post the result file fitted under the upload limit (smaller again after a 413); None when it cannot fit."""
        job = post.job
        limit = int(self._upload_limit(job) * HEADROOM)
        for _attempt in range(3):  # as it is, then at most twice smaller after a 413
            try:
                upload, full_size, size = await asyncio.to_thread(fit_for_upload, path, limit)
            except (InvalidJob, OSError, subprocess.SubprocessError) as e:
                log.error("job %s: could not fit the result under %s bytes: %s", job.id, limit, e)
                return None
            fitted = upload != path
            file = discord.File(
                upload, filename=f"job-{job.id}{upload.suffix}", description=texts.truncate(job.spec.text_prompts, 1000)
            )
            view = views.result_view(job)
            try:
                message = await post.channel.send(
                    post.text(texts.result_text(job, fitted_from=full_size if fitted else None)),
                    file=file,
                    allowed_mentions=post.mention,
                    nonce=post.nonce,
                    view=view if view is not None else MISSING,
                )
            except discord.HTTPException as e:
                if e.status == 413 or e.code == ENTITY_TOO_LARGE:
                    log.warning("job %s: upload of %s bytes refused (413); shrinking", job.id, size)
                    limit = min(limit, size) // 2  # Discord's real limit is below what we were told
                    continue
                return self._send_failed(job, e)
            except discord.RateLimited as e:
                raise _TryAgain(f"rate limited for {e.retry_after:.0f} s", e.retry_after) from e
            except _NETWORK_ERRORS as e:
                raise _TryAgain(f"network error: {e!r}") from e
            finally:
                file.close()
            log.info("job %s: result posted (%s bytes%s)", job.id, size, ", re-encoded" if fitted else "")
            return message.id
        return None

    async def _send(self, post: _Post, body: str) -> int:
        """Post a text-only result message (a failure, or a file that cannot be uploaded)."""
        try:
            message = await post.channel.send(post.text(body), allowed_mentions=post.mention, nonce=post.nonce)
        except discord.HTTPException as e:
            return self._send_failed(post.job, e)
        except discord.RateLimited as e:
            raise _TryAgain(f"rate limited for {e.retry_after:.0f} s", e.retry_after) from e
        except _NETWORK_ERRORS as e:
            raise _TryAgain(f"network error: {e!r}") from e
        return message.id

    def _send_failed(self, job: JobRecord, e: discord.HTTPException) -> int:
        """UNDELIVERABLE for a channel the bot cannot use; otherwise raise _TryAgain, _NotPosted or _ArchivedThread."""
        if e.code == ARCHIVED_THREAD:
            raise _ArchivedThread
        if e.code in NO_ACCESS:
            log.error(
                "job %s: cannot post in channel %s (code %s); undeliverable, result kept on disk",
                job.id,
                job.owner.channel_id,
                e.code,
            )
            return UNDELIVERABLE
        if (asked := retry_after(e)) is not None:  # a 429 discord.py did not wait out itself
            raise _TryAgain(f"HTTP 429, retry after {asked:.0f} s", asked)
        if isinstance(e, discord.DiscordServerError) or e.status >= 500:
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
            except discord.RateLimited as e:  # not knowing the parent yet is no reason to give up the result
                raise _TryAgain(f"rate limited for {e.retry_after:.0f} s", e.retry_after) from e
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self, limit_s: float | None = None) -> None:
        """Wait until the retries under way have ended."""
        while self._tasks:
            done, _ = await asyncio.wait(set(self._tasks), timeout=limit_s)
            if not done:
                return

    async def close(self) -> None:
        """Stop the retries (the rows stay undelivered: the next start posts them)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
