"""The Discord client: VQBot (setup_hook wiring, button dispatch, command sync) and VQTree (one error handler)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import acks, texts, views
from bot.attachments import FileChecks, MemberFileCheck, check_member_file
from bot.cogs.generate import GenerateCog
from bot.cogs.manage import ManageCog
from bot.cogs.settings import SettingsCog
from bot.config import BotConfig
from bot.delivery.publisher import DiscordPublisher
from bot.delivery.rate_limits import MAX_RATELIMIT_TIMEOUT_S
from bot.errors import MissingPermissions, NotHere, UserError
from bot.queue.api import QueueError, RenderQueue
from bot.server_settings import ServerLimits, ServerSettings
from engine.errors import InvalidJob
from storage.store import GuildSettingsStore, StoreUnavailable

log = logging.getLogger(__name__)


class VQTree(app_commands.CommandTree["VQBot"]):
    """Checks where commands may run, and turns refusals into ephemeral replies."""

    async def interaction_check(self, interaction: discord.Interaction[VQBot]) -> bool:
        command = interaction.command
        # /settings works in every channel: an admin who narrowed the channels can always widen them again
        if interaction.type is discord.InteractionType.application_command and not (
            command is not None and command.qualified_name.startswith("settings")
        ):
            check_channel(interaction, interaction.client.server_settings.limits(interaction.guild_id))
        return True

    async def on_error(self, interaction: discord.Interaction[VQBot], error: app_commands.AppCommandError) -> None:
        await reply_error(interaction, getattr(error, "original", error))


def check_channel(interaction: discord.Interaction[Any], limits: ServerLimits) -> None:
    """Refuse outside a server, outside the server's allowed channels, or where the bot cannot post results."""
    if interaction.guild_id is None:
        raise NotHere("this bot works in server channels, not in direct messages")
    if limits.channels and interaction.channel_id not in limits.channels:
        allowed = ", ".join(f"<#{c}>" for c in limits.channels)
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
        message = texts.without_paths(str(error))  # an engine message may name a file: never its folder
        log.info("refused %s for member %s: %s", _name(interaction), interaction.user.id, message)
    elif isinstance(error, StoreUnavailable):  # a restart or a network fault: the pool reconnects by itself
        log.warning("%s for member %s: %s", _name(interaction), interaction.user.id, error)
        message = texts.DATABASE_AWAY
    else:
        log.error("%s failed for member %s", _name(interaction), interaction.user.id, exc_info=error)
        message = "Something went wrong; it has been logged."
    try:
        await acks.answer(interaction, message)  # a deferred answer's edit waits out a rate limit
    except discord.HTTPException as e:
        log.warning("could not tell member %s about an error (HTTP %s)", interaction.user.id, e.status)


def _name(interaction: discord.Interaction[Any]) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    return "button" if interaction.type is discord.InteractionType.component else "interaction"


