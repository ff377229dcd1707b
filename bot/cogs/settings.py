"""/settings show | set | reset: a server's own limits, channels, moderator role, default model and blocked words.

Only members with Manage Server or Administrator may use it (Discord hides it from the others, and the
bot checks again: a client may send it anyway). The host's values are the defaults and the ceilings
(`bot.server_settings`). Answers are ephemeral; a write the database holds up is deferred first.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import acks, server_settings
from bot.config import BotConfig
from bot.errors import BadInput, UserError
from bot.server_settings import SETTING_NAMES, ServerSettings

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]
SETTING_CHOICES = [app_commands.Choice(name=name, value=name) for name in SETTING_NAMES]


def check_admin(interaction: Interaction) -> int:
    """The server's id, when the member may change its settings; UserError otherwise."""
    perms = interaction.permissions
    if interaction.guild_id is None:
        raise UserError("settings belong to a server: use /settings in one")
    if not (perms.manage_guild or perms.administrator):
        raise UserError("only members with the Manage Server or Administrator permission can use /settings")
    return interaction.guild_id


def resolve_role(interaction: Interaction, value: str) -> str:
    """A role given by mention, id or exact name, as the role's id when the server has it."""
    guild = interaction.guild
    roles = guild.roles if guild is not None else []
    if value.isdigit():
        if guild is not None and guild.get_role(int(value)) is None:
            raise BadInput("moderator_role: this server has no role with that id")
        return value
    named = [r for r in roles if r.name == value]
    if not named:
        raise BadInput(f"moderator_role: this server has no role named {discord.utils.escape_markdown(value[:60])!r}")
    return str(named[0].id)


class SettingsCog(commands.Cog):
    """/settings, kept in `settings` (the database behind it, and memory)."""

    group = app_commands.Group(
        name="settings",
        description="This server's limits and rules for the render bot (Manage Server only)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, settings: ServerSettings, config: BotConfig) -> None:
        self.settings, self.config = settings, config

    @group.command(name="show", description="List every setting, its value and where it comes from")
    async def show(self, interaction: Interaction) -> None:
        guild_id = check_admin(interaction)
        text = server_settings.show_text(self.settings.limits(guild_id), self.config)
        await acks.answer(interaction, text)

    @group.command(name="set", description="Change a setting for this server (limits only below the host's)")
    @app_commands.describe(
        setting="Which setting",
        value="The new value: a number, #channels, a role, a model, or comma-separated words",
    )
    @app_commands.choices(setting=SETTING_CHOICES)
    async def change(
        self, interaction: Interaction, setting: str, value: app_commands.Range[str, 0, 1000] = ""
    ) -> None:
        guild_id = check_admin(interaction)
        stored = server_settings.parse(setting, value, self.config)
        if setting == "moderator_role":
            stored = resolve_role(interaction, stored)
        if setting == "channels" and interaction.guild is not None:
            for channel in filter(None, stored.split(",")):
                if interaction.guild.get_channel_or_thread(int(channel)) is None:
                    raise BadInput(f"channels: <#{channel}> is not a channel of this server")
        limits = await acks.in_time(
            interaction,
            self.settings.set(guild_id, setting, stored, by_user=interaction.user.id),
            self.config.ack_budget_seconds,
        )
        log.info("guild %s: %s set to %r by member %s", guild_id, setting, stored, interaction.user.id)
        shown = server_settings.show_text(limits, self.config).splitlines()
        line = next(row for row in shown if row.startswith(f"`{setting}`"))
        await acks.answer(interaction, f"Changed for this server: {line}")

    @group.command(name="reset", description="Put a setting back to the host's default")
    @app_commands.describe(setting="Which setting")
    @app_commands.choices(setting=SETTING_CHOICES)
    async def back_to_default(self, interaction: Interaction, setting: str) -> None:
        guild_id = check_admin(interaction)
        if setting not in SETTING_NAMES:
            raise BadInput(f"unknown setting {setting[:40]!r}; the settings are: {', '.join(SETTING_NAMES)}")
        limits = await acks.in_time(interaction, self.settings.reset(guild_id, setting), self.config.ack_budget_seconds)
        log.info("guild %s: %s reset by member %s", guild_id, setting, interaction.user.id)
        shown = server_settings.show_text(limits, self.config).splitlines()
        line = next(row for row in shown if row.startswith(f"`{setting}`"))
        await acks.answer(interaction, f"Back to the host's default: {line}")
