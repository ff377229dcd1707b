"""Per-server settings: what a server's admins change with /settings, always within the host's limits.

The host's environment values are every server's defaults *and* its ceilings: a server may lower a
limit, never raise it. Values are stored as normalised text by the job store; `ServerSettings` keeps
them in memory (read once at start, written through), so no command waits on the database to learn
a server's rules. Pure parsing and formatting besides that: no Discord objects here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Mapping

from bot.config import BotConfig
from bot.errors import BadInput
from storage.store import GuildSettingsStore

log = logging.getLogger(__name__)

SETTING_NAMES = (
    "channels",
    "max_size",
    "max_iterations",
    "max_frames",
    "max_video_seconds",
    "max_queued_per_member",
    "moderator_role",
    "default_model",
    "blocked_words",
)
MIN_SIZE, MIN_FRAMES = 16, 2  # the smallest side the engine renders; an animation has at least two frames
MAX_BLOCKED_WORDS = 100
_ID = re.compile(r"^(?:<#(\d{15,20})>|(\d{15,20}))$")
_ROLE = re.compile(r"^(?:<@&(\d{15,20})>|(\d{15,20}))$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """The rules in force in one server: the host's values, lowered or replaced by the server's own."""

    channels: tuple[int, ...]  # () means every channel
    max_size: int
    max_iterations: int
    max_frames: int
    max_video_seconds: float
    max_queued_per_member: int
    moderator_role: str | None  # a role id or an exact role name
    default_model: str
    blocked_words: tuple[str, ...]  # case-folded
    own: frozenset[str] = frozenset()  # the settings this server chose itself; the rest are the host's

    def limit_name(self, setting: str) -> str:
        """Whose limit a refusal names: "this server's limit" or "the host's limit"."""
        return "this server's limit" if setting in self.own else "the host's limit"


def host_limits(config: BotConfig) -> ServerLimits:
    """Every server's defaults: the host's environment values."""
    return ServerLimits(
        channels=config.allowed_channels,
        max_size=config.max_size,
        max_iterations=config.max_iterations,
        max_frames=config.max_frames,
        max_video_seconds=config.max_video_seconds,
        max_queued_per_member=config.max_queued_per_member,
        moderator_role=config.moderator_role,
        default_model=config.models[0],
        blocked_words=(),
    )


def _whole(name: str, raw: str, low: int, host: int) -> str:
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadInput(f"{name} must be a whole number from {low} to {host}, got {raw.strip()[:40]!r}") from None
    if value > host:
        raise BadInput(f"{name} can be at most {host} (the host's limit); got {value}")
    if value < low:
        raise BadInput(f"{name} must be at least {low}; got {value}")
    return str(value)


def _seconds(name: str, raw: str, host: float) -> str:
    try:
        value = float(raw.strip())
    except ValueError:
        raise BadInput(f"{name} must be a number of seconds up to {host:g}, got {raw.strip()[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"{name} must be more than 0 and at most {host:g} seconds (the host's limit)")
    if value > host:
        raise BadInput(f"{name} can be at most {host:g} seconds (the host's limit); got {value:g}")
    return f"{value:g}"


def _channels(raw: str, host: tuple[int, ...]) -> str:
    ids: list[int] = []
    for part in re.split(r"[\s,]+", raw.strip()):
        if not part:
            continue
        match = _ID.match(part)
        if match is None:
            raise BadInput(
                f"channels: give channel mentions (#name) or ids, separated by spaces; {part[:40]!r} is neither"
            )
        channel = int(match[1] or match[2])
        if host and channel not in host:
            allowed = ", ".join(f"<#{c}>" for c in host)
            raise BadInput(f"channels: <#{channel}> is not one of the host's allowed channels ({allowed})")
        if channel not in ids:
            ids.append(channel)
    return ",".join(str(c) for c in ids)


def _words(raw: str) -> str:
    words: list[str] = []
    for part in raw.split(","):
        word = " ".join(part.split()).casefold()
        if word and word not in words:
            words.append(word)
    if len(words) > MAX_BLOCKED_WORDS:
        raise BadInput(f"blocked_words: at most {MAX_BLOCKED_WORDS} words, got {len(words)}")
    return ",".join(words)


def parse(name: str, raw: str, config: BotConfig) -> str:
    """The normalised text to store for `name`, or BadInput naming the allowed range (and the host's limit)."""
    host = host_limits(config)
    if name == "channels":
        return _channels(raw, host.channels)
    if name == "max_size":
        return _whole(name, raw, MIN_SIZE, host.max_size)
    if name == "max_iterations":
        return _whole(name, raw, 1, host.max_iterations)
    if name == "max_frames":
        return _whole(name, raw, MIN_FRAMES, host.max_frames)
    if name == "max_queued_per_member":
        return _whole(name, raw, 1, host.max_queued_per_member)
    if name == "max_video_seconds":
        return _seconds(name, raw, host.max_video_seconds)
    if name == "default_model":
        model = raw.strip()
        if model not in config.models:
            raise BadInput(f"default_model: unknown model {model[:60]!r}; choose one of: {', '.join(config.models)}")
        return model
    if name == "blocked_words":
        return _words(raw)
    if name == "moderator_role":
        role = raw.strip()
        if not role:
            raise BadInput("moderator_role: give a role (a mention, an id or its exact name)")
        match = _ROLE.match(role)
        return (match[1] or match[2]) if match else role
    raise BadInput(f"unknown setting {name!r}; the settings are: {', '.join(SETTING_NAMES)}")


def effective(config: BotConfig, stored: Mapping[str, str]) -> ServerLimits:
    """The host's limits with a server's stored settings applied; a stored limit above the host's (the host
    lowered its own since) counts as the host's."""
    host = host_limits(config)
    values: dict[str, object] = {}
    for name, text in stored.items():
        try:
            if name == "channels":
                chosen = tuple(int(c) for c in text.split(",") if c)
                values[name] = tuple(c for c in chosen if not host.channels or c in host.channels)
            elif name in ("max_size", "max_iterations", "max_frames", "max_queued_per_member"):
                values[name] = min(int(text), getattr(host, name))
            elif name == "max_video_seconds":
                values[name] = min(float(text), host.max_video_seconds)
            elif name == "blocked_words":
                values[name] = tuple(w for w in text.split(",") if w)
            elif name == "default_model":
                values[name] = text if text in config.models else host.default_model
            elif name == "moderator_role":
                values[name] = text
        except ValueError:
            log.warning("ignoring a stored server setting %s=%r that no longer reads", name, text)
    return dataclasses.replace(host, **values, own=frozenset(values))  # type: ignore[arg-type]


def blocked(prompt: str, words: tuple[str, ...]) -> bool:
    """Whether `prompt` holds one of `words` as a whole word (or phrase), whatever its case."""
    if not words:
        return False
    pattern = "|".join(re.escape(w) for w in words)
    return re.search(rf"(?<!\w)(?:{pattern})(?!\w)", prompt, re.IGNORECASE) is not None


def show_text(limits: ServerLimits, config: BotConfig) -> str:
    """What /settings show lists: each setting, its value, and where it comes from."""
    host = host_limits(config)
    lines = ["**This server's settings** (the host's values are the defaults and the ceilings):"]
    for name in SETTING_NAMES:
        value = _display(name, getattr(limits, name))
        if name not in limits.own:
            source = "host default"
        elif name in ("channels", "moderator_role", "default_model", "blocked_words"):
            source = "this server"
        else:
            source = f"this server (host limit {_display(name, getattr(host, name))})"
        lines.append(f"`{name}`: {value} · {source}")
    return "\n".join(lines)


def _display(name: str, value: object) -> str:
    if name == "channels":
        channels = value if isinstance(value, tuple) else ()
        return ", ".join(f"<#{c}>" for c in channels) or "every channel"
    if name == "blocked_words":
        words = value if isinstance(value, tuple) else ()
        return ", ".join(f"`{w}`" for w in words) or "none"
    if name == "moderator_role":
        text = str(value or "")
        return f"<@&{text}>" if text.isdigit() else (f"`{text}`" if text else "none (Manage Messages only)")
    if name == "max_video_seconds" and isinstance(value, float):
        return f"{value:g} s"
    return str(value)


class ServerSettings:
    """Every server's settings in memory, read from `store` at start and written through on each change."""

    def __init__(self, store: GuildSettingsStore, config: BotConfig) -> None:
        self._store, self._config = store, config
        self._stored: dict[int, dict[str, str]] = {}
        self._limits: dict[int, ServerLimits] = {}

    async def load(self) -> None:
        self._stored = await self._store.guild_settings()
        self._limits.clear()
        log.info("loaded the settings of %d server(s)", len(self._stored))

    def limits(self, guild_id: int | None) -> ServerLimits:
        """The rules in force in `guild_id` (the host's alone outside a server)."""
        if guild_id is None:
            return host_limits(self._config)
        found = self._limits.get(guild_id)
        if found is None:
            found = self._limits[guild_id] = effective(self._config, self._stored.get(guild_id, {}))
        return found

    async def set(self, guild_id: int, name: str, value: str, *, by_user: int) -> ServerLimits:
        """Store an already parsed value; the server's new rules."""
        await self._store.set_guild_setting(guild_id, name, value, now=time.time(), by_user=by_user)
        self._stored.setdefault(guild_id, {})[name] = value
        self._limits.pop(guild_id, None)
        return self.limits(guild_id)

    async def reset(self, guild_id: int, name: str) -> ServerLimits:
        """Back to the host's default; the server's new rules."""
        await self._store.reset_guild_setting(guild_id, name)
        self._stored.get(guild_id, {}).pop(name, None)
        self._limits.pop(guild_id, None)
        return self.limits(guild_id)
