"""Answering an interaction in time: work that is not done within a short budget is deferred first.

Discord voids an interaction that gets no first answer within 3 seconds (docs/discord.md, "The
3-second acknowledgement"). Most work (a submit, a look-up) takes milliseconds, but the database
can be held by another process for seconds: then the interaction is deferred while the work goes
on, and the answer edits the deferred message. The work itself is never started twice and never
abandoned because the ack failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import discord

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        await interaction.edit_original_response(content=content, **options)
    else:
        await interaction.response.send_message(content, ephemeral=True, **options)
