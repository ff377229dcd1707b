"""Answering an interaction in time: work that is not done within a short budget is deferred first.

Discord voids an interaction that gets no first answer within 3 seconds (docs/discord.md, "The
3-second acknowledgement"). Most work (a submit, a look-up) takes milliseconds, but the database
can be held by another process for seconds: then the interaction is deferred while the work goes
on, and the answer edits the deferred message. The work itself is never started twice and never
abandoned because the ack failed.

Interaction answers go through discord.py's webhook adapter, which sleeps through a 429 itself (up to
five times, whatever the client's `max_ratelimit_timeout`) and never raises `RateLimited`. A 429 that
still reaches us (Cloudflare's, or the fifth in a row) makes the edit of a deferred answer wait the
`Retry-After` and try again while the interaction's token lives.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import discord

from bot.delivery.rate_limits import RATE_LIMITS, retry_after, wait_for

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_MARGIN_S = 5.0  # an edit this close to the token's end would arrive after it
DEFAULT_MAX_WAIT_S = 300.0  # when the client has no config saying otherwise


async def in_time(interaction: discord.Interaction[Any], work: Coroutine[Any, Any, T], budget_s: float) -> T:
    """Await `work`; when it has not finished after `budget_s`, defer the interaction (ephemeral) and go on.

    A failed defer does not stop the work: what it does (a job stored) happens at most once either way.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=budget_s)
        if not done and not interaction.response.is_done():
            try:
                await interaction.response.defer(ephemeral=True, thinking=True)
            except discord.HTTPException as e:
                log.warning("could not defer %s for member %s (HTTP %s)", interaction.id, interaction.user.id, e.status)
        return await task
    except asyncio.CancelledError:
        task.cancel()
        raise


async def answer(interaction: discord.Interaction[Any], content: str, **options: Any) -> None:
    """The ephemeral answer: the first response, or the edit of a deferred one. `files` and `view` may be given."""
    if interaction.response.is_done():
        files = options.pop("files", None)
        if files:
            options["attachments"] = files
        await edit_answer(interaction, content=content, **options)
    else:
        await interaction.response.send_message(content, ephemeral=True, **options)


async def edit_answer(interaction: discord.Interaction[Any], **fields: Any) -> None:
    """Edit the deferred answer, waiting out rate limits while the token lives (other errors are raised).

    The wait is Discord's `retry_after`, at most the bot's `rate_limit_max_wait_seconds` (the client's
    config). A rate limit that outlasts the token loses only this answer: it is logged, not raised.
    """
    config = getattr(interaction.client, "config", None)
    cap_s = float(getattr(config, "rate_limit_max_wait_seconds", DEFAULT_MAX_WAIT_S))
    while True:
        try:
            await interaction.edit_original_response(**fields)
            return
        except discord.HTTPException as e:
            asked = retry_after(e)
            if asked is None:
                raise
            RATE_LIMITS.hit("ack")
            wait = wait_for(asked, floor_s=1.0, cap_s=cap_s)
            left = (interaction.expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()
            if wait > left - TOKEN_MARGIN_S:
                log.warning("answer to %s rate-limited past its token's life; not sent", interaction.id)
                return
            log.info("answer to %s rate-limited; sent again in %.0f s", interaction.id, wait)
        await asyncio.sleep(wait)
        RATE_LIMITS.retried("ack")
