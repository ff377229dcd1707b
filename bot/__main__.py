"""`python -m bot`: the composition root. Settings → logging → queue and runner → bot → run until SIGTERM.

The only bot module that imports the engine's renderer (and so torch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator

from bot.admission import AdmissionLimits
from bot.app import BotConfig, VQBot, point_at
from bot.logs import setup_logging
from bot.ports import Renderer
from bot.queue import JobQueue, QueueConfig
from bot.runner import JobRunner
from bot.settings import Settings, load_settings

log = logging.getLogger("bot")


def bot_config(settings: Settings) -> BotConfig:
    """The plain values the Discord side needs."""
    return BotConfig(
        data_dir=settings.bot_data_dir,
        guild_id=settings.bot_guild_id,
        models=(settings.engine_model,),
        num_cuts=settings.bot_num_cuts,
        max_size=settings.bot_max_size,
        default_size=min(settings.bot_default_size, settings.bot_max_size),
        max_iterations=settings.bot_max_iterations,
        default_iterations=min(settings.bot_default_iterations, settings.bot_max_iterations),
        max_frames=settings.bot_max_frames,
        default_frames=min(settings.bot_default_frames, settings.bot_max_frames),
        max_video_seconds=settings.bot_max_video_seconds,
        max_attachment_bytes=settings.max_attachment_bytes,
        moderator_role=settings.bot_moderator_role,
        allowed_channels=settings.bot_allowed_channels,
        preview_seconds=settings.bot_preview_seconds,
        channel_seconds=settings.bot_channel_edit_seconds,
    )


class Services:
    """The queue and the runner (which owns the renderers); the runner starts in setup_hook, drains on SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.devices = settings.engine_device or (default_device(),)
        self.queue: JobQueue | None = None
        self.runner: JobRunner | None = None

    async def open(self) -> JobQueue:
        limits = AdmissionLimits(
            max_side=self.settings.bot_max_size,
            max_iterations=self.settings.bot_max_iterations,
            max_frames=self.settings.bot_max_frames,
        )
        config = QueueConfig(
            devices=self.devices, max_queued_per_member=self.settings.bot_max_queued_per_member, admission=limits
        )
        self.queue = await JobQueue.open(self.settings.bot_data_dir, config)
        return self.queue

    async def start(self, bot: VQBot) -> None:
        assert self.queue is not None
        settings = self.settings

        def make_renderer(device: str) -> Renderer:
            from engine.renderer import Renderer as EngineRenderer

            return EngineRenderer(device, model_dir=settings.engine_model_dir)

        self.runner = JobRunner(
            self.queue,
            make_renderer,
            self.devices,
            settings.bot_data_dir,
            worker_id=settings.bot_worker_id or f"{socket.gethostname()}-bot",
            preview_interval_s=settings.bot_preview_seconds,
        )
        await self.runner.start()

    async def drain(self) -> None:
        if self.runner is not None:
            await self.runner.drain()

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.aclose()


def default_device() -> str:
    """The first GPU when there is one, else the CPU."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    services = Services(settings)
    try:
        yield services
    finally:
        await services.close()


async def run(settings: Settings) -> None:
    """Run the bot until SIGTERM/SIGINT, then drain the runner and close."""
    point_at(settings.discord_api_base, settings.discord_gateway_url)
    settings.bot_data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.engine_threads:
        import torch

        torch.set_num_threads(settings.engine_threads)
    async with open_services(settings) as services:
        queue = await services.open()
        bot = VQBot(bot_config(settings), queue, on_setup=services.start, max_ratelimit_timeout=30.0)
        async with bot:
            client = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()), name="discord")
            waiter = asyncio.create_task(stop.wait(), name="stop")
            await asyncio.wait({client, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            log.info("shutting down: draining the runner")
            await services.drain()  # running jobs checkpoint and go back to the queue
            await queue.flush_events(limit_s=5.0)  # status edits and results already under way
            await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            if client.done():
                client.result()  # surfaces LoginFailure and the like


def main() -> None:
    settings = load_settings()
    token = settings.discord_token.get_secret_value()
    setup_logging(settings.bot_log_level, secrets=(token,), fmt=settings.bot_log_format)
    try:
        asyncio.run(run(settings))
    except Exception as e:
        import discord

        if isinstance(e, discord.LoginFailure):
            sys.exit("DISCORD_TOKEN: Discord refused the token (LoginFailure)")
        raise


if __name__ == "__main__":
    main()