class VQBot(commands.Bot):
    """The render bot: its cogs get the queue, the delivery and the config; the runner starts in `on_setup`."""

    def __init__(
        self,
        config: BotConfig,
        queue: RenderQueue,
        settings_store: GuildSettingsStore,
        *,
        on_setup: Callable[[], Awaitable[None]] | None = None,
        file_check: MemberFileCheck = check_member_file,
        **options: Any,
    ) -> None:
        # A rate limit longer than this raises RateLimited instead of blocking the call: each call path
        # then waits it out on its own and retries (bot.delivery.rate_limits).
        options.setdefault("max_ratelimit_timeout", MAX_RATELIMIT_TIMEOUT_S)
        # no privileged intent, and no pings unless a message asks (docs/discord.md, "Mentions")
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=VQTree,
            help_command=None,
            **options,
        )
        self.config, self.queue = config, queue
        self.server_settings = ServerSettings(settings_store, config)
        self.file_checks = FileChecks(config.file_check_workers, file_check)
        self.publisher = DiscordPublisher(self, queue, config)
        self.button_actions: dict[str, views.ButtonAction] = {}
        self._on_setup = on_setup
        self._recovery: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        self.config.downloads_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_clear_downloads, self.config.downloads_dir)
        await self.server_settings.load()
        self.queue.subscribe(self.publisher)
        cogs: tuple[GenerateCog | ManageCog, ...] = (
            GenerateCog(self.queue, self.publisher.status, self.config, self.server_settings, self.file_checks),
            ManageCog(self.queue, self.config, self.server_settings, self),
        )
        for cog in cogs:
            await self.add_cog(cog)
            self.button_actions.update(cog.button_actions())
        await self.add_cog(SettingsCog(self.server_settings, self.config))
        self.add_dynamic_items(views.JobButton, views.UnknownButton)
        if self.config.guild_id:
            self.tree.copy_global_to(guild=discord.Object(self.config.guild_id))
        await self.sync_commands(force=self.config.force_sync)
        if self._on_setup is not None:
            await self._on_setup()
        self._recovery = asyncio.create_task(self._recover(), name="recovery")
        self._refresher = asyncio.create_task(self.publisher.status.refresh_queued(self.config.queue_refresh_seconds))
        if self.config.result_poll_seconds is not None:
            poll = self.publisher.poll_results(
                self.config.result_poll_seconds, local_worker=self.config.local_worker_id
            )
            self._poller = asyncio.create_task(poll, name="results-poll")

    async def sync_commands(self, *, force: bool = False) -> str:
        """Sync to the configured guild (always: instant, cheap), or globally when the commands changed or `force`.

        Global commands change for every server and Discord limits how often they may be created, so
        the hash of the last payload synced is kept in the data directory. Returns what was done.
        """
        if self.config.guild_id:
            synced = await self.tree.sync(guild=discord.Object(self.config.guild_id))
            log.info("synced %d commands to guild %s", len(synced), self.config.guild_id)
            return f"Synced {len(synced)} commands to this server."
        digest = self.commands_digest()
        marker = self.config.data_dir / "commands.sha256"
        stored = await asyncio.to_thread(_read_text, marker)
        if stored == digest and not force:
            log.info("global commands unchanged since the last sync; not syncing (`python -m bot --sync` forces it)")
            return "Global commands are unchanged."
        synced = await self.tree.sync()
        await asyncio.to_thread(marker.write_text, digest)
        log.info("synced %d global commands", len(synced))
        return f"Synced {len(synced)} global commands (Discord may take a while to show changes)."

    def commands_digest(self) -> str:
        """SHA-256 of the global command payload, keyed by the application (another bot on this data dir syncs)."""
        payload = sorted((c.to_dict(self.tree) for c in self.tree.get_commands()), key=lambda c: str(c["name"]))
        text = json.dumps({"application": self.application_id, "commands": payload}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    async def _recover(self) -> None:
        try:
            await self.publisher.recover()
        except Exception:
            log.exception("recovery after start failed")

    async def on_ready(self) -> None:
        log.info("connected as %s (%s) to %d guild(s)", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def on_job_button(self, interaction: discord.Interaction[Any], job_id: int, action: str) -> None:
        """A job button was pressed: run its action, refusals shown to the clicker only."""
        handler = self.button_actions.get(action)
        try:
            check_channel(interaction, self.server_settings.limits(interaction.guild_id))
            if handler is None:
                raise UserError("this button is no longer supported")
            await handler(interaction, job_id, action)
        except Exception as e:
            await reply_error(interaction, e)

    async def close(self) -> None:
        for task in (self._recovery, self._refresher, self._poller):
            if task is not None:
                task.cancel()
        await self.publisher.close()
        self.file_checks.close()
        await super().close()


def _clear_downloads(folder: Path, older_than_s: float = 15 * 60) -> None:
    # Downloads left by a crash mid-command: accepted jobs have their own copies under inputs/. Only old
    # ones: another bot process on this data directory may be downloading now (its token dies at 15 min,
    # docs/discord.md, "Interaction tokens").
    cutoff = time.time() - older_than_s
    for leftover in folder.iterdir():
        if leftover.is_file() and leftover.stat().st_mtime < cutoff:
            log.info("removing a download left from before the start: %s", leftover.name)
            leftover.unlink(missing_ok=True)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def point_at(api_base: str | None, gateway_url: str | None) -> None:
    """Use a Discord-compatible API (self-hosted, or the tests' fake); None leaves discord.py's defaults."""
    if api_base:
        discord.http.Route.BASE = api_base
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
