"""/queue, /cancel, /job and the Cancel button. Replies are ephemeral; the channel shows state changes."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import MISSING

from bot import texts, views
from bot.config import BotConfig
from bot.delivery.fitting import fitted_info
from bot.errors import UserError
from bot.queue.api import JobNotFound, RenderQueue
from storage.records import JobRecord

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]
JobId = app_commands.Range[int, 1, 2**53]
QUEUE_LINES = 15


class CommandSync(Protocol):
    """What /sync needs of the bot (`bot.app.VQBot`)."""

    async def is_owner(self, user: discord.abc.User, /) -> bool: ...

    async def sync_commands(self, *, force: bool = False) -> str: ...


def is_moderator(interaction: Interaction, moderator_role: str | None) -> bool:
    """Manage Messages in the channel, or the configured moderator role (by id or by name)."""
    if interaction.permissions.manage_messages:
        return True
    member = interaction.user
    if not moderator_role or not isinstance(member, discord.Member):
        return False
    return any(str(r.id) == moderator_role or r.name == moderator_role for r in member.roles)


class ManageCog(commands.Cog):
    """Looking at and cancelling jobs in `queue`, and syncing the commands through `commands_sync`."""

    def __init__(self, queue: RenderQueue, config: BotConfig, commands_sync: CommandSync) -> None:
        self.render_queue, self.config, self.commands_sync = queue, config, commands_sync

    def button_actions(self) -> dict[str, views.ButtonAction]:
        """The job buttons this cog answers."""
        return {"cancel": self.cancel_button}

    @app_commands.command(name="queue", description="Show the render queue and where your jobs are")
    @app_commands.guild_only()
    async def queue(self, interaction: Interaction) -> None:
        entries = await self.render_queue.snapshot()
        now, me = time.time(), interaction.user.id
        if not entries:
            await interaction.response.send_message("The queue is empty; a new job starts at once.", ephemeral=True)
            return
        lines = [f"**{len(entries)} job(s)** in the queue:"]
        shown = entries[:QUEUE_LINES] + [e for e in entries[QUEUE_LINES:] if e.job.owner.user_id == me]
        for e in shown:
            where = "▶ running" if e.position == 0 else f"{e.position}."
            mine = " **(yours)**" if e.job.owner.user_id == me else ""
            prompt = texts.quote_prompt(e.job.spec.text_prompts, 60)
            lines.append(
                f"{where} #{e.job.id} {texts.KIND_NAMES[e.job.kind]} “{prompt}”{mine} · done {texts.eta(e.eta_done_s, now)}"
            )
        if not any(e.job.owner.user_id == me for e in entries):
            lines.append("You have no jobs in the queue.")
        await interaction.response.send_message(texts.truncate("\n".join(lines), texts.CONTENT_LIMIT), ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel your job (your latest by default)")
    @app_commands.describe(job="Job id; moderators may cancel anyone's")
    @app_commands.guild_only()
    async def cancel(self, interaction: Interaction, job: JobId | None = None) -> None:
        if job is None:
            mine = [j for j in await self.render_queue.recent(interaction.user.id, 20) if not j.finished]
            if not mine:
                raise UserError("you have no queued or running job")
            job = max(mine, key=lambda j: j.id).id
        await self._cancel(interaction, job)

    async def cancel_button(self, interaction: Interaction, job_id: int, action: str) -> None:
        await self._cancel(interaction, job_id)

    async def _cancel(self, interaction: Interaction, job_id: int) -> None:
        moderator = is_moderator(interaction, self.config.moderator_role)
        try:
            record = await self.render_queue.cancel(job_id, by_user=interaction.user.id, moderator=moderator)
        except JobNotFound:
            raise UserError(f"there is no job #{job_id}") from None
        log.info("job %s cancel requested by member %s (moderator %s)", job_id, interaction.user.id, moderator)
        done = "Cancelled" if record.finished else "Stopping"
        await interaction.response.send_message(f"{done} job **#{job_id}**.", ephemeral=True)

    @app_commands.command(name="sync", description="Owner only: sync the bot's slash commands with Discord now")
    @app_commands.default_permissions(administrator=True)
    @app_commands.guild_only()
    async def sync(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the owner look-up and the sync take time
        if not await self.commands_sync.is_owner(interaction.user):
            raise UserError("only the bot's owner (the Discord application's owner) can sync commands")
        log.info("command sync requested by owner %s", interaction.user.id)
        done = await self.commands_sync.sync_commands(force=True)
        await interaction.edit_original_response(content=done)

    @app_commands.command(name="job", description="Show a job's state, parameters and result")
    @app_commands.describe(id="The job id")
    @app_commands.guild_only()
    async def job(self, interaction: Interaction, id: JobId) -> None:
        try:
            record = await self.render_queue.get(id)
        except JobNotFound:
            raise UserError(f"there is no job #{id}") from None
        entry = next((e for e in await self.render_queue.snapshot() if e.job.id == id), None)
        full_size = None
        files: list[discord.File] = []
        if record.result_paths:
            result = Path(record.result_paths[0])
            posted = result
            if (fitted := fitted_info(result)) is not None:
                posted, full_size = fitted
            if posted.exists() and posted.stat().st_size <= interaction.filesize_limit * 0.95:
                files.append(discord.File(posted, filename=f"job-{record.id}{posted.suffix}"))
        text = texts.job_text(record, entry=entry, now=time.time(), full_size=full_size, link=self._link(record))
        view = self._view(record)
        try:
            await interaction.response.send_message(
                text, ephemeral=True, files=files, view=view if view is not None else MISSING
            )
        finally:
            for file in files:  # InteractionResponse.send_message leaves its files open
                file.close()

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
