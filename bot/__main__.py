"""`python -m bot`: the composition root. Settings → logging → queue and runner → bot → run until SIGTERM.

The only bot module that imports the engine's renderer (and so torch).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bot.admission import AdmissionLimits
from bot.app import BotConfig, VQBot, point_at
from bot.logs import setup_logging
from bot.ports import Renderer
from bot.queue import JobQueue, QueueConfig
from bot.runner import JobRunner
from bot.settings import Settings, load_settings
from engine.jobs import JobSpec

log = logging.getLogger("bot")

RendererFactory = Callable[[str, Settings], Renderer]  # (device, settings) -> a renderer, built on the device thread


def bot_config(settings: Settings, *, force_sync: bool = False) -> BotConfig:
    """The plain values the Discord side needs."""
    return BotConfig(
        force_sync=force_sync,
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

    def __init__(self, settings: Settings, make_renderer: RendererFactory | None = None) -> None:
        self.settings = settings
        self.make_renderer = make_renderer or engine_renderer
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
        settings, make_renderer = self.settings, self.make_renderer
        self.runner = JobRunner(
            self.queue,
            lambda device: make_renderer(device, settings),
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


def engine_renderer(device: str, settings: Settings) -> Renderer:
    """The renderer `python -m bot` uses: the engine's, with `ENGINE_MODEL` preloaded."""
    return build_renderer(device, settings.engine_model, settings.engine_model_dir, settings.engine_precision)


def build_renderer(device: str, model: str, model_dir: Path | None = None, precision: str = "auto") -> Renderer:
    """The engine's renderer for `device` with `model`'s VQGAN and CLIP already loaded (runs on the device thread).

    Loading here, at start, means the first member's job does not pay for it.
    """
    from bot.cogs.generate import clip_for
    from engine.renderer import Renderer as EngineRenderer

    renderer = EngineRenderer(device, model_dir=model_dir, precision=precision)
    started = time.monotonic()
    renderer.models(JobSpec(vqgan_model=model, clip_model=clip_for(model)))
    log.info("preloaded %s on %s in %.1f s", model, device, time.monotonic() - started)
    return renderer


def default_device() -> str:
    """The first GPU when there is one, else the CPU."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


@contextlib.asynccontextmanager
async def open_services(settings: Settings, make_renderer: RendererFactory | None = None) -> AsyncIterator[Services]:
    services = Services(settings, make_renderer)
    try:
        yield services
    finally:
        await services.close()


async def run(settings: Settings, *, force_sync: bool = False, make_renderer: RendererFactory | None = None) -> None:
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
    async with open_services(settings, make_renderer) as services:
        queue = await services.open()
        bot = VQBot(
            bot_config(settings, force_sync=force_sync), queue, on_setup=services.start, max_ratelimit_timeout=30.0
        )
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the Discord render bot.")
    parser.add_argument(
        "--sync", action="store_true", help="sync global slash commands even if they did not change since the last sync"
    )
    return parser.parse_args(argv)


def main(make_renderer: RendererFactory | None = None) -> None:
    """`python -m bot`; `make_renderer` replaces the engine's renderer (the tests hold renders with it)."""
    args = parse_args()
    settings = load_settings()
    token = settings.discord_token.get_secret_value()
    setup_logging(settings.bot_log_level, secrets=(token,), fmt=settings.bot_log_format)
    try:
        asyncio.run(run(settings, force_sync=args.sync, make_renderer=make_renderer))
    except Exception as e:
        import discord

        if isinstance(e, discord.LoginFailure):
            sys.exit("DISCORD_TOKEN: Discord refused the token (LoginFailure)")
        raise


if __name__ == "__main__":
    main()
