"""/queue, /cancel, /job and the Cancel button. Replies are ephemeral; the channel shows state changes."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render, views
from bot.errors import UserError
from bot.ports import JobNotFound
from bot.publisher import fitted_info
from storage.records import JobRecord

if TYPE_CHECKING:
    from bot.app import VQBot

log = logging.getLogger(__name__)

JobId = app_commands.Range[int, 1, 2**53]
QUEUE_LINES = 15


def is_moderator(interaction: discord.Interaction[VQBot]) -> bool:
    """Manage Messages in the channel, or the configured moderator role (by id or by name)."""
    if interaction.permissions.manage_messages:
        return True
    role = interaction.client.config.moderator_role
    member = interaction.user
    if not role or not isinstance(member, discord.Member):
        return False
    return any(str(r.id) == role or r.name == role for r in member.roles)


class ManageCog(commands.Cog):
    """Looking at and cancelling jobs."""

    def __init__(self, bot: VQBot) -> None:
        self.bot = bot
        bot.button_actions["cancel"] = self.cancel_button

    @app_commands.command(name="queue", description="Show the render queue and where your jobs are")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[VQBot]) -> None:
        entries = await self.bot.queue.snapshot()
        now, me = time.time(), interaction.user.id
        if not entries:
            await interaction.response.send_message("The queue is empty; a new job starts at once.", ephemeral=True)
            return
        lines = [f"**{len(entries)} job(s)** in the queue:"]
        shown = entries[:QUEUE_LINES] + [e for e in entries[QUEUE_LINES:] if e.job.owner.user_id == me]
        for e in shown:
            where = "▶ running" if e.position == 0 else f"{e.position}."
            mine = " **(yours)**" if e.job.owner.user_id == me else ""
            prompt = render.quote_prompt(e.job.spec.text_prompts, 60)
            lines.append(
                f"{where} #{e.job.id} {render.KIND_NAMES[e.job.kind]} “{prompt}”{mine} · done {render.eta(e.eta_done_s, now)}"
            )
        if not any(e.job.owner.user_id == me for e in entries):
            lines.append("You have no jobs in the queue.")
        await interaction.response.send_message(render.truncate("\n".join(lines), render.CONTENT_LIMIT), ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel your job (your latest by default)")
    @app_commands.describe(job="Job id; moderators may cancel anyone's")
    @app_commands.guild_only()
    async def cancel(self, interaction: discord.Interaction[VQBot], job: JobId | None = None) -> None:
        if job is None:
            mine = [j for j in await self.bot.queue.recent(interaction.user.id, 20) if not j.finished]
            if not mine:
                raise UserError("you have no queued or running job")
            job = max(mine, key=lambda j: j.id).id
        await self._cancel(interaction, job)

    async def cancel_button(self, interaction: discord.Interaction[VQBot], job_id: int, action: str) -> None:
        await self._cancel(interaction, job_id)

    async def _cancel(self, interaction: discord.Interaction[VQBot], job_id: int) -> None:
        moderator = is_moderator(interaction)
        try:
            record = await self.bot.queue.cancel(job_id, by_user=interaction.user.id, moderator=moderator)
        except JobNotFound:
            raise UserError(f"there is no job #{job_id}") from None
        log.info("job %s cancel requested by member %s (moderator %s)", job_id, interaction.user.id, moderator)
        done = "Cancelled" if record.finished else "Stopping"
        await interaction.response.send_message(f"{done} job **#{job_id}**.", ephemeral=True)

    @app_commands.command(name="sync", description="Owner only: sync the bot's slash commands with Discord now")
    @app_commands.default_permissions(administrator=True)
    @app_commands.guild_only()
    async def sync(self, interaction: discord.Interaction[VQBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the owner look-up and the sync take time
        if not await self.bot.is_owner(interaction.user):
            raise UserError("only the bot's owner (the Discord application's owner) can sync commands")
        log.info("command sync requested by owner %s", interaction.user.id)
        done = await self.bot.sync_commands(force=True)
        await interaction.edit_original_response(content=done)

    @app_commands.command(name="job", description="Show a job's state, parameters and result")
    @app_commands.describe(id="The job id")
    @app_commands.guild_only()
    async def job(self, interaction: discord.Interaction[VQBot], id: JobId) -> None:
        try:
            record = await self.bot.queue.get(id)
        except JobNotFound:
            raise UserError(f"there is no job #{id}") from None
        entry = next((e for e in await self.bot.queue.snapshot() if e.job.id == id), None)
        full_size = None
        files: list[discord.File] = []
        if record.result_paths:
            result = Path(record.result_paths[0])
            info = fitted_info(result)
            posted = Path(str(info["posted"])) if info else result
            if info:
                full_size = int(str(info["full_size"]))
            if posted.exists() and posted.stat().st_size <= interaction.filesize_limit * 0.95:
                files.append(discord.File(posted, filename=f"job-{record.id}{posted.suffix}"))
        text = render.job_text(record, entry=entry, now=time.time(), full_size=full_size, link=self._link(record))
        view = self._view(record)
        kwargs: dict[str, object] = {"ephemeral": True, "files": files}
        if view is not None:
            kwargs["view"] = view
        try:
            await interaction.response.send_message(text, **kwargs)  # type: ignore[arg-type]
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
