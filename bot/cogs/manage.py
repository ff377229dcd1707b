"""/queue, /cancel, /job and the Cancel button. Replies are ephemeral; the channel shows state changes.

Every look-up is scoped to the server the interaction comes from: another server's job answers exactly
as an id that does not exist, so a moderator's rights, a /job's files and a button's action never reach
outside their own server. Answers that the database holds up are deferred first (`bot.acks.in_time`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import MISSING

from bot import acks, texts, views
from bot.config import BotConfig
from bot.delivery.fitting import fitted_info
from bot.errors import UserError
from bot.queue.api import JobNotFound, QueueEntry, RenderQueue
from bot.queue.worker_beat import alive, known
from bot.server_settings import ServerSettings
from storage.records import JobRecord, WorkerRecord

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]
JobId = app_commands.Range[int, 1, 2**53]
T = TypeVar("T")


class CommandSync(Protocol):
    """What /sync needs of the bot (`bot.app.VQBot`)."""

    async def is_owner(self, user: discord.abc.User, /) -> bool: ...

    async def sync_commands(self, *, force: bool = False) -> str: ...


def is_moderator(interaction: Interaction, moderator_role: str | None) -> bool:
    """Manage Messages or Administrator in the channel, or the server's moderator role (by id or by name).

    These are the member's rights in the server the interaction comes from, so they count only for that
    server's jobs: every look-up is scoped to it.
    """
    perms = interaction.permissions
    if perms.manage_messages or perms.administrator:
        return True
    member = interaction.user
    if not moderator_role or not isinstance(member, discord.Member):
        return False
    return any(str(r.id) == moderator_role or r.name == moderator_role for r in member.roles)


class ManageCog(commands.Cog):
    """Looking at and cancelling jobs in `queue`, and syncing the commands through `commands_sync`."""

    def __init__(
        self, queue: RenderQueue, config: BotConfig, settings: ServerSettings, commands_sync: CommandSync
    ) -> None:
        self.render_queue, self.config, self.settings, self.commands_sync = queue, config, settings, commands_sync

    async def _in_time(self, interaction: Interaction, work: Coroutine[Any, Any, T]) -> T:
        return await acks.in_time(interaction, work, self.config.ack_budget_seconds)

    async def _job(self, interaction: Interaction, job_id: int) -> JobRecord:
        """The job, if it is this server's; otherwise the same refusal as for an id that does not exist."""
        try:
            return await self.render_queue.get(job_id, guild_id=interaction.guild_id)
        except JobNotFound:
            raise UserError(f"there is no job #{job_id}") from None

    def button_actions(self) -> dict[str, views.ButtonAction]:
        """The job buttons this cog answers."""
        return {"cancel": self.cancel_button}

    @app_commands.command(name="queue", description="Show the render queue and where your jobs are")
    @app_commands.guild_only()
    async def queue(self, interaction: Interaction) -> None:
        entries, workers = await self._in_time(interaction, self._queue_and_workers())
        now = time.time()
        workers = known(workers, now=now)
        up = (len(alive(workers, now=now, lease_s=self.config.lease_s)), len(workers)) if len(workers) > 1 else None
        text = texts.queue_text(entries, guild_id=interaction.guild_id, member=interaction.user.id, now=now, workers=up)
        await acks.answer(interaction, text)

    async def _queue_and_workers(self) -> tuple[list[QueueEntry], list[WorkerRecord]]:
        return await self.render_queue.snapshot(), await self.render_queue.workers()

    @app_commands.command(name="cancel", description="Cancel your job (your latest by default)")
    @app_commands.describe(job="Job id; moderators may cancel anyone's")
    @app_commands.guild_only()
    async def cancel(self, interaction: Interaction, job: JobId | None = None) -> None:
        record = await self._in_time(interaction, self._cancel(interaction, job))
        done = "Cancelled" if record.finished else "Stopping"
        await acks.answer(interaction, f"{done} job **#{record.id}**.")

    async def cancel_button(self, interaction: Interaction, job_id: int, action: str) -> None:
        record = await self._in_time(interaction, self._cancel(interaction, job_id))
        done = "Cancelled" if record.finished else "Stopping"
        await acks.answer(interaction, f"{done} job **#{record.id}**.")

    async def _cancel(self, interaction: Interaction, job_id: int | None) -> JobRecord:
        """Cancel `job_id` (None: the member's latest unfinished job in this server), if it is this server's."""
        if job_id is None:
            recent = await self.render_queue.recent(interaction.user.id, 20, guild_id=interaction.guild_id)
            mine = [j for j in recent if not j.finished]
            if not mine:
                raise UserError("you have no queued or running job in this server")
            job_id = max(mine, key=lambda j: j.id).id
        moderator = is_moderator(interaction, self.settings.limits(interaction.guild_id).moderator_role)
        try:
            record = await self.render_queue.cancel(
                job_id, by_user=interaction.user.id, moderator=moderator, guild_id=interaction.guild_id
            )
        except JobNotFound:
            raise UserError(f"there is no job #{job_id}") from None
        log.info(
            "job %s cancel requested by member %s in guild %s (moderator %s)",
            job_id,
            interaction.user.id,
            interaction.guild_id,
            moderator,
        )
        return record

    @app_commands.command(name="sync", description="Owner only: sync the bot's slash commands with Discord now")
    @app_commands.default_permissions(administrator=True)
    @app_commands.guild_only()
    async def sync(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the owner look-up and the sync take time
        if not await self.commands_sync.is_owner(interaction.user):
            raise UserError("only the bot's owner (the Discord application's owner) can sync commands")
        log.info("command sync requested by owner %s", interaction.user.id)
        done = await self.commands_sync.sync_commands(force=True)
        await acks.answer(interaction, done)

    @app_commands.command(name="job", description="Show a job's state, parameters and result")
    @app_commands.describe(id="The job id")
    @app_commands.guild_only()
    async def job(self, interaction: Interaction, id: JobId) -> None:
        record, entry, posted, full_size = await self._in_time(interaction, self._look_up(interaction, id))
        files: list[discord.File] = []
        if posted is not None:
            files.append(discord.File(posted, filename=f"job-{record.id}{posted.suffix}"))
        text = texts.job_text(record, entry=entry, now=time.time(), full_size=full_size, link=self._link(record))
        view = self._view(record)
        try:
            await acks.answer(interaction, text, files=files, view=view if view is not None else MISSING)
        finally:
            for file in files:  # discord.py leaves an answer's files open
                file.close()

    async def _look_up(
        self, interaction: Interaction, job_id: int
    ) -> tuple[JobRecord, QueueEntry | None, Path | None, int | None]:
        """/job's job (this server's only), its queue entry, the file to attach (None: none fits) and, for a
        re-encoded result, the full file's size."""
        record = await self._job(interaction, job_id)
        entry = next((e for e in await self.render_queue.snapshot() if e.job.id == job_id), None)
        if not record.result_paths or record.results_expired_at is not None:
            return record, entry, None, None
        return (
            record,
            entry,
            *await asyncio.to_thread(_result_file, await self._result_path(record), interaction.filesize_limit),
        )

    async def _result_path(self, record: JobRecord) -> Path:
        """The result on this host's disk (fetched from the database when another host rendered it)."""
        return await self.render_queue.result_file(record) or Path(record.result_paths[0])

    @staticmethod
    def _view(record: JobRecord) -> discord.ui.View | None:
        if not record.finished:
            return views.status_view(record.id)
        return views.result_view(record) if record.result_paths else None

    @staticmethod
    def _link(record: JobRecord) -> str | None:
        message = record.result_message_id or record.status_message_id
        if not message or not record.owner.guild_id or not record.owner.channel_id:
            return None
        return f"https://discord.com/channels/{record.owner.guild_id}/{record.owner.channel_id}/{message}"


def _result_file(result: Path, upload_limit: int) -> tuple[Path | None, int | None]:
    """The file /job attaches for `result` (None when none fits `upload_limit`), and the full size of a re-encoded one."""
    posted, full_size = result, None
    if (fitted := fitted_info(result)) is not None:
        posted, full_size = fitted
    if posted.exists() and posted.stat().st_size <= upload_limit * 0.95:
        return posted, full_size
    return None, full_size
