"""Errors whose message is shown to the member who caused them (ephemeral)."""

from __future__ import annotations

from discord import app_commands


class UserError(app_commands.AppCommandError):
    """A refusal; its message is shown to the user."""


class BadInput(UserError):
    """An option or attachment is wrong; the message says what to change."""


class NotHere(UserError):
    """The command is not allowed in this channel or outside a server."""


class MissingPermissions(UserError):
    """The bot lacks a channel permission it needs; the message names it."""
