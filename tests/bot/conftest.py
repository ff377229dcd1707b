"""Fixtures: a fake Discord on 127.0.0.1, and the real VQBot connected to it in this process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from bot.app import BotConfig, VQBot, point_at
from tests.bot.fake_discord import FakeDiscord
from tests.bot.memory_queue import MemoryQueue

BOT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.GfakeB.bot-token-that-must-never-be-logged-0123456789"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord, queue: MemoryQueue, config: BotConfig) -> AsyncIterator[VQBot]:
    """The real discord.py bot, in this event loop, logged in to the fake."""
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_at(fake.api_base, fake.gateway_url)
    fake.identified.clear()
    bot = VQBot(config, queue)  # type: ignore[arg-type]
    queue.start()
    task = asyncio.create_task(bot.start(BOT_TOKEN))
    try:
        await asyncio.wait_for(fake.identified.wait(), 15)
        yield bot
    finally:
        await asyncio.sleep(0.3)  # let requests the fake has already answered finish in the client
        await bot.close()
        await queue.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway


def make_config(tmp_path: Path, **overrides: object) -> BotConfig:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "guild_id": FakeDiscord().guild_id,
        "models": ("tiny",),
        "num_cuts": 8,
        "max_size": 256,
        "default_size": 64,
        "max_iterations": 100,
        "default_iterations": 10,
        "max_frames": 20,
        "default_frames": 4,
        "max_video_seconds": 5.0,
        "moderator_role": "Render Mods",
        "preview_seconds": 3.0,
        "channel_seconds": 0.2,
    }
    values.update(overrides)
    return BotConfig(**values)  # type: ignore[arg-type]
