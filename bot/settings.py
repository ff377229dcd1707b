"""The bot's configuration: one pydantic-settings class read once from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.jobs import DEFAULT_VQGAN


class Settings(BaseSettings):
    """Every knob of `python -m bot` and `python -m bot worker`; names are the environment variables, upper-cased.

    The token is required by the Discord front-end only (`load_settings`); a render worker does without.
    """

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True)

    discord_token: SecretStr | None = None  # required by `python -m bot`, not by `python -m bot worker`
    engine_model: str = DEFAULT_VQGAN  # "tiny": the tiny preset for VQGAN and CLIP
    # "cuda:0,cuda:1"; () = the first GPU, else CPU; ("none",) = no rendering here (a Discord front-end)
    engine_device: Annotated[tuple[str, ...], NoDecode] = ()
    engine_model_dir: Path | None = None  # None: the engine's default cache
    engine_threads: int | None = Field(default=None, ge=1)  # torch CPU threads; None: torch's default
    engine_precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the device is natively faster
    engine_memory_gb: float | None = Field(default=None, gt=0)  # memory a job may use per device; None: measured
    bot_data_dir: Path = Path("data")  # database, inputs, outputs
    # empty: the SQLite file BOT_DATA_DIR/jobs.sqlite3; postgresql://user[:password]@host[:port]/dbname: shared
    bot_database_url: str | None = Field(default=None, repr=False)
    bot_lease_seconds: float = Field(default=30.0, gt=0, le=60)  # a dead worker's job is taken over after this
    bot_guild_id: int | None = Field(default=None, gt=0)  # sync commands to this guild only
    bot_max_size: int = Field(default=512, ge=16, le=4096)  # largest width or height in pixels
    bot_default_size: int = Field(default=256, ge=16, le=4096)  # width and height when not given
    bot_max_iterations: int = Field(default=500, ge=1)
    bot_default_iterations: int = Field(default=200, ge=1)
    bot_max_frames: int = Field(default=120, ge=1)
    bot_default_frames: int = Field(default=30, ge=2)
    bot_num_cuts: int = Field(default=32, ge=1, le=128)  # CLIP cutouts per iteration (quality vs speed)
    bot_max_video_seconds: float = Field(default=30.0, gt=0)
    bot_max_attachment_mb: float = Field(default=25.0, gt=0)  # largest attachment downloaded
    bot_max_queued_per_member: int = Field(default=3, ge=1)
    bot_max_queued_per_guild: int = Field(default=100, ge=1)  # jobs waiting from one server
    bot_max_running_per_guild: int | None = Field(default=None, ge=1)  # jobs of one server rendering at once
    bot_file_check_workers: int = Field(default=2, ge=1, le=32)  # member files probed or decoded at once
    bot_file_check_seconds: float = Field(default=120.0, gt=0)  # longest probe or decode of one member file
    bot_moderator_role: str | None = None  # a role id or name; Manage Messages also counts as moderator
    bot_allowed_channels: Annotated[tuple[int, ...], NoDecode] = ()  # channel ids; () = every channel
    bot_preview_seconds: float = Field(default=4.0, ge=3.0, le=60.0)  # one status edit per job at most this often
    bot_channel_edit_seconds: float = Field(default=1.0, ge=0.0)  # one edit per channel at most this often
    bot_rate_limit_max_wait_seconds: float = Field(default=300.0, ge=1.0)  # longest wait on one Discord rate limit
    bot_keep_results_days: float = Field(default=30.0, ge=0)  # results are deleted this long after; 0 = kept forever
    bot_min_free_disk_mb: int = Field(default=2048, ge=0)  # below it, new jobs are refused (0 = no check)
    bot_worker_id: str | None = None  # None: one per process slot of BOT_DATA_DIR, stable across its restarts
    bot_max_attempts: int = Field(default=3, ge=1)  # renders cut short by a crash or stall before a job fails
    bot_device_failure_limit: int = Field(default=3, ge=1)  # internal errors in a row before a device stops
    bot_stall_seconds: float = Field(default=600.0, gt=0)  # no iteration this long: the render is abandoned
    bot_metrics_port: int | None = Field(default=None, ge=0, le=65535)  # Prometheus /metrics, /healthz; None: off
    bot_metrics_host: str = "127.0.0.1"  # where the metrics endpoint listens
    bot_log_level: str = "INFO"
    bot_log_format: str = "text"  # "text" or "json"
    discord_api_base: str | None = None  # e.g. https://discord.com/api/v10; unset: discord.py's default
    discord_gateway_url: str | None = None  # e.g. wss://gateway.discord.gg; unset: discord.py's default

    @field_validator("discord_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("engine_device", mode="before")
    @classmethod
    def _split_devices(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(d.strip() for d in value.split(",") if d.strip())
        return value

    @field_validator("engine_device")
    @classmethod
    def _none_alone(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if NO_DEVICE in value and len(value) > 1:
            raise ValueError(f"{NO_DEVICE!r} (no rendering here) cannot be listed with devices")
        return value

    @field_validator("bot_database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "must be postgresql://user[:password]@host[:port]/dbname, or empty for BOT_DATA_DIR/jobs.sqlite3"
            )
        return value

    @field_validator("bot_allowed_channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(c.strip()) for c in value.split(",") if c.strip())
        return value

    @field_validator("bot_log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("bot_log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("must be text or json")
        return value

    @field_validator("discord_api_base", "discord_gateway_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if "://" not in value:
            raise ValueError("must be a URL like https://host/api/v10 or wss://host")
        return value.strip().rstrip("/")

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.bot_max_attachment_mb * 1024 * 1024)

    @property
    def renders(self) -> bool:
        """False for `ENGINE_DEVICE=none`: this process is the Discord front-end only."""
        return self.engine_device != (NO_DEVICE,)

    @property
    def store_url(self) -> str | Path:
        """What `storage.factory.open_store` opens: BOT_DATABASE_URL, else BOT_DATA_DIR/jobs.sqlite3."""
        return self.bot_database_url or self.bot_data_dir / "jobs.sqlite3"

    @property
    def database_for_log(self) -> str:
        """The database as start-up logs name it: the URL without its password, or the SQLite file."""
        if self.bot_database_url is None:
            return f"SQLite {self.bot_data_dir / 'jobs.sqlite3'}"
        return f"PostgreSQL {without_password(self.bot_database_url)}"

    def secrets(self) -> tuple[str, ...]:
        """What logs must never show: the token and the database password."""
        found = [self.discord_token.get_secret_value()] if self.discord_token is not None else []
        if self.bot_database_url is not None and (password := urlsplit(self.bot_database_url).password):
            found += {password, unquote(password)}  # as written in the URL, and as the driver may quote it
        return tuple(found)


NO_DEVICE = "none"  # ENGINE_DEVICE=none: no runner in this process


def without_password(url: str) -> str:
    """`url` with its password (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def describe_error(error: ValidationError) -> str:
    """One line naming the first bad setting, e.g. `DISCORD_TOKEN: Field required`."""
    first = error.errors()[0]
    name = "_".join(str(p) for p in first["loc"]).upper() or "settings"
    return f"{name}: {first['msg']}"


def load_settings(*, worker: bool = False, **overrides: Any) -> Settings:
    """Read the settings; raise SystemExit with one line naming the bad setting.

    The front-end (`python -m bot`) needs DISCORD_TOKEN; a render worker (`worker=True`) needs a device instead.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        raise SystemExit(f"configuration error: {describe_error(e)}") from None
    if not worker and settings.discord_token is None:
        raise SystemExit("configuration error: DISCORD_TOKEN: Field required")
    if worker and not settings.renders:
        raise SystemExit("configuration error: ENGINE_DEVICE: a render worker needs a device, not none")
    return settings
