"""The Discord client: VQBot (setup_hook wiring, button dispatch) and VQTree (one error handler)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import views
from bot.errors import MissingPermissions, NotHere, UserError
from bot.ports import QueueError, RenderQueue
from bot.publisher import DiscordPublisher
from engine.errors import InvalidJob

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BotConfig:
    """Plain values the bot needs, taken from Settings by the composition root."""

    data_dir: Path
    guild_id: int | None = None
    models: tuple[str, ...] = ("vqgan_imagenet_f16_16384",)
    num_cuts: int = 32
    max_size: int = 512
    default_size: int = 256
    max_iterations: int = 500
    default_iterations: int = 200
    max_frames: int = 120
    default_frames: int = 30
    max_video_seconds: float = 30.0
    max_attachment_bytes: int = 25 * 1024 * 1024
    moderator_role: str | None = None
    allowed_channels: tuple[int, ...] = ()
    preview_seconds: float = 4.0
    channel_seconds: float = 1.0
    queue_refresh_seconds: float = 45.0  # queued jobs' positions, at most this often

    @property
    def downloads_dir(self) -> Path:
        """Attachments land here first; the queue copies what a job needs into its own inputs."""
        return self.data_dir / "downloads"


class VQTree(app_commands.CommandTree["VQBot"]):
    """Checks where commands may run, and turns refusals into ephemeral replies."""

    async def interaction_check(self, interaction: discord.Interaction[VQBot]) -> bool:
        if interaction.type is not discord.InteractionType.application_command:
            return True
        check_channel(interaction)
        return True

    async def on_error(self, interaction: discord.Interaction[VQBot], error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, getattr(error, "original", error))


def check_channel(interaction: discord.Interaction[VQBot]) -> None:
    """Refuse outside a server, outside the allowed channels, or where the bot cannot post results."""
    config = interaction.client.config
    if interaction.guild_id is None:
        raise NotHere("this bot works in server channels, not in direct messages")
    if config.allowed_channels and interaction.channel_id not in config.allowed_channels:
        allowed = ", ".join(f"<#{c}>" for c in config.allowed_channels)
        raise NotHere(f"commands are not allowed in this channel; use {allowed}")
    perms = interaction.app_permissions
    for name, label in (
        ("view_channel", "View Channel"),
        ("send_messages", "Send Messages"),
        ("attach_files", "Attach Files"),
    ):
        if not getattr(perms, name):
            raise MissingPermissions(f"I need the {label} permission in this channel")


async def reply_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Show a refusal to the member (ephemeral); log anything unexpected."""
    if isinstance(error, UserError | QueueError | InvalidJob):
        message = str(error)
        log.info("refused %s for member %s: %s", _name(interaction), interaction.user.id, message)
    else:
        log.error("%s failed for member %s", _name(interaction), interaction.user.id, exc_info=error)
        message = "Something went wrong; it has been logged."
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=message)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException as e:
        log.warning("could not tell member %s about an error (HTTP %s)", interaction.user.id, e.status)


def _name(interaction: discord.Interaction[Any]) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    return "button" if interaction.type is discord.InteractionType.component else "interaction"


ButtonAction = Callable[[discord.Interaction["VQBot"], int, str], Awaitable[None]]


class VQBot(commands.Bot):
    """The render bot: commands, job buttons, the publisher; the queue and runner are injected."""

    def __init__(
        self,
        config: BotConfig,
        queue: RenderQueue,
        *,
        on_setup: Callable[[VQBot], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=VQTree,
            help_command=None,
            **options,
        )
        self.config, self.queue = config, queue
        self.publisher = DiscordPublisher(
            self, queue, preview_seconds=config.preview_seconds, channel_seconds=config.channel_seconds
        )
        self.button_actions: dict[str, ButtonAction] = {}
        self._on_setup = on_setup
        self._recovery: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        from bot.cogs.generate import GenerateCog
        from bot.cogs.manage import ManageCog

        self.config.downloads_dir.mkdir(parents=True, exist_ok=True)
        self.queue.subscribe(self.publisher)
        await self.add_cog(GenerateCog(self))
        await self.add_cog(ManageCog(self))
        self.add_dynamic_items(views.JobButton)
        if self.config.guild_id:
            guild = discord.Object(self.config.guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), self.config.guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
        if self._on_setup is not None:
            await self._on_setup(self)
        self._recovery = asyncio.create_task(self._recover(), name="recovery")
        self._refresher = asyncio.create_task(self.publisher.refresh_queued(self.config.queue_refresh_seconds))

    async def _recover(self) -> None:
        try:
            await self.publisher.recover()
        except Exception:
            log.exception("recovery after start failed")

    async def on_ready(self) -> None:
        log.info("connected as %s (%s) to %d guild(s)", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def on_job_button(self, interaction: discord.Interaction[VQBot], job_id: int, action: str) -> None:
        """A job button was pressed: run its action, refusals shown to the clicker only."""
        handler = self.button_actions.get(action)
        try:
            check_channel(interaction)
            if handler is None:
                raise UserError("this button is no longer supported")
            await handler(interaction, job_id, action)
        except Exception as e:
            await reply_error(interaction, e)

    async def close(self) -> None:
        for task in (self._recovery, self._refresher):
            if task is not None:
                task.cancel()
        await self.publisher.close()
        await super().close()


def point_at(api_base: str | None, gateway_url: str | None) -> None:
    """Use a Discord-compatible API (self-hosted, or the tests' fake); None leaves discord.py's defaults."""
    import yarl

    if api_base:
        discord.http.Route.BASE = api_base
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
