"""`BotConfig`: the plain values the Discord side uses, taken from `Settings` by the composition root."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.jobs import DEFAULT_CLIP, DEFAULT_VQGAN, TINY


def clip_for(model: str) -> str:
    """The CLIP that goes with a VQGAN: the tiny preset pairs with the tiny CLIP."""
    return TINY if model == TINY else DEFAULT_CLIP


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BotConfig:
    """What the cogs, the tree's checks and the delivery need to know; nothing here is read again later."""

    data_dir: Path
    guild_id: int | None = None
    models: tuple[str, ...] = (DEFAULT_VQGAN,)
    num_cuts: int = 32
    max_size: int = 512
    default_size: int = 256
    max_iterations: int = 500
    default_iterations: int = 200
    max_frames: int = 120
    default_frames: int = 30
    max_video_seconds: float = 30.0
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_queued_per_member: int = 3  # the queue checks it again when the job is stored
    max_queued_per_guild: int = 100
    moderator_role: str | None = None
    allowed_channels: tuple[int, ...] = ()
    preview_seconds: float = 4.0
    channel_seconds: float = 1.0
    queue_refresh_seconds: float = 45.0  # queued jobs' positions, at most this often
    result_poll_seconds: float | None = None  # look for results other processes' workers finished; None: never
    local_worker_id: str | None = None  # this process's own runner, whose results come through its events
    lease_s: float = 30.0  # the workers' lease: /queue counts a worker alive while it beat within 3 of them
    force_sync: bool = False  # `python -m bot --sync`: sync global commands even when unchanged
    file_check_workers: int = 2  # member files probed or decoded at once, in their own pool
    file_check_seconds: float = 120.0  # the longest one probe or decode may take
    ack_budget_seconds: float = (
        1.5  # work that takes longer is deferred first (docs/discord.md, "The 3-second acknowledgement")
    )
    # a result post that meets a 5xx or a network error: about a minute of retries, then the next start
    result_retry_delays: tuple[float, ...] = (3.0, 10.0, 20.0, 30.0)
    # a Discord rate limit is waited out (its retry_after, at most this long) and retried, never given up
    rate_limit_max_wait_seconds: float = 300.0

    @property
    def downloads_dir(self) -> Path:
        """Attachments land here first; the queue copies what a job needs into its own inputs."""
        return self.data_dir / "downloads"
