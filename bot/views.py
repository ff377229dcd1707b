"""Job buttons that survive restarts: the custom id carries the job id and the action (v1:j:<job>:<action>)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import discord

from engine.jobs import JobKind
from storage.records import JobRecord

ACTIONS = ("cancel", "reroll", "vary", "animate", "upscale")
_LABELS = {
    "cancel": ("Cancel", "🛑", discord.ButtonStyle.danger),
    "reroll": ("Reroll", "🔄", discord.ButtonStyle.secondary),
    "vary": ("Variation", "🎲", discord.ButtonStyle.secondary),
    "animate": ("Animate", "🎞️", discord.ButtonStyle.secondary),
    "upscale": ("Upscale", "🔍", discord.ButtonStyle.secondary),
}


def custom_id(job_id: int, action: str) -> str:
    """The button's custom id; well under Discord's 100-character limit (docs/discord.md, "Messages")."""
    return f"v1:j:{job_id}:{action}"


ButtonAction = Callable[[discord.Interaction[Any], int, str], Awaitable[None]]  # (interaction, job id, action)


class ButtonHandler(Protocol):
    """What a pressed job button calls (the bot implements it)."""

    async def on_job_button(self, interaction: discord.Interaction[Any], job_id: int, action: str) -> None: ...


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"v1:j:(?P<job>\d{1,20}):(?P<act>[a-z]+)"):
    """One job button; rebuilt from its custom id on every click, the job is then loaded from the database."""

    def __init__(self, job_id: int, action: str) -> None:
        label, emoji, style = _LABELS.get(action, (action.title(), None, discord.ButtonStyle.secondary))
        super().__init__(discord.ui.Button(custom_id=custom_id(job_id, action), label=label, emoji=emoji, style=style))
        self.job_id, self.action = job_id, action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(int(match["job"]), match["act"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler: ButtonHandler = interaction.client
        await handler.on_job_button(interaction, self.job_id, self.action)


class UnknownButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?s)(?!v1:j:\d{1,20}:[a-z]+\Z).{1,100}"):
    """Any other custom id (an old format, or a forged one): answered at once, and nothing is done."""

    def __init__(self, custom_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id, label="?"))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> UnknownButton:
        return cls(match.group(0))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message("This button is no longer supported.", ephemeral=True)


def status_view(job_id: int) -> discord.ui.View:
    """The status message's buttons: Cancel."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(job_id, "cancel"))
    return view


def result_actions(job: JobRecord) -> tuple[str, ...]:
    """Which follow-up buttons a finished job gets; stills can seed variations and animations."""
    if job.kind is JobKind.IMAGE:
        return ("reroll", "vary", "animate", "upscale")
    if job.kind is JobKind.UPSCALE:
        return ()
    return ("reroll",)


def result_view(job: JobRecord) -> discord.ui.View | None:
    """The result message's buttons, or None when the job has none."""
    actions = result_actions(job)
    if not actions:
        return None
    view = discord.ui.View(timeout=None)
    for action in actions:
        view.add_item(JobButton(job.id, action))
    return view
