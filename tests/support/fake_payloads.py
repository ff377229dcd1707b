"""Discord API v10 object shapes the fake Discord sends: users, members, interactions, READY, guilds, messages.

Plain functions returning JSON-ready dicts; `fake_discord.FakeDiscord` fills in its ids.
"""

from __future__ import annotations

import datetime
from typing import Any

MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 31)  # view, send, attach, history, app cmds
JOINED = "2024-01-01T00:00:00+00:00"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def user(user_id: int, *, bot: bool = False) -> dict[str, Any]:
    name = "vqbot" if bot else f"member{user_id % 1000}"
    data: dict[str, Any] = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
    }
    if bot:
        data["bot"] = True
    return data


def member(user_id: int, *, role_ids: list[int], permissions: int = 0) -> dict[str, Any]:
    """A member as an interaction carries it; `permissions` are added to the everyday member's."""
    return {
        "user": user(user_id),
        "roles": [str(r) for r in role_ids],
        "joined_at": JOINED,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "permissions": str(MEMBER_PERMISSIONS | permissions),
    }


def text_channel(channel_id: int, guild_id: int, name: str, position: int = 0) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
    }


def thread(thread_id: int, guild_id: int, parent_id: int, owner_id: int, *, archived: bool) -> dict[str, Any]:
    """A public thread (type 11) under a text channel."""
    return {
        "id": str(thread_id),
        "type": 11,
        "guild_id": str(guild_id),
        "parent_id": str(parent_id),
        "owner_id": str(owner_id),
        "name": "renders thread",
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 1,
        "member_count": 1,
        "flags": 0,
        "thread_metadata": {
            "archived": archived,
            "auto_archive_duration": 1440,
            "archive_timestamp": JOINED,
            "locked": False,
        },
    }


def interaction(
    *,
    interaction_id: int,
    token: str,
    kind: int,
    app_id: int,
    guild_id: int,
    channel_id: int,
    member_data: dict[str, Any],
    data: dict[str, Any],
    app_permissions: int,
    size_limit: int,
    message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE: slash command (2), button (3); `attachment_size_limit` is required by discord.py."""
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(app_id),
        "type": kind,
        "token": token,
        "version": 1,
        "guild_id": str(guild_id),
        "channel_id": str(channel_id),
        "channel": text_channel(channel_id, guild_id, "renders"),
        "member": member_data,
        "app_permissions": str(app_permissions),
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id)},
        "context": 0,
        "attachment_size_limit": size_limit,
        "data": data,
    }
    if message is not None:
        payload["message"] = message
    return payload


def ready(*, bot_id: int, app_id: int, guild_ids: list[int], session_id: str, gateway_url: str) -> dict[str, Any]:
    return {
        "v": 10,
        "user": user(bot_id, bot=True),
        "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
        "session_id": session_id,
        "resume_gateway_url": gateway_url,  # discord.py reconnects here after READY
        "application": {"id": str(app_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
    }


def role(role_id: int, name: str, position: int) -> dict[str, Any]:
    return {
        "id": str(role_id),
        "name": name,
        "permissions": str(MEMBER_PERMISSIONS),
        "position": position,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
    }


def guild(
    *, guild_id: int, name: str, owner_id: int, moderator_role_id: int, channels: list[tuple[int, str]]
) -> dict[str, Any]:
    """GUILD_CREATE for a server without boosts (10 MiB uploads) with @everyone and a moderator role."""
    return {
        "id": str(guild_id),
        "name": name,
        "owner_id": str(owner_id),
        "premium_tier": 0,
        "unavailable": False,
        "member_count": 3,
        "roles": [role(guild_id, "@everyone", 0), role(moderator_role_id, "Render Mods", 1)],
        "channels": [text_channel(cid, guild_id, name, n) for n, (cid, name) in enumerate(channels)],
        "members": [],
        "voice_states": [],
        "presences": [],
        "threads": [],
        "emojis": [],
        "stickers": [],
        "features": [],
        "joined_at": JOINED,
        "large": False,
    }


def message(
    *, message_id: int, channel_id: int, guild_id: int, author: dict[str, Any], flags: int = 0
) -> dict[str, Any]:
    """An empty message; the fake fills in content, components and attachments from the request."""
    return {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "guild_id": str(guild_id),
        "author": author,
        "content": "",
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "components": [],
        "flags": flags,
        "allowed_mentions": None,
        "nonce": None,
        "edits": 0,
    }
